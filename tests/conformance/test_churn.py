"""Churn (issue 4): thousands of connect/send/disconnect cycles, clean and abnormal, with Lua
errors and protocol errors mixed in. The server survives, on_close runs exactly once per
opened connection, its RSS comes back close to the baseline (a leak check with generous slack,
not a benchmark; skipped under ASan, whose quarantine holds freed memory), and a SIGTERM stop
exits 0 with no LeakSanitizer/AddressSanitizer report.
"""

import os
import socket
import struct

import confutil as cu
import wsclient
from confutil import OP_BINARY, OP_TEXT

COUNT = cu.script("count.lua")
CYCLES = int(os.environ.get("WSLUAD_CHURN_CYCLES", "3000"))
WARMUP = 300
SLACK_KIB = 8 * 1024


def rst_close(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def clean(srv, i):
    with srv.connect() as c:
        c.send_text(f"hello {i}")
        assert c.recv_message() == (OP_TEXT, f"hello {i}".encode())
        cu.finish_clean(c)


def abrupt(srv, i):
    c = srv.connect()
    c.send_text("bye")
    assert c.recv_message() == (OP_TEXT, b"bye")
    c.sock.close()


def lua_error(srv, i):
    with srv.connect() as c:
        c.send_text("error")
        cu.expect_fail(c, 1011)


def mid_frame(srv, i):
    c = srv.connect()
    c.send_raw(cu.build_frame(OP_BINARY, b"x" * 1000)[:300])
    c.sock.close()


def mid_handshake(srv, i):
    s = cu.raw_connect(srv)
    s.sendall(wsclient.handshake_request(srv.host, srv.port)[0][:40])
    s.close()


def big_binary(srv, i):
    payload = os.urandom(64 * 1024)
    with srv.connect() as c:
        c.send_binary(payload)
        assert c.recv_message() == (OP_BINARY, payload)
        cu.finish_clean(c)


def reset(srv, i):
    c = srv.connect()
    c.send_text("flood 4")  # the server is writing 256 KiB when the reset lands
    rst_close(c.sock)


def protocol_error(srv, i):
    with srv.connect() as c:
        c.send_frame(OP_TEXT, b"unmasked", mask=False)
        cu.expect_fail(c, 1002)


def error_in_on_open(srv, i):
    with srv.connect("/err-open") as c:
        cu.expect_fail(c, 1011)


def error_in_on_close(srv, i):
    with srv.connect("/err-close") as c:
        c.send_text("x")
        assert c.recv_message() == (OP_TEXT, b"x")
        cu.finish_clean(c)


def plain_http(srv, i):
    status, _, _ = srv.get("/nothing-here")
    assert status == 404


KINDS = [clean, abrupt, lua_error, mid_frame, mid_handshake, big_binary, reset, protocol_error,
         plain_http, error_in_on_open, error_in_on_close]


def churn(srv, n, start=0):
    for i in range(start, start + n):
        KINDS[i % len(KINDS)](srv, i)


def test_churn_no_leak():
    with cu.start_server(COUNT, "--static", "none") as srv:
        pid = srv.proc.pid
        churn(srv, WARMUP)  # let allocator pools, the Lua heap and libuv reach steady state
        cu.wait_all_closed(srv, timeout=30)
        base = cu.proc_rss_kib(pid)

        churn(srv, CYCLES, WARMUP)
        opened = cu.wait_all_closed(srv, timeout=60)
        assert opened >= (WARMUP + CYCLES) * 6 // len(KINDS) - 10
        cu.check_serving(srv)
        after = cu.proc_rss_kib(pid)
        if not cu.is_sanitized():
            assert after - base < SLACK_KIB, \
                f"RSS grew from {base} KiB to {after} KiB over {CYCLES} cycles"

        cu.stop_clean(srv)
        cu.check_open_close_balance(srv)
