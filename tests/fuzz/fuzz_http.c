/* libFuzzer target for the request head parser, the body decoder and the answers (src/http.c,
 * with src/handshake.c behind it), and the client a trusted proxy names (src/proxy.c): arbitrary
 * bytes as the start of a connection. Every span must lie inside the buffer, each kind must
 * satisfy its promises, parsing must be stable (the head alone classifies the same), a body
 * decodes the same however its bytes are split (and the input decodes as a chunked body too),
 * and the answers must build within their capacity. */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "handshake.h"
#include "deflate.h"
#include "fuzz.h"
#include "http.h"
#include "proxy.h"

static void span_inside(wsl_span s, const char *buf, size_t len)
{
    if (s.len == 0) return;
    ASSERT(s.p >= buf && s.p + s.len <= buf + len);
}

static void check_request(const wsl_request *req, wsl_req_kind k, const char *buf, size_t len)
{
    ASSERT(req->kind == k);
    span_inside(req->method, buf, len);
    span_inside(req->path, buf, len);
    span_inside(req->query, buf, len);
    span_inside(req->key, buf, len);
    span_inside(req->protocols, buf, len);
    span_inside(req->origin, buf, len);
    ASSERT(req->nheaders <= WSL_HTTP_MAX_HEADERS);
    for (size_t i = 0; i < req->nheaders; i++) {
        const wsl_header *h = &req->headers[i];
        span_inside(h->name, buf, len);
        span_inside(h->value, buf, len);
        if (h->value.len) {
            /* Values come trimmed. */
            ASSERT(h->value.p[0] != ' ' && h->value.p[0] != '\t');
            ASSERT(h->value.p[h->value.len - 1] != ' ' && h->value.p[h->value.len - 1] != '\t');
        }
    }
    switch (k) {
    case WSL_REQ_INCOMPLETE:
        ASSERT(len < WSL_HTTP_MAX_HEAD);
        ASSERT(!memmem(buf, len, "\r\n\r\n", 4));
        break;
    case WSL_REQ_ERROR:
        ASSERT(req->status == 400 || req->status == 405 || req->status == 417 ||
               req->status == 426 || req->status == 431 || req->status == 501 ||
               req->status == 505);
        ASSERT(req->error && req->error[0]);
        break;
    case WSL_REQ_UPGRADE:
    case WSL_REQ_PLAIN:
        ASSERT(req->head_len >= 4 && req->head_len <= len && req->head_len <= WSL_HTTP_MAX_HEAD);
        ASSERT(memcmp(buf + req->head_len - 4, "\r\n\r\n", 4) == 0);
        ASSERT(req->method.len > 0);
        ASSERT(req->path.len > 0 &&
               (req->path.p[0] == '/' || (req->path.len == 1 && req->path.p[0] == '*')));
        span_inside(req->path, buf, req->head_len);
        if (k == WSL_REQ_UPGRADE) {
            ASSERT(wsl_handshake_key_valid(req->key.p, req->key.len));
            ASSERT(req->method.len == 3 && memcmp(req->method.p, "GET", 3) == 0);
            ASSERT(req->body == WSL_BODY_NONE);
        } else {
            ASSERT(req->key.len == 0);
            ASSERT(wsl_http_header(req, "upgrade") == NULL);
            /* A body only as Content-Length or chunked, never both, never in HTTP/1.0 chunked. */
            ASSERT(req->body <= WSL_BODY_CHUNKED);
            ASSERT((req->body == WSL_BODY_LENGTH) == (req->content_length > 0));
            if (req->body == WSL_BODY_CHUNKED) {
                ASSERT(!req->http10);
                ASSERT(!wsl_http_header(req, "content-length"));
            }
            if (req->keep_alive && req->http10) ASSERT(wsl_http_header(req, "connection"));
            ASSERT(!(req->head && req->get));
        }
        break;
    default:
        ASSERT(0);
    }
}

/* Decode p[0..n) as req's body in pieces of `step` bytes: the decoded bytes into out (n bytes
 * at most), the last event, and the bytes consumed when it was DONE. */
