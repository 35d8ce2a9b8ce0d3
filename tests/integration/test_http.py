"""Plain HTTP: the upgrade's error answers (400, 405, 426, 404) and the static file handler
with its traversal guard. (Requests the script answers, keep-alive and pipelining: test_request.py.)"""

import os
import socket

import pytest

import wsclient
from harness import HOST, Server, source_dir, wait_until
from wsclient import handshake_request, read_http_response


def exchange(server, raw):
    """Send raw bytes; return (status, headers, body) and check that the server then closes
    the connection (error answers carry Connection: close, and so does any answer to a request
    that says Connection: close)."""
    with socket.create_connection((HOST, server.port), timeout=wsclient.DEFAULT_TIMEOUT) as s:
        s.sendall(raw)
        status, headers, body, rest = read_http_response(s)
        assert rest == b"", f"bytes after the response: {rest[:200]!r}"
        s.settimeout(wsclient.DEFAULT_TIMEOUT)
        try:
            tail = s.recv(4096)
        except ConnectionResetError:
            tail = b""
        assert tail == b"", f"expected the server to close, got {tail[:200]!r}"
        return status, headers, body


def upgrade(server, path="/", headers=None, method="GET"):
    req, _ = handshake_request(HOST, server.port, path, headers)
    if method != "GET":
        req = method.encode() + req[3:]
    return req


def check_error(status, headers, body, expected):
    assert status == expected, f"status {status}, body {body[:200]!r}"
    assert body.strip(), "an error answer carries a short text body"
    assert headers.get("content-type", "").startswith("text/")
    assert "close" in headers.get("connection", "").lower()
    assert int(headers["content-length"]) == len(body)


@pytest.fixture(scope="module")
def server():
    with Server("echo.lua", "--static", "none") as s:
        yield s


# --- upgrade errors ---------------------------------------------------------------------------
BAD_REQUESTS = {
    "missing_key": {"Sec-WebSocket-Key": None},
    "key_not_base64": {"Sec-WebSocket-Key": "not base64 at all!!"},
    "key_wrong_length": {"Sec-WebSocket-Key": "c2hvcnQ="},  # "short": 5 bytes, not 16
    "key_17_bytes": {"Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAAAAA="},
    "connection_without_upgrade": {"Connection": "keep-alive"},
    "missing_connection": {"Connection": None},
    "upgrade_not_websocket": {"Upgrade": "h2c"},
}


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_bad_upgrade_400(server, name):
    check_error(*exchange(server, upgrade(server, headers=BAD_REQUESTS[name])), 400)


def test_http10_upgrade_400(server):
    # What a reverse proxy left at HTTP/1.0 (nginx's default) sends: the README and the man page
    # promise exactly this answer, so a proxy user can recognise it.
    req = upgrade(server).replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1)
    status, headers, body = exchange(server, req)
    check_error(status, headers, body, 400)
    assert body == b"a WebSocket upgrade needs HTTP/1.1\n"


def test_missing_version_is_an_error(server):
    status, headers, body = exchange(server, upgrade(server, headers={"Sec-WebSocket-Version": None}))
    assert status in (400, 426)
    check_error(status, headers, body, status)


def test_garbage_request_400(server):
    check_error(*exchange(server, b"THIS IS NOT HTTP\r\n\r\n"), 400)


def test_malformed_header_400(server):
    check_error(*exchange(server, b"GET / HTTP/1.1\r\nHost x\r\n\r\n"), 400)


@pytest.mark.parametrize("version", ["8", "12", "14", "abc"])
def test_wrong_version_426(server, version):
    status, headers, body = exchange(
        server, upgrade(server, headers={"Sec-WebSocket-Version": version}))
    check_error(status, headers, body, 426)
    assert headers.get("sec-websocket-version") == "13"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_upgrade_with_other_method_405(server, method):
    check_error(*exchange(server, upgrade(server, method=method)), 405)


def test_plain_post_without_on_request_404(server):
    # Methods other than GET and HEAD are for on_request; without it, nothing is there.
    raw = (f"POST /index.html HTTP/1.1\r\nHost: {HOST}:{server.port}\r\n"
           f"Connection: close\r\nContent-Length: 3\r\n\r\nabc").encode()
    check_error(*exchange(server, raw), 404)


