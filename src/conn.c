/* One connection from accept to close: HTTP request -> upgrade -> frames -> close handshake ->
 * lingering close; or plain HTTP requests, one after the other on a kept-alive connection. Reads
 * land in the server's shared buffer; a connection keeps private bytes only for what is partial.
 * Output goes to its queue and leaves in one write per loop iteration (wsl_conn_flush, called by
 * the server); what a connection is sent while its own input is handled leaves right after that
 * input (uncork). Sockets are read and written with recv/send, which skip the file layer that
 * read/write go through (measured: about 0.1-0.3 us less per read and write pair on loopback).
 * What happens is reported through the server's event table (wsl_conn_events). */
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "handshake.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "server.h"
#include "uring.h"
#include "utf8.h"

#define MAX_IOV           64
#define HEAD_READ_MAX     (WSL_HTTP_MAX_HEAD + 4096) /* head plus frames or requests pipelined */
#define HTTP_MAX_REQUESTS 1000 /* answers on one connection; the last one closes it */

static void on_poll(uv_poll_t *h, int status, int events);
#define HELD_INPUT 0x100 /* on_poll's events from the flush: read what OpenSSL holds, not more */
static void http_resume(wsl_conn *c);
static void request_timeout(wsl_conn *c);

/* The owner of the events (see wsl_conn_events) and its pointer. */
#define EVENTS(c) ((c)->srv->events)
#define EV_UD(c)  ((c)->srv->events_ud)

/* A connection of a TLS listener: the connection, then its TLS state (c->tls says it is one),
 * so that plain connections do not carry even a pointer for it. */
typedef struct tls_conn {
    wsl_conn c;
    wsl_tls t;
    /* The peer's address as accept gave it: a client that resets during the TLS handshake is
     * gone (getpeername fails) before the line about it is written, maybe before the accept. */
    char peer[64];
} tls_conn;

static inline wsl_tls *conn_tls(wsl_conn *c)
{
    return &((tls_conn *)c)->t;
}

size_t wsl_conn_tls_pending(const wsl_conn *c)
{
    return wsl_tls_pending(&((const tls_conn *)c)->t);
}

/* Queued output without the cork buffer: what the flush sees (it never runs while the cork holds
 * bytes for c: uncork empties it first). */
static inline size_t queued(const wsl_conn *c)
{
    return c->out.bytes + (c->tls ? wsl_conn_tls_pending(c) : 0);
}

static inline size_t file_left(const wsl_conn *c);

size_t wsl_conn_buffered(const wsl_conn *c)
{
    return queued(c) + (c->corked ? c->srv->cork_len : 0) + file_left(c) +
           (c->inflight ? wsl_uring_bytes_of(c->srv->uring, c) : 0);
}

/* Input OpenSSL holds, which the poll will never announce (while lingering nothing is
 * decrypted any more: what comes is discarded raw). */
static bool tls_held(wsl_conn *c)
{
    return c->tls && !c->lingering && wsl_tls_more(conn_tls(c));
}

/* ---- small helpers -------------------------------------------------------------------------- */

static wsl_bytes *bytes_reserve(wsl_bytes *b, size_t need)
{
    size_t len = b ? b->len : 0;
    if (b && b->cap >= need) return b;
    if (need > UINT32_MAX) return NULL;
    size_t cap = b ? b->cap : 0;
    if (cap < 128) cap = 128;
    while (cap < need)
        cap = cap * 2 > need ? cap * 2 : need;
    if (cap > UINT32_MAX) cap = UINT32_MAX;
    wsl_bytes *nb = realloc(b, sizeof *nb + cap);
    if (!nb) return NULL;
    nb->len = (uint32_t)len;
    nb->cap = (uint32_t)cap;
    return nb;
}

static void set_events(wsl_conn *c, int events)
{
    if (c->events == (unsigned)events) return;
    c->events = (unsigned)events & 3;
    if (events)
        uv_poll_start(&c->poll, events, on_poll);
    else
        uv_poll_stop(&c->poll);
    if ((events & UV_READABLE) && tls_held(c)) wsl_server_mark_dirty(c->srv, c); /* read there */
}

/* "ip:port", "[ipv6]:port", or "?:0" for another family (a unit test's socketpair). */
static const char *format_addr(const struct sockaddr_storage *ss, char *buf, size_t cap)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
        port = ntohs(a->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
        snprintf(buf, cap, "[%s]:%u", ip, ntohs(a->sin6_port));
        return buf;
    }
    snprintf(buf, cap, "%s:%u", ip, port);
    return buf;
}

const char *wsl_conn_peer(const wsl_conn *c, char *buf, size_t cap)
{
    if (c->tls && ((const tls_conn *)c)->peer[0]) {
        snprintf(buf, cap, "%s", ((const tls_conn *)c)->peer);
        return buf;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getpeername(c->fd, (struct sockaddr *)&ss, &len) != 0) ss.ss_family = AF_UNSPEC;
    return format_addr(&ss, buf, cap);
}

void wsl_conn_accepted_from(wsl_conn *c, const struct sockaddr_storage *ss)
{
    if (c->tls) format_addr(ss, ((tls_conn *)c)->peer, sizeof((tls_conn *)c)->peer);
}

