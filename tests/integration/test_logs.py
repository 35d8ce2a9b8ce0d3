"""The log: --log-format json writes one JSON object per line (ts, level, msg, and conn, remote,
worker when they apply) for every kind of line, hostile bytes and tracebacks included; the text
format keeps its shape; query strings and Authorization/Cookie values stay out of the log in
both formats unless --log-queries."""

import json
import os
import re
import shutil
import signal

import pytest

from harness import SCRIPTS, Server, run
from wsclient import OP_CLOSE, OP_TEXT, build_frame

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
KEYS = {"ts", "level", "msg", "conn", "remote", "worker", "truncated"}
HOSTILE = ('q" b\\ nl\n cr\r tab\t nul\0 esc\x1b[31m del\x7f bad' + "\ufffd" * 6
           + " ls\u2028 end")


def parse_all(server):
    """Every line the server wrote, each parsed as one JSON object; fails on any other line."""
    out = []
    for line in server.log().split("\n"):
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise AssertionError(f"not a JSON line ({e}): {line!r}")
        assert isinstance(obj, dict), line
        assert {"ts", "level", "msg"} <= obj.keys() <= KEYS, line
        assert TS.match(obj["ts"]), line
        assert obj["level"] in ("error", "warn", "info", "debug"), line
        assert isinstance(obj["msg"], str), line
        assert ("conn" in obj) == ("remote" in obj), line
        if "conn" in obj:
            assert isinstance(obj["conn"], int) and obj["conn"] > 0, line
            assert re.fullmatch(r"127\.0\.0\.1:\d+", obj["remote"]), line
        out.append(obj)
    return out


def copy_script(tmp_path, name="logs.lua"):
    p = tmp_path / name
    shutil.copy(os.path.join(SCRIPTS, "logs.lua"), p)
    return str(p)


def test_every_line_of_a_run_is_json(tmp_path):
    script = copy_script(tmp_path)
    with Server(script, "-v", "--log-format", "json") as s:
        c = s.connect("/room")
        port = c.sock.getsockname()[1]
        remote = f"127.0.0.1:{port}"
        c.send_text("hostile")
        assert c.recv_message() == (OP_TEXT, b"hostile")
        c.send_text("debug")
        c.recv_message()
        c.send_text("timer")
        c.recv_message()
        s.wait_for_log(r"timer exploded")
        c.send_text("boom")  # on_message fails: a traceback, and close 1011
        assert c.recv_frame()[1] == OP_CLOSE
        # Refusals and HTTP errors before any upgrade, and a protocol error.
        assert s.get("/no-such-file")[0] == 404
        assert s.http(b"GET /refuse HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")[0] == 401
        assert s.http(b"GET / HTTP/1.0\r\nUpgrade: websocket\r\n\r\n")[0] == 400
        d = s.connect("/")
        d.send_raw(build_frame(OP_TEXT, b"unmasked", mask=False))
        assert d.recv_frame()[1] == OP_CLOSE
        s.wait_for_log(r"protocol error")
        # A reload, then one that fails to compile.
        s.signal(signal.SIGHUP)
        s.wait_for_log(r"reloaded ")
        with open(script, "a") as f:
            f.write("\nthis is not Lua\n")
        s.signal(signal.SIGHUP)
        s.wait_for_log(r"reload of .* failed")
        assert s.stop() == 0

    lines = parse_all(s)
    by_msg = lambda rx: [o for o in lines if re.search(rx, o["msg"])]
    # The connection's own lines carry it as fields, and the text form's prefix is gone.
    opened = by_msg(r"^open /room$")
    assert len(opened) == 1 and opened[0]["level"] == "debug"
    assert opened[0]["remote"] == remote
    conn = opened[0]["conn"]
    # ws.log(conn, ...): the message as the script wrote it, plus the fields.
    mine = [o for o in by_msg(r"opened$") if o.get("conn") == conn]
    assert len(mine) == 1 and mine[0]["msg"] == f"conn#{conn} ({remote}) opened"
    assert mine[0]["remote"] == remote and mine[0]["level"] == "info"
    # Hostile bytes: escaped, control characters kept, ill-formed UTF-8 replaced.
    hostile = [o for o in lines if HOSTILE in o["msg"]]
    assert [o["level"] for o in hostile] == ["warn", "info"], hostile
    assert hostile[0]["msg"] == HOSTILE and "conn" not in hostile[0]
    assert hostile[1]["msg"] == f"conn#{conn} ({remote}) {HOSTILE}"
    assert hostile[1]["conn"] == conn
    assert by_msg(r"^a debug line$")[0]["level"] == "debug"
    # A handler's error: one line, the traceback inside, the connection as fields.
    boom = by_msg(r"^Lua error in on_message")
    assert len(boom) == 1 and boom[0]["level"] == "error" and boom[0]["conn"] == conn
    assert "boom\nsecond line of the message\nstack traceback:\n" in boom[0]["msg"]
    timer = by_msg(r"^Lua error in .*timer exploded")
    assert len(timer) == 1 and "conn" not in timer[0] and "stack traceback" in timer[0]["msg"]
    assert by_msg(r"closed 1011")[0]["conn"] == conn
    # Lines about connections that never opened: the socket's address.
    for rx, level in [(r"^GET /no-such-file 404$", "debug"),
                      (r"^HTTP 401: refused by on_upgrade$", "info"),
                      (r"^HTTP 400: a WebSocket upgrade needs HTTP/1.1$", "info"),
                      (r"^protocol error, closing 1002", "info")]:
        found = by_msg(rx)
        assert len(found) == 1 and found[0]["level"] == level and "conn" in found[0], rx
    # Reloads; the failed one logs the compiler's message.
    assert by_msg(r"^SIGHUP: reloading the script$")
    assert by_msg(r"^reloaded ")
    failed = by_msg(r"^reload of .* failed")
    assert failed and failed[0]["level"] == "warn"
    assert by_msg(r"^SIGTERM: shutting down$") and lines[-1]["msg"] == "bye"
    assert lines[0]["msg"].startswith("wsluad ") and " listening on " in lines[0]["msg"]


