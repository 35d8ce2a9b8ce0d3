/* Unit tests for src/http.c: the upgrade request and every way to get it wrong (each HTTP
 * status), plain requests of any method with their body framing, keep-alive and Expect,
 * case-insensitive tokens, incomplete heads, limits, smuggling shapes, bytes pipelined after the
 * head, the body decoder (Content-Length and chunked, fed in every split), and the answers it
 * writes. */
#include <stdlib.h>

#include "handshake.h"
#include "http.h"
#include "test.h"

#define KEY "dGhlIHNhbXBsZSBub25jZQ=="

static const char UPGRADE[] = "GET /chat/room?name=a%20b&x=1 HTTP/1.1\r\n"
                              "Host: server.example.com\r\n"
                              "Upgrade: websocket\r\n"
                              "Connection: Upgrade\r\n"
                              "Sec-WebSocket-Key: " KEY "\r\n"
                              "Origin: http://example.com\r\n"
                              "Sec-WebSocket-Protocol: chat, superchat\r\n"
                              "Sec-WebSocket-Version: 13\r\n"
                              "\r\n";

static wsl_request req; /* 2 KiB: not on the stack of every helper */

static wsl_req_kind parse(const char *s)
{
    return wsl_http_parse(&req, s, strlen(s));
}

/* All spans lie inside [buf, buf+len). */
static bool spans_inside(const char *buf, size_t len)
{
    const wsl_span *all[] = {&req.method, &req.path,      &req.query,
                             &req.key,    &req.protocols, &req.origin};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]->len && (all[i]->p < buf || all[i]->p + all[i]->len > buf + len)) return false;
    for (size_t i = 0; i < req.nheaders; i++) {
        const wsl_header *h = &req.headers[i];
        if (h->name.p < buf || h->name.p + h->name.len > buf + len) return false;
        if (h->value.p < buf || h->value.p + h->value.len > buf + len) return false;
    }
    return true;
}

static void test_valid_upgrade(void)
{
    CHECK_EQ(parse(UPGRADE), WSL_REQ_UPGRADE);
    CHECK_EQ(req.kind, WSL_REQ_UPGRADE);
    CHECK_MEM(req.method.p, req.method.len, "GET");
    CHECK_MEM(req.path.p, req.path.len, "/chat/room");
    CHECK_MEM(req.query.p, req.query.len, "name=a%20b&x=1");
    CHECK_MEM(req.key.p, req.key.len, KEY);
    CHECK_MEM(req.origin.p, req.origin.len, "http://example.com");
    CHECK_MEM(req.protocols.p, req.protocols.len, "chat, superchat");
    CHECK_EQ(req.head_len, strlen(UPGRADE));
    CHECK_EQ(req.nheaders, 7);
    CHECK_MEM(req.headers[0].name.p, req.headers[0].name.len, "Host");
    CHECK_MEM(req.headers[0].value.p, req.headers[0].value.len, "server.example.com");
    const wsl_header *h = wsl_http_header(&req, "sEC-wEBsOCKET-vERSION");
    CHECK(h != NULL);
    if (h) CHECK_MEM(h->value.p, h->value.len, "13");
    CHECK(wsl_http_header(&req, "x-missing") == NULL);
    CHECK(wsl_http_header(&req, "Sec-WebSocket") == NULL); /* whole names only */
    CHECK(spans_inside(UPGRADE, strlen(UPGRADE)));

    /* The accept value for this key, through the response writer. */
    char accept[WSL_ACCEPT_LEN + 1];
    wsl_handshake_accept(req.key.p, req.key.len, accept);
    char out[512];
    size_t n = wsl_http_upgrade_response(out, sizeof out, accept, NULL, 0, NULL);
    CHECK_MEM(out, n,
              "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n");
}

