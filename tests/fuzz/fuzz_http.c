/* libFuzzer target for the request head parser and the answers (src/http.c, with
 * src/handshake.c behind it): arbitrary bytes as the start of a connection. Every span must lie
 * inside the buffer, each kind must satisfy its promises, parsing must be stable (the head
 * alone classifies the same), and the answers must build within their capacity. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handshake.h"
#include "deflate.h"
#include "fuzz.h"
#include "http.h"

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
        ASSERT(req->status == 400 || req->status == 405 || req->status == 426 ||
               req->status == 431 || req->status == 505);
        ASSERT(req->error && req->error[0]);
        break;
    case WSL_REQ_UPGRADE:
    case WSL_REQ_FILE:
        ASSERT(req->head_len >= 4 && req->head_len <= len && req->head_len <= WSL_HTTP_MAX_HEAD);
        ASSERT(memcmp(buf + req->head_len - 4, "\r\n\r\n", 4) == 0);
        ASSERT(req->method.len > 0);
        ASSERT(req->path.len > 0 && req->path.p[0] == '/');
        span_inside(req->path, buf, req->head_len);
        if (k == WSL_REQ_UPGRADE) {
            ASSERT(wsl_handshake_key_valid(req->key.p, req->key.len));
            ASSERT(req->method.len == 3 && memcmp(req->method.p, "GET", 3) == 0);
        } else {
            ASSERT(req->key.len == 0);
            ASSERT(wsl_http_header(req, "upgrade") == NULL);
        }
        break;
    default:
        ASSERT(0);
    }
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
    if (k == WSL_REQ_UPGRADE || k == WSL_REQ_FILE) {
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
