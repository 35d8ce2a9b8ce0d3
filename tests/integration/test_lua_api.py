"""The Lua contract of issue 2 through scripts/probe.lua: each text message is a Lua chunk run
in the server, its results come back as "ok <results>" or "err <error>"."""

import os
import re
import resource

import pytest

from harness import Server, free_port, run, source_dir
from probe import ev, ev1, ev_err, open_ids
from wsclient import OP_BINARY, OP_TEXT


@pytest.fixture
def server():
    with Server("probe.lua") as s:
        yield s


# --- the connection object ------------------------------------------------------------------
def test_conn_id_unique_integer(server):
    cs = [server.connect() for _ in range(5)]
    ids = [ev(c, "return math.type(conn.id), conn.id") for c in cs]
    assert all(t == "integer" for t, _ in ids)
    nums = [int(i) for _, i in ids]
    assert len(set(nums)) == 5
    # Ids are never reused within the process, even after a connection closed.
    cs[0].close_handshake()
    server.wait_for_log(rf"on_close id={nums[0]} ")
    d = server.connect()
    assert int(ev1(d, "return conn.id")) not in nums


def test_conn_remote(server):
    c = server.connect()
    host, port = c.sock.getsockname()[:2]
    assert ev1(c, "return conn.remote") == f"{host}:{port}"


def test_conn_path_and_query(server):
    c = server.connect("/some/path?a=1&b=two%20words")
    assert ev(c, "return conn.path, conn.query") == ["/some/path", "a=1&b=two%20words"]
    d = server.connect("/plain")
    assert ev(d, "return conn.path, conn.query == nil or conn.query == ''") == ["/plain", "true"]


def test_conn_headers_lower_case(server):
    c = server.connect(headers={"X-Test-Header": "Some Value", "User-Agent": "probe/1"})
    assert ev(c, "return conn.headers['x-test-header'], conn.headers['user-agent']") == \
        ["Some Value", "probe/1"]
    assert ev1(c, "return conn.headers.host ~= nil") == "true"
    # The handshake's own headers (fixed values, or a nonce) are not kept for the connection's
    # life; on_upgrade sees them in req.headers (test_upgrade.py).
    assert ev(c, "return conn.headers['sec-websocket-key'], conn.headers['sec-websocket-version'],"
                 " conn.headers.upgrade, conn.headers.connection") == ["nil"] * 4
    upper = ev1(c, "for k in pairs(conn.headers) do if k ~= k:lower() then return k end end "
                   "return 'none'")
    assert upper == "none"


def test_conn_data_persists_across_messages(server):
    c = server.connect()
    d = server.connect()
    assert ev1(c, "return type(conn.data)") == "table"
    assert ev1(c, "conn.data.n = (conn.data.n or 0) + 1 return conn.data.n") == "1"
    assert ev1(d, "conn.data.n = (conn.data.n or 0) + 10 return conn.data.n") == "10"
    assert ev1(c, "conn.data.n = (conn.data.n or 0) + 1 return conn.data.n") == "2"
    assert ev1(d, "return conn.data.n") == "10"


def test_conn_fields_are_read_only_but_data(server):
    c = server.connect()
    for k in ["id", "remote", "path", "query", "secure", "compressed", "headers", "close",
              "subscribe"]:
        assert f"conn.{k} is read-only" in ev_err(c, f"conn.{k} = 1"), k
    assert "conn.nick: a conn has no such field (keep your own in conn.data)" in \
        ev_err(c, "conn.nick = 'ann'")
    assert ev1(c, "conn.data = {nick = 'ann'} return conn.data.nick") == "ann"
    assert ev1(c, "conn.data = nil return next(conn.data) == nil") == "true"


