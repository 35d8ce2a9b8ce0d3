"""Plain HTTP requests handled in Lua (on_request, scripts/request.lua): fields, bodies
(Content-Length and chunked), answers and their headers, keep-alive and pipelining answered in
order, HTTP/1.0, HEAD, the fallback to files, req:defer() and req:respond(), every 500, 408, 413
and 504, the limits a client runs into (body size, a slow body, the request cap, read-ahead),
--trust-proxy, and an upgrade on a kept-alive connection."""

import os
import re
import select
import signal
import socket
import time

import pytest

import wsclient
from harness import HOST, Server

T = wsclient.DEFAULT_TIMEOUT


class Http:
    """One client connection speaking HTTP/1.1 by hand: requests written as given, answers read
    strictly (every answer of this server carries Content-Length unless it has no body)."""

    def __init__(self, server_or_port, host=HOST, source=None, family=socket.AF_INET):
        port = getattr(server_or_port, "port", server_or_port)
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(T)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.port = self.sock.getsockname()[1]
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, raw):
        self.sock.sendall(raw)

    def request(self, method, path, body=None, headers=(), version="HTTP/1.1", host=True):
        self.send(build(method, path, body, headers, version, host))

    def _fill(self, deadline, what):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out waiting for {what}")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 16)
        except socket.timeout:
            raise TimeoutError(f"timed out waiting for {what}") from None
        if not chunk:
            raise EOFError(f"EOF while waiting for {what}; have {self.buf[:200]!r}")
        self.buf += chunk

    def response(self, head=False, timeout=T):
        """(status, headers: lower-case name -> value, lines: [(name, value)], body)."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline, "an answer head")
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw.decode("latin-1").split("\r\n")
        m = re.match(r"HTTP/1\.1 (\d{3}) [^\r\n]*$", lines[0])
        assert m, f"bad status line {lines[0]!r}"
        status = int(m.group(1))
        fields = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            assert sep and name == name.strip() and name, f"bad header line {line!r}"
            fields.append((name.lower(), value.strip()))
        headers = {}
        for k, v in fields:
            headers[k] = headers[k] + ", " + v if k in headers else v
        if head or status in (204, 304) or status < 200:
            return status, headers, fields, b""
        assert "content-length" in headers, f"no Content-Length in {headers}"
        n = int(headers["content-length"])
        while len(self.buf) < n:
            self._fill(deadline, "an answer body")
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, fields, body

    def get(self, path, **kw):
        self.request("GET", path, **kw)
        return self.response()

    def wait_closed(self, timeout=T):
        """The server closes: EOF (or a reset) with no bytes besides what was read."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "the server did not close the connection"
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(4096)
            except socket.timeout:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                assert self.buf == b"", f"bytes after the last answer: {self.buf[:200]!r}"
                return
            self.buf += chunk

    def still_open(self):
        """Nothing to read and no EOF right now (after an answer that keeps it alive)."""
        r, _, _ = select.select([self.sock], [], [], 0)
        if r:
            self.sock.settimeout(T)
            data = self.sock.recv(4096, socket.MSG_PEEK)
            return data != b""
        return True


def build(method, path, body=None, headers=(), version="HTTP/1.1", host=True):
    lines = [f"{method} {path} {version}"]
    if host:
        lines.append(f"Host: {HOST}")
    lines += [f"{k}: {v}" for k, v in headers]
    if body is not None and not any(k.lower() in ("transfer-encoding", "content-length")
                                    for k, _ in headers):
        lines.append(f"Content-Length: {len(body)}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return raw + (body or b"")


def chunked(*pieces, trailer=b""):
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n" + trailer + b"\r\n"


@pytest.fixture(scope="module")
def srv():
    with Server("request.lua", "-v", "--static", "none", "--request-timeout", "1.5",
                "--max-request-body", "64K") as s:
        yield s


@pytest.fixture(scope="module")
def www(tmp_path_factory):
    d = tmp_path_factory.mktemp("www")
    (d / "index.html").write_bytes(b"<p>index</p>")
    (d / "file.txt").write_bytes(b"a file\n")
    return d


@pytest.fixture(scope="module")
def files(www):
    with Server("request.lua", "--static", str(www)) as s:
        yield s


def describe(body):
    out = {}
    for line in body.decode().splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


# --- the request ----------------------------------------------------------------------------

def test_fields(srv):
    with Http(srv) as c:
        st, h, _, body = c.get("/describe?a=1&b=%20x", headers=[("X-Custom", "v1"),
                                                                 ("X-Custom", "v2"),
                                                                 ("Accept", "*/*")])
        assert st == 200
        d = describe(body)
        assert d["method"] == "GET" and d["path"] == "/describe" and d["query"] == "a=1&b=%20x"
        assert d["remote"] == f"127.0.0.1:{c.port}"
        assert d["secure"] == "false"
        assert d["body"] == "0"
        assert d["h:x-custom"] == "v1, v2"  # lower-case names, repeats joined
        assert d["h:accept"] == "*/*" and d["h:host"] == HOST


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS",
                                    "PROPFIND"])
