"""Autobahn|Testsuite fuzzingclient cases 1.x-7.x and 10.x against `wsluad examples/echo.lua`.

Same case numbering and expectations as Autobahn (our own code; 9.x lives in
test_autobahn_limits.py). Where Autobahn accepts a "NON-STRICT" outcome we demand the strict one:
the exact close code, the failure at the first bad frame, the echo of the good message before it.
Each case runs on a fresh connection; after each, a fresh connection must still get an echo.

Extra: case_6_X_Y_bytewise sends each 6.5+ sequence one byte per frame; an invalid one must be
failed at the frame holding its first impossible byte, before the rest is sent.

Every case runs twice: over ws://, and over wss:// (a certificate made by openssl, verified by
the client), where every close must also end TLS with close_notify.
"""

import struct

import pytest

import confutil as cu
import tlsutil
import utf8cases
from confutil import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT

PROTOCOL_ERROR, INVALID_PAYLOAD = 1002, 1007


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    cert, key = tlsutil.self_signed(str(tmp_path_factory.mktemp("tls")))
    with cu.server(cu.echo_script(), "--static", "none", "--tls-listen", "127.0.0.1:0",
                   "--tls-cert", cert, "--tls-key", key) as s:
        s.tls_context = tlsutil.ssl.create_default_context(cafile=cert)
        yield s


CASES = []


def case(cid, fn, *args, **kw):
    CASES.append(pytest.param(lambda c: fn(c, *args, **kw), id="case_" + cid.replace(".", "_")))


def F(op, payload=b"", fin=True, rsv=0):
    if isinstance(payload, str):
        payload = payload.encode()
    return cu.build_frame(op, payload, fin=fin, rsv=rsv)


def expect(c, events):
    """The next messages/control frames must be exactly `events`: ("msg", op, payload) or
    ("pong", payload)."""
    for ev in events:
        op, data = c.recv_message()
        if ev[0] == "msg":
            want = (ev[1], ev[2].encode() if isinstance(ev[2], str) else ev[2])
        else:
            want = (OP_PONG, ev[1].encode() if isinstance(ev[1], str) else ev[1])
        if (op, data) != want:
            raise AssertionError(f"expected {cu.OPNAMES[want[0]]} of {len(want[1])} bytes "
                                 f"{want[1][:60]!r}, got {cu.OPNAMES[op]} of {len(data)} bytes "
                                 f"{data[:60]!r}")


# --- generic case shapes ------------------------------------------------------------------

def run_ok(c, frames, events, chop=None):
    """Autobahn's OK outcome with closedByMe: exactly `events`, then a clean close."""
    cu.send_frames(c, frames, chop)
    expect(c, events)
    cu.finish_clean(c)


def run_fail(c, frames, events=(), code=PROTOCOL_ERROR, chop=None):
    """The server fails the connection with `code` after exactly `events` (the strict outcome:
    the good message before the bad frame is still echoed, nothing after it is answered)."""
    cu.send_frames(c, frames, chop)
    expect(c, events)
    cu.expect_fail(c, code)


def run_close(c, frames, codes):
    """We start the close handshake (possibly with more frames after the close): the server's
    next frame is its close with one of `codes` (empty close reads as 1005), then TCP ends."""
    cu.send_frames(c, frames)
    code, reason = c.expect_close()
    assert code in codes, f"server answered close with {code} {reason!r}, expected {codes}"
    c.expect_eof()


# --- 1.x framing: text and binary at every length boundary --------------------------------

for i, n in enumerate([0, 125, 126, 127, 128, 65535, 65536], start=1):
    case(f"1.1.{i}", run_ok, [F(OP_TEXT, b"*" * n)], [("msg", OP_TEXT, b"*" * n)])
    case(f"1.2.{i}", run_ok, [F(OP_BINARY, b"\xfe" * n)], [("msg", OP_BINARY, b"\xfe" * n)])