def test_conn_is_a_table_with_send_of_its_own(server):
    # So that conn:send is one table lookup, send is an entry of the conn table itself; the
    # metatable (hidden from getmetatable) answers for everything else, and for send too once
    # the script removed its entry.
    c = server.connect()
    assert ev(c, "return type(conn), rawget(conn, 'send') == conn.send, getmetatable(conn)") \
        == ["table", "true", "wsluad.conn"]
    c.send_text("conn.send = nil return rawget(conn, 'send') == nil, conn:send('x')")
    assert c.recv_text() == "x"
    assert c.recv_text() == "ok true\ttrue"
    assert "cannot change a protected metatable" in ev_err(c, "setmetatable(conn, nil)")


def test_closed_conn_object_never_reaches_a_later_connection(server):
    # A conn object names its connection by a slot (its first entry) that a later connection
    # reuses once the first is gone: the old object must answer "closed" and keep its own
    # fields, and never reach the connection that took its slot.
    keep = server.connect()
    a = server.connect()
    aid, slot = ev(a, "S.old = conn return conn.id, rawget(conn, 1)")
    a.close_handshake()
    a.shutdown()
    later = []
    for _ in range(50):  # until a later connection took the slot (the next or so after a went)
        later.append(server.connect())
        if ev1(later[-1], "return rawget(conn, 1)") == slot:
            break
    else:
        pytest.fail(f"no later connection took slot {slot}")
    assert ev(keep, f"local ok, err = S.old:send('stray') return ok, err, S.old.id == {aid}, "
                    "S.old:is_open(), tostring(S.old):find('closed') ~= nil") == \
        ["nil", "closed", "true", "false", "true"]
    ev(keep, "ws.broadcast('marker', 'text', conn)")
    for c in later:
        assert c.recv_text() == "marker"


def test_conn_tostring(server):
    c = server.connect()
    cid, text = ev(c, "return conn.id, tostring(conn)")
    port = c.sock.getsockname()[1]
    assert re.search(rf"\b{cid}\b", text), text
    assert f"127.0.0.1:{port}" in text


def test_conn_tostring_closed_as_soon_as_not_open(server):
    # tostring(conn) said "conn#7 (ip:port)" until the TCP connection was gone, so in on_close
    # and right after conn:close it named as open a connection whose is_open() was false.
    a = server.connect()
    b = server.connect()
    aid = ev1(a, "S.a = conn return conn.id")
    port = a.sock.getsockname()[1]
    # a does not answer the close frame: the server waits in the close handshake.
    got = ev(b, "S.a:close(4000, 'bye') return S.a:is_open(), tostring(S.a)")
    assert got == ["false", f"conn#{aid} (127.0.0.1:{port}, closed)"], got


def test_conn_same_object_across_handlers(server):
    c = server.connect()
    # probe.lua's on_open stored seen[conn] = conn.id: the object given to on_message is the
    # same one, so it finds itself as a table key.
    assert ev(c, "return seen[conn] == conn.id, rawequal(seen[conn], conn.id)") == ["true", "true"]
    assert ev1(c, "S.me = conn return true") == "true"
    assert ev1(c, "return rawequal(S.me, conn)") == "true"
    cid = ev1(c, "return conn.id")
    c.close_handshake()
    # ...and on_close gets it too (probe.lua logs same=true when seen[conn] matches).
    server.wait_for_log(rf"on_close id={cid} code=1000 reason=\[\] open=false same=true")


def test_conn_after_close(server):
    a = server.connect("/gone?x=1")
    b = server.connect()
    aid = ev1(a, "S.saved = conn return conn.id")
    a.close_handshake(4000, "bye")
    server.wait_for_log(rf"on_close id={aid} code=4000 reason=\[bye\] open=false")
    got = ev(b, "local c = S.saved local ok, e = c:send('x') "
                "return c:is_open(), ok, e, c.id, c.path, c.query, c.remote ~= nil, "
                "type(c.data), tostring(c) ~= nil")
    assert got == ["false", "nil", "closed", aid, "/gone", "x=1", "true", "table", "true"]
    # Methods fail softly: close on a closed conn does not raise.
    assert ev1(b, "S.saved:close() S.saved:close(1000, 'again') return 'fine'") == "fine"
    assert ev1(b, "return ws.get(S.saved.id) == nil") == "true"


