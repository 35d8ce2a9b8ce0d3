"""Shared helpers for the conformance and hostile-input suites.

Builds on tests/integration's wsclient (raw-socket client) and harness (Server); adds what these
suites need on top: servers stopped with SIGTERM and held to a clean exit (so LeakSanitizer runs),
resource limits for the server process, chopped sends, on_open/on_close bookkeeping, /proc probes.
"""

import contextlib
import functools
import itertools
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("WSLUAD_SRC") or os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))

import harness  # noqa: E402
import wsclient  # noqa: E402
from wsclient import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG,  # noqa: E402,F401
                      OP_TEXT, OPNAMES, build_frame, close_payload)

SCRIPTS = os.path.join(HERE, "scripts")
TIMEOUT = wsclient.DEFAULT_TIMEOUT
SANITIZER_RX = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:")


def echo_script():
    """examples/echo.lua once it exists; until then our own minimal echo."""
    p = os.path.join(SRC, "examples", "echo.lua")
    return p if os.path.exists(p) else os.path.join(HERE, "echo.lua")


def script(name):
    return os.path.join(SCRIPTS, name)


def is_sanitized():
    """True when the server binary was built with ASan (its RSS then says nothing about leaks)."""
    with open(harness.binary(), "rb") as f:
        return b"__asan_init" in f.read()


def _limit_nofile(n):
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


