"""Defects the API storm (test_api_storm.py) found, each reduced to a small deterministic test."""

import re
import signal

import pytest

from harness import Server


@pytest.mark.parametrize("call,name", [("timer", "ws.timer"), ("every", "ws.every"),
                                       ("sleep", "ws.sleep")])
def test_finalizer_at_exit_cannot_start_a_timer(call, name):
    """A finalizer runs as the state closes, after the event loop ended: ws.timer, ws.every and
    ws.sleep there used to start a libuv timer on the closed loop (a crash). They fail instead."""
    with Server("gc_at_exit.lua", env={"GC_CALL": call}) as server:
        assert server.stop(signal.SIGTERM) == 0
    server.wait_for_log(rf"at exit: {call} false {re.escape(name)}: the server has shut down$")
