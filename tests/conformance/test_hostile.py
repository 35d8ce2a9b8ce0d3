"""Hostile input (issue 4): malformed HTTP, oversized headers, bad frames, random bytes, clients
that vanish at every stage, handshake and idle timeouts.

Every case expects the protocol's answer (400/431, a close code, or a closed socket), and that
the server keeps serving everyone else. scripts/count.lua logs each on_open/on_close; on_close
must run exactly once for every opened connection, checked per test and over the whole log after
a SIGTERM stop (which must exit 0 with no sanitizer report).
"""

import os
import random
import select
import signal
import socket
import struct
import time

import pytest

import confutil as cu
import wsclient
from confutil import OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_TEXT

COUNT = cu.script("count.lua")
MI = 1 << 20


@pytest.fixture(scope="module")
def srv():
    with cu.start_server(COUNT, "--static", "none") as s:
        yield s
        cu.stop_clean(s)
        cu.check_open_close_balance(s)


# --- malformed HTTP: 400 and close ------------------------------------------------------------

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
UP = ["Host: 127.0.0.1", "Upgrade: websocket", "Connection: Upgrade",
      f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 13"]


def req(first="GET / HTTP/1.1", headers=UP, extra=(), body=b""):
    return ("\r\n".join([first, *headers, *extra]) + "\r\n\r\n").encode("latin-1") + body


def without(name):
    return [h for h in UP if not h.lower().startswith(name.lower() + ":")]


MALFORMED = {
    "garbage": (b"\x00\x01\x02\x03garbage\xff\xfe\r\n\r\n", (400,)),
    "tls_client_hello": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)),
                         (400,)),
    "bad_method_char": (req("G@T / HTTP/1.1"), (400,)),
    "lowercase_method": (req("get / HTTP/1.1"), (400,)),
    "bad_version": (req("GET / HTTP/1.x"), (400, 505)),
    "version_9_9": (req("GET / HTTP/9.9"), (400, 505)),
    "http_0_9_request_line": (req("GET /"), (400, 505)),
    "http_1_0_upgrade": (req("GET / HTTP/1.0"), (400, 505)),
    "space_in_path": (req("GET /a b HTTP/1.1"), (400,)),
    "nul_in_path": (req("GET /\x00 HTTP/1.1"), (400,)),
    "cr_only_line_ends": (("\r".join(["GET / HTTP/1.1", *UP]) + "\r\r").encode(), (400,)),
    "header_without_colon": (req(extra=["Host 127.0.0.1"]), (400,)),
    # RFC 7230 3.2.4: whitespace between name and colon MUST be answered 400 (a smuggling
    # vector: "Transfer-Encoding : chunked").
    "space_before_colon": (req(extra=["Transfer-Encoding : chunked"]), (400,)),
    "empty_header_name": (req(extra=[": value"]), (400,)),
    "bad_char_in_header_name": (req(extra=["Bad[Name]: b"]), (400,)),
    "nul_in_header_value": (req(extra=["X-A: a\x00b"]), (400,)),
    "ctl_in_header_value": (req(extra=["X-A: a\x01b"]), (400,)),
    "bare_lf_in_header_value": (b"GET / HTTP/1.1\r\nX-A: a\nb\r\n" + req()[16:], (400,)),
    "content_length_and_transfer_encoding": (
        req(extra=["Content-Length: 5", "Transfer-Encoding: chunked"], body=b"0\r\n\r\n"),
        (400,)),
    "transfer_encoding_and_content_length": (
        req(extra=["Transfer-Encoding: chunked", "Content-Length: 5"], body=b"0\r\n\r\n"),
        (400,)),
    "smuggled_request_after_cl_te": (
        req(extra=["Content-Length: 44", "Transfer-Encoding: chunked"],
            body=b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"), (400,)),
    "duplicate_content_length": (req(extra=["Content-Length: 0", "Content-Length: 5"]), (400,)),
    "content_length_not_a_number": (req(extra=["Content-Length: abc"]), (400,)),
    "content_length_negative": (req(extra=["Content-Length: -1"]), (400,)),
    "content_length_overflow": (req(extra=["Content-Length: 99999999999999999999999"]),
                                (400,)),
    "transfer_encoding_not_chunked_last": (req(extra=["Transfer-Encoding: chunked, gzip"]),
                                           (400,)),
    "transfer_encoding_twice": (req(extra=["Transfer-Encoding: chunked",
                                           "Transfer-Encoding: identity"]), (400,)),
    "duplicate_sec_websocket_key": (req(extra=["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="]),
                                    (400,)),
    "duplicate_identical_sec_websocket_key": (req(extra=[f"Sec-WebSocket-Key: {KEY}"]), (400,)),
    "duplicate_sec_websocket_key_other_case": (req(extra=[f"sec-websocket-key: {KEY}"]), (400,)),
    "sec_websocket_key_too_short": (req(headers=without("Sec-WebSocket-Key"),
                                        extra=["Sec-WebSocket-Key: c2hvcnQ="]), (400,)),
    "sec_websocket_key_not_base64": (req(headers=without("Sec-WebSocket-Key"),
                                         extra=["Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!!="]),
                                     (400,)),
    "sec_websocket_key_missing": (req(headers=without("Sec-WebSocket-Key")), (400,)),
    # 1,000 tiny headers: about 5 KiB, under the 8 KiB limit, but an absurd count.
    "absurd_header_count": (req(extra=["a:b"] * 1000), (400,)),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_http_gets_400_and_close(srv, name):
    raw, statuses = MALFORMED[name]
    with cu.log_on_failure(srv):
        with cu.raw_connect(srv) as s:
            s.sendall(raw)
            status, headers, body, rest = wsclient.read_http_response(s)
            assert status in statuses, f"answered {status} {body[:200]!r}, expected {statuses}"
            assert cu.recv_until_eof(s) == b"" and rest == b"", "bytes after the error answer"
        cu.check_serving(srv)


def test_header_block_over_8k_gets_431(srv):
    with cu.log_on_failure(srv):
        with cu.raw_connect(srv) as s:
            s.sendall(req(extra=["X-Big: " + "a" * 9000]))
            status, _, body, _ = wsclient.read_http_response(s)
            assert status == 431, f"answered {status} {body[:200]!r}"
            cu.recv_until_eof(s)
        cu.check_serving(srv)


def test_endless_header_block_gets_431_without_waiting_for_its_end(srv):
    """16 KiB of header lines and no blank line: 431 once past 8 KiB, not a wait for more."""
    with cu.log_on_failure(srv):
        with cu.raw_connect(srv) as s:
            try:
                s.sendall(("GET / HTTP/1.1\r\n" + "X-Filler: aaaaaaaaaaaaaaaaaaaaaaaa\r\n" * 500)
                          .encode())
            except OSError:
                pass  # the server may answer and hang up before taking all of it
            status, _, body, _ = wsclient.read_http_response(s)
            assert status == 431, f"answered {status} {body[:200]!r}"
            cu.recv_until_eof(s)
        cu.check_serving(srv)


def test_header_block_just_under_8k_upgrades(srv):
    """The limit is not lower than it says: a 7.5 KiB request still upgrades."""
    with cu.log_on_failure(srv):
        pad = 7 * 1024 + 512 - len(req())
        c = srv.connect(headers=[("X-Pad", "p" * pad)])
        with c:
            c.send_text("under the limit")
            assert c.recv_message() == (OP_TEXT, b"under the limit")
            cu.finish_clean(c)


# --- bad frame headers ------------------------------------------------------------------------

def header(op, length_field, ext=b"", fin=True):
    """A masked client frame header with a raw length field (7-bit value and extension bytes),
    followed by a mask key, and no payload."""
    return bytes([(0x80 if fin else 0) | op, 0x80 | length_field]) + ext + os.urandom(4)


def test_64bit_length_with_top_bit_set_fails_at_once(srv):
    with cu.log_on_failure(srv):
        with srv.connect() as c:
            c.send_raw(header(OP_BINARY, 127, struct.pack("!Q", (1 << 63) | 5)))
            cu.expect_fail(c, (1002, 1009))
        cu.check_serving(srv)


@pytest.mark.parametrize("length", [MI + 1, 1 << 32, (1 << 62) + 7],
                         ids=["1MiB+1", "4GiB", "2^62+7"])
def test_length_past_the_limit_fails_1009_before_any_payload(srv, length):
    """Default --max-message is 1 MiB; the header alone must get the 1009."""
    with cu.log_on_failure(srv):
        with srv.connect() as c:
            c.send_raw(header(OP_BINARY, 127, struct.pack("!Q", length)))
            cu.expect_fail(c, 1009)
        cu.check_serving(srv)


def test_message_of_exactly_the_limit_is_echoed(srv):
    with cu.log_on_failure(srv):
        with srv.connect() as c:
            payload = os.urandom(MI)
            c.send_binary(payload)
            assert c.recv_message(60) == (OP_BINARY, payload)
            cu.finish_clean(c)


def test_fragments_past_the_limit_fail_1009_at_the_crossing_header(srv):
    with cu.log_on_failure(srv):
        with srv.connect() as c:
            c.send_frame(OP_BINARY, b"a" * (MI // 2), fin=False)
            c.send_frame(OP_CONT, b"b" * (MI // 2 - 10), fin=False)
            c.send_raw(header(OP_CONT, 126, struct.pack("!H", 11)))  # 11 more: 1 byte over
            cu.expect_fail(c, 1009)
        cu.check_serving(srv)


def test_unmasked_client_frame_fails_1002(srv):
    with cu.log_on_failure(srv):
        with srv.connect() as c:
            c.send_frame(OP_TEXT, b"not masked", mask=False)
            cu.expect_fail(c, 1002)
        cu.check_serving(srv)


@pytest.mark.parametrize("size", [9, 5000, 12000, 70000, 900000])
def test_frames_pipelined_with_the_handshake_are_served(srv, size):
    """A client may send its first frames in the same write as the upgrade request. Frame bytes
    are arbitrary: the mask keys here hold NUL and CR bytes, which belong to the frames, not to
    the request head."""
    with cu.log_on_failure(srv):
        with cu.raw_connect(srv) as s:
            raw, key = wsclient.handshake_request(srv.host, srv.port)
            payload = bytes(range(256)) * (size // 256) + b"\r\x00x" * 3
            s.sendall(raw + cu.build_frame(OP_BINARY, payload, mask_key=b"\x00\r\x00\r") +
                      cu.build_frame(OP_TEXT, b"early two", mask_key=b"\r\x00\x00\x00"))
            status, headers, body, rest = wsclient.read_http_response(s)
            assert status == 101, f"valid upgrade answered {status} {body[:100]!r}"
            c = wsclient.WSClient(s, status, headers, rest)
            assert c.recv_message(30) == (OP_BINARY, payload)
            assert c.recv_message() == (OP_TEXT, b"early two")
            cu.finish_clean(c)


def test_unanswered_server_close_still_ends_the_connection(srv):
    """The server closes (1011 after a Lua error); the client never answers and never closes:
    the server hangs up anyway after its grace period, and on_close runs once."""
    mark = srv.mark()
    with cu.log_on_failure(srv):
        with srv.connect() as c:
            c.send_text("error")
            code, _ = c.expect_close()
            assert code == 1011
            c.expect_eof(timeout=15)
        cu.wait_all_closed(srv, mark)
        cu.check_serving(srv)


def test_client_keeping_tcp_open_after_the_close_handshake_is_dropped(srv):
    """Close handshake done, but the client never sends its FIN: the server must not hold the
    connection forever (it has already sent its FIN; it must end the socket on its own)."""
    mark = srv.mark()
    with cu.log_on_failure(srv):
        c, cid = cu.connect_id(srv, "keep-tcp")
        c.close(1000)
        assert c.expect_close() == (1000, "")
        c.expect_eof()
        srv.wait_for_log(rf"on_close id={cid} ", after=mark)
        # We keep our end open: the kernel will reset it once the server closes its socket
        # fully; a further send then fails. Poll for that with a failure guard.
        deadline = time.monotonic() + 15
        while True:
            try:
                c.sock.send(b"\x00")
            except OSError:
                break
            assert time.monotonic() < deadline, "server still holds the closed connection"
            time.sleep(0.1)
        c.sock.close()


def test_extension_offers_are_declined_and_rsv1_still_fails(srv):
    """No extension is implemented, so an offered permessage-deflate must not be accepted, and
    a compressed (RSV1) frame is then a protocol error."""
    with cu.log_on_failure(srv):
        c = srv.connect(headers=[("Sec-WebSocket-Extensions",
                                  "permessage-deflate; client_max_window_bits")])
        with c:
            assert "sec-websocket-extensions" not in c.headers, c.headers
            c.send_frame(OP_TEXT, b"\xf2\x48\xcd\xc9\xc9\x07\x00", rsv=4)
            cu.expect_fail(c, 1002)


def test_ping_flood_from_a_client_that_never_reads(srv):
    """Pongs are queued like any output: a client flooding pings without reading is closed as a
    slow consumer (1008) instead of growing the server's memory."""
    mark = srv.mark()
    with cu.log_on_failure(srv):
        c = srv.connect(rcvbuf=4096)
        batch = cu.build_frame(OP_PING, b"p" * 125) * 1000
        # Up to 400,000 pings (53 MB of pongs), until the server gave up on us: it then stops
        # reading, so a send that waits means "look at the log" (a slow server under load may
        # also just be late: that waits too, up to a deadline), and a reset ends the flood.
        c.sock.settimeout(0.5)
        view, batches, deadline = memoryview(batch), 0, time.monotonic() + 60
        while batches < 400 and time.monotonic() < deadline:
            try:
                view = view[c.sock.send(view):]
            except socket.timeout:
                if srv.find_logs(r"on_close id=\d+ code=1008", after=mark):
                    break
                continue
            except OSError:
                break
            if not view:
                view, batches = memoryview(batch), batches + 1
        c.sock.close()
        srv.wait_for_log(r"on_close id=\d+ code=1008", after=mark)
        if not cu.is_sanitized():
            assert cu.proc_rss_kib(srv.proc.pid) < 64 * 1024
        cu.wait_all_closed(srv, mark)
        cu.check_serving(srv)


def test_close_echo_comes_after_output_already_queued(srv):
    """A slow reader asks for 768 KiB and closes at once: it still gets every queued message,
    then the close echo, then EOF."""
    with cu.log_on_failure(srv):
        for _ in range(3):
            with srv.connect(rcvbuf=4096) as c:
                c.send_text("flood 12")
                c.close(1000)
                for i in range(12):
                    op, data = c.recv_message(30)
                    assert (op, len(data)) == (OP_BINARY, 65536), f"message {i}: {op} {len(data)}"
                assert c.expect_close() == (1000, "")
                c.expect_eof()
        cu.check_serving(srv)


# --- random bytes, truncation, vanishing clients -------------------------------------------------

def test_random_bytes_after_upgrade(srv):
    """Seeded junk after the upgrade (half of it behind a plausible frame header). Whatever the
    server makes of it, it survives and every connection gets exactly one on_close."""
    rng = random.Random(4)
    mark = srv.mark()
    with cu.log_on_failure(srv):
        for i in range(80):
            c = srv.connect()
            junk = bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 2, 7, 64, 700, 5000])))
            if i % 2:
                junk = bytes([rng.choice([0x81, 0x82, 0x01, 0x00, 0x88, 0x89]),
                              0x80 | rng.choice([5, 125, 126, 127])]) + junk
            try:
                c.send_raw(junk)
            except OSError:
                pass  # the server may already have failed the connection
            c.sock.close()
        cu.wait_all_closed(srv, mark)
        cu.check_serving(srv)


def test_random_bytes_instead_of_http(srv):
    rng = random.Random(5)
    with cu.log_on_failure(srv):
        for _ in range(40):
            with cu.raw_connect(srv) as s:
                try:
                    s.sendall(bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 50, 3000]))))
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                data = cu.recv_until_eof(s)
                assert data == b"" or data.startswith(b"HTTP/1.1 4"), data[:100]
        cu.check_serving(srv)