void wsl_conn_log(const wsl_conn *c, wsl_log_level level, const char *fmt, ...)
{
    if (!wsl_log_enabled(level)) return;
    char msg[4096], peer[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* These lines carry what clients sent (a close reason, a request path): a control byte must
     * not start a fake log line or drive a terminal. */
    for (char *p = msg; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    /* Before the upgrade there is no info yet: ask the socket. */
    const char *who = c->info ? wsl_conn_remote(c) : wsl_conn_peer(c, peer, sizeof peer);
    wsl_log_conn(level, c->id, who, "%s", msg);
}

/* Where an info string starts: remote, path, query, protocol, then the headers. */
static const char *info_at(const wsl_conn_info *in, wsl_info_field which)
{
    const char *p = in->data;
    for (int i = 0; i < (int)which; i++)
        p += in->len[i] + 1;
    return p;
}

const char *wsl_conn_info_str(const wsl_conn *c, wsl_info_field which)
{
    return c->info ? info_at(c->info, which) : "";
}

bool wsl_conn_header(const wsl_conn *c, size_t i, const char **name, const char **value)
{
    if (!c->info || i >= c->info->nheaders) return false;
    const char *p = info_at(c->info, WSL_INFO_HEADERS);
    for (size_t k = 0; k < i; k++) {
        p += strlen(p) + 1;
        p += strlen(p) + 1;
    }
    *name = p;
    *value = p + strlen(p) + 1;
    return true;
}

/* Headers that only carry the handshake itself (their values are fixed by RFC 6455, or a nonce):
 * on_upgrade sees them in req.headers; connections do not keep them, which saves about a fifth
 * of an idle connection's memory. */
static bool handshake_only(wsl_span name)
{
    static const char *const names[] = {"upgrade", "connection", "sec-websocket-key",
                                        "sec-websocket-version"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (name.len == strlen(names[i]) && strncasecmp(name.p, names[i], name.len) == 0)
            return true;
    return false;
}

static wsl_conn_info *info_new(const char *remote, const wsl_request *req, const char *proto)
{
    size_t rl = strlen(remote), pl = strlen(proto);
    size_t total = rl + 1 + req->path.len + 1 + req->query.len + 1 + pl + 1;
    size_t hl = 0, nh = 0;
    for (size_t i = 0; i < req->nheaders; i++) {
        if (handshake_only(req->headers[i].name)) continue;
        hl += req->headers[i].name.len + 1 + req->headers[i].value.len + 1;
        nh++;
    }
    if (rl > UINT16_MAX || req->path.len > UINT16_MAX || req->query.len > UINT16_MAX ||
        pl > UINT16_MAX)
        return NULL;
    wsl_conn_info *in = malloc(sizeof *in + total + hl);
    if (!in) return NULL;
    in->len[WSL_INFO_REMOTE] = (uint16_t)rl;
    in->len[WSL_INFO_PATH] = (uint16_t)req->path.len;
    in->len[WSL_INFO_QUERY] = (uint16_t)req->query.len;
    in->len[WSL_INFO_PROTOCOL] = (uint16_t)pl;
    in->nheaders = (uint16_t)nh;
    char *p = in->data;
#define PUT(s, n)                                                                                  \
    do {                                                                                           \
        memcpy(p, s, n);                                                                           \
        p[n] = '\0';                                                                               \
        p += (n) + 1;                                                                              \
    } while (0)
    PUT(remote, rl);
    PUT(req->path.p, req->path.len);
    PUT(req->query.p, req->query.len);
    PUT(proto, pl);
    for (size_t i = 0; i < req->nheaders; i++) {
        const wsl_header *h = &req->headers[i];
        if (handshake_only(h->name)) continue;
        wsl_ascii_lower(p, h->name.p, h->name.len);
        p[h->name.len] = '\0';
        p += h->name.len + 1;
        PUT(h->value.p, h->value.len);
    }
#undef PUT
    return in;
}

/* ---- messages out ------------------------------------------------------------------------ */

void wsl_msg_init(wsl_msg *m, int opcode, const void *payload, size_t len)
{
    m->hlen = (uint8_t)wsl_frame_header(m->hdr, opcode, true, len);
    m->zmade = 0;
    m->payload = payload;
    m->len = len;
    m->shared = NULL;
    m->wire_len = 0;
}

void wsl_msg_wire(wsl_msg *m)
{
    if (m->wire_len || m->hlen + m->len > WSL_MSG_WIRE) return;
    memcpy(m->wire, m->hdr, m->hlen);
    if (m->len) memcpy(m->wire + m->hlen, m->payload, m->len);
    m->wire_len = m->hlen + m->len;
}

void wsl_msg_drop_made(wsl_msg *m)
{
    if (m->shared) wsl_buf_unref(m->shared);
    m->shared = NULL;
    if (!m->zmade) return;
    for (int v = 0; v < 2; v++)
        if (m->zmade & (1u << v) && m->z[v]) wsl_buf_unref(m->z[v]);
    m->zmade = 0;
}

/* The compressed frame of m for c's server window, made on first use for every recipient with
 * that window: 0 when queued, 1 when compressing is not worth it (too short for --deflate-min,
 * or no smaller; or out of memory: the plain frame still goes), WSL_ENOMEM. */
static int queue_deflated(wsl_conn *c, wsl_msg *m)
{
    if (m->len < c->srv->opt->deflate_min) return 1;
    unsigned v = c->zsmall;
    if (!(m->zmade & (1u << v))) {
        m->zmade |= (uint8_t)(1u << v);
        m->z[v] = NULL;
        const uint8_t *z;
        size_t zlen;
        if (wsl_deflate_compress(c->srv->deflate, v ? 8 : 15, m->payload, m->len, &z, &zlen) != 1)
            return 1;
        uint8_t hdr[WSL_SERVER_HDR_MAX];
        size_t h = wsl_frame_header(hdr, m->hdr[0] & 0x0F, true, zlen);
        hdr[0] |= WSL_FRAME_RSV1;
        wsl_buf *b = wsl_buf_new(h + zlen);
        if (!b) return 1;
        memcpy(b->data, hdr, h);
        memcpy(b->data + h, z, zlen);
        b->len = (uint32_t)(h + zlen);
        m->z[v] = b;
    }
    wsl_buf *b = m->z[v];
    if (!b) return 1;
    if ((b->len <= WSL_COPY_MAX ? wsl_queue_append(&c->out, b->data, b->len)
                                : wsl_queue_share(&c->out, b)) != 0)
        return WSL_ENOMEM;
    wsl_server_mark_dirty(c->srv, c);
    return 0;
}

/* The cork buffer's bytes go to the front of c's queue: whatever must queue behind them keeps
 * its order. 0 or WSL_ENOMEM. */
static int spill_cork(wsl_conn *c)
{
    wsl_server *srv = c->srv;
    if (!c->corked || !srv->cork_len) return 0;
    int r = wsl_queue_copy(&c->out, srv->cork, srv->cork_len, NULL, 0);
    srv->cork_len = 0;
    return r ? WSL_ENOMEM : 0;
}

/* A frame for the corked connection into the cork buffer, when nothing is queued ahead of it
 * and it fits. Not with permessage-deflate (the compressed frame is queued by queue_deflated).
 * Over TLS the uncork encrypts the whole cork with one SSL_write, as the flush does the queue.
 * Where a frame of n bytes for c goes in the cork, or NULL when it must take c's queue (output
 * queued ahead of it, ciphertext still waiting for the kernel, deflate, or no room). The room
 * counts the whole header array beyond n: a header may be written at that fixed size, the
 * payload then overwriting what follows the real one. */
static inline uint8_t *cork_room(const wsl_conn *c, size_t n)
{
    const wsl_server *srv = c->srv;
    if (queued(c) || c->inflight || c->deflate ||
        n + WSL_SERVER_HDR_MAX > WSL_CORK_MAX - srv->cork_len)
        return NULL;
    return srv->cork + srv->cork_len;
}

/* The n bytes written at cork_room's place are c's. */
static inline void cork_add(wsl_conn *c, size_t n)
{
    c->srv->cork_len += n;
    c->corked_out = 1;
}

static bool cork_msg(wsl_conn *c, const wsl_msg *m)
{
    size_t n = m->hlen + m->len;
    uint8_t *p = cork_room(c, n);
    if (!p) return false;
    if (m->wire_len) {
        memcpy(p, m->wire, m->wire_len);
    } else {
        memcpy(p, m->hdr, WSL_SERVER_HDR_MAX); /* (a few moves instead of a call) */
        if (m->len) memcpy(p + m->hlen, m->payload, m->len);
    }
    cork_add(c, n);
    return true;
}

/* What queue_msg does first for a corked or a permessage-deflate connection, out of line so that
 * the fan-out to the others pays one test for both: 0 when m was queued (or corked), 1 when the
 * plain frame is still to be queued, WSL_ENOMEM. */
static __attribute__((noinline)) int queue_special(wsl_conn *c, wsl_msg *m)
{
    if (c->corked) {
        if (cork_msg(c, m)) return 0;
        if (spill_cork(c)) return WSL_ENOMEM;
    }
    return c->deflate ? queue_deflated(c, m) : 1;
}

static int queue_msg(wsl_conn *c, wsl_msg *m)
{
    int r;
    if ((c->corked || c->deflate) && (r = queue_special(c, m)) != 1) return r;
    if (m->wire_len) {
        r = wsl_queue_append(&c->out, m->wire, m->wire_len);
    } else if (m->hlen + m->len <= WSL_COPY_MAX) {
        r = wsl_queue_copy(&c->out, m->hdr, m->hlen, m->payload, m->len);
    } else {
        if (!m->shared) {
            wsl_buf *b = wsl_buf_new(m->hlen + m->len);
            if (!b) return WSL_ENOMEM;
            memcpy(b->data, m->hdr, m->hlen);
            memcpy(b->data + m->hlen, m->payload, m->len);
            b->len = (uint32_t)(m->hlen + m->len);
            m->shared = b;
        }
        r = wsl_queue_share(&c->out, m->shared);
    }
    if (r) return WSL_ENOMEM;
    wsl_server_mark_dirty(c->srv, c);
    return 0;
}

int wsl_conn_queue(wsl_conn *c, wsl_msg *m)
{
    if (c->state != WSL_CONN_OPEN) return WSL_ECLOSED;
    return queue_msg(c, m);
}

int wsl_conn_send(wsl_conn *c, wsl_msg *m)
{
    int r = wsl_conn_queue(c, m);
    if (r == 0) wsl_metrics.messages_sent++;
    return r;
}

/* wsl_conn_send_frame through a wsl_msg, out of line: the cork's case pays no frame for it. */
static __attribute__((noinline)) int send_frame_msg(wsl_conn *c, int opcode, const void *p,
                                                    size_t len)
{
    wsl_msg m;
    wsl_msg_init(&m, opcode, p, len);
    int r = wsl_conn_send(c, &m);
    wsl_msg_release(&m);
    return r;
}

int wsl_conn_send_frame(wsl_conn *c, int opcode, const void *p, size_t len)
{
    /* cork_msg's case, without a wsl_msg: the header is encoded in the cork buffer itself. */
    uint8_t *q = c->corked && c->state == WSL_CONN_OPEN ? cork_room(c, len) : NULL;
    if (!q) return send_frame_msg(c, opcode, p, len);
    size_t h = wsl_frame_header(q, opcode, true, len);
    if (len) memcpy(q + h, p, len);
    cork_add(c, h + len);
    wsl_metrics.messages_sent++;
    return 0;
}

/* Output that is no broadcast (control frames, HTTP answers) is written at once when nothing is
 * queued ahead of it: no chunk is taken for it, so a ping storm over many connections costs no
 * memory. What the socket does not take is queued; the connection is marked dirty either way so
 * the flush applies the state's next step (e.g. the lingering close). */
/* [p, p+n) to the socket of a plain connection with nothing queued ahead of it, what it does
 * not take to the queue; behind a queue, all to the queue. 0 or WSL_ENOMEM. */
static int write_or_queue(wsl_conn *c, const void *p, size_t n)
{
    size_t done = 0;
    if (!c->tls && c->out.bytes == 0 && !c->inflight) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w > 0) done = (size_t)w; /* an error shows again when the flush writes the rest */
        wsl_metrics.bytes_sent += done;
    }
    if (done == n) return 0;
    return wsl_queue_copy(&c->out, (const uint8_t *)p + done, n - done, NULL, 0) ? WSL_ENOMEM : 0;
}

/* Over TLS with nothing waiting: encrypted at once, what the kernel does not take kept as
 * ciphertext. Behind ciphertext still waiting for the kernel, it queues like the rest (and so
 * does what a failed encryption was given: the flush then finds the stream broken). */
static int tls_write_or_queue(wsl_conn *c, const void *p, size_t n)
{
    if (queued(c) == 0 && wsl_tls_write(conn_tls(c), p, n) == 0) return 0;
    return write_or_queue(c, p, n);
}

/* Bytes for c's stream, plain or encrypted as c is. */
static int stream_or_queue(wsl_conn *c, const void *p, size_t n)
{
    return c->tls ? tls_write_or_queue(c, p, n) : write_or_queue(c, p, n);
}

static int send_now(wsl_conn *c, const void *p, size_t n)
{
    if (spill_cork(c)) return WSL_ENOMEM;
    int r = stream_or_queue(c, p, n);
    wsl_server_mark_dirty(c->srv, c);
    return r;
}

static int send_control(wsl_conn *c, int opcode, const void *payload, size_t len)
{
    uint8_t frame[WSL_SERVER_HDR_MAX + WSL_CONTROL_MAX];
    size_t h = wsl_frame_header(frame, opcode, true, len);
    if (len) memcpy(frame + h, payload, len);
    return send_now(c, frame, h + len);
}

/* A connection's plain HTTP requests: one at a time, the next only once the previous answer is
 * written, so pipelined requests are answered in order and what a client can make us hold stays
 * bounded (one request, HEAD_READ_MAX bytes read ahead, one answer). */
struct wsl_conn_http {
    wsl_http_body rx; /* BODY: the decoder */
    wsl_bytes *req;   /* BODY: the head, then the body decoded so far */
    uint32_t head_len;
    uint32_t served; /* answers written on this connection */
    uint32_t udata;  /* the event owner's slot for the waiting request */
    bool pending;    /* REQUEST: reported and not answered yet */
    bool deferred;   /* the owner answers later (wsl_conn_defer) */
    bool head;       /* HEAD: the answer goes without its body */
    bool keep_alive; /* the client lets the connection stay open */
    bool http10;     /* and, in HTTP/1.0, must be told it does */
    char what[96];   /* "METHOD /path" for the log */
    /* A large static file being sent: read into the queue as the client takes it, so that what
     * it makes us hold stays below FILE_AHEAD whatever the file's size. Open while file.left. */
    wsl_static_body file;
};

/* What is left to read of a file being sent (never on a WebSocket: the state is on a line every
 * flush reads anyway, c->http on a cold one). */
static inline size_t file_left(const wsl_conn *c)
{
    return c->state != WSL_CONN_OPEN && c->http ? c->http->file.left : 0;
}

/* The end of a connection's HTTP state: the request being read, the file being sent. */
static void http_free(wsl_conn_http *h)
{
    if (!h) return;
    free(h->req);
    if (h->file.left) close(h->file.fd);
    free(h);
}

/* The connection ends once what is queued is written: nothing more is read. */
static void end_after_write(wsl_conn *c)
{
    if (c->http) { /* what was being read or asked will never be answered */
        c->http->pending = false;
        free(c->http->req);
        c->http->req = NULL;
    }
    free(c->in);
    c->in = NULL;
    c->state = WSL_CONN_RESPONDING;
    wsl_server_track(c->srv, c, WSL_LIST_CLOSING, WSL_CLOSE_TIMEOUT_MS);
    set_events(c, 0); /* the request is all we read; the rest is the peer's problem */
    wsl_server_mark_dirty(c->srv, c); /* the flush starts the lingering close */
}

/* An answer that closes the connection once written. */
static void send_http(wsl_conn *c, const char *resp, size_t len)
{
    send_now(c, resp, len);
    end_after_write(c);
}

static void http_error(wsl_conn *c, int status, const char *why, const char *body)
{
    char resp[1024], line[256];
    if (!body) {
        snprintf(line, sizeof line, "%s\n", why);
        body = line;
    }
    /* wsl_http_error_response adds the header a 426 needs by itself. */
    size_t n = wsl_http_error_response(resp, sizeof resp, status, NULL, body);
    if (n == 0) n = wsl_http_error_response(resp, sizeof resp, status, NULL, NULL);
    wsl_conn_log(c, status >= 500 ? WSL_LOG_WARN : WSL_LOG_INFO, "HTTP %d: %s", status, why);
    send_http(c, resp, n);
}

/* ---- closing ------------------------------------------------------------------------------ */

/* The connection left OPEN: the owner hears about it once. */
static void report_close(wsl_conn *c, unsigned code, const char *reason, size_t len)
{
    if (c->state == WSL_CONN_OPEN) c->state = WSL_CONN_CLOSING; /* is_open() is false in on_close */
    c->close_code = (uint16_t)code;
    if (!c->opened) return;
    c->opened = 0;
    wsl_server_unindex(c->srv, c);
    wsl_conn_log(c, WSL_LOG_DEBUG, "closed %u %.*s", code, (int)len, reason);
    if (EVENTS(c)->close) EVENTS(c)->close(EV_UD(c), c, code, reason, len);
    /* After the event, which may still want the topics: publish no longer reaches it. */
    wsl_server_leave_all(c->srv, c);
}

static void start_close(wsl_conn *c, unsigned code, const char *reason, size_t len, bool fail)
{
    uint8_t payload[WSL_CONTROL_MAX];
    size_t n = 0;
    if (code != 1005) { /* 1005 means "no code": an empty close frame */
        if (len > WSL_CONTROL_MAX - 2) {
            len = WSL_CONTROL_MAX - 2;
            while (len > 0 && ((uint8_t)reason[len] & 0xC0) == 0x80)
                len--; /* whole chars */
        }
        payload[0] = (uint8_t)(code >> 8);
        payload[1] = (uint8_t)code;
        if (len) memcpy(payload + 2, reason, len);
        n = 2 + len;
    }
    send_control(c, WSL_OP_CLOSE, payload, n);
    wsl_close_count(&wsl_metrics.close_sent, code);
    c->close_sent = 1;
    c->failing = fail;
    c->state = WSL_CONN_CLOSING;
    wsl_server_track(c->srv, c, WSL_LIST_CLOSING, WSL_CLOSE_TIMEOUT_MS);
    if (fail) set_events(c, c->events & UV_WRITABLE);
}

int wsl_conn_close_begin(wsl_conn *c, unsigned code, const char *reason, size_t len)
{
    if (c->state != WSL_CONN_OPEN) return WSL_ECLOSED;
    start_close(c, code, reason, len, false);
    c->close_code = (uint16_t)code;
    wsl_server_unindex(c->srv, c); /* ws.get finds open connections only */
    return 0;
}

void wsl_conn_close_finish(wsl_conn *c, const char *reason, size_t len)
{
    report_close(c, c->close_code, reason, len);
}

int wsl_conn_close(wsl_conn *c, unsigned code, const char *reason, size_t len)
{
    int r = wsl_conn_close_begin(c, code, reason, len);
    if (r == 0) report_close(c, code, reason, len);
    return r;
}

static void fail(wsl_conn *c, unsigned code, const char *why)
{
    wsl_conn_log(c, WSL_LOG_INFO, "protocol error, closing %u: %s", code, why);
    if (c->state != WSL_CONN_OPEN) {
        wsl_conn_destroy(c);
        return;
    }
    start_close(c, code, why, strlen(why), true);
    report_close(c, code, why, strlen(why));
}

/* c's handle is closed: c goes, unless the dirty list still holds it (a connection that died
 * in the I/O phase, before the next flush: see wsl_conn_flush). */
static void on_closed(uv_handle_t *h)
{
    wsl_conn *c = (wsl_conn *)h;
    if (c->dirty)
        c->freed = 1;
    else
        free(c);
}

void wsl_conn_destroy(wsl_conn *c)
{
    if (c->state == WSL_CONN_DEAD) return;
    if (c->inflight) wsl_conn_submit(c->srv); /* before its socket is closed */
    report_close(c, 1006, "", 0);
    wsl_server *srv = c->srv;
    bool waiting = wsl_conn_request_pending(c);
    if (c->corked) srv->cork_len = 0; /* its frames go nowhere now */
    c->state = WSL_CONN_DEAD;
    wsl_server_track(srv, c, WSL_LIST_NONE, 0);
    if (waiting && srv->events->request_abandoned)
        srv->events->request_abandoned(srv->events_ud, c);
    if (srv->events->release) srv->events->release(srv->events_ud, c);
    wsl_queue_clear(&c->out);
    free(c->in);
    free(c->msg);
    free(c->info);
    http_free(c->http);
    wsl_inflater_free(srv->deflate, c->inflater);
    c->in = c->msg = NULL;
    c->info = NULL;
    c->http = NULL;
    c->inflater = NULL;
    if (c->tls) wsl_tls_free(conn_tls(c));
    uv_close((uv_handle_t *)&c->poll, on_closed);
    close(c->fd); /* uv_close stopped polling it */
    wsl_server_conn_gone(srv);
}

/* Both close frames are out (or we gave up on the peer): send FIN after the queue and read until
 * the peer's FIN, so a late byte from it cannot turn our close into a reset. */
static void linger(wsl_conn *c)
{
    if (c->tls) { /* close_notify goes before the FIN: the flush comes back here once it is out */
        if (wsl_tls_close_notify(conn_tls(c)) < 0) {
            wsl_conn_destroy(c);
            return;
        }
        if (wsl_tls_pending(conn_tls(c))) {
            set_events(c, (int)(c->events | UV_WRITABLE));
            return;
        }
    }
    shutdown(c->fd, SHUT_WR);
    c->lingering = 1;
    wsl_server_track(c->srv, c, WSL_LIST_CLOSING, WSL_CLOSE_TIMEOUT_MS);
    set_events(c, UV_READABLE);
}

void wsl_conn_expire(wsl_conn *c)
{
    switch (c->state) {
    case WSL_CONN_HANDSHAKE:
        if (c->list == WSL_LIST_KEEPALIVE)
            wsl_conn_log(c, WSL_LOG_DEBUG, "no further request: closing the kept-alive connection");
        else if (c->tls && !wsl_tls_established(conn_tls(c)))
            wsl_conn_log(c, WSL_LOG_INFO, "TLS handshake timeout");
        else
            wsl_conn_log(c, WSL_LOG_INFO, "handshake timeout");
        wsl_conn_destroy(c);
        break;
    case WSL_CONN_BODY:
        http_error(c, 408, "request body not received within --request-timeout", NULL);
        break;
    case WSL_CONN_REQUEST:
        request_timeout(c);
        break;
    case WSL_CONN_OPEN:
        if (!c->pinged) {
            c->pinged = 1;
            send_control(c, WSL_OP_PING, NULL, 0);
            wsl_server_track(c->srv, c, WSL_LIST_OPEN, c->srv->idle_ms);
        } else {
            wsl_conn_log(c, WSL_LOG_INFO, "idle timeout");
            report_close(c, 1006, "idle timeout", 12);
            wsl_conn_destroy(c);
        }
        break;
    default:
        wsl_conn_destroy(c);
        break;
    }
}

/* ---- writing ------------------------------------------------------------------------------ */

static void slow_consumer(wsl_conn *c)
{
    wsl_conn_log(c, WSL_LOG_WARN, "slow consumer, %zu bytes queued (limit %llu): closing 1008",
                 wsl_conn_buffered(c), (unsigned long long)c->srv->opt->max_backpressure);
    wsl_metrics.backpressure_closes++;
    wsl_queue_truncate(&c->out); /* keep only the frames already being written */
    start_close(c, 1008, "slow consumer", 13, true);
    report_close(c, 1008, "slow consumer", 13);
}

#define FILE_AHEAD (64u << 10) /* queued of a file being sent, at most */

/* Queue the next part of c's file, up to FILE_AHEAD queued. False when the connection was
 * destroyed: the file cannot be read (or shrank under us) after its length was promised. */
static bool read_file(wsl_conn *c)
{
    wsl_static_body *f = &c->http->file;
    uint8_t buf[16384];
    while (f->left && queued(c) < FILE_AHEAD) {
        ssize_t r = read(f->fd, buf, f->left < sizeof buf ? f->left : sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        int e = r < 0 ? -errno : r == 0 ? -EIO : wsl_queue_copy(&c->out, buf, (size_t)r, NULL, 0);
        if (e < 0) {
            wsl_conn_log(c, WSL_LOG_ERROR, "%s: the file could not be sent whole: %s",
                         c->http->what, r == 0 ? "it shrank" : wsl_strerror(e));
            wsl_conn_destroy(c); /* closes the file */
            return false;
        }
        f->left -= (size_t)r;
        if (!f->left) close(f->fd);
    }
    return true;
}

/* Inlined into wsl_conn_flush, whose TLS tail runs after any of its returns. */
static inline __attribute__((always_inline)) void flush(wsl_conn *c)
{
    if (c->state == WSL_CONN_DEAD) return;
    if (c->inflight) wsl_conn_submit(c->srv); /* what the batch holds goes first */
    size_t before = queued(c) + file_left(c);
    do { /* once, or while a file being sent has more for a socket that takes it */
        if (file_left(c) && !read_file(c)) return;
        if (c->tls) { /* coalesced, encrypted, written: see wsl_tls_send */
            int r = wsl_tls_send(conn_tls(c), &c->out);
            if (r < 0 && r != -EAGAIN) {
                wsl_conn_log(c, WSL_LOG_DEBUG, "write: %s",
                             r == -EPROTO ? wsl_tls_error() : wsl_strerror(r));
                wsl_conn_destroy(c);
                return;
            }
        }
        while (!c->tls && c->out.bytes > 0) {
            struct iovec iov[MAX_IOV];
            int n = wsl_queue_iov(&c->out, iov, MAX_IOV);
            struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
            ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                wsl_conn_log(c, WSL_LOG_DEBUG, "write: %s", strerror(errno));
                wsl_conn_destroy(c);
                return;
            }
            wsl_queue_consume(&c->out, (size_t)w);
            wsl_metrics.bytes_sent += (size_t)w;
        }
    } while (file_left(c) && queued(c) == 0);

    /* A large plain answer to a slow reader: its timeout counts from the last progress. (While
     * a file is being sent, something of it is queued until it is all read.) */
    size_t left = queued(c);
    if (c->http && left + file_left(c) < before && !c->lingering &&
        (c->state == WSL_CONN_RESPONDING || c->list == WSL_LIST_KEEPALIVE))
        wsl_server_track(c->srv, c, c->list,
                         c->list == WSL_LIST_KEEPALIVE ? c->srv->keepalive_ms
                                                       : WSL_CLOSE_TIMEOUT_MS);

    uint64_t limit = c->srv->opt->max_backpressure;
    if (left > 0) {
        if (c->state == WSL_CONN_OPEN && left > limit) {
            slow_consumer(c);
            return; /* the close frame was queued: flushed with the next dirty pass */
        }
        if (left > limit / 2) c->drain_armed = 1;
        set_events(c, (int)(c->events | UV_WRITABLE));
        return;
    }
    set_events(c, (int)(c->events & ~(unsigned)UV_WRITABLE));

    if (c->drain_armed && c->state == WSL_CONN_OPEN) {
        c->drain_armed = 0;
        if (EVENTS(c)->drain) EVENTS(c)->drain(EV_UD(c), c);
        return; /* the owner may have queued more: that marked us dirty again */
    }
    if (c->lingering) return;
    if (c->state == WSL_CONN_RESPONDING ||
        (c->state == WSL_CONN_CLOSING && (c->close_rcvd || c->failing)))
        linger(c);
    else if (c->http && c->state == WSL_CONN_HANDSHAKE && c->in)
        http_resume(c); /* requests pipelined behind the answer just written */
}

void wsl_conn_flush(wsl_conn *c)
{
    if (c->freed) {
        free(c);
        return;
    }
    flush(c);
    /* What OpenSSL read ahead, or plaintext a full buffer left with it: the poll will not
     * announce it, so it is read here (OpenSSL's buffers only, not the socket). */
    if (c->tls && c->state != WSL_CONN_DEAD && (c->events & UV_READABLE) && tls_held(c))
        on_poll(&c->poll, 0, UV_READABLE | HELD_INPUT);
}

/* ---- reading frames --------------------------------------------------------------------- */

static void deliver(wsl_conn *c, const uint8_t *p, size_t n, int opcode)
{
    wsl_metrics.messages_received++;
    if (EVENTS(c)->message) EVENTS(c)->message(EV_UD(c), c, p, n, opcode == WSL_OP_BINARY);
}

/* Add [p, p+n), a piece of ev's message, to the message being assembled, and deliver it after
 * its last piece. False when the connection was failed (no memory). */
static bool assemble(wsl_conn *c, const uint8_t *p, size_t n, const wsl_rx_event *ev)
{
    size_t have = c->msg ? c->msg->len : 0;
    /* Grow with what arrived, not with what a header announced: a client announcing large
     * frames and sending nothing must not make us allocate them. */
    wsl_bytes *b = bytes_reserve(c->msg, have + n);
    if (!b) {
        wsl_conn_log(c, WSL_LOG_ERROR, "out of memory assembling a message");
        fail(c, 1011, "out of memory");
        return false;
    }
    c->msg = b;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += (uint32_t)n;
    if (ev->last) {
        c->msg = NULL;
        deliver(c, b->data, b->len, ev->opcode);
        free(b);
    }
    return true;
}

/* A piece of a message; false when the connection was failed. */
static inline __attribute__((always_inline)) bool on_data(wsl_conn *c, const wsl_rx_event *ev)
{
    if (c->state != WSL_CONN_OPEN) return true; /* after our close: discard until the reply */
    if (ev->first && ev->last && !c->msg) {
        deliver(c, ev->data, ev->len, ev->opcode); /* the common case: no copy */
        return true;
    }
    return assemble(c, ev->data, ev->len, ev);
}

/* A piece of a compressed message: inflated as it arrives, the size limit and UTF-8 checked on
 * what it inflates to, delivered whole. False when the connection was failed. */
static bool on_compressed(wsl_conn *c, const wsl_rx_event *ev)
{
    if (c->state != WSL_CONN_OPEN) return true; /* after our close: discard until the reply */
    unsigned flags = (ev->first ? WSL_INFLATE_FIRST : 0) | (ev->last ? WSL_INFLATE_LAST : 0) |
                     (ev->opcode == WSL_OP_TEXT ? WSL_INFLATE_TEXT : 0) |
                     (c->ztakeover ? WSL_INFLATE_TAKEOVER : 0);
    const uint8_t *out;
    size_t n;
    int r = wsl_inflate(c->srv->deflate, &c->inflater, flags, c->zbits, ev->data, ev->len,
                        c->srv->opt->max_message, &out, &n);
    if (r < 0) {
        const char *why;
        unsigned code = wsl_inflate_close_code(r, &why);
        fail(c, code, why);
        return false;
    }
    if (ev->first && ev->last) {
        deliver(c, out, n, ev->opcode); /* from the loop's inflate buffer: no copy */
        return true;
    }
    return assemble(c, out, n, ev);
}

static void on_control(wsl_conn *c, const wsl_rx_event *ev)
{
    switch (ev->opcode) {
    case WSL_OP_PING:
        if (c->state == WSL_CONN_OPEN) send_control(c, WSL_OP_PONG, ev->data, ev->len);
        break;
    case WSL_OP_PONG:
        break; /* any input already counted as a sign of life */
    case WSL_OP_CLOSE:
        wsl_close_count(&wsl_metrics.close_received, ev->code);
        c->close_rcvd = 1;
        if (c->state == WSL_CONN_OPEN) {
            /* Echo the code (RFC 6455 5.5.1); an empty close gets an empty close. */
            start_close(c, ev->code, "", 0, false);
            report_close(c, ev->code, ev->reason, ev->reason_len);
        }
        set_events(c, c->events & UV_WRITABLE);
        if (wsl_conn_buffered(c) == 0) linger(c);
        break;
    }
}

/* Parse frames from p[0..n). Returns false when the connection must not be read further now. */
static inline __attribute__((always_inline)) bool parse_frames(wsl_conn *c, uint8_t *p, size_t n)
{
    uint64_t max = c->srv->opt->max_message;
    while (n > 0) {
        if (c->state != WSL_CONN_OPEN && (c->state != WSL_CONN_CLOSING || c->close_rcvd))
            return false;
        wsl_rx_event ev;
        size_t used = wsl_rx_next(&c->rx, p, n, max, &ev);
        p += used;
        n -= used;
        switch (ev.kind) {
        case WSL_RX_MORE:
            if (n > 0) {
                wsl_bytes *b = bytes_reserve(c->in, n);
                if (!b) {
                    wsl_conn_destroy(c);
                    return false;
                }
                memcpy(b->data, p, n);
                b->len = (uint32_t)n;
                c->in = b;
            }
            return true;
        case WSL_RX_DATA:
            if (!(ev.compressed ? on_compressed(c, &ev) : on_data(c, &ev))) return false;
            break;
        case WSL_RX_CONTROL:
            on_control(c, &ev);
            break;
        case WSL_RX_ERROR:
            if (c->state == WSL_CONN_OPEN)
                fail(c, ev.code, ev.reason);
            else
                wsl_conn_destroy(c);
            return false;
        }
    }
    return true;
}

/* ---- the upgrade -------------------------------------------------------------------------- */

/* True when the comma-separated list offered by the client contains proto. */
static bool offered(wsl_span list, const char *proto)
{
    size_t pl = strlen(proto);
    wsl_span tok;
    while (wsl_http_next_token(&list, &tok))
        if (tok.len == pl && memcmp(tok.p, proto, pl) == 0) return true;
    return false;
}

/* An upgrade request answered with an HTTP error: counted by status for the metrics. */
static void refuse_upgrade(wsl_conn *c, int status, const char *why, const char *body)
{
    wsl_metrics_refused(status);
    http_error(c, status, why, body);
}

/* Who sent req: fills req->remote (into buf, at least 64 bytes) and req->secure. The peer, or
 * with --trust-proxy and a peer inside its ranges, the client the proxy names (proxy.h). */
static void find_client(wsl_conn *c, wsl_request *req, char *buf, size_t cap)
{
    const wsl_options *o = c->srv->opt;
    req->secure = c->tls;
    req->remote = wsl_conn_peer(c, buf, cap);
    if (!o->ntrust) return;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    wsl_ipaddr peer = {0}, client;
    if (getpeername(c->fd, (struct sockaddr *)&ss, &sl) != 0) return;
    if (ss.ss_family == AF_INET) {
        memcpy(peer.b, &((struct sockaddr_in *)&ss)->sin_addr, 4);
        peer.v4 = true;
    } else if (ss.ss_family == AF_INET6) {
        const uint8_t *a = (const uint8_t *)&((struct sockaddr_in6 *)&ss)->sin6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
        peer.v4 = memcmp(a, mapped, sizeof mapped) == 0;
        memcpy(peer.b, peer.v4 ? a + 12 : a, peer.v4 ? 4 : 16);
    } else {
        return;
    }
    if (wsl_proxy_trusted(o->trust, o->ntrust, &peer) &&
        wsl_proxy_client(o->trust, o->ntrust, req, &client, &req->secure))
        wsl_ip_format(&client, buf, cap);
}

static void upgrade(wsl_conn *c, wsl_request *req)
{
    wsl_server *srv = c->srv;
    wsl_upgrade up = {0};
    char peer[64];
    find_client(c, req, peer, sizeof peer);
    c->secure = req->secure;

    if (srv->events->upgrade) {
        srv->events->upgrade(srv->events_ud, c, req, &up);
        if (up.status) {
            refuse_upgrade(c, up.status, "refused by on_upgrade", up.body);
            return;
        }
        if (up.protocol[0] && !offered(req->protocols, up.protocol)) {
            wsl_conn_log(c, WSL_LOG_ERROR,
                         "on_upgrade chose subprotocol '%s', which the client did not offer",
                         up.protocol);
            refuse_upgrade(c, 500, "server chose a subprotocol the client did not offer", NULL);
            return;
        }
    }
    if (srv->stopping) {
        refuse_upgrade(c, 503, "server shutting down", NULL);
        return;
    }

    c->info = info_new(req->remote, req, up.protocol);
    char accept[WSL_ACCEPT_LEN + 1], resp[1024], ext[128];
    wsl_handshake_accept(req->key.p, req->key.len, accept);
    /* An extension we decline never fails the handshake: the answer just leaves it out. */
    wsl_deflate_params zp;
    bool z = srv->deflate && wsl_deflate_negotiate_request(req, WSL_DEFLATE_CLIENT_BITS, &zp) &&
             wsl_deflate_answer(&zp, ext, sizeof ext) > 0;
    size_t n =
        wsl_http_upgrade_response(resp, sizeof resp, accept, up.protocol[0] ? up.protocol : NULL,
                                  strlen(up.protocol), z ? ext : NULL);
    if (!c->info || n == 0 || wsl_server_index(srv, c) != 0) {
        refuse_upgrade(c, 500, "out of memory", NULL);
        return;
    }
    if (send_now(c, resp, n) != 0) {
        wsl_server_unindex(srv, c);
        refuse_upgrade(c, 500, "out of memory", NULL);
        return;
    }
    if (z) {
        c->deflate = c->rx.deflate = 1;
        c->zsmall = zp.server_bits && zp.server_bits < 15;
        c->ztakeover = zp.client_takeover;
        c->zbits = zp.client_bits & 15;
    }
    c->state = WSL_CONN_OPEN;
    c->opened = 1;
    wsl_metrics.upgrades++;
    http_free(c->http); /* plain requests may have come before, on a kept-alive connection */
    c->http = NULL;
    c->drain_armed = 0; /* a large plain answer may have armed it: not a WebSocket's output */
    wsl_server_track(srv, c, WSL_LIST_OPEN, srv->idle_ms);
    /* Query strings often carry tokens: logged only when asked for. */
    bool query = req->query.len && srv->opt->log_queries;
    wsl_conn_log(c, WSL_LOG_DEBUG, "open %s%s%s", wsl_conn_path(c), query ? "?" : "",
                 query ? wsl_conn_query(c) : "");
    if (srv->events->open) srv->events->open(srv->events_ud, c);
}

/* ---- plain HTTP requests ------------------------------------------------------------------- */

/* How much a connection reads while an HTTP head or request is being handled: a head and what
 * follows it, or (while a body streams in) whole reads, since the decoder consumes them. */
static size_t http_read_cap(const wsl_conn *c)
{
    return c->state == WSL_CONN_BODY ? WSL_READ_BUF : HEAD_READ_MAX;
}

/* Read while there is room for what the client sends ahead; stop once HEAD_READ_MAX bytes wait
 * (resumed when they have been handled), so that a client cannot make us buffer more. */
static void http_poll(wsl_conn *c)
{
    int ev = (int)(c->events & UV_WRITABLE);
    if (!c->in || c->in->len < http_read_cap(c)) ev |= UV_READABLE;
    set_events(c, ev);
}

/* Whether the connection ends after the answer being written now. */
static bool last_answer(const wsl_conn *c)
{
    const wsl_conn_http *h = c->http;
    return !h->keep_alive || h->served + 1 >= HTTP_MAX_REQUESTS || wsl_server_stopping(c->srv);
}

/* The answer to the request is queued: wait for the next one, or close once it is written. */
static void answered(wsl_conn *c, int status, bool close)
{
    wsl_conn_http *h = c->http;
    h->pending = h->deferred = false;
    h->served++;
    wsl_conn_log(c, WSL_LOG_DEBUG, "%s %d", h->what, status);
    if (close) {
        end_after_write(c);
        return;
    }
    c->state = WSL_CONN_HANDSHAKE;
    wsl_server_track(c->srv, c, WSL_LIST_KEEPALIVE, c->srv->keepalive_ms);
    http_poll(c);
    /* Requests the client pipelined go on once this answer is out (wsl_conn_flush). */
    if (c->in) wsl_server_mark_dirty(c->srv, c);
}

int wsl_conn_respond(wsl_conn *c, int status, const char *headers, size_t hlen, const void *body,
                     size_t len)
{
    if (!wsl_conn_request_pending(c)) return WSL_ECLOSED;
    wsl_conn_http *h = c->http;
    bool close = last_answer(c);
    unsigned flags = close ? WSL_ANSWER_CLOSE : h->http10 ? WSL_ANSWER_KEEP_ALIVE : 0;
    if (!wsl_http_status_has_body(status) || h->head) body = NULL;
    size_t blen = body ? len : 0;
    /* One write for a small answer; a large body goes after its head, uncopied. */
    size_t inline_len = blen <= 16384 ? blen : 0;
    size_t cap = hlen + 256 + inline_len;
    char small[2048];
    char *out = cap <= sizeof small ? small : malloc(cap);
    if (!out) {
        wsl_conn_log(c, WSL_LOG_ERROR, "%s: no memory for the answer", h->what);
        answered(c, status, true); /* nothing was sent: the connection ends */
        return WSL_ENOMEM;
    }
    size_t n = wsl_http_answer_head(out, cap, status, headers, hlen, len, flags);
    int r = n ? 0 : -EINVAL;
    if (r == 0 && inline_len) {
        memcpy(out + n, body, inline_len);
        n += inline_len;
    }
    if (r == 0) r = send_now(c, out, n);
    if (r == 0 && blen > inline_len) r = send_now(c, body, blen);
    if (out != small) free(out);
    if (r != 0) {
        wsl_conn_log(c, WSL_LOG_ERROR, "%s: cannot answer: %s", h->what, wsl_strerror(r));
        close = true;
    }
    answered(c, status, close);
    return r;
}

int wsl_conn_defer(wsl_conn *c)
{
    if (!wsl_conn_request_pending(c)) return WSL_ECLOSED;
    c->http->deferred = true;
    return 0;
}

bool wsl_conn_request_pending(const wsl_conn *c)
{
    return c->state == WSL_CONN_REQUEST && c->http && c->http->pending;
}

uint32_t *wsl_conn_request_slot(wsl_conn *c)
{
    return c->http ? &c->http->udata : NULL;
}

static void request_timeout(wsl_conn *c)
{
    if (!wsl_conn_request_pending(c)) return;
    wsl_conn_log(c, WSL_LOG_WARN, "%s: no answer within --request-timeout: 504", c->http->what);
    if (EVENTS(c)->request_abandoned) EVENTS(c)->request_abandoned(EV_UD(c), c);
    static const char body[] = "Gateway Timeout\n";
    wsl_conn_respond(c, 504, NULL, 0, body, sizeof body - 1);
}

/* What a connection answers on its own: a static file for GET and HEAD, else 404. */
static void fallback(wsl_conn *c, const wsl_request *req)
{
    wsl_server *srv = c->srv;
    if ((!req->get && !req->head) || !srv->has_files) {
        static const char body[] = "Not Found\n";
        wsl_conn_respond(c, 404, NULL, 0, body, sizeof body - 1);
        return;
    }
    bool last = last_answer(c);
    char *resp = NULL;
    size_t len = 0;
    int status = wsl_static_respond(&srv->files, req->path.p, req->path.len, req->head,
                                    last              ? "close"
                                    : c->http->http10 ? "keep-alive"
                                                      : NULL,
                                    &resp, &len, &c->http->file);
    if (status < 0) {
        http_error(c, 500, "out of memory", NULL);
        return;
    }
    /* The head goes now; the file, if the body stayed in one, with the flush. */
    int r = send_now(c, resp, len);
    free(resp);
    if (r != 0) {
        last = true;
        if (c->http->file.left) { /* the head did not go: nor may the body */
            close(c->http->file.fd);
            c->http->file.left = 0;
        }
    }
    answered(c, status, last);
}

/* A whole request: report it, and answer it ourselves when the owner neither answers nor
 * defers. req's spans and body stay valid for the call only. */
static void dispatch(wsl_conn *c, wsl_request *req, const uint8_t *body, size_t len)
{
    wsl_conn_http *h = c->http;
    char remote[64];
    find_client(c, req, remote, sizeof remote);
    h->pending = true;
    h->deferred = false;
    h->head = req->head;
    h->keep_alive = req->keep_alive;
    h->http10 = req->http10;
    snprintf(h->what, sizeof h->what, "%.*s %.*s", (int)req->method.len, req->method.p,
             (int)req->path.len, req->path.p);
    c->state = WSL_CONN_REQUEST;
    wsl_server_track(c->srv, c, WSL_LIST_REQUEST, c->srv->request_ms);
    http_poll(c); /* reading on shows a client that leaves, and keeps what it pipelines */
    if (EVENTS(c)->request) {
        wsl_http_req r = {.head = req, .body = body, .body_len = len};
        EVENTS(c)->request(EV_UD(c), c, &r);
    }
    /* The owner answered, deferred, or the connection went: nothing left to do here. */
    if (!wsl_conn_request_pending(c) || c->http->deferred) return;
    fallback(c, req);
}

/* The head of a plain request at p (n bytes with what follows it): report it at once when it
 * has no body, else keep it and read the body. Returns the bytes consumed. */
static size_t begin_request(wsl_conn *c, wsl_request *req, const uint8_t *p, size_t n)
{
    if (!c->http && !(c->http = calloc(1, sizeof *c->http))) {
        http_error(c, 500, "out of memory", NULL);
        return n;
    }
    wsl_conn_http *h = c->http;
    if (req->body == WSL_BODY_LENGTH && req->content_length > c->srv->opt->max_request_body) {
        /* Refused before a byte of it is read; the connection closes, so none needs to be. */
        http_error(c, 413, "request body larger than --max-request-body", NULL);
        return n;
    }
    if (req->body == WSL_BODY_NONE) {
        dispatch(c, req, (const uint8_t *)"", 0);
        return req->head_len;
    }
    /* Grown as the body arrives, never from what the head announced. */
    wsl_bytes *b = bytes_reserve(NULL, req->head_len + 1024);
    if (!b) {
        http_error(c, 500, "out of memory", NULL);
        return n;
    }
    memcpy(b->data, p, req->head_len);
    b->len = (uint32_t)req->head_len;
    h->req = b;
    h->head_len = (uint32_t)req->head_len;
    wsl_http_body_init(&h->rx, req);
    c->state = WSL_CONN_BODY;
    wsl_server_track(c->srv, c, WSL_LIST_REQUEST, c->srv->request_ms);
    /* A client waiting for leave to send its body (RFC 9110 section 10.1.1). */
    if (req->expect_100 && !req->http10 && n == req->head_len) {
        static const char go[] = "HTTP/1.1 100 Continue\r\n\r\n";
        send_now(c, go, sizeof go - 1);
    }
    return req->head_len;
}

/* The body has all arrived: the head again (it parses as it did), then the report. */
static void body_complete(wsl_conn *c)
{
    wsl_conn_http *h = c->http;
    wsl_bytes *b = h->req;
    h->req = NULL;
    wsl_request req;
    if (wsl_http_parse(&req, (const char *)b->data, h->head_len) != WSL_REQ_PLAIN)
        http_error(c, 500, "the request head changed", NULL); /* cannot happen */
    else
        dispatch(c, &req, b->data + h->head_len, b->len - h->head_len);
    free(b);
}

/* Body bytes at p: decoded and kept. Returns the bytes consumed (n unless the body ended). */
static size_t read_body(wsl_conn *c, const uint8_t *p, size_t n)
{
    wsl_conn_http *h = c->http;
    uint64_t max = c->srv->opt->max_request_body;
    size_t off = 0;
    for (;;) {
        size_t used;
        wsl_span d;
        wsl_body_event ev = wsl_http_body_next(&h->rx, (const char *)p + off, n - off, &used, &d);
        off += used;
        switch (ev) {
        case WSL_BODY_MORE:
            return off;
        case WSL_BODY_BAD:
            http_error(c, 400, "malformed chunked body", NULL);
            return n;
        case WSL_BODY_DONE:
            body_complete(c);
            return off;
        case WSL_BODY_DATA: {
            wsl_bytes *b = h->req;
            if ((uint64_t)(b->len - h->head_len) + d.len > max) {
                http_error(c, 413, "request body larger than --max-request-body", NULL);
                return n;
            }
            if (!(b = bytes_reserve(b, (size_t)b->len + d.len))) {
                http_error(c, 500, "out of memory", NULL);
                return n;
            }
            h->req = b;
            memcpy(b->data + b->len, d.p, d.len);
            b->len += (uint32_t)d.len;
            break;
        }
        }
    }
}

/* Keep buf[0..n) (inside own, or in the shared buffer when own is NULL) in c->in. */
static void stash(wsl_conn *c, wsl_bytes *own, const uint8_t *p, size_t n)
{
    if (n == 0 || c->state == WSL_CONN_DEAD || c->state == WSL_CONN_RESPONDING) {
        free(own);
        return;
    }
    if (own) {
        memmove(own->data, p, n);
        own->len = (uint32_t)n;
    } else if ((own = bytes_reserve(NULL, n))) {
        memcpy(own->data, p, n);
        own->len = (uint32_t)n;
    } else {
        wsl_conn_destroy(c);
        return;
    }
    c->in = own;
    http_poll(c);
}

/* Everything the client sent that is not handled yet, buf[0..len): a head, a body, requests it
 * pipelined, or an upgrade and the frames behind it. Handles what it may now and keeps the rest
 * in c->in. own: the allocation buf lies in (taken from c->in), or NULL for the shared read
 * buffer; either way the bytes are this function's until it returns. */
static void http_input(wsl_conn *c, wsl_bytes *own, uint8_t *buf, size_t len)
{
    size_t off = 0;
    while (off < len) {
        if (c->state == WSL_CONN_BODY) {
            off += read_body(c, buf + off, len - off);
            continue;
        }
        /* One request at a time, and the next only once the last answer is written. */
        if (c->state != WSL_CONN_HANDSHAKE || wsl_conn_buffered(c) > 0) break;
        wsl_request req;
        wsl_req_kind kind = wsl_http_parse(&req, (const char *)buf + off, len - off);
        if (kind == WSL_REQ_INCOMPLETE) break;
        if (kind == WSL_REQ_ERROR) {
            if (wsl_http_header(&req, "upgrade")) wsl_metrics_refused(req.status);
            http_error(c, req.status, req.error, NULL);
            break;
        }
        if (kind == WSL_REQ_PLAIN) {
            off += begin_request(c, &req, buf + off, len - off);
            continue;
        }
        upgrade(c, &req);
        /* Frames the client sent right behind its request: parse them from the shared buffer as
         * if just read. */
        size_t extra = len - off - req.head_len;
        uint8_t *rbuf = c->srv->rbuf;
        if (extra) memmove(rbuf, buf + off + req.head_len, extra);
        free(own);
        if (extra && c->state == WSL_CONN_OPEN) parse_frames(c, rbuf, extra);
        return;
    }
    stash(c, own, buf + off, len - off);
}

/* The answer just written was waited for by requests the client pipelined. */
static void http_resume(wsl_conn *c)
{
    wsl_bytes *b = c->in;
    c->in = NULL;
    http_input(c, b, b->data, b->len);
}

/* The client closed its side (or the connection broke) while requests were being read. */
static void http_eof(wsl_conn *c)
{
    if (c->state == WSL_CONN_HANDSHAKE && c->http && !c->in) {
        /* Between requests: an ordinary end, once the last answer is out. */
        wsl_conn_log(c, WSL_LOG_DEBUG, "closed by the client after %u requests",
                     (unsigned)c->http->served);
        if (wsl_conn_buffered(c) > 0) {
            end_after_write(c);
            return;
        }
    } else if (c->state == WSL_CONN_REQUEST) {
        wsl_conn_log(c, WSL_LOG_DEBUG, "%s: the client left before the answer", c->http->what);
    }
    wsl_conn_destroy(c); /* vanished mid-request */
}

/* read(2) through TLS: plaintext, or -1 and errno; the end of a client that is no TLS client
 * (plain HTTP, garbage) or that went during the handshake is logged. */
static __attribute__((noinline)) ssize_t tls_read(wsl_conn *c, void *buf, size_t cap)
{
    wsl_tls *t = conn_tls(c);
    ssize_t r = wsl_tls_read(t, buf, cap);
    if (r > 0) return r;
    if (r == -EAGAIN) {
        errno = EAGAIN;
        return -1;
    }
    bool hs = !wsl_tls_established(t);
    if (r == -EPROTO)
        wsl_conn_log(c, WSL_LOG_DEBUG, "TLS %s: %s", hs ? "handshake failed" : "error",
                     wsl_tls_error());
    else if (hs)
        wsl_conn_log(c, WSL_LOG_DEBUG, "the client left during the TLS handshake%s%s",
                     r ? ": " : "", r ? wsl_strerror((int)r) : "");
    if (r == 0) return 0;
    errno = (int)-r;
    return -1;
}

/* Bytes from the client, as read(2) returns them (-1 and errno): from the socket, or through
 * TLS; while lingering, raw, since what comes then is discarded unread. */
static inline ssize_t conn_read(wsl_conn *c, void *buf, size_t cap)
{
    if (c->tls && !c->lingering) return tls_read(c, buf, cap);
    ssize_t r = recv(c->fd, buf, cap, 0);
    if (r > 0) wsl_metrics.bytes_received += (size_t)r;
    return r;
}

static void read_http(wsl_conn *c)
{
    /* A request usually arrives whole in one read: read into the shared buffer, and keep a
     * private copy only of what is left over (an incomplete head, pipelined requests). */
    uint8_t *buf = c->srv->rbuf;
    size_t have = 0, cap = http_read_cap(c);
    wsl_bytes *b = c->in;
    if (b) {
        have = b->len;
        if (have >= cap) { /* full: read again once those bytes are handled */
            http_poll(c);
            return;
        }
        if (!(b = bytes_reserve(b, have + 4096 < cap ? have + 4096 : cap))) {
            wsl_conn_destroy(c);
            return;
        }
        c->in = b;
        buf = b->data;
        if (cap > b->cap) cap = b->cap;
    }
    ssize_t r = conn_read(c, buf + have, cap - have);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        http_eof(c);
        return;
    }
    c->in = NULL; /* http_input owns the bytes now */
    if (b) b->len = (uint32_t)(have + (size_t)r);
    http_input(c, b, buf, have + (size_t)r);
}

