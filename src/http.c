/* HTTP requests: wait for the whole head (CRLFCRLF), parse it in one llhttp_execute (so every
 * span is one contiguous run of the caller's buffer), then classify it as a WebSocket upgrade
 * (RFC 6455 section 4.2.1), a plain request of any method, or an HTTP error; decode a plain
 * request's body as it arrives (Content-Length, or chunked by a small state machine of our own,
 * since llhttp would need the head again); write the answers. No I/O, no allocation. */
#include "http.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "handshake.h"
#include "llhttp.h"

/* Parsing state shared with the llhttp callbacks; lives on wsl_http_parse's stack. */
typedef struct parse_state {
    wsl_request *req;
    wsl_span url;
    bool url_started;
    bool method_started;
    bool field_done; /* the last header's name is complete: the next name starts a new header */
    bool value_started;
    bool too_many; /* more than WSL_HTTP_MAX_HEADERS header lines */
    bool split;    /* a span came in pieces that do not join (never with a whole head) */
    bool complete; /* llhttp saw the end of the request */
    int messages;  /* requests begun; a second one inside the head is smuggling */
    unsigned major, minor;
    int method;
    bool has_length, chunked;
    uint64_t content_length;
} parse_state;

static parse_state *state_of(llhttp_t *p)
{
    return p->data;
}

/* Start span s at `at`, or extend it when llhttp reports it in several calls. */
static int span_add(parse_state *st, wsl_span *s, bool *started, const char *at, size_t len)
{
    if (!*started) {
        s->p = at;
        s->len = len;
        *started = true;
        return 0;
    }
    if (at != s->p + s->len) {
        st->split = true;
        return HPE_USER;
    }
    s->len += len;
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    parse_state *st = state_of(p);
    return ++st->messages > 1 ? HPE_USER : 0;
}

static int on_method(llhttp_t *p, const char *at, size_t len)
{
    parse_state *st = state_of(p);
    return span_add(st, &st->req->method, &st->method_started, at, len);
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    parse_state *st = state_of(p);
    return span_add(st, &st->url, &st->url_started, at, len);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    parse_state *st = state_of(p);
    wsl_request *req = st->req;
    if (req->nheaders == 0 || st->field_done) {
        if (req->nheaders == WSL_HTTP_MAX_HEADERS) {
            st->too_many = true;
            return HPE_USER;
        }
        wsl_header *h = &req->headers[req->nheaders++];
        h->name.p = at;
        h->name.len = len;
        h->value.p = at + len; /* an empty value may get no callback: keep it inside the buffer */
        h->value.len = 0;
        st->field_done = false;
        st->value_started = false;
        return 0;
    }
    wsl_header *h = &req->headers[req->nheaders - 1];
    bool started = true;
    int rc = span_add(st, &h->name, &started, at, len);
    h->value.p = h->name.p + h->name.len;
    return rc;
}

static int on_header_field_complete(llhttp_t *p)
{
    state_of(p)->field_done = true;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    parse_state *st = state_of(p);
    wsl_request *req = st->req;
    if (req->nheaders == 0) return HPE_USER;
    return span_add(st, &req->headers[req->nheaders - 1].value, &st->value_started, at, len);
}

static int on_headers_complete(llhttp_t *p)
{
    parse_state *st = state_of(p);
    st->major = p->http_major;
    st->minor = p->http_minor;
    st->method = p->method;
    st->has_length = (p->flags & F_CONTENT_LENGTH) != 0;
    st->content_length = st->has_length ? p->content_length : 0;
    st->chunked = (p->flags & F_CHUNKED) != 0;
    return 1; /* llhttp parses the head only: the connection reads the body (wsl_http_body) */
}

