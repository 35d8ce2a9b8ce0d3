#!/usr/bin/env python3
"""Writes the seed corpora under corpus/<target>/ (run it from anywhere; it replaces the
files it owns). Seeds are small and each shows one shape the fuzzer should start from."""
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
MASK = bytes([0x37, 0xFA, 0x21, 0x3D])


def masked(op, payload, fin=True, rsv=0, mask=MASK, length=None, form=None):
    """A client frame; form forces the 7/16/64-bit length encoding."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | rsv << 4 | op
    if form is None:
        form = 7 if n < 126 else 16 if n <= 0xFFFF else 64
    if form == 7:
        hdr = bytes([b0, 0x80 | n])
    elif form == 16:
        hdr = bytes([b0, 0x80 | 126]) + struct.pack(">H", n)
    else:
        hdr = bytes([b0, 0x80 | 127]) + struct.pack(">Q", n)
    if mask is None:
        return bytes([hdr[0], hdr[1] & 0x7F]) + hdr[2:] + payload
    body = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    return hdr + mask + body


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def frame_seeds():
    # Byte 0: size limit (n * 16, 255 = none); byte 1: how the stream is cut.
    small, none = bytes([8, 3]), bytes([255, 40])
    seeds = {
        "text-0": small + masked(1, b""),
        "text-5": small + masked(1, b"Hello"),
        "text-125": none + masked(1, b"a" * 125),
        "text-126": none + masked(1, b"b" * 126),
        "binary-300": none + masked(2, bytes(range(256)) + bytes(44)),
        "binary-64bit-form": none + masked(2, b"\x00\xff\x10", form=64),
        "binary-huge-header-only": none + masked(2, b"", length=1 << 40)[:14],
        "too-big": bytes([1, 5]) + masked(2, b"x" * 40),
        "fragmented": small + masked(1, b"Hel", fin=False) + masked(9, b"ping")
        + masked(0, b"lo ", fin=False) + masked(10, b"") + masked(0, b"", fin=False)
        + masked(0, b"World") + masked(2, b"\x01\x02"),
        "fragmented-utf8": small + masked(1, "κό".encode()[:3], fin=False)
        + masked(0, "κό".encode()[3:] + "σμε".encode()),
        "close-empty": small + masked(8, b""),
        "close-1000-reason": small + masked(8, b"\x03\xe8bye"),
        "close-4999": small + masked(8, b"\x13\x87"),
        "close-1-byte": small + masked(8, b"\x03"),
        "close-1005": small + masked(8, b"\x03\xed"),
        "close-bad-utf8": small + masked(8, b"\x03\xe8\xed\xa0\x80"),
        "ping-125": small + masked(9, b"p" * 125),
        "ping-126": small + masked(9, b"p" * 126),
        "ping-fragmented": small + masked(9, b"x", fin=False),
        "pong-unsolicited": small + masked(10, b"pong") + masked(1, b"after"),
        "bad-utf8-midframe": small + masked(1, "κόσμε".encode() + b"\xf4\x90\x80\x80" + b"edited"),
        "bad-utf8-fragment2": small + masked(1, "κόσμε".encode(), fin=False)
        + masked(0, b"\xf4\x90\x80\x80", fin=False) + masked(0, b"edited"),
        "utf8-truncated-end": small + masked(1, b"ok\xe2\x82"),
        "rsv1": small + masked(1, b"x", rsv=4),
        "rsv3": small + masked(9, b"", rsv=1),
        "opcode-3": small + masked(3, b""),
        "opcode-b": small + masked(0xB, b"x"),
        "unmasked": small + masked(1, b"hi", mask=None),
        "length-top-bit": none + bytes([0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1]) + MASK,
        "cont-without-message": small + masked(0, b"x"),
        "text-inside-fragmented": small + masked(1, b"a", fin=False) + masked(1, b"b"),
        "after-close": small + masked(8, b"\x03\xe8") + masked(1, b"ignored"),
        "many-small": small + b"".join(masked(1 + i % 2, bytes([65 + i]) * (i % 7)) for i in range(30)),
        # Byte 1's top bit: permessage-deflate agreed.
        "deflate-rsv1": bytes([8, 0x83]) + masked(1, b"\xf2\x48\xcd\xc9\xc9\x07\x00", rsv=4)
        + masked(1, b"plain"),
        "deflate-fragmented": bytes([8, 0x85]) + masked(2, b"\xf2\x48", fin=False, rsv=4)
        + masked(9, b"p") + masked(0, b"\xcd\xc9\xc9\x07\x00"),
        "deflate-rsv1-cont": bytes([8, 0x83]) + masked(1, b"a", fin=False, rsv=4) + masked(0, b"b", rsv=4),
        "deflate-rsv1-ping": bytes([8, 0x83]) + masked(9, b"", rsv=4),
        "deflate-over-limit": bytes([1, 0x83]) + masked(2, b"z" * 81, rsv=4) + masked(2, b"z" * 83, rsv=4),
    }
    for name, data in seeds.items():
        write("frame", name, data)


def utf8_seeds():
    seeds = {
        "ascii": b"Hello, world: plain ASCII long enough for the 8-byte path.",
        "greek": "κόσμε".encode(),
        "mixed": "aé€😀 ascii then 日本語 and more ascii....".encode(),
        "boundaries": "\u007f\u0080\u07ff\u0800\ud7ff\ue000\uffff\U00010000\U0010ffff".encode("utf-8", "surrogatepass"),
        "overlong-2": b"\xc0\x80",
        "overlong-3": b"\xe0\x9f\xbf",
        "overlong-4": b"\xf0\x8f\xbf\xbf",
        "surrogate": b"\xed\xa0\x80",
        "surrogate-pair": b"\xed\xa0\x80\xed\xb0\x80",
        "past-10ffff": b"\xf4\x90\x80\x80",
        "f5-ff": b"\xf5\xf8\xfc\xfe\xff",
        "lone-continuation": b"abc\x80def",
        "truncated": b"ok\xe2\x82",
        "truncated-4": b"\xf0\x9f\x98",
        "cut-by-ascii": b"\xe2\x82a",
        "long-then-bad": b"x" * 64 + b"\xc3\x28" + b"y" * 16,
        "long-then-emoji": b"x" * 61 + "😀".encode() + b"z" * 9,
    }
    for i, (name, data) in enumerate(seeds.items()):
        write("utf8", name, bytes([(i * 37) % 256]) + data)


KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def http_seeds():
    chrome = (b"GET /chat?room=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: Upgrade\r\n"
              b"Pragma: no-cache\r\nCache-Control: no-cache\r\nUser-Agent: Mozilla/5.0\r\n"
              b"Upgrade: websocket\r\nOrigin: http://127.0.0.1:8080\r\nSec-WebSocket-Version: 13\r\n"
              b"Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n"
              b"Sec-WebSocket-Key: " + KEY + b"\r\n"
              b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n")
    firefox = (b"GET / HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: Mozilla/5.0 Firefox\r\n"
               b"Accept: */*\r\nSec-WebSocket-Version: 13\r\nOrigin: http://localhost:8080\r\n"
               b"Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Key: " + KEY + b"\r\n"
               b"Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n")
    seeds = {
        "upgrade-chrome": chrome,
        "upgrade-firefox": firefox,
        "upgrade-pipelined-frame": chrome + masked(1, b"Hello"),
        "upgrade-absolute-form": firefox.replace(b"GET / ", b"GET http://localhost:8080/ws?x "),
        "upgrade-http10": firefox.replace(b"HTTP/1.1", b"HTTP/1.0"),
        "upgrade-version-8": firefox.replace(b"Version: 13", b"Version: 8"),
        "upgrade-post": firefox.replace(b"GET", b"POST"),
        "upgrade-two-keys": firefox.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Key: " + KEY + b"\r\n\r\n"),
        "upgrade-h2c": b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        "get-curl": b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
        "head": b"HEAD /app.js HTTP/1.1\r\nHost: h\r\n\r\n",
        "get-http10": b"GET / HTTP/1.0\r\n\r\n",
        "get-no-host": b"GET / HTTP/1.1\r\n\r\n",
        "smuggle-cl-te": b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        "smuggle-te-get": b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "smuggle-cl-get": b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
        "smuggle-two-cl": b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n",
        "smuggle-obs-fold": b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
        "smuggle-space-colon": b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n",
        "smuggle-bare-lf": b"GET / HTTP/1.1\nHost: h\nX: y\n\n",
        "smuggle-bare-cr": b"GET / HTTP/1.1\rHost: h\r\n\r\n",
        "two-requests": b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n",
        "h2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "many-headers": b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(70)) + b"\r\n",
        "long-header": b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: " + b"a" * 8200 + b"\r\n\r\n",
        "incomplete": b"GET /slow HTTP/1.1\r\nHost: h\r\nUser-Age",
        "nul-in-header": b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
        "post-length": b"POST /publish?topic=news HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer s\r\nContent-Length: 11\r\n\r\nhello world",
        "post-chunked": b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
        "put-expect": b"PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
        "delete-keepalive-10": b"DELETE /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "options-asterisk": b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
        "proxied": b"GET /describe HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.7, [2001:db8::1]:80, 10.0.0.1\r\nX-Real-IP: 198.51.100.2\r\nX-Forwarded-Proto: https\r\n\r\n",
        "chunk-body-only": b"1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n",
    }
    for name, data in seeds.items():
        write("http", name, data)


def cluster_seeds():
    # The same bytes are tried as a --redis URL, an incoming message (envelope), a channel name
    # (prefix "wsluad") and a command (arguments split at spaces).
    env = b"\x00WSL\x01\x02\x00\x00" + struct.pack(">QQQ", 0x0102030405060708, 9, 0)
    seeds = {
        "url-tcp": b"redis://127.0.0.1:6379/2",
        "url-auth": b"redis://app:p%40ss@cache.example.org:6380/15",
        "url-ipv6": b"redis://:pw@[::1]:7000",
        "url-unix": b"unix:///run/redis/redis.sock",
        "url-bad-port": b"redis://h:65536/x?y#z",
        "envelope": env + b"payload",
        "envelope-short": env[:20],
        "envelope-bad-version": env[:4] + b"\x07" + env[5:],
        "channel-topic": b"wsluad:topic:news:today",
        "channel-broadcast": b"wsluad:broadcast",
        "channel-node": b"wsluad:node:65535",
        "channel-node-zero": b"wsluad:node:0042",
        "command-subscribe": b"SUBSCRIBE wsluad:topic:x",
        "command-client-reply": b"client reply off",
    }
    for name, data in seeds.items():
        write("cluster", name, data)
def static_seeds():
    # Request paths as the static handler gets them (percent-encoded, query already cut).
    seeds = {
        "root": b"/",
        "file": b"/index.html",
        "dir": b"/sub/",
        "dir-no-slash": b"/sub",
        "dot-inside": b"/sub/../index.html",
        "dots-mixed": b"/./sub/./b/../in",
        "dotdot-out": b"/../secret.txt",
        "dotdot-deep-out": b"/sub/../../secret.txt",
        "encoded-dots": b"/%2e%2e/secret.txt",
        "encoded-slash": b"/sub%2f..%2f..%2fsecret.txt",
        "double-encoded": b"/%252e%252e/secret.txt",
        "empty-segments": b"//sub///b",
        "symlink-out": b"/out",
        "symlink-up": b"/up/secret.txt",
        "symlink-prefix": b"/evil/f.txt",
        "symlink-in": b"/sub/in",
        "nul": b"/a%00b",
        "raw-nul": b"/index.html\x00/../../secret.txt",
        "bad-escape": b"/%zz",
        "cut-escape": b"/%2",
        "utf8": b"/caf%C3%A9/%E2%82%AC",
        "trailing-dotdot": b"/sub/..",
        "relative": b"index.html",
    }
    for name, data in seeds.items():
        write("static", name, data)


def deflate_seeds():
    # Byte 0: 0 offers, 1 inflate (then limit n*64 / 255 none, cut seed, flags: 1 text,
    # 2 takeover), 2 compress (then the server window, 8 + n % 8).
    def raw(data, bits=15, final=False):
        c = zlib.compressobj(6, zlib.DEFLATED, -bits)
        out = c.compress(data) + c.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)
        return out if final else out[:-4]

    chat = b'{"type":"message","room":"general","from":"ana","text":"hello there, how are you?"}'
    offers = {
        "offer-chrome": b"permessage-deflate; client_max_window_bits",
        "offer-firefox": b"permessage-deflate",
        "offer-all-four": b"permessage-deflate; server_no_context_takeover; "
                          b"client_no_context_takeover; server_max_window_bits=10; "
                          b"client_max_window_bits=12",
        "offer-quoted": b'permessage-deflate; server_max_window_bits="1\\2"; client_max_window_bits',
        "offer-several": b"x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=7, "
                         b"permessage-deflate; client_max_window_bits=9",
        "offer-duplicate": b"permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "offer-malformed": b'foo; a="x,y"; b, permessage-deflate client, permessage-deflate;;',
        "offer-whitespace": b" \t,permessage-deflate \t; server_max_window_bits = 15 ,",
    }
    for name, data in offers.items():
        write("deflate", name, b"\x00" + data)
    inflate = {
        "inflate-hello": (b"\x02\x00\x01", bytes([0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00])),
        "inflate-stored": (b"\x02\x05\x01", bytes([0x00, 0x05, 0x00, 0xfa, 0xff]) + b"Hello\x00"),
        "inflate-bfinal": (b"\x02\x07\x00", bytes([0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00])),
        "inflate-takeover": (b"\x04\x09\x03", raw(chat, 10)),
        # Found by the fuzzer: the limit is per message, also for a message in pieces.
        "inflate-takeover-limit": (b"\x04\x09\x03", raw(b"a" * 250, 10)),
        "inflate-chat": (b"\xff\x0b\x01", raw(chat * 3)),
        "inflate-bomb": (b"\x01\x11\x00", raw(bytes(100000))),
        "inflate-bad-utf8": (b"\x10\x13\x01", raw("κόσμε \xed\xa0\x80".encode("utf-8", "surrogatepass"))),
        "inflate-truncated": (b"\x10\x17\x00", raw(chat)[:20]),
        "inflate-btype3": (b"\x10\x01\x00", b"\x07\x00"),
        "inflate-far": (b"\x10\x01\x02", bytes([0xf2, 0x00, 0x11, 0x00, 0x00])),
        "inflate-empty": (b"\x10\x01\x01", b""),
        "inflate-final-then-more": (b"\xff\x03\x00", raw(b"first part ", final=True) + b"\x00" + raw(b"second")),
    }
    for name, (head, data) in inflate.items():
        write("deflate", name, b"\x01" + head + data)
    compress = {
        "compress-chat": b"\x07" + chat * 4,
        "compress-small-window": b"\x00" + chat * 10,
        "compress-noise": b"\x03" + bytes((i * 167 + 13) % 256 for i in range(300)),
        "compress-short": b"\x07hi",
    }
    for name, data in compress.items():
        write("deflate", name, b"\x02" + data)


if __name__ == "__main__":
    frame_seeds()
    utf8_seeds()
    http_seeds()
    cluster_seeds()
    static_seeds()
    deflate_seeds()