static wsl_body_event decode(const wsl_request *req, const char *p, size_t n, size_t step,
                             char *out, size_t *out_len, size_t *consumed)
{
    wsl_http_body b;
    wsl_http_body_init(&b, req);
    size_t off = 0;
    *out_len = 0;
    wsl_body_event ev = WSL_BODY_MORE;
    while (true) {
        size_t end = off + step < n ? off + step : n;
        for (;;) {
            size_t used;
            wsl_span d;
            ev = wsl_http_body_next(&b, p + off, end - off, &used, &d);
            ASSERT(used <= end - off);
            if (ev == WSL_BODY_DATA) {
                ASSERT(d.len > 0 && d.p >= p + off && d.p + d.len == p + off + used);
                ASSERT(*out_len + d.len <= n);
                memcpy(out + *out_len, d.p, d.len);
                *out_len += d.len;
            } else {
                ASSERT(d.len == 0);
            }
            off += used;
            if (ev == WSL_BODY_MORE) ASSERT(off == end);
            if (ev != WSL_BODY_DATA) break;
        }
        if (ev != WSL_BODY_MORE || off == n) break;
    }
    *consumed = off;
    if (req->body == WSL_BODY_LENGTH) {
        ASSERT(*out_len <= req->content_length);
        ASSERT((ev == WSL_BODY_DONE) == (*out_len == req->content_length));
        ASSERT(ev != WSL_BODY_BAD);
    }
    return ev;
}