case("1.1.8", run_ok, [F(OP_TEXT, b"*" * 65536)], [("msg", OP_TEXT, b"*" * 65536)], chop=997)
case("1.2.8", run_ok, [F(OP_BINARY, b"\xfe" * 65536)], [("msg", OP_BINARY, b"\xfe" * 65536)],
     chop=997)

# --- 2.x pings and pongs -------------------------------------------------------------------

case("2.1", run_ok, [F(OP_PING)], [("pong", b"")])
case("2.2", run_ok, [F(OP_PING, "Hello, world!")], [("pong", "Hello, world!")])
BIN8 = b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff"
case("2.3", run_ok, [F(OP_PING, BIN8)], [("pong", BIN8)])
case("2.4", run_ok, [F(OP_PING, b"\xfe" * 125)], [("pong", b"\xfe" * 125)])
case("2.5", run_fail, [F(OP_PING, b"\xfe" * 126)])
case("2.6", run_ok, [F(OP_PING, b"\xfe" * 125)], [("pong", b"\xfe" * 125)], chop=1)
CLOSE1000 = F(OP_CLOSE, cu.close_payload(1000))
case("2.7", run_close, [F(OP_PONG), CLOSE1000], (1000,))
case("2.8", run_close, [F(OP_PONG, "unsolicited pong payload"), CLOSE1000], (1000,))
case("2.9", run_ok, [F(OP_PONG, "unsolicited pong payload"), F(OP_PING, "ping payload")],
     [("pong", "ping payload")])
TEN_PINGS = [F(OP_PING, f"payload-{i}") for i in range(10)]
TEN_PONGS = [("pong", f"payload-{i}") for i in range(10)]
case("2.10", run_ok, TEN_PINGS, TEN_PONGS)
case("2.11", run_ok, TEN_PINGS, TEN_PONGS, chop=1)

# --- 3.x reserved bits ----------------------------------------------------------------------

HW = "Hello, world!"
case("3.1", run_fail, [F(OP_TEXT, HW, rsv=1)])
for cid, rsv, chop in [("3.2", 2, None), ("3.3", 3, "frame"), ("3.4", 4, 1)]:
    case(cid, run_fail, [F(OP_TEXT, HW), F(OP_TEXT, HW, rsv=rsv), F(OP_PING)],
         [("msg", OP_TEXT, HW)], chop=chop)
case("3.5", run_fail, [F(OP_BINARY, BIN8, rsv=5)])
case("3.6", run_fail, [F(OP_BINARY, HW, rsv=6)])  # Autobahn's 3.6 sends opcode 2 too
case("3.7", run_fail, [F(OP_CLOSE, rsv=7)])

# --- 4.x reserved opcodes ------------------------------------------------------------------

for base, ops in [("4.1", (3, 4, 5, 6, 7)), ("4.2", (11, 12, 13, 14, 15))]:
    case(f"{base}.1", run_fail, [F(ops[0])])
    case(f"{base}.2", run_fail, [F(ops[1], "reserved opcode payload")])
    case(f"{base}.3", run_fail, [F(OP_TEXT, HW), F(ops[2]), F(OP_PING)], [("msg", OP_TEXT, HW)])
    case(f"{base}.4", run_fail, [F(OP_TEXT, HW), F(ops[3], HW), F(OP_PING)],
         [("msg", OP_TEXT, HW)])
    case(f"{base}.5", run_fail, [F(OP_TEXT, HW), F(ops[4], HW), F(OP_PING)],
         [("msg", OP_TEXT, HW)], chop=1)

# --- 5.x fragmentation ---------------------------------------------------------------------

case("5.1", run_fail, [F(OP_PING, "fragment1", fin=False), F(OP_CONT, "fragment2")])
case("5.2", run_fail, [F(OP_PONG, "fragment1", fin=False), F(OP_CONT, "fragment2")])
TWO = [F(OP_TEXT, "fragment1", fin=False), F(OP_CONT, "fragment2")]
for cid, chop in [("5.3", None), ("5.4", "frame"), ("5.5", 1)]:
    case(cid, run_ok, TWO, [("msg", OP_TEXT, "fragment1fragment2")], chop=chop)
