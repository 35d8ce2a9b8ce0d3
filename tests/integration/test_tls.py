"""TLS (--tls-listen, --tls-cert, --tls-key): wss:// and https:// with certificates the test makes
with the real openssl command (tlsutil.py), clients that verify them against a root CA they
trust; conn.secure and req.secure; close_notify on every close; several listeners of both
kinds; hostile clients on the TLS port; certificate errors at start; SIGHUP reloading the pair;
back-pressure counted in bytes the kernel has not taken."""

import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time

import pytest

import tlsutil
from backpressure_util import fill_past_half_then_drain, hello
from harness import Server, run, script_path
from wsclient import OP_BINARY, OP_PONG, OP_TEXT, read_http_response

HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    p = tlsutil.Pki(d)
    p.cert, p.key = p.server("server", 0x1001)
    return p


def tls_args(cert, key, listen="127.0.0.1:0"):
    return ["--tls-listen", listen, "--tls-cert", cert, "--tls-key", key]


@pytest.fixture
def srv(pki):
    with Server("tls.lua", "-v", *tls_args(pki.cert, pki.key)) as s:
        yield s


def raw_tls_socket(port):
    s = socket.create_connection((HOST, port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_to_eof(sock, timeout=10):
    """Everything the server sends until it closes (a reset counts as the end)."""
    deadline = time.monotonic() + timeout
    got = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the server did not close; got {got[:200]!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return got
        if not chunk:
            return got
        got += chunk


def only_alerts(data):
    """True when data is nothing but TLS alert records (content type 21)."""
    while data:
        if len(data) < 5 or data[0] != 21 or data[1] != 3:
            return False
        n = int.from_bytes(data[3:5], "big")
        data = data[5 + n:]
    return True


# --- wss:// and https:// ------------------------------------------------------------------------

def test_wss_echo_secure_and_close_notify(srv, pki):
    c = srv.connect_tls(pki.client(alpn=["http/1.1"]))
    assert c.sock.version() == "TLSv1.3"
    assert c.sock.selected_alpn_protocol() == "http/1.1"
    assert c.sock.getpeercert(binary_form=True) == tlsutil.der(pki.cert)
    srv.wait_for_log(rf"on_open id=\d+ secure=true remote=127\.0\.0\.1:{c.sock.getsockname()[1]}$")
    c.send_text("secure?")
    assert c.recv_text() == "secure=true"
    # Sizes around the frame length forms, the record size (16 KiB) and the write batch (64 KiB).
    for n in (0, 1, 125, 126, 16383, 16384, 16385, 65535, 65536, 65537, 200000, 1000000):
        payload = os.urandom(n)
        c.send_binary(payload)
        op, data = c.recv_message()
        assert op == OP_BINARY and data == payload, n
    # The client closes: its close echoed, then close_notify, then EOF. A close without
    # close_notify would make the unwrapped socket raise SSLEOFError here.
    assert c.close_handshake(1000, "bye") == (1000, "")
    srv.wait_for_log(r"on_close id=\d+ code=1000")


def test_server_initiated_close_sends_close_notify(srv, pki):
    c = srv.connect_tls(pki.client())
    c.send_text("close me")
    assert c.expect_close() == (4001, "as asked")
    c.close(4001)
    c.expect_eof()


def test_tls12(srv, pki):
    c = srv.connect_tls(pki.client(version=ssl.TLSVersion.TLSv1_2))
    assert c.sock.version() == "TLSv1.2"
    c.send_text("over 1.2")
    assert c.recv_text() == "over 1.2"
    c.close_handshake()


def test_tls11_refused(srv):
    # Debian's openssl refuses TLS 1.1 on its own at the default security level: level 0 lets
    # the client offer it, so that it is the server that refuses.
    p = subprocess_run([tlsutil.OPENSSL, "s_client", "-connect", f"{HOST}:{srv.tls_port}",
                        "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"])
    assert "Cipher is (NONE)" in p.stdout or "no protocols available" in p.stderr or \
        "alert protocol version" in p.stderr, p.stdout + p.stderr
    srv.wait_for_log(r"TLS handshake failed: (unsupported protocol|wrong version number)")


def subprocess_run(args):
    return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=20)


def test_renegotiation_refused(srv):
    """A TLS 1.2 client asking to renegotiate (openssl s_client's R command) gets the
    no_renegotiation alert; the server does not renegotiate."""
    p = subprocess.Popen([tlsutil.OPENSSL, "s_client", "-connect", f"{HOST}:{srv.tls_port}",
                          "-tls1_2", "-msg"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 10
        for line in p.stdout:  # the handshake, then the session summary
            lines.append(line)
            if line.startswith("    Verify return code") or "Verify return code" in line:
                break
            assert time.monotonic() < deadline, "".join(lines)
        p.stdin.write("R\n")
        p.stdin.flush()
        for line in p.stdout:
            lines.append(line)
            if "no_renegotiation" in line or "no renegotiation" in line:
                break
        out = "".join(lines)
        assert "RENEGOTIATING" in out and "warning no_renegotiation" in out, out
        assert "<<< TLS 1.2, Handshake" not in out.split("RENEGOTIATING", 1)[1], out
    finally:
        p.kill()
        p.wait()


def test_alpn_without_http11_is_refused(srv, pki):
    with pytest.raises(ssl.SSLError, match="(?i)no.application.protocol"):
        srv.connect_tls(pki.client(alpn=["h2"]))
    c = srv.connect_tls(pki.client(alpn=["h2", "http/1.1"]))
    assert c.sock.selected_alpn_protocol() == "http/1.1"
    c.close_handshake()


def test_https_static_page_and_on_request(srv, pki):
    ctx = pki.client()
    st, h, body = srv.get("/", tls=ctx)
    assert st == 200 and b"wsluad chat" in body
    assert srv.get("/secure", tls=ctx)[2] == b"secure=true"
    assert srv.get("/secure")[2] == b"secure=false"
    # A request body larger than a record and a batch, and an answer as large.
    body = os.urandom(300000)
    req = (f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
           f"Connection: close\r\n\r\n").encode() + body
    with raw_tls_socket(srv.tls_port) as raw:
        s = ctx.wrap_socket(raw, server_hostname=HOST, suppress_ragged_eofs=False)
        s.sendall(req)
        st, h, got, rest = read_http_response(s)
        assert st == 200 and got == body and rest == b""
        assert h["connection"] == "close"
        # close_notify before the FIN: a clean end of the TLS stream.
        s.settimeout(10)
        assert s.recv(1) == b""


def test_https_large_static_file(pki, tmp_path):
    # A file over the 64 KiB answered whole is read into the TLS stream as the client takes it:
    # all of it arrives, then close_notify.
    data = os.urandom(3 << 20)
    (tmp_path / "big.bin").write_bytes(data)
    with Server("tls.lua", "--static", str(tmp_path), *tls_args(pki.cert, pki.key)) as srv:
        with raw_tls_socket(srv.tls_port) as raw:
            s = pki.client().wrap_socket(raw, server_hostname=HOST, suppress_ragged_eofs=False)
            s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            st, h, got, rest = read_http_response(s)
            assert st == 200 and got == data and rest == b""
            s.settimeout(10)
            assert s.recv(1) == b""


@pytest.mark.parametrize("records", ["one per request", "as few as can be"])
def test_pipelined_requests_past_a_record(srv, pki, records):
    """600 pipelined requests sent at once (more than the server reads ahead for a connection,
    in a TLS record each or in 16 KiB records): every one answered, in order. OpenSSL holds
    what one read leaves, and reads ahead from the socket, which then says nothing more: the
    server must go on without it."""
    ctx = pki.client()
    n = 600
    reqs = [b"GET /secure?%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(n)]
    with raw_tls_socket(srv.tls_port) as raw:
        s = ctx.wrap_socket(raw, server_hostname=HOST, suppress_ragged_eofs=False)
        if records == "one per request":
            for r in reqs:
                s.sendall(r)
        else:
            s.sendall(b"".join(reqs))
        rest = b""
        for i in range(n):
            st, h, body, rest = read_http_response(s, buf=rest)
            assert st == 200 and body == b"secure=true", i


def test_many_clients_broadcast_over_both_kinds(pki):
    with Server("tls.lua", *tls_args(pki.cert, pki.key)) as s:
        ctx = pki.client()
        clients = [s.connect_tls(ctx) for _ in range(8)] + [s.connect() for _ in range(8)]
        for i, sender in enumerate(clients):
            for k in range(3):
                sender.send_text(f"chat: {i} {k}")
        for j, c in enumerate(clients):
            got = [c.recv_text() for _ in range(3 * (len(clients) - 1))]
            want = [f"chat: {i} {k}" for i in range(len(clients)) if i != j for k in range(3)]
            assert sorted(got) == sorted(want)
            # each sender's messages in the order sent
            for i in range(len(clients)):
                mine = [g for g in got if g.startswith(f"chat: {i} ")]
                assert mine == sorted(mine)


def test_several_listeners_of_both_kinds(pki):
    args = ["-l", "127.0.0.1:0", "-l", "127.0.0.1:0", *tls_args(pki.cert, pki.key),
            "--tls-listen", "127.0.0.1:0"]
    with Server("tls.lua", *args, listen=None) as s:
        assert len(s.plain_ports) == 2 and len(s.tls_ports) == 2
        s.wait_for_log(r"options listen=127\.0\.0\.1:0,127\.0\.0\.1:0 "
                       r"tls_listen=127\.0\.0\.1:0,127\.0\.0\.1:0$")
        ctx = pki.client()
        cs = [s.connect_tls(ctx, port=p) for p in s.tls_ports]
        cs += [s.connect()]
        s.port = s.plain_ports[1]
        cs += [s.connect()]
        for c, want in zip(cs, ["true", "true", "false", "false"]):
            c.send_text("secure?")
            assert c.recv_text() == f"secure={want}"
        cs[0].send_text("chat: everyone")
        for c in cs[1:]:
            assert c.recv_text() == "chat: everyone"


def test_tls_only(pki):
    with Server("tls.lua", *tls_args(pki.cert, pki.key), listen=None) as s:
        assert s.plain_ports == [] and len(s.tls_ports) == 1
        c = s.connect_tls(pki.client())
        c.send_text("x")
        assert c.recv_text() == "x"


def test_self_signed_pair_as_readme_makes_it(tmp_path):
    cert, key = tlsutil.self_signed(str(tmp_path))
    with Server("tls.lua", *tls_args(cert, key)) as s:
        ctx = ssl.create_default_context(cafile=cert)
        c = s.connect_tls(ctx)
        c.send_text("self")
        assert c.recv_text() == "self"
        c.close_handshake()


# --- hostile clients on the TLS port -------------------------------------------------------------

def still_serves(srv, pki):
    c = srv.connect_tls(pki.client())
    c.send_text("still here")
    assert c.recv_text() == "still here"
    c.close_handshake()


def test_plain_http_on_the_tls_port(srv, pki):
    with raw_tls_socket(srv.tls_port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        got = read_to_eof(s)
        assert not got.startswith(b"HTTP/"), got
        assert only_alerts(got), got
    srv.wait_for_log(r"DEBUG conn#\d+ .*: TLS handshake failed: http request")
    still_serves(srv, pki)


def test_garbage_on_the_tls_port(srv, pki):
    for junk in (b"\x00" * 64, os.urandom(3000), b"\x16\x03\x01\xff\xff" + os.urandom(500),
                 b"\x17\x03\x03\x00\x10" + b"x" * 16):
        mark = srv.mark()
        with raw_tls_socket(srv.tls_port) as s:
            s.sendall(junk)
            got = read_to_eof(s)
            assert only_alerts(got), (junk[:8], got)
        srv.wait_for_log(r"DEBUG conn#\d+ .*: TLS handshake failed: ", after=mark)
    assert not srv.find_logs(r"(WARN|ERROR)")
    still_serves(srv, pki)


def test_truncated_client_hello_then_gone(srv, pki):
    hello = tlsutil.client_hello()
    assert hello[0] == 0x16 and len(hello) > 100
    with raw_tls_socket(srv.tls_port) as s:
        s.sendall(hello[: len(hello) // 2])
        s.shutdown(socket.SHUT_WR)
        assert read_to_eof(s) == b""
    srv.wait_for_log(r"DEBUG conn#\d+ .*: the client left during the TLS handshake$")
    still_serves(srv, pki)


def test_client_reset_mid_handshake_is_logged_with_its_address(srv, pki):
    """A client that resets (RST, not FIN) during the TLS handshake is gone before the line about
    it is written: the line still names its address, not ?:0."""
    with raw_tls_socket(srv.tls_port) as s:
        port = s.getsockname()[1]
        s.sendall(tlsutil.client_hello())
        assert s.recv(5)[0] == 0x16  # the server's flight: it accepted and waits for ours
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    srv.wait_for_log(rf"DEBUG conn#\d+ 127\.0\.0\.1:{port}: the client left during the TLS "
                     rf"handshake: Connection reset by peer$")
    still_serves(srv, pki)


def test_client_drops_mid_handshake(srv, pki):
    """The whole ClientHello, the server's answer read, then the client vanishes."""
    with raw_tls_socket(srv.tls_port) as s:
        s.sendall(tlsutil.client_hello())
        s.settimeout(10)
        assert s.recv(5)[0] == 0x16  # the server's handshake flight
    srv.wait_for_log(r"DEBUG conn#\d+ .*: the client left during the TLS handshake")
    still_serves(srv, pki)


@pytest.mark.parametrize("send", [b"", "half-hello"])
def test_stalled_handshake_times_out(pki, send):
    with Server("tls.lua", "-v", "--handshake-timeout", "0.5",
                *tls_args(pki.cert, pki.key)) as s:
        with raw_tls_socket(s.tls_port) as raw:
            if send:
                h = tlsutil.client_hello()
                raw.sendall(h[: len(h) // 2])
            t0 = time.monotonic()
            assert read_to_eof(raw, timeout=10) == b""
            assert time.monotonic() - t0 < 5
        s.wait_for_log(r"INFO conn#\d+ .*: TLS handshake timeout$")
        # A client that completes the TLS handshake but never sends its request: the same
        # timeout, counted from the connection.
        ctx = pki.client()
        with raw_tls_socket(s.tls_port) as raw:
            t = ctx.wrap_socket(raw, server_hostname=HOST, suppress_ragged_eofs=False)
            t.settimeout(10)
            assert t.recv(1) == b""  # closed, no bytes
        s.wait_for_log(r"INFO conn#\d+ .*: handshake timeout$")


def test_client_hello_on_the_plain_port_gets_400(srv):
    with socket.create_connection((HOST, srv.port), timeout=10) as s:
        s.sendall(tlsutil.client_hello())
        st, h, body, _ = read_http_response(s)
        assert st == 400


def test_client_that_does_not_trust_us(srv, pki, tmp_path):
    other = tlsutil.Pki(str(tmp_path))
    with pytest.raises(ssl.SSLCertVerificationError):
        srv.connect_tls(other.client())
    srv.wait_for_log(r"DEBUG conn#\d+ .*: TLS handshake failed: .*unknown ca")
    still_serves(srv, pki)


@pytest.mark.parametrize("junk", [b"\x17\x03\x03\x00\x20" + b"\x5a" * 32, b"\x5a" * 64],
                         ids=["forged-record", "no-record"])
def test_broken_tls_after_the_handshake_is_no_handshake_failure(srv, pki, junk):
    """Bytes that break TLS on an open connection (a record that does not decrypt, or no TLS
    record at all) end it with 1006; the log says a TLS error, not a failed handshake, which
    was over long before."""
    c = srv.connect_tls(pki.client())
    c.send_text("secure?")
    assert c.recv_text() == "secure=true"
    cid = srv.wait_for_log(r"on_open id=(\d+) secure=true").group(1)
    mark = srv.mark()
    raw = socket.socket(fileno=os.dup(c.sock.fileno()))  # under the TLS layer
    raw.sendall(junk)
    raw.close()
    srv.wait_for_log(rf"on_close id={cid} code=1006", after=mark)
    srv.wait_for_log(rf"DEBUG conn#{cid} .*: TLS error: \w", after=mark)
    assert not srv.find_logs(r"TLS handshake failed", after=mark)
    c.sock.close()
    still_serves(srv, pki)


def test_connection_limit_on_the_tls_port(pki):
    """Past --max-connections a TLS client is closed at once, without an answer: a 503 would cost
    a handshake. The plain port still answers 503."""
    with Server("tls.lua", "--max-connections", "1", *tls_args(pki.cert, pki.key)) as s:
        first = s.connect_tls(pki.client())
        with raw_tls_socket(s.tls_port) as raw:
            raw.sendall(tlsutil.client_hello())
            assert read_to_eof(raw) == b""
        s.wait_for_log(r"refusing connections: too many connections")
        st, h, body = s.get("/")
        assert st == 503 and h.get("retry-after") == "1"
        first.send_text("still served")
        assert first.recv_text() == "still served"
        first.close_handshake()


# --- certificates at start -----------------------------------------------------------------------

def start_fails(*args):
    p = run("--check", *args, script_path("tls.lua"))
    return p.returncode, p.stderr


def test_tls_listen_needs_a_pair(pki):
    rc, err = start_fails("--tls-listen", "127.0.0.1:0")
    assert rc == 2 and "--tls-listen" in err and "--tls-cert" in err and "--tls-key" in err, err
    rc, err = start_fails("--tls-listen", "127.0.0.1:0", "--tls-cert", pki.cert)
    assert rc == 2 and "--tls-key" in err, err
    rc, err = start_fails("--tls-cert", pki.cert, "--tls-key", pki.key)
    assert rc == 2 and "--tls-cert" in err and "--tls-listen" in err, err


def test_certificate_errors_name_the_file_and_the_reason(pki, tmp_path):
    d = str(tmp_path)
    missing = os.path.join(d, "missing.pem")
    junk = os.path.join(d, "junk.pem")
    with open(junk, "w") as f:
        f.write("this is not a certificate\n")
    other_cert, other_key = pki.server("other", 0x2002)
    enc = os.path.join(d, "encrypted.key")
    subprocess_run([tlsutil.OPENSSL, "pkey", "-in", pki.key, "-aes256", "-passout", "pass:x",
                    "-out", enc])
    cases = [
        (missing, pki.key, rf"--tls-cert {re.escape(missing)}: No such file or directory"),
        (pki.cert, missing, rf"--tls-key {re.escape(missing)}: No such file or directory"),
        (junk, pki.key, rf"--tls-cert {re.escape(junk)}: no usable PEM certificate in it"),
        (pki.cert, junk, rf"--tls-key {re.escape(junk)}: no usable PEM private key in it"),
        (pki.cert, other_key, rf"--tls-key {re.escape(other_key)}: does not match the "
                              rf"certificate in {re.escape(pki.cert)}"),
        (pki.cert, enc, rf"--tls-key {re.escape(enc)}: no usable PEM private key in it .*"
                        r"encrypted keys are not supported"),
        (d, pki.key, rf"--tls-cert {re.escape(d)}: "),
    ]
    for cert, key, want in cases:
        rc, err = start_fails(*tls_args(cert, key))
        assert rc == 2, (cert, key, err)
        assert re.search(want, err), (want, err)


def test_a_key_that_is_no_key_is_not_called_encrypted(pki, tmp_path):
    """The reason names what is wrong: an empty key file, or the certificate given as the key,
    holds no key (nothing about encryption); a directory is a directory, for either file."""
    d = str(tmp_path)
    empty = os.path.join(d, "empty.pem")
    open(empty, "w").close()
    cases = [
        (pki.cert, empty, rf"--tls-key {re.escape(empty)}: no usable PEM private key in it"),
        (pki.cert, pki.cert, rf"--tls-key {re.escape(pki.cert)}: no usable PEM private key"),
        (d, pki.key, rf"--tls-cert {re.escape(d)}: Is a directory"),
        (pki.cert, d, rf"--tls-key {re.escape(d)}: Is a directory"),
    ]
    for cert, key, want in cases:
        rc, err = start_fails(*tls_args(cert, key))
        assert rc == 2, (cert, key, err)
        assert re.search(want, err), (want, err)
        assert "encrypted" not in err, err


def test_the_server_does_not_start_with_a_bad_pair(pki, tmp_path):
    other_cert, other_key = pki.server("mismatch", 0x2003)
    p = run("-l", "127.0.0.1:0", *tls_args(pki.cert, other_key), script_path("tls.lua"))
    assert p.returncode == 2 and "does not match" in p.stderr, p.stderr
    assert "listening" not in p.stderr


# --- SIGHUP ----------------------------------------------------------------------------------------

def live_pair(pki, tmp_path, first, second):
    """Two server pairs, pki.server(*first) and pki.server(*second), and the live certificate
    and key files the server reads, holding the first pair: a test copies the second in and
    sends SIGHUP. Returns (cert, key, first pair, second pair)."""
    cert, key = str(tmp_path / "live.pem"), str(tmp_path / "live.key")
    a, b = pki.server(*first), pki.server(*second)
    shutil.copy(a[0], cert)
    shutil.copy(a[1], key)
    return cert, key, a, b


def test_sighup_reloads_the_pair(pki, tmp_path):
    cert, key, (a_cert, a_key), (b_cert, b_key) = live_pair(pki, tmp_path, ("a", 0xA1), ("b", 0xB2))
    ctx = pki.client()
    with Server("tls.lua", *tls_args(cert, key)) as s:
        old = s.connect_tls(ctx)
        assert old.sock.getpeercert(binary_form=True) == tlsutil.der(a_cert)

        shutil.copy(b_cert, cert)
        shutil.copy(b_key, key)
        mark = s.mark()
        s.signal(signal.SIGHUP)
        s.wait_for_log(r"SIGHUP: reloaded the certificate .*live\.pem \(serial B2\)", after=mark)
        s.wait_for_log(r"reloaded .*tls\.lua", after=mark)
        new = s.connect_tls(ctx)
        assert new.sock.getpeercert(binary_form=True) == tlsutil.der(b_cert)
        # The connection made before goes on, on its own session.
        old.send_text("before the reload")
        assert old.recv_text() == "before the reload"
        assert old.sock.getpeercert(binary_form=True) == tlsutil.der(a_cert)

        # A broken pair (B's certificate, A's key) is refused; new connections still get B.
        shutil.copy(a_key, key)
        mark = s.mark()
        s.signal(signal.SIGHUP)
        s.wait_for_log(rf"WARN SIGHUP: --tls-key {re.escape(key)}: does not match the "
                       rf"certificate in {re.escape(cert)}: keeping the certificate in use",
                       after=mark)
        s.wait_for_log(r"reloaded .*tls\.lua", after=mark)
        again = s.connect_tls(ctx)
        assert again.sock.getpeercert(binary_form=True) == tlsutil.der(b_cert)
        for c in (old, new, again):
            c.send_text("all well")
            assert c.recv_text() == "all well"
            c.close_handshake()
        # And a missing file: the same.
        os.unlink(cert)
        mark = s.mark()
        s.signal(signal.SIGHUP)
        s.wait_for_log(rf"WARN SIGHUP: --tls-cert {re.escape(cert)}: No such file", after=mark)
        c = s.connect_tls(ctx)
        assert c.sock.getpeercert(binary_form=True) == tlsutil.der(b_cert)
        c.close_handshake()


# --- back-pressure --------------------------------------------------------------------------------

def test_slow_tls_consumer_closed_1008(pki):
    with Server("backpressure.lua", "--max-backpressure", "256K",
                *tls_args(pki.cert, pki.key)) as s:
        ctx = pki.client()
        slow = s.connect_tls(ctx, rcvbuf=4096)
        sid = hello(slow)
        fast = s.connect_tls(ctx)
        hello(fast)
        nxt = 1
        for _ in range(2000):  # a failure guard: the limit is reached after a few dozen bursts
            fast.send_frame(OP_TEXT, b"burst 8")
            for i in range(nxt, nxt + 8):
                op, data = fast.recv_message()
                assert data[:10] == b"%010d" % i
            nxt += 8
            assert fast.recv_text().startswith(f"burst done {nxt - 1} ")
            if s.find_logs(rf"on_close id={sid} code=1008"):
                break
        else:
            raise AssertionError("the slow consumer was never closed")
        s.wait_for_log(r"slow consumer, \d+ bytes queued \(limit 262144\): closing 1008")
        assert not s.find_logs(rf"on_close id=(?!{sid}\b)")


def test_buffered_counts_ciphertext_and_on_drain(pki):
    """conn:buffered() is what the kernel has not taken, ciphertext included: it stays past
    half the limit while the client does not read, and on_drain comes once it has read all."""
    limit = 1 << 20
    with Server("backpressure.lua", "--max-backpressure", "1M",
                *tls_args(pki.cert, pki.key)) as s:
        d = s.connect_tls(pki.client(), rcvbuf=4096)
        did = hello(d)
        fill_past_half_then_drain(s, d, did, limit)
        d.send_frame(OP_TEXT, b"buffered")
        assert d.recv_text() == "buffered 0"
        d.close_handshake()


def test_pong_while_ciphertext_waits_for_the_kernel(pki):
    """A ping answered while encrypted output still waits for the kernel (the client is not
    reading): the pong goes behind it through TLS, never as plaintext into the TLS stream."""
    with Server("backpressure.lua", "--max-backpressure", "1M",
                *tls_args(pki.cert, pki.key)) as s:
        d = s.connect_tls(pki.client(), rcvbuf=4096)
        did = hello(d)
        # "fill 1" queues one 16 KiB chunk when nothing is queued: encrypted whole by the flush
        # (one record batch), it is what the kernel stops taking once the socket is full. The
        # first "fill 1" that finds something still queued comes right after that.
        mark = s.mark()
        for _ in range(200):
            d.send_frame(OP_TEXT, b"fill 1")
            i, m = s.wait_for_line(rf"fill id={did} start=(\d+)", after=mark)
            mark = i + 1
            if int(m.group(1)) > 0:
                break
        else:
            raise AssertionError("the socket never filled")
        d.ping(b"still there?")
        chunks = 0
        while True:
            _, op, data = d.recv_frame()
            if op == OP_PONG:
                assert data == b"still there?"
                break
            chunks += op == OP_BINARY
        assert chunks > 0


# --- --workers ------------------------------------------------------------------------------------

def test_workers_share_the_tls_port_and_reload_the_pair(pki, tmp_path, redis_server):
    """Each worker listens on the same TLS port (port 0: the supervisor's pick, as for -l) with
    the context read before the fork; SIGHUP reaches every worker, and each reloads the pair."""
    cert, key, (a_cert, a_key), (b_cert, b_key) = live_pair(pki, tmp_path, ("wa", 0xC1),
                                                           ("wb", 0xC2))
    ctx = pki.client()
    with Server("workers.lua", "--workers", "2", "--redis", redis_server.url,
                *tls_args(cert, key)) as s:
        ports = s.wait_for_logs(r"\[w(\d)\] .*listening on 127\.0\.0\.1:\d+, "
                                r"127\.0\.0\.1:(\d+) \(TLS\)", 2)
        assert {m.group(1) for m in ports} == {"1", "2"}
        assert len({m.group(2) for m in ports}) == 1, "the workers listen on different ports"

        def served_by_both(want_der):
            pids = set()
            for _ in range(200):  # the kernel spreads connections by address hash
                c = s.connect_tls(ctx)
                assert c.sock.getpeercert(binary_form=True) == want_der
                pids.add(int(re.fullmatch(r"pid (\d+)", c.recv_text()).group(1)))
                c.sock.close()
                if len(pids) == 2:
                    return
            raise AssertionError(f"only {pids} served 200 connections")

        served_by_both(tlsutil.der(a_cert))
        shutil.copy(b_cert, cert)
        shutil.copy(b_key, key)
        mark = s.mark()
        s.signal(signal.SIGHUP)
        s.wait_for_logs(r"\[w\d\] .*SIGHUP: reloaded the certificate .*\(serial C2\)", 2,
                        after=mark)
        served_by_both(tlsutil.der(b_cert))