def test_connection_token_list_case_insensitive(server):
    c = server.connect(headers={"Connection": "keep-alive, UPGRADE", "Upgrade": "WebSocket"})
    c.send_frame(wsclient.OP_TEXT, b"ok")
    assert c.recv_message() == (wsclient.OP_TEXT, b"ok")


def test_static_none_plain_get_404(server):
    close = "Connection: close\r\n"
    check_error(*exchange(server, f"GET / HTTP/1.1\r\nHost: {HOST}\r\n{close}\r\n".encode()),
                404)
    check_error(*exchange(server, f"GET /index.html HTTP/1.1\r\nHost: x\r\n{close}\r\n".encode()),
                404)


def test_server_survives_http_errors(server):
    # After all of the above the server still upgrades.
    c = server.connect()
    c.send_frame(wsclient.OP_TEXT, b"alive")
    assert c.recv_message() == (wsclient.OP_TEXT, b"alive")


# --- the static handler -----------------------------------------------------------------------
FILES = {
    "index.html": (b"<!doctype html><title>root index</title>", "text/html"),
    "style.css": (b"body { color: red }", "text/css"),
    "app.js": (b"console.log('hi')", ("application/javascript", "text/javascript")),
    "data.json": (b'{"a": 1}', "application/json"),
    "pic.png": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "image/png"),
    "notes.txt": (b"plain notes", "text/plain"),
    "icon.svg": (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
    "sub/index.html": (b"<p>sub index</p>", "text/html"),
    "sub/deeper/page.html": (b"<p>deep page</p>", "text/html"),
}
SECRET = b"TOP-SECRET-OUTSIDE-THE-STATIC-DIR"


@pytest.fixture(scope="module")
def static(tmp_path_factory):
    root = tmp_path_factory.mktemp("static")
    www = root / "www"
    for name, (data, _) in FILES.items():
        p = www / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (root / "secret.txt").write_bytes(SECRET)
    (root / "outside").mkdir()
    (root / "outside" / "file.txt").write_bytes(SECRET)
    os.symlink(root / "secret.txt", www / "leak.txt")
    os.symlink(root / "outside", www / "outdir")
    os.symlink("../secret.txt", www / "relleak.txt")
    with Server("echo.lua", "--static", str(www)) as s:
        yield s


def get(server, path):
    return exchange(server, f"GET {path} HTTP/1.1\r\nHost: {HOST}:{server.port}\r\n"
                            f"Connection: close\r\n\r\n".encode())


@pytest.mark.parametrize("name", sorted(FILES))
def test_static_file_and_content_type(static, name):
    data, ctype = FILES[name]
    status, headers, body = get(static, "/" + name)
    assert status == 200
    assert body == data
    types = ctype if isinstance(ctype, tuple) else (ctype,)
    assert headers.get("content-type", "").split(";")[0].strip() in types
    assert int(headers["content-length"]) == len(data)


def test_static_index_at_root(static):
    status, headers, body = get(static, "/")
    assert status == 200
    assert body == FILES["index.html"][0]
    assert headers["content-type"].startswith("text/html")


def test_static_index_in_subdirectory(static):
    status, headers, body = get(static, "/sub/")
    assert status == 200
    assert body == FILES["sub/index.html"][0]


def test_static_percent_encoded_name(static):
    status, _, body = get(static, "/%73tyle.css")  # %73 = "s"
    assert status == 200 and body == FILES["style.css"][0]


@pytest.mark.parametrize("path", ["/missing.html", "/sub/missing", "/sub/deeper/", "/nope/"])
def test_static_404(static, path):
    check_error(*get(static, path), 404)


# Each way out of the directory, and what it gets: a path that leaves the directory names no file
# in it (404, as the man page says); a NUL or a malformed escape is a bad request (400).
TRAVERSALS = {
    "/../secret.txt": 404,
    "/../../../../../../etc/passwd": 404,
    "/sub/../../secret.txt": 404,
    "/%2e%2e/secret.txt": 404,
    "/%2E%2E/secret.txt": 404,
    "/%2e%2e%2fsecret.txt": 404,
    "/..%2fsecret.txt": 404,
    "/sub/%2e%2e/%2e%2e/secret.txt": 404,
    "/.%2e/secret.txt": 404,
    "/%252e%252e/secret.txt": 404,
    "/..\\secret.txt": 404,
    "/leak.txt": 404,
    "/relleak.txt": 404,
    "/outdir/file.txt": 404,
    "/outdir/": 404,
    "//etc/passwd": 404,
    "/%00/../secret.txt": 400,
    "/%zz/../secret.txt": 400,
}