def raise_nofile(want):
    """Raise this process's soft open-file limit (up to the hard limit); returns the new soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = min(max(soft, want), hard) if hard != resource.RLIM_INFINITY else max(soft, want)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return new


def start_server(script_path, *args, nofile=None, **kw):
    """A harness.Server; with nofile, the server process runs under RLIMIT_NOFILE=nofile (set by
    preexec_fn in the child, so this process's own limit is untouched)."""
    if nofile is None:
        return harness.Server(script_path, *args, **kw)
    real_popen = subprocess.Popen
    harness.subprocess.Popen = functools.partial(real_popen,
                                                 preexec_fn=functools.partial(_limit_nofile, nofile))
    try:
        return harness.Server(script_path, *args, **kw)
    finally:
        harness.subprocess.Popen = real_popen


def stop_clean(srv, timeout=30):
    """SIGTERM, then insist on exit status 0 and no sanitizer report (LeakSanitizer runs at
    exit, so this is where leaks show up)."""
    rc = srv.stop(signal.SIGTERM, timeout)
    bad = [l for l in srv.lines if SANITIZER_RX.search(l)]
    assert not bad, "sanitizer report in the server's stderr:\n" + "\n".join(bad[:20])
    assert rc == 0, f"server exited with status {rc} after SIGTERM"


@contextlib.contextmanager
def server(script_path, *args, nofile=None, **kw):
    """Run a server for a block; on leaving normally it must stop cleanly on SIGTERM. Its log is
    printed when anything in the block (or the stop) failed."""
    with start_server(script_path, *args, nofile=nofile, **kw) as srv:
        yield srv
        stop_clean(srv)


@contextlib.contextmanager
def log_on_failure(srv):
    """For tests sharing one server: print the server's log lines since the start of the test
    when the test fails (pytest shows them with the failure). Yields the log mark."""
    mark = srv.mark()
    try:
        yield mark
    except BaseException:
        with srv.cond:
            lines = srv.lines[mark:]
        print(f"--- server log during this test ({len(lines)} lines) ---")
        print("\n".join(lines[-200:]))
        raise


def proc_cpu_seconds(pid):
    """utime + stime of a process, in seconds, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return ticks / os.sysconf("SC_CLK_TCK")


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def proc_fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


# --- sending in chops -----------------------------------------------------------------------

def send_chopped(c, data, chop, pause=0.0):
    """Send bytes in pieces of `chop` bytes, each its own send() (TCP_NODELAY is on, so each
    leaves as its own segment). `pause` spaces the pieces out so the server's reads see them
    apart; it makes the server's partial-input paths run, it never stands in for waiting on
    an answer."""
    if not chop:
        c.send_raw(data)
        return
    for i in range(0, len(data), chop):
        c.send_raw(data[i:i + chop])
        if pause:
            time.sleep(pause)


def send_frames(c, frames, chop=None):
    """Send a list of frames: chop None = all in one write; "frame" = one write per frame;
    an int = writes of that many bytes (tiny writes are spaced out a little, see above)."""
    if chop is None:
        c.send_raw(b"".join(frames))
    elif chop == "frame":
        for f in frames:
            send_chopped(c, f, None)
            time.sleep(0.002)
    else:
        data = b"".join(frames)
        send_chopped(c, data, chop, pause=0.0005 if len(data) <= 4096 else 0.0)


# --- expectations ---------------------------------------------------------------------------

def _close_quietly(c, code):
    try:
        c.close(code)
    except OSError:
        pass


def expect_fail(c, codes, timeout=TIMEOUT):
    """The server must fail the connection: its next frame is a close with one of `codes` (no
    data or pong before it), then TCP closes once we answer the close."""
    if isinstance(codes, int):
        codes = (codes,)
    code, reason = c.expect_close(timeout)
    assert code in codes, f"server closed with {code} {reason!r}, expected {codes}"
    _close_quietly(c, code)
    c.expect_eof(timeout)
    return code, reason


def finish_clean(c, timeout=TIMEOUT):
    """Client-initiated clean close: the next frame must be the server's close 1000 echo (so
    nothing unexpected arrived before it), then TCP closes."""
    got = c.close_handshake(1000, "", timeout)
    assert got[0] == 1000, f"close echo {got}, expected 1000"
    c.sock.close()  # the server holds the connection until our FIN


def check_serving(srv, text="still serving?"):
    """The server is alive and a fresh connection gets an echo."""
    assert srv.alive(), f"server died (status {srv.proc.poll()})"
    with srv.connect() as c:
        c.send_text(text)
        assert c.recv_message() == (OP_TEXT, text.encode())
        finish_clean(c)


def nothing_arrives(c, within=0.1):
    """Assert no byte is waiting after a short look. Only used where the spec says the server
    must NOT react yet; a slow server makes this pass, never fail falsely."""
    return not c.readable(within)


# --- on_open / on_close bookkeeping (scripts log "on_open id=N" / "on_close id=N code=C") ------

OPEN_RX = r"on_open id=(\d+)"
_paths = itertools.count()


def connect_id(srv, tag="c"):
    """Connect on a path of its own and return (client, id), the id read from that connection's
    own on_open line: a log mark alone can precede lines of earlier connections still on their
    way through the pipe. (Needs a script that logs the path, like scripts/count.lua.)"""
    path = f"/{tag}-{next(_paths)}"
    c = srv.connect(path=path)
    cid = int(srv.wait_for_log(rf"on_open id=(\d+) path={re.escape(path)}(\s|$)").group(1))
    return c, cid
CLOSE_RX = r"on_close id=(\d+) code=(\d+)"


def ids_opened(srv, after=0):
    return [int(m.group(1)) for m in srv.find_logs(OPEN_RX, after)]


def closes(srv, after=0):
    return [(int(m.group(1)), int(m.group(2))) for m in srv.find_logs(CLOSE_RX, after)]


def wait_all_closed(srv, after=0, timeout=TIMEOUT):
    """Wait until every connection opened after log mark `after` has had on_close; fail on a
    second on_close for any of them. (Closes of older connections may still trickle in after
    the mark; check_open_close_balance judges those over the whole log.)"""
    deadline = time.monotonic() + timeout
    while True:
        opened = set(ids_opened(srv, after))
        closed = [i for i, _ in closes(srv) if i in opened]
        dup = {i for i in closed if closed.count(i) > 1}
        assert not dup, f"on_close ran more than once for ids {sorted(dup)[:20]}"
        if opened == set(closed):
            return len(opened)
        if time.monotonic() > deadline:
            missing = sorted(opened - set(closed))
            raise AssertionError(f"{len(missing)} of {len(opened)} opened connections never "
                                 f"got on_close: ids {missing[:20]}")
        with srv.cond:
            srv.cond.wait(0.2)


def check_open_close_balance(srv):
    """Over the whole log (after the server stopped): exactly one on_close per on_open."""
    opened = ids_opened(srv)
    closed = [i for i, _ in closes(srv)]
    assert len(set(opened)) == len(opened), "an id was opened twice"
    dup = sorted({i for i in closed if closed.count(i) > 1})
    assert not dup, f"on_close ran more than once for ids {dup[:20]}"
    missing = sorted(set(opened) - set(closed))
    assert not missing, f"no on_close for ids {missing[:20]}"
    stray = sorted(set(closed) - set(opened))
    assert not stray, f"on_close for ids never opened: {stray[:20]}"


def raw_connect(srv, timeout=TIMEOUT):
    s = socket.create_connection((srv.host, srv.port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_until_eof(sock, timeout=TIMEOUT, limit=1 << 20):
    """Read until the peer closes; returns what arrived. A reset counts as the end."""
    deadline = time.monotonic() + timeout
    out = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"connection still open after {timeout}s; got {bytes(out[:200])!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(out)
        except socket.timeout:
            continue
        if not chunk:
            return bytes(out)
        out += chunk
        if len(out) > limit:
            raise AssertionError("too much data while waiting for EOF")
