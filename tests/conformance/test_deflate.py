"""permessage-deflate (RFC 7692) against `wsluad --deflate` and scripts/deflate.lua.

Our own cases, in the shapes of Autobahn's 12.x/13.x (messages of many sizes under each offer,
the client keeping or dropping its context) plus the rules around them: the offer and the
answer, RSV1 only on a message's first frame, fragmented compressed messages, context takeover
both ways (the client's window kept within its agreed size, the server never taking over), a zip
bomb stopped at --max-message while it is still arriving, invalid compressed data and invalid
UTF-8 inside it, one compressed frame shared by every recipient of a broadcast. The client here is
raw (tests/integration/wsclient.py plus zlib), so it can misbehave; every server frame is checked:
RSV1 only where allowed, every compressed message inflated with a fresh window of exactly the
agreed size (so a server that took over its context, or used a larger window, fails it). Python's
`websockets` (compression="deflate") is the independent client at the end.
"""

import asyncio
import os
import random
import struct
import time
import zlib

import pytest

import confutil as cu
from confutil import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT

SCRIPT = cu.script("deflate.lua")
RSV1 = 4  # build_frame's rsv argument: RSV1 is the top one of the three bits
TAIL = b"\x00\x00\xff\xff"
BASE = "permessage-deflate; server_no_context_takeover"
NOCTX = BASE + "; client_no_context_takeover"
OFFER = "permessage-deflate; client_max_window_bits"  # what browsers send
MIN = 256  # the default --deflate-min


@pytest.fixture(scope="module")
def srv():
    with cu.server(SCRIPT, "--static", "none", "--deflate") as s:
        yield s


def params(answer):
    """The answer's parameters as a dict (name -> value or None)."""
    parts = [p.strip() for p in answer.split(";")]
    assert parts[0] == "permessage-deflate", answer
    out = {}
    for p in parts[1:]:
        k, _, v = p.partition("=")
        assert k not in out, f"duplicate {k} in {answer!r}"
        out[k] = v or None
    return out