def test_send_on_a_closed_conn_returns_nil_closed_ECLOSED(server):
    # The error convention: exactly three values, the code name last.
    a = server.connect()
    b = server.connect()
    aid = ev1(a, "S.saved = conn return conn.id")
    a.close_handshake()
    server.wait_for_log(rf"on_close id={aid} ")
    assert ev(b, "return select('#', S.saved:send('x')), S.saved:send('x')") == \
        ["3", "nil", "closed", "ECLOSED"]
    assert ev(b, "return S.saved:send('x', 'binary')") == ["nil", "closed", "ECLOSED"]
    assert ev(b, "return S.saved:close()") == ["nil", "closed", "ECLOSED"]


def test_conn_send_kinds(server):
    c = server.connect()
    c.send_frame(OP_TEXT, "conn:send('t1') conn:send('b1', 'binary') conn:send('t2', 'text') "
                          "return true")
    assert c.recv_message() == (OP_TEXT, b"t1")
    assert c.recv_message() == (OP_BINARY, b"b1")
    assert c.recv_message() == (OP_TEXT, b"t2")
    assert c.recv_text() == "ok true"


def test_conn_send_returns_true(server):
    c = server.connect()
    c.send_frame(OP_TEXT, "return conn:send('first')")
    assert c.recv_text() == "first"
    assert c.recv_text() == "ok true"


def test_conn_send_binary_arbitrary_bytes(server):
    c = server.connect()
    c.send_frame(OP_TEXT, "return conn:send('\\0\\255\\254', 'binary')")
    assert c.recv_message() == (OP_BINARY, b"\x00\xff\xfe")
    assert c.recv_text() == "ok true"


def test_conn_send_invalid_utf8_text_raises(server):
    c = server.connect()
    err = ev_err(c, "return conn:send('\\255\\254')")
    assert "binary" in err
    # Nothing was sent and the connection is fine.
    assert ev1(c, "return conn:is_open()") == "true"


RESEND = r"""
function on_message(conn, data, kind)
  -- The string received, sent back as text: a text message was checked on arrival, a binary
  -- one must be checked now.
  for _, send in ipairs({ function() return conn:send(data, "text") end,
                          function() return ws.broadcast(data) end }) do
    local ok, err = pcall(send)
    if not ok then conn:send("err " .. err) end
  end
end
"""


def test_received_string_sent_as_text_is_checked_unless_it_came_as_text(tmp_path):
    script = tmp_path / "resend.lua"
    script.write_text(RESEND)
    with Server(str(script)) as s:
        c = s.connect()
        c.send_frame(OP_TEXT, "h\u00e9llo")
        assert [c.recv_text(), c.recv_text()] == ["h\u00e9llo", "h\u00e9llo"]
        c.send_frame(OP_BINARY, b"\xff\xfe")
        errors = [c.recv_text(), c.recv_text()]
        assert all(e.startswith("err ") and "UTF-8" in e for e in errors), errors
        c.send_frame(OP_BINARY, "h\u00e9".encode())  # valid UTF-8, though binary: sent
        assert [c.recv_text(), c.recv_text()] == ["h\u00e9", "h\u00e9"]


def test_conn_send_bad_kind_raises(server):
    c = server.connect()
    ev_err(c, "return conn:send('x', 'bogus')")
    ev_err(c, "return conn:send({})")
    assert ev1(c, "return 'still fine'") == "still fine"


def test_conn_close_default_1000(server):
    c = server.connect()
    cid = ev1(c, "return conn.id")
    c.send_frame(OP_TEXT, "conn:close()")
    # The reply is queued before... or not at all once closed: accept either, then the close.
    code, reason = c.expect_close(skip_data=True)
    assert (code, reason) == (1000, "")
    c.close(1000)
    c.expect_eof()
    server.wait_for_log(rf"on_close id={cid} code=1000 ")


