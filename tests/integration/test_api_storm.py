"""Randomized stress of the script API: scripts/api_storm.lua makes random calls with random
arguments on every event while clients open (some offering compression), send (text, binary,
fragmented), leave (cleanly or abruptly), make plain HTTP requests, the server is reloaded
(SIGHUP), its metrics are scraped and its Redis is killed and restarted. For each seed the server
must not crash, no sanitizer report may appear, it must still echo once the storm is calmed, its
metrics must pass `promtool check metrics`, and SIGTERM in the middle of a last storm must end it
with status 0 (a sanitizer build then reports leaks, which fails the test).

The seeds are fixed, so a failure repeats (as far as event timing allows): STORM_SEED reaches the
script through the environment, the client's own choices come from random.Random(seed).
STORM_SEEDS=a-b and STORM_STEPS=N run other seeds and lengths (for a long hunt by hand).
"""

import os
import random
import re
import select
import signal
import socket
import subprocess

import pytest

import wsclient
from harness import HOST, Server
from redisutil import RedisServer

SEEDS = list(range(1, 11))
STEPS = int(os.environ.get("STORM_STEPS", "1200"))
MAX_CLIENTS = 24
PROMTOOL = "/usr/bin/promtool"
PATHS = ["/", "/a?x=1&y=%00", "/room/r1", "/r2?" + "q" * 300, "/%ff"]


def _seeds():
    s = os.environ.get("STORM_SEEDS")
    if not s:
        return SEEDS
    lo, _, hi = s.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


class Storm:
    def __init__(self, server, rng, redis):
        self.server = server
        self.redis = redis
        m = server.wait_for_log(r"metrics at http://(\S+):(\d+)/metrics")
        self.metrics = (m.group(1), int(m.group(2)))
        self.rng = rng
        self.ws = []  # WSClient
        self.http = []  # raw sockets with a request sent
        self.frag = {}  # WSClient -> opcode of a message begun but not finished

    def drop(self, c):
        sock = c.sock if isinstance(c, wsclient.WSClient) else c
        try:
            sock.close()
        except OSError:
            pass
        if c in self.ws:
            self.ws.remove(c)
        if c in self.http:
            self.http.remove(c)
        self.frag.pop(c, None)

    def drain(self):
        """Read (and discard) whatever the server sent, so it is not held up by us."""
        socks = {(c.sock if isinstance(c, wsclient.WSClient) else c): c for c in self.ws + self.http}
        if not socks:
            return
        r, _, _ = select.select(list(socks), [], [], 0)
        for s in r:
            try:
                s.settimeout(0)
                data = s.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                self.drop(socks[s])

    def payload(self):
        r = self.rng.random()
        n = self.rng.choice([0, 1, 5, 20, 126, 200, 1000, 65536, 70000]) if r < 0.95 else 300000
        if self.rng.random() < 0.5:
            return ("x" * n).encode()
        return self.rng.randbytes(n)

    def open(self):
        if len(self.ws) >= MAX_CLIENTS:
            return self.leave()
        headers = {}
        if self.rng.random() < 0.3:
            headers["Sec-WebSocket-Protocol"] = self.rng.choice(["chat.v1", "a, b", "nope"])
        if self.rng.random() < 0.3:  # compressed frames from the server (read raw, never parsed)
            headers["Sec-WebSocket-Extensions"] = "permessage-deflate; client_max_window_bits"
        try:
            c = wsclient.connect(HOST, self.server.port, self.rng.choice(PATHS), headers,
                                 timeout=10)
        except (wsclient.HandshakeError, OSError):
            return
        self.ws.append(c)

    def send(self):
        if not self.ws:
            return self.open()
        c = self.rng.choice(self.ws)
        try:
            op = self.frag.get(c)
            r = self.rng.random()
            if op is not None:  # go on with the fragmented message
                fin = r < 0.5
                if self.rng.random() < 0.2:
                    c.ping(b"p")
                c.send_frame(wsclient.OP_CONT, self.payload() if op == 2 else b"abc", fin=fin)
                if fin:
                    del self.frag[c]
            elif r < 0.45:
                c.send_text(self.rng.choice([b"", b"hello", b"x" * self.rng.randrange(0, 70000)]))
            elif r < 0.8:
                c.send_binary(self.payload())
            elif r < 0.9:
                op = self.rng.choice([wsclient.OP_TEXT, wsclient.OP_BINARY])
                c.send_frame(op, b"part", fin=False)
                self.frag[c] = op
            else:
                c.ping(self.rng.randbytes(self.rng.randrange(0, 100)))
        except OSError:
            self.drop(c)

    def leave(self):
        if not self.ws:
            return
        c = self.rng.choice(self.ws)
        r = self.rng.random()
        try:
            if r < 0.4:
                c.close(self.rng.choice([1000, 1001, 4000, None]), "bye")
                if self.rng.random() < 0.5:
                    return  # stays in the list: the server's close (or EOF) ends it
            elif r < 0.7:
                c.shutdown()
            elif r < 0.85:  # half a frame, then gone
                c.send_raw(wsclient.build_frame(wsclient.OP_TEXT, b"x" * 100)[:20])
        except OSError:
            pass
        self.drop(c)

    def request(self):
        method = self.rng.choice(["GET", "POST", "HEAD", "PUT", "DELETE"])
        body = self.payload()[:200000] if method in ("POST", "PUT") else b""
        path = self.rng.choice(PATHS + ["/x/y", "/?a=b"])
        conn = "close" if self.rng.random() < 0.5 else "keep-alive"
        req = (f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: {conn}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        try:
            s = socket.create_connection((HOST, self.server.port), timeout=10)
            s.sendall(req)
        except OSError:
            return
        self.http.append(s)
        if len(self.http) > 16:
            self.drop(self.http[0])

    def scrape(self):
        host, port = self.metrics
        req = f"GET /metrics HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        status, _, body = wsclient.http_request(host, port, req)
        assert status == 200
        return body

    def run(self, steps):
        actions = [(self.open, 20), (self.send, 45), (self.leave, 12), (self.request, 20),
                   (self.reload, 1), (self.drain, 10), (self.scrape, 1),
                   (self.redis_bounce, 0.3)]
        fns = [a for a, _ in actions]
        weights = [w for _, w in actions]
        for _ in range(steps):
            self.rng.choices(fns, weights)[0]()
            self.drain()
            assert self.server.alive(), "the server died"
        for c in list(self.ws) + list(self.http):
            self.drop(c)

    def reload(self):
        self.server.signal(signal.SIGHUP)

    def redis_bounce(self):
        """Redis dies (SIGKILL) with commands in flight and comes back on the same port."""
        self.redis.stop()
        self.redis.start()


def promtool_check(text):
    if not os.path.exists(PROMTOOL):
        pytest.fail(f"{PROMTOOL} is missing: scripts/setup --test installs Debian's prometheus")
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                       timeout=30)
    assert p.returncode == 0, f"promtool check metrics:\n{p.stdout.decode()}{p.stderr.decode()}"