class ZClient:
    """One connection that agreed on permessage-deflate (or tried to)."""

    def __init__(self, srv, offer=OFFER, path="/", headers=None, takeover=True):
        hdrs = list(headers or [])
        if offer is not None:
            hdrs.append(("Sec-WebSocket-Extensions", offer))
        self.c = srv.connect(path=path, headers=hdrs)
        self.answer = self.c.headers.get("sec-websocket-extensions")
        p = params(self.answer) if self.answer else {}
        self.agreed = self.answer is not None
        if self.agreed:
            assert "server_no_context_takeover" in p, "the server always drops its context"
        self.server_bits = int(p.get("server_max_window_bits") or 15)
        self.client_bits = int(p.get("client_max_window_bits") or 15)
        # Ours to keep unless the answer says otherwise.
        self.takeover = takeover and "client_no_context_takeover" not in p
        self.co = None

    # --- sending -------------------------------------------------------------------------
    def compress(self, data, takeover=None):
        takeover = self.takeover if takeover is None else takeover
        if self.co is None or not takeover:
            # zlib refuses a raw 8-bit window; 9 never reaches back past 250 bytes.
            self.co = zlib.compressobj(6, zlib.DEFLATED, -max(9, self.client_bits))
        z = self.co.compress(data) + self.co.flush(zlib.Z_SYNC_FLUSH)
        assert z.endswith(TAIL)
        return z[:-4]

    def frames(self, data, op=OP_TEXT, compress=True, frag=None):
        """The frames of one message: compressed (RSV1 on the first frame) unless told not,
        split every `frag` payload bytes."""
        if isinstance(data, str):
            data = data.encode()
        payload = self.compress(data) if compress else data
        pieces = [payload[i:i + frag] for i in range(0, len(payload), frag)] if frag else [payload]
        pieces = pieces or [b""]
        out = []
        for i, p in enumerate(pieces):
            out.append(cu.build_frame(op if i == 0 else OP_CONT, p, fin=i == len(pieces) - 1,
                                      rsv=RSV1 if compress and i == 0 else 0))
        return out

    def send(self, data, op=OP_TEXT, compress=True, frag=None, chop=None):
        cu.send_frames(self.c, self.frames(data, op, compress, frag), chop)

    # --- receiving -----------------------------------------------------------------------
    def recv_frame(self, timeout=cu.TIMEOUT):
        """The next frame as (fin, rsv, opcode, payload)."""
        c = self.c
        deadline = time.monotonic() + timeout
        c._fill(2, deadline, "a frame header")
        b0, b1 = c.buf[0], c.buf[1]
        fin, rsv, op = bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF
        assert not b1 & 0x80, "server frame is masked"
        n, hl = b1 & 0x7F, 2
        if n == 126:
            c._fill(4, deadline, "a 16-bit length")
            n, hl = struct.unpack("!H", c.buf[2:4])[0], 4
        elif n == 127:
            c._fill(10, deadline, "a 64-bit length")
            n, hl = struct.unpack("!Q", c.buf[2:10])[0], 10
        c._fill(hl + n, deadline, f"a {n}-byte payload")
        del c.buf[:hl]
        return fin, rsv, op, c._take(n)

    def recv(self, timeout=cu.TIMEOUT):
        """The next message as (op, data, compressed, payload bytes on the wire); control frames
        as they come."""
        deadline = time.monotonic() + timeout
        op0, raw, z = None, b"", False
        while True:
            fin, rsv, op, payload = self.recv_frame(max(0.0, deadline - time.monotonic()))
            if op >= 8:
                assert rsv == 0, f"RSV bits {rsv:#x} on a control frame"
                if op == OP_CLOSE:
                    self.c.close_received = cu.wsclient.parse_close(payload)
                return op, payload, False, len(payload)
            if op == OP_CONT:
                assert op0 is not None, "continuation without a message"
                assert rsv == 0, "RSV1 on a continuation frame"
            else:
                assert op0 is None, "a new message inside a fragmented one"
                assert rsv in (0, RSV1), f"RSV bits {rsv:#x}"
                assert rsv == 0 or self.agreed, "RSV1 without permessage-deflate"
                op0, z = op, rsv == RSV1
            raw += payload
            if fin:
                break
        data = raw
        if z:
            # A fresh window of exactly the agreed size: the server kept no context.
            d = zlib.decompressobj(wbits=-self.server_bits)
            data = d.decompress(raw + TAIL)
            assert not d.unconsumed_tail
        if op0 == OP_TEXT:
            data.decode("utf-8")
        return op0, data, z, len(raw)

    def expect(self, data, op=OP_TEXT, compressed=None):
        if isinstance(data, str):
            data = data.encode()
        got_op, got, z, wire = self.recv()
        assert got_op == op, f"expected {cu.OPNAMES[op]}, got {cu.OPNAMES[got_op]} {got[:80]!r}"
        assert got == data, f"got {len(got)} bytes {got[:80]!r}, want {len(data)} {data[:80]!r}"
        if compressed is not None:
            assert z == compressed, f"message of {len(data)} bytes compressed: {z}, want {compressed}"
        if z:
            assert wire < len(data), "a compressed frame no smaller than the message"
        return z, wire

    def fail(self, code):
        return cu.expect_fail(self.c, code)

    def finish(self):
        cu.finish_clean(self.c)


def chat_text(n, seed=0):
    """Chat-like JSON text of exactly n bytes (compressible, mostly ASCII, some UTF-8)."""
    rnd = random.Random(seed)
    words = ["hello", "world", "κόσμε", "chat", "room", "message", "the", "quick", "brown",
             "fox", "meeting", "€", "noon"]
    parts = ['{"type":"message","room":"general","text":"']
    length = len(parts[0])
    while length < n:
        parts.append(rnd.choice(words) + " ")
        length += len(parts[-1].encode())
    b = "".join(parts).encode()[:n]
    while True:
        try:
            b.decode()
            break
        except UnicodeDecodeError:
            b = b[:-1]
    return b + b"." * (n - len(b))


# --- negotiation -------------------------------------------------------------------------------