def test_any_method(srv, method):
    with Http(srv) as c:
        c.request(method, "/hello", body=b"" if method in ("POST", "PUT") else None)
        st, h, _, body = c.response()
        assert (st, body) == (200, f"hello {method}".encode())
        assert h["content-type"] == "text/plain; charset=utf-8"
        assert "connection" not in h  # HTTP/1.1 stays open without saying so
        assert c.still_open()


def test_options_asterisk(srv):
    with Http(srv) as c:
        c.request("OPTIONS", "*")
        st, _, _, body = c.response()
        assert st == 404  # the script has no route for "*": the server's answer


def test_body_content_length(srv):
    data = bytes(range(256)) * 40
    with Http(srv) as c:
        c.request("POST", "/echo", body=data, headers=[("Content-Type", "application/x-bin")])
        st, h, _, body = c.response()
        assert (st, body) == (200, data)
        assert h["content-type"] == "application/x-bin"


def test_body_chunked_in_pieces(srv):
    with Http(srv) as c:
        c.send(build("PUT", "/echo", headers=[("Transfer-Encoding", "chunked")]))
        body = chunked(b"hello", b" ", b"world" * 100, trailer=b"X-Sum: 1\r\n")
        for i in range(0, len(body), 7):  # the decoder must not care how the bytes arrive
            c.send(body[i:i + 7])
        st, _, _, got = c.response()
        assert (st, got) == (200, b"hello " + b"world" * 100)
        assert c.get("/hello")[3] == b"hello GET"  # and the connection is still in step


def test_expect_100_continue(srv):
    with Http(srv) as c:
        c.send(build("POST", "/echo", headers=[("Expect", "100-continue"),
                                               ("Content-Length", "5")]))
        st, _, _, _ = c.response()
        assert st == 100
        c.send(b"abcde")
        assert c.response()[::3] == (200, b"abcde")


def test_expect_other_417(srv):
    with Http(srv) as c:
        c.request("POST", "/echo", body=b"x", headers=[("Expect", "something")])
        assert c.response()[0] == 417
        c.wait_closed()


# --- answers --------------------------------------------------------------------------------

def test_headers_of_the_answer(srv):
    with Http(srv) as c:
        st, h, fields, body = c.get("/cookies")
        assert st == 200 and body == b"c"
        assert [v for k, v in fields if k == "set-cookie"] == ["a=1", "b=2"]
        assert h["x-n"] == "42"
        st, h, _, body = c.get("/json")
        assert st == 201 and body == b'{"ok":true}'
        assert h["content-type"] == "application/json"  # the script's, not the default


@pytest.mark.parametrize("code", [204, 304])
def test_status_without_body(srv, code):
    with Http(srv) as c:
        st, h, _, body = c.get(f"/status?code={code}")
        assert st == code and body == b""
        assert "content-length" not in h
        assert c.get("/hello")[3] == b"hello GET"  # no body bytes were sent after the head


@pytest.mark.parametrize("code", [200, 202, 301, 404, 418, 451, 503, 599])
def test_status_passes_through(srv, code):
    with Http(srv) as c:
        st, _, _, body = c.get(f"/status?code={code}")
        assert st == code and body == b"a body that may not be sent"


def test_large_answer(srv):
    with Http(srv) as c:
        st, _, _, body = c.get("/big?n=3000000")
        assert st == 200 and body == b"x" * 3000000
        assert c.get("/hello")[3] == b"hello GET"