static int on_message_complete(llhttp_t *p)
{
    state_of(p)->complete = true;
    return 0;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_method = on_method,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

static bool span_ieq(wsl_span s, const char *lit)
{
    size_t n = strlen(lit);
    if (s.len != n) return false;
    for (size_t i = 0; i < n; i++)
        if (wsl_ascii_lower_char(s.p[i]) != wsl_ascii_lower_char(lit[i])) return false;
    return true;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static wsl_span trim(wsl_span s)
{
    while (s.len && is_ows(s.p[0])) {
        s.p++;
        s.len--;
    }
    while (s.len && is_ows(s.p[s.len - 1]))
        s.len--;
    return s;
}

/* True when the comma-separated list v holds `token` (case-insensitive), as Connection and
 * Upgrade values are (RFC 9110 section 5.6.1). */
static bool has_token(wsl_span v, const char *token)
{
    wsl_span item;
    while (wsl_http_next_token(&v, &item))
        if (span_ieq(item, token)) return true;
    return false;
}

const wsl_header *wsl_http_header(const wsl_request *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (span_ieq(req->headers[i].name, name)) return &req->headers[i];
    return NULL;
}

static size_t count_headers(const wsl_request *req, const char *name, const wsl_header **first)
{
    size_t n = 0;
    *first = NULL;
    for (size_t i = 0; i < req->nheaders; i++) {
        if (!span_ieq(req->headers[i].name, name)) continue;
        if (!n) *first = &req->headers[i];
        n++;
    }
    return n;
}

static bool any_header_has_token(const wsl_request *req, const char *name, const char *token)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (span_ieq(req->headers[i].name, name) && has_token(req->headers[i].value, token))
            return true;
    return false;
}

static wsl_req_kind refuse(wsl_request *req, int status, const char *why)
{
    req->kind = WSL_REQ_ERROR;
    req->status = status;
    req->error = why;
    return WSL_REQ_ERROR;
}

/* The request target split into path and query. Origin-form ("/p?q") is what clients send;
 * absolute-form ("http://host/p?q") must be accepted too (RFC 9112 section 3.2.2). */
static bool split_target(wsl_request *req, wsl_span url, int method)
{
    const char *p = url.p, *end = url.p + url.len;
    if (method == HTTP_OPTIONS && url.len == 1 && p[0] == '*') { /* asterisk-form, section 3.2.4 */
        req->path = url;
        req->query = (wsl_span){end, 0};
        return true;
    }
    if (url.len && p[0] != '/') {
        const char *scheme = memchr(p, ':', url.len);
        if (!scheme || end - scheme < 3 || scheme[1] != '/' || scheme[2] != '/') return false;
        const char *slash = memchr(scheme + 3, '/', (size_t)(end - scheme - 3));
        if (!slash) return false;
        p = slash;
    }
    if (p == end) return false;
    const char *q = memchr(p, '?', (size_t)(end - p));
    req->path = (wsl_span){p, (size_t)((q ? q : end) - p)};
    req->query = q ? (wsl_span){q + 1, (size_t)(end - q - 1)} : (wsl_span){end, 0};
    return true;
}

static wsl_req_kind classify_upgrade(wsl_request *req, const parse_state *st)
{
    const wsl_header *h;
    if (st->method != HTTP_GET) return refuse(req, 405, "a WebSocket upgrade must use GET");
    if (st->minor < 1) return refuse(req, 400, "a WebSocket upgrade needs HTTP/1.1");
    if (count_headers(req, "host", &h) != 1) return refuse(req, 400, "missing Host header");
    if (st->content_length > 0 || wsl_http_header(req, "transfer-encoding"))
        return refuse(req, 400, "a WebSocket upgrade has no body");
    if (!any_header_has_token(req, "upgrade", "websocket"))
        return refuse(req, 400, "unsupported Upgrade (only websocket)");
    if (!any_header_has_token(req, "connection", "upgrade"))
        return refuse(req, 400, "Connection header lacks the upgrade token");
    if (count_headers(req, "sec-websocket-version", &h) != 1 || !span_ieq(h->value, "13"))
        return refuse(req, 426, "unsupported WebSocket version (only 13)");
    if (count_headers(req, "sec-websocket-key", &h) != 1)
        return refuse(req, 400, "exactly one Sec-WebSocket-Key header is required");
    if (!wsl_handshake_key_valid(h->value.p, h->value.len))
        return refuse(req, 400, "invalid Sec-WebSocket-Key");
    req->key = h->value;
    if ((h = wsl_http_header(req, "sec-websocket-protocol"))) req->protocols = h->value;
    req->kind = WSL_REQ_UPGRADE;
    return WSL_REQ_UPGRADE;
}

/* llhttp lets some other bytes through a field name (a space before the colon), which RFC 9112
 * section 5.1 says a server must refuse. */
bool wsl_http_token(const char *p, size_t len)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (len == 0) return false;
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  (c && strchr(extra, c));
        if (!ok) return false;
    }
    return true;
}

