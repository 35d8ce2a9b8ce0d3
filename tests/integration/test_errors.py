"""Errors as the script raised them (issue 8): on_error(conn, err, traceback) gets the error value
itself (a table stays a table) and the traceback; the log line is readable whatever the value
(__tostring, or its type); identical errors in a row are logged once, then counted."""

import re
import time

import pytest

from harness import Server


@pytest.fixture
def server():
    with Server("errvalues.lua", "--static", "none") as s:
        yield s


def on_error_reply(server, what):
    """Send a message that raises; returns (on_error's reply, the log line of the error, the
    traceback's lines that follow it)."""
    c = server.connect()
    mark = server.mark()
    c.send_text(what)
    reply = c.recv_text()
    i, _ = server.wait_for_line(r" ERROR Lua error in on_message \(conn#\d+ [^)]*\): ", after=mark)
    server.wait_for_line(r"^stack traceback:$", after=i + 1)
    with server.cond:
        line, trace = server.lines[i], server.lines[i + 1:i + 4]
    c.close_handshake()
    return reply, line, trace


def test_table_error_reaches_on_error_as_the_table(server):
    reply, line, trace = on_error_reply(server, "table")
    assert reply == "type=table code=42 traceback=yes value=-"
    assert line.endswith("): (error object is a table value)"), line
    assert trace[0] == "stack traceback:"
    assert re.search(r"errvalues\.lua:\d+: in ", "\n".join(trace)), trace


def test_table_with_tostring_logs_its_text(server):
    reply, line, _ = on_error_reply(server, "tostring")
    assert reply == "type=table code=7 traceback=yes value=-"
    assert line.endswith("): custom error 7"), line


def test_tostring_returning_a_number_logs_it_as_tostring_would(server):
    reply, line, _ = on_error_reply(server, "tostring-number")
    assert reply == "type=table code=nil traceback=yes value=-"
    assert line.endswith("): 42"), line


def test_tostring_returning_no_string_counts_as_failed(server):
    _, line, _ = on_error_reply(server, "tostring-table")
    assert line.endswith("): (error object is a table value whose __tostring failed)"), line


def test_plain_table_logs_its_type(server):
    reply, line, _ = on_error_reply(server, "plain-table")
    assert reply == "type=table code=nil traceback=yes value=-"
    assert line.endswith("): (error object is a table value)"), line


def test_string_error_still_works(server):
    reply, line, _ = on_error_reply(server, "string")
    assert re.fullmatch(r"type=string code=nil traceback=yes value=\S*errvalues\.lua:\d+: "
                        r"a string error", reply), reply
    assert re.search(r"\): \S*errvalues\.lua:\d+: a string error$", line), line


def test_nil_error(server):
    reply, line, _ = on_error_reply(server, "nil")
    assert reply == "type=nil code=nil traceback=yes value=-"
    assert line.endswith("): (error object is a nil value)"), line


TIMER_ERROR = r" ERROR Lua error in ws\.every callback: \S*errvalues\.lua:\d+: the timer broke$"


def test_repeating_timer_error_is_logged_once_then_counted(server):
    c = server.connect()
    mark = server.mark()
    c.send_text("every")
    assert c.recv_text() == "started"
    deadline = time.monotonic() + 20
    while True:  # 40 firings, 50 ms apart
        c.send_text("fired")
        if int(c.recv_text()) >= 40:
            break
        assert time.monotonic() < deadline, "the timer did not fire 40 times in 20 s"
        time.sleep(0.05)
    c.send_text("stop")
    fired = int(c.recv_text())
    assert len(server.find_logs(TIMER_ERROR, after=mark)) == 1
    assert len(server.find_logs(r"^stack traceback:$", after=mark)) == 1
    # Another error ends the run of identical ones: the count comes first, naming the timer.
    c.send_text("string")
    assert c.recv_text().startswith("type=string")
    i, m = server.wait_for_line(r" ERROR the previous Lua error \(in (.*)\) repeated (\d+) more "
                                r"times$", after=mark)
    assert m.group(1) == "ws.every callback"
    assert int(m.group(2)) == fired - 1
    server.wait_for_log(r" ERROR Lua error in on_message .*a string error$", after=i)
    c.close_handshake()


def test_count_of_repeats_is_logged_at_shutdown():
    s = Server("errvalues.lua", "--static", "none")
    with s:
        c = s.connect()
        c.send_text("every")
        assert c.recv_text() == "started"
        c.send_text("fired")
        while int(c.recv_text()) < 3:
            time.sleep(0.05)
            c.send_text("fired")
        c.send_text("stop")
        fired = int(c.recv_text())
        c.close_handshake()
        assert s.stop() == 0
        m = s.wait_for_log(r"the previous Lua error \(in ws\.every callback\) repeated (\d+) more "
                           r"times$")
        assert int(m.group(1)) == fired - 1


def test_same_error_after_a_quiet_window_is_logged_in_full_again(server):
    # Errors are counted while they keep coming (less than 10 s apart); one that comes back
    # after a quiet 10 s is news again. (This one has to wait out the window.)
    c = server.connect()
    mark = server.mark()
    rx = r" ERROR Lua error in ws\.timer callback: \S*errvalues\.lua:\d+: a one-shot timer broke$"
    c.send_text("once")
    assert c.recv_text() == "set"
    server.wait_for_log(rx, after=mark)
    time.sleep(10.5)  # the window is 10 s of the server's clock; nothing to poll for
    c.send_text("once")
    assert c.recv_text() == "set"
    server.wait_for_logs(rx, 2, after=mark)
    c.close_handshake()