def test_head_gets_the_headers_of_get(srv):
    with Http(srv) as c:
        c.request("HEAD", "/hello")
        st, h, _, body = c.response(head=True)
        assert st == 200 and body == b""
        assert h["content-length"] == str(len(b"hello HEAD"))
        # The next answer starts right after that head: no body bytes came.
        st, _, _, body = c.get("/hello")
        assert (st, body) == (200, b"hello GET")


# --- errors in the script: 500 and a traceback in the log ------------------------------------

ERRORS = {
    "/error": "boom in on_request",
    "/error-table": "error object is a table value",
    "/bad-status": "status 700 is not 200-599",
    "/bad-status-1xx": "status 101 is not 200-599",
    "/bad-status-type": "status must be an integer, got string",
    # "must be an integer, got number" did not say which number was wrong.
    "/bad-status-float": "status must be an integer, got 200.5",
    "/bad-status-inf": "status must be an integer, got inf",
    "/bad-body": "body must be a string, got table",
    "/bad-header-value": "header 'X-Bad': CR, LF or another control byte",
    "/bad-header-ctl": "header 'X-Bad': CR, LF or another control byte",
    "/bad-header-name": "a header name must be a token",
    "/bad-header-reserved": "header 'Content-Length' is written by the server",
    "/bad-headers": "headers must be a table, got string",
    "/readonly": "req.method is read-only",
}


@pytest.mark.parametrize("path", sorted(ERRORS))
def test_script_errors_answer_500(srv, path):
    mark = srv.mark()
    with Http(srv) as c:
        st, h, _, body = c.get(path)
        assert st == 500 and body == b"Internal Server Error\n"
        assert "x-injected" not in h and "x-bad" not in h
        assert c.get("/hello")[0] == 200  # a proper answer: the connection goes on
        port = c.port
    i, _ = srv.wait_for_line(r"ERROR Lua error in on_request: .*" + re.escape(ERRORS[path]),
                             after=mark)
    j, _ = srv.wait_for_line(r"^stack traceback:$", after=i + 1)  # the same log entry goes on
    assert j == i + 1, srv.log().splitlines()[i:j + 1]
    # The ERROR line does not name the client: a WARN line does, whatever failed (a wrong
    # answer, such as a bad status, had none).
    srv.wait_for_log(rf"WARN conn#\d+ 127\.0\.0\.1:{port}: answered 500 after a Lua error$",
                     after=mark)


def test_respond_with_bad_values_later_500(srv):
    mark = srv.mark()
    with Http(srv) as c:
        st, _, _, _ = c.get("/respond-bad-later")
        assert st == 500
    srv.wait_for_log(r"Lua error in ws\.timer callback: .*req:respond: header 'X': CR, LF",
                     after=mark)


def test_spawned_function_failing_answers_500(srv):
    mark = srv.mark()
    with Http(srv) as c:
        assert c.get("/spawn-error")[0] == 500
    # Named as on_request's own errors are: a plain request's connection has no "remote" to
    # show (it once read "(conn#4 ): ").
    srv.wait_for_log(r"Lua error in a function run by ws\.spawn: \S*request\.lua:\d+: "
                     r"boom in a spawned function$", after=mark)


# --- defer and respond ----------------------------------------------------------------------

def test_defer_then_respond_from_a_timer(srv):
    mark = srv.mark()
    with Http(srv) as c:
        assert c.get("/defer?ms=50")[::3] == (200, b"late /defer")
    srv.wait_for_log(r"deferred respond: true nil nil", after=mark)


def test_defer_then_respond_from_ws_spawn(srv):
    with Http(srv) as c:
        c.request("POST", "/spawn", body=b"body")
        assert c.response()[::3] == (200, b"spawned body")


def test_defer_then_respond_from_ws_redis(redis_server):
    # A real redis-server: the answer waits for its reply, by callback or inside ws.spawn.
    with Server("request.lua", "--static", "none", "--redis", redis_server.url) as s:
        s.wait_for_log(r"redis: link up")
        with Http(s) as c:
            c.request("POST", "/redis-callback", body=b"2")
            assert c.response()[::3] == (200, b"hits 2")
            c.request("POST", "/redis-spawn", body=b"3")
            assert c.response()[::3] == (200, b"hits 5")
        assert redis_server.command("GET", "hits") == b"5"