WITH_PING = [F(OP_TEXT, "fragment1", fin=False), F(OP_PING, "ping payload"),
             F(OP_CONT, "fragment2")]
for cid, chop in [("5.6", None), ("5.7", "frame"), ("5.8", 1)]:
    case(cid, run_ok, WITH_PING, [("pong", "ping payload"),
                                  ("msg", OP_TEXT, "fragment1fragment2")], chop=chop)
NOTHING_FIN = [F(OP_CONT, "non-continuation payload"), F(OP_TEXT, HW)]
NOTHING_MORE = [F(OP_CONT, "non-continuation payload", fin=False), F(OP_TEXT, HW)]
for cid, frames, chop in [("5.9", NOTHING_FIN, None), ("5.10", NOTHING_FIN, "frame"),
                          ("5.11", NOTHING_FIN, 1), ("5.12", NOTHING_MORE, None),
                          ("5.13", NOTHING_MORE, "frame"), ("5.14", NOTHING_MORE, 1)]:
    case(cid, run_fail, frames, chop=chop)
case("5.15", run_fail, [F(OP_TEXT, "fragment1", fin=False), F(OP_CONT, "fragment2"),
                        F(OP_CONT, "fragment3", fin=False), F(OP_TEXT, "fragment4")],
     [("msg", OP_TEXT, "fragment1fragment2")])
for cid, first_fin in [("5.16", False), ("5.17", True)]:
    frames = [F(OP_CONT, "fragment1", fin=first_fin), F(OP_TEXT, "fragment2", fin=False),
              F(OP_CONT, "fragment3")] * 2
    case(cid, run_fail, frames)
case("5.18", run_fail, [F(OP_TEXT, "fragment1", fin=False), F(OP_TEXT, "fragment2")])


def run_5_19(c, chop):
    """A ping inside a fragmented message is answered at once, before the message ends."""
    frags = [f"fragment{i}" for i in range(1, 6)]
    cu.send_frames(c, [F(OP_TEXT, frags[0], fin=False), F(OP_CONT, frags[1], fin=False),
                       F(OP_PING, "pongme 1!")], chop)
    expect(c, [("pong", "pongme 1!")])  # before we send the rest
    cu.send_frames(c, [F(OP_CONT, frags[2], fin=False), F(OP_CONT, frags[3], fin=False),
                       F(OP_PING, "pongme 2!"), F(OP_CONT, frags[4])], chop)
    expect(c, [("pong", "pongme 2!"), ("msg", OP_TEXT, "".join(frags))])
    cu.finish_clean(c)


case("5.19", run_5_19, None)
case("5.20", run_5_19, "frame")

# --- 6.x UTF-8 -----------------------------------------------------------------------------

case("6.1.1", run_ok, [F(OP_TEXT, b"")], [("msg", OP_TEXT, b"")])
case("6.1.2", run_ok, [F(OP_TEXT, b"", fin=False), F(OP_CONT, b"", fin=False), F(OP_CONT, b"")],
     [("msg", OP_TEXT, b"")])
MID = "middle frame payload"
case("6.1.3", run_ok, [F(OP_TEXT, b"", fin=False), F(OP_CONT, MID, fin=False), F(OP_CONT, b"")],
     [("msg", OP_TEXT, MID)])
HELLO_UTF8 = "Hello-\u00b5@\u00df\u00f6\u00e4\u00fc\u00e0\u00e1-UTF-8!!".encode()
P1 = "Hello-\u00b5@\u00df\u00f6\u00e4".encode()
P2 = "\u00fc\u00e0\u00e1-UTF-8!!".encode()