bool wsl_http_field_value(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7F) return false;
    }
    return true;
}

/* The body's framing (RFC 9112 section 6.3), or an error. Transfer-Encoding is understood only
 * as exactly "chunked": any other coding would hand the script bytes it cannot read (501), and
 * chunked that is not the last coding, both headers, or Transfer-Encoding from an HTTP/1.0
 * client are the shapes request smuggling is made of (400). */
static wsl_req_kind framing(wsl_request *req, const parse_state *st)
{
    size_t codings = 0;
    bool last_chunked = false;
    for (size_t i = 0; i < req->nheaders; i++) {
        if (!span_ieq(req->headers[i].name, "transfer-encoding")) continue;
        wsl_span v = req->headers[i].value, tok;
        while (wsl_http_next_token(&v, &tok)) {
            codings++;
            last_chunked = span_ieq(tok, "chunked");
        }
        if (!codings) return refuse(req, 400, "empty Transfer-Encoding");
    }
    if (codings) {
        if (st->has_length) return refuse(req, 400, "both Content-Length and Transfer-Encoding");
        if (st->minor == 0) return refuse(req, 400, "Transfer-Encoding in an HTTP/1.0 request");
        if (!last_chunked) return refuse(req, 400, "chunked is not the last transfer coding");
        if (codings > 1 || !st->chunked)
            return refuse(req, 501, "transfer codings other than chunked are not supported");
        req->body = WSL_BODY_CHUNKED;
    } else if (st->content_length > 0) {
        req->body = WSL_BODY_LENGTH;
        req->content_length = st->content_length;
    }
    return WSL_REQ_PLAIN;
}

/* Expect (RFC 9110 section 10.1.1): only 100-continue is known; anything else is 417. */
static wsl_req_kind expect(wsl_request *req)
{
    for (size_t i = 0; i < req->nheaders; i++) {
        if (!span_ieq(req->headers[i].name, "expect")) continue;
        wsl_span v = req->headers[i].value, tok;
        while (wsl_http_next_token(&v, &tok)) {
            if (!span_ieq(tok, "100-continue"))
                return refuse(req, 417, "only Expect: 100-continue is supported");
            req->expect_100 = true;
        }
    }
    return WSL_REQ_PLAIN;
}

static wsl_req_kind classify(wsl_request *req, const parse_state *st)
{
    const wsl_header *h;
    if (st->major != 1) return refuse(req, 505, "HTTP version not supported");
    for (size_t i = 0; i < req->nheaders; i++)
        if (!wsl_http_token(req->headers[i].name.p, req->headers[i].name.len))
            return refuse(req, 400, "invalid header name");
    /* RFC 9112 section 3.2: one Host in any request, and an HTTP/1.1 request must have it. */
    size_t hosts = count_headers(req, "host", &h);
    if (hosts > 1) return refuse(req, 400, "more than one Host header");
    bool upgrade = wsl_http_header(req, "upgrade") != NULL;
    req->http10 = st->minor == 0;
    if (!upgrade && st->method == HTTP_CONNECT) return refuse(req, 501, "CONNECT is not served");
    if (!split_target(req, st->url, st->method)) return refuse(req, 400, "bad request target");
    if ((h = wsl_http_header(req, "origin"))) req->origin = h->value;
    if (upgrade) return classify_upgrade(req, st);
    if (hosts == 0 && st->minor >= 1) return refuse(req, 400, "missing Host header");
    if (framing(req, st) == WSL_REQ_ERROR || expect(req) == WSL_REQ_ERROR) return WSL_REQ_ERROR;
    req->head = st->method == HTTP_HEAD;
    req->get = st->method == HTTP_GET;
    /* RFC 9112 section 9.3: 1.1 stays open unless told to close; 1.0 closes unless asked. */
    req->keep_alive = st->minor >= 1 ? !any_header_has_token(req, "connection", "close")
                                     : any_header_has_token(req, "connection", "keep-alive") &&
                                           !any_header_has_token(req, "connection", "close");
    req->kind = WSL_REQ_PLAIN;
    return WSL_REQ_PLAIN;
}