def test_conn_close_code_and_reason(server):
    c = server.connect()
    cid = ev1(c, "return conn.id")
    c.send_frame(OP_TEXT, "conn:close(4001, 'go away') return conn:is_open()")
    assert c.expect_close(skip_data=True) == (4001, "go away")
    c.close(4001)
    c.expect_eof()
    server.wait_for_log(rf"on_close id={cid} code=4001 reason=\[go away\]")


def test_conn_close_when_client_never_answers(server):
    # The server waits only a short time for the client's close frame, then drops TCP.
    c = server.connect()
    c.send_frame(OP_TEXT, "conn:close(4002)")
    assert c.expect_close(skip_data=True)[0] == 4002
    c.expect_eof()


def test_conn_is_open(server):
    c = server.connect()
    assert ev1(c, "return conn:is_open()") == "true"


# --- the ws module --------------------------------------------------------------------------
def test_require_wsluad_returns_ws(server):
    c = server.connect()
    assert ev(c, "return require('wsluad') == ws, type(ws)") == ["true", "table"]


def test_isyieldable_is_true_only_where_coroutine_yield_works(server):
    # A handler runs on a thread of the server's (a runner) and a function of ws.spawn in a
    # coroutine whose only waits are ws.sleep and ws.redis: coroutine.yield is an error in both,
    # and coroutine.isyieldable() said true, so code that checks it before yielding failed.
    c = server.connect()
    assert ev(c, "return coroutine.isyieldable(), select(2, coroutine.running())") == [
        "false", "true"]
    assert ev(c, "return coroutine.wrap(function() return coroutine.isyieldable(), "
                 "select(2, coroutine.running()) end)()") == ["true", "false"]
    assert ev(c, "local co = coroutine.create(function() coroutine.yield() end) "
                 "return coroutine.resume(co), coroutine.isyieldable(co)") == ["true", "true"]
    assert ev(c, "ws.spawn(function() S.y = coroutine.isyieldable() end) return S.y") == [
        "false"]
    # Where it cannot work, coroutine.yield is an ordinary error, which pcall catches (the
    # handler, or the function of ws.spawn, used to fail whatever pcall surrounded it).
    assert ev(c, "return pcall(coroutine.yield)") == [
        "false", "attempt to yield from outside a coroutine"]
    assert ev(c, "ws.spawn(function() S.y = {pcall(coroutine.yield)} end) "
                 "return S.y[1], S.y[2]") == [
        "false", "coroutine.yield() in a function run by ws.spawn (wait with ws.sleep or "
        "ws.redis)"]
    assert ev(c, "return coroutine.wrap(function(a) return coroutine.yield(a + 1) end)(1)") == [
        "2"]
    assert ev(c, "return coroutine.isyieldable(coroutine.running())") == ["false"]


def test_the_thread_running_handlers_is_empty_between_calls(server):
    # coroutine.running() in a handler hands out the thread that runs handlers. Between calls it
    # is an empty thread, as it always was, whatever the server keeps on it for speed: dead to
    # coroutine.status, coroutine.resume and coroutine.close, and the messages after go on.
    c = server.connect()
    assert ev(c, "return 1") == ["1"]
    assert ev(c, "S.runner = coroutine.running() return 2") == ["2"]
    # The spawned function's second stretch runs from a timer, while no handler runs.
    assert ev(c, "ws.spawn(function() ws.sleep(0.01) "
                 "local st = coroutine.status(S.runner) "
                 "local ok, err = coroutine.resume(S.runner) "
                 "ws.log('runner ' .. st .. '/' .. tostring(ok) .. '/' .. tostring(err) .. '/' "
                 ".. tostring(coroutine.close(S.runner))) end) return 3") == ["3"]
    server.wait_for_log(r"runner dead/false/cannot resume dead coroutine/true")
    assert ev(c, "return 4") == ["4"]