NEGOTIATION = [
    (None, None),
    ("permessage-deflate", NOCTX),
    (OFFER, BASE + "; client_max_window_bits=11"),
    ("permessage-deflate; client_max_window_bits=15", BASE + "; client_max_window_bits=11"),
    ("permessage-deflate; client_max_window_bits=9", BASE + "; client_max_window_bits=9"),
    ("permessage-deflate; client_no_context_takeover", NOCTX),
    ("permessage-deflate; client_no_context_takeover; client_max_window_bits", NOCTX),
    ("permessage-deflate; server_no_context_takeover", NOCTX),
    ("permessage-deflate; server_max_window_bits=10", NOCTX + "; server_max_window_bits=10"),
    ("permessage-deflate; server_max_window_bits=8; client_max_window_bits=8",
     BASE + "; client_max_window_bits=8; server_max_window_bits=8"),
    ('permessage-deflate; server_max_window_bits="12"; client_max_window_bits="10"',
     BASE + "; client_max_window_bits=10; server_max_window_bits=12"),
    ("PerMessage-Deflate ; Client_Max_Window_Bits = 10", BASE + "; client_max_window_bits=10"),
    # Invalid offers are declined; the handshake goes on without compression.
    ("permessage-deflate; server_max_window_bits", None),
    ("permessage-deflate; server_max_window_bits=16", None),
    ("permessage-deflate; server_max_window_bits=7", None),
    ("permessage-deflate; client_max_window_bits=08", None),
    ("permessage-deflate; client_no_context_takeover=1", None),
    ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", None),
    ("permessage-deflate; client_max_window_bits; client_max_window_bits=9", None),
    ("permessage-deflate; mux", None),
    ("permessage-deflate; ", None),
    ('"permessage-deflate, permessage-deflate', None),
    ("x-webkit-deflate-frame", None),
    # Several offers and extensions: the first acceptable permessage-deflate.
    ("x-webkit-deflate-frame, permessage-deflate", NOCTX),
    ("permessage-deflate; foo=1, permessage-deflate; client_max_window_bits=10",
     BASE + "; client_max_window_bits=10"),
    ('foo; x="a,b;c", permessage-deflate; server_max_window_bits=9; client_max_window_bits',
     BASE + "; client_max_window_bits=11; server_max_window_bits=9"),
    ([("Sec-WebSocket-Extensions", "foo"), ("Sec-WebSocket-Extensions", OFFER)],
     BASE + "; client_max_window_bits=11"),
]


@pytest.mark.parametrize("offer,answer", NEGOTIATION, ids=[str(o) for o, _ in NEGOTIATION])
def test_negotiation(srv, offer, answer):
    with cu.log_on_failure(srv):
        mark = srv.mark()
        if isinstance(offer, list):
            z = ZClient(srv, offer=None, headers=offer)
        else:
            z = ZClient(srv, offer=offer)
        assert z.answer == answer
        want = "true" if answer else "false"
        srv.wait_for_log(rf"on_open id=\d+ compressed={want}$", after=mark)
        # Whatever was agreed works both ways.
        msg = chat_text(1000, 1)
        z.send(msg, compress=z.agreed)
        z.expect(msg, compressed=z.agreed)
        z.finish()
        srv.wait_for_log(rf"on_close id=\d+ code=1000 compressed={want}$", after=mark)


def test_off_by_default():
    """Without --deflate every offer is ignored and RSV1 stays a protocol error."""
    with cu.server(SCRIPT, "--static", "none") as s:
        z = ZClient(s)
        assert z.answer is None
        msg = chat_text(1000)
        z.send(msg, compress=False)
        z.expect(msg, compressed=False)
        z.send(msg)
        z.fail(1002)


# --- Autobahn 12.x / 13.x shapes: sizes under each configuration -------------------------------

CONFIGS = [
    OFFER,
    "permessage-deflate",
    "permessage-deflate; client_no_context_takeover; client_max_window_bits",
    "permessage-deflate; server_max_window_bits=9",
    "permessage-deflate; server_max_window_bits=8; client_max_window_bits=8",
    "permessage-deflate; server_max_window_bits=15; client_max_window_bits=15",
    "permessage-deflate; client_max_window_bits=9; server_max_window_bits=10",
]
SIZES = [16, 64, 256, 1024, 4096, 8192, 16384, 32768, 65536, 131072]


@pytest.mark.parametrize("offer", CONFIGS)
def test_sizes(srv, offer):
    with cu.log_on_failure(srv):
        z = ZClient(srv, offer=offer)
        assert z.agreed
        rnd = random.Random(offer)
        for size in SIZES:
            for _ in range(4):
                text = chat_text(size, seed=rnd.random())
                z.send(text)
                # Below --deflate-min, or when it would not be smaller, it comes back plain.
                comp, _ = z.expect(text)
                assert comp == (size >= MIN), f"{size} bytes came back compressed={comp}"
                blob = rnd.randbytes(size)
                z.send(blob, OP_BINARY)
                z.expect(blob, OP_BINARY, compressed=False)  # random bytes do not shrink
        z.finish()


