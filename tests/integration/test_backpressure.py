"""Back-pressure (scripts/backpressure.lua): a client that stops reading is closed with 1008 at
--max-backpressure while the others receive every message; conn:buffered(); on_drain."""

from backpressure_util import CHUNK, fill_past_half_then_drain, hello
from harness import Server
from wsclient import OP_TEXT


def read_burst(c, expect_from, n):
    """n broadcast messages numbered expect_from.. in order; returns the next number."""
    for i in range(expect_from, expect_from + n):
        op, data = c.recv_message()
        assert op == OP_TEXT
        assert data[:10] == b"%010d" % i, f"expected message {i}, got {data[:10]!r}"
        assert len(data) == 10 + CHUNK
    return expect_from + n


def test_slow_consumer_closed_1008_others_get_everything():
    with Server("backpressure.lua", "--max-backpressure", "256K") as s:
        slow = s.connect(rcvbuf=4096)
        sid = hello(slow)
        sport = slow.sock.getsockname()[1]
        fast = [s.connect(), s.connect()]
        for f in fast:
            hello(f)
        producer = fast[0]
        nxt = 1
        bursts_after = None
        # Bursts of 8 x 16 KiB: a fast client that reads everything between bursts never has
        # more than 128 KiB queued, while the slow one accumulates until the limit.
        for _ in range(2000):  # a failure guard: the limit is reached after a few dozen bursts
            producer.send_frame(OP_TEXT, b"burst 8")
            for f in fast:
                read_burst(f, nxt, 8)
            nxt += 8
            done = producer.recv_text().split()
            assert done[:3] == ["burst", "done", str(nxt - 1)]
            if bursts_after is None and s.find_logs(r"slow consumer"):
                bursts_after = 3
            if bursts_after is not None:
                if bursts_after == 0:
                    # The slow one is gone: only the two fast clients are counted.
                    assert done[3] == "2"
                    break
                bursts_after -= 1
        else:
            raise AssertionError("the slow consumer was never closed")
        line = s.wait_for_log(r"slow consumer").string
        assert str(sid) in line or f"127.0.0.1:{sport}" in line, line
        s.wait_for_log(rf"on_close id={sid} code=1008")
        # What the slow client finds when it finally reads: data, then the 1008 close frame,
        # unless the server already gave up waiting and dropped TCP.
        try:
            code, _ = slow.expect_close(skip_data=True)
            assert code == 1008
        except (EOFError, ConnectionResetError):
            pass
        # The fast clients were never closed.
        assert not s.find_logs(r"on_close id=(?!%d\b)" % sid)


def test_buffered_and_on_drain():
    limit = 1 << 20
    with Server("backpressure.lua", "--max-backpressure", "1M") as s:
        d = s.connect(rcvbuf=4096)
        did = hello(d)
        fill_past_half_then_drain(s, d, did, limit)
        d.send_frame(OP_TEXT, b"buffered")
        assert d.recv_text() == "buffered 0"
        assert not s.find_logs(rf"on_close id={did}")


def test_no_on_drain_for_small_queues():
    with Server("backpressure.lua", "--max-backpressure", "1M") as s:
        c = s.connect()
        hello(c)
        for _ in range(20):
            c.send_frame(OP_TEXT, b"buffered")
            assert c.recv_text() == "buffered 0"
        c.send_frame(OP_TEXT, b"burst 4")
        read_burst(c, 1, 4)
        assert c.recv_text().startswith("burst done 4")
        assert not s.find_logs(r"on_drain")
