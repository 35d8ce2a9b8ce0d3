"""A wsluad cluster over a real Redis (issue 10): nodes on different ports (and --workers) share
topics, broadcast and private messages through Redis PUB/SUB; scripts run Redis commands with
ws.redis and straight-line code with ws.spawn / ws.sleep; Redis going away (killed mid-run, or
absent at start) leaves local rooms working and cross-node delivery comes back by itself.

Every test starts its own redis-server (redisutil.py, always stopped) and its own nodes running
scripts/cluster.lua: a connection is greeted with its id, node number and pid, then every text
message is a Lua chunk answered "ok ..." / "err ..." (see that script).

Synchronisation, never a fixed sleep:
- a node's link is up when it logs "redis: link up";
- a node has subscribed a topic when Redis says so (PUBSUB NUMSUB);
- "nothing else arrived" is proved with a fence: once Redis has run the PUBLISH commands the
  nodes sent (INFO commandstats), the test PUBLISHes a fence itself. Redis hands messages to a
  subscriber connection in the order it ran them, so anything a node wrongly delivered (its own
  message coming back, an excluded sender) would reach the client before the fence."""

import collections
import contextlib
import json
import os
import re
import signal
import time

import pytest

from harness import DEFAULT_TIMEOUT, Server, free_port, source_dir, wait_until
from redisutil import RedisServer
from test_workers import STARTED, no_stray_workers, ppid  # noqa: F401 (a fixture)
from wsclient import OP_BINARY, OP_TEXT

LINK_UP = r"redis: link up to "
SCRIPT = "cluster.lua"
ID_SEQ_BITS = 37  # cluster_proto.h: an id is node << 37 | a per-node counter


# ---- helpers: nodes, clients, Redis --------------------------------------------------------------

def start_node(stack, redis_url, *args, prefix=None, wait_up=True):
    """A node (cluster.lua, --redis) owned by the ExitStack; once its link is up, unless not
    wait_up."""
    argv = ["--redis", redis_url]
    if prefix is not None:
        argv += ["--redis-prefix", prefix]
    s = stack.enter_context(Server(SCRIPT, *argv, *args))
    if wait_up:
        s.wait_for_log(LINK_UP)
    return s


def start_nodes(stack, redis, n, *args, prefix=None):
    return [start_node(stack, redis.url, *args, prefix=prefix) for _ in range(n)]


class ProbeError(str):
    """An "err ..." answer to a chunk."""


class Client:
    """A connection to cluster.lua. Messages that are not the answer to a chunk (published,
    broadcast, sent by callbacks) are kept in order in an inbox, read with recv()."""

    def __init__(self, server, path="/"):
        self.server = server
        self.ws = server.connect(path)
        greeting = self.ws.recv_text()
        m = re.fullmatch(r"hello id=(\d+) node=(\d+) pid=(\d+)", greeting)
        assert m, f"unexpected greeting {greeting!r}"
        self.id, self.node, self.pid = map(int, m.groups())
        self.inbox = collections.deque()

    def send_chunk(self, code):
        self.ws.send_text(code)

    def answer(self, timeout=DEFAULT_TIMEOUT):
        """The answer to the last chunk: a list of results, or a ProbeError."""
        deadline = time.monotonic() + timeout
        while True:
            op, data = self.ws.recv_message(max(0.0, deadline - time.monotonic()))
            if op == OP_TEXT and data.startswith(b"ok "):
                return data[3:].decode().split("\t")
            if op == OP_TEXT and data.startswith(b"err "):
                return ProbeError(data[4:].decode())
            self.inbox.append((op, data))

    def ev(self, code):
        self.send_chunk(code)
        r = self.answer()
        assert not isinstance(r, ProbeError), f"{code!r} -> err {r}"
        return r

    def ev1(self, code):
        return self.ev(code)[0]

    def ev_err(self, code):
        self.send_chunk(code)
        r = self.answer()
        assert isinstance(r, ProbeError), f"{code!r} should fail, got {r!r}"
        return str(r)

    def recv(self, timeout=DEFAULT_TIMEOUT):
        """The next message that is not an answer: (opcode, bytes)."""
        if self.inbox:
            return self.inbox.popleft()
        op, data = self.ws.recv_message(timeout)
        assert not (op == OP_TEXT and re.match(rb"(ok|err) ", data)), \
            f"an answer nobody asked for: {data[:200]!r}"
        return op, data

    def recv_text(self, timeout=DEFAULT_TIMEOUT):
        op, data = self.recv(timeout)
        assert op == OP_TEXT, f"expected text, got opcode {op}: {data[:200]!r}"
        return data.decode()

    def subscribe(self, topic):
        assert self.ev1(f"return conn:subscribe({topic!r})") == "true"


def publish_calls(redis):
    """PUBLISH commands Redis has run since it started."""
    info = redis.command("INFO", "commandstats").decode()
    m = re.search(r"^cmdstat_publish:calls=(\d+)", info, re.M)
    return int(m.group(1)) if m else 0


def numsub(redis, channel):
    return redis.command("PUBSUB", "NUMSUB", channel)[1]


def channels(redis, pattern="*"):
    return sorted(c.decode(errors="replace")
                  for c in redis.command("PUBSUB", "CHANNELS", pattern))


def wait_numsub(redis, channel, n):
    """Until exactly n connections (one per node) subscribe channel."""
    wait_until(lambda: numsub(redis, channel) == n, f"{n} subscribers of {channel}")


def fence(redis, channel, clients, after_calls, payload="m:fence"):
    """Once Redis has run after_calls PUBLISH commands, publish payload on channel ourselves:
    it must be the next message of each client, so nothing else is on its way to them."""
    wait_until(lambda: publish_calls(redis) >= after_calls, f"{after_calls} PUBLISH commands run")
    redis.command("PUBLISH", channel, payload)
    for c in clients:
        assert c.recv_text() == payload, f"conn {c.id} got something before the fence"


def connected(nodes, per_node=1):
    """per_node clients on each node: [[clients of node 0], [of node 1], ...]."""
    return [[Client(s) for _ in range(per_node)] for s in nodes]


# ---- topics and broadcast across nodes ---------------------------------------------------------

@pytest.mark.parametrize("n", [2, 3])
def test_nodes_share_topics_and_broadcast(n, redis_server):
    r = redis_server
    with contextlib.ExitStack() as stack:
        nodes = start_nodes(stack, r, n)
        ports = {s.port for s in nodes}
        assert len(ports) == n
        # On each node: two subscribers of "room" and one connection in no topic.
        subs = connected(nodes, 2)
        lobby = [Client(s) for s in nodes]
        assert len({c.node for c in lobby}) == n, "two nodes have the same number"
        for group in subs:
            for c in group:
                c.subscribe("room")
        wait_numsub(r, "wsluad:topic:room", n)  # one subscription per node, not per client
        calls = publish_calls(r)

        # The first subscriber of each node publishes once; every subscriber of every node gets
        # each message once. ws.publish counts the local subscribers it reached.
        for i, group in enumerate(subs):
            assert group[0].ev1(f"return ws.publish('room', 'm:from-{i}')") == "2"
        want = sorted(f"m:from-{i}" for i in range(n))
        for group in subs:
            for c in group:
                assert sorted(c.recv_text() for _ in range(n)) == want

        # A broadcast from node 0 reaches every connection of every node, topics or not. The
        # connections in no topic get it first: no topic message reached them (their node had
        # all of them before this broadcast, as Redis ran the PUBLISHes before it).
        wait_until(lambda: publish_calls(r) >= calls + n, "the topic PUBLISHes run")
        assert lobby[0].ev1("return ws.broadcast('m:everyone')") == "3"  # all of node 0
        for c in lobby + [c for g in subs for c in g]:
            assert c.recv_text() == "m:everyone"
        fence(r, "wsluad:broadcast", lobby + [c for g in subs for c in g], calls + n + 1)