def bytewise(payload, op=OP_TEXT):
    """One frame per byte (an empty payload: one empty frame)."""
    if not payload:
        return [F(op, b"")]
    n = len(payload)
    return [F(op if i == 0 else OP_CONT, payload[i:i + 1], fin=(i == n - 1)) for i in range(n)]


case("6.2.1", run_ok, [F(OP_TEXT, HELLO_UTF8)], [("msg", OP_TEXT, HELLO_UTF8)])
case("6.2.2", run_ok, [F(OP_TEXT, P1, fin=False), F(OP_CONT, P2)], [("msg", OP_TEXT, P1 + P2)])
case("6.2.3", run_ok, bytewise(HELLO_UTF8), [("msg", OP_TEXT, HELLO_UTF8)])
K = utf8cases.KOSME
case("6.2.4", run_ok, bytewise(K), [("msg", OP_TEXT, K)])

BAD_6_3 = K + b"\xed\xa0\x80" + b"edited"  # impossible at byte 12 (0xa0)
case("6.3.1", run_fail, [F(OP_TEXT, BAD_6_3)], code=INVALID_PAYLOAD)


def run_bytewise_fail_fast(c, payload):
    """Send `payload` one byte per frame up to and including its first impossible byte; the
    close 1007 must come before we send anything more. A payload that is only incomplete is
    sent whole and failed at its last frame."""
    frames = bytewise(payload)
    bad = utf8cases.first_impossible(payload)
    cu.send_frames(c, frames if bad is None else frames[:bad + 1])
    cu.expect_fail(c, INVALID_PAYLOAD)


case("6.3.2", run_bytewise_fail_fast, BAD_6_3)

BAD_6_4 = K + b"\xf4\x90\x80\x80" + b"edited"  # impossible at byte 12 (0x90)


def run_fail_fast_frames(c, part1, part2):
    """6.4.1/6.4.2: frame 1 is a valid prefix (a ping after it is answered, so it was accepted);
    frame 2 makes the text impossible: the close 1007 comes before we send frame 3."""
    cu.send_frames(c, [F(OP_TEXT, part1, fin=False), F(OP_PING, "after frame 1")])
    expect(c, [("pong", "after frame 1")])
    cu.send_frames(c, [F(OP_CONT, part2, fin=False)])
    cu.expect_fail(c, INVALID_PAYLOAD)


def run_fail_fast_chops(c, part1, part2):
    """6.4.3/6.4.4: one frame announcing the whole payload, sent in chops; the chop that makes
    the text impossible is failed at once, before the frame is complete."""
    frame = F(OP_TEXT, BAD_6_4)
    head = len(frame) - len(BAD_6_4)
    c.send_raw(frame[:head + len(part1)])
    assert cu.nothing_arrives(c), "server reacted to a valid prefix of the text"
    c.send_raw(frame[head + len(part1):head + len(part1) + len(part2)])
    cu.expect_fail(c, INVALID_PAYLOAD)


case("6.4.1", run_fail_fast_frames, K, b"\xf4\x90\x80\x80")
case("6.4.2", run_fail_fast_frames, BAD_6_4[:12], BAD_6_4[12:13])
case("6.4.3", run_fail_fast_chops, K, b"\xf4\x90\x80\x80")
case("6.4.4", run_fail_fast_chops, BAD_6_4[:12], BAD_6_4[12:13])

for cid, valid, payload in utf8cases.cases():
    if valid:
        case(cid, run_ok, [F(OP_TEXT, payload)], [("msg", OP_TEXT, payload)])
        case(cid + "_bytewise", run_ok, bytewise(payload), [("msg", OP_TEXT, payload)])
    else:
        case(cid, run_fail, [F(OP_TEXT, payload)], code=INVALID_PAYLOAD)
        case(cid + "_bytewise", run_bytewise_fail_fast, payload)

# --- 7.x the close handshake -----------------------------------------------------------------