def test_plain_messages_too(srv):
    """A client may mix compressed and uncompressed messages, fragmented or not; with context
    takeover, uncompressed ones do not touch the window."""
    z = ZClient(srv)
    msgs = [chat_text(600, i) for i in range(6)]
    for i, m in enumerate(msgs):
        z.send(m, compress=i % 2 == 0, frag=None if i % 3 else 100)
        z.expect(m, compressed=True)
    z.finish()


# --- RSV1 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", [OP_PING, OP_PONG, OP_CLOSE])
def test_rsv1_on_control_frames(srv, op):
    z = ZClient(srv)
    z.send("before")
    z.expect("before")
    payload = cu.close_payload(1000) if op == OP_CLOSE else b"x"
    z.c.send_raw(cu.build_frame(op, payload, rsv=RSV1))
    z.fail(1002)
    cu.check_serving(srv)


@pytest.mark.parametrize("first_compressed", [True, False])
def test_rsv1_on_continuation_frames(srv, first_compressed):
    z = ZClient(srv)
    payload = z.compress(chat_text(500)) if first_compressed else chat_text(500)
    z.c.send_raw(cu.build_frame(OP_TEXT, payload[:100], fin=False,
                                rsv=RSV1 if first_compressed else 0))
    z.c.send_raw(cu.build_frame(OP_CONT, payload[100:], rsv=RSV1))
    z.fail(1002)


@pytest.mark.parametrize("rsv", [1, 2, 3, 5, 6, 7])
def test_other_reserved_bits(srv, rsv):
    z = ZClient(srv)
    z.c.send_raw(cu.build_frame(OP_TEXT, z.compress(b"hello"), rsv=rsv))
    z.fail(1002)


def test_rsv1_when_declined(srv):
    z = ZClient(srv, offer="permessage-deflate; mux")
    assert not z.agreed
    z.c.send_raw(cu.build_frame(OP_TEXT, z.compress(b"hello"), rsv=RSV1))
    z.fail(1002)


# --- fragmented compressed messages --------------------------------------------------------------

@pytest.mark.parametrize("frag,chop", [(1, None), (7, "frame"), (100, 3), (4000, None)])
def test_fragmented(srv, frag, chop):
    with cu.log_on_failure(srv):
        z = ZClient(srv)
        for size in (300, 5000):
            text = chat_text(size, frag)
            frames = z.frames(text, frag=frag)
            if len(frames) > 1:  # a ping between the fragments is answered at once
                frames.insert(1, cu.build_frame(OP_PING, b"between"))
            cu.send_frames(z.c, frames, chop)
            if len(frames) > 1:
                op, data, _, _ = z.recv()
                assert (op, data) == (OP_PONG, b"between")
            z.expect(text, compressed=True)
        # Empty fragments anywhere, an empty final one included.
        text = chat_text(1000, 9)
        payload = z.compress(text)
        z.c.send_raw(cu.build_frame(OP_TEXT, b"", fin=False, rsv=RSV1) +
                     cu.build_frame(OP_CONT, payload[:10], fin=False) +
                     cu.build_frame(OP_CONT, b"", fin=False) +
                     cu.build_frame(OP_CONT, payload[10:], fin=False) +
                     cu.build_frame(OP_CONT, b""))
        z.expect(text, compressed=True)
        z.finish()


# --- context takeover -----------------------------------------------------------------------------

def test_client_context_takeover(srv):
    """The client keeps its window: the same message again compresses to a few bytes that only
    make sense with the previous one; the server inflates them (it kept the 2 KiB window)."""
    z = ZClient(srv, offer="permessage-deflate; client_max_window_bits=11")
    assert z.takeover and z.client_bits == 11
    text = chat_text(1500, 3)
    sizes = []
    for _ in range(5):
        frames = z.frames(text)
        sizes.append(len(frames[0]))
        cu.send_frames(z.c, frames)
        z.expect(text, compressed=True)
    assert sizes[1] < sizes[0] / 5, f"context takeover did not shrink the message: {sizes}"
    # Fragmented and chopped, still in the same context.
    z.send(text, frag=3, chop=5)
    z.expect(text, compressed=True)
    z.finish()


def test_client_window_is_bounded(srv):
    """The server keeps only the window it agreed on (2^11 bytes): a client that reaches back
    further into an earlier message is refused with 1007."""
    z = ZClient(srv, offer="permessage-deflate; client_max_window_bits=11")
    first = random.Random(5).randbytes(4000)
    z.client_bits = 15  # misbehave: a 32 KiB window
    z.send(first, OP_BINARY)
    z.expect(first, OP_BINARY)
    z.send(first[:200], OP_BINARY)  # 4000 bytes back: past the 2048 the server keeps
    z.fail(1007)