def test_sender_exclusion_across_nodes(redis_server):
    r = redis_server
    with contextlib.ExitStack() as stack:
        a, b = start_nodes(stack, r, 2)
        x, x2 = Client(a), Client(a)
        y = Client(b)
        for c in (x, x2, y):
            c.subscribe("room")
        wait_numsub(r, "wsluad:topic:room", 2)
        calls = publish_calls(r)
        # except = the sender: everyone but it, here and on the other node.
        assert x.ev1("return ws.publish('room', 'm:not-me', 'text', conn)") == "1"
        assert x2.recv_text() == "m:not-me"
        assert y.recv_text() == "m:not-me"
        assert x.ev1("return ws.broadcast('m:all-but-me', 'text', conn)") == "1"
        assert x2.recv_text() == "m:all-but-me"
        assert y.recv_text() == "m:all-but-me"
        # except = another local connection, from the other node's side: y excludes itself.
        assert y.ev1("return ws.publish('room', 'm:from-y', 'binary', conn)") == "0"
        assert x.recv() == (OP_BINARY, b"m:from-y")
        assert x2.recv() == (OP_BINARY, b"m:from-y")
        # Nothing else is coming: not to the senders, not twice to anyone.
        fence(r, "wsluad:topic:room", [x, x2, y], calls + 3)


def test_send_to_a_connection_on_another_node(redis_server):
    r = redis_server
    with contextlib.ExitStack() as stack:
        a, b = start_nodes(stack, r, 2)
        x, x2 = Client(a), Client(a)
        y = Client(b)
        assert x.node != y.node
        # To the other node: true once handed to Redis, and it arrives, text or binary.
        assert x.ev1(f"return ws.send({y.id}, 'm:private')") == "true"
        assert y.recv_text() == "m:private"
        assert x.ev1(f"return ws.send({y.id}, '\\1\\2\\255', 'binary')") == "true"
        assert y.recv() == (OP_BINARY, b"\x01\x02\xff")
        assert y.ev1(f"return ws.send({x.id}, 'm:back')") == "true"
        assert x.recv_text() == "m:back"
        # To a local connection: at once.
        assert x.ev1(f"return ws.send({x2.id}, 'm:local')") == "true"
        assert x2.recv_text() == "m:local"
        # To a local id that is not open (closed, or never used): nil, "closed", "ECLOSED".
        gone = x2.id
        x2.ws.close_handshake()
        a.wait_for_log(rf"on_close id={gone} ")
        assert x.ev(f"return ws.send({gone}, 'm:nobody')") == ["nil", "closed", "ECLOSED"]
        assert x.ev(f"return ws.send({x.id + 1000}, 'm:nobody')") == ["nil", "closed", "ECLOSED"]
        # An id of the other node that is not open: handed to Redis (true); nobody gets it.
        calls = publish_calls(r)
        assert x.ev1(f"return ws.send({y.id + 1000}, 'm:nobody')") == "true"
        fence(r, "wsluad:broadcast", [x, y], calls + 1)


