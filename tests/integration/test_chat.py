"""The default chat room among three clients, Lua errors in handlers (1011, on_error, the room
keeps going), and graceful shutdown on SIGTERM/SIGINT."""

import os
import signal
import socket

import pytest

import wsclient
from harness import Server, source_dir
from wsclient import OP_CLOSE, OP_TEXT


def chat_script():
    return os.path.join(source_dir(), "lua", "chat.lua")


def recv_containing(c, text, forbidden=()):
    """Read messages until one contains `text`; fail if one before it contains a forbidden
    string (the bundled chat may send notices, so other messages are allowed)."""
    while True:
        m = c.recv_text()
        for f in forbidden:
            assert f not in m, f"unexpected message {m!r}"
        if text in m:
            return m


def test_chat_three_clients_sender_gets_nothing_back():
    with Server(chat_script()) as s:
        a, b, c = s.connect(), s.connect(), s.connect()
        a.send_frame(OP_TEXT, "hello from A ✓")
        recv_containing(b, "hello from A ✓")
        recv_containing(c, "hello from A ✓")
        # B speaks after it got A's message; if A had been sent its own message, that copy was
        # queued before B's and would arrive first.
        b.send_frame(OP_TEXT, b"B answers")
        recv_containing(a, "B answers", forbidden=["hello from A"])
        recv_containing(c, "B answers")
        c.send_frame(OP_TEXT, b"C says hi")
        recv_containing(a, "C says hi")
        recv_containing(b, "C says hi", forbidden=["B answers"])
        a.send_frame(OP_TEXT, b"A again")
        recv_containing(b, "A again")
        recv_containing(c, "A again", forbidden=["C says hi"])


def test_chat_client_leaving_does_not_disturb_others():
    with Server(chat_script()) as s:
        a, b, c = s.connect(), s.connect(), s.connect()
        c.close_handshake()
        a.send_frame(OP_TEXT, b"still two of us")
        recv_containing(b, "still two of us")
        b.shutdown()  # abrupt
        d = s.connect()
        a.send_frame(OP_TEXT, b"newcomer")
        recv_containing(d, "newcomer")


def test_lua_error_in_on_message_closes_1011_others_keep_chatting():
    with Server("errors.lua") as s:
        a, b, c = s.connect(), s.connect(), s.connect()
        ids = [int(m.group(1)) for m in s.wait_for_logs(r"on_open id=(\d+)", 3)]
        a.send_frame(OP_TEXT, b"boom")
        assert a.expect_close()[0] == 1011
        a.close(1011)
        a.expect_eof()

        i, m = s.wait_for_line(r"ERROR.*boom requested by (\d+)")
        assert int(m.group(1)) == ids[0]
        # The traceback follows the error.
        s.wait_for_log(r"stack traceback:", after=i)
        s.wait_for_log(rf"on_close id={ids[0]} code=1011")
        b.send_frame(OP_TEXT, b"we carry on")
        assert c.recv_text() == "we carry on"
        c.send_frame(OP_TEXT, b"indeed")
        assert b.recv_text() == "indeed"


def test_bad_argument_is_a_lua_error_not_a_crash():
    with Server("errors.lua") as s:
        a, b = s.connect(), s.connect()
        a.send_frame(OP_TEXT, b"badarg")
        assert a.expect_close()[0] == 1011
        s.wait_for_log(r"ERROR")
        c = s.connect()
        b.send_frame(OP_TEXT, b"server alive")
        assert c.recv_text() == "server alive"


def test_lua_error_in_on_open_closes_1011():
    with Server("errors.lua") as s:
        a = s.connect("/open-error")
        assert a.expect_close()[0] == 1011
        s.wait_for_log(r"ERROR.*open exploded")
        b, c = s.connect(), s.connect()
        b.send_frame(OP_TEXT, b"fine")
        assert c.recv_text() == "fine"


def test_lua_error_in_on_close_is_logged():
    with Server("errors.lua") as s:
        a = s.connect("/close-error")
        a.close_handshake()
        s.wait_for_log(r"ERROR.*close exploded")
        b, c = s.connect(), s.connect()
        b.send_frame(OP_TEXT, b"fine")
        assert c.recv_text() == "fine"


def test_on_error_handler_gets_the_error():
    with Server("onerror.lua") as s:
        a = s.connect()
        a.send_frame(OP_TEXT, b"payload-xyz")
        reply = a.recv_text()
        assert reply.startswith("handled: ")
        assert "failed on payload-xyz" in reply
        s.wait_for_log(r"on_error id=\d+ err=.*failed on payload-xyz")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_shutdown(sig):
    with Server("echo.lua") as s:
        clients = [s.connect() for _ in range(3)]
        ids = sorted(int(m.group(1)) for m in s.wait_for_logs(r"on_open id=(\d+)", 3))
        # A fragmented message in flight does not hold the shutdown up.
        clients[2].send_frame(OP_TEXT, b"half", fin=False)
        s.signal(sig)
        for c in clients:
            assert c.expect_close()[0] == 1001
        # The listener is gone once clients are told: a new client does not get in.
        with pytest.raises((OSError, EOFError, AssertionError)):
            s.connect()
        clients[0].close(1001)  # one answers; the others never do
        clients[0].expect_eof()
        assert s.wait_exit() == 0
        closed = sorted(int(m.group(1)) for m in s.find_logs(r"on_close id=(\d+) code=1001"))
        assert closed == ids
        for c in clients[1:]:
            c.expect_eof()


def test_shutdown_with_no_clients():
    with Server("echo.lua") as s:
        assert s.stop(signal.SIGTERM) == 0