@pytest.mark.parametrize("cut", ["1_header_byte", "no_mask_key", "half_16bit_length",
                                 "half_payload", "mid_fragmented_message", "mid_close_frame"])
def test_client_vanishes_mid_frame(srv, cut):
    """The TCP connection ends inside a frame: on_close runs once, with 1006."""
    frame = cu.build_frame(OP_BINARY, b"p" * 300)
    partial = {
        "1_header_byte": frame[:1],
        "no_mask_key": frame[:4],
        "half_16bit_length": frame[:3],
        "half_payload": frame[:150],
        "mid_fragmented_message": cu.build_frame(OP_TEXT, b"first", fin=False),
        "mid_close_frame": cu.build_frame(wsclient.OP_CLOSE, wsclient.close_payload(1000))[:5],
    }[cut]
    mark = srv.mark()
    with cu.log_on_failure(srv):
        c, cid = cu.connect_id(srv, "vanish")
        c.send_raw(partial)
        c.sock.shutdown(socket.SHUT_WR)
        cu.recv_until_eof(c.sock)  # the server may or may not say goodbye; it must hang up
        c.sock.close()
        cu.wait_all_closed(srv, mark)
        assert [code for i, code in cu.closes(srv) if i == cid] == [1006]
        cu.check_serving(srv)