def test_publish_order_from_one_sender(redis_server):
    r = redis_server
    count = 2000
    with contextlib.ExitStack() as stack:
        a, b = start_nodes(stack, r, 2)
        x, y = Client(a), Client(b)
        y.subscribe("room")
        wait_numsub(r, "wsluad:topic:room", 1)
        # Half in one handler call, half one message per call: both arrive in order.
        assert x.ev1(f"for i = 1, {count // 2} do ws.publish('room', 'm:' .. i) end "
                     "return 'sent'") == "sent"
        for i in range(count // 2 + 1, count + 1):
            x.send_chunk(f"ws.publish('room', 'm:{i}')")
        for i in range(count // 2 + 1, count + 1):
            assert x.answer() == [""]
        got = [y.recv_text() for _ in range(count)]
        assert got == [f"m:{i}" for i in range(1, count + 1)]


# ---- what else publishes: backends, other clusters ---------------------------------------------

def test_external_publish_reaches_clients(redis_server):
    r = redis_server
    with contextlib.ExitStack() as stack:
        a, b = start_nodes(stack, r, 2)
        x, y = Client(a), Client(b)
        z = Client(b)  # in no topic
        x.subscribe("news")
        y.subscribe("news")
        wait_numsub(r, "wsluad:topic:news", 2)
        # A backend's PUBLISH into a room: one Redis subscriber per node, every client gets it.
        assert r.command("PUBLISH", "wsluad:topic:news", "hello") == 2
        assert x.recv() == (OP_TEXT, b"hello")
        assert y.recv() == (OP_TEXT, b"hello")
        assert r.command("PUBLISH", "wsluad:topic:news", "h\u00e9llo \u2603".encode()) == 2
        assert x.recv_text() == "h\u00e9llo \u2603"
        assert y.recv_text() == "h\u00e9llo \u2603"
        # Not UTF-8: binary. Empty: an empty text message.
        assert r.command("PUBLISH", "wsluad:topic:news", b"\xff\x00\xfe") == 2
        assert x.recv() == (OP_BINARY, b"\xff\x00\xfe")
        assert y.recv() == (OP_BINARY, b"\xff\x00\xfe")
        r.command("PUBLISH", "wsluad:topic:news", b"")
        assert x.recv() == (OP_TEXT, b"")
        assert y.recv() == (OP_TEXT, b"")
        # Everyone, rooms or not.
        assert r.command("PUBLISH", "wsluad:broadcast", "to all") == 2
        for c in (x, y, z):
            assert c.recv() == (OP_TEXT, b"to all")
        assert r.command("PUBLISH", "wsluad:broadcast", b"\x80") == 2
        for c in (x, y, z):
            assert c.recv() == (OP_BINARY, b"\x80")
        # Nobody on this topic: no node subscribes it, nothing arrives.
        assert r.command("PUBLISH", "wsluad:topic:other", "lost") == 0
        # A message on a channel of another prefix is not ours.
        r.command("PUBLISH", "other:topic:news", "not for us")
        r.command("PUBLISH", "wsluad:broadcast", "m:fence")
        for c in (x, y, z):
            assert c.recv_text() == "m:fence"


def test_redis_prefix_isolates_two_clusters(redis_server):
    r = redis_server
    with contextlib.ExitStack() as stack:
        a1, a2 = start_nodes(stack, r, 2, prefix="one")
        (b1,) = start_nodes(stack, r, 1, prefix="two")
        xa1, xa2, xb1 = Client(a1), Client(a2), Client(b1)
        for c in (xa1, xa2, xb1):
            c.subscribe("room")
        wait_numsub(r, "one:topic:room", 2)
        wait_numsub(r, "two:topic:room", 1)
        assert channels(r, "wsluad:*") == []
        assert numsub(r, "one:broadcast") == 2
        assert numsub(r, "two:broadcast") == 1
        calls = publish_calls(r)
        assert xa1.ev1("return ws.publish('room', 'm:one')") == "1"
        assert xa1.ev1("return ws.broadcast('m:one-all')") == "1"
        assert xa2.recv_text() == "m:one"
        assert xa2.recv_text() == "m:one-all"
        assert xb1.ev1("return ws.publish('room', 'm:two')") == "1"
        assert xb1.recv_text() == "m:two"
        assert xb1.ev1(f"return ws.send({xa2.id}, 'm:cross')") == "true"  # no such node in two
        assert xa1.recv_text() == "m:one"  # its own, at once
        assert xa1.recv_text() == "m:one-all"
        fence(r, "one:broadcast", [xa1, xa2], calls + 4, "m:fence-one")
        fence(r, "two:broadcast", [xb1], calls + 5, "m:fence-two")
        # The node numbers are claimed under each prefix.
        wait_until(lambda: r.command("EXISTS", f"one:node:{xa1.node}",
                                     f"one:node:{xa2.node}", f"two:node:{xb1.node}") == 3,
                   "the node numbers claimed")


def test_cluster_chat_keys_follow_the_redis_prefix(redis_server):
    """examples/cluster-chat.lua on two clusters sharing one Redis under two prefixes: neither
    sees the other's members (nor loses a nickname to them) nor its history."""
    r = redis_server
    script = os.path.join(source_dir(), "examples", "cluster-chat.lua")
    with contextlib.ExitStack() as stack:
        alpha, beta = (stack.enter_context(Server(script, "--redis", r.url, "--redis-prefix", p))
                       for p in ("alpha", "beta"))
        for s in (alpha, beta):
            s.wait_for_log(LINK_UP)
        ann = alpha.connect("/room/lobby?nick=ann")
        assert json.loads(ann.recv_text())["members"] == ["ann"]
        ann.send_text("said in alpha")
        wait_until(lambda: r.command("LLEN", "alpha:chat:history:lobby") == 1,
                   "alpha's history under alpha:")
        other = beta.connect("/room/lobby?nick=ann")
        welcome = json.loads(other.recv_text())
        assert welcome["you"] == "ann" and welcome["members"] == ["ann"], welcome
        assert welcome["text"] == "you joined lobby as ann; here: ann", welcome
        assert r.command("ZRANGE", "beta:chat:members:lobby", 0, -1) == [b"ann"]
        assert r.command("KEYS", "chat:*") == []


def test_cluster_chat_never_gives_a_local_members_name_twice(redis_server):
    """Redis loses the member set (restarted without its data, here DEL): until the node's
    next refresh puts its members back, a join on that node must still not get the name of
    one of them, which would take her place in the room and leave her orphaned."""
    r = redis_server
    script = os.path.join(source_dir(), "examples", "cluster-chat.lua")
    with Server(script, "--redis", r.url) as s:  # refreshes every 10 s: not within the test
        s.wait_for_log(LINK_UP)
        ann = s.connect("/room/lobby?nick=ann")
        assert json.loads(ann.recv_text())["you"] == "ann"
        assert r.command("DEL", "wsluad:chat:members:lobby") == 1
        other = s.connect("/room/lobby?nick=ann")
        welcome = json.loads(other.recv_text())
        assert welcome["you"] == "ann2" and welcome["members"] == ["ann", "ann2"], welcome
        assert json.loads(ann.recv_text()) == {"type": "join", "from": "ann2",
                                               "text": "ann2 joined"}


def test_topic_names_of_any_bytes(redis_server):
    r = redis_server
    names = ["a b:c", "topic:x", "\u00e9t\u00e9", "x" * 1000]
    with contextlib.ExitStack() as stack:
        a, b = start_nodes(stack, r, 2)
        x, y = Client(a), Client(b)
        for n in names:
            y.subscribe(n)
        # Not UTF-8, a zero byte: Lua strings and Redis channels hold any bytes.
        assert y.ev1("return conn:subscribe('\\0\\255')") == "true"
        wait_until(lambda: len(channels(r, "wsluad:topic:*")) == len(names) + 1,
                   "every topic subscribed")
        want = sorted(["wsluad:topic:" + n for n in names])
        assert [c for c in channels(r, "wsluad:topic:*") if "\ufffd" not in c] == want
        assert numsub(r, b"wsluad:topic:\x00\xff") == 1
        for i, n in enumerate(names):
            x.ev(f"ws.publish({n!r}, 'm:{i}')")
            assert y.recv_text() == f"m:{i}"
        x.ev("ws.publish('\\0\\255', 'm:bytes')")
        assert y.recv_text() == "m:bytes"
        assert r.command("PUBLISH", b"wsluad:topic:\x00\xff", "m:external") == 1
        assert y.recv_text() == "m:external"


def test_unix_socket_and_database(redis_server):
    """One node reaches Redis over its Unix socket, the other over TCP with a database number
    in the URL: they share rooms (PUB/SUB ignores databases) while ws.redis works in the
    database the URL names."""
    r = redis_server
    with contextlib.ExitStack() as stack:
        a = start_node(stack, r.unix_url)
        b = start_node(stack, r.url + "/3")
        x, y = Client(a), Client(b)
        x.subscribe("room")
        y.subscribe("room")
        wait_numsub(r, "wsluad:topic:room", 2)
        x.ev("ws.publish('room', 'm:over-unix', 'text', conn)")
        assert y.recv_text() == "m:over-unix"
        y.ev("ws.publish('room', 'm:over-tcp', 'text', conn)")
        assert x.recv_text() == "m:over-tcp"
        y.ev("ws.spawn(function() conn:send('m:' .. shows(ws.redis({'SET', 'where', 'db3'}))) end)")
        assert y.recv_text() == 'm:"OK" nil'
        x.ev("ws.spawn(function() conn:send('m:' .. shows(ws.redis({'GET', 'where'}))) end)")
        assert x.recv_text() == "m:nil nil"  # db 0
        assert r.command("EVAL", "redis.call('SELECT', 3) return redis.call('GET', KEYS[1])",
                         1, "where") == b"db3"
        # The node number keys live in that database too.
        wait_until(lambda: r.command("EVAL", "redis.call('SELECT', 3) return "
                                     "redis.call('EXISTS', KEYS[1])", 1,
                                     f"wsluad:node:{y.node}") == 1, "the node number claimed")


# ---- what a node asks of Redis ----------------------------------------------------------------

def test_one_redis_publish_per_publish(redis_server):
    r = redis_server
    per_node = 20
    with contextlib.ExitStack() as stack:
        a, b = start_nodes(stack, r, 2)
        xs, ys = [Client(a) for _ in range(per_node)], [Client(b) for _ in range(per_node)]
        for c in xs + ys:
            c.subscribe("room")
        wait_numsub(r, "wsluad:topic:room", 2)  # one subscription per node
        before = publish_calls(r)
        assert xs[0].ev1("for i = 1, 10 do ws.publish('room', 'm:' .. i) end "
                         "return ws.broadcast('m:b')") == str(per_node)
        for c in xs + ys:
            assert [c.recv_text() for _ in range(11)] == [f"m:{i}" for i in range(1, 11)] + ["m:b"]
        # Every client on b has everything: Redis ran the node's PUBLISHes, 11 of them.
        assert publish_calls(r) == before + 11


def test_topic_channel_subscribed_only_while_local_subscribers(redis_server):
    r = redis_server
    with contextlib.ExitStack() as stack:
        (a,) = start_nodes(stack, r, 1)
        x, x2 = Client(a), Client(a)
        assert channels(r, "wsluad:topic:*") == []
        x.subscribe("t1")
        wait_until(lambda: channels(r, "wsluad:topic:*") == ["wsluad:topic:t1"], "t1 subscribed")
        x2.subscribe("t1")
        x2.subscribe("t2")
        wait_until(lambda: channels(r, "wsluad:topic:*") == ["wsluad:topic:t1", "wsluad:topic:t2"],
                   "t2 subscribed")
        assert numsub(r, "wsluad:topic:t1") == 1
        # The first subscriber leaves t1: x2 is still there.
        assert x.ev1("return conn:unsubscribe('t1')") == "true"
        assert x.ev1("return conn:unsubscribe('t1')") == "false"
        assert x.ev1("return ws.subscribers('t1')") == "1"
        # The last subscriber of t2 leaves it: unsubscribed (proved by a later change landing).
        assert x2.ev1("return conn:unsubscribe('t2')") == "true"
        x.subscribe("t3")
        wait_until(lambda: channels(r, "wsluad:topic:*") == ["wsluad:topic:t1", "wsluad:topic:t3"],
                   "t2 unsubscribed, t3 subscribed")
        # Closing is leaving: x2 was the last in t1, x the last in t3.
        x2.ws.close_handshake()
        wait_until(lambda: channels(r, "wsluad:topic:*") == ["wsluad:topic:t3"], "t1 unsubscribed")
        x.ws.shutdown()  # not even a close frame
        wait_until(lambda: channels(r, "wsluad:topic:*") == [], "t3 unsubscribed")
        # The node's own channels stay: broadcast and its node channel.
        y = Client(a)
        assert channels(r) == sorted(["wsluad:broadcast", f"wsluad:node:{y.node}"])
        # The last subscriber leaves and comes back at once (UNSUBSCRIBE and SUBSCRIBE on
        # their way together): still subscribed, and messages still arrive.
        y.subscribe("t4")
        wait_until(lambda: channels(r, "wsluad:topic:*") == ["wsluad:topic:t4"], "t4 subscribed")
        assert y.ev("return conn:unsubscribe('t4'), conn:subscribe('t4')") == ["true", "true"]
        y.ev("conn:unsubscribe('t4') conn:subscribe('t4') conn:unsubscribe('t4') "
             "conn:subscribe('t4')")
        y.ev("conn:subscribe('t5') conn:unsubscribe('t5')")
        wait_until(lambda: r.command("PUBLISH", "wsluad:topic:t4", "m:still") == 1,
                   "t4 subscribed again")
        assert y.recv_text() == "m:still"
        assert channels(r, "wsluad:topic:*") == ["wsluad:topic:t4"]


def test_a_node_never_delivers_its_own_message_twice(redis_server):
    r = redis_server
    with contextlib.ExitStack() as stack:
        a, b = start_nodes(stack, r, 2)
        x, x2 = Client(a), Client(a)
        y = Client(b)
        for c in (x, x2, y):
            c.subscribe("room")
        wait_numsub(r, "wsluad:topic:room", 2)
        calls = publish_calls(r)
        assert x.ev1("ws.publish('room', 'm:1') ws.broadcast('m:2') "
                     f"ws.send({x2.id}, 'm:3') return ws.publish('room', 'm:4', 'binary')") == "2"
        for c in (x, x2):  # at once, from the node itself
            got = [c.recv() for _ in range(3 if c is x else 4)]
            want = [(OP_TEXT, b"m:1"), (OP_TEXT, b"m:2"), (OP_BINARY, b"m:4")]
            if c is x2:
                want.insert(2, (OP_TEXT, b"m:3"))
            assert got == want
        assert [y.recv() for _ in range(3)] == [(OP_TEXT, b"m:1"), (OP_TEXT, b"m:2"),
                                                (OP_BINARY, b"m:4")]
        # Redis sends a's three messages back to a, which skips them: the fence comes next.
        fence(r, "wsluad:topic:room", [x, x2, y], calls + 3)


def test_ids_are_unique_across_nodes_and_carry_the_node(redis_server):
    r = redis_server
    with contextlib.ExitStack() as stack:
        nodes = start_nodes(stack, r, 3)
        clients = [c for group in connected(nodes, 5) for c in group]
        ids = [c.id for c in clients]
        assert len(set(ids)) == len(ids)
        for c in clients:
            assert 0 < c.id < 2 ** 53
            assert c.id >> ID_SEQ_BITS == c.node
            assert 1 <= c.node <= 65535
            assert c.ev(f"return math.type(conn.id), conn.id == {c.id}, math.type(ws.node), "
                        "ws.node") == ["integer", "true", "integer", str(c.node)]
            # Each node holds its number in Redis (claimed once its link is up).
            wait_until(lambda: r.command("EXISTS", f"wsluad:node:{c.node}") == 1,
                       f"node {c.node} claimed")
        assert len({c.node for c in clients}) == 3
        # An id survives the trip through JSON / JavaScript numbers: a float holds it exactly.
        assert clients[0].ev1(f"return math.tointeger({ids[-1]}.0) == {ids[-1]}") == "true"


# ---- ws.redis ------------------------------------------------------------------------------------

# (command as Lua, the reply and error as show() renders them)
REPLIES = [
    ('{"SET", K .. "s", "v\\0w"}', '"OK" nil'),  # status
    ('{"GET", K .. "s"}', '"v\\0w" nil'),  # bulk string, binary-safe
    ('{"INCR", K .. "n"}', "i1 nil"),  # integer
    ('{"INCRBY", K .. "n", 41}', "i42 nil"),  # a number argument
    ('{"GET", K .. "missing"}', "nil nil"),  # nil
    ('{"MGET", K .. "s", K .. "missing", K .. "n"}', '{"v\\0w",false,"42"} nil'),  # nil inside
    ('{"LRANGE", K .. "missing", 0, -1}', "{} nil"),  # empty array
    ('{"BLPOP", K .. "missing", "0.01"}', "nil nil"),  # nil array
    ('{"PING"}', '"PONG" nil'),
    ('{"INCR", K .. "s"}', 'nil "ERR value is not an integer or out of range"'),  # error
    ('{"LPUSH", K .. "s", "x"}',
     'nil "WRONGTYPE Operation against a key holding the wrong kind of value"'),
    ('{"NOSUCHCOMMAND"}', None),  # an error reply from Redis (its text varies by version)
    ('{"EVAL", "return {1, {2, \'x\', {3, {}}}, redis.status_reply(\'FINE\'), false, '
     'redis.error_reply(\'ERR boom\'), \'z\'}", 0}',
     '{i1,{i2,"x",{i3,{}}},"FINE",false,{err="ERR boom"},"z"} nil'),  # nested, error inside
    ('{"HSET", K .. "h", "f", "1"}', "i1 nil"),
    ('{"HGETALL", K .. "h"}', '{"f","1"} nil'),
]


@pytest.mark.parametrize("how", ["callback", "spawn"])
def test_ws_redis_replies(how, redis_server):
    with contextlib.ExitStack() as stack:
        (a,) = start_nodes(stack, redis_server, 1)
        x = Client(a)
        x.ev(f"S.K = '{how}:'")
        for cmd, want in REPLIES:
            if how == "callback":
                # ws.redis returns true; the callback runs later with reply, err.
                assert x.ev1(f"local K = S.K return ws.redis({cmd}, function(r, e) "
                             "conn:send('reply ' .. shows(r, e)) end)") == "true"
                assert not x.inbox  # not before the handler that asked has returned
            else:
                # Inside ws.spawn it waits and returns reply, err.
                assert x.ev1(f"local K = S.K ws.spawn(function() "
                             f"conn:send('reply ' .. shows(ws.redis({cmd}))) end) "
                             "return 'spawned'") == "spawned"
            got = x.recv_text()
            if want is None:
                assert re.fullmatch(r'reply nil "ERR unknown command .*"', got), got
            else:
                assert got == "reply " + want, cmd
        assert redis_server.command("GET", f"{how}:s") == b"v\x00w"


def test_ws_redis_fire_and_forget(redis_server):
    r = redis_server
    with contextlib.ExitStack() as stack:
        (a,) = start_nodes(stack, r, 1)
        x = Client(a)
        # Outside ws.spawn without a callback: true now, the reply is dropped.
        assert x.ev1('return ws.redis({"RPUSH", "list", "a"})') == "true"
        assert x.ev1('return ws.redis({"RPUSH", "list", "b"})') == "true"
        wait_until(lambda: r.command("LRANGE", "list", 0, -1) == [b"a", b"b"], "both pushed")
        # ... and an error reply is logged.
        mark = a.mark()
        assert x.ev1('return ws.redis({"INCR", "list"})') == "true"
        a.wait_for_log(r"WARN .*ws\.redis: WRONGTYPE .*\(the command had no callback\)",
                       after=mark)
        # Inside ws.spawn, a callback still means "do not wait".
        assert x.ev('ws.spawn(function() S.r = ws.redis({"PING"}, function(r) '
                    'conn:send("cb " .. r) end) S.after = true end) '
                    "return S.r, S.after") == ["true", "true"]
        assert x.recv_text() == "cb PONG"
        # Not in a coroutine of the script's own, where `true` would pass for the reply: no
        # reply could come back to it, in a handler or in a function run by ws.spawn.
        own = ("cannot wait in a coroutine of the script's own (only the function ws.spawn "
               "runs waits); give a callback instead")
        assert own in x.ev_err('coroutine.wrap(function() ws.redis({"RPUSH", "list", "x"}) '
                               'end)()')
        x.ev('ws.spawn(function() local ok, e = pcall(coroutine.wrap(function() '
             'return ws.redis({"RPUSH", "list", "y"}) end)) conn:send("m:" .. shows(ok, e)) end)')
        assert re.fullmatch(r'm:false ".*' + re.escape(own) + '"', x.recv_text())
        # ... where a callback still works.
        x.ev('coroutine.wrap(function() ws.redis({"RPUSH", "list", "z"}, function(n) '
             'conn:send("m:" .. shows(n)) end) end)()')
        assert x.recv_text() == "m:i3"
        assert r.command("LRANGE", "list", 0, -1) == [b"a", b"b", b"z"]


def test_ws_redis_refuses_bad_and_forbidden_commands(redis_server):
    with contextlib.ExitStack() as stack:
        (a,) = start_nodes(stack, redis_server, 1)
        x = Client(a)
        for cmd in ('{"SUBSCRIBE", "x"}', '{"subscribe", "x"}', '{"PSUBSCRIBE", "*"}',
                    '{"UNSUBSCRIBE"}', '{"SSUBSCRIBE", "x"}'):
            assert "wsluad manages the subscriptions" in x.ev_err(f"ws.redis({cmd})")
            assert "wsluad manages the subscriptions" in \
                x.ev_err(f"ws.redis({cmd}, function() end)")
        for cmd in ('{"MONITOR"}', '{"QUIT"}', '{"RESET"}', '{"HELLO", "3"}',
                    '{"CLIENT", "REPLY", "OFF"}'):
            assert "would break the shared command connection" in x.ev_err(f"ws.redis({cmd})")
        assert "/DB in the --redis URL" in x.ev_err('ws.redis({"SELECT", "1"})')
        # Refused inside ws.spawn too: an error the script can catch.
        ok, e = x.ev('ws.spawn(function() S.ok, S.e = pcall(ws.redis, {"SUBSCRIBE", "x"}) end) '
                     "return S.ok, S.e")
        assert ok == "false" and "wsluad manages the subscriptions" in e
        # Bad arguments.
        assert "list of 1 to" in x.ev_err("ws.redis({})")
        assert "argument 2 is a table" in x.ev_err('ws.redis({"GET", {}})')
        assert "table expected" in x.ev_err('ws.redis("PING")')
        assert "function expected" in x.ev_err('ws.redis({"PING"}, 5)')
        # The connection is still fine for everyone.
        assert x.ev1('ws.spawn(function() S.p = ws.redis({"PING"}) conn:send("p " .. S.p) end)'
                     " return 1") == "1"
        assert x.recv_text() == "p PONG"


def test_ws_redis_without_redis_raises():
    with Server(SCRIPT) as s:
        x = Client(s)
        assert x.node == 0
        err = x.ev_err('ws.redis({"PING"})')
        assert "ws.redis: no Redis (start wsluad with --redis URL)" in err
        err = x.ev_err('ws.redis({"PING"}, function() end)')
        assert "--redis URL" in err
        # Everything else works as it does without a cluster.
        assert x.ev1(f"return ws.send({x.id}, 'm:self')") == "true"
        assert x.recv_text() == "m:self"


def nested_eval(levels):
    """A ws.redis command whose reply is `levels` arrays, each inside the one before."""
    return ('{"EVAL", "local t = {} local c = t for i = 2, %d do c[1] = {} c = c[1] end '
            'return t", 0}' % levels)


def test_ws_redis_deeply_nested_replies(redis_server):
    """Eight levels of arrays come through. hiredis 0.14 (Debian 12) reads no deeper: a deeper
    reply is a protocol error that ends the command connection, so the caller gets nil, err
    and the node connects it again by itself."""
    with contextlib.ExitStack() as stack:
        (a,) = start_nodes(stack, redis_server, 1, "-v")
        x = Client(a)
        for how in ("callback", "spawn"):
            if how == "callback":
                x.ev(f"ws.redis({nested_eval(8)}, function(r, e) "
                     "conn:send('reply ' .. shows(r, e)) end)")
            else:
                x.ev(f"ws.spawn(function() conn:send('reply ' .. shows(ws.redis({nested_eval(8)})))"
                     " end)")
            assert x.recv_text() == "reply " + "{" * 8 + "}" * 8 + " nil"
        mark = a.mark()
        x.ev(f"ws.redis({nested_eval(9)}, function(r, e) conn:send('reply ' .. shows(r, e)) end)")
        assert x.recv_text() == 'reply nil "redis link down"'
        a.wait_for_log(r"redis: .*cmd: .*nested multi bulk replies", after=mark)
        # Back by itself: poll until a command goes through again.
        deadline = time.monotonic() + 6.0
        while x.ev1("return shows(ws.redis({'PING'}, function(r, e) "
                    "conn:send('m:' .. shows(r, e)) end))") != "true" \
                or x.recv_text() != 'm:"PONG" nil':
            assert time.monotonic() < deadline, "the command connection did not come back"
            x.inbox.clear()
            time.sleep(0.05)  # polling a condition, not waiting for one
        a.wait_for_log(LINK_UP, after=mark)


# ---- ws.spawn and ws.sleep ---------------------------------------------------------------------

def test_spawn_sequencing_with_redis_and_sleep(redis_server):
    with contextlib.ExitStack() as stack:
        (a,) = start_nodes(stack, redis_server, 1)
        x = Client(a)
        # It runs now until it first waits, with its arguments; the caller goes on meanwhile.
        assert x.ev1("""
            S.log = {}
            local function note(s) S.log[#S.log + 1] = s end
            ws.spawn(function(p, q)
              note('start ' .. p .. q)
              local n = ws.redis({'INCR', 'seq'})
              note('incr ' .. n)
              ws.sleep(0.05)
              note('slept')
              local m = ws.redis({'INCRBY', 'seq', 10})
              note('incrby ' .. m)
              conn:send('done ' .. table.concat(S.log, ','))
            end, 'a', 'b')
            note('caller')
            return table.concat(S.log, ',')""") == "start ab,caller"
        assert x.recv_text() == "done start ab,caller,incr 1,slept,incrby 11"
        # Two spawned functions wait side by side; the shorter sleep wakes first.
        x.ev("ws.spawn(function() ws.sleep(0.2) conn:send('m:slow') end) "
             "ws.spawn(function() ws.sleep(0.01) conn:send('m:fast') end)")
        assert x.recv_text() == "m:fast"
        assert x.recv_text() == "m:slow"
        # ws.sleep(0) yields and comes back; what spawned functions return is dropped.
        x.ev("ws.spawn(function() ws.sleep(0) conn:send('m:zero') return 1, 2 end)")
        assert x.recv_text() == "m:zero"
        # ws.sleep only inside ws.spawn, and not in a coroutine of the script's own inside it.
        assert "only inside a function run by ws.spawn" in x.ev_err("ws.sleep(0.01)")
        x.ev("ws.spawn(function() local co = coroutine.wrap(function() "
             "return pcall(ws.sleep, 0.01) end) conn:send('m:' .. shows(co())) end)")
        assert re.fullmatch(r'm:false ".*only inside a function run by ws\.spawn \(itself, '
                            r'not a coroutine it made\)"', x.recv_text())
        x.ev("ws.spawn(function() conn:send('m:' .. shows(pcall(ws.sleep, -1))) end)")
        assert re.fullmatch(r'm:false ".*ws\.sleep: bad interval.*"', x.recv_text())
        assert "function expected" in x.ev_err("ws.spawn(42)")


def test_spawn_time_limit_applies_to_each_stretch(redis_server):
    with contextlib.ExitStack() as stack:
        (a,) = start_nodes(stack, redis_server, 1, "--handler-timeout", "0.5")
        x = Client(a)
        # The waiting does not count: a sleep twice the limit is fine.
        x.ev("ws.spawn(function() ws.sleep(1) conn:send('m:woke') end)")
        assert x.recv_text(timeout=DEFAULT_TIMEOUT) == "m:woke"
        # Nor do earlier stretches: four of 0.2 s each, 0.8 s in all, between waits.
        x.ev("ws.spawn(function() for i = 1, 4 do busy(0.2) ws.sleep(0) "
             "ws.redis({'PING'}) end conn:send('m:stretches') end)")
        assert x.recv_text() == "m:stretches"
        # One stretch that does not end is stopped, logged, and reaches on_error.
        mark = a.mark()
        x.ev("ws.spawn(function() ws.sleep(0.01) while true do end end)")
        a.wait_for_log(rf"Lua error in a function run by ws\.spawn \(conn#{x.id} .*\): "
                       r"handler timeout", after=mark)
        assert x.recv_text().startswith("on_error handler timeout")
        # No pcall can keep it going. (The same error again within 10 s is counted, not
        # logged again.)
        x.ev("ws.spawn(function() ws.sleep(0.01) while true do pcall(busy, 1) end end)")
        assert x.recv_text().startswith("on_error handler timeout")
        # The node and the connection carry on.
        assert x.ev1("return 'alive'") == "alive"


def test_spawn_error_is_logged_with_traceback_and_reaches_on_error(redis_server):
    with contextlib.ExitStack() as stack:
        (a,) = start_nodes(stack, redis_server, 1)
        x = Client(a)
        # After a wait: logged with the connection and a traceback; on_error gets it.
        mark = a.mark()
        x.ev("ws.spawn(function() ws.sleep(0.01) S.deep = function() "
             "error('boom-after-wait') end S.deep() end)")
        i, _ = a.wait_for_line(rf"ERROR .*Lua error in a function run by ws\.spawn "
                               rf"\(conn#{x.id} [^)]*\): chunk:1: boom-after-wait", after=mark)
        j, _ = a.wait_for_line(r"^\s*stack traceback:", after=i + 1)
        a.wait_for_log(r"^\s*chunk:1: in ", after=j + 1)
        assert x.recv_text() == "on_error chunk:1: boom-after-wait"
        # In its first stretch (inside the handler that spawned it): the same, and the handler
        # itself goes on.
        assert x.ev1("ws.spawn(function() error('boom-at-once') end) return 'went on'") == \
            "went on"
        assert x.recv_text() == "on_error chunk:1: boom-at-once"
        a.wait_for_log(r"Lua error in a function run by ws\.spawn .*boom-at-once")
        # After a ws.redis wait, and an error value that is not a string.
        x.ev("ws.spawn(function() ws.redis({'PING'}) error({code = 7}) end)")
        assert x.recv_text().startswith("on_error table: ")
        # Spawned from a timer: no connection, only logged.
        mark = a.mark()
        x.ev("ws.timer(0.01, function() ws.spawn(function() ws.sleep(0.01) "
             "error('boom-from-timer') end) end)")
        a.wait_for_log(r"Lua error in a function run by ws\.spawn: chunk:1: boom-from-timer",
                       after=mark)
        assert x.ev1("return 'fine'") == "fine"
        assert not x.inbox
        assert not a.find_logs(r"on_error .*boom-from-timer")


def test_coroutine_yield_in_spawn_is_an_error_not_a_hang(redis_server):
    with contextlib.ExitStack() as stack:
        (a,) = start_nodes(stack, redis_server, 1)
        x = Client(a)
        mark = a.mark()
        assert x.ev1("ws.spawn(function() coroutine.yield() S.resumed = true end) "
                     "return 'back'") == "back"
        a.wait_for_log(r"Lua error in a function run by ws\.spawn .*coroutine\.yield\(\) in a "
                       r"function run by ws\.spawn", after=mark)
        assert x.recv_text().startswith("on_error coroutine.yield() in a function run by")
        # After a wait as well.
        x.ev("ws.spawn(function() ws.sleep(0.01) coroutine.yield(1, 2) S.resumed = true end)")
        assert x.recv_text().startswith("on_error coroutine.yield() in a function run by")
        assert x.ev1("return S.resumed") == "nil"
        # The script's own coroutines inside a spawned function yield as usual.
        x.ev("ws.spawn(function() local co = coroutine.wrap(function() coroutine.yield(1) "
             "coroutine.yield(2) end) ws.sleep(0.01) conn:send('m:' .. co() .. co()) end)")
        assert x.recv_text() == "m:12"


def test_yield_after_a_nested_spawn_waits_is_still_an_error(redis_server):
    """A spawned function that spawns another one, which waits, and then calls
    coroutine.yield() itself: an error as well, not a wait that nothing ends."""
    with contextlib.ExitStack() as stack:
        (a,) = start_nodes(stack, redis_server, 1)
        x = Client(a)
        assert x.ev1("ws.spawn(function() ws.spawn(function() ws.sleep(0.01) "
                     "conn:send('m:inner') end) coroutine.yield() S.resumed = true end) "
                     "return 'back'") == "back"
        assert x.recv_text().startswith("on_error coroutine.yield() in a function run by")
        assert x.recv_text() == "m:inner"
        a.wait_for_log(r"Lua error in a function run by ws\.spawn .*coroutine\.yield\(\)")
        # The same with ws.redis waiting inside.
        x.ev("ws.spawn(function() ws.spawn(function() ws.redis({'PING'}) conn:send('m:inner2') "
             "end) coroutine.yield() S.resumed = true end)")
        assert x.recv_text().startswith("on_error coroutine.yield() in a function run by")
        assert x.recv_text() == "m:inner2"
        assert x.ev1("return S.resumed") == "nil"


@pytest.mark.parametrize("wait", ["ws.redis({'PING'})", "ws.sleep(0.05)"])
def test_waiting_where_lua_cannot_yield_is_a_clear_error(wait, redis_server):
    """Inside a function that C code calls (a table.sort comparator, a string.gsub
    replacement), Lua cannot yield: waiting there is an error the script can catch, and no
    reply or timer comes back later to resume the function at another point (or after it
    ended and was collected)."""
    with contextlib.ExitStack() as stack:
        (a,) = start_nodes(stack, redis_server, 1)
        x = Client(a)
        mark = a.mark()
        x.ev(f"ws.spawn(function() "
             f"local ok, e = pcall(table.sort, {{3, 1, 2}}, function(p, q) {wait} return p < q end) "
             f"conn:send('m:sort ' .. shows(ok, e)) "
             f"ws.sleep(0.2) conn:send('m:slept') end)")
        got = x.recv_text()
        assert got.startswith('m:sort false "'), got
        assert "cannot wait inside a function called from C" in got, got
        assert ("give a callback" in got) == ("redis" in wait), got
        # The function's own sleep is not cut short by the stray reply or timer.
        x.ev("ws.spawn(function() ws.sleep(0.1) conn:send('m:tick') end)")
        assert x.recv_text() == "m:tick"
        assert x.recv_text() == "m:slept"
        # Finished, collected: nothing may resume it now.
        x.ev(f"ws.spawn(function() pcall(string.gsub, 'a', 'a', function() {wait} end) end) "
             "collectgarbage() collectgarbage()")
        x.ev("ws.spawn(function() ws.sleep(0.1) ws.redis({'PING'}) conn:send('m:later') end)")
        assert x.recv_text() == "m:later"
        assert not a.find_logs(r"Lua error", after=mark)


def test_the_script_cannot_resume_a_spawned_function(redis_server):
    """coroutine.running() hands a spawned function's coroutine to the script, but only its
    timer or reply may resume it: resumed early it would go on with its wait unfinished, and
    the timer or reply would resume it again later, in another wait or after it ended."""
    r = redis_server
    with contextlib.ExitStack() as stack:
        (a,) = start_nodes(stack, r, 1)
        x = Client(a)
        mark = a.mark()
        x.ev("ws.spawn(function() S.co = coroutine.running() ws.sleep(0.1) ws.sleep(0.1) "
             "conn:send('m:slept') end)")
        assert x.ev("return coroutine.status(S.co), coroutine.resume(S.co)") == \
            ["suspended", "false", "cannot resume a function run by ws.spawn (its ws.sleep or "
             "ws.redis resumes it)"]
        assert x.recv_text() == "m:slept"
        x.ev("ws.spawn(function() S.co = coroutine.running() "
             "conn:send('m:' .. shows(ws.redis({'BLPOP', 'k', 0}))) end)")
        assert x.ev1("return (coroutine.resume(S.co, 'fake'))") == "false"
        r.command("LPUSH", "k", "v")
        assert x.recv_text() == 'm:{"k","v"} nil'
        # Its own coroutines, it resumes as it likes.
        assert x.ev("local co = coroutine.create(function(v) return coroutine.yield(v) + 1 end) "
                    "return select(2, coroutine.resume(co, 1)), select(2, coroutine.resume(co, 2))"
                    ) == ["1", "3"]
        assert not a.find_logs(r"Lua error", after=mark)


def test_closing_a_waiting_spawned_function_cancels_it(redis_server):
    """coroutine.close on a spawned function that waits cancels it: when its timer or reply
    comes, nothing runs and nothing is logged."""
    r = redis_server
    with contextlib.ExitStack() as stack:
        (a,) = start_nodes(stack, r, 1)
        x = Client(a)
        mark = a.mark()
        x.ev("ws.spawn(function() S.sleeper = coroutine.running() ws.sleep(0.05) "
             "conn:send('m:woke') end)")
        x.ev("ws.spawn(function() S.waiter = coroutine.running() ws.redis({'BLPOP', 'c', 0}) "
             "conn:send('m:got') end)")
        assert x.ev("return coroutine.close(S.sleeper), coroutine.close(S.waiter)") == \
            ["true", "true"]
        r.command("LPUSH", "c", "v")
        # A later sleep (and a later reply) come after the cancelled ones: the fence.
        x.ev("ws.spawn(function() ws.sleep(0.1) ws.redis({'PING'}) conn:send('m:fence') end)")
        assert x.recv_text() == "m:fence"
        assert not a.find_logs(r"Lua error|on_error", after=mark)


def test_callbacks_and_spawns_of_a_closed_connection_still_run(redis_server):
    r = redis_server
    with contextlib.ExitStack() as stack:
        (a,) = start_nodes(stack, r, 1)
        x = Client(a)
        x.ev("""
            ws.redis({'BLPOP', 'k1', 0}, function(r, e)
              ws.log('cb-after-close ' .. shows(r, e) .. ' ' .. shows(conn:send('x')) .. ' '
                     .. shows(conn:is_open(), conn:subscribe('t'), conn:unsubscribe('t'),
                              conn:close()))
            end)
            ws.spawn(function()
              local r, e = ws.redis({'BLPOP', 'k2', 0})
              ws.log('spawn-after-close ' .. shows(r, e) .. ' ' .. shows(conn:send('y')))
              ws.sleep(0.01)
              ws.log('spawn-slept ' .. shows(conn:is_open(), ws.publish('t', 'z')))
              error('late-error')
            end)""")
        cid = x.id
        x.ws.close_handshake()
        a.wait_for_log(rf"on_close id={cid} ")
        # Only now do the replies come.
        r.command("LPUSH", "k1", "v1")
        a.wait_for_log(re.escape('cb-after-close {"k1","v1"} nil nil "closed" "ECLOSED" '
                                 'false nil false nil "closed" "ECLOSED"'))
        r.command("LPUSH", "k2", "v2")
        a.wait_for_log(re.escape('spawn-after-close {"k2","v2"} nil nil "closed" "ECLOSED"'))
        a.wait_for_log(r"spawn-slept false i0")
        # Its error is only logged: there is no connection to tell.
        a.wait_for_log(r"Lua error in a function run by ws\.spawn.*late-error")
        assert not a.find_logs(r"on_error id=")
        y = Client(a)
        assert y.ev1("return 'fine'") == "fine"


# ---- when Redis misbehaves ---------------------------------------------------------------------

def test_redis_killed_and_restarted(redis_server):
    r = redis_server
    with contextlib.ExitStack() as stack:
        a, b = start_nodes(stack, r, 2, "-v")
        x, x2, y = Client(a), Client(a), Client(b)
        for c in (x, x2, y):
            c.subscribe("room")
        wait_numsub(r, "wsluad:topic:room", 2)
        x.ev("ws.publish('room', 'm:before', 'text', conn)")
        assert x2.recv_text() == "m:before"
        assert y.recv_text() == "m:before"
        # Commands in flight when Redis goes.
        x.ev("ws.redis({'BLPOP', 'never', 0}, function(r, e) conn:send('m:cb ' .. shows(r, e)) end)"
             " ws.spawn(function() conn:send('m:spawn ' .. shows(ws.redis({'BLPOP', 'never', 0})))"
             " end)")
        wait_until(lambda: "blocked_clients:1" in r.command("INFO", "clients").decode(),
                   "the BLPOP waiting in Redis")

        marks = [a.mark(), b.mark()]
        r.stop()
        a.wait_for_log(r"WARN .*redis: lost the link to ", after=marks[0])
        b.wait_for_log(r"WARN .*redis: lost the link to ", after=marks[1])
        assert x.recv_text() == 'm:cb nil "redis link down"'
        assert x.recv_text() == 'm:spawn nil "redis link down"'
        # Every connection of a's link has noticed (the first lost one logged the warning).
        a.wait_for_log(r"redis: (lost the link to \S+ \(cmd:|cmd link to )", after=marks[0])
        # While it is away: ws.redis answers at once, before the handler that called it returns.
        assert x.ev("return ws.redis({'PING'}, function(r, e) conn:send('m:now ' .. shows(r, e)) "
                    "end)") == ["nil", "redis link down", "EDOWN"]
        assert list(x.inbox) == [(OP_TEXT, b'm:now nil "redis link down"')]
        x.inbox.clear()
        assert x.ev("return ws.redis({'PING'})") == ["nil", "redis link down", "EDOWN"]
        assert x.ev1("ws.spawn(function() S.r = shows(ws.redis({'PING'})) end) return S.r") == \
            'nil "redis link down" "EDOWN"'
        assert x.ev(f"return ws.send({y.id}, 'm:lost')") == ["nil", "redis link down", "EDOWN"]
        # Local rooms work; the other node gets nothing of it, now or later.
        assert x.ev1("return ws.publish('room', 'm:local', 'text', conn)") == "1"
        assert x2.recv_text() == "m:local"
        assert x.ev1("return ws.broadcast('m:local-all', 'text', conn)") == "1"
        assert x2.recv_text() == "m:local-all"
        a.wait_for_log(r"WARN .*redis: dropped a publish to other nodes \(the link is down\)")

        # Back on the same port: delivery across nodes resumes by itself within 5 s (back-off
        # at most 5 s, then connect and subscribe again). Publish until it arrives.
        marks = [a.mark(), b.mark()]
        r.start()
        restarted = time.monotonic()
        deadline = restarted + 6.0  # 5 s as promised, and a second for a loaded machine
        i = 0
        while True:
            assert time.monotonic() < deadline, "no delivery across nodes after the restart"
            i += 1
            x.ev(f"ws.publish('room', 'm:again-{i}', 'text', conn)")
            assert x2.recv_text() == f"m:again-{i}"
            if y.ws.readable(0.1):
                break
        got = y.recv_text()
        assert re.fullmatch(r"m:again-\d+", got), f"{got!r}: a message from while Redis was away"
        took = time.monotonic() - restarted
        assert took < 6.0, took
        # Both directions, the broadcast channel, and commands work again.
        a.wait_for_log(LINK_UP, after=marks[0])
        b.wait_for_log(LINK_UP, after=marks[1])
        y.ev("ws.broadcast('m:from-b', 'text', conn)")
        # x and x2 may still get a few m:again from the loop above: skip to the broadcast.
        for c in (x, x2):
            while (t := c.recv_text()) != "m:from-b":
                assert re.fullmatch(r"m:again-\d+", t), t
        x.ev("ws.redis({'PING'}, function(r, e) conn:send('m:cb ' .. shows(r, e)) end)")
        assert x.recv_text() == 'm:cb "PONG" nil'


def test_redis_absent_at_start():
    port = free_port()  # nothing listens here yet
    url = f"redis://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        a = start_node(stack, url, wait_up=False)
        b = start_node(stack, url, wait_up=False)
        for s in (a, b):
            s.wait_for_log(rf"WARN .*redis: cannot reach 127\.0\.0\.1:{port} \(.*\); serving "
                           r"local rooms and reconnecting")
        x, x2, y = Client(a), Client(a), Client(b)
        for c in (x, x2, y):
            c.subscribe("room")
        assert 0 < x.node <= 65535  # a number at once, without Redis
        assert x.ev1("return ws.publish('room', 'm:local', 'text', conn)") == "1"
        assert x2.recv_text() == "m:local"
        assert x.ev("return ws.redis({'PING'})") == ["nil", "redis link down", "EDOWN"]

        redis = RedisServer()
        redis.port = port
        stack.enter_context(redis)  # starts it, on that port
        started = time.monotonic()
        deadline = started + 6.0
        i = 0
        while True:
            assert time.monotonic() < deadline, "no delivery across nodes once Redis came"
            i += 1
            x.ev(f"ws.publish('room', 'm:late-{i}', 'text', conn)")
            assert x2.recv_text() == f"m:late-{i}"
            if y.ws.readable(0.1):
                break
        assert re.fullmatch(r"m:late-\d+", y.recv_text())
        a.wait_for_log(LINK_UP)
        b.wait_for_log(LINK_UP)
        # The other way too, and commands.
        y.ev("ws.publish('room', 'm:from-b', 'text', conn)")
        for c in (x, x2):
            while (t := c.recv_text()) != "m:from-b":
                assert re.fullmatch(r"m:late-\d+", t), t
        x.ev("ws.redis({'PING'}, function(r) conn:send('m:' .. r) end)")
        assert x.recv_text() == "m:PONG"
        assert numsub(redis, "wsluad:topic:room") == 2
        # The nodes leave after Redis is gone again (ExitStack: last in, first out): stopping
        # does not wait for it.


def test_a_stalled_redis_bounds_what_is_queued(redis_server):
    """Redis stopped (SIGSTOP), not gone: the node goes on handing it publishes until what
    awaits an answer reaches the bound (8 MiB), then drops them with a warning; local delivery
    does not wait. Once Redis goes on, what was queued arrives in order, then new messages."""
    r = redis_server
    with contextlib.ExitStack() as stack:
        a = start_node(stack, r.url)
        b = start_node(stack, r.url, "--max-backpressure", "64M")  # y reads 8 MiB at once
        x, x2, y = Client(a), Client(a), Client(b)
        y.subscribe("room")
        x2.subscribe("here")
        wait_numsub(r, "wsluad:topic:room", 1)
        mark = a.mark()
        r.proc.send_signal(signal.SIGSTOP)
        try:
            assert x.ev1("local big = string.rep('x', 65536) "
                         "for i = 1, 200 do ws.publish('room', 'm:' .. i .. ':' .. big) end "
                         "return ws.publish('here', 'm:local')") == "1"
            assert x2.recv_text() == "m:local"
            a.wait_for_log(r"WARN .*redis: dropped a publish to other nodes \(the queue "
                           r"towards Redis is full\)", after=mark)
        finally:
            r.proc.send_signal(signal.SIGCONT)
        # Publish small ones until one gets through: the big ones queued before it come first.
        got, deadline, j = [], time.monotonic() + DEFAULT_TIMEOUT, 0
        while True:
            assert time.monotonic() < deadline, f"nothing new after {len(got)} queued messages"
            j += 1
            x.ev(f"ws.publish('room', 'm:after-{j}', 'text', conn)")
            while y.ws.readable(0.1):
                t = y.recv_text()
                if t.startswith("m:after-"):
                    break
                n, rest = t[2:].split(":", 1)
                assert rest == "x" * 65536
                got.append(int(n))
            else:
                continue
            break
        assert 0 < len(got) < 200 and got == list(range(1, len(got) + 1)), got[:5]
        # 8 MiB of 64 KiB messages, give or take one.
        assert abs(len(got) - 128) <= 2, len(got)


def test_shutdown_answers_what_scripts_wait_for(redis_server):
    r = redis_server
    with contextlib.ExitStack() as stack:
        a = start_node(stack, r.url)
        x = Client(a)
        x.ev("ws.redis({'BLPOP', 'never', 0}, function(r, e) ws.log('cb-at-stop ' .. "
             "shows(r, e)) end) "
             "ws.spawn(function() ws.log('spawn-at-stop ' .. "
             "shows(ws.redis({'BLPOP', 'never', 0}))) end) "
             "ws.spawn(function() ws.sleep(60) ws.log('woke-at-stop') end)")
        wait_until(lambda: "blocked_clients:1" in r.command("INFO", "clients").decode(),
                   "the BLPOP waiting in Redis")
        a.signal(signal.SIGTERM)
        assert x.ws.expect_close()[0] == 1001
        x.ws.close(1001)
        x.ws.expect_eof()
        x.ws.sock.close()  # so the node need not wait for our end of the connection
        assert a.wait_exit() == 0  # not waiting for Redis, nor for the sleeper
        assert a.find_logs(r'cb-at-stop nil "closed"')
        assert a.find_logs(r'spawn-at-stop nil "closed"')
        assert not a.find_logs("woke-at-stop")


# ---- --workers -----------------------------------------------------------------------------------

def test_workers_share_rooms_and_stop_with_1001(redis_server, no_stray_workers):
    r = redis_server
    with Server(SCRIPT, "--workers", "2", "--redis", r.url) as s:
        no_stray_workers.append(s)
        s.wait_for_logs(r"\[w\d\] .*" + LINK_UP, 2)
        pids = {int(m.group(2)) for m in s.find_logs(STARTED)}
        assert len(pids) == 2
        by_pid = {}
        deadline = time.monotonic() + DEFAULT_TIMEOUT
        while len(by_pid) < 2 or min(len(v) for v in by_pid.values()) < 2:
            assert time.monotonic() < deadline, f"clients on {sorted(by_pid)} only"
            c = Client(s)
            by_pid.setdefault(c.pid, []).append(c)
        assert set(by_pid) == pids
        one, two = (by_pid[p] for p in sorted(pids))
        assert one[0].node != two[0].node
        everyone = [c for cs in by_pid.values() for c in cs]
        for c in everyone:
            c.subscribe("room")
        wait_numsub(r, "wsluad:topic:room", 2)
        # A client of one worker publishes: the clients of the other get it, and vice versa.
        one[0].ev("ws.publish('room', 'm:from-one', 'text', conn)")
        for c in everyone:
            if c is not one[0]:
                assert c.recv_text() == "m:from-one"
        two[0].ev("ws.broadcast('m:from-two', 'text', conn)")
        for c in everyone:
            if c is not two[0]:
                assert c.recv_text() == "m:from-two"
        assert one[1].ev1(f"return ws.send({two[1].id}, 'm:private')") == "true"
        assert two[1].recv_text() == "m:private"
        # SIGTERM: every client of every worker is closed with 1001.
        s.signal(signal.SIGTERM)
        for c in everyone:
            assert not c.inbox
            assert c.ws.expect_close()[0] == 1001
            c.ws.close(1001)
            c.ws.expect_eof()  # the worker ends the TCP connection once we answered
            c.ws.sock.close()
        assert s.wait_exit() == 0
        for pid in pids:
            assert ppid(pid) is None


def test_the_top_level_knows_its_node(redis_server, tmp_path):
    """The node joins the cluster before the script loads: its top level sees ws.node (the
    number its connections' ids will carry), though the link comes up only once the loop runs."""
    path = tmp_path / "node.lua"
    path.write_text('ws.log("top level: node " .. ws.node)\n'
                    'function on_open(conn) conn:send(tostring(conn.id >> 37)) end\n')
    with Server(str(path), "--redis", redis_server.url) as s:
        node = int(s.wait_for_log(r"top level: node (\d+)").group(1))
        assert 1 <= node <= 65535
        s.wait_for_log(LINK_UP)
        c = s.connect()
        assert int(c.recv_text()) == node