static void read_frames(wsl_conn *c)
{
    uint8_t *buf = c->srv->rbuf;
    size_t have = 0;
    if (c->in) { /* a partial header or control frame: at most WSL_FRAME_HDR_MAX + 125 bytes */
        have = c->in->len;
        memcpy(buf, c->in->data, have);
        free(c->in);
        c->in = NULL;
    }
    ssize_t r = conn_read(c, buf + have, WSL_READ_BUF - have);
    if (r <= 0) {
        if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
            wsl_conn_destroy(c); /* EOF or reset: 1006 if it was open */
            return;
        }
        if (!have) return;
        r = 0; /* the stash is parsed again, as it was */
    } else {
        if (c->lingering) return; /* discarding until EOF */
        if (c->state == WSL_CONN_OPEN) {
            /* Input restarts the idle timeout. Moving the connection to the list's tail touches
             * its neighbours too, so it moves only when its deadline would advance by a sweep
             * tick or more: the sweep is no finer anyway (the idle ping may come up to a tick
             * early). */
            wsl_server *srv = c->srv;
            c->pinged = 0;
            if (srv->idle_ms && uv_now(srv->loop) + srv->idle_ms >= c->deadline + srv->sweep_ms)
                wsl_server_track(srv, c, WSL_LIST_OPEN, srv->idle_ms);
        }
    }
    parse_frames(c, buf, have + (size_t)r);
}

