"""Autobahn|Testsuite fuzzingclient cases 9.x (limits) against `wsluad examples/echo.lua`.

Run with `--max-message 16M` as issue 4 says. `--max-backpressure 64M` too: the echo of a 16 MiB
message is queued whole, and the default 1 MiB slow-consumer limit would (rightly) close a client
that has not read it yet. Autobahn only checks the echo's length; we compare its bytes. 9.7/9.8
(1,000 sequential round trips) check that every echo comes back intact, not how fast.
"""

import pytest

import confutil as cu
from confutil import OP_BINARY, OP_CONT, OP_TEXT

KI, MI = 1 << 10, 1 << 20
BIG_TIMEOUT = 120


@pytest.fixture(scope="module")
def srv():
    with cu.server(cu.echo_script(), "--static", "none", "--max-message", "16M",
                   "--max-backpressure", "64M") as s:
        yield s


def repeat(pattern, n):
    return (pattern * (n // len(pattern) + 1))[:n]


def F(op, payload, fin=True):
    return cu.build_frame(op, payload, fin=fin)


def expect_echo(c, op, payload, timeout=BIG_TIMEOUT):
    got_op, data = c.recv_message(timeout)
    assert got_op == op, f"expected {cu.OPNAMES[op]}, got {cu.OPNAMES[got_op]}"
    assert len(data) == len(payload), f"echo of {len(data)} bytes, sent {len(payload)}"
    assert data == payload, "echo differs from what was sent"


def run_single(c, op, payload, chop=None):
    cu.send_frames(c, [F(op, payload)], chop)
    expect_echo(c, op, payload)
    cu.finish_clean(c, BIG_TIMEOUT)


def run_fragmented(c, op, payload, fragsize):
    n = len(payload)
    frames = [F(op if i == 0 else OP_CONT, payload[i:i + fragsize], fin=(i + fragsize >= n))
              for i in range(0, n, fragsize)]
    c.send_raw(b"".join(frames), timeout=BIG_TIMEOUT)
    expect_echo(c, op, payload)
    cu.finish_clean(c, BIG_TIMEOUT)


def run_roundtrips(c, op, size, count=1000):
    payload = (b"*" if op == OP_TEXT else b"\xfe") * size
    frame_bytes = F(op, payload)  # one mask key reused: fine, it is the bytes that matter
    for i in range(count):
        c.send_raw(frame_bytes)
        got = c.recv_message()
        assert got == (op, payload), f"round trip {i}: got {cu.OPNAMES[got[0]]} of {len(got[1])}"
    cu.finish_clean(c)


CASES = []


def case(cid, fn, *args):
    CASES.append(pytest.param(lambda c: fn(c, *args), id="case_" + cid.replace(".", "_")))


TEXT_PAT, BIN_PAT = b"BAsd7&jh23", b"\x00\xfe\x23\xfa\xf0"
for i, n in enumerate([64 * KI, 256 * KI, 1 * MI, 4 * MI, 8 * MI, 16 * MI], start=1):
    case(f"9.1.{i}", run_single, OP_TEXT, repeat(TEXT_PAT, n))
    case(f"9.2.{i}", run_single, OP_BINARY, repeat(BIN_PAT, n))
for i, frag in enumerate([64, 256, 1 * KI, 4 * KI, 16 * KI, 64 * KI, 256 * KI, 1 * MI, 4 * MI],
                         start=1):
    case(f"9.3.{i}", run_fragmented, OP_TEXT, b"*" * (4 * MI), frag)
    case(f"9.4.{i}", run_fragmented, OP_BINARY, b"\xfe" * (4 * MI), frag)
for i, chop in enumerate([64, 128, 256, 512, 1024, 2048], start=1):
    case(f"9.5.{i}", run_single, OP_TEXT, repeat(TEXT_PAT, MI), chop)
    case(f"9.6.{i}", run_single, OP_BINARY, repeat(BIN_PAT, MI), chop)
for i, size in enumerate([0, 16, 64, 256, 1024, 4096], start=1):
    case(f"9.7.{i}", run_roundtrips, OP_TEXT, size)
    case(f"9.8.{i}", run_roundtrips, OP_BINARY, size)


@pytest.mark.parametrize("run", CASES)
def test_autobahn_limits(srv, run):
    with cu.log_on_failure(srv):
        with srv.connect() as c:
            run(c)
        cu.check_serving(srv)


# --- the 16 MiB limit itself ----------------------------------------------------------------

def test_one_byte_over_the_limit_is_refused_at_the_header(srv):
    """16 MiB + 1 announced in a header: close 1009 before any payload is sent."""
    with cu.log_on_failure(srv):
        with srv.connect() as c:
            c.send_raw(cu.build_frame(OP_BINARY, b"", length=16 * MI + 1))
            cu.expect_fail(c, 1009)
        cu.check_serving(srv)


def test_fragments_passing_the_limit_are_refused_at_the_crossing_header(srv):
    """8 MiB + 8 MiB is fine; the header of a third fragment that takes the total past
    16 MiB gets 1009 before its payload is sent."""
    with cu.log_on_failure(srv):
        with srv.connect() as c:
            half = b"\xfe" * (8 * MI)
            c.send_raw(F(OP_BINARY, half, fin=False) + F(OP_CONT, half, fin=False),
                       timeout=BIG_TIMEOUT)
            # header (with mask key) of a 1-byte continuation, payload withheld
            c.send_raw(cu.build_frame(OP_CONT, b"x")[:-1])
            cu.expect_fail(c, 1009, timeout=BIG_TIMEOUT)
        cu.check_serving(srv)