def test_respond_inside_on_request_then_again(srv):
    mark = srv.mark()
    with Http(srv) as c:
        assert c.get("/respond-twice")[::3] == (202, b"first")
        assert c.get("/hello")[3] == b"hello GET"  # the ignored return values sent nothing
    srv.wait_for_log(r"respond twice: true nil closed ECLOSED", after=mark)


def test_req_after_its_answer_is_closed(srv):
    with Http(srv) as c:
        assert c.get("/after-return")[::3] == (200, b"returned")
        # respond and defer on it later: nil, "closed", "ECLOSED"
        assert c.get("/answer-returned")[3] == b"nil closed ECLOSED nil ECLOSED"


def test_deferred_without_answer_504(srv):
    with Http(srv) as c:
        t0 = time.monotonic()
        st, _, _, body = c.get("/defer-never")
        waited = time.monotonic() - t0
        assert st == 504 and body == b"Gateway Timeout\n"
        assert 1.2 < waited < 5, waited  # --request-timeout 1.5
        # the connection goes on, and the req object of the timed-out request is closed
        assert c.get("/answer-never")[3] == b"nil closed ECLOSED"


def test_respond_after_the_client_left(srv):
    mark = srv.mark()
    c = Http(srv)
    c.request("GET", "/defer-keep")
    srv.wait_for_log(r"kept req \(GET /defer-keep\)", after=mark)
    c.close()
    srv.wait_for_log(r"GET /defer-keep: the client left before the answer", after=mark)
    with Http(srv) as d:
        assert d.get("/answer-kept")[3] == b"nil closed ECLOSED"


def test_req_object(srv):
    with Http(srv) as c:
        assert c.get("/fields")[3] == b"req (GET /fields)|function|nil"


# --- the fallback: files, 404 ---------------------------------------------------------------

def test_nothing_returned_falls_back_to_files(files):
    with Http(files) as c:
        assert c.get("/index.html")[::3] == (200, b"<p>index</p>")  # the route returned nothing
        assert c.get("/index.html?script")[::3] == (200, b"from the script")
        assert c.get("/file.txt")[::3] == (200, b"a file\n")  # no route at all
        c.request("HEAD", "/file.txt")
        st, h, _, body = c.response(head=True)
        assert st == 200 and h["content-length"] == "7"
        assert c.get("/missing")[0] == 404
        c.request("POST", "/file.txt", body=b"x")  # files answer GET and HEAD only
        assert c.response()[0] == 404
        assert c.still_open()


def test_without_static_404(srv):
    with Http(srv) as c:
        st, _, _, body = c.get("/fallback")
        assert (st, body) == (404, b"Not Found\n")
        assert c.get("/hello")[0] == 200


# --- keep-alive and pipelining --------------------------------------------------------------

def test_keep_alive_many_requests(srv):
    mark = srv.mark()
    with Http(srv) as c:
        for i in range(20):
            assert c.get(f"/n/{i}")[::3] == (200, f"/n/{i}".encode())
    # one connection served them all
    lines = srv.wait_for_logs(r"conn#(\d+) .*: GET /n/\d+ 200", 20, after=mark)
    assert len({m.group(1) for m in lines}) == 1, [m.group(0) for m in lines]


def test_pipelined_requests_answered_in_order(srv):
    paths = ["/defer?ms=200", "/n/1", "/defer?ms=20", "/deferred/a", "/n/2", "/spawn",
             "/n/3", "/describe"]
    with Http(srv) as c:
        c.send(b"".join(build("POST" if p == "/spawn" else "GET", p,
                              body=b"s" if p == "/spawn" else None) for p in paths))
        bodies = [c.response()[3] for _ in paths]
    assert bodies[:7] == [b"late /defer", b"/n/1", b"late /defer", b"/deferred/a", b"/n/2",
                          b"spawned s", b"/n/3"]
    assert bodies[7].startswith(b"method=GET")