def test_client_without_takeover_keeps_nothing(srv):
    """An offer without client_max_window_bits is answered with client_no_context_takeover: the
    server keeps nothing between messages, so a client that refers back anyway is refused."""
    z = ZClient(srv, offer="permessage-deflate", takeover=False)
    assert "client_no_context_takeover" in z.answer
    text = chat_text(800, 4)
    for _ in range(3):
        z.send(text)
        z.expect(text, compressed=True)
    z.co = None
    payload1 = z.compress(text, takeover=True)  # misbehave: keep the context anyway
    payload2 = z.compress(text, takeover=True)  # refers back to the first
    z.c.send_raw(cu.build_frame(OP_TEXT, payload1, rsv=RSV1))
    z.expect(text, compressed=True)
    z.c.send_raw(cu.build_frame(OP_TEXT, payload2, rsv=RSV1))
    z.fail(1007)


def test_server_never_takes_over(srv):
    """The same message five times: every answer is compressed on its own (recv inflates each
    with a fresh window) and has the same size."""
    z = ZClient(srv)
    text = chat_text(2000, 8)
    wires = set()
    for _ in range(5):
        z.send(text)
        _, wire = z.expect(text, compressed=True)
        wires.add(wire)
    assert len(wires) == 1, f"compressed sizes differ: {wires}"
    z.finish()


# --- limits and broken input -------------------------------------------------------------------

