"""Timers and utilities through scripts/probe.lua: ws.timer/ws.every ordering and :stop(),
a repeating timer surviving an error, ws.get, ws.now (ws.options and ws.version: test_lua_api.py).
Order is checked, never timing."""

import pytest

from harness import Server
from probe import ev, ev1, ev_err
from wsclient import OP_TEXT


@pytest.fixture
def server():
    with Server("probe.lua") as s:
        yield s


def test_timers_fire_in_order_of_their_time(server):
    c = server.connect()
    ev(c, "ws.timer(0.3, function() conn:send('t300') end) "
          "ws.timer(0.1, function() conn:send('t100') end) "
          "ws.timer(0.2, function() conn:send('t200') end) "
          "ws.timer(0, function() conn:send('t0') end) return true")
    assert [c.recv_text() for _ in range(4)] == ["t0", "t100", "t200", "t300"]


def test_timer_fires_once(server):
    c = server.connect()
    ev(c, "ws.timer(0.01, function() conn:send('once') end) "
          "ws.timer(0.3, function() conn:send('later') end) return true")
    assert c.recv_text() == "once"
    assert c.recv_text() == "later"  # no second "once" in between


def test_timer_stop(server):
    c = server.connect()
    ev(c, "local t = ws.timer(0.05, function() conn:send('stopped timer fired') end) "
          "t:stop() t:stop() "  # stopping twice is harmless
          "ws.timer(0.2, function() conn:send('after') end) return true")
    assert c.recv_text() == "after"


def test_every_repeats_until_stopped(server):
    c = server.connect()
    ev(c, "local n, h = 0 "
          "h = ws.every(0.02, function() n = n + 1 conn:send('tick' .. n) "
          "  if n == 3 then h:stop() ws.timer(0.2, function() conn:send('done') end) end end) "
          "return true")
    assert [c.recv_text() for _ in range(4)] == ["tick1", "tick2", "tick3", "done"]


def test_stop_from_outside_the_callback(server):
    c = server.connect()
    ev(c, "S.n = 0 S.h = ws.every(0.02, function() S.n = S.n + 1 "
          "  if S.n == 2 then conn:send('two') end end) return true")
    assert c.recv_text() == "two"
    n_at_stop = int(ev1(c, "S.h:stop() return S.n"))
    ev(c, "ws.timer(0.2, function() conn:send('n=' .. S.n) end) return true")
    assert c.recv_text() == f"n={n_at_stop}"


def test_repeating_timer_survives_errors(server):
    c = server.connect()
    mark = server.mark()
    ev(c, "local n, h = 0 "
          "h = ws.every(0.02, function() n = n + 1 "
          "  if n <= 2 then error('timer failure ' .. n) end "
          "  conn:send('alive ' .. n) h:stop() end) return true")
    assert c.recv_text() == "alive 3"
    i, _ = server.wait_for_line(r"ERROR.*timer failure 1", after=mark)
    server.wait_for_log(r"stack traceback:", after=i)
    server.wait_for_log(r"ERROR.*timer failure 2", after=mark)
    # The connection was not closed by the timer's error.
    assert ev1(c, "return conn:is_open()") == "true"


def test_one_shot_timer_error_logged(server):
    c = server.connect()
    ev(c, "ws.timer(0.01, function() error('one-shot failure') end) "
          "ws.timer(0.1, function() conn:send('next') end) return true")
    assert c.recv_text() == "next"
    server.wait_for_log(r"ERROR.*one-shot failure")


def test_timer_bad_arguments(server):
    c = server.connect()
    ev_err(c, "return ws.timer('soon', function() end)")
    ev_err(c, "return ws.timer(1)")
    ev_err(c, "return ws.every({}, function() end)")
    assert ev1(c, "return conn:is_open()") == "true"


def test_ws_get(server):
    a, b = server.connect(), server.connect()
    bid = ev1(b, "S.b = conn return conn.id")
    assert ev(a, f"return rawequal(ws.get(conn.id), conn), rawequal(ws.get({bid}), S.b), "
                 "ws.get(987654321)") == ["true", "true", "nil"]
    b.close_handshake()
    server.wait_for_log(rf"on_close id={bid} ")
    assert ev1(a, f"return ws.get({bid})") == "nil"


def test_ws_now_monotonic_float(server):
    c = server.connect()
    assert ev(c, "local a = ws.now() local b = ws.now() S.t = b "
                 "return math.type(a), a <= b") == ["float", "true"]
    ev(c, "local t0 = S.t ws.timer(0.05, function() conn:send(tostring(ws.now() > t0)) end) "
          "return true")
    assert c.recv_text() == "true"