@pytest.mark.parametrize("stage", [b"", b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nHost: a",
                                   None], ids=["nothing", "request_line", "mid_header", "full"])
@pytest.mark.parametrize("how", ["fin", "rst"])
def test_client_vanishes_mid_handshake(srv, stage, how):
    """Drop during the request (or right after sending all of it, before reading the 101)."""
    mark = srv.mark()
    with cu.log_on_failure(srv):
        for _ in range(20):
            s = cu.raw_connect(srv)
            data = stage if stage is not None else wsclient.handshake_request(srv.host,
                                                                            srv.port)[0]
            if data:
                s.sendall(data)
            if how == "rst":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        cu.check_serving(srv)
        cu.wait_all_closed(srv, mark)


def test_client_vanishes_while_server_writes(srv):
    """A client asks for 768 KiB, reads none of it (tiny receive buffer) and resets the
    connection while the server is still writing: no crash, one on_close each."""
    mark = srv.mark()
    with cu.log_on_failure(srv):
        for _ in range(20):
            c = srv.connect(rcvbuf=4096)
            c.send_text("flood 12")
            c.recv_frame()  # the server has started writing
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.sock.close()
        cu.wait_all_closed(srv, mark)
        cu.check_serving(srv)


def test_clean_and_abrupt_mix_balance(srv):
    """After everything above on this server: still exactly one on_close per on_open."""
    with cu.log_on_failure(srv):
        cu.wait_all_closed(srv)