def test_broadcast_except_and_count(server):
    a, b, c = server.connect(), server.connect(), server.connect()
    open_ids(server, 3)
    # a's reply comes after anything broadcast to it, so its first message proves exclusion.
    assert ev1(a, "return ws.broadcast('to the others', 'text', conn)") == "2"
    assert b.recv_message() == (OP_TEXT, b"to the others")
    assert c.recv_message() == (OP_TEXT, b"to the others")
    # Without except the sender gets its copy too, before the reply.
    b.send_frame(OP_TEXT, "return ws.broadcast('\\1\\2\\255', 'binary')")
    for x in (a, b, c):
        assert x.recv_message() == (OP_BINARY, b"\x01\x02\xff")
    assert b.recv_text() == "ok 3"
    c.send_frame(OP_TEXT, "return ws.broadcast('everyone')")
    for x in (a, b, c):
        assert x.recv_message() == (OP_TEXT, b"everyone")
    assert c.recv_text() == "ok 3"


def test_broadcast_skips_closed(server):
    a, b, c = server.connect(), server.connect(), server.connect()
    ids = open_ids(server, 3)
    c.close_handshake()
    server.wait_for_log(rf"on_close id={ids[2]} ")
    a.send_frame(OP_TEXT, "return ws.broadcast('two left')")
    assert a.recv_message() == (OP_TEXT, b"two left")
    assert a.recv_text() == "ok 2"
    assert b.recv_message() == (OP_TEXT, b"two left")


def test_broadcast_invalid_utf8_text_raises(server):
    a = server.connect()
    assert "binary" in ev_err(a, "return ws.broadcast('\\255')")


def test_connections_and_count(server):
    a, b, c = server.connect(), server.connect(), server.connect()
    ids = open_ids(server, 3)
    got = ev(a, "local ids = {} for x in ws.connections() do ids[#ids + 1] = x.id end "
                "table.sort(ids) return ws.count(), table.concat(ids, ',')")
    assert got == ["3", ",".join(str(i) for i in sorted(ids))]
    # The iterator yields the same objects the handlers get.
    assert ev1(a, "for x in ws.connections() do if rawequal(x, conn) then return 'me' end end "
                  "return 'not me'") == "me"
    b.close_handshake()
    server.wait_for_log(rf"on_close id={ids[1]} ")
    assert ev(a, "local n = 0 for x in ws.connections() do n = n + 1 end return n, ws.count()") \
        == ["2", "2"]


def test_ws_log_levels():
    with Server("probe.lua") as s:
        c = s.connect()
        assert ev1(c, "ws.log('plain', 'marker', 1) ws.log.info('info-marker') "
                      "ws.log.warn('warn-marker') ws.log.error('error-marker') "
                      "ws.log.debug('debug-marker') ws.log.info('after-debug') return true") \
            == "true"
        s.wait_for_log(r" INFO .*plain.*marker")
        s.wait_for_log(r" INFO .*info-marker")
        s.wait_for_log(r" WARN .*warn-marker")
        s.wait_for_log(r" ERROR .*error-marker")
        s.wait_for_log(r"after-debug")
        # Without -v, debug lines are not shown (the later info line is there already).
        assert not s.find_logs(r"debug-marker")


def test_ws_log_debug_with_verbose():
    with Server("probe.lua", "-v") as s:
        c = s.connect()
        ev(c, "ws.log.debug('debug-marker') return true")
        s.wait_for_log(r" DEBUG .*debug-marker")


def test_bad_arguments_raise_and_server_survives(server):
    c = server.connect()
    for code in ["return ws.broadcast()", "return ws.broadcast({})",
                 "return ws.broadcast('x', 'nope')", "return conn:close('not a code')",
                 "return conn.send(nil, 'x')", "return ws.log.info(setmetatable({}, "
                 "{__tostring = function() error('tostring fails') end}))"]:
        ev_err(c, code)
    assert ev1(c, "return conn:is_open()") == "true"
    d = server.connect()
    assert ev1(d, "return ws.count()") == "2"


