/* The HTTP/1.1 request that opens every connection: parsed with llhttp once its head is
 * complete, then classified as a WebSocket upgrade (RFC 6455 section 4.2.1), a plain GET or HEAD
 * for the static files, or an error carrying the HTTP status to answer. Also builds the answers.
 * No I/O, no allocation. */
#ifndef WSL_HTTP_H
#define WSL_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#define WSL_HTTP_MAX_HEAD    8192 /* request line and headers; a longer head is answered 431 */
#define WSL_HTTP_MAX_HEADERS 64   /* more header lines than this is answered 400 */

typedef struct wsl_span {
    const char *p;
    size_t len;
} wsl_span;

typedef struct wsl_header {
    wsl_span name;  /* as sent (compare case-insensitively) */
    wsl_span value; /* without surrounding whitespace */
} wsl_header;

typedef enum {
    WSL_REQ_INCOMPLETE, /* the head has not ended yet: wait for more bytes */
    WSL_REQ_UPGRADE,    /* a valid WebSocket upgrade */
    WSL_REQ_FILE,       /* a plain GET or HEAD (no Upgrade header): for the static handler */
    WSL_REQ_ERROR,      /* answer `status` with `error` as the body, then close */
} wsl_req_kind;

/* One parsed request head. Every span points into the buffer given to wsl_http_parse, which
 * must stay unchanged while the request is used. Lives on the stack of whoever parses. */
typedef struct wsl_request {
    wsl_req_kind kind;
    int status;        /* ERROR: 400, 405, 426, 431 (head over 8 KiB) or 505 */
    const char *error; /* ERROR: a short static sentence for the body and the log */
    wsl_span method;
    wsl_span path;      /* the request target before '?', still percent-encoded */
    wsl_span query;     /* after '?', without it; len 0 when absent */
    bool head;          /* FILE: the method was HEAD */
    wsl_span key;       /* UPGRADE: Sec-WebSocket-Key */
    wsl_span protocols; /* UPGRADE: Sec-WebSocket-Protocol as sent (comma list); len 0 if absent */
    wsl_span origin;    /* Origin; len 0 if absent */
    size_t head_len;    /* bytes of the head including the blank line; later bytes are frames */
    size_t nheaders;
    wsl_header headers[WSL_HTTP_MAX_HEADERS];
} wsl_request;

/* ASCII lower case: header names are ASCII, and other bytes pass through unchanged. */
static inline char wsl_ascii_lower_char(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c + ('a' - 'A')) : c;
}

static inline void wsl_ascii_lower(char *dst, const char *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = wsl_ascii_lower_char(src[i]);
}

/* Classify the bytes received so far (buf[0..len), from the first byte of the connection). */
wsl_req_kind wsl_http_parse(wsl_request *req, const char *buf, size_t len);

/* Take the next element of a comma-separated header value (surrounding whitespace removed,
 * empty elements skipped) and advance *list past it; false when none is left. */
bool wsl_http_next_token(wsl_span *list, wsl_span *token);

/* Case-insensitive lookup of a header by name; NULL when absent. */
const wsl_header *wsl_http_header(const wsl_request *req, const char *name);

/* "Not Found" for 404 and so on; "Unknown" for codes it does not know. */
const char *wsl_http_reason(int status);

/* The header line a 426 answer must carry (RFC 6455 section 4.4): the caller passes it as
 * `extra` to wsl_http_error_response (which also adds it by itself when extra lacks it). */
#define WSL_HTTP_426_EXTRA "Sec-WebSocket-Version: 13\r\n"

/* An HTTP/1.1 error answer: status line, Content-Type: text/plain, Content-Length,
 * Connection: close, the `extra` header lines (each ending in CRLF; may be NULL), then the body
 * exactly as given (NULL: the reason phrase and a newline). Returns the length written; 0 when it
 * does not fit in cap. */
size_t wsl_http_error_response(char *out, size_t cap, int status, const char *extra,
                               const char *body);

/* The 101 Switching Protocols answer; protocol (one name the script chose from
 * req->protocols) may be NULL, and so may extensions (the Sec-WebSocket-Extensions value agreed,
 * NUL-terminated). Returns the length (NUL-terminated), 0 if it does not fit or protocol holds
 * CR, LF or NUL (header injection). */
size_t wsl_http_upgrade_response(char *out, size_t cap, const char *accept, const char *protocol,
                                 size_t protocol_len, const char *extensions);

#endif