# --- handshake timeout ---------------------------------------------------------------------

def test_handshake_timeout_closes_unfinished_upgrades():
    with cu.server(COUNT, "--static", "none", "--handshake-timeout", "0.5") as srv:
        upgraded = srv.connect()  # first, so its handshake timer (if wrongly kept) fires first
        silent = cu.raw_connect(srv)
        partial = cu.raw_connect(srv)
        partial.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        for s in (silent, partial):
            data = cu.recv_until_eof(s)
            assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:200]
            s.close()
        # The unfinished ones are gone, so the timeout has passed for the upgraded one too:
        # it must still be open.
        upgraded.send_text("still here")
        assert upgraded.recv_message() == (OP_TEXT, b"still here")
        cu.finish_clean(upgraded)


@pytest.mark.parametrize("opt", ["--handshake-timeout", "--idle-timeout"])
def test_a_timeout_under_a_millisecond_is_not_off(opt):
    """Only 0 disables a timeout: 0.0004 s (0 whole milliseconds) still closes a silent client,
    at once as far as a human can tell."""
    with cu.server(COUNT, "--static", "none", opt, "0.0004") as srv:
        if opt == "--handshake-timeout":
            s = cu.raw_connect(srv)
            data = cu.recv_until_eof(s, timeout=5)
            assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:200]
            s.close()
        else:
            c = srv.connect()
            with pytest.raises((EOFError, ConnectionError)):
                for _ in range(10):  # a ping, then the end of the connection
                    c.recv_frame(timeout=5)