@pytest.mark.parametrize("path", sorted(TRAVERSALS))
def test_static_traversal_refused(static, path):
    status, headers, body = get(static, path)
    check_error(status, headers, body, TRAVERSALS[path])
    assert SECRET not in body
    assert b"root:" not in body


# Dot segments that stay inside the directory are resolved first, then served.
@pytest.mark.parametrize("path,name", [
    ("/sub/../index.html", "index.html"),
    ("/sub/%2e%2e/style.css", "style.css"),
    ("/./sub/./deeper/../index.html", "sub/index.html"),
    ("/sub/deeper/..", "sub/index.html"),
    ("/sub//deeper/page.html", "sub/deeper/page.html"),
])
def test_static_dot_segments_inside_served(static, path, name):
    status, _, body = get(static, path)
    assert status == 200, f"{path} answered {status}"
    assert body == FILES[name][0]


def test_static_dir_still_served_after_traversal_attempts(static):
    status, _, body = get(static, "/index.html")
    assert status == 200 and body == FILES["index.html"][0]


def test_static_and_websocket_on_same_port(static):
    c = static.connect("/")
    c.send_frame(wsclient.OP_TEXT, b"ws on /")
    assert c.recv_message() == (wsclient.OP_TEXT, b"ws on /")


def test_default_static_serves_bundled_chat_page():
    # Run from the build tree without --static: the bundled page of examples/www is at "/".
    index = os.path.join(source_dir(), "examples", "www", "index.html")
    with Server("echo.lua") as s:
        status, headers, body = get(s, "/")
        assert status == 200
        assert headers["content-type"].startswith("text/html")
        with open(index, "rb") as f:
            assert body == f.read()


# --- large files: read as the client takes them ------------------------------------------------
BIG = 8 << 20  # well over the 64 KiB answered whole (WSL_STATIC_INLINE)


@pytest.fixture(scope="module")
def big_static(tmp_path_factory):
    www = tmp_path_factory.mktemp("bigstatic")
    data = os.urandom(BIG)
    (www / "big.bin").write_bytes(data)
    (www / "small.txt").write_bytes(b"small\n")
    with Server("echo.lua", "--static", str(www), env=no_quarantine()) as s:
        yield s, data


def no_quarantine():
    """The environment for a server whose RSS is measured: under ASan, freed memory would wait in
    its quarantine and count as held (harmless without ASan, so set whether or not ctest got
    ASAN_OPTIONS)."""
    asan = os.environ.get("ASAN_OPTIONS")
    return {"ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=0"}


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_large_file_to_clients_that_do_not_read(big_static):
    # Ten clients ask for an 8 MiB file and read only the head. Each answer is under way once its
    # head arrived; had the server taken the files in whole (as it did), it would now hold 80 MiB
    # more. It holds a bounded part of each, serves everyone else meanwhile, and each stalled
    # client still gets the file whole, byte for byte, once it reads.
    s, data = big_static
    before = rss_kib(s.proc.pid)
    req = f"GET /big.bin HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    stalled = []
    try:
        for _ in range(10):
            c = socket.create_connection((HOST, s.port), timeout=wsclient.DEFAULT_TIMEOUT)
            stalled.append(c)
            c.sendall(req)
            head = b""
            while b"\r\n\r\n" not in head:
                head += c.recv(1)  # the head alone: the body stays in the socket
            assert head.startswith(b"HTTP/1.1 200 ") and f"Content-Length: {BIG}".encode() in head
        grown = rss_kib(s.proc.pid) - before
        assert grown < 16 * 1024, f"the server grew by {grown} KiB for 10 clients not reading"
        assert get(s, "/small.txt")[2] == b"small\n"
        for c in stalled[:2]:
            body = bytearray()
            while len(body) < BIG:
                chunk = c.recv(1 << 20)
                assert chunk, f"EOF after {len(body)} of {BIG} bytes"
                body += chunk
            assert body == data
    finally:
        for c in stalled:
            c.close()


