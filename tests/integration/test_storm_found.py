"""Defects the API storm (test_api_storm.py) found, each reduced to a small deterministic test."""

import os
import re
import signal

import pytest

import wsclient
from harness import Server


@pytest.mark.parametrize("call,name", [("timer", "ws.timer"), ("every", "ws.every"),
                                       ("sleep", "ws.sleep")])
def test_finalizer_at_exit_cannot_start_a_timer(call, name):
    """A finalizer runs as the state closes, after the event loop ended: ws.timer, ws.every and
    ws.sleep there used to start a libuv timer on the closed loop (a crash). They fail instead."""
    with Server("gc_at_exit.lua", env={"GC_CALL": call}) as server:
        assert server.stop(signal.SIGTERM) == 0
    server.wait_for_log(rf"at exit: {call} false {re.escape(name)}: the server has shut down$")


def test_a_handler_one_level_deep_after_one_four_levels_deep():
    """A call four levels deep (on_close run by conn:close in nested functions ws.spawn ran from
    on_open) made the thread for its level and left those for the levels between unset: the
    next call one level deep (on_close run by conn:close in on_message) ran on whatever that
    slot held, a crash (under ASan, whose new memory is never zeros; a plain build may find
    zeros there and pass by luck)."""
    with Server("depth_skip.lua") as server:
        with server.connect("/close-from-spawn") as c:
            assert c.expect_close() == (4000, "from a spawned function")
        server.wait_for_log(r"on_close 4000$")
        with server.connect("/") as c:
            c.send_text("close me")
            assert c.expect_close() == (4001, "from on_message")
        server.wait_for_log(r"on_close 4001$")


def test_a_wait_begun_after_the_time_limit_never_resumes():
    """A handler over its time limit (the alarm came while it was blocked in C) spawned a
    function that began to wait before the time limit's hook stopped it. The stop forgot the
    coroutine, but its ws.sleep timer still held it: once the collector had freed it, the timer
    resumed freed memory (a crash). Now the timer finds it stopped and lets it be. Freed memory
    is filled (glibc's perturb tunable, without tcache; ASan's free_fill_byte), or it could pass
    for the thread it was."""
    fill = {"GLIBC_TUNABLES": "glibc.malloc.perturb=165:glibc.malloc.tcache_count=0",
            "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":max_free_fill_size=4096"
                            ":free_fill_byte=165"}
    with Server("wait_overrun.lua", "--handler-timeout", "0.1", env=fill) as server:
        with server.connect("/") as c:
            assert c.recv_message() == (wsclient.OP_TEXT, b"ready")
            c.send_text("go")
            assert c.expect_close()[0] == 1011
        server.wait_for_log(r"after the wait$")
        assert not server.find_logs(r"woke up after the stop")
        assert server.alive()