# --- idle timeout --------------------------------------------------------------------------

def answer_pings_until(c, pred, limit=50):
    """Read frames, answering each ping with its pong, until pred(op, payload) is true."""
    for _ in range(limit):
        fin, op, payload = c.recv_frame()
        if op == OP_PING:
            c.send_frame(OP_PONG, payload)
            if pred(op, payload):
                return op, payload
            continue
        if pred(op, payload):
            return op, payload
        raise AssertionError(f"unexpected {cu.OPNAMES[op]} frame {payload[:100]!r}")
    raise AssertionError("gave up")


def test_idle_timeout_pings_silent_client_then_closes_it():
    """--idle-timeout 0.5: a silent client gets a ping, then (not answering) a close and
    on_close; a client that answers every ping with its pong outlives it and stays open."""
    with cu.server(COUNT, "--static", "none", "--idle-timeout", "0.5") as srv:
        mark = srv.mark()
        silent = srv.connect()
        sid = int(srv.wait_for_log(cu.OPEN_RX, after=mark).group(1))
        mark2 = srv.mark()
        answering = srv.connect()
        aid = int(srv.wait_for_log(cu.OPEN_RX, after=mark2).group(1))

        silent_state, pongs = "open", 0
        deadline = time.monotonic() + 30
        while silent_state != "closed" or pongs < 3:
            assert time.monotonic() < deadline, f"silent client {silent_state}, {pongs} pings"
            busy = False
            if answering.readable(0):
                _, op, payload = answering.recv_frame()
                assert op == OP_PING, f"answering client got {cu.OPNAMES[op]} {payload!r}"
                answering.send_frame(OP_PONG, payload)
                pongs += 1
                busy = True
            if silent_state != "closed" and silent.readable(0):
                busy = True
                try:
                    _, op, _ = silent.recv_frame()
                except (EOFError, ConnectionResetError):
                    assert silent_state == "pinged", "closed without a ping first"
                    silent_state = "closed"
                    continue
                if op == OP_PING:
                    assert silent_state == "open", "second ping to the silent client"
                    silent_state = "pinged"
                else:
                    assert op == wsclient.OP_CLOSE and silent_state == "pinged", \
                        f"silent client got {cu.OPNAMES[op]} while {silent_state}"
                    silent_state = "closed"
            if not busy:
                socks = [answering.sock] + ([silent.sock] if silent_state != "closed" else [])
                select.select(socks, [], [], 0.5)
        srv.wait_for_log(rf"on_close id={sid} ", after=mark)

        answering.send_text("alive")
        answer_pings_until(answering, lambda op, p: op == OP_TEXT and p == b"alive")
        assert not srv.find_logs(rf"on_close id={aid} ", mark), "the answering client was closed"
        answering.close(1000)
        assert answering.expect_close(skip_data=True)[0] == 1000
        answering.expect_eof()