/* Length of the head through its blank line, 0 while it has not arrived, or SIZE_MAX for a
 * bare LF: llhttp would take it as a line end where other servers may not, which is how
 * requests get smuggled past proxies; real clients always send CRLF. */
static size_t head_end(const char *buf, size_t len)
{
    size_t lim = len < WSL_HTTP_MAX_HEAD ? len : WSL_HTTP_MAX_HEAD;
    const char *p = buf, *end = buf + lim;
    while ((p = memchr(p, '\n', (size_t)(end - p)))) {
        size_t i = (size_t)(p - buf);
        if (i == 0 || buf[i - 1] != '\r') return SIZE_MAX;
        if (i >= 3 && buf[i - 2] == '\n' && buf[i - 3] == '\r') return i + 1;
        p++;
    }
    return 0;
}

/* Bytes that can never begin a request (a TLS hello, random data, CR-only line ends, NUL) are
 * refused as soon as they arrive instead of waiting for a blank line that will not come. */
static const char *garbage(const char *buf, size_t len)
{
    size_t i = 0;
    while (i < len && i < 24 && buf[i] >= 'A' && buf[i] <= 'Z')
        i++;
    if (i < len && (i == 0 || i == 24 || buf[i] != ' ')) return "not an HTTP request";
    if (memchr(buf, '\0', len)) return "NUL byte in the request head";
    for (const char *p = buf, *end = buf + len; (p = memchr(p, '\r', (size_t)(end - p))); p++)
        if (p + 1 < end && p[1] != '\n') return "bare CR in the request head";
    return NULL;
}

wsl_req_kind wsl_http_parse(wsl_request *req, const char *buf, size_t len)
{
    memset(req, 0, sizeof *req);
    size_t end = head_end(buf, len);
    /* Only the head: what follows it is the client's first frames. */
    size_t scan = end && end != SIZE_MAX ? end : len < WSL_HTTP_MAX_HEAD ? len : WSL_HTTP_MAX_HEAD;
    const char *bad = garbage(buf, scan);
    if (bad) return refuse(req, 400, bad);
    if (end == SIZE_MAX) return refuse(req, 400, "bare LF in the request head");
    if (end == 0) {
        if (len >= WSL_HTTP_MAX_HEAD) return refuse(req, 431, "request head too large");
        req->kind = WSL_REQ_INCOMPLETE;
        return WSL_REQ_INCOMPLETE;
    }
    req->head_len = end;

    parse_state st = {.req = req};
    llhttp_t parser;
    llhttp_init(&parser, HTTP_REQUEST, &settings);
    parser.data = &st;
    llhttp_errno_t err = llhttp_execute(&parser, buf, end);
    for (size_t i = 0; i < req->nheaders; i++)
        req->headers[i].value = trim(req->headers[i].value);
    if (st.too_many) return refuse(req, 400, "too many header lines");
    if (err == HPE_INVALID_VERSION || err == HPE_PAUSED_H2_UPGRADE)
        return refuse(req, 505, "HTTP version not supported");
    if ((err != HPE_OK && err != HPE_PAUSED_UPGRADE) || !st.complete || st.messages != 1 ||
        st.split)
        return refuse(req, 400, "malformed request");
    return classify(req, &st);
}

bool wsl_http_next_token(wsl_span *list, wsl_span *token)
{
    while (list->len > 0) {
        const char *p = list->p, *end = p + list->len;
        const char *comma = memchr(p, ',', list->len);
        const char *stop = comma ? comma : end;
        list->p = comma ? comma + 1 : end;
        list->len = (size_t)(end - list->p);
        *token = trim((wsl_span){p, (size_t)(stop - p)});
        if (token->len) return true;
    }
    return false;
}

/* ---- the body ------------------------------------------------------------------------------ */