@pytest.mark.parametrize("how", ["close", "drop", "server_close"])
def test_is_open_false_in_on_close(server, how):
    # on_close runs when the connection has left the open state, however it ended.
    c = server.connect()
    cid = ev1(c, "return conn.id")
    if how == "close":
        c.close_handshake(1000)
    elif how == "drop":
        c.shutdown()
    else:
        c.send_frame(OP_TEXT, "conn:close(4003)")
        assert c.expect_close(skip_data=True)[0] == 4003
        c.close(4003)
    m = server.wait_for_log(rf"on_close id={cid} code=(\d+) reason=\[.*\] open=(\w+)")
    assert m.group(2) == "false", m.string


def test_ws_get_many_connections_some_closed():
    """ws.get finds every open connection and none of the closed ones, across the growth of its
    index and many removals (ids are given in accept order by a fresh server)."""
    with Server("get.lua") as srv:
        clients = [srv.connect() for _ in range(300)]
        closed = set(range(1, 301, 3))
        for i in sorted(closed):
            clients[i - 1].close_handshake()
        probe = srv.connect()  # id 301
        for i in list(range(1, 302)) + [0, 302, 10**9]:
            probe.send_frame(OP_TEXT, str(i).encode())
            want = "nil" if i in closed or not 1 <= i <= 301 else str(i)
            assert probe.recv_text() == want, f"ws.get({i})"


# --- ws.options and ws.version ----------------------------------------------------------------
# Every field the man page documents, under the man page's own name, holds what the command line
# said. No other spelling is looked for: a field that moved or was renamed fails here.
DOCUMENTED_OPTIONS = ["listen", "tls_listen", "address", "static", "max_message",
                      "max_backpressure", "deflate", "deflate_min", "max_connections",
                      "lua_memory", "handshake_timeout",
                      "idle_timeout", "handler_timeout", "max_request_body", "request_timeout",
                      "reload", "verbosity", "redis_prefix"]


def project_version():
    with open(os.path.join(source_dir(), "CMakeLists.txt")) as f:
        return re.search(r"project\(\s*wsluad\s+VERSION\s+([0-9.]+)", f.read()).group(1)


def options(c):
    """{name: (math.type or type, tostring)} of every documented ws.options field."""
    got = ev(c, "local out = {} "
                f"for _, k in ipairs({{{', '.join(repr(k) for k in DOCUMENTED_OPTIONS)}}}) do "
                "  local v = ws.options[k] "
                "  out[#out + 1] = k .. '=' .. (math.type(v) or type(v)) .. ':' .. tostring(v) "
                "end return table.concat(out, '|')")[0]
    return {k: tuple(v.split(":", 1)) for k, v in (kv.split("=", 1) for kv in got.split("|"))}