def test_text_lines_keep_their_shape():
    with Server("logs.lua", "-v") as s:
        c = s.connect("/room")
        port = c.sock.getsockname()[1]
        c.send_text("boom")
        assert c.recv_frame()[1] == OP_CLOSE
        s.wait_for_log(r"closed 1011")
        assert s.stop() == 0
    text = s.log()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.search(rf"(?m)^{stamp} DEBUG conn#(\d+) 127\.0\.0\.1:{port}: open /room$", text)
    assert re.search(rf"(?m)^{stamp} INFO conn#\d+ \(127\.0\.0\.1:{port}\) opened$", text)
    # A traceback stays a block of lines in the text format.
    assert re.search(rf"(?m)^{stamp} ERROR Lua error in on_message \(conn#\d+ 127\.0\.0\.1:"
                     rf"{port}\): .*boom\nsecond line of the message\nstack traceback:\n", text)
    assert not any(line.startswith("{") for line in text.split("\n"))


def test_startup_errors_follow_the_format(tmp_path):
    r = run("--log-format", "json", "no-such-script.lua", cwd=str(tmp_path))
    assert r.returncode == 1
    lines = [json.loads(line) for line in r.stderr.splitlines()]
    assert len(lines) == 1 and lines[0]["level"] == "error"
    assert "cannot find script 'no-such-script.lua'" in lines[0]["msg"]
    r = run("--log-format", "json", "--static", str(tmp_path / "nowhere"),
            os.path.join(SCRIPTS, "ok.lua"))
    assert r.returncode == 2
    assert json.loads(r.stderr)["msg"].startswith("--static ")
    # The text format: as a command-line tool says it.
    r = run("no-such-script.lua", cwd=str(tmp_path))
    assert r.stderr.startswith("wsluad: cannot find script 'no-such-script.lua'")
    # A script that does not compile: the compiler's message, in one line.
    bad = tmp_path / "bad.lua"
    bad.write_text("function on_open(\n")
    r = run("--log-format", "json", "--check", str(bad))
    assert r.returncode == 1
    assert all(json.loads(line)["level"] == "error" for line in r.stderr.splitlines())


def test_log_format_values():
    ok = os.path.join(SCRIPTS, "ok.lua")
    for v in ("text", "json"):
        assert run("--check", "--log-format", v, ok).returncode == 0
    for v in ("JSON", "xml", ""):
        r = run("--check", "--log-format", v, ok)
        assert r.returncode == 2 and "--log-format" in r.stderr, r.stderr


def test_workers_name_themselves_in_json(redis_server):
    with Server("ok.lua", "--workers", "2", "--redis", redis_server.url, "--log-format",
                "json") as s:
        s.wait_for_logs(r"listening on", 2)
        assert s.stop() == 0
    lines = parse_all(s)
    assert all("worker" in o for o in lines)
    assert {o["worker"] for o in lines} == {"supervisor", "w1", "w2"}
    assert any(o["worker"] == "supervisor" and o["msg"] == "bye" for o in lines)


# ---- secrets -------------------------------------------------------------------------------

