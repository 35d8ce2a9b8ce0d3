"""RFC 6455 framing against the real server: echo at every length form, fragmentation with
control frames interleaved, ping/pong, and the close handshake."""

import os

import pytest

from harness import Server, connect_id
from wsclient import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT

SIZES = [0, 125, 126, 65535, 65536, 1 << 20]


@pytest.fixture(scope="module")
def server():
    with Server("echo.lua") as s:
        yield s


def text_of(n):
    pattern = b"wsluad-text-0123456789 "
    return (pattern * (n // len(pattern) + 1))[:n]


@pytest.mark.parametrize("n", SIZES)
def test_echo_text(server, n):
    c = server.connect()
    data = text_of(n)
    c.send_frame(OP_TEXT, data)
    op, got = c.recv_message()
    assert op == OP_TEXT
    assert len(got) == n
    assert got == data
    assert c.close_handshake(1000) == (1000, "")


@pytest.mark.parametrize("n", SIZES)
def test_echo_binary(server, n):
    c = server.connect()
    data = os.urandom(n)
    c.send_frame(OP_BINARY, data)
    op, got = c.recv_message()
    assert op == OP_BINARY
    assert len(got) == n
    assert got == data
    assert c.close_handshake(1000) == (1000, "")


def test_echo_non_minimal_lengths_accepted(server):
    # A client may use a longer length form than needed; the payload is what counts.
    c = server.connect()
    c.send_frame(OP_TEXT, b"short16", length_bytes=2)
    c.send_frame(OP_BINARY, b"short64", length_bytes=8)
    assert c.recv_message() == (OP_TEXT, b"short16")
    assert c.recv_message() == (OP_BINARY, b"short64")


def test_many_messages_in_one_write(server):
    c = server.connect()
    from wsclient import build_frame
    c.send_raw(b"".join(build_frame(OP_TEXT, f"m{i}") for i in range(100)))
    for i in range(100):
        assert c.recv_message() == (OP_TEXT, f"m{i}".encode())


def test_frame_split_across_writes(server):
    # The parser must cope with a frame arriving one byte at a time.
    from wsclient import build_frame
    c = server.connect()
    frame = build_frame(OP_TEXT, b"x" * 300)
    for i in range(len(frame)):
        c.send_raw(frame[i:i + 1])
    assert c.recv_message() == (OP_TEXT, b"x" * 300)


def test_fragmented_text_with_control_frames_interleaved(server):
    c = server.connect()
    c.send_frame(OP_TEXT, "hé".encode()[:2], fin=False)  # "h" + first byte of "é"
    c.send_frame(OP_PING, b"p1")
    c.send_frame(OP_CONT, "hé".encode()[2:] + b"llo ", fin=False)  # the UTF-8 char spans frames
    c.send_frame(OP_PONG, b"unsolicited")  # an unsolicited pong is ignored
    c.send_frame(OP_CONT, b"", fin=False)
    c.send_frame(OP_PING, b"p2")
    c.send_frame(OP_CONT, b"world", fin=True)
    # The pongs come first: the message is complete only with its last fragment.
    assert c.recv_message() == (OP_PONG, b"p1")
    assert c.recv_message() == (OP_PONG, b"p2")
    assert c.recv_message() == (OP_TEXT, "héllo world".encode())
    assert c.close_handshake(1000) == (1000, "")


def test_fragmented_binary_large(server):
    c = server.connect()
    parts = [os.urandom(70000), os.urandom(10), os.urandom(126), b""]
    c.send_frame(OP_BINARY, parts[0], fin=False)
    for p in parts[1:-1]:
        c.send_frame(OP_CONT, p, fin=False)
    c.send_frame(OP_CONT, parts[-1], fin=True)
    assert c.recv_message() == (OP_BINARY, b"".join(parts))


def test_two_fragmented_messages_back_to_back(server):
    c = server.connect()
    for i in range(2):
        c.send_frame(OP_TEXT, f"a{i}", fin=False)
        c.send_frame(OP_CONT, f"b{i}", fin=True)
    assert c.recv_message() == (OP_TEXT, b"a0b0")
    assert c.recv_message() == (OP_TEXT, b"a1b1")


@pytest.mark.parametrize("payload", [b"", b"ping-payload", bytes(range(125))])
def test_ping_answered_with_same_payload(server, payload):
    c = server.connect()
    c.send_frame(OP_PING, payload)
    fin, op, got = c.recv_frame()
    assert (fin, op, got) == (True, OP_PONG, payload)
    # The connection is still fine afterwards.
    c.send_frame(OP_TEXT, b"after")
    assert c.recv_message() == (OP_TEXT, b"after")


def test_unsolicited_pong_ignored(server):
    c = server.connect()
    c.send_frame(OP_PONG, b"x")
    c.send_frame(OP_TEXT, b"still here")
    assert c.recv_message() == (OP_TEXT, b"still here")


@pytest.mark.parametrize("code,reason", [(1000, ""), (1000, "bye"), (1001, "going"),
                                         (3000, "app"), (4999, "é reason")])
def test_close_handshake_echoes_code(server, code, reason):
    c, cid = connect_id(server)
    c.close(code, reason)
    got_code, _ = c.expect_close()
    assert got_code == code
    c.expect_eof()
    m = server.wait_for_log(rf"on_close id={cid} code=(\d+) reason=\[(.*)\]")
    assert int(m.group(1)) == code
    assert m.group(2) == reason


def test_close_without_code_echoed_empty_and_on_close_1005(server):
    c, cid = connect_id(server)
    c.close(None)
    fin, op, payload = c.recv_frame()
    assert op == OP_CLOSE and payload == b""
    c.expect_eof()
    m = server.wait_for_log(rf"on_close id={cid} code=(\d+)")
    assert m.group(1) == "1005"


def test_tcp_drop_gives_on_close_1006(server):
    c, cid = connect_id(server)
    c.send_frame(OP_TEXT, b"x")
    assert c.recv_message() == (OP_TEXT, b"x")
    c.shutdown()
    m = server.wait_for_log(rf"on_close id={cid} code=(\d+)")
    assert m.group(1) == "1006"


def test_tcp_drop_mid_fragmented_message_gives_1006(server):
    c, cid = connect_id(server)
    c.send_frame(OP_TEXT, b"partial", fin=False)
    c.send_raw(b"\x80\xfe\x10")  # and half of a continuation frame's header
    c.shutdown()
    m = server.wait_for_log(rf"on_close id={cid} code=(\d+)")
    assert m.group(1) == "1006"


def test_on_close_once_per_connection(server):
    # The client sends two close frames and drops; on_close must run exactly once.
    mark = server.mark()
    c, cid = connect_id(server)
    c.close(1000)
    assert c.expect_close() == (1000, "")
    try:
        c.close(1000)
    except OSError:
        pass
    c.shutdown()
    # A later connection's lifecycle is the synchronisation point.
    d, did = connect_id(server)
    d.close_handshake(1000)
    server.wait_for_log(rf"on_close id={did} ", after=mark)
    assert len(server.find_logs(rf"on_close id={cid} ", after=mark)) == 1