/* The same stream must decode the same whole, byte by byte and in pieces of another size. */
static void check_body(const wsl_request *req, const char *p, size_t n, size_t step)
{
    char *a = malloc(n + 1), *b = malloc(n + 1);
    ASSERT(a && b);
    size_t alen, blen, aused, bused;
    wsl_body_event ea = decode(req, p, n, n ? n : 1, a, &alen, &aused);
    size_t steps[] = {1, step ? step : 1};
    for (size_t i = 0; i < 2; i++) {
        wsl_body_event eb = decode(req, p, n, steps[i], b, &blen, &bused);
        ASSERT(ea == eb && alen == blen && memcmp(a, b, alen) == 0);
        if (ea == WSL_BODY_DONE || ea == WSL_BODY_BAD) ASSERT(aused == bused);
    }
    free(a);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Exactly the input, on the heap, so any read past it is caught. */
    char *buf = malloc(size ? size : 1);
    ASSERT(buf);
    memcpy(buf, data, size);
    static wsl_request req, again;
    wsl_req_kind k = wsl_http_parse(&req, buf, size);
    check_request(&req, k, buf, size);

    char out[WSL_HTTP_MAX_HEAD + 1024];
    size_t step = size ? data[size - 1] % 17 + 1 : 1;
    if (k == WSL_REQ_PLAIN) check_body(&req, buf + req.head_len, size - req.head_len, step);
    /* The whole input as a chunked body too, so the fuzzer reaches the decoder directly. */
    static const char te[] = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    static wsl_request chunked;
    if (chunked.kind != WSL_REQ_PLAIN)
        ASSERT(wsl_http_parse(&chunked, te, sizeof te - 1) == WSL_REQ_PLAIN);
    check_body(&chunked, buf, size, step);

    if (k == WSL_REQ_PLAIN) {
        /* The client a trusted proxy names is an address that formats and parses back. */
        static wsl_cidr trust[2];
        static size_t ntrust;
        char why[128];
        if (!ntrust)
            ASSERT(wsl_proxy_parse("10.0.0.0/8,::1", trust, 2, &ntrust, why, sizeof why) == 0);
        wsl_ipaddr client, again_ip;
        bool secure = false;
        if (wsl_proxy_client(trust, ntrust, &req, &client, &secure)) {
            char ip[WSL_IP_STRLEN];
            wsl_ip_format(&client, ip, sizeof ip);
            ASSERT(wsl_ip_parse(ip, strlen(ip), &again_ip));
            ASSERT(again_ip.v4 == client.v4 && memcmp(again_ip.b, client.b, 16) == 0);
        }
        /* Its header values as an answer's header block when they may be one. */
        size_t hl = 0;
        char block[WSL_HTTP_MAX_HEAD + 512];
        for (size_t i = 0; i < req.nheaders; i++) {
            const wsl_header *h = &req.headers[i];
            /* as the binding does: no Content-Length of its own, and values that may be sent */
            if (!wsl_http_field_value(h->value.p, h->value.len) ||
                (h->name.len == 14 && strncasecmp(h->name.p, "content-length", 14) == 0))
                continue;
            hl += (size_t)snprintf(block + hl, sizeof block - hl, "%.*s: %.*s\r\n",
                                   (int)h->name.len, h->name.p, (int)h->value.len, h->value.p);
            ASSERT(hl < sizeof block);
        }
        int status = 100 + (int)(size % 500);
        size_t n = wsl_http_answer_head(out, sizeof out, status, block, hl, size, size & 3);
        if (n) {
            ASSERT(n == strlen(out) && memcmp(out + n - 4, "\r\n\r\n", 4) == 0);
            ASSERT(memmem(out, n, "\r\n\r\n", 4) == out + n - 4); /* one head, no early end */
            ASSERT((strstr(out, "\r\nContent-Length: ") != NULL) ==
                   wsl_http_status_has_body(status));
        }
    }

    if (k == WSL_REQ_UPGRADE || k == WSL_REQ_PLAIN) {
        /* The head alone says the same: bytes after it never matter. */
        wsl_req_kind k2 = wsl_http_parse(&again, buf, req.head_len);
        check_request(&again, k2, buf, req.head_len);
        ASSERT(k2 == k && again.head_len == req.head_len && again.nheaders == req.nheaders);
        /* And every shorter prefix is still incomplete (or a bare-LF error). */
        for (size_t cut = req.head_len - 1; cut + 1 > 0 && cut + 64 >= req.head_len; cut--) {
            wsl_req_kind k3 = wsl_http_parse(&again, buf, cut);
            check_request(&again, k3, buf, cut);
            ASSERT(k3 == WSL_REQ_INCOMPLETE);
            if (cut == 0) break;
        }
    }
    /* Every header value as a comma list: elements inside it, trimmed, never empty. */
    for (size_t i = 0; i < req.nheaders; i++) {
        wsl_span list = req.headers[i].value, tok;
        const char *end = list.p + list.len;
        size_t rounds = 0;
        while (wsl_http_next_token(&list, &tok)) {
            ASSERT(tok.len > 0 && tok.p >= req.headers[i].value.p && tok.p + tok.len <= end);
            ASSERT(tok.p[0] != ' ' && tok.p[0] != '\t' && tok.p[0] != ',');
            ASSERT(tok.p[tok.len - 1] != ' ' && tok.p[tok.len - 1] != '\t');
            ASSERT(memchr(tok.p, ',', tok.len) == NULL);
            ASSERT(++rounds <= req.headers[i].value.len);
        }
    }
    if (k == WSL_REQ_UPGRADE) {
        char accept[WSL_ACCEPT_LEN + 1];
        wsl_handshake_accept(req.key.p, req.key.len, accept);
        ASSERT(strlen(accept) == WSL_ACCEPT_LEN);
        /* The permessage-deflate answer to whatever extensions it offers, as the server
         * builds it. */
        wsl_deflate_params zp;
        char ext[128];
        bool z = wsl_deflate_negotiate_request(&req, WSL_DEFLATE_CLIENT_BITS, &zp) &&
                 wsl_deflate_answer(&zp, ext, sizeof ext) > 0;
        size_t n = wsl_http_upgrade_response(out, sizeof out, accept, req.protocols.p,
                                             req.protocols.len, z ? ext : NULL);
        /* A header value never holds CR or LF, so it always fits a response. */
        ASSERT(n > 0 && n == strlen(out));
        ASSERT(memcmp(out + n - 4, "\r\n\r\n", 4) == 0);
    }
    if (k == WSL_REQ_ERROR) {
        size_t n = wsl_http_error_response(
            out, sizeof out, req.status, req.status == 426 ? WSL_HTTP_426_EXTRA : NULL, req.error);
        ASSERT(n > 0 && n == strlen(out));
        /* Any capacity: either it fits whole or nothing is claimed. */
        size_t cap = size ? data[0] % (n + 8) : 0;
        char *small = malloc(cap ? cap : 1);
        ASSERT(small);
        size_t m = wsl_http_error_response(small, cap, req.status, NULL, req.error);
        ASSERT(m == 0 || (m == n && m < cap));
        free(small);
    }
    /* The input as the body and extra header text of an error answer. */
    if (size < 2048) {
        char *text = malloc(size + 1);
        ASSERT(text);
        memcpy(text, data, size);
        text[size] = 0;
        char *half = text + size / 2;
        size_t n = wsl_http_error_response(out, sizeof out, 400, half, text);
        ASSERT(n == 0 || (n < sizeof out && out[n] == '\0'));
        free(text);
    }
    free(buf);
    return 0;
}
