"""A real redis-server for a test: on a free port of 127.0.0.1 (and a unix socket) in a fresh
temporary directory, no persistence, always stopped and removed afterwards.

    with RedisServer() as r:          # or the `redis_server` pytest fixture
        r.url                         # "redis://127.0.0.1:PORT"
        r.unix_url                    # "unix:/tmp/.../redis.sock"
        r.command("PUBLISH", "wsluad:topic:news", "hi")   # -> 1 (RESP reply, parsed)
        r.stop(); r.start()           # kill it and bring it back on the same port (mid-run tests)

Debian's redis-server (scripts/setup --test installs it); never a system service.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from harness import DEFAULT_TIMEOUT, HOST, free_port

REDIS_SERVER = "/usr/bin/redis-server"


class RedisError(Exception):
    """An error reply (-ERR ...)."""


def _encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if not isinstance(a, bytes):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class _Reader:
    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _line(self):
        while b"\r\n" not in self.buf:
            self._more()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _more(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        self.buf += chunk

    def reply(self):
        """One RESP2 reply: int, bytes, str (status), None, list; an error raises RedisError."""
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._more()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise ValueError(f"unexpected RESP reply {line!r}")


class RedisServer:
    def __init__(self, timeout=DEFAULT_TIMEOUT):
        self.timeout = timeout
        self.dir = tempfile.mkdtemp(prefix="wsluad-redis-")
        self.sock_path = os.path.join(self.dir, "redis.sock")
        self.log_path = os.path.join(self.dir, "redis.log")
        self.port = None
        self.proc = None

    @property
    def url(self):
        return f"redis://{HOST}:{self.port}"

    @property
    def unix_url(self):
        return f"unix:{self.sock_path}"

    def start(self):
        """Start it (again on the same port after stop(), so a node can reconnect) and wait until
        it answers PING."""
        if not os.path.exists(REDIS_SERVER):
            raise RuntimeError(f"{REDIS_SERVER} is missing: scripts/setup --test installs "
                               "Debian's redis-server")
        fixed = self.port is not None
        for _attempt in range(1 if fixed else 5):  # a free port can be taken before redis binds it
            port = self.port if fixed else free_port()
            cmd = [REDIS_SERVER, "--port", str(port), "--bind", HOST, "--save", "",
                   "--appendonly", "no", "--dir", self.dir, "--unixsocket", self.sock_path,
                   "--unixsocketperm", "700", "--daemonize", "no", "--logfile", self.log_path,
                   "--protected-mode", "yes"]
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.port = port
            if self._wait_ready():
                return self
            self._kill()
            if not fixed:
                self.port = None
        raise RuntimeError(f"redis-server did not start:\n{self.log()}")

    def _wait_ready(self):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if self.command("PING") == "PONG":
                    return True
            except (OSError, ConnectionError, RedisError):
                pass  # not listening yet, or still loading
            try:
                self.proc.wait(0.02)  # a failure guard between attempts: did it exit?
            except subprocess.TimeoutExpired:
                pass
        return False

    def command(self, *args, timeout=None):
        """Run one command on a connection of its own; returns the parsed reply."""
        with socket.create_connection((HOST, self.port), timeout=timeout or self.timeout) as s:
            s.sendall(_encode(args))
            return _Reader(s).reply()

    def stop(self):
        """Kill it (SIGKILL: as abrupt as a crash); the directory stays for a later start()."""
        self._kill()

    def _kill(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def close(self):
        self._kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is not None:
                sys.stdout.write(f"\n--- redis log (port {self.port}) ---\n{self.log()}"
                                 "--- end ---\n")
        finally:
            self.close()  # even when stdout is gone (a closed pipe): never a stray redis-server
        return False


@pytest.fixture
def redis_server():
    """A fresh redis-server for one test (import this name into a test module to use it)."""
    with RedisServer() as r:
        yield r
