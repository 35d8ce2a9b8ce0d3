"""A call that runs inside another and overruns the time limit stops the call around it too, and
that is one failure: logged once (for the inner call, whose traceback shows the loop), passed to
on_error once (for the outer call, with the inner call's error and traceback), the connection
handled once (on_error did not close it: it stays open). The first stretch of a function run by
ws.spawn is such a call: it runs inside the handler that spawned it. It was two of each: the
spawned function's failure went to on_error from inside the handler, then the handler's own stop
was logged and went to on_error again."""

import re

import pytest

from harness import Server, connect_id

LOOP_FN = 6  # where scripts/spawn_limit.lua defines the spawned loop
TIMEOUT_TEXT = "handler timeout: still running after 0.2 s (--handler-timeout)"
TIMEOUT = re.escape(TIMEOUT_TEXT)


@pytest.fixture
def server():
    with Server("spawn_limit.lua", "--handler-timeout", "0.2", "--static", "none") as s:
        yield s


def one_error_logged(server, c, mark, regex, count):
    """c's "count" is answered with `count` (on_error's calls); once its log line is there,
    everything before it is logged: exactly one ERROR line since mark, matching regex."""
    c.send_text("count")
    assert c.recv_text() == f"on_error calls: {count}"
    server.wait_for_log(rf"counted {count}$", after=mark)
    errors = [m.string for m in server.find_logs(r" ERROR ", after=mark)]
    assert len(errors) == 1, errors
    assert server.find_logs(regex, after=mark), errors


@pytest.mark.parametrize("how", ["spawn", "pcall-spawn", "sort-spawn"])
def test_first_stretch_over_the_limit_is_one_failure(server, how):
    c, cid = connect_id(server)
    mark = server.mark()
    c.send_text(how)
    assert c.recv_text() == f"on_error 1 in {LOOP_FN}: {TIMEOUT_TEXT}"
    # The connection is still open, and on_error ran once: a second call would have sent its
    # reply before this one.
    one_error_logged(server, c, mark, rf"ERROR Lua error in a function run by ws\.spawn "
                     rf"\(conn#{cid} [^)]*\): {TIMEOUT}$", 1)


def test_on_close_run_inside_a_handler_over_the_limit_is_one_failure(server):
    a, aid = connect_id(server)
    b, bid = connect_id(server)
    mark = server.mark()
    a.send_text(f"close {bid}")
    assert b.expect_close() == (4000, "loop")
    assert a.recv_text() == f"on_error 1 in on_close: {TIMEOUT_TEXT}"
    one_error_logged(server, a, mark, rf"ERROR Lua error in on_close \(conn#{bid} [^)]*\): "
                     rf"{TIMEOUT}$", 1)


def test_spawned_from_a_timer_is_logged_once(server):
    c, _ = connect_id(server)
    mark = server.mark()
    c.send_text("timer")
    server.wait_for_log(rf"ERROR Lua error in a function run by ws\.spawn: {TIMEOUT}$",
                        after=mark)
    one_error_logged(server, c, mark, r"in a function run by ws\.spawn", 0)
    # The callback stopped at ws.spawn: its code after it never ran.
    assert not server.find_logs(r"timer went on", after=mark)


def test_spawned_from_on_request_answers_500_once(server):
    c, _ = connect_id(server)
    mark = server.mark()
    status, _, _ = server.get("/spawn")
    assert status == 500
    one_error_logged(server, c, mark, rf"ERROR Lua error in a function run by ws\.spawn: {TIMEOUT}$",
                     0)
