"""What the back-pressure tests share, over ws:// (test_backpressure.py) and wss:// (test_tls.py):
both drive scripts/backpressure.lua."""
import re

from wsclient import OP_BINARY, OP_TEXT

CHUNK = 16 * 1024  # the size of backpressure.lua's binary frames


def hello(c):
    """The id backpressure.lua greets a client with."""
    m = re.fullmatch(r"id (\d+)", c.recv_text())
    assert m
    return int(m.group(1))


def fill_past_half_then_drain(s, d, did, limit):
    """With d not reading, have the server queue more than half of limit (but less than it)
    until what is still queued after the socket took its share is past half the limit; no
    slow-consumer close. Then read everything: the queue empties, on_drain runs (it sends
    "drained") and sees conn:buffered() at 0."""
    d.send_frame(OP_TEXT, b"buffered")
    assert d.recv_text() == "buffered 0"
    target = limit * 6 // 10
    mark = s.mark()
    for _ in range(200):
        d.send_frame(OP_TEXT, b"fill %d" % target)
        i, m = s.wait_for_line(rf"fill id={did} start=(\d+)", after=mark)
        mark = i + 1
        if int(m.group(1)) > limit // 2:
            break
    else:
        raise AssertionError("conn:buffered() never went past half the limit")
    assert not s.find_logs(r"slow consumer")
    while True:
        op, data = d.recv_message()
        if op == OP_TEXT:
            assert data == b"drained"
            break
        assert op == OP_BINARY and len(data) == CHUNK
    assert s.wait_for_log(rf"on_drain id={did} buffered=(\d+)").group(1) == "0"
