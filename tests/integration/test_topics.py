"""Rooms kept in C: subscribe/unsubscribe/topics, ws.publish with except and its count,
ws.subscribers, subscriptions ending with the connection, and bad topics as Lua errors."""

import pytest

from harness import Server
from probe import ev, ev1, ev_err, open_ids
from wsclient import OP_BINARY, OP_TEXT


@pytest.fixture
def server():
    with Server("probe.lua") as s:
        yield s


def nothing_pending(c):
    """Prove c got nothing so far: its next message is the answer to a chunk sent now (anything
    queued for it earlier would arrive first)."""
    assert ev1(c, "return 'sync'") == "sync"


def test_publish_reaches_exactly_subscribers_minus_except(server):
    a, b, c, d = (server.connect() for _ in range(4))
    for x in (a, b, c):
        ev(x, "conn:subscribe('room') return true")
    ev(d, "conn:subscribe('other') return true")
    assert ev1(d, "return ws.subscribers('room')") == "3"
    # c publishes, excluding itself: its reply comes first, so it got no copy.
    assert ev1(c, "return ws.publish('room', 'hello room', 'text', conn)") == "2"
    assert a.recv_message() == (OP_TEXT, b"hello room")
    assert b.recv_message() == (OP_TEXT, b"hello room")
    nothing_pending(d)
    nothing_pending(c)
    # Without except, every subscriber including the publisher.
    assert ev1(d, "return ws.publish('room', 'to all three')") == "3"
    for x in (a, b, c):
        assert x.recv_message() == (OP_TEXT, b"to all three")
    nothing_pending(d)


def test_publish_binary(server):
    a, b = server.connect(), server.connect()
    ev(a, "conn:subscribe('bin') return true")
    assert ev1(b, "return ws.publish('bin', '\\0\\255', 'binary')") == "1"
    assert a.recv_message() == (OP_BINARY, b"\x00\xff")


def test_publish_to_unknown_topic_returns_zero(server):
    a = server.connect()
    assert ev(a, "return ws.publish('nobody-here', 'x'), ws.subscribers('nobody-here')") \
        == ["0", "0"]


def test_subscribe_twice_counts_once(server):
    a = server.connect()
    ev(a, "conn:subscribe('t') conn:subscribe('t') return true")
    assert ev1(a, "return ws.subscribers('t')") == "1"
    a.send_frame(OP_TEXT, "return ws.publish('t', 'once')")
    assert a.recv_message() == (OP_TEXT, b"once")
    assert a.recv_text() == "ok 1"
    nothing_pending(a)


def test_topics_list(server):
    a = server.connect()
    assert ev1(a, "return #conn:topics()") == "0"
    ev(a, "conn:subscribe('alpha') conn:subscribe('beta') conn:subscribe('gamma') return true")
    got = ev1(a, "local t = conn:topics() table.sort(t) return table.concat(t, ',')")
    assert got == "alpha,beta,gamma"
    ev(a, "conn:unsubscribe('beta') return true")
    got = ev1(a, "local t = conn:topics() table.sort(t) return table.concat(t, ',')")
    assert got == "alpha,gamma"


def test_unsubscribe_ends_delivery(server):
    a, b = server.connect(), server.connect()
    for x in (a, b):
        ev(x, "conn:subscribe('news') return true")
    ev(b, "conn:unsubscribe('news') return true")
    assert ev1(a, "return ws.subscribers('news')") == "1"
    a.send_frame(OP_TEXT, "return ws.publish('news', 'only a')")
    assert a.recv_message() == (OP_TEXT, b"only a")
    assert a.recv_text() == "ok 1"
    nothing_pending(b)
    # Unsubscribing from a topic one is not in is harmless.
    assert ev1(b, "conn:unsubscribe('never-joined') return 'fine'") == "fine"


def test_close_ends_delivery(server):
    a, b, c = server.connect(), server.connect(), server.connect()
    ids = open_ids(server, 3)
    for x in (a, b, c):
        ev(x, "conn:subscribe('r1') conn:subscribe('r2') return true")
    b.close_handshake()
    server.wait_for_log(rf"on_close id={ids[1]} ")
    # Once on_close has run, the connection is out of every topic.
    assert ev(a, "return ws.subscribers('r1'), ws.subscribers('r2')") == ["2", "2"]
    a.send_frame(OP_TEXT, "return ws.publish('r1', 'two of us')")
    assert a.recv_message() == (OP_TEXT, b"two of us")
    assert a.recv_text() == "ok 2"
    assert c.recv_message() == (OP_TEXT, b"two of us")
    c.shutdown()  # an abnormal end ends subscriptions too
    server.wait_for_log(rf"on_close id={ids[2]} ")
    assert ev(a, "return ws.subscribers('r1'), ws.subscribers('r2')") == ["1", "1"]
    a.send_frame(OP_TEXT, "return ws.publish('r1', 'alone')")
    assert a.recv_message() == (OP_TEXT, b"alone")
    assert a.recv_text() == "ok 1"


def test_subscribe_on_closed_conn_is_harmless(server):
    a, b = server.connect(), server.connect()
    ids = open_ids(server, 2)
    ev(b, "S.saved = conn return true")
    b.close_handshake()
    server.wait_for_log(rf"on_close id={ids[1]} ")
    # Methods of a closed conn fail softly (no error) and subscribe nothing.
    assert ev(a, "S.saved:subscribe('late') S.saved:unsubscribe('late') "
                 "S.saved:subscribe('late') return ws.subscribers('late'), "
                 "#S.saved:topics()") == ["0", "0"]


@pytest.mark.parametrize("call", [
    "conn:subscribe('')", "conn:subscribe({})", "conn:subscribe(nil)", "conn:subscribe()",
    "conn:subscribe(42)", "conn:unsubscribe('')", "conn:unsubscribe(true)",
    "ws.publish('', 'x')", "ws.publish({}, 'x')", "ws.publish(nil, 'x')",
    "ws.subscribers('')", "ws.subscribers({})",
])
def test_bad_topic_is_a_lua_error(server, call):
    a = server.connect()
    err = ev_err(a, f"return {call}").lower()
    if "''" in call:
        assert "topic" in err or "empty" in err, err
    else:
        assert "topic" in err or "string expected" in err, err
    assert ev1(a, "return #conn:topics()") == "0"


def test_publish_invalid_utf8_text_raises(server):
    a = server.connect()
    ev(a, "conn:subscribe('u') return true")
    assert "binary" in ev_err(a, "return ws.publish('u', '\\255')")
