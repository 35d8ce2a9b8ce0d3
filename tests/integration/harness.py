"""Starts the real wsluad binary for a test and watches its log.

Server(script, *args) runs $WSLUAD_BIN on a free port, waits for its "listening on" line, keeps
every log line so tests can wait for one, and kills the process (printing its log when the test
failed) on exit. Test scripts live in scripts/ next to this file.
"""

import os
import re
import signal as _signal
import socket
import subprocess
import sys
import threading
import time

import wsclient

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "scripts")
DEFAULT_TIMEOUT = wsclient.DEFAULT_TIMEOUT
HOST = "127.0.0.1"


def binary():
    b = os.environ.get("WSLUAD_BIN")
    if not b:
        raise RuntimeError("WSLUAD_BIN is not set (run the tests through ctest)")
    return b


def source_dir():
    return os.environ.get("WSLUAD_SRC") or os.path.abspath(os.path.join(HERE, "..", ".."))


def script_path(name):
    """A test script by name (scripts/NAME), or the name itself when that is not one."""
    if name is None:
        return None
    p = os.path.join(SCRIPTS, name)
    return p if os.path.exists(p) else name


def run(*args, cwd=None, env=None, timeout=DEFAULT_TIMEOUT, stdin=subprocess.DEVNULL):
    """Run the binary to completion (for --help, --version, --check, usage errors)."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([binary(), *args], cwd=cwd, env=e, stdin=stdin,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, text=True, errors="replace")


def wait_until(cond, what, timeout=DEFAULT_TIMEOUT):
    """Poll cond (a cheap query) until it holds; fails after timeout."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout}s")
        time.sleep(0.01)  # polling a condition, not waiting for one


def free_port():
    """A port that was free a moment ago (for servers that do not log theirs)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def connect_id(server, path="/", **kw):
    """Connect and learn the server's id for this connection from the script's on_open log
    line ("on_open id=N ... remote=IP:PORT"), found by the client's own port."""
    c = server.connect(path, **kw)
    port = c.sock.getsockname()[1]
    m = server.wait_for_log(rf"on_open id=(\d+) .*remote=127\.0\.0\.1:{port}$")
    return c, int(m.group(1))