def test_ws_options_every_field_from_the_command_line(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    with Server("probe.lua", "--static", str(www), "--max-message", "12345",
                "--max-backpressure", "777K", "--deflate", "--deflate-min", "99",
                "--max-connections", "77", "--lua-memory", "64M",
                "--handshake-timeout", "3.5", "--idle-timeout", "42", "--handler-timeout", "1.5",
                "--max-request-body", "3K", "--request-timeout", "7.5", "--reload", "-v",
                "--redis-prefix", "probes") as s:
        c = s.connect()
        o = options(c)
        assert o == {
            "listen": ("string", "127.0.0.1:0"),          # as given
            "tls_listen": ("string", ""),                  # none given
            "address": ("string", f"127.0.0.1:{s.port}"),  # as bound
            "static": ("string", str(www)),
            "max_message": ("integer", "12345"),
            "max_backpressure": ("integer", str(777 * 1024)),
            "deflate": ("boolean", "true"),
            "deflate_min": ("integer", "99"),
            "max_connections": ("integer", "77"),
            "lua_memory": ("integer", str(64 << 20)),
            "handshake_timeout": ("float", "3.5"),
            "idle_timeout": ("float", "42.0"),
            "handler_timeout": ("float", "1.5"),
            "max_request_body": ("integer", "3072"),
            "request_timeout": ("float", "7.5"),
            "reload": ("boolean", "true"),
            "verbosity": ("integer", "1"),
            "redis_prefix": ("string", "probes"),
        }


def test_ws_options_defaults_and_other_values():
    with Server("probe.lua", "-q", "--static", "none", "--lua-memory", "0",
                "--handshake-timeout", "0", "--idle-timeout", "0", "--handler-timeout", "0",
                quiet_port=free_port()) as s:
        o = options(s.connect())
        assert o["static"] == ("string", "none")
        assert o["verbosity"] == ("integer", "-1")
        assert o["reload"] == ("boolean", "false")
        assert o["lua_memory"] == ("integer", "0")
        for k in ["handshake_timeout", "idle_timeout", "handler_timeout"]:
            assert o[k] == ("float", "0.0"), k
        assert o["listen"] == ("string", f"127.0.0.1:{s.port}")
    with Server("probe.lua") as s:
        o = options(s.connect())
        assert o["static"] == ("string", "")  # the default: the bundled pages
        assert o["verbosity"] == ("integer", "0")
        assert o["redis_prefix"] == ("string", "wsluad")
        assert o["max_message"] == ("integer", str(1 << 20))
        assert o["max_backpressure"] == ("integer", str(1 << 20))
        assert o["deflate"] == ("boolean", "false")
        assert o["deflate_min"] == ("integer", "256")
        assert o["lua_memory"] == ("integer", str(512 << 20))
        assert o["handshake_timeout"] == ("float", "10.0")
        assert o["idle_timeout"] == ("float", "60.0")
        assert o["handler_timeout"] == ("float", "2.0")
        assert o["max_request_body"] == ("integer", str(1 << 20))
        assert o["request_timeout"] == ("float", "30.0")
        # Derived from the open-file limit: the soft limit raised to the hard one (an unlimited
        # one counts as 1048576), less 64 descriptors of headroom.
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        limit = 1048576 if hard == resource.RLIM_INFINITY else hard
        assert o["max_connections"] == ("integer", str(limit - 64 if limit > 80 else 16))


def test_ws_options_ipv6_listen_keeps_its_brackets(tmp_path):
    script = tmp_path / "show.lua"
    script.write_text('print("listen=" .. ws.options.listen)\n')
    r = run("--check", "-l", "[::1]:8080", str(script))
    assert r.returncode == 0, r.stderr
    assert "listen=[::1]:8080" in r.stdout


def test_ws_options_address_nil_before_listening(tmp_path):
    # The script's first top-level run comes before the server listens.
    script = tmp_path / "early.lua"
    script.write_text('print("address=" .. tostring(ws.options.address))\n')
    r = run("--check", str(script))
    assert r.returncode == 0, r.stderr
    assert "address=nil" in r.stdout


def test_ws_options_read_only_and_nothing_undocumented(server):
    c = server.connect()
    for k in DOCUMENTED_OPTIONS + ["brand_new"]:
        assert "read-only" in ev_err(c, f"ws.options.{k} = 1")
    assert ev1(c, "return ws.options.max_message") == str(1 << 20)
    # Other spellings of the documented names are not there.
    assert ev(c, "return ws.options['max-message'], ws.options.maxMessage, ws.options.brand_new, "
                 "ws.options.MAX_MESSAGE") == ["nil"] * 4
    # It is a proxy: pairs sees nothing, its metatable is locked. Through the debug library, the
    # values behind it are exactly the documented fields (address comes from the server).
    assert ev(c, "local n = 0 for _ in pairs(ws.options) do n = n + 1 end "
                 "return n, getmetatable(ws.options)") == ["0", "read-only"]
    keys = ev1(c, "local mt = debug.getmetatable(ws.options) "
                  "local _, values = debug.getupvalue(mt.__index, 1) "
                  "local ks = {} for k in pairs(values) do ks[#ks + 1] = k end "
                  "table.sort(ks) return table.concat(ks, ',')").split(",")
    assert sorted(keys + ["address"]) == sorted(DOCUMENTED_OPTIONS)


def test_ws_version(server):
    c = server.connect()
    assert ev(c, "return type(ws.version), ws.version") == ["string", project_version()]
    r = run("--version")
    assert r.stdout.strip() == f"wsluad {project_version()}"