/* The cork's n bytes to c's stream: with io_uring, into the server's write batch (over TLS, the
 * record they make), to be written with the other connections' at the end of the iteration
 * (wsl_conn_sent gets what a socket did not take); without, written now. What cannot go is
 * queued. 0 or WSL_ENOMEM. */
static int uncork_write(wsl_conn *c, const uint8_t *p, size_t n)
{
    wsl_uring *u = c->srv->uring;
    if (!u) return stream_or_queue(c, p, n);
    if (!c->tls) { /* the cork is in the batch already (cork_place) */
        wsl_uring_add_placed(u, c->fd, p, n, c);
        c->inflight = 1;
        return 0;
    }
    /* A full batch goes first (with room for the record's header and tag). */
    if (!wsl_uring_fits(u, n + WSL_TLS_RECORD_EXTRA)) wsl_conn_submit(c->srv);
    int r = queued(c) == 0 ? wsl_tls_write_batched(conn_tls(c), p, n, u, c) : -1;
    c->inflight = conn_tls(c)->inflight; /* even after a failure, for a record batched */
    return r == 0 ? 0 : write_or_queue(c, p, n);
}

/* Where c's cork goes: for a plain connection with the write batch, straight into the batch's
 * arena (the uncork then adds it there without a copy: nothing else is added meanwhile); else the
 * server's own buffer (over TLS the uncork encrypts it into the batch). */
