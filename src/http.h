/* HTTP/1.1 requests: a head parsed with llhttp once it is complete, then classified as a
 * WebSocket upgrade (RFC 6455 section 4.2.1), a plain request (any method, for on_request or the
 * static files) or an error carrying the HTTP status to answer; the body of a plain request
 * decoded as it arrives (Content-Length or chunked); the answers. No I/O, no allocation. */
#ifndef WSL_HTTP_H
#define WSL_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
    WSL_REQ_PLAIN,      /* any other request (no Upgrade header), maybe with a body */
    WSL_REQ_ERROR,      /* answer `status` with `error` as the body, then close */
} wsl_req_kind;

/* How a plain request's body is framed (RFC 9112 section 6.3). */
typedef enum {
    WSL_BODY_NONE,
    WSL_BODY_LENGTH,  /* Content-Length bytes */
    WSL_BODY_CHUNKED, /* Transfer-Encoding: chunked */
} wsl_body_framing;

/* One parsed request head. Every span points into the buffer given to wsl_http_parse, which
 * must stay unchanged while the request is used. Lives on the stack of whoever parses. */
typedef struct wsl_request {
    wsl_req_kind kind;
    int status;        /* ERROR: 400, 405, 417, 426, 431 (head over 8 KiB), 501 or 505 */
    const char *error; /* ERROR: a short static sentence for the body and the log */
    wsl_span method;
    wsl_span path;           /* the request target before '?', still percent-encoded */
    wsl_span query;          /* after '?', without it; len 0 when absent */
    bool head;               /* PLAIN: the method was HEAD */
    bool get;                /* PLAIN: the method was GET */
    bool http10;             /* HTTP/1.0 */
    bool keep_alive;         /* PLAIN: the client lets the connection stay open after the answer */
    bool expect_100;         /* PLAIN: Expect: 100-continue */
    uint8_t body;            /* PLAIN: wsl_body_framing */
    uint64_t content_length; /* WSL_BODY_LENGTH: the announced size */
    wsl_span key;            /* UPGRADE: Sec-WebSocket-Key */
    wsl_span protocols; /* UPGRADE: Sec-WebSocket-Protocol as sent (comma list); len 0 if absent */
    wsl_span origin;    /* Origin; len 0 if absent */
    size_t head_len;    /* bytes of the head including the blank line; later bytes are frames */
    size_t nheaders;
    wsl_header headers[WSL_HTTP_MAX_HEADERS];
    /* Set by the connection before it reports the request (the parser leaves them zero): the
     * client's address ("ip:port" of the peer, or what a trusted proxy forwarded, see proxy.h)
     * and whether it reached us, or that proxy, over TLS. */
    const char *remote;
    bool secure;
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

/* Classify the bytes received so far (buf[0..len), from the first byte of a request: of the
 * connection, or right after the previous request on a kept-alive one). */
wsl_req_kind wsl_http_parse(wsl_request *req, const char *buf, size_t len);

/* Take the next element of a comma-separated header value (surrounding whitespace removed,
 * empty elements skipped) and advance *list past it; false when none is left. */
bool wsl_http_next_token(wsl_span *list, wsl_span *token);

/* Case-insensitive lookup of a header by name; NULL when absent. */
const wsl_header *wsl_http_header(const wsl_request *req, const char *name);

/* ---- the body of a plain request ---------------------------------------------------------- */

#define WSL_HTTP_MAX_CHUNK_LINE 1024 /* a chunk-size line with its extensions, without CRLF */
#define WSL_HTTP_MAX_TRAILERS   WSL_HTTP_MAX_HEAD /* bytes of trailer lines, without line ends */

/* The body decoder of one request: Content-Length bytes, or chunked coding (RFC 9112 section
 * 7.1: sizes, extensions skipped, data, trailer lines skipped) with a bare LF refused as in the
 * head. Lives in whoever reads the request; no allocation. */
typedef struct wsl_http_body {
    uint64_t left;  /* LENGTH: bytes still to come; CHUNKED: of the current chunk */
    uint32_t line;  /* bytes of the current chunk-size or trailer line */
    uint32_t trail; /* bytes of trailer lines so far */
    uint8_t state;
    uint8_t digits; /* hex digits of the chunk size so far */
} wsl_http_body;

typedef enum {
    WSL_BODY_MORE, /* every byte given was consumed: the body goes on */
    WSL_BODY_DATA, /* *data is the next piece of the body (inside the bytes given) */
    WSL_BODY_DONE, /* the body ended; bytes after `used` belong to the next request */
    WSL_BODY_BAD,  /* malformed chunked coding: answer 400 and close */
} wsl_body_event;

/* Start decoding the body req announces (a request without one is DONE at once). */
void wsl_http_body_init(wsl_http_body *b, const wsl_request *req);

/* Decode from p[0..n): *used bytes were consumed; call again after DATA. DONE may come with
 * n == 0 (a body that ended with the last piece). */
wsl_body_event wsl_http_body_next(wsl_http_body *b, const char *p, size_t n, size_t *used,
                                  wsl_span *data);

/* ---- answers ------------------------------------------------------------------------------ */

/* RFC 9110 section 5.6.2: a field name is a token. */
bool wsl_http_token(const char *p, size_t len);
/* A field value a server may send: no CR, LF, NUL or other control byte but HTAB (obs-text,
 * bytes 0x80-0xFF, is allowed). */
bool wsl_http_field_value(const char *p, size_t len);

/* Flags of wsl_http_answer_head. */
enum {
    WSL_ANSWER_CLOSE = 1,      /* Connection: close (the connection ends after this answer) */
    WSL_ANSWER_KEEP_ALIVE = 2, /* Connection: keep-alive (an HTTP/1.0 client that asked for it) */
};

/* The head of a plain answer: status line, the caller's header lines (`headers`, hlen bytes,
 * each "Name: value\r\n", already checked), Content-Type: text/plain; charset=utf-8 unless
 * they hold one, Content-Length: body_len (none for 1xx, 204 and 304, which have no body), the
 * Connection header the flags ask for, and the blank line. Returns the length (NUL-terminated);
 * 0 when it does not fit in cap. */
size_t wsl_http_answer_head(char *out, size_t cap, int status, const char *headers, size_t hlen,
                            size_t body_len, unsigned flags);

/* Whether an answer with this status carries a body (not 1xx, 204 or 304). */
static inline bool wsl_http_status_has_body(int status)
{
    return status >= 200 && status != 204 && status != 304;
}

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
