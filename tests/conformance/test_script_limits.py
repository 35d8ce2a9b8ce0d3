"""A script cannot freeze the server (issue 4): a handler or timer callback that never returns
is stopped after --handler-timeout with a Lua error, handled like any other handler error (logged;
the connection closed 1011, or on_error called), and a script allocating without bound hits
--lua-memory and gets a Lua error. Meanwhile every other client keeps being served.
"""

import pytest

import confutil as cu
from confutil import OP_TEXT

RUNAWAY = cu.script("runaway.lua")
GUARD = 20  # failure guard for anything that waits on a stopped handler


def served(c, text="bystander"):
    c.send_text(text)
    assert c.recv_message(GUARD) == (OP_TEXT, text.encode())


@pytest.mark.parametrize("what", ["spin", "spin-pcall"])
def test_endless_handler_is_stopped(what):
    with cu.server(RUNAWAY, "--static", "none", "--handler-timeout", "0.5") as srv:
        bystander = srv.connect()
        mark = srv.mark()
        with srv.connect() as bad:
            bad.send_text(what)
            served(bystander)  # queued behind the loop; answered once it is stopped
            cu.expect_fail(bad, 1011, GUARD)
        srv.wait_for_log(r" ERROR ", after=mark)
        served(bystander, "and again")
        cu.check_serving(srv)
        cu.finish_clean(bystander)


def test_endless_handler_with_on_error_calls_it():
    with cu.server(RUNAWAY, "--static", "none", "--handler-timeout", "0.5",
                   env={"WSLUAD_TEST_ON_ERROR": "1"}) as srv:
        bystander = srv.connect()
        srv.wait_for_log(cu.OPEN_RX)  # its line must not be taken for bad's below
        mark = srv.mark()
        bad = srv.connect()
        bad_id = int(srv.wait_for_log(cu.OPEN_RX, after=mark).group(1))
        bad.send_text("spin")
        served(bystander)
        srv.wait_for_log(rf"on_error id={bad_id} ", GUARD, after=mark)
        bad.sock.close()
        cu.check_serving(srv)
        cu.finish_clean(bystander)


def test_endless_on_open_is_stopped():
    with cu.server(RUNAWAY, "--static", "none", "--handler-timeout", "0.5") as srv:
        bystander = srv.connect()
        mark = srv.mark()
        with srv.connect(path="/spin-open", timeout=GUARD) as bad:
            served(bystander)
            cu.expect_fail(bad, 1011, GUARD)
        srv.wait_for_log(r" ERROR ", after=mark)
        cu.check_serving(srv)
        cu.finish_clean(bystander)


def test_endless_timer_callback_is_stopped():
    with cu.server(RUNAWAY, "--static", "none", "--handler-timeout", "0.5") as srv:
        bystander = srv.connect()
        c = srv.connect()
        mark = srv.mark()
        c.send_text("timer-spin")
        assert c.recv_message() == (OP_TEXT, b"timer set")
        srv.wait_for_log("timer callback spinning", after=mark)
        served(bystander)
        srv.wait_for_log(r" ERROR ", after=mark)
        served(c, "the timer's connection too")  # a timer belongs to no connection
        cu.check_serving(srv)
        cu.finish_clean(bystander)
        cu.finish_clean(c)


LUA_MEMORY = 64 << 20


def check_peak_rss(srv):
    """Without the cap these scripts would take the machine's memory; with it the process
    peak stays in the cap's neighbourhood (generous slack; skipped under ASan)."""
    if cu.is_sanitized():
        return
    with open(f"/proc/{srv.proc.pid}/status") as f:
        hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    assert hwm * 1024 < LUA_MEMORY + (192 << 20), f"peak RSS {hwm} KiB"


@pytest.mark.parametrize("what", ["hog", "string-hog"])
def test_unbounded_allocation_hits_the_lua_memory_cap(what):
    with cu.server(RUNAWAY, "--static", "none", "--lua-memory", str(LUA_MEMORY)) as srv:
        bystander = srv.connect()
        mark = srv.mark()
        with srv.connect() as bad:
            bad.send_text(what)
            cu.expect_fail(bad, 1011, 60)
        srv.wait_for_log(r" ERROR ", after=mark)
        check_peak_rss(srv)
        served(bystander)
        cu.check_serving(srv)
        cu.finish_clean(bystander)


def test_unbounded_allocation_in_a_timer_hits_the_cap():
    with cu.server(RUNAWAY, "--static", "none", "--lua-memory", str(LUA_MEMORY)) as srv:
        c = srv.connect()
        mark = srv.mark()
        c.send_text("timer-hog")
        assert c.recv_message() == (OP_TEXT, b"timer set")
        srv.wait_for_log("timer callback hogging", after=mark)
        srv.wait_for_log(r" ERROR ", 60, after=mark)
        check_peak_rss(srv)
        served(c)
        cu.check_serving(srv)
        cu.finish_clean(c)