SECRET = "s3cr3tV4lue"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def upgrade_request(path, extra=b"", version=b"13"):
    return (b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: " + version + b"\r\n"
            b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\n" + extra + b"\r\n")


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("log_queries", [False, True])
def test_secrets_stay_out_of_the_log(fmt, log_queries):
    """A token in the query, an Authorization and a Cookie header, through every path that logs:
    an accepted upgrade, an on_upgrade refusal, refused upgrades, a static file, a 404, a method
    not served, a malformed request, a protocol error and a close. Only the query of an
    accepted upgrade may show, and only with --log-queries."""
    args = ["-v", "--log-format", fmt] + (["--log-queries"] if log_queries else [])
    auth = (f"Authorization: Bearer {SECRET}-auth\r\nCookie: sid={SECRET}-cookie\r\n"
            f"Proxy-Authorization: Basic {SECRET}-proxy\r\n").encode()
    q = f"?token={SECRET}-query"
    with Server("logs.lua", *args) as s:
        c = s.connect("/room" + q, headers={"Authorization": f"Bearer {SECRET}-auth",
                                            "Cookie": f"sid={SECRET}-cookie"})
        c.send_text("boom")
        assert c.recv_frame()[1] == OP_CLOSE
        assert s.http(upgrade_request("/refuse" + q, auth))[0] == 401
        assert s.http(upgrade_request("/room" + q, auth, version=b"8"))[0] == 426
        assert s.http(upgrade_request("/room" + q, auth).replace(b"HTTP/1.1", b"HTTP/1.0"))[0] \
            == 400
        for method in (b"GET",):
            for path in (b"/", b"/missing"):
                assert s.http(method + b" " + path + q.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                              + auth + b"\r\n")[0] in (200, 404)
        assert s.http(b"POST /" + q.encode() + b" HTTP/1.1\r\nHost: x\r\n" + auth +
                      b"Content-Length: 2\r\n\r\nhi")[0] == 404  # no on_request: not served
        assert s.http(b"GET /" + q.encode() + b" HTTP/1.1\r\nHost: x\r\nHost: y\r\n" + auth
                      + b"\r\n")[0] == 400
        d = s.connect("/p" + q, headers={"Cookie": f"sid={SECRET}-cookie"})
        d.send_raw(build_frame(OP_TEXT, b"unmasked", mask=False))
        assert d.recv_frame()[1] == OP_CLOSE
        e = s.connect("/p" + q, headers={"Authorization": f"Bearer {SECRET}-auth"})
        e.close_handshake()
        s.wait_for_logs(r"closed 1000", 1)
        s.wait_for_logs(r"protocol error", 1)
        assert s.stop() == 0
    log = s.log()
    for what in ("auth", "cookie", "proxy"):
        assert f"{SECRET}-{what}" not in log
    shown = [line for line in log.split("\n") if f"{SECRET}-query" in line]
    if not log_queries:
        assert shown == []
    else:  # the open lines of the three accepted upgrades, and nothing else
        assert len(shown) == 3 and all(re.search(r"open /(room|p)\?token=", line)
                                       for line in shown), shown


def test_client_bytes_cannot_forge_log_lines():
    """A close reason (and anything else a client sends that the log repeats) cannot start a
    line of its own or carry terminal escapes: control bytes show as '?'."""
    with Server("ok.lua", "-v") as s:
        c = s.connect()
        c.send_frame(OP_CLOSE, b"\x03\xe8" + b"bye\n2026-01-01T00:00:00.000Z ERROR forged\x1b[2J")
        c.expect_close()
        line = s.wait_for_log(r"closed 1000 bye").string
        assert "bye?2026-01-01T00:00:00.000Z ERROR forged?[2J" in line
        assert not s.find_logs(r"^2026-01-01T00:00:00\.000Z ERROR forged")


WARN_SCRIPT = '''
warn("before @on: not shown")
warn("@on")
warn("a warning ", "in two pieces")
setmetatable({}, {__gc = function() error("a finalizer failed") end})
collectgarbage()
warn("@off")
warn("after @off: not shown")
'''


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_lua_warnings_go_to_the_log(tmp_path, fmt):
    # Lua's warn() (and the warning Lua gives for an error in a __gc finalizer) went nowhere:
    # the state has no warning function unless the embedder sets one. They are log lines at
    # WARN, off until warn("@on") as in the lua command.
    script = tmp_path / "warn.lua"
    script.write_text(WARN_SCRIPT)
    r = run("--log-format", fmt, "--check", str(script))
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    if fmt == "json":
        objs = [json.loads(l) for l in lines]
        warns = [o["msg"] for o in objs if o["level"] == "warn"]
    else:
        warns = [l.split(" WARN ", 1)[1] for l in lines if " WARN " in l]
    assert warns[0] == "Lua warning: a warning in two pieces", warns
    assert re.fullmatch(r"Lua warning: error in __gc.*a finalizer failed.*", warns[1]), warns
    assert len(warns) == 2, warns


def test_ws_log_is_one_whole_line_in_text(tmp_path):
    # ws.log's text line ended at the message's first NUL (dropping the rest, later arguments
    # included) and wrote its line breaks and escape sequences raw, so a script that logged what
    # a client sent could have it start a forged line or drive the terminal. Control bytes are
    # now escaped (\n, \r, \xHH; a tab stays): one call, one line, every byte accounted for.
    script = tmp_path / "nul.lua"
    script.write_text('ws.log("a\\0b", "c")\n'
                      'ws.log.warn("one\\n2026-01-01T00:00:00.000Z ERROR forged\\r\\27[2J\\tend")\n')
    r = run("--check", str(script))
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].endswith(" INFO a\\x00b c"), lines
    assert lines[1].endswith(" WARN one\\n2026-01-01T00:00:00.000Z ERROR forged\\r\\x1b[2J\tend"), lines