static inline uint8_t *cork_place(wsl_server *srv, const wsl_conn *c)
{
    wsl_uring *u = srv->uring;
    if (!u || c->tls) return srv->cork_buf;
    uint8_t *p = wsl_uring_room(u, WSL_CORK_MAX);
    if (p) return p;
    wsl_conn_submit(srv); /* full: a whole cork always fits an empty batch */
    return wsl_uring_room(u, WSL_CORK_MAX);
}
_Static_assert(WSL_BATCH_BYTES >= WSL_CORK_MAX, "see cork_place");

void wsl_conn_submit(wsl_server *srv)
{
    wsl_uring *u = srv->uring;
    for (unsigned i = 0, n = wsl_uring_queued(u); i < n; i++) {
        wsl_conn *c = wsl_uring_owner(u, i);
        c->inflight = 0;
        if (c->tls) conn_tls(c)->inflight = 0;
    }
    wsl_metrics.bytes_sent += wsl_uring_submit(u);
}

void wsl_conn_sent(void *owner, const uint8_t *p, size_t n, int res)
{
    wsl_conn *c = owner;
    size_t done = res > 0 ? (size_t)res : 0;
    wsl_metrics.bytes_sent += done;
    /* The rest goes ahead of whatever was queued meanwhile; the flush writes it, or meets the
     * socket's error again and ends the connection there (not here, inside someone's write). */
    if (c->tls ? wsl_tls_unsent(conn_tls(c), p + done, n - done)
               : wsl_queue_prepend(&c->out, p + done, n - done)) {
        wsl_conn_log(c, WSL_LOG_ERROR, "out of memory queueing output");
        shutdown(c->fd, SHUT_RDWR); /* its next read ends it */
        return;
    }
    wsl_server_mark_dirty(c->srv, c);
}

