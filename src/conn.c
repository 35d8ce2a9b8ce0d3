/* One connection from accept to close: HTTP request -> upgrade (or a plain answer) -> frames ->
 * close handshake -> lingering close. Reads land in the server's shared buffer; a connection
 * keeps private bytes only for what is partial. Output goes to its queue and leaves in one write
 * per loop iteration (wsl_conn_flush, called by the server). What happens is reported through the
 * server's event table (wsl_conn_events). */
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
#include "server.h"
#include "utf8.h"

#define MAX_IOV       64
#define HEAD_READ_MAX (WSL_HTTP_MAX_HEAD + 4096) /* head plus frames a client may pipeline */

static void on_poll(uv_poll_t *h, int status, int events);

/* The owner of the events (see wsl_conn_events) and its pointer. */
#define EVENTS(c) ((c)->srv->events)
#define EV_UD(c)  ((c)->srv->events_ud)

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
}

const char *wsl_conn_peer(const wsl_conn *c, char *buf, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (getpeername(c->fd, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
            port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
            port = ntohs(a->sin6_port);
            snprintf(buf, cap, "[%s]:%u", ip, port);
            return buf;
        }
    }
    snprintf(buf, cap, "%s:%u", ip, port);
    return buf;
}

void wsl_conn_log(const wsl_conn *c, wsl_log_level level, const char *fmt, ...)
{
    if (!wsl_log_enabled(level)) return;
    char msg[4096], peer[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Before the upgrade there is no info yet: ask the socket. */
    const char *who = c->info ? wsl_conn_remote(c) : wsl_conn_peer(c, peer, sizeof peer);
    wsl_log(level, "conn#%llu %s: %s", (unsigned long long)c->id, who, msg);
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
    if (m->hlen + len <= WSL_MSG_WIRE) {
        memcpy(m->wire, m->hdr, m->hlen);
        if (len) memcpy(m->wire + m->hlen, payload, len);
        m->wire_len = m->hlen + len;
    }
}

void wsl_msg_release(wsl_msg *m)
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
 * or no smaller; or out of memory: the plain frame still goes), WSL_ENOMEM. Kept out of line so
 * that sending to a plain connection pays one test for it. */
static __attribute__((noinline)) int queue_deflated(wsl_conn *c, wsl_msg *m)
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

