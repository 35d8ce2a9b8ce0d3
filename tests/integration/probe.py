"""Helpers for tests driving scripts/probe.lua: each text message is a Lua chunk run in the
server; the reply is "ok <results, tab-separated>" or "err <error>"."""

from wsclient import OP_TEXT


def ev(c, code):
    """Run a chunk for client c; returns the list of results (strings)."""
    c.send_frame(OP_TEXT, code)
    reply = c.recv_text()
    assert reply.startswith("ok "), f"{code!r} -> {reply!r}"
    return reply[3:].split("\t")


def ev1(c, code):
    return ev(c, code)[0]


def ev_err(c, code):
    c.send_frame(OP_TEXT, code)
    reply = c.recv_text()
    assert reply.startswith("err "), f"{code!r} should fail, got {reply!r}"
    return reply[4:]


def open_ids(server, n, after=0):
    """Ids of the next n connections probe.lua saw open (from its on_open log lines)."""
    return [int(m.group(1)) for m in server.wait_for_logs(r"on_open id=(\d+)", n, after=after)]