/* c's input has been handled: write what it was sent meanwhile (the cork buffer, then whatever
 * had to queue) and apply the state's next step, as the end-of-iteration flush would. */
static void uncork(wsl_conn *c)
{
    wsl_server *srv = c->srv;
    srv->corked = NULL;
    c->corked = 0;
    if (!c->corked_out) return;
    c->corked_out = 0;
    size_t n = srv->cork_len;
    srv->cork_len = 0;
    if (c->state == WSL_CONN_DEAD) return;
    if (n) { /* nothing is queued ahead of the cork: see cork_msg */
        /* Over TLS, encrypted at once; on failure the flush below reports the broken stream. */
        if (uncork_write(c, srv->cork, n) != 0) {
            wsl_conn_log(c, WSL_LOG_ERROR, "out of memory queueing output");
            wsl_conn_destroy(c);
            return;
        }
        /* All of it went, and the flush would find nothing to do (the common echo). */
        if (!queued(c) && c->state == WSL_CONN_OPEN && !c->drain_armed &&
            !(c->events & UV_WRITABLE))
            return;
    }
    flush(c);
}

_Static_assert(offsetof(wsl_conn, poll) == 0, "on_poll finds the connection at its handle");

static void on_poll(uv_poll_t *h, int status, int events)
{
    wsl_conn *c = (wsl_conn *)h; /* poll is its first member; h->data is on another line */
    if (status < 0) {
        if (c->tls && !wsl_tls_established(conn_tls(c))) { /* its last word (an alert) is logged */
            uint8_t sink[256];
            wsl_tls_readable(conn_tls(c));
            while (conn_read(c, sink, sizeof sink) > 0) {}
        }
        wsl_conn_destroy(c);
        return;
    }
    if (events & UV_WRITABLE) wsl_conn_flush(c);
    if (c->state == WSL_CONN_DEAD || !(events & UV_READABLE) || !(c->events & UV_READABLE)) return;
    if (c->tls && !(events & HELD_INPUT)) wsl_tls_readable(conn_tls(c));
    wsl_server *srv = c->srv;
    bool cork = !srv->corked; /* never nested, but a second connection would not cork */
    if (cork) {
        srv->corked = c;
        srv->cork = cork_place(srv, c);
        c->corked = 1;
    }
    if (c->state == WSL_CONN_HANDSHAKE || c->state == WSL_CONN_BODY || c->state == WSL_CONN_REQUEST)
        read_http(c);
    else
        read_frames(c);
    if (cork) uncork(c);
    /* Input OpenSSL kept (a full buffer) is read by the flush of this same iteration. */
    if (c->tls && c->state != WSL_CONN_DEAD && (c->events & UV_READABLE) && tls_held(c))
        wsl_server_mark_dirty(c->srv, c);
}

wsl_conn *wsl_conn_new(wsl_server *srv, int fd, wsl_tls_ctx *tls)
{
    wsl_conn *c = calloc(1, tls ? sizeof(tls_conn) : sizeof *c);
    if (!c) return NULL;
    c->tls = tls != NULL;
    if ((tls && wsl_tls_init(conn_tls(c), tls, fd) != 0) ||
        uv_poll_init(srv->loop, &c->poll, fd) != 0) {
        if (tls) wsl_tls_free(conn_tls(c));
        free(c);
        return NULL;
    }
    c->poll.data = c;
    wsl_list_init(&c->link);
    c->srv = srv;
    c->fd = fd;
    c->id = wsl_server_new_id(srv);
    c->state = WSL_CONN_HANDSHAKE;
    srv->nconns++;
    wsl_metrics.accepted++;
    wsl_server_track(srv, c, WSL_LIST_HANDSHAKE, srv->handshake_ms);
    set_events(c, UV_READABLE);
    return c;
}