class Server:
    live = []  # servers not yet stopped, so conftest.py can attach their logs to a failure

    def __init__(self, script, *args, env=None, listen="127.0.0.1:0", cwd=None,
                 timeout=DEFAULT_TIMEOUT, quiet_port=None):
        """quiet_port: for servers that do not log their "listening on" line (-q): listen on
        that port and wait until it accepts a connection instead."""
        self.script = script_path(script)
        if quiet_port is not None:
            listen = f"{HOST}:{quiet_port}"
        cmd = [binary()]
        if listen is not None:
            cmd += ["-l", listen]
        cmd += list(args)
        if self.script is not None:
            cmd.append(self.script)
        self.cmd = cmd
        e = dict(os.environ)
        e.update(env or {})
        self.lines = []
        self.cond = threading.Condition()
        self.clients = []
        self.host = HOST
        self.port = None
        self.returncode = None
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=e, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        Server.live.append(self)
        self._eof = 0
        self._threads = [threading.Thread(target=self._reader, args=(f,), daemon=True)
                         for f in (self.proc.stderr, self.proc.stdout)]
        for t in self._threads:
            t.start()
        try:
            if quiet_port is None:
                m = self.wait_for_log(r"listening on (\S+):(\d+)", timeout)
                self.port = int(m.group(2))
                # Every address of the line: "listening on A:P, B:Q (TLS), ... (script ...)".
                addrs = re.findall(r"(?:on |, )\S+:(\d+)( \(TLS\))?", m.string)
                self.plain_ports = [int(p) for p, t in addrs if not t]
                self.tls_ports = [int(p) for p, t in addrs if t]
                self.tls_port = self.tls_ports[0] if self.tls_ports else None
            else:
                self._wait_accepting(quiet_port, timeout)
                self.port = quiet_port
        except BaseException:
            self.kill()
            Server.live.remove(self)
            sys.stderr.write(f"server did not start: {' '.join(cmd)}\n{self.log()}\n")
            raise

    def _wait_accepting(self, port, timeout):
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((HOST, port), timeout=timeout).close()
                return
            except ConnectionRefusedError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing accepts on port {port} after {timeout}s")
            try:
                self.proc.wait(0.02)  # a failure guard between attempts: did it exit?
                raise AssertionError(f"server exited with {self.proc.returncode}")
            except subprocess.TimeoutExpired:
                pass

    def _reader(self, f):
        for raw in iter(f.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self._eof += 1
            self.cond.notify_all()

    # --- the log --------------------------------------------------------------------------
    def log(self):
        with self.cond:
            return "\n".join(self.lines)

    def mark(self):
        """A position in the log; wait_for_log(..., after=mark) looks only at later lines."""
        with self.cond:
            return len(self.lines)

    def wait_for_log(self, regex, timeout=DEFAULT_TIMEOUT, after=0):
        """First log line (from `after`) matching regex; returns the match. Fails on timeout or
        when the server's output ends without it."""
        return self.wait_for_line(regex, timeout, after)[1]

    def wait_for_line(self, regex, timeout=DEFAULT_TIMEOUT, after=0):
        """Like wait_for_log, but returns (index of the line, match); index + 1 is a mark."""
        rx = re.compile(regex)
        deadline = time.monotonic() + timeout
        i = after
        with self.cond:
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    if m:
                        return i, m
                    i += 1
                if self._eof == 2:
                    raise AssertionError(f"server output ended without /{regex}/")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no log line matching /{regex}/ within {timeout}s")
                self.cond.wait(left)

    def wait_for_logs(self, regex, count, timeout=DEFAULT_TIMEOUT, after=0):
        """Wait until `count` lines (from `after`) match; returns all the matches."""
        rx = re.compile(regex)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                ms = [m for m in (rx.search(l) for l in self.lines[after:]) if m]
                if len(ms) >= count:
                    return ms
                if self._eof == 2:
                    raise AssertionError(f"server output ended with {len(ms)} of {count} "
                                         f"lines matching /{regex}/")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(ms)} of {count} log lines matching /{regex}/ "
                                       f"within {timeout}s")
                self.cond.wait(left)

    def find_logs(self, regex, after=0):
        rx = re.compile(regex)
        with self.cond:
            return [m for m in (rx.search(l) for l in self.lines[after:]) if m]

    # --- clients --------------------------------------------------------------------------
    def connect(self, path="/", headers=None, **kw):
        c = wsclient.connect(self.host, self.port, path, headers, **kw)
        self.clients.append(c)
        return c

    def connect_tls(self, tls, path="/", headers=None, port=None, **kw):
        """A wss:// client on the (first) TLS listener, through the ssl.SSLContext tls."""
        c = wsclient.connect(self.host, port or self.tls_port, path, headers, tls=tls, **kw)
        self.clients.append(c)
        return c

    def http(self, raw_bytes, tls=None):
        return wsclient.http_request(self.host, self.tls_port if tls else self.port, raw_bytes,
                                     tls=tls)

    def get(self, path, headers=None, tls=None):
        return wsclient.http_get(self.host, self.tls_port if tls else self.port, path, headers,
                                 tls=tls)

    # --- the process ----------------------------------------------------------------------
    def signal(self, sig):
        self.proc.send_signal(sig)

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=_signal.SIGTERM, timeout=DEFAULT_TIMEOUT):
        """Send sig and wait for the exit; returns the exit status (negative: killed by a
        signal). Fails if the server does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"server did not exit within {timeout}s after {sig!r}")
        self._join()
        self.returncode = self.proc.returncode
        return self.returncode

    def wait_exit(self, timeout=DEFAULT_TIMEOUT):
        self.proc.wait(timeout)
        self._join()
        self.returncode = self.proc.returncode
        return self.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._join()

    def _join(self):
        for t in self._threads:
            t.join(2)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        for c in self.clients:
            try:
                c.sock.close()
            except OSError:
                pass
        problem = None
        if self.returncode is None and self.proc.poll() is not None:
            problem = f"server exited on its own with status {self.proc.returncode}"
        elif self.returncode is None and exc_type is None:
            # A clean stop, so that a sanitizer build gets to report leaks at exit.
            try:
                rc = self.stop(_signal.SIGTERM)
                if rc != 0:
                    problem = f"server exited with status {rc} after SIGTERM"
            except AssertionError as e:
                problem = str(e)
        self.kill()
        if self in Server.live:
            Server.live.remove(self)
        if problem is None and self.find_logs(r"AddressSanitizer|LeakSanitizer|runtime error:"):
            problem = "sanitizer report in the server log"
        if exc_type is not None or problem:
            sys.stdout.write(f"\n--- server log ({' '.join(self.cmd)}), "
                             f"exit {self.proc.returncode} ---\n{self.log()}\n--- end ---\n")
        if problem and exc_type is None:
            raise AssertionError(problem)
        return False
