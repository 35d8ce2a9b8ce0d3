"""The command line: --help, --version, --check, usage errors (exit 2), a busy port (exit 3),
a script that fails to load (exit 1), and the script lookup that makes `wsluad chat.lua` work
from any directory."""

import os
import re
import socket

import pytest

from harness import SCRIPTS, Server, connect_id, free_port, run, source_dir
from wsclient import OP_TEXT


def project_version():
    with open(os.path.join(source_dir(), "CMakeLists.txt")) as f:
        return re.search(r"project\(\s*wsluad\s+VERSION\s+([0-9.]+)", f.read()).group(1)


def test_help():
    r = run("--help")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "wsluad" in out and "SCRIPT" in out
    for opt in ["-l", "--listen", "--static", "--max-message", "--max-backpressure", "--check",
                "-q", "--quiet", "-v", "--verbose", "--version", "--help", "--reload",
                "--log-queries"]:
        assert re.search(rf"(^|[\s,]){re.escape(opt)}\b", out, re.M), f"--help lacks {opt}"
    # Both short forms for every interface are named in the help.
    assert ":PORT" in out and "*:PORT" in out


def effective_listen(tmp_path, *args):
    """ws.options.listen as the script sees it under --check (which never binds, so these tests
    need not listen on every interface of the machine)."""
    script = tmp_path / "show.lua"
    script.write_text('print("listen=" .. ws.options.listen)\n')
    r = run("--check", *args, str(script))
    return r, re.search(r"^listen=(\S+)$", r.stdout, re.M)


@pytest.mark.parametrize("given,port", [(":8080", 8080), ("*:8080", 8080), (":0", 0),
                                        ("*:65535", 65535)])
def test_listen_every_interface_short_forms(tmp_path, given, port):
    # ":PORT" (refused before) and "*:PORT" both mean every IPv4 interface.
    r, m = effective_listen(tmp_path, "-l", given)
    assert r.returncode == 0, r.stderr
    assert m and m.group(1) == f"0.0.0.0:{port}", r.stdout


def test_listen_as_given_otherwise(tmp_path):
    for given in ["127.0.0.1:9", "[::1]:8080", "localhost:80"]:
        r, m = effective_listen(tmp_path, "-l", given)
        assert r.returncode == 0, r.stderr
        assert m and m.group(1) == given, r.stdout


@pytest.mark.parametrize("bad", [":", ":x", "*:", "*", ":-1", ":65536", "[]:80", "8080"])
def test_listen_bad_short_forms(bad):
    r = run("--check", "-l", bad, os.path.join(SCRIPTS, "ok.lua"))
    assert r.returncode == 2, f"-l {bad!r}: exit {r.returncode}\n{r.stderr}"
    assert bad in r.stderr


def test_log_queries_is_a_flag():
    ok = os.path.join(SCRIPTS, "ok.lua")
    r = run("--check", "--log-queries", ok)
    assert r.returncode == 0, r.stderr
    r = run("--check", "--log-queries=yes", ok)
    assert r.returncode == 2, r.stderr


def test_version():
    r = run("--version")
    assert r.returncode == 0, r.stderr
    assert project_version() in r.stdout
    assert "wsluad" in r.stdout