def test_pipelined_beyond_the_read_ahead(srv):
    # 2,000 requests in one go (about 70 KiB, many times what is read ahead while one is
    # answered): all answered, in order, the 1,000th closing the connection (the cap).
    reqs = b"".join(build("GET", f"/n/{i}") for i in range(2000))
    with Http(srv) as c:
        c.sock.setblocking(False)
        sent, got = 0, 0
        deadline = time.monotonic() + 60
        while got < 1000:
            assert time.monotonic() < deadline
            want_w = [c.sock] if sent < len(reqs) else []
            r, w, _ = select.select([c.sock], want_w, [], 1)
            if w:
                try:
                    sent += c.sock.send(reqs[sent:sent + 65536])
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    pass
            if r:
                try:
                    data = c.sock.recv(1 << 16)
                except BlockingIOError:
                    continue
                assert data, f"EOF after {got} answers"
                c.buf += data
                while True:
                    m = re.match(rb"HTTP/1\.1 200 OK\r\n(.*?)\r\n\r\n", c.buf, re.S)
                    if not m:
                        break
                    n = int(re.search(rb"Content-Length: (\d+)", m.group(1)).group(1))
                    if len(c.buf) < m.end() + n:
                        break
                    assert c.buf[m.end():m.end() + n] == f"/n/{got}".encode()
                    closing = b"Connection: close" in m.group(1)
                    assert closing == (got == 999), f"answer {got}: {m.group(1)!r}"
                    c.buf = c.buf[m.end() + n:]
                    got += 1
        c.sock.setblocking(True)
        c.wait_closed()


def test_connection_close(srv):
    with Http(srv) as c:
        c.request("GET", "/hello", headers=[("Connection", "close")])
        st, h, _, _ = c.response()
        assert st == 200 and h["connection"] == "close"
        c.wait_closed()


def test_http10(srv):
    with Http(srv) as c:
        c.request("GET", "/hello", version="HTTP/1.0", host=False)
        st, h, _, body = c.response()
        assert (st, body) == (200, b"hello GET") and h["connection"] == "close"
        c.wait_closed()
    with Http(srv) as c:
        for _ in range(3):
            c.request("GET", "/hello", version="HTTP/1.0", headers=[("Connection", "keep-alive")])
            st, h, _, _ = c.response()
            assert st == 200 and h["connection"] == "keep-alive"
        assert c.still_open()


def test_idle_keep_alive_connection_closed():
    with Server("request.lua", "--static", "none", "--idle-timeout", "0.5") as s:
        with Http(s) as c:
            assert c.get("/hello")[0] == 200
            t0 = time.monotonic()
            c.wait_closed()
            assert time.monotonic() - t0 > 0.4


def test_bad_second_request_400_and_close(srv):
    with Http(srv) as c:
        c.send(build("GET", "/hello") + b"NOT HTTP AT ALL\r\n\r\n")
        assert c.response()[0] == 200
        assert c.response()[0] == 400
        c.wait_closed()


