"""A small raw-socket WebSocket client for tests.

It builds any frame (including invalid ones) and checks the server's frames strictly, so tests
can both misbehave as a client and catch a misbehaving server. Timeouts are failure guards only.
"""

import base64
import hashlib
import os
import select
import socket
import struct
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DEFAULT_TIMEOUT = float(os.environ.get("WSLUAD_TEST_TIMEOUT", "10"))

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
OPNAMES = {0: "cont", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}


class ProtocolViolation(AssertionError):
    """The server sent something RFC 6455 forbids."""


class HandshakeError(AssertionError):
    """The server did not answer the upgrade with a valid 101."""

    def __init__(self, msg, status=None, headers=None, body=b""):
        super().__init__(msg)
        self.status = status
        self.headers = headers or {}
        self.body = body


def accept_value(key):
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (str)."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def _norm_headers(headers):
    if headers is None:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)


def handshake_request(host, port, path="/", headers=None, key=None):
    """The bytes of an upgrade request; `headers` override the defaults by name (a value of
    None removes that header)."""
    key = key or base64.b64encode(os.urandom(16)).decode()
    base = [
        ("Host", f"{host}:{port}"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ]
    extra = _norm_headers(headers)
    names = {k.lower() for k, _ in extra}
    lines = [f"GET {path} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in base if k.lower() not in names]
    lines += [f"{k}: {v}" for k, v in extra if v is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


def _parse_head(head):
    text = head.decode("iso-8859-1")
    lines = text.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolViolation(f"bad status line {lines[0]!r}")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        if ":" not in line:
            raise ProtocolViolation(f"bad header line {line!r}")
        k, v = line.split(":", 1)
        k = k.strip().lower()
        v = v.strip()
        headers[k] = headers[k] + ", " + v if k in headers else v
    return status, headers


def _recv_some(sock, deadline, what):
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(f"timed out waiting for {what}")
    sock.settimeout(remaining)
    try:
        return sock.recv(1 << 16)
    except socket.timeout:
        raise TimeoutError(f"timed out waiting for {what}") from None


def read_http_response(sock, timeout=DEFAULT_TIMEOUT, buf=b""):
    """Read one HTTP response head (+ body by Content-Length, or to EOF without one).
    Returns (status, headers, body, leftover_bytes_after_it)."""
    deadline = time.monotonic() + timeout
    buf = bytearray(buf)
    while b"\r\n\r\n" not in buf:
        chunk = _recv_some(sock, deadline, "an HTTP response head")
        if not chunk:
            raise ProtocolViolation(f"EOF before the end of the HTTP head: {bytes(buf)!r}")
        buf += chunk
    i = buf.index(b"\r\n\r\n")
    status, headers = _parse_head(bytes(buf[:i]))
    rest = buf[i + 4:]
    if status == 101:
        return status, headers, b"", bytes(rest)
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(rest) < n:
            chunk = _recv_some(sock, deadline, "an HTTP response body")
            if not chunk:
                raise ProtocolViolation(f"EOF after {len(rest)} of {n} body bytes")
            rest += chunk
        return status, headers, bytes(rest[:n]), bytes(rest[n:])
    while True:
        try:
            chunk = _recv_some(sock, deadline, "the end of an HTTP body")
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return status, headers, bytes(rest), b""
        rest += chunk


def tls_wrap(ctx, sock, host):
    """sock (connected) wrapped by ctx, the TLS handshake done. Ragged EOFs are not suppressed:
    a server that closes without close_notify makes recv raise ssl.SSLEOFError."""
    return ctx.wrap_socket(sock, server_hostname=host, suppress_ragged_eofs=False)


def http_request(host, port, raw_bytes, timeout=DEFAULT_TIMEOUT, tls=None):
    """Send raw bytes, return (status, headers lower-case dict, body bytes). tls: an
    ssl.SSLContext for https."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        if tls is not None:
            s = tls_wrap(tls, s, host)
        s.sendall(raw_bytes)
        status, headers, body, _ = read_http_response(s, timeout)
        return status, headers, body


def http_get(host, port, path, headers=None, timeout=DEFAULT_TIMEOUT, tls=None):
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in _norm_headers(headers)]
    return http_request(host, port, ("\r\n".join(lines) + "\r\n\r\n").encode(), timeout, tls)


def build_frame(opcode, payload=b"", fin=True, mask=True, rsv=0, mask_key=None,
                length=None, length_bytes=None):
    """Any frame. `length` lies about the payload length; `length_bytes` (0, 2 or 8) forces a
    length form, minimal or not."""
    if isinstance(payload, str):
        payload = payload.encode()
    payload = bytes(payload)
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    mbit = 0x80 if mask else 0
    if length_bytes is None:
        length_bytes = 0 if n < 126 else 2 if n < 65536 else 8
    if length_bytes == 0:
        head = struct.pack("!BB", b0, mbit | n)
    elif length_bytes == 2:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    return head + key + mask_bytes(payload, key)


def mask_bytes(data, key):
    if not data:
        return b""
    k = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(len(data), "little")


def close_payload(code=None, reason=""):
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode()
    return struct.pack("!H", code) + reason


class WSClient:
    """One client connection after a successful handshake."""

    def __init__(self, sock, status, headers, leftover=b""):
        self.sock = sock
        self.status = status
        self.headers = headers  # the 101's headers, lower-case names
        self.buf = bytearray(leftover)
        self._frag_op = None
        self._frag = bytearray()
        self.close_received = None

    # --- sending ------------------------------------------------------------------------
    def send_raw(self, data, timeout=DEFAULT_TIMEOUT):
        self.sock.settimeout(timeout)
        self.sock.sendall(data)

    def send_frame(self, opcode, payload=b"", fin=True, mask=True, rsv=0, mask_key=None,
                   length=None, length_bytes=None):
        self.send_raw(build_frame(opcode, payload, fin, mask, rsv, mask_key, length, length_bytes))

    def send_text(self, text):
        self.send_frame(OP_TEXT, text.encode() if isinstance(text, str) else text)

    def send_binary(self, data):
        self.send_frame(OP_BINARY, data)

    def ping(self, payload=b""):
        self.send_frame(OP_PING, payload)

    def close(self, code=1000, reason=""):
        """Send a close frame (code None: an empty one). Does not wait for the answer."""
        self.send_frame(OP_CLOSE, close_payload(code, reason))

    # --- receiving ----------------------------------------------------------------------
    def _fill(self, n, deadline, what):
        while len(self.buf) < n:
            chunk = _recv_some(self.sock, deadline, what)
            if not chunk:
                raise EOFError(f"EOF while waiting for {what} "
                               f"(had {len(self.buf)} of {n} bytes)")
            self.buf += chunk

    def _take(self, n):
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def recv_frame(self, timeout=DEFAULT_TIMEOUT):
        """Next frame as (fin, opcode, payload bytes); checks that the server obeys RFC 6455."""
        deadline = time.monotonic() + timeout
        self._fill(2, deadline, "a frame header")
        b0, b1 = self.buf[0], self.buf[1]
        fin = bool(b0 & 0x80)
        rsv = (b0 >> 4) & 7
        opcode = b0 & 0xF
        if rsv:
            raise ProtocolViolation(f"server frame with RSV bits {rsv:#x}")
        if opcode not in OPNAMES:
            raise ProtocolViolation(f"server frame with reserved opcode {opcode:#x}")
        if b1 & 0x80:
            raise ProtocolViolation("server frame is masked")
        n = b1 & 0x7F
        hl = 2
        if n == 126:
            self._fill(4, deadline, "a 16-bit length")
            n = struct.unpack("!H", self.buf[2:4])[0]
            hl = 4
            if n < 126:
                raise ProtocolViolation(f"non-minimal 16-bit length {n}")
        elif n == 127:
            self._fill(10, deadline, "a 64-bit length")
            n = struct.unpack("!Q", self.buf[2:10])[0]
            hl = 10
            if n >> 63:
                raise ProtocolViolation("64-bit length with the top bit set")
            if n < 65536:
                raise ProtocolViolation(f"non-minimal 64-bit length {n}")
        if opcode >= 8:
            if not fin:
                raise ProtocolViolation(f"fragmented control frame {OPNAMES[opcode]}")
            if n > 125:
                raise ProtocolViolation(f"control frame {OPNAMES[opcode]} of {n} bytes")
        self._fill(hl + n, deadline, f"a {n}-byte {OPNAMES[opcode]} payload")
        del self.buf[:hl]
        payload = self._take(n)
        if opcode == OP_CLOSE:
            if self.close_received is not None:
                raise ProtocolViolation("second close frame from the server")
            self.close_received = parse_close(payload)
        elif self.close_received is not None:
            raise ProtocolViolation(f"{OPNAMES[opcode]} frame after the server's close frame")
        return fin, opcode, payload

    def recv_message(self, timeout=DEFAULT_TIMEOUT):
        """Next message as (opcode, payload bytes): data messages reassembled from fragments,
        control frames returned as they come (nothing is answered automatically). A text
        message is checked to be UTF-8."""
        deadline = time.monotonic() + timeout
        while True:
            fin, op, payload = self.recv_frame(max(0.0, deadline - time.monotonic()))
            if op >= 8:
                return op, payload
            if op == OP_CONT:
                if self._frag_op is None:
                    raise ProtocolViolation("continuation frame without a message to continue")
                self._frag += payload
            else:
                if self._frag_op is not None:
                    raise ProtocolViolation("new data frame inside a fragmented message")
                self._frag_op = op
                self._frag = bytearray(payload)
            if fin:
                op, data = self._frag_op, bytes(self._frag)
                self._frag_op, self._frag = None, bytearray()
                if op == OP_TEXT:
                    try:
                        data.decode("utf-8")
                    except UnicodeDecodeError as e:
                        raise ProtocolViolation(f"server sent invalid UTF-8 text: {e}") from None
                return op, data

    def recv_text(self, timeout=DEFAULT_TIMEOUT):
        """Next message, which must be text; returns it as str."""
        op, data = self.recv_message(timeout)
        if op != OP_TEXT:
            raise AssertionError(f"expected a text message, got {OPNAMES[op]} {data[:200]!r}")
        return data.decode()

    def expect_close(self, timeout=DEFAULT_TIMEOUT, skip_data=False):
        """Wait for the server's close frame; returns (code, reason). Any other frame before it
        fails, unless skip_data (then data frames and pings/pongs are discarded)."""
        deadline = time.monotonic() + timeout
        while True:
            fin, op, payload = self.recv_frame(max(0.0, deadline - time.monotonic()))
            if op == OP_CLOSE:
                return self.close_received
            if not skip_data:
                raise AssertionError(f"expected a close frame, got {OPNAMES[op]} "
                                     f"{payload[:200]!r}")

    def expect_eof(self, timeout=DEFAULT_TIMEOUT):
        """Wait for the server to close TCP; any byte before that fails. A reset counts as EOF."""
        deadline = time.monotonic() + timeout
        if self.buf:
            raise AssertionError(f"expected EOF, have unread bytes {bytes(self.buf[:200])!r}")
        while True:
            try:
                chunk = _recv_some(self.sock, deadline, "EOF")
            except ConnectionResetError:
                return
            if not chunk:
                return
            raise AssertionError(f"expected EOF, got bytes {chunk[:200]!r}")

    def close_handshake(self, code=1000, reason="", timeout=DEFAULT_TIMEOUT):
        """Client-initiated close: send, expect the echo, expect EOF. Returns the echo."""
        self.close(code, reason)
        got = self.expect_close(timeout)
        self.expect_eof(timeout)
        return got

    def readable(self, timeout=0.0):
        """True if bytes are waiting (only for asserting that nothing arrived, never to wait)."""
        if self.buf or (hasattr(self.sock, "pending") and self.sock.pending()):
            return True
        r, _, _ = select.select([self.sock], [], [], timeout)
        return bool(r)

    def shutdown(self):
        """Drop the TCP connection without a close frame."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def fileno(self):
        return self.sock.fileno()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()


def parse_close(payload):
    if len(payload) == 0:
        return 1005, ""
    if len(payload) == 1:
        raise ProtocolViolation("close frame with a 1-byte payload")
    code = struct.unpack("!H", payload[:2])[0]
    if code < 1000 or code in (1004, 1005, 1006, 1015) or 1016 <= code <= 2999 or code >= 5000:
        raise ProtocolViolation(f"server sent invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolViolation(f"close reason is not UTF-8: {payload[2:]!r}") from None
    return code, reason


def connect(host, port, path="/", headers=None, timeout=DEFAULT_TIMEOUT, rcvbuf=None, tls=None):
    """Open a connection and complete the handshake, verifying Sec-WebSocket-Accept.
    Raises HandshakeError (with .status/.headers/.body) if the answer is not a valid 101.
    rcvbuf sets SO_RCVBUF before connecting (small values make a slow reader). tls: an
    ssl.SSLContext to speak wss:// through (the socket is wrapped before the upgrade)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            sock = tls_wrap(tls, sock, host)
        req, key = handshake_request(host, port, path, headers)
        sock.sendall(req)
        status, rh, body, leftover = read_http_response(sock, timeout)
        if status != 101:
            raise HandshakeError(f"handshake answered {status}: {body[:200]!r}", status, rh, body)
        if rh.get("upgrade", "").lower() != "websocket":
            raise HandshakeError(f"101 without Upgrade: websocket: {rh}", status, rh)
        if "upgrade" not in [t.strip().lower() for t in rh.get("connection", "").split(",")]:
            raise HandshakeError(f"101 without Connection: upgrade: {rh}", status, rh)
        if rh.get("sec-websocket-accept") != accept_value(key):
            raise HandshakeError(f"bad Sec-WebSocket-Accept {rh.get('sec-websocket-accept')!r}, "
                                 f"expected {accept_value(key)!r}", status, rh)
        return WSClient(sock, status, rh, leftover)
    except BaseException:
        sock.close()
        raise