def calm_and_check(server, storm):
    """Stop the storm; then a plain echo must work and the metrics (with the script's label
    values, random bytes among them) must be valid exposition text."""
    status, _, body = server.get("/calm")
    assert (status, body) == (200, b"calm\n")
    with server.connect("/echo") as c:
        c.send_text("still here")
        while True:  # a message the storm sent before it calmed may come first
            op, data = c.recv_message()
            if data == b"still here":
                assert op == wsclient.OP_TEXT
                break
    text = storm.scrape()
    assert re.search(rb"^storm_", text, re.M), "the script's metrics are missing"
    promtool_check(text)


def storm_at_shutdown(server, storm):
    """The storm again, briefly, and SIGTERM in the middle of it (timers, waits, deferred
    requests and Redis commands in flight, every on_close storming)."""
    status, _, body = server.get("/storm")
    assert (status, body) == (200, b"storm\n")
    for _ in range(30):
        storm.rng.choices([storm.open, storm.send, storm.request], [3, 5, 2])[0]()
        storm.drain()
    server.signal(signal.SIGTERM)
    for _ in range(10):  # some clients are still sending while the server says goodbye
        storm.send()
        storm.drain()
    for c in list(storm.ws) + list(storm.http):  # the rest leave without a close frame
        storm.drop(c)
    assert server.wait_exit(30) == 0


@pytest.mark.parametrize("seed", _seeds())
def test_api_storm(seed):
    with RedisServer() as redis:
        args = ["--redis", redis.url, "--lua-memory", "64M", "--handler-timeout", "0.25",
                "--request-timeout", "1", "--max-message", "400000", "--static", "none",
                "--metrics", f"{HOST}:0", "--deflate"]
        with Server("api_storm.lua", *args, env={"STORM_SEED": str(seed)}) as server:
            storm = Storm(server, random.Random(seed), redis)
            storm.run(STEPS)
            calm_and_check(server, storm)
            storm_at_shutdown(server, storm)
        if os.environ.get("STORM_LOG"):  # for a hunt by hand: keep the server's log
            with open(f"{os.environ['STORM_LOG']}.{seed}", "w") as f:
                f.write(server.log())
        assert not server.find_logs(r"AddressSanitizer|LeakSanitizer|runtime error:")