def test_large_file_then_pipelined_request(big_static):
    # A request pipelined behind a large file is answered after the whole file, not inside it.
    s, data = big_static
    req = (f"GET /big.bin HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
           f"GET /small.txt HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection((HOST, s.port), timeout=wsclient.DEFAULT_TIMEOUT) as c:
        c.sendall(req)
        status, _, body, rest = read_http_response(c)
        assert status == 200 and body == data
        status, _, body, rest = read_http_response(c, buf=rest)
        assert (status, body, rest) == (200, b"small\n", b"")


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_large_file_clients_that_leave_mid_file(big_static):
    # Clients that go away in the middle of a file leave no open file behind.
    s, _ = big_static
    before = fd_count(s.proc.pid)
    req = f"GET /big.bin HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    for _ in range(20):
        with socket.create_connection((HOST, s.port), timeout=wsclient.DEFAULT_TIMEOUT) as c:
            c.sendall(req)
            assert c.recv(65536).startswith(b"HTTP/1.1 200 ")
    wait_until(lambda: fd_count(s.proc.pid) <= before, "the files closed")


def test_large_file_that_shrinks_while_sent(tmp_path):
    # The length was promised in the head: a file cut short under us ends the connection before
    # that length (the client sees a short body, not a wrong one), with a log line.
    data = os.urandom(15 << 20)  # far more than the sockets between us can hold
    path = tmp_path / "shrinks.bin"
    path.write_bytes(data)
    with Server("echo.lua", "--static", str(tmp_path)) as s:
        with socket.socket() as c:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # a small window
            c.settimeout(wsclient.DEFAULT_TIMEOUT)
            c.connect((HOST, s.port))
            c.sendall(f"GET /shrinks.bin HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            got = c.recv(4096)
            assert got.startswith(b"HTTP/1.1 200 ")
            os.truncate(path, 1 << 20)
            while True:
                chunk = c.recv(1 << 20)
                if not chunk:
                    break
                got += chunk
        body = got[got.index(b"\r\n\r\n") + 4:]
        assert len(body) < len(data) and data.startswith(body)
        s.wait_for_log(r"GET /shrinks\.bin: the file could not be sent whole: it shrank")


# --- files of any size: there is no size limit ----------------------------------------------------
HUGE = 40 << 20  # over the 16 MiB that used to be refused with 403
MARKS = {0: os.urandom(4096), (20 << 20) + 123: os.urandom(4096), HUGE - 4096: os.urandom(4096)}


@pytest.fixture(scope="module")
def huge_static(tmp_path_factory):
    # A sparse file (truncate: no disk used) with a few random blocks at known places, so that a
    # body of the right length with the wrong bytes, or in the wrong order, shows.
    www = tmp_path_factory.mktemp("hugestatic")
    with open(www / "huge.bin", "wb") as f:
        f.truncate(HUGE)
        for at, data in MARKS.items():
            f.seek(at)
            f.write(data)
    expected = bytearray(HUGE)
    for at, data in MARKS.items():
        expected[at:at + len(data)] = data
    with Server("echo.lua", "--static", str(www), env=no_quarantine()) as s:
        yield s, bytes(expected)


def test_huge_file_served_whole_to_a_slow_reader(huge_static):
    # A 40 MiB file is served, read a piece at a time by a client with a small receive window;
    # while it reads, the server holds a bounded part of the file, never the file.
    s, expected = huge_static
    before = rss_kib(s.proc.pid)
    grown = 0
    with socket.socket() as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.settimeout(wsclient.DEFAULT_TIMEOUT)
        c.connect((HOST, s.port))
        c.sendall(f"GET /huge.bin HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        got = bytearray()
        while b"\r\n\r\n" not in got:
            got += c.recv(1)
        assert got.startswith(b"HTTP/1.1 200 ")
        assert f"\r\nContent-Length: {HUGE}\r\n".encode() in got
        body = bytearray()
        while True:
            chunk = c.recv(256 << 10)
            if not chunk:
                break
            body += chunk
            if len(body) % (4 << 20) < len(chunk):  # every 4 MiB or so
                grown = max(grown, rss_kib(s.proc.pid) - before)
        assert len(body) == HUGE and body == expected
    assert grown < 8 * 1024, f"the server grew by {grown} KiB sending a {HUGE >> 20} MiB file"


def test_huge_file_head_and_range(huge_static):
    # HEAD: the length, no body, and the connection goes on. Range is not supported: the whole
    # file comes, 200 (RFC 9110 lets a server ignore Range).
    s, expected = huge_static
    req = (f"HEAD /huge.bin HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
           f"GET /huge.bin HTTP/1.1\r\nHost: {HOST}\r\nRange: bytes=0-99\r\n"
           f"Connection: close\r\n\r\n").encode()
    with socket.create_connection((HOST, s.port), timeout=wsclient.DEFAULT_TIMEOUT) as c:
        c.sendall(req)
        data = bytearray()
        while chunk := c.recv(1 << 20):
            data += chunk
    head_end = data.index(b"\r\n\r\n") + 4
    head = bytes(data[:head_end])
    assert head.startswith(b"HTTP/1.1 200 ") and f"Content-Length: {HUGE}\r\n".encode() in head
    status, headers, body, rest = read_http_response(None, buf=bytes(data[head_end:]))
    assert status == 200 and "content-range" not in headers
    assert int(headers["content-length"]) == HUGE and body == expected and rest == b""


# --- pipelining clients that do not read ------------------------------------------------------
# A keep-alive connection's next request is parsed only once the last answer is all written, and
# at most 12 KiB of what the client sends is read ahead: a client that pipelines many requests
# and reads nothing makes the server hold one answer, not one per request.

@pytest.fixture  # a server per test: what one test made the heap grow to would hide the next
def pipelined(tmp_path_factory):
    www = tmp_path_factory.mktemp("pipelined")
    files = {f"{k}.bin": os.urandom(60 << 10) for k in "abc"}  # under 64 KiB: read whole
    for name, data in files.items():
        (www / name).write_bytes(data)
    with Server("request.lua", "--static", str(www), env=no_quarantine()) as s:
        yield s, files


def pipeline_unread(s, paths, bodies, bound_kib, check_every):
    """Send every request at once on one connection (a small receive window, nothing read), then
    read the answers slowly: while they are read the server grows by less than bound_kib, and
    each answer is complete and in order."""
    req = b"".join(f"GET {p} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode() for p in paths)
    before = rss_kib(s.proc.pid)
    grown = []
    with socket.socket() as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.settimeout(wsclient.DEFAULT_TIMEOUT)
        c.connect((HOST, s.port))
        c.sendall(req)
        # Another connection answered: the loop has read the pipelined requests by now (they
        # were sent first), and an unbounded server would have queued the answers to them all.
        for _ in range(5):
            assert http_get_status(s, "/hello") == 200
        grown.append(rss_kib(s.proc.pid) - before)
        rest = b""
        for i, (path, body) in enumerate(zip(paths, bodies)):
            status, headers, got, rest = read_http_response(c, buf=rest)
            assert status == 200, f"answer {i} to {path}: {status}"
            assert got == body, f"answer {i} to {path}: {len(got)} bytes, not those asked for"
            if i % check_every == 0:
                grown.append(rss_kib(s.proc.pid) - before)
        assert rest == b""
    assert max(grown) < bound_kib, \
        f"the server grew by up to {max(grown)} KiB for a client pipelining {len(paths)} requests"


def http_get_status(s, path):
    with socket.create_connection((HOST, s.port), timeout=wsclient.DEFAULT_TIMEOUT) as c:
        c.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        return read_http_response(c)[0]


def test_pipelined_large_answers_not_read(pipelined):
    # 200 answers of 1 MiB from req:respond (200 MiB, were they queued at once).
    s, _ = pipelined
    n = 1 << 20
    paths = [f"/tagged?n={n}&i={i}" for i in range(200)]
    bodies = [(p.split("?", 1)[1]).encode().ljust(n, b"x") for p in paths]
    pipeline_unread(s, paths, bodies, bound_kib=32 * 1024, check_every=10)


def test_pipelined_small_files_not_read(pipelined):
    # 990 GETs of a 60 KiB file each (58 MiB, were they queued at once), three files in turn.
    s, files = pipelined
    names = [f"{k}.bin" for k in "abc"]
    paths = [f"/{names[i % 3]}" for i in range(990)]
    bodies = [files[p[1:]] for p in paths]
    pipeline_unread(s, paths, bodies, bound_kib=8 * 1024, check_every=50)