enum {
    B_DONE,
    B_LENGTH,  /* Content-Length: b->left bytes to come */
    B_SIZE,    /* chunk-size hex digits */
    B_SIZE_WS, /* whitespace after the size: only ';' or the line end may follow */
    B_EXT,     /* a chunk extension, skipped */
    B_SIZE_LF, /* the CR ending the size line came */
    B_DATA,    /* b->left bytes of chunk data to come */
    B_DATA_CR, /* the CRLF after the data */
    B_DATA_LF,
    B_TRAILER,    /* the start of a trailer line, or of the final empty line */
    B_TRAILER_IN, /* inside a trailer line, skipped */
    B_TRAILER_LF,
    B_END_LF, /* the final empty line's LF */
};

void wsl_http_body_init(wsl_http_body *b, const wsl_request *req)
{
    *b = (wsl_http_body){0};
    if (req->body == WSL_BODY_CHUNKED)
        b->state = B_SIZE;
    else if (req->body == WSL_BODY_LENGTH && req->content_length > 0) {
        b->state = B_LENGTH;
        b->left = req->content_length;
    } else {
        b->state = B_DONE;
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A byte that may appear in a chunk extension or a trailer line: anything printable, HTAB and
 * obs-text; never CR, LF, NUL or another control byte. */
static bool line_byte(char c)
{
    unsigned char u = (unsigned char)c;
    return (u >= 0x20 && u != 0x7F) || u == '\t';
}

/* One byte of the chunked framing (not data): the next state, or -1 when it is malformed. */
static int chunk_step(wsl_http_body *b, char c)
{
    switch (b->state) {
    case B_SIZE: {
        int v = hexval(c);
        if (v >= 0) {
            if (b->left >> 59) return -1; /* a size no body can have: refuse before overflow */
            b->left = b->left << 4 | (uint64_t)v;
            b->digits++;
            return B_SIZE;
        }
        if (!b->digits) return -1;
        if (c == '\r') return B_SIZE_LF;
        if (c == ' ' || c == '\t') return B_SIZE_WS;
        return c == ';' ? B_EXT : -1;
    }
    case B_SIZE_WS:
        if (c == '\r') return B_SIZE_LF;
        if (c == ' ' || c == '\t') return B_SIZE_WS;
        return c == ';' ? B_EXT : -1;
    case B_EXT:
        if (c == '\r') return B_SIZE_LF;
        return line_byte(c) ? B_EXT : -1;
    case B_SIZE_LF:
        if (c != '\n') return -1;
        b->digits = 0;
        return b->left ? B_DATA : B_TRAILER;
    case B_DATA_CR:
        return c == '\r' ? B_DATA_LF : -1;
    case B_DATA_LF:
        if (c != '\n') return -1;
        b->line = 0;
        return B_SIZE;
    case B_TRAILER:
        if (c == '\r') return B_END_LF;
        return line_byte(c) ? B_TRAILER_IN : -1;
    case B_TRAILER_IN:
        if (c == '\r') return B_TRAILER_LF;
        return line_byte(c) ? B_TRAILER_IN : -1;
    case B_TRAILER_LF:
        return c == '\n' ? B_TRAILER : -1;
    case B_END_LF:
        return c == '\n' ? B_DONE : -1;
    default:
        return -1;
    }
}

wsl_body_event wsl_http_body_next(wsl_http_body *b, const char *p, size_t n, size_t *used,
                                  wsl_span *data)
{
    size_t i = 0;
    *data = (wsl_span){p, 0};
    for (;;) {
        if (b->state == B_DONE) {
            *used = i;
            return WSL_BODY_DONE;
        }
        if (b->state == B_LENGTH || b->state == B_DATA) {
            if (i == n) break;
            size_t k = n - i < b->left ? n - i : (size_t)b->left;
            *data = (wsl_span){p + i, k};
            b->left -= k;
            if (b->left == 0) b->state = b->state == B_LENGTH ? B_DONE : B_DATA_CR;
            *used = i + k;
            return WSL_BODY_DATA;
        }
        if (i == n) break;
        char c = p[i++];
        int next = chunk_step(b, c);
        /* Size and extension bytes count as one line, trailer lines all together. */
        bool in_line = next == B_SIZE || next == B_SIZE_WS || next == B_EXT;
        bool in_trailer = next == B_TRAILER_IN;
        if (next < 0 || (in_line && ++b->line > WSL_HTTP_MAX_CHUNK_LINE) ||
            (in_trailer && ++b->trail > WSL_HTTP_MAX_TRAILERS)) {
            *used = i;
            return WSL_BODY_BAD;
        }
        b->state = (uint8_t)next;
    }
    *used = i;
    return WSL_BODY_MORE;
}

/* ---- answers ------------------------------------------------------------------------------ */

const char *wsl_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 426:
        return "Upgrade Required";
    case 422:
        return "Unprocessable Content";
    case 423:
        return "Locked";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

/* Case-insensitive: does the header block (len bytes of lines) name header `name` (with its
 * colon) at the start of a line? */
static bool block_has(const char *block, size_t len, const char *name)
{
    size_t n = strlen(name);
    const char *end = block + len;
    for (const char *line = block; line && line < end;) {
        size_t i = 0;
        while (i < n && line + i < end &&
               wsl_ascii_lower_char(line[i]) == wsl_ascii_lower_char(name[i]))
            i++;
        if (i == n) return true;
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        line = nl ? nl + 1 : NULL;
    }
    return false;
}

static bool extra_has(const char *extra, const char *name)
{
    return block_has(extra, strlen(extra), name);
}

size_t wsl_http_error_response(char *out, size_t cap, int status, const char *extra,
                               const char *body)
{
    char reason_line[64];
    if (!extra) extra = "";
    if (!body) {
        snprintf(reason_line, sizeof reason_line, "%s\n", wsl_http_reason(status));
        body = reason_line;
    }
    const char *implied = "";
    if (status == 405 && !extra_has(extra, "allow:")) implied = "Allow: GET, HEAD\r\n";
    if (status == 426 && !extra_has(extra, "sec-websocket-version:")) implied = WSL_HTTP_426_EXTRA;
    int n = snprintf(out, cap,
                     "HTTP/1.1 %d %s\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %zu\r\n"
                     "Connection: close\r\n"
                     "%s%s\r\n"
                     "%s",
                     status, wsl_http_reason(status), strlen(body), implied, extra, body);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

size_t wsl_http_upgrade_response(char *out, size_t cap, const char *accept, const char *protocol,
                                 size_t protocol_len, const char *extensions)
{
    if (!protocol) protocol_len = 0;
    if (protocol_len > INT_MAX) return 0;
    /* The protocol may come from a script: never let it end the header line early. */
    for (size_t i = 0; i < protocol_len; i++)
        if (protocol[i] == '\r' || protocol[i] == '\n' || protocol[i] == '\0') return 0;
    int n = snprintf(out, cap,
                     "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %.*s\r\n"
                     "%s%.*s%s"
                     "%s%s%s"
                     "\r\n",
                     WSL_ACCEPT_LEN, accept, protocol_len ? "Sec-WebSocket-Protocol: " : "",
                     (int)protocol_len, protocol_len ? protocol : "", protocol_len ? "\r\n" : "",
                     extensions ? "Sec-WebSocket-Extensions: " : "", extensions ? extensions : "",
                     extensions ? "\r\n" : "");
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

size_t wsl_http_answer_head(char *out, size_t cap, int status, const char *headers, size_t hlen,
                            size_t body_len, unsigned flags)
{
    if (hlen > INT_MAX || status < 100 || status > 999) return 0;
    if (!headers) hlen = 0;
    bool body = wsl_http_status_has_body(status);
    char length[48] = "";
    if (body) snprintf(length, sizeof length, "Content-Length: %zu\r\n", body_len);
    const char *type = body && !block_has(headers ? headers : "", hlen, "content-type:")
                           ? "Content-Type: text/plain; charset=utf-8\r\n"
                           : "";
    const char *conn = flags & WSL_ANSWER_CLOSE        ? "Connection: close\r\n"
                       : flags & WSL_ANSWER_KEEP_ALIVE ? "Connection: keep-alive\r\n"
                                                       : "";
    int n = snprintf(out, cap, "HTTP/1.1 %d %s\r\n%.*s%s%s%s\r\n", status, wsl_http_reason(status),
                     (int)hlen, hlen ? headers : "", type, length, conn);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}
