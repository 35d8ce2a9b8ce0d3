"""--metrics: GET /metrics on a listener of its own, in the Prometheus text format that `promtool
check metrics` (Debian's prometheus package) accepts, with values that move as traffic does:
connections, upgrades and refusals, messages and bytes, broadcast and publish frames, close
codes both ways, back-pressure, handler calls, errors, time-outs and run time, topics, Lua
memory, the Redis link, process_*; ws.metric's counters and gauges across a reload, their rules
and caps; and the listener's own bounds (404/405, a stalled scrape is closed, a cap on
connections)."""

import os
import re
import signal
import socket
import subprocess
import time

import pytest

from harness import DEFAULT_TIMEOUT, HOST, SCRIPTS, Server, free_port
from harness import run as run_binary
from wsclient import OP_TEXT, HandshakeError, http_request

VERSION = run_binary("--version").stdout.split()[1]

PROMTOOL = "/usr/bin/promtool"
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


# ---- helpers -------------------------------------------------------------------------------

def metrics_address(server):
    m = server.wait_for_log(r"metrics at http://(\S+):(\d+)/metrics")
    return m.group(1), int(m.group(2))


def get(addr, path="/metrics", method="GET"):
    host, port = addr
    req = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    return http_request(host, port, req)


def parse(text):
    """{(name, ((label, value), ...)): float} of every sample; checks each line's shape."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = tuple(LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def promtool_check(text):
    if not os.path.exists(PROMTOOL):
        pytest.fail(f"{PROMTOOL} is missing: scripts/setup --test installs Debian's prometheus")
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=DEFAULT_TIMEOUT)
    assert p.returncode == 0, f"promtool check metrics:\n{p.stdout.decode()}{p.stderr.decode()}"


def scrape(addr, check=True):
    status, headers, body = get(addr)
    assert status == 200, (status, body)
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode()
    if check:
        promtool_check(text)
    return parse(text)


def val(ms, name, **labels):
    return ms.get((name, tuple(labels.items())), 0.0)


def wait_metric(addr, cond, what, timeout=DEFAULT_TIMEOUT):
    """Scrape until cond(metrics) holds (for what the server does after answering us)."""
    deadline = time.monotonic() + timeout
    while True:
        ms = scrape(addr, check=False)
        if cond(ms):
            return ms
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout}s")
        time.sleep(0.02)  # polling a condition, not waiting for one


def run(c, chunk, before=()):
    """Run a chunk of metrics.lua for c; returns its results. `before`: the messages c gets
    ahead of the reply (what the chunk published to c itself)."""
    c.send_frame(OP_TEXT, chunk)
    for text in before:
        assert c.recv_text() == text
    reply = c.recv_text()
    assert reply.startswith("ok"), reply
    return reply[3:]


@pytest.fixture
def server():
    with Server("metrics.lua", "--metrics", f"{HOST}:0", "--handler-timeout", "1",
                "--max-backpressure", "64K") as s:
        yield s


# ---- the format and the listener -------------------------------------------------------------

def test_promtool_accepts_every_metric(server):
    addr = metrics_address(server)
    c = server.connect()
    run(c, "conn:subscribe('room') return true")
    assert run(c, "return ws.publish('room', 'x')", before=["x"]) == "1"
    ms = scrape(addr)
    names = {n for n, _ in ms}
    for name in ("wsluad_info", "wsluad_connections_accepted_total", "wsluad_open_connections",
                 "wsluad_upgrades_total", "wsluad_messages_received_total",
                 "wsluad_messages_sent_total", "wsluad_received_bytes_total",
                 "wsluad_sent_bytes_total", "wsluad_broadcast_frames_total",
                 "wsluad_publish_frames_total", "wsluad_backpressure_closes_total",
                 "wsluad_handler_calls_total", "wsluad_handler_errors_total",
                 "wsluad_handler_timeouts_total", "wsluad_handler_duration_seconds_bucket",
                 "wsluad_handler_duration_seconds_sum", "wsluad_handler_duration_seconds_count",
                 "wsluad_topics", "wsluad_subscriptions", "wsluad_lua_memory_bytes",
                 "process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                 "process_start_time_seconds", "test_chunks_total", "test_online"):
        assert name in names, name
    assert not any(n.startswith("wsluad_redis_") for n in names)  # no --redis, no link
    assert val(ms, "wsluad_info", version=VERSION) == 1
    assert all(n.startswith(("wsluad_", "process_", "test_")) for n in names)
    # Sane process figures, read from /proc at scrape time.
    assert val(ms, "process_resident_memory_bytes") > 1 << 20
    assert val(ms, "process_virtual_memory_bytes") >= val(ms, "process_resident_memory_bytes")
    assert 5 <= val(ms, "process_open_fds") <= val(ms, "process_max_fds")
    assert 0 <= time.time() - val(ms, "process_start_time_seconds") < 600
    assert val(ms, "process_cpu_seconds_total") >= 0
    assert val(ms, "wsluad_lua_memory_bytes") > 10000
    assert val(ms, "wsluad_max_connections") > 0


def test_only_get_metrics_is_served(server):
    addr = metrics_address(server)
    status, headers, body = get(addr, "/")
    assert status == 404
    status, headers, body = get(addr, "/metrics/x")
    assert status == 404
    status, headers, body = get(addr, "/metrics", method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, headers, body = get(addr, "/metrics", method="DELETE")
    assert status == 405
    # HEAD: the GET answer's head (its Content-Length) and no body, then EOF.
    with socket.create_connection(addr, timeout=DEFAULT_TIMEOUT) as sock:
        sock.sendall(f"HEAD /metrics HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and rest == b""
    length = int(re.search(rb"\r\nContent-Length: (\d+)", head).group(1))
    assert abs(length - len(get(addr)[2])) < 200  # the GET's, give or take what moved between
    status, headers, body = get(addr, "/metrics?name[]=x")  # a query is fine
    assert status == 200 and b"wsluad_info" in body
    status, _, _ = http_request(*addr, b"GARBAGE\r\n\r\n")
    assert status == 400
    # The public port knows nothing of it: /metrics is a (missing) static file there.
    status, _, body = server.get("/metrics")
    assert status == 404 and b"wsluad_" not in body
    assert addr[1] != server.port


def test_a_stalled_scrape_is_closed_and_connections_are_capped(server):
    addr = metrics_address(server)
    start = time.monotonic()
    stalled = [socket.create_connection(addr, timeout=DEFAULT_TIMEOUT) for _ in range(20)]
    stalled[-1].sendall(b"GET /metr")  # half a request
    # At most 16 at once: the four oldest were closed to make room.
    for s in stalled[:4]:
        assert s.recv(100) == b""
    # A scrape still gets through (closing the oldest of the rest).
    assert val(scrape(addr), "wsluad_info", version=VERSION) == 1
    assert stalled[4].recv(100) == b""
    # The others are closed by the time-out (5 s after each was accepted), having got nothing.
    for s in stalled[5:]:
        s.settimeout(10)
        assert s.recv(100) == b""
    assert 4.5 <= time.monotonic() - start < 9
    for s in stalled:
        s.close()
    assert val(scrape(addr), "wsluad_info", version=VERSION) == 1


# ---- values that move as traffic does ---------------------------------------------------------

def test_connections_messages_bytes_topics(server):
    addr = metrics_address(server)
    m0 = scrape(addr)
    a, b = server.connect(), server.connect()
    m1 = wait_metric(addr, lambda m: val(m, "test_online") == 2, "two open in the script")
    assert val(m1, "wsluad_open_connections") == 2
    assert val(m1, "wsluad_connections_accepted_total") - \
        val(m0, "wsluad_connections_accepted_total") == 2
    assert val(m1, "wsluad_upgrades_total") - val(m0, "wsluad_upgrades_total") == 2
    for name in ("on_upgrade", "on_open"):
        assert val(m1, "wsluad_handler_calls_total", handler=name) - \
            val(m0, "wsluad_handler_calls_total", handler=name) == 2
    chunk = "return 40 + 2"
    for _ in range(3):
        assert run(a, chunk) == "42"
    m2 = scrape(addr)
    assert val(m2, "wsluad_messages_received_total") - \
        val(m1, "wsluad_messages_received_total") == 3
    assert val(m2, "wsluad_messages_sent_total") - val(m1, "wsluad_messages_sent_total") == 3
    # Frames in: 2 header bytes and a 4-byte mask; out: 2 header bytes, "ok 42".
    assert val(m2, "wsluad_received_bytes_total") - val(m1, "wsluad_received_bytes_total") == \
        3 * (6 + len(chunk))
    assert val(m2, "wsluad_sent_bytes_total") - val(m1, "wsluad_sent_bytes_total") == 3 * (2 + 5)
    assert val(m2, "wsluad_handler_calls_total", handler="on_message") - \
        val(m1, "wsluad_handler_calls_total", handler="on_message") == 3
    assert val(m2, "wsluad_handler_duration_seconds_count", handler="on_message") - \
        val(m1, "wsluad_handler_duration_seconds_count", handler="on_message") == 3
    assert val(m2, "wsluad_handler_duration_seconds_bucket", handler="on_message", le="+Inf") == \
        val(m2, "wsluad_handler_duration_seconds_count", handler="on_message")
    assert val(m2, "wsluad_handler_duration_seconds_sum", handler="on_message") > \
        val(m1, "wsluad_handler_duration_seconds_sum", handler="on_message")
    assert val(m2, "test_chunks_total", word="return") - val(m1, "test_chunks_total",
                                                             word="return") == 3

    run(a, "conn:subscribe('room') conn:subscribe('other') return true")
    run(b, "conn:subscribe('room') return true")
    m3 = scrape(addr)
    assert val(m3, "wsluad_topics") == 2 and val(m3, "wsluad_subscriptions") == 3
    assert run(a, "return ws.publish('room', 'to the room')", before=["to the room"]) == "2"
    assert b.recv_text() == "to the room"
    assert run(b, "return ws.broadcast('to all', 'text', conn)") == "1"
    assert a.recv_text() == "to all"
    m4 = scrape(addr)
    assert val(m4, "wsluad_publish_frames_total") - val(m3, "wsluad_publish_frames_total") == 2
    assert val(m4, "wsluad_broadcast_frames_total") - \
        val(m3, "wsluad_broadcast_frames_total") == 1
    a.close_handshake()
    m5 = wait_metric(addr, lambda m: val(m, "wsluad_open_connections") == 1, "one left")
    assert val(m5, "wsluad_topics") == 1 and val(m5, "wsluad_subscriptions") == 1
    assert val(m5, "test_online") == 1


def test_close_codes_both_ways(server):
    addr = metrics_address(server)
    m0 = scrape(addr)
    a, b, c = server.connect(), server.connect(), server.connect()
    assert a.close_handshake(4001, "bye") == (4001, "")  # the server echoes the code
    b.send_frame(OP_TEXT, "conn:close(4002, 'go') return true")
    assert b.expect_close() == (4002, "go")
    b.close(4002)
    c.close(None)  # an empty close frame: 1005
    assert c.expect_close() == (1005, "")
    m1 = wait_metric(addr, lambda m: val(m, "wsluad_close_frames_received_total", code="4002") -
                     val(m0, "wsluad_close_frames_received_total", code="4002") == 1,
                     "the reply to our close")
    for code, sent, received in (("4001", 1, 1), ("4002", 1, 1), ("1005", 1, 1)):
        assert val(m1, "wsluad_close_frames_sent_total", code=code) - \
            val(m0, "wsluad_close_frames_sent_total", code=code) == sent, code
        assert val(m1, "wsluad_close_frames_received_total", code=code) - \
            val(m0, "wsluad_close_frames_received_total", code=code) == received, code
    assert val(m1, "wsluad_handler_calls_total", handler="on_close") - \
        val(m0, "wsluad_handler_calls_total", handler="on_close") == 3


def test_refused_upgrades_by_status(server):
    addr = metrics_address(server)
    m0 = scrape(addr)
    with pytest.raises(HandshakeError) as e:
        server.connect("/refuse")
    assert e.value.status == 403
    with pytest.raises(HandshakeError) as e:
        server.connect("/", headers={"Sec-WebSocket-Version": "8"})
    assert e.value.status == 426
    status, _, _ = server.get("/index.html")  # a plain GET is no refused upgrade
    m1 = scrape(addr)
    assert val(m1, "wsluad_upgrades_refused_total", status="403") - \
        val(m0, "wsluad_upgrades_refused_total", status="403") == 1
    assert val(m1, "wsluad_upgrades_refused_total", status="426") - \
        val(m0, "wsluad_upgrades_refused_total", status="426") == 1
    assert sum(v for (n, _), v in m1.items() if n == "wsluad_upgrades_refused_total") - \
        sum(v for (n, _), v in m0.items() if n == "wsluad_upgrades_refused_total") == 2
    assert val(m1, "wsluad_upgrades_total") == val(m0, "wsluad_upgrades_total")


def test_handler_errors_timeouts_and_timers(server):
    addr = metrics_address(server)
    m0 = scrape(addr)
    a, b, c = server.connect(), server.connect(), server.connect()
    a.send_frame(OP_TEXT, "error('boom')")
    assert a.expect_close() == (1011, "internal error")
    b.send_frame(OP_TEXT, "while true do end")
    assert b.expect_close() == (1011, "internal error")
    run(c, "ws.timer(0, function() end) ws.timer(0, function() error('in a timer') end) "
           "ws.timer(0, function() ws.spawn(function() ws.sleep(0) error('spawned') end) end) "
           "return true")
    m1 = wait_metric(addr, lambda m: val(m, "wsluad_handler_calls_total", handler="timer") -
                     val(m0, "wsluad_handler_calls_total", handler="timer") == 3 and
                     val(m, "wsluad_handler_errors_total", handler="spawn") -
                     val(m0, "wsluad_handler_errors_total", handler="spawn") == 1,
                     "three timers and the spawned function's error")

    def delta(name, handler):
        return val(m1, name, handler=handler) - val(m0, name, handler=handler)

    assert delta("wsluad_handler_calls_total", "on_message") == 3
    assert delta("wsluad_handler_errors_total", "on_message") == 2
    assert delta("wsluad_handler_timeouts_total", "on_message") == 1
    assert delta("wsluad_handler_errors_total", "timer") == 1
    assert delta("wsluad_handler_timeouts_total", "timer") == 0
    # The function the third timer spawned ran twice: up to its ws.sleep, then to its error
    # (spawned by a timer, it belongs to no connection: none is closed for it).
    assert delta("wsluad_handler_calls_total", "spawn") == 2
    assert delta("wsluad_handler_timeouts_total", "spawn") == 0
    # The stopped call ran for about the time limit (1 s): it shows in the histogram.
    assert delta("wsluad_handler_duration_seconds_sum", "on_message") >= 0.25
    slow = val(m1, "wsluad_handler_duration_seconds_count", handler="on_message") - \
        val(m1, "wsluad_handler_duration_seconds_bucket", handler="on_message", le="0.25")
    assert slow >= 1
    assert val(m1, "wsluad_close_frames_sent_total", code="1011") - \
        val(m0, "wsluad_close_frames_sent_total", code="1011") == 2
    # No handler defined, no call counted.
    assert delta("wsluad_handler_calls_total", "on_drain") == 0
    assert delta("wsluad_handler_calls_total", "on_error") == 0


def test_backpressure_close(server):
    addr = metrics_address(server)
    m0 = scrape(addr)
    c = server.connect(rcvbuf=4096)
    c.send_frame(OP_TEXT, "conn:send(string.rep('x', 4 << 20))")  # 64 times the limit
    m1 = wait_metric(addr, lambda m: val(m, "wsluad_backpressure_closes_total") -
                     val(m0, "wsluad_backpressure_closes_total") == 1, "a slow-consumer close")
    assert val(m1, "wsluad_close_frames_sent_total", code="1008") - \
        val(m0, "wsluad_close_frames_sent_total", code="1008") == 1


# ---- ws.metric ---------------------------------------------------------------------------------

SCRIPT_V1 = r'''
visits = ws.metric.counter("app_visits_total", "Visits, by room.", {"room"})
level = ws.metric.gauge("app_level", "A level.")
ws.log("v1 loaded")
function on_message(conn, data)
  conn:send(tostring(visits:inc(data)))
end
'''

SCRIPT_V2 = r'''
local again = ws.metric.counter("app_visits_total", "Visits to a room, by room.", {"room"})
same = again == visits   -- the object the first load made
visits = again
level = ws.metric.gauge("app_level", "A level.")
level:set(7.5)
level:dec(0.5)
ws.log("v2 loaded same=" .. tostring(same))
function on_message(conn, data)
  visits:inc(2, data)
  conn:send("v2")
end
'''

SCRIPT_V3 = r'''
ws.metric.counter("app_visits_total", "Visits, by room and kind.", {"room", "kind"})
function on_message(conn, data) conn:send("v3") end
'''


def test_script_metrics_survive_a_reload(tmp_path):
    path = tmp_path / "app.lua"
    path.write_text(SCRIPT_V1)
    with Server(str(path), "--metrics", f"{HOST}:0") as s:
        addr = metrics_address(s)
        c = s.connect()
        for room in ("lobby", "lobby", "a \"quoted\\ room\n"):
            c.send_frame(OP_TEXT, room)
            assert c.recv_text() == "true"
        m1 = scrape(addr)
        assert val(m1, "app_visits_total", room="lobby") == 2
        assert val(m1, "app_visits_total", room='a \\"quoted\\\\ room\\n') == 1
        assert val(m1, "app_level") == 0

        path.write_text(SCRIPT_V2)
        mark = s.mark()
        s.signal(signal.SIGHUP)
        s.wait_for_log(r"v2 loaded same=true", after=mark)
        c.send_frame(OP_TEXT, "lobby")
        assert c.recv_text() == "v2"
        status, _, body = get(addr)
        promtool_check(body.decode())
        assert "# HELP app_visits_total Visits to a room, by room.\n" in body.decode()
        m2 = parse(body.decode())
        assert val(m2, "app_visits_total", room="lobby") == 4
        assert val(m2, "app_level") == 7

        # Other labels under the same name: the reload fails, the running code stays.
        path.write_text(SCRIPT_V3)
        mark = s.mark()
        s.signal(signal.SIGHUP)
        s.wait_for_log(r"app_visits_total.*other label names", after=mark)
        s.wait_for_log(r"reload of .* failed", after=mark)
        c.send_frame(OP_TEXT, "lobby")
        assert c.recv_text() == "v2"
        assert val(scrape(addr), "app_visits_total", room="lobby") == 6


def test_script_metric_rules(tmp_path):
    path = tmp_path / "rules.lua"
    path.write_text(r'''
local function try(f, ...) local ok, err = pcall(f, ...) return ok and "ok" or err end
function on_message(conn, data) conn:send(tostring(load(data)())) end
''')
    with Server(str(path)) as s:  # ws.metric works without --metrics too
        c = s.connect()

        def ev(code):
            c.send_frame(OP_TEXT, code)
            return c.recv_text()

        def err(code):
            out = ev(f"local ok, e = pcall(function() {code} end) return ok and 'no error' or e")
            assert out != "no error", code
            return out

        assert "server's own" in err("ws.metric.counter('wsluad_x_total', 'h')")
        assert "server's own" in err("ws.metric.gauge('process_x', 'h')")
        assert "_total" in err("ws.metric.counter('x', 'h')")
        assert "_total" in err("ws.metric.gauge('x_total', 'h')")
        assert "metric name" in err("ws.metric.gauge('a:b', 'h')")
        assert "metric name" in err("ws.metric.gauge('9x', 'h')")
        assert "help" in err("ws.metric.gauge('x', '')")
        assert "reserved" in err("ws.metric.counter('x_total', 'h', {'le'})")
        assert "at most 8" in err("ws.metric.counter('x_total', 'h', "
                                  "{'a','b','c','d','e','f','g','h','i'})")
        assert "label names are strings" in err("ws.metric.counter('x_total', 'h', {1})")
        assert ev("return ws.metric.counter('x_total', 'h', {'k'}):inc('v')") == "true"
        assert "other label names" in err("ws.metric.counter('x_total', 'h', {'j'})")
        # A counter's name ends in _total and a gauge's does not: no name has two types.
        assert "_total" in err("ws.metric.gauge('x_total', 'h', {'k'})")
        assert "expected [n] and 1 label value" in err("ws.metric.counter('x_total', 'h', "
                                                       "{'k'}):inc()")
        assert "only goes up" in err("ws.metric.counter('x_total', 'h', {'k'}):inc(-1, 'v')")
        for n in ["math.huge", "0/0"]:
            assert "by a finite amount" in err(f"ws.metric.counter('x_total', 'h', {{'k'}})"
                                               f":inc({n}, 'v')")
        assert "attempt to call" in err("ws.metric.counter('x_total', 'h', {'k'}):set(1, 'v')")
        assert "longer than 128" in err("ws.metric.counter('x_total', 'h', {'k'})"
                                        ":inc(string.rep('x', 129))")
        assert "not UTF-8" in err("ws.metric.counter('x_total', 'h', {'k'}):inc('\\255')")
        assert "string or number" in err("ws.metric.counter('x_total', 'h', {'k'}):inc({})")
        assert "expected a value" in err("ws.metric.gauge('g', 'h'):set()")
        # inc called with a dot named the gauge alone as what it wanted, also for a counter.
        assert "wsluad.counter or wsluad.gauge expected, got nil" in \
            err("ws.metric.counter('x_total', 'h', {'k'}).inc(nil, 'v')")
        assert ev("return ws.metric.gauge('g', 'h'):set(1.5)") == "true"
        assert ev("return ws.metric.gauge('g', 'h') == ws.metric.gauge('g', 'other help')") \
            == "true"


def test_script_metrics_are_capped(tmp_path):
    path = tmp_path / "cap.lua"
    path.write_text(r'''
n = ws.metric.counter("ids_total", "One series per id (a bad idea, kept bounded).", {"id"})
function on_message(conn, data)
  local made, first_fail, err, code = 0
  for i = 1, 10050 do
    local ok, e, c = n:inc(i)
    if ok then made = made + 1 elseif not first_fail then first_fail, err, code = i, e, c end
  end
  conn:send(string.format("%d %s %s %s %s", made, first_fail, err, code, tostring(n:inc(5))))
end
''')
    with Server(str(path), "--metrics", f"{HOST}:0") as s:
        addr = metrics_address(s)
        c = s.connect()
        c.send_frame(OP_TEXT, "go")
        assert c.recv_text() == "10000 10001 too many label combinations ENOSPC true"
        s.wait_for_log(r"ws\.metric: .*as many label combinations.*dropped")
        ms = scrape(addr)
        assert len([k for k in ms if k[0] == "ids_total"]) == 10000
        assert val(ms, "ids_total", id="5") == 2
        assert val(ms, "wsluad_script_metric_updates_dropped_total") == 50


# ---- the Redis link and --workers --------------------------------------------------------------

def test_redis_link_metrics(redis_server):
    with Server("metrics.lua", "--metrics", f"{HOST}:0", "--redis", redis_server.url) as s:
        addr = metrics_address(s)
        m0 = wait_metric(addr, lambda m: val(m, "wsluad_redis_up") == 1, "the link up")
        c = s.connect()
        run(c, "conn:subscribe('news') return true")
        assert run(c, "return ws.publish('news', 'mine')", before=["mine"]) == "1"
        # A backend's message arrives through Redis once the node has subscribed to the topic.
        deadline = time.monotonic() + DEFAULT_TIMEOUT
        while redis_server.command("PUBLISH", "wsluad:topic:news", "from redis") == 0:
            assert time.monotonic() < deadline, "the node never subscribed to news"
            time.sleep(0.02)  # polling a condition, not waiting for one
        assert c.recv_text() == "from redis"
        m1 = wait_metric(addr, lambda m: val(m, "wsluad_redis_received_total") -
                         val(m0, "wsluad_redis_received_total") == 1, "one message received")
        assert val(m1, "wsluad_redis_published_total") - \
            val(m0, "wsluad_redis_published_total") == 1
        assert val(m1, "wsluad_redis_dropped_total", reason="down") == 0
        promtool_check(get(addr)[2].decode())

        redis_server.stop()
        m2 = wait_metric(addr, lambda m: val(m, "wsluad_redis_up") == 0, "the link down")
        assert run(c, "return ws.publish('news', 'while down')", before=["while down"]) == "1"
        m3 = scrape(addr)
        assert val(m3, "wsluad_redis_dropped_total", reason="down") - \
            val(m2, "wsluad_redis_dropped_total", reason="down") == 1


def two_free_ports():
    for _ in range(50):
        p = free_port()
        with socket.socket() as a:
            try:
                a.bind((HOST, p + 1))
            except OSError:
                continue
        return p
    raise RuntimeError("no two free ports in a row")


def test_each_worker_serves_its_own_metrics(redis_server):
    port = two_free_ports()
    with Server("metrics.lua", "--workers", "2", "--redis", redis_server.url, "--metrics",
                f"{HOST}:{port}") as s:
        found = {int(m.group(1)): int(m.group(2)) for m in
                 s.wait_for_logs(r"\[w(\d)\] .*metrics at http://127\.0\.0\.1:(\d+)/metrics", 2)}
        assert found == {1: port, 2: port + 1}
        for p in (port, port + 1):
            ms = scrape((HOST, p))
            assert val(ms, "wsluad_info", version=VERSION) == 1
            assert val(ms, "wsluad_redis_dropped_total", reason="full") == 0


def test_bad_metrics_address():
    r = run_binary("--metrics", "nowhere", "--check", "metrics.lua")
    assert r.returncode == 2 and "--metrics" in r.stderr
    busy = socket.socket()
    busy.bind((HOST, 0))
    busy.listen()
    try:
        s = subprocess.run([os.environ["WSLUAD_BIN"], "-l", f"{HOST}:0", "--metrics",
                            f"{HOST}:{busy.getsockname()[1]}",
                            os.path.join(SCRIPTS, "metrics.lua")],
                           capture_output=True, text=True, timeout=DEFAULT_TIMEOUT)
        assert s.returncode == 3, s.stderr
        assert "cannot serve metrics" in s.stderr
    finally:
        busy.close()


def test_on_request_calls_are_counted(tmp_path):
    path = tmp_path / "req.lua"
    path.write_text('function on_request(req) if req.path == "/boom" then error("boom") end '
                    'return 200, "ok" end\n')
    with Server(str(path), "--metrics", f"{HOST}:0", "--static", "none") as s:
        addr = metrics_address(s)
        m0 = scrape(addr)
        for p in ("/a", "/b", "/boom"):
            s.http(f"GET {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        m1 = scrape(addr)
        calls = "wsluad_handler_calls_total"
        errors = "wsluad_handler_errors_total"
        assert val(m1, calls, handler="on_request") - val(m0, calls, handler="on_request") == 3
        assert val(m1, errors, handler="on_request") - val(m0, errors, handler="on_request") == 1