# --- the server survives everything above: the module fixture checks a clean SIGTERM exit ----


# --- shutdown with connections in every state ----------------------------------------------

def test_sigterm_with_connections_in_every_state():
    """SIGTERM while connections are handshaking, open and idle, mid-frame, mid-message,
    lingering after a close, slow readers with output queued, and one inside a spinning
    handler: exit 0 within seconds, open ones get close 1001, on_close exactly once each."""
    srv = cu.start_server(cu.script("runaway.lua"), "--static", "none",
                          "--handler-timeout", "1", "--max-backpressure", "64M")
    with srv:
        mark = srv.mark()
        idle = [srv.connect() for _ in range(10)]
        mid_frame = [srv.connect() for _ in range(5)]
        for c in mid_frame:
            c.send_raw(cu.build_frame(OP_BINARY, b"z" * 500)[:100])
        mid_message = [srv.connect() for _ in range(5)]
        for c in mid_message:
            c.send_frame(OP_TEXT, b"part one", fin=False)
        closing = [srv.connect() for _ in range(5)]
        for c in closing:
            c.close(1000)
            assert c.expect_close() == (1000, "")
        slow = [srv.connect(rcvbuf=4096) for _ in range(5)]
        for c in slow:
            c.send_binary(os.urandom(4 * MI))  # echoed into a reader that does not read
        handshaking = [cu.raw_connect(srv) for _ in range(5)]
        for s in handshaking:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        opened = len(idle) + len(mid_frame) + len(mid_message) + len(closing) + len(slow) + 1
        spinner = srv.connect()
        srv.wait_for_logs(cu.OPEN_RX, opened, after=mark)
        spinner.send_text("spin")
        for c in idle:  # everything before the spin has been read once these answer... or not:
            c.send_text("ping")  # they queue behind the spinning handler
        srv.signal(signal.SIGTERM)
        rc = srv.wait_exit(timeout=20)
        assert rc == 0, f"exit status {rc} after SIGTERM"
        bad = [l for l in srv.lines if cu.SANITIZER_RX.search(l)]
        assert not bad, "\n".join(bad[:20])
        cu.check_open_close_balance(srv)
        for c in idle:
            op, data = c.recv_message()
            if op == OP_TEXT:  # the echo may come first if it was read before the stop
                assert data == b"ping"
                op, data = c.recv_message()
            assert op == wsclient.OP_CLOSE and data[:2] == struct.pack("!H", 1001), \
                (op, data[:20])
