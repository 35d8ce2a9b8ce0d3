"""`cpack -G DEB`: the Debian package holds the binary, the man page, chat.lua and the pages,
the examples and the systemd unit, all under /usr, and declares its dependencies. Unpacked with
`dpkg -x` into a temporary root, its binary finds chat.lua and serves the chat page from any
directory. cpack runs on the test's build tree (already built: its preinstall step builds
nothing) and writes only into a temporary directory."""

import glob
import os
import shutil
import subprocess

import pytest

from harness import Server
from wsclient import OP_TEXT


def need(tool, package):
    p = shutil.which(tool)
    if not p:
        pytest.skip(f"{tool} is not installed (Debian package {package}; scripts/setup --test "
                    "installs it)")
    return p


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    build = os.environ.get("WSLUAD_BUILD")
    if not build:
        pytest.fail("WSLUAD_BUILD is not set (run the tests through ctest)")
    need("dpkg-deb", "dpkg")
    out = tmp_path_factory.mktemp("deb")
    r = subprocess.run(["cpack", "--config", os.path.join(build, "CPackConfig.cmake"), "-G", "DEB",
                        "-B", str(out)], cwd=str(out), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=600)
    assert r.returncode == 0, r.stdout
    debs = glob.glob(str(out / "*.deb"))
    assert len(debs) == 1, r.stdout
    return debs[0]


@pytest.fixture(scope="module")
def root(deb, tmp_path_factory):
    d = tmp_path_factory.mktemp("root")
    r = subprocess.run(["dpkg", "-x", deb, str(d)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    assert r.returncode == 0, r.stdout
    return d


def field(deb, name):
    r = subprocess.run(["dpkg-deb", "-f", deb, name], stdout=subprocess.PIPE, text=True,
                       check=True)
    return r.stdout.strip()


def test_control_fields(deb):
    assert field(deb, "Package") == "wsluad"
    assert field(deb, "Version").startswith("0.")
    arch = subprocess.run(["dpkg", "--print-architecture"], stdout=subprocess.PIPE, text=True,
                          check=True).stdout.strip()
    assert field(deb, "Architecture") == arch
    depends = {d.split()[0] for d in field(deb, "Depends").split(", ")}
    assert {"libc6", "liblua5.4-0", "libuv1", "libhiredis0.14"} <= depends, depends
    assert "lua-cjson" in field(deb, "Recommends")
    assert os.path.basename(deb) == f"wsluad_{field(deb, 'Version')}_{arch}.deb"


def test_contents(deb):
    r = subprocess.run(["dpkg-deb", "-c", deb], stdout=subprocess.PIPE, text=True, check=True)
    files = {line.split()[-1] for line in r.stdout.splitlines()}
    for want in ["./usr/bin/wsluad", "./usr/share/man/man1/wsluad.1",
                 "./usr/share/wsluad/lua/chat.lua", "./usr/share/wsluad/www/index.html",
                 "./usr/share/wsluad/www/rooms.html", "./usr/share/doc/wsluad/examples/rooms.lua",
                 "./usr/share/doc/wsluad/examples/echo.lua",
                 "./usr/lib/systemd/system/wsluad.service"]:
        assert want in files, want
    assert all(f.startswith("./usr/") or f == "./usr" for f in files), sorted(files)


def test_unpacked_binary_finds_chat_lua(root, tmp_path):
    wsluad = root / "usr/bin/wsluad"
    r = subprocess.run([str(wsluad), "--check", "chat.lua"], cwd=str(tmp_path),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{os.path.realpath(root / 'usr/share/wsluad/lua/chat.lua')}: OK\n"


def test_unpacked_binary_serves_the_chat_page(root, tmp_path, monkeypatch):
    monkeypatch.setenv("WSLUAD_BIN", str(root / "usr/bin/wsluad"))
    with Server(None, cwd=str(tmp_path)) as s:  # no script: the default, chat.lua
        assert str(os.path.realpath(root / "usr/share/wsluad/lua/chat.lua")) in s.log()
        status, headers, body = s.get("/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert body == (root / "usr/share/wsluad/www/index.html").read_bytes()
        a, b = s.connect(), s.connect()
        a.send_frame(OP_TEXT, b"from a packaged server")
        assert b.recv_message() == (OP_TEXT, b"from a packaged server")


def test_packaged_unit(root, tmp_path):
    unit = root / "usr/lib/systemd/system/wsluad.service"
    text = unit.read_text()
    assert "ExecStart=/usr/bin/wsluad $WSLUAD_ARGS" in text.splitlines()
    analyze = need("systemd-analyze", "systemd")
    # verify wants the binary that ExecStart names: a copy pointing into the unpacked root.
    copy = tmp_path / "wsluad.service"
    copy.write_text(text.replace("/usr/bin/wsluad", str(root / "usr/bin/wsluad")))
    r = subprocess.run([analyze, "verify", str(copy)],
                       env={**os.environ, "MANPATH": str(root / "usr/share/man")},
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "", r.stdout
