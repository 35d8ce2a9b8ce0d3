"""ws.stopping() is true from the moment SIGTERM or SIGINT asked the process to end, in every
handler that runs after it: also in the handlers run for a connection whose handler the signal
interrupted (on_error, a message already read after it, its on_close), which run before the
shutdown proper starts. They said false. And the docs' promise that every connection leaves the
open state before the first on_close of the shutdown runs holds for that connection too: its
on_close (code 1011 when there is no on_error) told the others it left, who got that message
before their close frame 1001."""

import signal
import socket

import pytest

from harness import Server, connect_id
from wsclient import OP_TEXT, build_frame, read_http_response


@pytest.mark.parametrize("on_error", [False, True], ids=["without_on_error", "with_on_error"])
def test_handlers_after_the_signal_see_stopping(on_error):
    env = {"STOPPING_ON_ERROR": "1"} if on_error else {}
    with Server("stopping.lua", "--handler-timeout", "0", "--static", "none", env=env) as s:
        a, aid = connect_id(s)
        b, bid = connect_id(s)
        mark = s.mark()
        # Both messages in one write: the second is read with the first, and its handler runs
        # after the signal stopped the first one.
        a.send_raw(build_frame(OP_TEXT, b"spin") + build_frame(OP_TEXT, b"next"))
        spun, _ = s.wait_for_line(rf"on_message id={aid} data=spin stopping=false$", after=mark)
        s.signal(signal.SIGTERM)
        s.wait_for_log(rf"Lua error in on_message \(conn#{aid} [^)]*\): interrupted: the server "
                       r"is shutting down$", after=mark)
        # b hears nothing of a's leaving: its close frame is the first frame it gets.
        assert b.expect_close() == (1001, "server shutting down")
        if on_error:
            s.wait_for_log(rf"on_error id={aid} stopping=true err=interrupted", after=mark)
            s.wait_for_log(rf"on_message id={aid} data=next stopping=true$", after=mark)
            assert a.expect_close() == (1001, "server shutting down")
        else:
            # The failed handler closes the connection (1011); nothing more of it is read.
            assert a.expect_close() == (1011, "internal error")
        for c in (a, b):
            c.close(1001)
            c.expect_eof()
        assert s.wait_exit() == 0
        code = 1001 if on_error else 1011
        s.wait_for_log(rf"on_close id={aid} code={code} stopping=true$", after=mark)
        s.wait_for_log(rf"on_close id={bid} code=1001 stopping=true$", after=mark)
        assert not s.find_logs(r"stopping=false", after=spun + 1)


def test_request_waiting_for_its_answer_gets_it_with_connection_close():
    """SIGNALS: a plain request waiting for its answer gets it with Connection: close. One whose
    on_request the signal stopped was answered 500 as if the server were not stopping (kept
    alive), before the shutdown dropped the connection."""
    with Server("stopping.lua", "--handler-timeout", "0", "--static", "none") as s:
        with socket.create_connection((s.host, s.port)) as sock:
            mark = s.mark()
            sock.sendall(b"GET /spin HTTP/1.1\r\nHost: wsluad\r\n\r\n")
            s.wait_for_log(r"on_request /spin stopping=false$", after=mark)
            s.signal(signal.SIGTERM)
            status, headers, _, rest = read_http_response(sock)
            assert status == 500
            assert headers.get("connection") == "close", headers
            assert rest == b""
        assert s.wait_exit() == 0


RELOADED_TOP_LEVEL = '''
ws.log("top level ran")
function on_open(conn) ws.log("on_open id=" .. conn.id .. " remote=" .. conn.remote) end
'''


def test_sighup_during_the_shutdown_is_ignored(tmp_path):
    """Once SIGTERM started the shutdown, SIGHUP reloads nothing, as the supervisor of
    --workers already does (it reloaded: the top level ran again, on the way out, and systemd
    was told READY=1 after STOPPING=1)."""
    script = tmp_path / "hup.lua"
    script.write_text(RELOADED_TOP_LEVEL)
    with Server(str(script), "--static", "none") as s:
        c, _ = connect_id(s)
        s.signal(signal.SIGTERM)
        # The shutdown now waits (up to 3 s) for this client's answer to its close frame.
        assert c.expect_close() == (1001, "server shutting down")
        mark = s.mark()
        s.signal(signal.SIGHUP)
        assert "ignored" in s.wait_for_log(r"SIGHUP: .*", after=mark).group(0)
        c.close(1001)
        c.expect_eof()
        assert s.wait_exit() == 0
        assert len(s.find_logs(r"top level ran")) == 1
        assert not s.find_logs(r"reload", after=mark)
