"""A real nginx in front of wsluad, configured with the snippet README.md documents ("Behind
nginx", which must say the same as the man page's BEHIND A REVERSE PROXY): the test puts it into
a config of its own, changing only the upstream port and the timeouts (short, so that the test
can outlast them), and starts nginx with its own prefix on a free port, always stopping it.
Through it: a chat, conn.remote and req.remote being the client's address with --trust-proxy
127.0.0.1/32 (the client connects from 127.0.0.2), on_request, and an idle WebSocket that
outlives proxy_read_timeout because wsluad's pings keep it busy (and, without them, does not)."""

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

import wsclient
from harness import HOST, Server, free_port, source_dir

T = wsclient.DEFAULT_TIMEOUT
CLIENT = "127.0.0.2"  # another loopback address: the client is told apart from nginx by it
READ_TIMEOUT = 2.0  # the test's proxy_read_timeout and proxy_send_timeout, seconds
IDLE = 0.5  # wsluad's --idle-timeout behind it: pings keep the connection busy


def nginx_binary():
    for p in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if p and os.access(p, os.X_OK):
            return p
    pytest.fail("nginx is not installed (scripts/setup --test installs Debian's nginx)")


def check_docs():
    spec = importlib.util.spec_from_file_location(
        "check_docs", os.path.join(source_dir(), "tests", "docs", "check_docs.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def documented_snippet():
    """The nginx configuration of README.md's "Behind nginx"."""
    with open(os.path.join(source_dir(), "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme.split("\n## Behind nginx\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```nginx\n(.*?)```", section, re.S).group(1)


def man_snippet():
    cd = check_docs()
    with open(os.path.join(source_dir(), "man", "wsluad.1"), encoding="utf-8") as f:
        blocks = cd.example_blocks(cd.sections(f.read())["BEHIND A REVERSE PROXY"])
    return blocks[0] + "\n"


def config(snippet, prefix, port, upstream, timeout):
    """A whole nginx.conf around the documented snippet: its http part and its server part, the
    upstream port and the timeouts replaced (each must be there to be replaced)."""
    http_part, server_part = snippet.split("# in server { }\n")
    for old, new in [("proxy_pass http://127.0.0.1:8080;", f"proxy_pass http://127.0.0.1:{upstream};"),
                     ("proxy_read_timeout 300s;", f"proxy_read_timeout {int(timeout * 1000)}ms;"),
                     ("proxy_send_timeout 300s;", f"proxy_send_timeout {int(timeout * 1000)}ms;")]:
        assert server_part.count(old) == 1, f"the documented snippet lacks {old!r}"
        server_part = server_part.replace(old, new)
    temp = "".join(f"    {m}_temp_path {prefix}/tmp/{m};\n"
                   for m in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    # As root the workers would run as nobody, who cannot enter pytest's private directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (f"{user}worker_processes 1;\npid {prefix}/nginx.pid;\n"
            f"error_log {prefix}/error.log info;\n"
            "events { worker_connections 64; }\n"
            "http {\n"
            f"    access_log {prefix}/access.log;\n{temp}"
            f"{http_part}"
            f"    server {{\n        listen {HOST}:{port};\n{server_part}    }}\n"
            "}\n")


class Nginx:
    """nginx with its own prefix and config in a temporary directory, on a free port; stop()
    ends it and every process of its session, whatever happened."""

    def __init__(self, prefix, upstream, timeout=READ_TIMEOUT):
        self.prefix = str(prefix)
        os.makedirs(os.path.join(self.prefix, "logs"), exist_ok=True)
        os.makedirs(os.path.join(self.prefix, "tmp"), exist_ok=True)
        self.port = free_port()
        conf = os.path.join(self.prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(config(documented_snippet(), self.prefix, self.port, upstream, timeout))
        self.proc = subprocess.Popen(
            [nginx_binary(), "-p", self.prefix, "-c", conf, "-e", f"{self.prefix}/error.log",
             "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self):
        deadline = time.monotonic() + T
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited with {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                return
            except ConnectionRefusedError:
                pass
            assert time.monotonic() < deadline, f"nginx does not listen:\n{self.log()}"
            try:
                self.proc.wait(0.02)  # a failure guard between attempts
            except subprocess.TimeoutExpired:
                pass

    def log(self):
        try:
            with open(os.path.join(self.prefix, "error.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # fast shutdown, workers included
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(T)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything left of the session
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.proc.stdout.close()


def ws_via(port, path, source=CLIENT, headers=None):
    """A WebSocket client of nginx connecting from `source`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(T)
    sock.bind((source, 0))
    sock.connect((HOST, port))
    req, key = wsclient.handshake_request(HOST, port, path, headers)
    sock.sendall(req)
    status, h, body, rest = wsclient.read_http_response(sock)
    assert status == 101, f"{status} {body[:200]!r}"
    assert h["sec-websocket-accept"] == wsclient.accept_value(key)
    return wsclient.WSClient(sock, status, h, rest)


def http_via(port, method, path, headers=(), body=b"", source=CLIENT):
    with socket.socket() as s:
        s.settimeout(T)
        s.bind((source, 0))
        s.connect((HOST, port))
        lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", "Connection: close",
                 f"Content-Length: {len(body)}", *[f"{k}: {v}" for k, v in headers]]
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status, h, got, _ = wsclient.read_http_response(s)
        return status, h, got


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    """publish-api.lua behind nginx, trusting it; pings after IDLE seconds of silence."""
    example = os.path.join(source_dir(), "examples", "publish-api.lua")
    with Server(example, "-v", "--static", "none", "--trust-proxy", "127.0.0.1/32",
                "--idle-timeout", str(IDLE), env={"PUBLISH_SECRET": "s3cret-for-tests"}) as s:
        n = Nginx(tmp_path_factory.mktemp("nginx"), s.port)
        try:
            yield s, n
        finally:
            n.stop()


def test_documented_snippets_agree():
    assert documented_snippet() == man_snippet(), \
        "README's and the man page's nginx configurations differ"


def test_chat_through_nginx_knows_the_client(proxied):
    s, n = proxied
    mark = s.mark()
    a = ws_via(n.port, "/topic/lobby")
    b = ws_via(n.port, "/topic/lobby", headers={"X-Forwarded-For": "6.6.6.6"})  # a liar
    a.send_text("hello b")
    assert b.recv_message() == (wsclient.OP_TEXT, b"hello b")
    b.send_text("hello a")
    assert a.recv_message() == (wsclient.OP_TEXT, b"hello a")
    # conn.remote is the client's address (nginx's own is 127.0.0.1): what nginx added to
    # X-Forwarded-For, not what the client wrote there.
    follows = s.wait_for_logs(r"conn#\d+ \(([^)]*)\) follows lobby", 2, after=mark)
    assert [m.group(1) for m in follows] == [CLIENT, CLIENT]
    a.sock.close()
    b.sock.close()


def test_on_request_through_nginx(proxied):
    s, n = proxied
    follower = ws_via(n.port, "/topic/news")
    mark = s.mark()
    status, _, body = http_via(n.port, "POST", "/publish?topic=news",
                               [("Authorization", "Bearer s3cret-for-tests")], b"via nginx")
    assert (status, body) == (200, b"1\n")
    assert follower.recv_message() == (wsclient.OP_TEXT, b"via nginx")
    s.wait_for_log(rf"published 9 bytes to news for {re.escape(CLIENT)} reached 1", after=mark)
    assert http_via(n.port, "GET", "/health")[::2] == (200, b"ok\n")
    assert http_via(n.port, "POST", "/publish?topic=news")[0] == 401
    follower.sock.close()


def idle(client, seconds):
    """Stay silent for `seconds` but answer pings (as browsers do); returns how many came.
    Fails if the connection ends meanwhile."""
    pings = 0
    t0 = time.monotonic()
    end = t0 + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            fin, op, payload = client.recv_frame(timeout=left)
        except TimeoutError:
            break
        except (EOFError, ConnectionResetError) as e:
            raise AssertionError(f"closed after {time.monotonic() - t0:.1f} s idle: {e}")
        assert op == wsclient.OP_PING, (op, payload)
        pings += 1
        client.send_frame(wsclient.OP_PONG, payload)
    return pings


def recv_data(client):
    """The next data message, answering the pings that come before it."""
    while True:
        op, payload = client.recv_message()
        if op != wsclient.OP_PING:
            return op, payload
        client.send_frame(wsclient.OP_PONG, payload)


def test_idle_connection_outlives_the_proxy_timeouts(proxied):
    s, n = proxied
    a = ws_via(n.port, "/topic/quiet")
    t0 = time.monotonic()
    pings = idle(a, 2.5 * READ_TIMEOUT)
    assert time.monotonic() - t0 > 2 * READ_TIMEOUT
    assert pings >= 4  # what kept the connection busy for nginx
    # Still connected both ways, through nginx.
    b = ws_via(n.port, "/topic/quiet")
    b.send_text("still there?")
    assert recv_data(a) == (wsclient.OP_TEXT, b"still there?")
    a.send_text("yes")
    assert recv_data(b) == (wsclient.OP_TEXT, b"yes")
    a.sock.close()
    b.sock.close()


def test_without_pings_nginx_ends_an_idle_connection(tmp_path):
    """The control: the same configuration, wsluad without pings (--idle-timeout 0) and without
    --trust-proxy. nginx closes the silent connection after proxy_read_timeout (so the test
    above is meaningful), and conn.remote is nginx's address."""
    example = os.path.join(source_dir(), "examples", "publish-api.lua")
    with Server(example, "--static", "none", "--idle-timeout", "0",
                env={"PUBLISH_SECRET": "s3cret-for-tests"}) as s:
        n = Nginx(tmp_path, s.port)
        try:
            mark = s.mark()
            c = ws_via(n.port, "/topic/quiet")
            m = s.wait_for_log(r"conn#\d+ \(([^)]*)\) follows quiet", after=mark)
            assert m.group(1).startswith("127.0.0.1:")  # the proxy's address and port
            t0 = time.monotonic()
            with pytest.raises(AssertionError, match="closed after"):
                idle(c, 4 * READ_TIMEOUT)
            assert READ_TIMEOUT * 0.9 < time.monotonic() - t0 < READ_TIMEOUT * 3
            c.sock.close()
        finally:
            n.stop()
