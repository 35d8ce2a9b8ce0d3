"""`cmake --install` under a fresh prefix: the binary, the man page, lua/ and the web client land
where they belong, and the installed binary finds chat.lua and the chat page from any directory
(it looks in share/wsluad next to itself, so any prefix works)."""

import os
import subprocess

import pytest

import harness
from harness import Server
from wsclient import OP_TEXT


def test_files_land_in_place(prefix):
    for rel in ["bin/wsluad", "share/man/man1/wsluad.1", "share/wsluad/lua/chat.lua",
                "share/wsluad/www/index.html"]:
        assert (prefix / rel).is_file(), f"{rel} was not installed"
    assert os.access(prefix / "bin/wsluad", os.X_OK)


def test_man_page_renders(prefix):
    r = subprocess.run(["man", "-M", str(prefix / "share/man"), "wsluad"],
                       env={**os.environ, "MANPAGER": "cat", "MANWIDTH": "80"},
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert r.returncode == 0, r.stderr
    assert "on_message" in r.stdout and "--listen" in r.stdout


def test_installed_binary_runs_chat_from_anywhere(prefix, tmp_path, monkeypatch):
    monkeypatch.setenv("WSLUAD_BIN", str(prefix / "bin/wsluad"))
    with Server(None, "chat.lua", cwd=str(tmp_path)) as srv:
        assert str(prefix / "share/wsluad/lua/chat.lua") in srv.log()
        a, b = srv.connect(), srv.connect()
        a.send_frame(OP_TEXT, b"from an installed server")
        assert b.recv_message() == (OP_TEXT, b"from an installed server")
        status, headers, body = srv.get("/")
        assert status == 200 and b"<html" in body.lower()


def test_installed_binary_names_where_it_looked(prefix, tmp_path):
    # The example scripts are documentation, not installed scripts: `cd /tmp && wsluad rooms.lua`
    # says where it looked (the installed lua/ under this prefix, not the configured one) and
    # where the example is.
    r = subprocess.run([str(prefix / "bin/wsluad"), "--check", "rooms.lua"], cwd=tmp_path,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert r.returncode == 1, r.stdout + r.stderr
    lua = os.path.realpath(prefix / "share/wsluad/lua")
    example = os.path.realpath(prefix / "share/doc/wsluad/examples/rooms.lua")
    assert f"not in the current directory ({os.path.realpath(tmp_path)}) nor in {lua}" \
        in r.stderr, r.stderr
    assert f"wsluad {example}" in r.stderr, r.stderr
