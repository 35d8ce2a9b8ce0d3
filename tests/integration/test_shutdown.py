"""Graceful shutdown with a room (issue 8): on SIGTERM every connection leaves the open state before
any on_close runs, so a handler that tells the others someone left sends nothing (sends return
nil, "closed", "ECLOSED") and each client gets its close frame 1001 and no data frame at all;
on_close sees code 1001 and ws.stopping() true. A client leaving on its own before that is an
ordinary leave: ws.stopping() false, and the others hear about it."""

import signal
import time

import pytest

from harness import Server, connect_id
from wsclient import OP_CLOSE

N = 20
CLOSE_RX = (r"on_close id={id} code=(\d+) stopping=(\w+) published=(\d+) sent=(\d+) "
            r"failures=(.*)$")


def test_shutdown_sends_n_close_frames_not_n_squared_messages():
    s = Server("room.lua", "--static", "none")
    with s:
        leaver, leaver_id = connect_id(s)
        members = [connect_id(s) for _ in range(N)]

        # A client leaving on its own: the others hear it, and it is not the shutdown.
        leaver.close_handshake(1000)
        left = s.wait_for_log(CLOSE_RX.format(id=leaver_id)).groups()
        assert left[0] == "1000" and left[2:] == (str(N), str(N), "")
        for c, _ in members:
            got = sorted(c.recv_text() for _ in range(2))
            assert got == [f"{leaver_id} left", f"{leaver_id} left (direct)"]

        mark = s.mark()
        s.signal(signal.SIGTERM)
        for c, cid in members:
            frames = []
            while True:
                _, op, _ = c.recv_frame()
                frames.append(op)
                if op == OP_CLOSE:
                    break
            data = [op for op in frames if op != OP_CLOSE]
            assert not data, f"client {cid} got {len(data)} data frames before its close"
            assert c.close_received[0] == 1001, c.close_received
            c.close(1001)
            c.expect_eof()  # and nothing after the close frame either

        assert left[1] == "false", "ws.stopping() in on_close of a client leaving on its own"
        closes = {}
        for _, cid in members:
            m = s.wait_for_log(CLOSE_RX.format(id=cid), after=mark)
            closes[cid] = m.groups()
        for cid, (code, stopping, published, sent, failures) in closes.items():
            assert (code, stopping, published, sent) == ("1001", "true", "0", "0"), (cid, closes[cid])
            # every other member still in the table was tried, and refused as closed
            assert all(f == "closed/ECLOSED" for f in failures.split(",") if f), failures
        assert len(s.find_logs(r"on_close id=\d+ ", after=mark)) == N
        assert s.wait_exit() == 0  # (a second SIGTERM would end it at once)
    assert not s.find_logs(r"Lua error")


STUCK_ON_CLOSE = '''
function on_open(conn) ws.log("on_open id=" .. conn.id .. " remote=" .. conn.remote) end
function on_close(conn, code)
  ws.log("on_close id=" .. conn.id .. " code=" .. code)
  if ws.stopping() then while true do end end
end
'''


@pytest.mark.parametrize("limit", ["0", "2"])
def test_on_close_stuck_during_the_shutdown_is_stopped(tmp_path, limit):
    # The shutdown runs on_close for every connection after the signal came: one that never
    # returns is stuck as a handler running when the signal came is (stopped after 100 ms), not
    # left to --handler-timeout, which may be off (the process never exited) or 2 s per
    # connection (the shutdown's 3 s became 2 s times the connections).
    script = tmp_path / "stuck.lua"
    script.write_text(STUCK_ON_CLOSE)
    s = Server(str(script), "--static", "none", "--handler-timeout", limit)
    with s:
        clients = [connect_id(s) for _ in range(5)]
        mark = s.mark()
        start = time.monotonic()
        s.signal(signal.SIGTERM)
        for c, _ in clients:
            assert c.expect_close(skip_data=True)[0] == 1001
            c.close(1001)
            c.expect_eof()
            c.sock.close()  # the server waits for the end of the stream
        assert s.wait_exit() == 0
        took = time.monotonic() - start
        assert took < 2, f"exit {took:.1f}s after SIGTERM"
        # Each on_close was stopped (identical errors are counted after the first).
        s.wait_for_log(r"Lua error in on_close \(conn#\d+ [^)]*\): interrupted: the server is "
                       r"shutting down$", after=mark)
        s.wait_for_log(r"the previous Lua error \(in on_close\) repeated 4 more times", after=mark)


def test_shutdown_stops_every_stuck_handler_not_only_the_first():
    """--handler-timeout 0 and three messages whose handler never returns: SIGTERM stops the
    one running, then the next one runs, and must be stopped as well (it was let run for ever:
    the process never exited)."""
    with Server("spin.lua", "--handler-timeout", "0", "--static", "none") as s:
        clients = [s.connect() for _ in range(3)]
        for i, c in enumerate(clients):
            c.send_text(f"m{i}")
        s.wait_for_log(r"spinning on m\d")
        s.signal(signal.SIGTERM)
        # README: close 1001 to every client, on_close for each, exit within 3 s.
        assert s.wait_exit(timeout=5) == 0
        assert s.find_logs(r"interrupted: the server is shutting down")