static void test_incomplete_and_pipelined(void)
{
    size_t full = strlen(UPGRADE);
    char buf[1024];
    for (size_t n = 0; n < full; n++) {
        memcpy(buf, UPGRADE, n);
        TEST_CONTEXT("first %zu bytes", n);
        CHECK_EQ(wsl_http_parse(&req, buf, n), WSL_REQ_INCOMPLETE);
    }
    TEST_CONTEXT("%s", "");
    /* Frames the client sent right behind its request stay after head_len, untouched. */
    memcpy(buf, UPGRADE, full);
    memcpy(buf + full, "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", 11);
    CHECK_EQ(wsl_http_parse(&req, buf, full + 11), WSL_REQ_UPGRADE);
    CHECK_EQ(req.head_len, full);
    CHECK(memcmp(buf + req.head_len, "\x81\x85", 2) == 0);
    /* Even when they happen to look like HTTP. */
    char two[256];
    snprintf(two, sizeof two, "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
    CHECK_EQ(parse(two), WSL_REQ_PLAIN);
    CHECK_EQ(req.head_len, strlen("GET /a HTTP/1.1\r\nHost: h\r\n\r\n"));
    CHECK_MEM(req.path.p, req.path.len, "/a");
}

static void test_case_insensitive(void)
{
    CHECK_EQ(parse("GET / HTTP/1.1\r\nhost: h\r\nupgrade: WebSocket\r\n"
                   "CONNECTION: keep-alive, UPGRADE\r\nsec-websocket-key: " KEY "\r\n"
                   "SEC-WEBSOCKET-VERSION: 13\r\n\r\n"),
             WSL_REQ_UPGRADE);
    CHECK_EQ(parse("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                   "Connection: keep-alive,Upgrade\r\nSec-WebSocket-Key: " KEY "\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n"),
             WSL_REQ_UPGRADE);
    /* Connection split over two header lines (Firefox sends "keep-alive, Upgrade"). */
    CHECK_EQ(parse("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n"
                   "Connection: upgrade\r\nSec-WebSocket-Key: " KEY "\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n"),
             WSL_REQ_UPGRADE);
    /* Whitespace around values is not part of them. */
    CHECK_EQ(parse("GET / HTTP/1.1\r\nHost: h\r\nUpgrade:websocket \t\r\n"
                   "Connection: \tUpgrade  \r\nSec-WebSocket-Key:   " KEY "  \r\n"
                   "Sec-WebSocket-Version: 13 \r\n\r\n"),
             WSL_REQ_UPGRADE);
    CHECK_MEM(req.key.p, req.key.len, KEY);
    /* A token must match whole: "upgrades" or "notupgrade" are not "upgrade". */
    CHECK_EQ(parse("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrades\r\n"
                   "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n"),
             WSL_REQ_ERROR);
    CHECK_EQ(req.status, 400);
}

/* The standard upgrade request with a different request line, without the header lines that
 * start with `drop` (may be NULL), and with the line `add` appended (may be NULL). */
static wsl_req_kind variant(const char *request_line, const char *drop, const char *add)
{
    static char buf[4096];
    size_t n = (size_t)snprintf(buf, sizeof buf, "%s\r\n", request_line);
    const char *lines[] = {"Host: h", "Upgrade: websocket", "Connection: Upgrade",
                           ("Sec-WebSocket-Key: " KEY), "Sec-WebSocket-Version: 13"};
    for (size_t i = 0; i < 5; i++) {
        if (drop && strncmp(lines[i], drop, strlen(drop)) == 0) continue;
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s\r\n", lines[i]);
    }
    if (add) n += (size_t)snprintf(buf + n, sizeof buf - n, "%s\r\n", add);
    n += (size_t)snprintf(buf + n, sizeof buf - n, "\r\n");
    wsl_req_kind k = wsl_http_parse(&req, buf, n);
    CHECK(spans_inside(buf, n));
    return k;
}

static void expect_status(wsl_req_kind k, int status, int line)
{
    test_checks++;
    if (k != WSL_REQ_ERROR || req.status != status || !req.error || !req.error[0])
        test_fail(__FILE__, line, "want error %d, got kind %d status %d (%s)", status, (int)k,
                  req.status, req.error ? req.error : "");
}
#define EXPECT_STATUS(k, status) expect_status((k), (status), __LINE__)

static void test_upgrade_errors(void)
{
    const char *GET = "GET / HTTP/1.1";
    CHECK_EQ(variant(GET, NULL, NULL), WSL_REQ_UPGRADE);
    /* 405: not GET. */
    EXPECT_STATUS(variant("POST / HTTP/1.1", NULL, NULL), 405);
    EXPECT_STATUS(variant("HEAD / HTTP/1.1", NULL, NULL), 405);
    EXPECT_STATUS(variant("PUT / HTTP/1.1", NULL, "Content-Length: 0"), 405);
    /* 400: HTTP/1.0; 505: not HTTP/1.x. */
    EXPECT_STATUS(variant("GET / HTTP/1.0", NULL, NULL), 400);
    EXPECT_STATUS(variant("GET / HTTP/2.0", NULL, NULL), 505);
    EXPECT_STATUS(variant("GET / HTTP/0.9", NULL, NULL), 505);
    /* 400: Host missing or repeated. */
    EXPECT_STATUS(variant(GET, "Host", NULL), 400);
    EXPECT_STATUS(variant(GET, NULL, "Host: other"), 400);
    /* 400: Connection without the upgrade token, or missing. */
    EXPECT_STATUS(variant(GET, "Connection", NULL), 400);
    EXPECT_STATUS(variant(GET, "Connection", "Connection: keep-alive"), 400);
    EXPECT_STATUS(variant(GET, "Connection", "Connection: close"), 400);
    /* 400: Upgrade to something else. */
    EXPECT_STATUS(variant(GET, "Upgrade", "Upgrade: h2c"), 400);
    EXPECT_STATUS(variant(GET, "Upgrade", "Upgrade: websocket2"), 400);
    EXPECT_STATUS(variant(GET, "Upgrade", "Upgrade:"), 400);
    /* 426: the version. */
    EXPECT_STATUS(variant(GET, "Sec-WebSocket-Version", NULL), 426);
    EXPECT_STATUS(variant(GET, "Sec-WebSocket-Version", "Sec-WebSocket-Version: 8"), 426);
    EXPECT_STATUS(variant(GET, "Sec-WebSocket-Version", "Sec-WebSocket-Version: 130"), 426);
    EXPECT_STATUS(variant(GET, "Sec-WebSocket-Version", "Sec-WebSocket-Version: 13, 8"), 426);
    EXPECT_STATUS(variant(GET, NULL, "Sec-WebSocket-Version: 13"), 426);
    /* 400: the key. */
    EXPECT_STATUS(variant(GET, "Sec-WebSocket-Key", NULL), 400);
    EXPECT_STATUS(variant(GET, "Sec-WebSocket-Key", "Sec-WebSocket-Key: short=="), 400);
    EXPECT_STATUS(variant(GET, "Sec-WebSocket-Key", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR=="),
                  400);
    EXPECT_STATUS(variant(GET, "Sec-WebSocket-Key", "Sec-WebSocket-Key:"), 400);
    EXPECT_STATUS(variant(GET, NULL, "Sec-WebSocket-Key: " KEY), 400); /* twice */
    EXPECT_STATUS(variant(GET, NULL, "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="), 400);
    /* 400: a body on an upgrade (smuggling shapes). */
    EXPECT_STATUS(variant(GET, NULL, "Content-Length: 5"), 400);
    EXPECT_STATUS(variant(GET, NULL, "Transfer-Encoding: chunked"), 400);
    EXPECT_STATUS(variant(GET, NULL, "Transfer-Encoding: identity"), 400);
    CHECK_EQ(variant(GET, NULL, "Content-Length: 0"), WSL_REQ_UPGRADE);
    /* Other headers, including unknown ones, are fine. */
    CHECK_EQ(variant(GET, NULL, "X-Anything: \x80\xff obs-text"), WSL_REQ_UPGRADE);
    CHECK_EQ(variant(GET, NULL, "Sec-WebSocket-Extensions: permessage-deflate"), WSL_REQ_UPGRADE);
    /* Absolute-form target. */
    CHECK_EQ(variant("GET http://h/ws?q=1 HTTP/1.1", NULL, NULL), WSL_REQ_UPGRADE);
    CHECK_MEM(req.path.p, req.path.len, "/ws");
    CHECK_MEM(req.query.p, req.query.len, "q=1");
    EXPECT_STATUS(variant("GET * HTTP/1.1", NULL, NULL), 400);
    EXPECT_STATUS(variant("GET http://h HTTP/1.1", NULL, NULL), 400);
}

static void test_plain_requests(void)
{
    CHECK_EQ(parse("GET /index.html HTTP/1.1\r\nHost: h\r\n\r\n"), WSL_REQ_PLAIN);
    CHECK(!req.head);
    CHECK_MEM(req.path.p, req.path.len, "/index.html");
    CHECK_EQ(req.query.len, 0);
    CHECK_EQ(parse("HEAD /x?y HTTP/1.1\r\nHost: h\r\n\r\n"), WSL_REQ_PLAIN);
    CHECK(req.head);
    CHECK_MEM(req.query.p, req.query.len, "y");
    CHECK_EQ(parse("GET /q? HTTP/1.1\r\nHost: h\r\n\r\n"), WSL_REQ_PLAIN);
    CHECK_MEM(req.path.p, req.path.len, "/q");
    CHECK_EQ(req.query.len, 0);
    CHECK_EQ(parse("GET / HTTP/1.0\r\n\r\n"), WSL_REQ_PLAIN); /* HTTP/1.0 needs no Host */
    /* A Sec-WebSocket-Key without Upgrade is just a GET. */
    CHECK_EQ(parse("GET / HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: " KEY "\r\n\r\n"),
             WSL_REQ_PLAIN);
    CHECK_EQ(req.key.len, 0);
    CHECK_EQ(parse("GET / HTTP/1.1\r\nHost: h\r\nOrigin: null\r\n\r\n"), WSL_REQ_PLAIN);
    CHECK_MEM(req.origin.p, req.origin.len, "null");

    /* Any method, any body: the script decides. */
    CHECK_EQ(parse("POST /p?t=x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"),
             WSL_REQ_PLAIN);
    CHECK_MEM(req.method.p, req.method.len, "POST");
    CHECK_MEM(req.path.p, req.path.len, "/p");
    CHECK_MEM(req.query.p, req.query.len, "t=x");
    CHECK_EQ(req.body, WSL_BODY_LENGTH);
    CHECK_EQ(req.content_length, 2);
    CHECK(!req.get && !req.head);
    CHECK_EQ(req.head_len, strlen("POST /p?t=x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n"));
    CHECK_EQ(parse("DELETE /x HTTP/1.1\r\nHost: h\r\n\r\n"), WSL_REQ_PLAIN);
    CHECK_EQ(req.body, WSL_BODY_NONE);
    CHECK_EQ(parse("PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"),
             WSL_REQ_PLAIN);
    CHECK_EQ(req.body, WSL_BODY_CHUNKED);
    CHECK_EQ(parse("PATCH /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: CHUNKED\r\n\r\n"),
             WSL_REQ_PLAIN);
    CHECK_EQ(req.body, WSL_BODY_CHUNKED);
    CHECK_EQ(parse("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"), WSL_REQ_PLAIN);
    CHECK_MEM(req.path.p, req.path.len, "*");
    EXPECT_STATUS(parse("GET * HTTP/1.1\r\nHost: h\r\n\r\n"), 400); /* '*' is for OPTIONS */
    EXPECT_STATUS(parse("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"), 501);
    EXPECT_STATUS(parse("GET / HTTP/1.1\r\n\r\n"), 400); /* HTTP/1.1 without Host */
    EXPECT_STATUS(parse("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
    CHECK_EQ(parse("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n"), WSL_REQ_PLAIN);
    CHECK(req.get);
    CHECK_EQ(req.content_length, 10);
    CHECK_EQ(parse("HEAD / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"),
             WSL_REQ_PLAIN);
    CHECK(req.head);
    CHECK_EQ(parse("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"), WSL_REQ_PLAIN);
    CHECK_EQ(req.body, WSL_BODY_NONE);
    EXPECT_STATUS(parse("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), 505);
    EXPECT_STATUS(parse("GET / HTTP/1.2\r\nHost: h\r\n\r\n"), 505);
}

/* Transfer-Encoding and Content-Length together, codings we do not decode, HTTP/1.0 with
 * Transfer-Encoding: the shapes request smuggling is made of. */
static void test_framing(void)
{
    EXPECT_STATUS(parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n"), 400);
    EXPECT_STATUS(parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
                  400);
    EXPECT_STATUS(parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
                  501);
    EXPECT_STATUS(parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n"),
                  501);
    EXPECT_STATUS(parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                        "Content-Length: 3\r\n\r\n"),
                  400);
    EXPECT_STATUS(parse("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
    EXPECT_STATUS(parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
                        "Content-Length: 2\r\n\r\n"),
                  400);
    CHECK_EQ(parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551615\r\n\r\n"),
             WSL_REQ_PLAIN);
    CHECK_EQ(req.content_length, 18446744073709551615ull);
    EXPECT_STATUS(
        parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551616\r\n\r\n"), 400);

    /* Keep-alive: 1.1 unless "close", 1.0 only when asked. */
    CHECK_EQ(parse("GET / HTTP/1.1\r\nHost: h\r\n\r\n"), WSL_REQ_PLAIN);
    CHECK(req.keep_alive && !req.http10);
    CHECK_EQ(parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n"), WSL_REQ_PLAIN);
    CHECK(!req.keep_alive);
    CHECK_EQ(parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, close\r\n\r\n"), WSL_REQ_PLAIN);
    CHECK(!req.keep_alive);
    CHECK_EQ(parse("GET / HTTP/1.0\r\n\r\n"), WSL_REQ_PLAIN);
    CHECK(!req.keep_alive && req.http10);
    CHECK_EQ(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), WSL_REQ_PLAIN);
    CHECK(req.keep_alive && req.http10);

    /* Expect: only 100-continue. */
    CHECK_EQ(parse("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n"
                   "Content-Length: 5\r\n\r\n"),
             WSL_REQ_PLAIN);
    CHECK(req.expect_100);
    CHECK_EQ(parse("PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n"), WSL_REQ_PLAIN);
    CHECK(!req.expect_100);
    EXPECT_STATUS(parse("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n"), 417);
}

/* Feed body bytes to a fresh decoder in pieces of `step` bytes (the rest of the stream is kept,
 * as the connection does); returns the decoded body, or "BAD" / "MORE" / "OVER:<rest>" when it
 * ended before the whole input (the bytes after the body). */
static const char *decode(const char *head, const char *body, size_t body_len, size_t step)
{
    static char out[20000];
    wsl_request r;
    CHECK_EQ(wsl_http_parse(&r, head, strlen(head)), WSL_REQ_PLAIN);
    wsl_http_body b;
    wsl_http_body_init(&b, &r);
    size_t n = 0, fed = 0, have = 0;
    static char pending[20000];
    while (true) {
        /* the decoder sees whatever is not consumed yet, plus the next step */
        size_t add = fed + step <= body_len ? step : body_len - fed;
        memcpy(pending + have, body + fed, add);
        fed += add;
        have += add;
        size_t off = 0;
        for (;;) {
            size_t used;
            wsl_span d;
            wsl_body_event ev = wsl_http_body_next(&b, pending + off, have - off, &used, &d);
            CHECK(used <= have - off);
            if (ev == WSL_BODY_DATA) {
                CHECK(d.len > 0 && d.p >= pending + off && d.p + d.len <= pending + off + used);
                memcpy(out + n, d.p, d.len);
                n += d.len;
            }
            off += used;
            if (ev == WSL_BODY_BAD) return "BAD";
            if (ev == WSL_BODY_DONE) {
                out[n] = 0;
                if (off < have || fed < body_len) {
                    static char over[40000];
                    snprintf(over, sizeof over, "OVER:%s|%.*s%.*s", out, (int)(have - off),
                             pending + off, (int)(body_len - fed), body + fed);
                    return over;
                }
                return out;
            }
            if (ev == WSL_BODY_MORE) break;
        }
        memmove(pending, pending + off, have - off);
        have -= off;
        if (fed == body_len) return "MORE";
    }
}

static void test_body(void)
{
    static const char CL[] = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n";
    static const char TE[] = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    static const struct {
        const char *head, *body, *want;
    } cases[] = {
        {CL, "hello world", "hello world"},
        {CL, "hello worldGET / HTTP/1.1", "OVER:hello world|GET / HTTP/1.1"},
        {CL, "hello", "MORE"},
        {TE, "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world"},
        {TE, "B\r\nhello world\r\n0\r\n\r\n", "hello world"},
        {TE, "b;ext=1;q=\"a b\"\r\nhello world\r\n0\r\n\r\n", "hello world"},
        {TE, "0000b \t;e\r\nhello world\r\n0\r\n\r\n", "hello world"},
        {TE, "0\r\n\r\n", ""},
        {TE, "0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n", ""},
        {TE, "3\r\nabc\r\n0\r\n\r\nGET", "OVER:abc|GET"},
        {TE, "3\r\nabc\r\n", "MORE"},
        {TE, "3\r\nabc", "MORE"},
        /* Malformed: bare LF, missing CRLF after data, no digits, junk after the size, a size
         * past 2^60, a control byte in an extension or trailer, a line too long. */
        {TE, "3\nabc\r\n0\r\n\r\n", "BAD"},
        {TE, "3\r\nabcd\r\n0\r\n\r\n", "BAD"},
        {TE, "3\r\nabc\n0\r\n\r\n", "BAD"},
        {TE, "\r\nabc\r\n", "BAD"},
        {TE, "x\r\n", "BAD"},
        {TE, "3 3\r\nabc\r\n", "BAD"},
        {TE, "3x\r\nabc\r\n", "BAD"},
        {TE, "-3\r\nabc\r\n", "BAD"},
        {TE, "10000000000000000\r\n", "BAD"},
        {TE, "3;a\x01\r\nabc\r\n", "BAD"},
        {TE, "0\r\nX: a\nb\r\n\r\n", "BAD"},
        {TE, "0\r\n\n", "BAD"},
        {TE, "0\r\n\r\r", "BAD"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = strlen(cases[i].body);
        for (size_t step = 1; step <= len + 1; step++) {
            TEST_CONTEXT("body %zu (%s) in steps of %zu", i, cases[i].body, step);
            CHECK_STR(decode(cases[i].head, cases[i].body, len, step), cases[i].want);
        }
    }
    /* Limits: a chunk-size line of WSL_HTTP_MAX_CHUNK_LINE bytes is fine, one more is not; so
     * are the trailers. */
    static char big[WSL_HTTP_MAX_TRAILERS + 64];
    for (int extra = 0; extra <= 1; extra++) {
        size_t n = (size_t)snprintf(big, sizeof big, "1;");
        while (n < (size_t)WSL_HTTP_MAX_CHUNK_LINE + (size_t)extra)
            big[n++] = 'e';
        n += (size_t)snprintf(big + n, sizeof big - n, "\r\nx\r\n0\r\n\r\n");
        TEST_CONTEXT("chunk line of %d bytes", WSL_HTTP_MAX_CHUNK_LINE + extra);
        CHECK_STR(decode(TE, big, n, n), extra ? "BAD" : "x");
        n = (size_t)snprintf(big, sizeof big, "0\r\nT: ");
        while (n < (size_t)WSL_HTTP_MAX_TRAILERS + 5 + (size_t)extra - 2)
            big[n++] = 't';
        n += (size_t)snprintf(big + n, sizeof big - n, "\r\n\r\n");
        TEST_CONTEXT("trailers of %d bytes", WSL_HTTP_MAX_TRAILERS + extra);
        CHECK_STR(decode(TE, big, n, n), extra ? "BAD" : "");
    }
    TEST_CONTEXT("%s", "");
    /* No body: done at once, even with nothing to read. */
    wsl_http_body b;
    size_t used = 99;
    wsl_span d;
    CHECK_EQ(parse("GET / HTTP/1.1\r\nHost: h\r\n\r\n"), WSL_REQ_PLAIN);
    wsl_http_body_init(&b, &req);
    CHECK_EQ(wsl_http_body_next(&b, "", 0, &used, &d), WSL_BODY_DONE);
    CHECK_EQ(used, 0);
}

static void test_answers(void)
{
    char out[1024];
    size_t n = wsl_http_answer_head(out, sizeof out, 200, NULL, 0, 5, 0);
    CHECK_MEM(out, n,
              "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
              "Content-Length: 5\r\n\r\n");
    /* The script's Content-Type wins, in any case; its lines come first. */
    static const char h[] = "content-TYPE: application/json\r\nX-A: 1\r\n";
    n = wsl_http_answer_head(out, sizeof out, 201, h, sizeof h - 1, 2, WSL_ANSWER_CLOSE);
    CHECK_MEM(out, n,
              "HTTP/1.1 201 Created\r\ncontent-TYPE: application/json\r\nX-A: 1\r\n"
              "Content-Length: 2\r\nConnection: close\r\n\r\n");
    /* A name that only starts like it does not count. */
    static const char h2[] = "X-Content-Type: a\r\n";
    n = wsl_http_answer_head(out, sizeof out, 200, h2, sizeof h2 - 1, 0, WSL_ANSWER_KEEP_ALIVE);
    CHECK_MEM(out, n,
              "HTTP/1.1 200 OK\r\nX-Content-Type: a\r\nContent-Type: text/plain; charset=utf-8\r\n"
              "Content-Length: 0\r\nConnection: keep-alive\r\n\r\n");
    /* 204 and 304 have no body: no Content-Length, no default type. */
    n = wsl_http_answer_head(out, sizeof out, 204, NULL, 0, 7, 0);
    CHECK_MEM(out, n, "HTTP/1.1 204 No Content\r\n\r\n");
    n = wsl_http_answer_head(out, sizeof out, 304, "ETag: \"x\"\r\n", 11, 7, 0);
    CHECK_MEM(out, n, "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n");
    CHECK(!wsl_http_status_has_body(100) && !wsl_http_status_has_body(204) &&
          !wsl_http_status_has_body(304) && wsl_http_status_has_body(200) &&
          wsl_http_status_has_body(404));
    /* Too small: 0 at every size below the real one. */
    size_t real = wsl_http_answer_head(out, sizeof out, 404, h, sizeof h - 1, 10, 0);
    for (size_t cap = 0; cap <= real; cap++) {
        char small[256];
        TEST_CONTEXT("cap %zu", cap);
        CHECK_EQ(wsl_http_answer_head(small, cap, 404, h, sizeof h - 1, 10, 0), 0);
    }
    TEST_CONTEXT("%s", "");
    CHECK_EQ(wsl_http_answer_head(out, real + 1, 404, h, sizeof h - 1, 10, 0), real);
    CHECK_EQ(wsl_http_answer_head(out, sizeof out, 99, NULL, 0, 0, 0), 0);

    /* What a script may put in a header. */
    CHECK(wsl_http_token("X-Custom_1.a!#$%&'*+^`|~", 24));
    CHECK(!wsl_http_token("", 0));
    CHECK(!wsl_http_token("a b", 3));
    CHECK(!wsl_http_token("a:b", 3));
    CHECK(!wsl_http_token("a\r\nb", 4));
    CHECK(!wsl_http_token("\xc3\xa9", 2));
    CHECK(wsl_http_field_value("", 0));
    CHECK(wsl_http_field_value("text/html; q=\"a\tb\"", 18));
    CHECK(wsl_http_field_value("caf\xc3\xa9", 5)); /* obs-text */
    CHECK(!wsl_http_field_value("a\r\nX-Injected: 1", 18));
    CHECK(!wsl_http_field_value("a\nb", 3));
    CHECK(!wsl_http_field_value("a\rb", 3));
    CHECK(!wsl_http_field_value("a\0b", 3));
    CHECK(!wsl_http_field_value("a\x7f", 2));
    CHECK(!wsl_http_field_value("\x1b[31m", 5));
}

static void test_malformed(void)
{
    static const char *bad[] = {
        "get / HTTP/1.1\r\nHost: h\r\n\r\n",               /* methods are case-sensitive */
        "FOO / HTTP/1.1\r\nHost: h\r\n\r\n",               /* unknown method */
        "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", /* obs-fold */
        "GET / HTTP/1.1\r\nHost : h\r\n\r\n",              /* space before the colon */
        "GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\n: empty name\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", /* bare CR */
        "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n",
        "GET /a b HTTP/1.1\r\nHost: h\r\n\r\n",
        "\r\n\r\n",
        "HTTP/1.1 200 OK\r\n\r\n", /* a response */
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "GET / HTTP/1.1\nHost: h\n\n", /* bare LF line ends */
        "GET / HTTP/1.1\r\nHost: h\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\n\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        TEST_CONTEXT("malformed %zu: %s", i, bad[i]);
        wsl_req_kind k = parse(bad[i]);
        CHECK_EQ(k, WSL_REQ_ERROR);
        CHECK(req.status == 400 || req.status == 505);
        CHECK(req.error && req.error[0]);
        CHECK(spans_inside(bad[i], strlen(bad[i])));
    }
    TEST_CONTEXT("%s", "");
    /* A NUL byte inside a header. */
    static const char nul[] = "GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n";
    EXPECT_STATUS(wsl_http_parse(&req, nul, sizeof nul - 1), 400);
    static const char nul_name[] = "GET / HTTP/1.1\r\nHo\0st: h\r\n\r\n";
    EXPECT_STATUS(wsl_http_parse(&req, nul_name, sizeof nul_name - 1), 400);
    /* Garbage is refused as soon as it shows, not waited on: a bare LF or CR, a TLS hello. */
    EXPECT_STATUS(parse("GET / HTTP/1.1\nHost"), 400);
    EXPECT_STATUS(parse("GET / HTTP/1.1\rHost"), 400);
    EXPECT_STATUS(wsl_http_parse(&req, "\x16\x03\x01\x02\x00\x01", 6), 400);
    EXPECT_STATUS(parse("\r\nGET / HTTP/1.1\r\n"), 400);
    EXPECT_STATUS(parse("get"), 400);
    CHECK_EQ(parse("GET / HTTP/1.1\r"), WSL_REQ_INCOMPLETE); /* the LF may still come */
    CHECK_EQ(parse("GE"), WSL_REQ_INCOMPLETE);
    CHECK_EQ(parse(""), WSL_REQ_INCOMPLETE);
}

static void test_limits(void)
{
    static char buf[WSL_HTTP_MAX_HEAD * 2];
    /* A head of exactly WSL_HTTP_MAX_HEAD bytes is fine; one more is 431. */
    const char *start = "GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ";
    for (int extra = 0; extra <= 1; extra++) {
        size_t total = WSL_HTTP_MAX_HEAD + (size_t)extra;
        size_t n = strlen(start);
        memcpy(buf, start, n);
        memset(buf + n, 'p', total - n - 4);
        memcpy(buf + total - 4, "\r\n\r\n", 4);
        TEST_CONTEXT("head of %zu bytes", total);
        wsl_req_kind k = wsl_http_parse(&req, buf, total);
        if (extra) {
            EXPECT_STATUS(k, 431);
        } else {
            CHECK_EQ(k, WSL_REQ_PLAIN);
            CHECK_EQ(req.head_len, total);
        }
        /* Before the end: INCOMPLETE; with more bytes after it: the same answer. */
        CHECK_EQ(wsl_http_parse(&req, buf, WSL_HTTP_MAX_HEAD - 1), WSL_REQ_INCOMPLETE);
        if (extra)
            EXPECT_STATUS(wsl_http_parse(&req, buf, total + 50), 431);
        else
            CHECK_EQ(wsl_http_parse(&req, buf, total + 50), WSL_REQ_PLAIN);
    }
    TEST_CONTEXT("%s", "");
    memset(buf, 'a', sizeof buf);
    memcpy(buf, "GET /", 5);
    EXPECT_STATUS(wsl_http_parse(&req, buf, WSL_HTTP_MAX_HEAD), 431);
    EXPECT_STATUS(wsl_http_parse(&req, buf, sizeof buf), 431);
    CHECK_EQ(wsl_http_parse(&req, buf, WSL_HTTP_MAX_HEAD - 1), WSL_REQ_INCOMPLETE);

    /* WSL_HTTP_MAX_HEADERS header lines are fine, one more is 400 (issue 4: absurd counts). */
    for (int extra = 0; extra <= 1; extra++) {
        size_t n = (size_t)snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: h\r\n");
        for (int i = 1; i < WSL_HTTP_MAX_HEADERS + extra; i++)
            n += (size_t)snprintf(buf + n, sizeof buf - n, "X-%d: %d\r\n", i, i);
        n += (size_t)snprintf(buf + n, sizeof buf - n, "\r\n");
        wsl_req_kind k = wsl_http_parse(&req, buf, n);
        TEST_CONTEXT("%d headers", WSL_HTTP_MAX_HEADERS + extra);
        if (extra) {
            EXPECT_STATUS(k, 400);
        } else {
            CHECK_EQ(k, WSL_REQ_PLAIN);
            CHECK_EQ(req.nheaders, WSL_HTTP_MAX_HEADERS);
        }
    }
    TEST_CONTEXT("%s", "");
}

/* Joins the elements wsl_http_next_token finds with '|'. */
static const char *tokens(const char *value)
{
    static char out[256];
    size_t n = 0;
    wsl_span list = {value, strlen(value)}, tok;
    out[0] = 0;
    while (wsl_http_next_token(&list, &tok)) {
        CHECK(tok.len > 0 && tok.p >= value && tok.p + tok.len <= value + strlen(value));
        n += (size_t)snprintf(out + n, sizeof out - n, "%s%.*s", n ? "|" : "", (int)tok.len, tok.p);
    }
    CHECK_EQ(list.len, 0);
    return out;
}

static void test_token_lists(void)
{
    CHECK_STR(tokens("chat, superchat"), "chat|superchat");
    CHECK_STR(tokens("keep-alive,Upgrade"), "keep-alive|Upgrade");
    CHECK_STR(tokens(" a ,, b,\t c\t,"), "a|b|c");
    CHECK_STR(tokens("single"), "single");
    CHECK_STR(tokens(""), "");
    CHECK_STR(tokens(" , ,\t"), "");
    wsl_span none = {NULL, 0}, tok;
    CHECK(!wsl_http_next_token(&none, &tok));
}

static void test_responses(void)
{
    char out[1024];
    /* The body goes out exactly as given: a script's refusal body is the script's. */
    size_t n = wsl_http_error_response(out, sizeof out, 400, NULL, "bad request\n");
    CHECK_MEM(out, n,
              "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
              "Content-Length: 12\r\nConnection: close\r\n\r\nbad request\n");
    CHECK_EQ(strlen(out), n);
    /* 426 carries the version once, whether or not the caller passed it. */
    n = wsl_http_error_response(out, sizeof out, 426, WSL_HTTP_426_EXTRA, "version");
    CHECK(strstr(out, "HTTP/1.1 426 Upgrade Required\r\n") == out);
    CHECK(strstr(out, "\r\nSec-WebSocket-Version: 13\r\n") != NULL);
    CHECK(strstr(strstr(out, "Sec-WebSocket-Version") + 1, "Sec-WebSocket-Version") == NULL);
    n = wsl_http_error_response(out, sizeof out, 426, NULL, "version");
    CHECK(strstr(out, "\r\nSec-WebSocket-Version: 13\r\n") != NULL);
    n = wsl_http_error_response(out, sizeof out, 426, "sec-websocket-version: 13\r\n", "v");
    CHECK(strstr(out, "Sec-WebSocket-Version") == NULL);
    CHECK(strstr(out, "sec-websocket-version: 13\r\n") != NULL);
    /* 405 says what is allowed. */
    n = wsl_http_error_response(out, sizeof out, 405, NULL, NULL);
    CHECK(strstr(out, "\r\nAllow: GET, HEAD\r\n") != NULL);
    CHECK(strstr(out, "\r\n\r\nMethod Not Allowed\n") != NULL);
    /* extra lines land in the header block. */
    n = wsl_http_error_response(out, sizeof out, 503, "Retry-After: 1\r\n", "busy");
    CHECK_MEM(out, n,
              "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
              "Content-Length: 4\r\nConnection: close\r\nRetry-After: 1\r\n\r\nbusy");
    /* Too small: 0, at every size below the real one. */
    size_t real = wsl_http_error_response(out, sizeof out, 431, NULL, "too large");
    for (size_t cap = 0; cap <= real; cap++) {
        char small[256];
        TEST_CONTEXT("cap %zu", cap);
        CHECK_EQ(wsl_http_error_response(small, cap, 431, NULL, "too large"), 0);
    }
    TEST_CONTEXT("%s", "");
    CHECK_EQ(wsl_http_error_response(out, real + 1, 431, NULL, "too large"), real);

    const char *acc = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
    n = wsl_http_upgrade_response(out, sizeof out, acc, "chat", 4, NULL);
    CHECK_MEM(out, n,
              "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
              "Sec-WebSocket-Protocol: chat\r\n\r\n");
    CHECK_EQ(wsl_http_upgrade_response(out, sizeof out, acc, "chat, superchat", 4, NULL), n);
    CHECK_EQ(wsl_http_upgrade_response(out, sizeof out, acc, "a\r\nX: y", 7, NULL), 0);
    CHECK_EQ(wsl_http_upgrade_response(out, sizeof out, acc, "a\nb", 3, NULL), 0);
    CHECK_EQ(wsl_http_upgrade_response(out, 50, acc, NULL, 0, NULL), 0);
    /* The extension agreed, after the protocol. */
    n = wsl_http_upgrade_response(out, sizeof out, acc, "chat", 4,
                                  "permessage-deflate; server_no_context_takeover");
    CHECK_MEM(out, n,
              "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
              "Sec-WebSocket-Protocol: chat\r\n"
              "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n");
    CHECK_EQ(wsl_http_upgrade_response(out, n, acc, "chat", 4,
                                       "permessage-deflate; server_no_context_takeover"),
             0); /* no room for the NUL */

    CHECK_STR(wsl_http_reason(404), "Not Found");
    CHECK_STR(wsl_http_reason(101), "Switching Protocols");
    CHECK_STR(wsl_http_reason(426), "Upgrade Required");
    CHECK_STR(wsl_http_reason(431), "Request Header Fields Too Large");
    CHECK_STR(wsl_http_reason(505), "HTTP Version Not Supported");
    CHECK_STR(wsl_http_reason(299), "Unknown");
}

int main(void)
{
    test_valid_upgrade();
    test_incomplete_and_pipelined();
    test_case_insensitive();
    test_upgrade_errors();
    test_plain_requests();
    test_framing();
    test_body();
    test_answers();
    test_malformed();
    test_limits();
    test_token_lists();
    test_responses();
    TEST_MAIN_END();
}