case("7.1.1", run_ok, [F(OP_TEXT, "Hello World!")], [("msg", OP_TEXT, "Hello World!")])
# After our close, nothing more is processed: no second close, no pong, no echo.
case("7.1.2", run_close, [CLOSE1000, F(OP_CLOSE)], (1000,))
case("7.1.3", run_close, [CLOSE1000, F(OP_PING)], (1000,))
case("7.1.4", run_close, [CLOSE1000, F(OP_TEXT, "Hello World!")], (1000,))
case("7.1.5", run_close, [F(OP_TEXT, "fragment1", fin=False), CLOSE1000,
                          F(OP_CONT, "fragment2")], (1000,))


def run_7_1_6(c):
    """Informational in Autobahn: a 256 KiB message, a small one, close, ping. Both messages
    were complete before the close, so both come back, then the close echo; no pong."""
    big = (b"BAsd7&jh23" * 26215)[:256 * 1024]
    cu.send_frames(c, [F(OP_TEXT, big), F(OP_TEXT, "Hello World!"), CLOSE1000, F(OP_PING)])
    expect(c, [("msg", OP_TEXT, big), ("msg", OP_TEXT, "Hello World!")])
    code, _ = c.expect_close()
    assert code == 1000
    c.expect_eof()


case("7.1.6", run_7_1_6)
case("7.3.1", run_close, [F(OP_CLOSE)], (1005, 1000))  # 1005: an empty close answers it
case("7.3.2", run_close, [F(OP_CLOSE, b"a")], (PROTOCOL_ERROR,))
case("7.3.3", run_close, [CLOSE1000], (1000,))
case("7.3.4", run_close, [F(OP_CLOSE, cu.close_payload(1000, "Hello World!"))], (1000,))
case("7.3.5", run_close, [F(OP_CLOSE, cu.close_payload(1000, "*" * 123))], (1000,))
case("7.3.6", run_close, [F(OP_CLOSE, cu.close_payload(1000, "*" * 124))], (PROTOCOL_ERROR,))
case("7.5.1", run_close, [F(OP_CLOSE, struct.pack("!H", 1000) + BAD_6_3)],
     (PROTOCOL_ERROR, INVALID_PAYLOAD))
for i, code in enumerate([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000,
                          4999], start=1):
    case(f"7.7.{i}", run_close, [F(OP_CLOSE, struct.pack("!H", code))], (1000, code))
for i, code in enumerate([0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999], start=1):
    case(f"7.9.{i}", run_close, [F(OP_CLOSE, struct.pack("!H", code))], (PROTOCOL_ERROR,))
# Informational in Autobahn; codes >= 5000 are not valid on the wire (RFC 6455 7.4.2), so the
# strict answer is a protocol error.
case("7.13.1", run_close, [F(OP_CLOSE, struct.pack("!H", 5000))], (PROTOCOL_ERROR,))
case("7.13.2", run_close, [F(OP_CLOSE, struct.pack("!H", 65535))], (PROTOCOL_ERROR,))

# --- 10.x auto-fragmentation: 64 KiB text in frames of 1300 bytes ---------------------------

PAY10 = b"*" * 65536
case("10.1.1", run_ok, [F(OP_TEXT if i == 0 else OP_CONT, PAY10[i:i + 1300],
                          fin=(i + 1300 >= len(PAY10))) for i in range(0, len(PAY10), 1300)],
     [("msg", OP_TEXT, PAY10)])


@pytest.mark.parametrize("scheme", ["ws", "wss"])
@pytest.mark.parametrize("run", CASES)
def test_autobahn(srv, run, scheme):
    with cu.log_on_failure(srv) as mark:
        with (srv.connect() if scheme == "ws" else srv.connect_tls(srv.tls_context)) as c:
            run(c)
        cu.check_serving(srv)
        assert not srv.find_logs(r"stack traceback", mark), "a Lua error in the echo script"
