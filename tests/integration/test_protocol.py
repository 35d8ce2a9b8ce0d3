"""Protocol violations and limits: 1002 for framing errors, 1007 for invalid UTF-8, 1009 for a
message over --max-message. Each case checks the close code the client gets, that the TCP
connection then ends, and the code the script's on_close sees."""

import pytest

from harness import Server, connect_id
from wsclient import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, build_frame


@pytest.fixture(scope="module")
def server():
    with Server("echo.lua") as s:
        yield s


@pytest.fixture(scope="module")
def small():
    with Server("echo.lua", "--max-message", "1000") as s:
        yield s


def expect_server_close(server, c, cid, code):
    """The server closes with `code`: we get its close frame, answer it, the TCP connection
    ends, and on_close saw the same code. The server keeps serving others."""
    got, _ = c.expect_close()
    assert got == code
    try:
        c.close(got)
    except OSError:
        pass  # the server may already have closed TCP after sending its frame
    c.expect_eof()
    m = server.wait_for_log(rf"on_close id={cid} code=(\d+)")
    assert int(m.group(1)) == code
    d = server.connect()
    d.send_frame(OP_TEXT, b"others unaffected")
    assert d.recv_message() == (OP_TEXT, b"others unaffected")
    d.close_handshake()


VIOLATIONS_1002 = {
    "unmasked_text": build_frame(OP_TEXT, b"hello", mask=False),
    "unmasked_ping": build_frame(OP_PING, b"", mask=False),
    "rsv1": build_frame(OP_TEXT, b"hello", rsv=4),
    "rsv2": build_frame(OP_TEXT, b"hello", rsv=2),
    "rsv3": build_frame(OP_BINARY, b"hello", rsv=1),
    "rsv_on_ping": build_frame(OP_PING, b"", rsv=4),
    "opcode_3": build_frame(0x3, b"x"),
    "opcode_7": build_frame(0x7, b""),
    "opcode_b": build_frame(0xB, b""),
    "opcode_f": build_frame(0xF, b"x"),
    "fragmented_ping": build_frame(OP_PING, b"x", fin=False),
    "ping_126_bytes": build_frame(OP_PING, b"x" * 126),
    "close_126_bytes": build_frame(OP_CLOSE, b"\x03\xe8" + b"x" * 124),
    "continuation_without_start": build_frame(OP_CONT, b"x"),
    "text_inside_fragmented": build_frame(OP_TEXT, b"a", fin=False) + build_frame(OP_TEXT, b"b"),
    "binary_inside_fragmented": build_frame(OP_BINARY, b"a", fin=False)
    + build_frame(OP_BINARY, b"b"),
    "close_1_byte": build_frame(OP_CLOSE, b"\x03"),
    "close_code_999": build_frame(OP_CLOSE, b"\x03\xe7"),
    "close_code_1005": build_frame(OP_CLOSE, b"\x03\xed"),
    "close_code_1006": build_frame(OP_CLOSE, b"\x03\xee"),
    "close_code_1015": build_frame(OP_CLOSE, b"\x03\xf7"),
    "close_code_2000": build_frame(OP_CLOSE, b"\x07\xd0"),
    "close_code_5000": build_frame(OP_CLOSE, b"\x13\x88"),
}


@pytest.mark.parametrize("name", sorted(VIOLATIONS_1002))
def test_protocol_error_closes_1002(server, name):
    c, cid = connect_id(server)
    c.send_raw(VIOLATIONS_1002[name])
    expect_server_close(server, c, cid, 1002)


def test_nothing_echoed_before_1002(server):
    # A valid message followed by a violation: the message is echoed, then 1002.
    c, cid = connect_id(server)
    c.send_raw(build_frame(OP_TEXT, b"fine") + build_frame(OP_TEXT, b"bad", mask=False))
    assert c.recv_message() == (OP_TEXT, b"fine")
    expect_server_close(server, c, cid, 1002)


INVALID_UTF8 = {
    "lone_ff": [b"\xff"],
    "truncated_at_end": [b"abc\xc3"],
    "overlong": [b"\xc0\xaf"],
    "surrogate": [b"\xed\xa0\x80"],
    "above_10ffff": [b"\xf4\x90\x80\x80"],
    "bad_in_second_fragment": [b"hello ", b"w\xffrld"],
    "truncated_across_fragments": [b"ok \xe2\x82", b""],
}


@pytest.mark.parametrize("name", sorted(INVALID_UTF8))
def test_invalid_utf8_text_closes_1007(server, name):
    c, cid = connect_id(server)
    parts = INVALID_UTF8[name]
    for i, p in enumerate(parts):
        op = OP_TEXT if i == 0 else OP_CONT
        c.send_frame(op, p, fin=(i == len(parts) - 1))
    expect_server_close(server, c, cid, 1007)


def test_invalid_utf8_close_reason_closes_1007(server):
    c, cid = connect_id(server)
    c.send_frame(OP_CLOSE, b"\x03\xe8\xff\xfe")
    expect_server_close(server, c, cid, 1007)


def test_invalid_utf8_as_binary_is_fine(server):
    c = server.connect()
    c.send_frame(OP_BINARY, b"\xff\xfe\xc0")
    assert c.recv_message() == (OP_BINARY, b"\xff\xfe\xc0")


def test_message_at_max_message_is_accepted(small):
    c = small.connect()
    c.send_frame(OP_TEXT, b"x" * 1000)
    assert c.recv_message() == (OP_TEXT, b"x" * 1000)
    c.send_frame(OP_BINARY, b"a" * 400, fin=False)
    c.send_frame(OP_CONT, b"b" * 600, fin=True)
    assert c.recv_message() == (OP_BINARY, b"a" * 400 + b"b" * 600)


def test_message_over_max_message_closes_1009(small):
    c, cid = connect_id(small)
    c.send_frame(OP_TEXT, b"x" * 1001)
    expect_server_close(small, c, cid, 1009)


def test_fragmented_message_over_max_message_closes_1009(small):
    c, cid = connect_id(small)
    c.send_frame(OP_BINARY, b"a" * 600, fin=False)
    c.send_frame(OP_CONT, b"b" * 600, fin=True)
    expect_server_close(small, c, cid, 1009)


def test_1009_as_soon_as_the_header_announces_it(small):
    # Only the header of a huge frame is sent: the server must not wait for the payload.
    c, cid = connect_id(small)
    c.send_raw(build_frame(OP_BINARY, b"", length=1 << 40)[:14])
    expect_server_close(small, c, cid, 1009)


def test_default_max_message_is_1mib(server):
    c, cid = connect_id(server)
    c.send_frame(OP_BINARY, b"\0" * (1 << 20))
    op, data = c.recv_message()
    assert op == OP_BINARY and len(data) == 1 << 20
    c.send_raw(build_frame(OP_BINARY, b"", length=(1 << 20) + 1)[:14])
    expect_server_close(server, c, cid, 1009)


def test_max_message_suffix_k():
    with Server("echo.lua", "--max-message", "2K") as s:
        c = s.connect()
        c.send_frame(OP_TEXT, b"y" * 2048)
        assert c.recv_message() == (OP_TEXT, b"y" * 2048)
        c.send_frame(OP_TEXT, b"y" * 2049)
        assert c.expect_close()[0] == 1009