def test_check_ok_script():
    r = run("--check", os.path.join(SCRIPTS, "ok.lua"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_check_does_not_listen():
    # --check only loads the script: a busy address is no reason to fail.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run("--check", "-l", f"127.0.0.1:{port}", os.path.join(SCRIPTS, "ok.lua"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_check_syntax_error():
    path = os.path.join(SCRIPTS, "syntax_error.lua")
    r = run("--check", path)
    assert r.returncode == 1
    # The compiler's message, naming the file and the line of the error; a traceback would
    # only say "[C]: in ?".
    assert re.search(r"syntax_error\.lua:\d+: .*expected", r.stderr), r.stderr
    assert "stack traceback" not in r.stderr, r.stderr


def test_check_toplevel_error():
    r = run("--check", os.path.join(SCRIPTS, "toplevel_error.lua"))
    assert r.returncode == 1
    assert "top level refuses to load" in r.stderr


def test_tiny_handler_timeout_applies_to_the_script_not_to_the_server_setup():
    # Opening the libraries and the ws module is the server's own work (some 100s of us, more
    # under ASan): with a limit below that, the server refused to start ("Lua error in setup").
    # Only the script's code may be stopped; a trivial top level passes or fails as itself.
    r = run("--handler-timeout", "0.0001", "--check", os.path.join(SCRIPTS, "ok.lua"))
    assert "in setup" not in r.stderr, r.stderr
    assert r.returncode == 0 or "ok.lua" in r.stderr, r.stdout + r.stderr


def test_check_bundled_chat():
    r = run("--check", os.path.join(source_dir(), "lua", "chat.lua"))
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("script", ["syntax_error.lua", "toplevel_error.lua"])
def test_broken_script_exits_1(script):
    r = run("-l", "127.0.0.1:0", os.path.join(SCRIPTS, script))
    assert r.returncode == 1, r.stderr
    assert "listening on" not in r.stderr


def test_missing_script_exits_1(tmp_path):
    r = run("-l", "127.0.0.1:0", str(tmp_path / "no-such-script.lua"), cwd=tmp_path)
    assert r.returncode == 1
    assert "no-such-script.lua" in r.stderr
    # A path is only looked for where it points.
    assert "no such file" in r.stderr.lower()
    assert "looked in" not in r.stderr and "current directory" not in r.stderr


def named_dirs(message):
    """The absolute paths a message names."""
    return re.findall(r"(/[^\s,;()']+)", message)


def test_missing_script_names_the_places_really_searched(tmp_path):
    # `cd /tmp && wsluad rooms.lua`, with this binary run from its build tree: it looked in the
    # current directory and in the source tree's lua/; it names both, names no directory that does
    # not exist, and says where the example of that name is.
    r = run("--check", "rooms.lua", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    msg = r.stderr.strip()
    assert msg.startswith("wsluad: cannot find script 'rooms.lua'"), msg
    assert str(tmp_path.resolve()) in named_dirs(msg), msg
    assert os.path.join(source_dir(), "lua") in named_dirs(msg), msg
    for p in named_dirs(msg):
        assert os.path.exists(p), f"the message names {p}, which does not exist: {msg}"
    assert os.path.join(source_dir(), "examples", "rooms.lua") in named_dirs(msg), msg
    assert len(msg.splitlines()) == 1


def test_missing_script_that_is_no_example(tmp_path):
    r = run("--check", "no-such-room.lua", cwd=tmp_path)
    assert r.returncode == 1
    assert "no-such-room.lua" in r.stderr and "example" not in r.stderr
    for p in named_dirs(r.stderr):
        assert os.path.exists(p), f"the message names {p}, which does not exist: {r.stderr}"


@pytest.mark.parametrize("how", ["relative", "absolute", "dot", "shadowing"])
def test_directory_as_script(tmp_path, how):
    (tmp_path / "myroom").mkdir()
    arg = {"relative": "myroom", "absolute": str(tmp_path / "myroom"), "dot": ".",
           # a directory named like a bundled script is not silently replaced by that script
           "shadowing": "chat.lua"}[how]
    if how == "shadowing":
        (tmp_path / "chat.lua").mkdir()
    r = run("-l", "127.0.0.1:0", arg, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert f"script '{arg}' is a directory" in r.stderr, r.stderr
    assert "listening on" not in r.stderr


@pytest.mark.parametrize("args", [
    ["--no-such-option"],
    ["-l"],
    ["--listen"],
    ["--max-message", "lots"],
    ["--max-message", "-5"],
    ["--max-message", "10X"],
    ["--max-backpressure", "abc"],
    ["-l", "127.0.0.1:notaport"],
    ["-l", "127.0.0.1:70000"],
    ["a.lua", "b.lua"],
])
def test_usage_error_exits_2(args):
    r = run(*args)
    assert r.returncode == 2, f"{args}: exit {r.returncode}\n{r.stderr}"
    assert r.stderr.strip(), "a usage error says what is wrong"
    assert "listening on" not in r.stderr


def test_busy_port_exits_3():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run("-l", f"127.0.0.1:{port}", os.path.join(SCRIPTS, "ok.lua"))
    assert r.returncode == 3, r.stderr
    assert f"127.0.0.1:{port}" in r.stderr
    assert "address already in use" in r.stderr.lower()


def test_listen_line_names_the_real_port():
    with Server("ok.lua") as s:
        assert s.port != 0
        m = s.wait_for_log(r"listening on 127\.0\.0\.1:(\d+)")
        assert int(m.group(1)) == s.port
        c = s.connect()
        c.send_frame(OP_TEXT, b"x")
        assert c.recv_message() == (OP_TEXT, b"x")


def test_ipv6_listen():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this machine")
    with Server("ok.lua", listen="[::1]:0") as s:
        m = s.wait_for_log(r"listening on \[::1\]:(\d+)")
        s.host = "::1"
        c = s.connect()
        c.send_frame(OP_TEXT, b"v6")
        assert c.recv_message() == (OP_TEXT, b"v6")


def test_script_lookup_from_another_directory(tmp_path):
    # `wsluad chat.lua` from a directory without chat.lua finds the bundled one.
    with Server("chat.lua", cwd=str(tmp_path)) as s:
        a = s.connect()
        b = s.connect()
        a.send_frame(OP_TEXT, b"found the bundled chat")
        assert "found the bundled chat" in recv_until(b, "found the bundled chat")


def test_default_script_is_chat(tmp_path):
    with Server(None, cwd=str(tmp_path)) as s:
        a = s.connect()
        b = s.connect()
        a.send_frame(OP_TEXT, b"default script chats")
        assert "default script chats" in recv_until(b, "default script chats")


def test_local_file_wins_over_bundled(tmp_path):
    (tmp_path / "chat.lua").write_text(
        'function on_message(conn, data) conn:send("local copy: " .. data) end\n')
    with Server("chat.lua", cwd=str(tmp_path)) as s:
        c = s.connect()
        c.send_frame(OP_TEXT, b"hi")
        assert c.recv_text() == "local copy: hi"


def test_verbose_logs_connection_open_and_close():
    with Server("echo.lua", "-v") as s:
        c, cid = connect_id(s)
        port = c.sock.getsockname()[1]
        opened = s.wait_for_log(rf"DEBUG .*127\.0\.0\.1:{port}\b").string
        assert re.search(rf"\b{cid}\b", opened.split("DEBUG", 1)[1]), opened
        mark = s.mark()
        c.close_handshake()
        closed = s.wait_for_log(rf"DEBUG .*127\.0\.0\.1:{port}\b", after=mark).string
        assert re.search(rf"\b{cid}\b", closed.split("DEBUG", 1)[1]), closed


def test_connections_not_logged_without_verbose():
    with Server("echo.lua") as s:
        c, cid = connect_id(s)
        port = c.sock.getsockname()[1]
        c.close_handshake()
        s.wait_for_log(rf"on_close id={cid} ")
        assert not s.find_logs(rf"DEBUG")


def test_quiet_logs_only_warnings_and_errors():
    with Server("probe.lua", "-q", quiet_port=free_port()) as s:
        c = s.connect()
        c.send_frame(OP_TEXT, "ws.log('info-marker') ws.log.warn('warn-marker') "
                              "ws.log.error('error-marker') return true")
        assert c.recv_text() == "ok true"
        s.wait_for_log(r" WARN .*warn-marker")
        s.wait_for_log(r" ERROR .*error-marker")
        assert not s.find_logs(r"info-marker")
        assert not s.find_logs(r" INFO ")


def test_log_line_format():
    with Server("ok.lua") as s:
        line = s.wait_for_log(r"listening on").string
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (ERROR|WARN|INFO|DEBUG) ", line), line


def recv_until(c, text):
    """Messages until one contains text (chat.lua may send notices too)."""
    while True:
        m = c.recv_text()
        if text in m:
            return m


@pytest.mark.parametrize("log_queries", [False, True])
def test_query_strings_stay_out_of_the_log(log_queries):
    """`-v` logs each upgrade's path; its query (often a token) only with --log-queries."""
    args = ["-v"] + (["--log-queries"] if log_queries else [])
    with Server("ok.lua", *args) as s:
        s.connect("/room/a?token=s3cret")
        line = s.wait_for_log(r"open /room/a").string
        assert ("s3cret" in line) == log_queries, line
        assert ("s3cret" in s.log()) == log_queries
