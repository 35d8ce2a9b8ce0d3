"""package.path/cpath: a script requires a module next to it (whatever the current directory)
and Debian's Lua 5.4 C modules (lua-cjson)."""

import os

import pytest

from harness import SCRIPTS, Server
from wsclient import OP_TEXT


def test_require_module_next_to_script(tmp_path):
    # Run from an unrelated directory: only the script's own directory can provide req_helper.
    with Server(os.path.join(SCRIPTS, "req_main.lua"), cwd=str(tmp_path)) as s:
        c = s.connect()
        c.send_frame(OP_TEXT, b"you")
        assert c.recv_text() == "helper greets you"


def test_require_module_next_to_script_relative_path(tmp_path):
    d = tmp_path / "app"
    d.mkdir()
    (d / "main.lua").write_text('local m = require "mymod"\n'
                                'function on_message(conn, data) conn:send(m.tag .. data) end\n')
    (d / "mymod.lua").write_text('return { tag = "mymod:" }\n')
    with Server("app/main.lua", cwd=str(tmp_path)) as s:
        c = s.connect()
        c.send_frame(OP_TEXT, b"x")
        assert c.recv_text() == "mymod:x"


def test_require_system_c_module():
    if not any(os.path.exists(p) for p in ["/usr/lib/x86_64-linux-gnu/lua/5.4/cjson.so",
                                           "/usr/lib/aarch64-linux-gnu/lua/5.4/cjson.so",
                                           "/usr/local/lib/lua/5.4/cjson.so"]):
        pytest.skip("lua-cjson for Lua 5.4 is not installed")
    with Server("cjson_user.lua") as s:
        c = s.connect()
        c.send_frame(OP_TEXT, b'{"n": 41}')
        assert c.recv_text() == '{"n":42}'