def test_second_head_too_large_431(srv):
    with Http(srv) as c:
        assert c.get("/hello")[0] == 200
        c.send(b"GET /n/x HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
        assert c.response()[0] == 431
        c.wait_closed()


def test_upgrade_on_a_kept_alive_connection(srv):
    with Http(srv) as c:
        assert c.get("/hello")[0] == 200
        raw, key = wsclient.handshake_request(HOST, srv.port, "/t/room")
        c.send(raw)
        st, h, _, _ = c.response(head=True)
        assert st == 101 and h["sec-websocket-accept"] == wsclient.accept_value(key)
        c.send(wsclient.build_frame(wsclient.OP_TEXT, b"echo me"))
        deadline = time.monotonic() + T
        while len(c.buf) < 9:
            c._fill(deadline, "the echo")
        assert c.buf[:9] == b"\x81\x07echo me"


# --- limits ---------------------------------------------------------------------------------

def test_body_over_the_limit_413_before_reading_it(srv):
    mark = srv.mark()
    with Http(srv) as c:
        # announced: refused from the head alone (nothing of the body is sent)
        c.send(build("POST", "/echo", headers=[("Content-Length", str(64 * 1024 + 1))]))
        st, h, _, body = c.response()
        assert st == 413 and h["connection"] == "close"
        c.wait_closed()
    with Http(srv) as c:
        c.send(build("POST", "/echo", headers=[("Content-Length", str(64 * 1024)),
                                               ("Expect", "100-continue")]))
        assert c.response()[0] == 100  # exactly the limit is fine
        c.send(b"y" * 64 * 1024)
        assert c.response()[::3] == (200, b"y" * 64 * 1024)
    i, _ = srv.wait_for_line(r"HTTP 413: request body larger than --max-request-body", after=mark)
    srv.wait_for_log(r"POST /echo 200", after=i)  # the log has caught up with both requests
    assert not srv.find_logs(r"POST /echo 413", after=mark)  # not a request the script saw


def test_expect_100_over_the_limit_413_without_continue(srv):
    with Http(srv) as c:
        c.send(build("POST", "/echo", headers=[("Content-Length", "9999999"),
                                               ("Expect", "100-continue")]))
        assert c.response()[0] == 413
        c.wait_closed()


def test_huge_chunked_body_sent_slowly_413(srv):
    """A chunked body announces no size: it is counted as it arrives and refused once past the
    limit, while the client is still sending."""
    with Http(srv) as c:
        c.send(build("POST", "/echo", headers=[("Transfer-Encoding", "chunked")]))
        piece = b"%x\r\n%s\r\n" % (4096, b"z" * 4096)
        sent = 0
        deadline = time.monotonic() + T
        while True:
            assert time.monotonic() < deadline, f"no answer after {sent} bytes of body"
            r, _, _ = select.select([c.sock], [], [], 0.02)  # paces the client; waits on nothing
            if r:
                break
            try:
                c.send(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 4096
        st, h, _, _ = c.response()
        assert st == 413 and h["connection"] == "close"
        assert 64 * 1024 <= sent < 1024 * 1024, sent  # refused long before it ends
        c.wait_closed()


def test_body_slower_than_request_timeout_408(srv):
    with Http(srv) as c:
        c.send(build("POST", "/echo", headers=[("Content-Length", "100")]) + b"only ten..")
        t0 = time.monotonic()
        st, h, _, _ = c.response()
        assert st == 408 and h["connection"] == "close"
        assert time.monotonic() - t0 > 1.2  # --request-timeout 1.5
        c.wait_closed()


@pytest.mark.parametrize("body", [b"5\r\nabc\r\n", b"zz\r\n", b"3\nabc\r\n0\r\n\r\n"])
def test_malformed_chunked_400(srv, body):
    with Http(srv) as c:
        c.send(build("POST", "/echo", headers=[("Transfer-Encoding", "chunked")]) + body +
               b"0\r\n\r\n")
        assert c.response()[0] == 400
        c.wait_closed()


@pytest.mark.parametrize("headers,status", [
    ([("Transfer-Encoding", "chunked"), ("Content-Length", "3")], 400),
    ([("Transfer-Encoding", "gzip, chunked")], 501),
    ([("Transfer-Encoding", "chunked, gzip")], 400),
])
def test_smuggling_shapes_refused(srv, headers, status):
    with Http(srv) as c:
        c.send(build("POST", "/echo", headers=headers) + b"0\r\n\r\n")
        assert c.response()[0] == status
        c.wait_closed()


# --- the handler uses ws ---------------------------------------------------------------------

def test_publish_and_broadcast_from_on_request(srv):
    a = srv.connect("/t/news")
    b = srv.connect("/t/other")
    mark = srv.mark()
    with Http(srv) as c:
        c.request("POST", "/publish?topic=news", body=b"extra! extra!")
        assert c.response()[::3] == (200, b"1\n")
        assert a.recv_message() == (wsclient.OP_TEXT, b"extra! extra!")
        c.request("POST", "/broadcast", body=b"to all")
        st, _, _, body = c.response()
        assert st == 200 and int(body) >= 2
        assert a.recv_message() == (wsclient.OP_TEXT, b"to all")
        assert b.recv_message() == (wsclient.OP_TEXT, b"to all")
    srv.wait_for_log(r"POST /broadcast 200", after=mark)  # the log has caught up
    assert not srv.find_logs(r"ERROR", after=mark)


def test_shutdown_answers_a_deferred_request_then_exits():
    with Server("request.lua", "--static", "none") as s:
        c = Http(s)
        mark = s.mark()
        c.request("GET", "/defer?ms=1000")
        s.wait_for_log(r"deferring /defer 1000", after=mark)
        s.signal(signal.SIGTERM)
        st, h, _, body = c.response()
        assert (st, body) == (200, b"late /defer") and h["connection"] == "close"
        c.wait_closed()
        c.close()
        assert s.wait_exit() == 0


# --- behind a proxy: --trust-proxy --------------------------------------------------------------

@pytest.fixture(scope="module")
def trusting():
    with Server("request.lua", "--static", "none", "--trust-proxy", "10.0.0.0/8, 127.0.0.1/32") as s:
        yield s


@pytest.mark.parametrize("headers,remote,secure", [
    ([("X-Forwarded-For", "203.0.113.7")], "203.0.113.7", "false"),
    ([("X-Forwarded-For", "198.51.100.1, 203.0.113.7, 10.1.2.3")], "203.0.113.7", "false"),
    ([("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-For", "10.0.0.1, 10.0.0.2")],
     "198.51.100.1", "false"),
    ([("X-Forwarded-For", "10.0.0.1, 127.0.0.1")], "10.0.0.1", "false"),  # all trusted
    ([("X-Forwarded-For", "garbage, 10.0.0.9")], "10.0.0.9", "false"),  # the walk stops
    ([("X-Forwarded-For", "2001:db8::1")], "2001:db8::1", "false"),
    ([("X-Forwarded-For", "[2001:db8::2]:4711")], "2001:db8::2", "false"),
    ([("X-Forwarded-For", "203.0.113.8:5555")], "203.0.113.8", "false"),
    ([("X-Real-IP", "203.0.113.9")], "203.0.113.9", "false"),
    ([("X-Real-IP", "203.0.113.9"), ("X-Forwarded-For", "203.0.113.10")], "203.0.113.10",
     "false"),
    ([("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")], "203.0.113.7",
     "true"),
    ([("X-Forwarded-Proto", "http, https")], None, "true"),
    ([("X-Forwarded-Proto", "HTTPS")], None, "true"),
    ([("X-Forwarded-Proto", "gopher")], None, "false"),
])
def test_trusted_proxy_names_the_client(trusting, headers, remote, secure):
    with Http(trusting) as c:
        d = describe(c.get("/describe", headers=headers)[3])
        assert d["remote"] == (remote or f"127.0.0.1:{c.port}")
        assert d["secure"] == secure


def test_trusted_proxy_upgrade(trusting):
    mark = trusting.mark()
    c = trusting.connect("/t/x", headers={"X-Forwarded-For": "192.0.2.44",
                                          "X-Forwarded-Proto": "https"})
    trusting.wait_for_log(r"on_upgrade remote=192\.0\.2\.44 secure=true", after=mark)
    trusting.wait_for_log(r"on_open id=\d+ secure=true remote=192\.0\.2\.44$", after=mark)
    c.close()


def test_untrusted_peer_cannot_say_who_it_is():
    with Server("request.lua", "--static", "none", "--trust-proxy", "10.0.0.0/8,::1") as s:
        with Http(s) as c:
            d = describe(c.get("/describe", headers=[("X-Forwarded-For", "203.0.113.7"),
                                                     ("X-Real-IP", "203.0.113.8"),
                                                     ("X-Forwarded-Proto", "https")])[3])
            assert d["remote"] == f"127.0.0.1:{c.port}" and d["secure"] == "false"
        mark = s.mark()
        ws = s.connect("/t/x", headers={"X-Forwarded-For": "203.0.113.7",
                                        "X-Forwarded-Proto": "https"})
        s.wait_for_log(rf"on_open id=\d+ secure=false remote=127\.0\.0\.1:{ws.sock.getsockname()[1]}$",
                       after=mark)


def test_without_trust_proxy_headers_are_ignored(srv):
    with Http(srv) as c:
        d = describe(c.get("/describe", headers=[("X-Forwarded-For", "203.0.113.7"),
                                                 ("X-Forwarded-Proto", "https")])[3])
        assert d["remote"] == f"127.0.0.1:{c.port}" and d["secure"] == "false"


def test_trust_proxy_ipv6_peer():
    with Server("request.lua", "--static", "none", "--trust-proxy", "::1/128",
                listen="[::1]:0") as s:
        with Http(s.port, host="::1", family=socket.AF_INET6) as c:
            d = describe(c.get("/describe", headers=[("X-Forwarded-For", "203.0.113.70")])[3])
            assert d["remote"] == "203.0.113.70"


def test_trust_proxy_option_errors():
    from harness import run, script_path
    for bad in ["bogus", "10.0.0.0/33", "::1/129", "10.0.0.0/", "1.2.3.4/8/9", ",", "10.0.0.0/-1"]:
        r = run("--check", "--trust-proxy", bad, script_path("request.lua"))
        assert r.returncode == 2, (bad, r.stderr)
        assert "--trust-proxy" in r.stderr