def test_zip_bomb(srv):
    """16 MiB of zeros compress to 16 KiB: the server inflates as the frame arrives and closes
    with 1009 once the output passes --max-message (1 MiB), before the rest is sent."""
    z = ZClient(srv)
    payload = z.compress(bytes(16 << 20))
    assert len(payload) < 20_000
    frame = cu.build_frame(OP_BINARY, payload, rsv=RSV1)
    z.c.send_raw(frame[:len(frame) // 4])  # about 4 MiB of output: the limit is 1 MiB
    z.fail(1009)
    cu.check_serving(srv)


def test_bomb_in_fragments(srv):
    z = ZClient(srv)
    frames = z.frames(bytes(4 << 20), OP_BINARY, frag=512)
    cu.send_frames(z.c, frames[:len(frames) // 2])
    z.fail(1009)


def test_at_the_limit(srv):
    """Inflating to exactly --max-message is fine, one byte more is not."""
    z = ZClient(srv)
    z.send(bytes(1 << 20), OP_BINARY)
    z.expect(bytes(1 << 20), OP_BINARY, compressed=True)
    z.send(bytes((1 << 20) + 1), OP_BINARY)
    z.fail(1009)


INVALID = {
    "reserved-block-type": b"\x07\x00",
    "stored-length-mismatch": b"\x00\x05\x00\xfa\xfeHello\x00",
    "distance-too-far": b"\xf2\x00\x11\x00\x00",
    # zlib inflates a cut stream without complaint: the message must end on a block boundary.
    "truncated": (lambda co: (co.compress(b"hello world chat room " * 60) +
                              co.flush(zlib.Z_SYNC_FLUSH))[:20])(zlib.compressobj(6, 8, -15)),
    "garbage": bytes(range(255, 191, -1)),
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_data(srv, name):
    # Without context takeover: with it, a reference back into "fine" would be valid.
    z = ZClient(srv, offer="permessage-deflate", takeover=False)
    z.send("fine")
    z.expect("fine")
    z.c.send_raw(cu.build_frame(OP_BINARY, INVALID[name], rsv=RSV1))
    z.fail(1007)


def test_invalid_utf8_inside(srv):
    bad = "κόσμε".encode() * 100 + b"\xed\xa0\x80" + b"tail" * 100
    z = ZClient(srv)
    z.send(bad, OP_BINARY)  # as binary it is fine
    z.expect(bad, OP_BINARY)
    z.send(bad)
    z.fail(1007)
    # In a later fragment of a long message: refused at that fragment, before the end.
    z = ZClient(srv)
    text = chat_text(20000, 2)
    frames = z.frames(text[:10000] + b"\xf4\x90\x80\x80" + text[10000:], frag=200)
    cu.send_frames(z.c, frames[:-3])
    z.fail(1007)
    # Ending inside a character.
    z = ZClient(srv)
    z.send(b"ends in half of \xe2\x82")
    z.fail(1007)


def test_empty_messages(srv):
    z = ZClient(srv)
    z.send("")  # zlib's empty message: one 00 byte
    z.expect("", compressed=False)
    z.c.send_raw(cu.build_frame(OP_TEXT, b"", rsv=RSV1))  # no payload at all: empty too
    z.expect("", compressed=False)
    z.finish()


# --- fan-out: one compressed frame for every recipient ---------------------------------------------

def test_broadcast_and_publish(srv):
    """A broadcast or publish reaches plain recipients as a plain frame and deflate ones as a
    compressed frame, inflatable with a 9-bit window for the one that asked for a small one."""
    with cu.log_on_failure(srv):
        a = ZClient(srv, path="/room")
        b = ZClient(srv, path="/room")
        plain = ZClient(srv, offer=None, path="/room")
        small = ZClient(srv, offer="permessage-deflate; server_max_window_bits=9", path="/room")
        assert small.server_bits == 9
        clients = [a, b, plain, small]
        for verb in ("broadcast", "publish"):
            # Repeats 2000 bytes back: a 15-bit window would refer to them, a 9-bit one cannot.
            text = chat_text(2000, verb)
            text += text[:1000].decode("utf-8", "ignore").encode()
            a.send(f"{verb}:".encode() + text)
            for c in clients:
                c.expect(text, compressed=c.agreed)
        for c in clients:
            c.finish()


def test_shared_frame_bytes(srv):
    """The compressed payload two deflate clients get from one broadcast is byte for byte the
    same (it was compressed once)."""
    a, b = ZClient(srv), ZClient(srv)
    text = chat_text(5000, 77)
    a.send(b"broadcast:" + text)
    frames = []
    for c in (a, b):
        fin, rsv, op, payload = c.recv_frame()
        assert fin and rsv == RSV1 and op == OP_TEXT
        frames.append(payload)
    assert frames[0] == frames[1]
    assert zlib.decompressobj(wbits=-15).decompress(frames[0] + TAIL) == text
    a.finish()
    b.finish()


# --- --deflate-min -------------------------------------------------------------------------------

@pytest.mark.parametrize("minimum", ["0", "2000"])
def test_deflate_min(minimum):
    with cu.server(SCRIPT, "--static", "none", "--deflate", "--deflate-min", minimum) as s:
        z = ZClient(s)
        for size in (100, 1999, 2000, 5000):
            text = chat_text(size, size)
            z.send(text)
            z.expect(text, compressed=size >= int(minimum))
        z.finish()


# --- an independent client: Python's websockets --------------------------------------------------

websockets = pytest.importorskip("websockets")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, cu.TIMEOUT * 3))


@pytest.mark.parametrize("client_bits", [None, 9, 15])
def test_websockets_echo(srv, client_bits):
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

    async def go():
        ext = ClientPerMessageDeflateFactory(
            client_max_window_bits=True if client_bits is None else client_bits)
        async with websockets.connect(f"ws://{srv.host}:{srv.port}/", extensions=[ext],
                                      max_size=None) as ws:
            answer = ws.response_headers["Sec-WebSocket-Extensions"]
            assert answer == BASE + f"; client_max_window_bits={min(client_bits or 15, 11)}"
            for size in (0, 10, 300, 5000, 100_000):
                text = chat_text(size, size).decode()
                await ws.send(text)
                assert await ws.recv() == text
                blob = os.urandom(size)
                await ws.send(blob)
                assert await ws.recv() == blob
            # Fragmented, from an iterable.
            await ws.send(chat_text(1000, i).decode() for i in range(5))
            assert await ws.recv() == "".join(chat_text(1000, i).decode() for i in range(5))

    run(go())


def test_websockets_defaults_and_broadcast(srv):
    """compression="deflate" as websockets does it by default, next to a client without it."""

    async def go():
        url = f"ws://{srv.host}:{srv.port}/"
        async with websockets.connect(url, compression="deflate") as z, \
                websockets.connect(url, compression=None) as p:
            assert "permessage-deflate" in z.response_headers["Sec-WebSocket-Extensions"]
            assert "Sec-WebSocket-Extensions" not in p.response_headers
            text = chat_text(4000, 1).decode()
            await z.send("broadcast:" + text)
            assert await z.recv() == text
            assert await p.recv() == text

    run(go())