static int queue_msg(wsl_conn *c, wsl_msg *m)
{
    int r;
    if (c->deflate && (r = queue_deflated(c, m)) != 1) return r;
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

int wsl_conn_send(wsl_conn *c, wsl_msg *m)
{
    if (c->state != WSL_CONN_OPEN) return WSL_ECLOSED;
    return queue_msg(c, m);
}

/* Output that is no broadcast (control frames, HTTP answers) is written at once when nothing is
 * queued ahead of it: no chunk is taken for it, so a ping storm over many connections costs no
 * memory. What the socket does not take is queued; the connection is marked dirty either way so
 * the flush applies the state's next step (e.g. the lingering close). */
static int send_now(wsl_conn *c, const void *p, size_t n)
{
    size_t done = 0;
    if (c->out.bytes == 0) {
        ssize_t w = write(c->fd, p, n);
        if (w > 0) done = (size_t)w; /* an error shows again when the flush writes the rest */
    }
    int r = done < n ? wsl_queue_copy(&c->out, (const uint8_t *)p + done, n - done, NULL, 0) : 0;
    wsl_server_mark_dirty(c->srv, c);
    return r ? WSL_ENOMEM : 0;
}

static int send_control(wsl_conn *c, int opcode, const void *payload, size_t len)
{
    uint8_t frame[WSL_SERVER_HDR_MAX + WSL_CONTROL_MAX];
    size_t h = wsl_frame_header(frame, opcode, true, len);
    if (len) memcpy(frame + h, payload, len);
    return send_now(c, frame, h + len);
}

static void send_http(wsl_conn *c, const char *resp, size_t len)
{
    send_now(c, resp, len);
    c->state = WSL_CONN_RESPONDING;
    wsl_server_track(c->srv, c, WSL_LIST_CLOSING, WSL_CLOSE_TIMEOUT_MS);
    set_events(c, 0); /* the request is all we read; the rest is the peer's problem */
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

void wsl_conn_destroy(wsl_conn *c)
{
    if (c->state == WSL_CONN_DEAD) return;
    report_close(c, 1006, "", 0);
    wsl_server *srv = c->srv;
    c->state = WSL_CONN_DEAD;
    wsl_server_track(srv, c, WSL_LIST_NONE, 0);
    if (srv->events->release) srv->events->release(srv->events_ud, c);
    wsl_queue_clear(&c->out);
    free(c->in);
    free(c->msg);
    free(c->info);
    wsl_inflater_free(srv->deflate, c->inflater);
    c->in = c->msg = NULL;
    c->info = NULL;
    c->inflater = NULL;
    uv_close((uv_handle_t *)&c->poll, (uv_close_cb)free);
    close(c->fd); /* uv_close stopped polling it */
    wsl_server_conn_gone(srv);
}

/* Both close frames are out (or we gave up on the peer): send FIN after the queue and read until
 * the peer's FIN, so a late byte from it cannot turn our close into a reset. */
static void linger(wsl_conn *c)
{
    shutdown(c->fd, SHUT_WR);
    c->lingering = 1;
    wsl_server_track(c->srv, c, WSL_LIST_CLOSING, WSL_CLOSE_TIMEOUT_MS);
    set_events(c, UV_READABLE);
}

void wsl_conn_expire(wsl_conn *c)
{
    switch (c->state) {
    case WSL_CONN_HANDSHAKE:
        wsl_conn_log(c, WSL_LOG_INFO, "handshake timeout");
        wsl_conn_destroy(c);
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
                 c->out.bytes, (unsigned long long)c->srv->opt->max_backpressure);
    wsl_queue_truncate(&c->out); /* keep only the frames already being written */
    start_close(c, 1008, "slow consumer", 13, true);
    report_close(c, 1008, "slow consumer", 13);
}

void wsl_conn_flush(wsl_conn *c)
{
    if (c->state == WSL_CONN_DEAD) return;
    while (c->out.bytes > 0) {
        struct iovec iov[MAX_IOV];
        int n = wsl_queue_iov(&c->out, iov, MAX_IOV);
        ssize_t w = writev(c->fd, iov, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            wsl_conn_log(c, WSL_LOG_DEBUG, "write: %s", strerror(errno));
            wsl_conn_destroy(c);
            return;
        }
        wsl_queue_consume(&c->out, (size_t)w);
    }

    uint64_t limit = c->srv->opt->max_backpressure;
    if (c->out.bytes > 0) {
        if (c->state == WSL_CONN_OPEN && c->out.bytes > limit) {
            slow_consumer(c);
            return; /* the close frame was queued: flushed with the next dirty pass */
        }
        if (c->out.bytes > limit / 2) c->drain_armed = 1;
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
}

/* ---- reading frames --------------------------------------------------------------------- */

static void deliver(wsl_conn *c, const uint8_t *p, size_t n, int opcode)
{
    if (EVENTS(c)->message) EVENTS(c)->message(EV_UD(c), c, p, n, opcode == WSL_OP_BINARY);
}

static bool on_data(wsl_conn *c, const wsl_rx_event *ev)
{
    if (c->state != WSL_CONN_OPEN) return true; /* after our close: discard until the reply */
    if (ev->first && ev->last && !c->msg) {
        deliver(c, ev->data, ev->len, ev->opcode); /* the common case: no copy */
        return true;
    }
    size_t have = c->msg ? c->msg->len : 0;
    /* Grow with what arrived, not with what a header announced: a client announcing large
     * frames and sending nothing must not make us allocate them. */
    wsl_bytes *b = bytes_reserve(c->msg, have + ev->len);
    if (!b) {
        wsl_conn_log(c, WSL_LOG_ERROR, "out of memory assembling a message");
        return false;
    }
    c->msg = b;
    memcpy(b->data + b->len, ev->data, ev->len);
    b->len += (uint32_t)ev->len;
    if (ev->last) {
        c->msg = NULL;
        deliver(c, b->data, b->len, ev->opcode);
        free(b);
    }
    return true;
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
    size_t have = c->msg ? c->msg->len : 0;
    wsl_bytes *b = bytes_reserve(c->msg, have + n);
    if (!b) {
        wsl_conn_log(c, WSL_LOG_ERROR, "out of memory assembling a message");
        fail(c, 1011, "out of memory");
        return false;
    }
    c->msg = b;
    if (n) memcpy(b->data + b->len, out, n);
    b->len += (uint32_t)n;
    if (ev->last) {
        c->msg = NULL;
        deliver(c, b->data, b->len, ev->opcode);
        free(b);
    }
    return true;
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
        c->close_rcvd = 1;
        if (c->state == WSL_CONN_OPEN) {
            /* Echo the code (RFC 6455 5.5.1); an empty close gets an empty close. */
            start_close(c, ev->code, "", 0, false);
            report_close(c, ev->code, ev->reason, ev->reason_len);
        }
        set_events(c, c->events & UV_WRITABLE);
        if (c->out.bytes == 0) linger(c);
        break;
    }
}

/* Parse frames from p[0..n). Returns false when the connection must not be read further now. */
static bool parse_frames(wsl_conn *c, uint8_t *p, size_t n)
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
            if (ev.compressed) {
                if (!on_compressed(c, &ev)) return false;
            } else if (!on_data(c, &ev)) {
                fail(c, 1011, "out of memory");
                return false;
            }
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

static void upgrade(wsl_conn *c, const wsl_request *req)
{
    wsl_server *srv = c->srv;
    wsl_upgrade up = {0};
    char peer[64];
    wsl_conn_peer(c, peer, sizeof peer);

    if (srv->events->upgrade) {
        srv->events->upgrade(srv->events_ud, c, req, &up);
        if (up.status) {
            http_error(c, up.status, "refused by on_upgrade", up.body);
            return;
        }
        if (up.protocol[0] && !offered(req->protocols, up.protocol)) {
            wsl_conn_log(c, WSL_LOG_ERROR,
                         "on_upgrade chose subprotocol '%s', which the client did not offer",
                         up.protocol);
            http_error(c, 500, "server chose a subprotocol the client did not offer", NULL);
            return;
        }
    }
    if (srv->stopping) {
        http_error(c, 503, "server shutting down", NULL);
        return;
    }

    c->info = info_new(peer, req, up.protocol);
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
        http_error(c, 500, "out of memory", NULL);
        return;
    }
    if (send_now(c, resp, n) != 0) {
        wsl_server_unindex(srv, c);
        http_error(c, 500, "out of memory", NULL);
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
    wsl_server_track(srv, c, WSL_LIST_OPEN, srv->idle_ms);
    /* Query strings often carry tokens: logged only when asked for. */
    bool query = req->query.len && srv->opt->log_queries;
    wsl_conn_log(c, WSL_LOG_DEBUG, "open %s%s%s", wsl_conn_path(c), query ? "?" : "",
                 query ? wsl_conn_query(c) : "");
    if (srv->events->open) srv->events->open(srv->events_ud, c);
}

static void serve_file(wsl_conn *c, const wsl_request *req)
{
    wsl_server *srv = c->srv;
    if (!srv->has_files) {
        http_error(c, 404, "no such file (static files are off)", NULL);
        return;
    }
    char *resp = NULL;
    size_t len = 0;
    int status =
        wsl_static_respond(&srv->files, req->path.p, req->path.len, req->head, &resp, &len);
    if (status < 0) {
        http_error(c, 500, "out of memory", NULL);
        return;
    }
    wsl_conn_log(c, WSL_LOG_DEBUG, "%s %.*s %d", req->head ? "HEAD" : "GET", (int)req->path.len,
                 req->path.p, status);
    send_http(c, resp, len);
    free(resp);
}

static void read_request(wsl_conn *c)
{
    /* A request usually arrives whole in one read: read into the shared buffer, and keep a
     * private copy only while the request is incomplete. */
    uint8_t *buf = c->srv->rbuf;
    size_t have = 0;
    wsl_bytes *b = c->in;
    if (b) {
        if (!(b = bytes_reserve(b, (size_t)b->len + 1024))) {
            wsl_conn_destroy(c);
            return;
        }
        c->in = b;
        buf = b->data;
        have = b->len;
    }
    size_t room = b ? b->cap - have : WSL_READ_BUF;
    if (have + room > HEAD_READ_MAX) room = HEAD_READ_MAX - have;
    ssize_t r = read(c->fd, buf + have, room);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        wsl_conn_destroy(c); /* vanished mid-handshake */
        return;
    }
    size_t len = have + (size_t)r;
    if (b) b->len = (uint32_t)len;

    /* Re-examined on every read (a scan of at most 8 KiB) so garbage is refused at once. */
    wsl_request req;
    switch (wsl_http_parse(&req, (const char *)buf, len)) {
    case WSL_REQ_INCOMPLETE:
        if (!b) {
            if (!(b = bytes_reserve(NULL, len))) {
                wsl_conn_destroy(c);
                return;
            }
            memcpy(b->data, buf, len);
            b->len = (uint32_t)len;
            c->in = b;
        }
        return;
    case WSL_REQ_ERROR:
        http_error(c, req.status, req.error, NULL);
        return;
    case WSL_REQ_FILE:
        serve_file(c, &req);
        return;
    case WSL_REQ_UPGRADE:
        break;
    }

    upgrade(c, &req);
    /* Frames the client sent right behind its request: parse them from the shared buffer as if
     * just read (the private request copy, if any, goes away now). */
    size_t extra = len - req.head_len;
    uint8_t *rbuf = c->srv->rbuf;
    if (extra) memmove(rbuf, buf + req.head_len, extra);
    free(c->in);
    c->in = NULL;
    if (extra && c->state == WSL_CONN_OPEN) parse_frames(c, rbuf, extra);
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
    ssize_t r = read(c->fd, buf + have, WSL_READ_BUF - have);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (have) parse_frames(c, buf, have); /* restore the stash */
            return;
        }
        wsl_conn_destroy(c); /* EOF or reset: 1006 if it was open */
        return;
    }
    if (c->lingering) return; /* discarding until EOF */
    if (c->state == WSL_CONN_OPEN) {
        c->pinged = 0;
        wsl_server_track(c->srv, c, WSL_LIST_OPEN, c->srv->idle_ms);
    }
    parse_frames(c, buf, have + (size_t)r);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    wsl_conn *c = h->data;
    if (status < 0) {
        wsl_conn_destroy(c);
        return;
    }
    if (events & UV_WRITABLE) wsl_conn_flush(c);
    if (c->state == WSL_CONN_DEAD || !(events & UV_READABLE) || !(c->events & UV_READABLE)) return;
    if (c->state == WSL_CONN_HANDSHAKE)
        read_request(c);
    else
        read_frames(c);
}

wsl_conn *wsl_conn_new(wsl_server *srv, int fd)
{
    wsl_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    if (uv_poll_init(srv->loop, &c->poll, fd) != 0) {
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
    wsl_server_track(srv, c, WSL_LIST_HANDSHAKE, srv->handshake_ms);
    set_events(c, UV_READABLE);
    return c;
}
