/* The listening socket and loop-wide machinery: accept (with the connection limit and a spare
 * descriptor so EMFILE sheds load instead of spinning), the flush of every connection with
 * output once per loop iteration, the timeout sweep over the per-state lists, broadcast and
 * publish, and graceful shutdown. */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http.h"
#include "listen.h"
#include "log.h"
#include "metrics.h"
#include "uring.h"

#define ACCEPT_BATCH 64   /* accepts per wakeup, so a connection storm cannot starve the rest */
#define FD_HEADROOM  64   /* descriptors left for the script, logs and static files */
#define SHED_LOG_MS  1000 /* at most one "shedding" warning a second */
#define PAUSE_MS     100  /* accept pause when not even the spare descriptor helps */

/* ---- lists and timeouts ------------------------------------------------------------------- */

void wsl_server_track(wsl_server *s, wsl_conn *c, int which, uint64_t ms)
{
    if (c->list) {
        wsl_list_remove(&c->link);
        s->lists[c->list].n--;
    }
    c->list = (uint8_t)which;
    if (!which) return;
    wsl_conn_list *l = &s->lists[which];
    c->deadline = ms ? uv_now(s->loop) + ms : UINT64_MAX;
    wsl_list_push_back(&l->head, &c->link);
    l->n++;
}

/* The connection at the head of list `which` (the oldest deadline), or NULL. */
static wsl_conn *list_head(wsl_server *s, int which)
{
    wsl_list *h = &s->lists[which].head;
    return wsl_list_empty(h) ? NULL : wsl_list_entry(h->next, wsl_conn, link);
}

wsl_conn *wsl_server_first_open(wsl_server *s)
{
    return list_head(s, WSL_LIST_OPEN);
}

wsl_conn *wsl_server_next_open(wsl_server *s, wsl_conn *c)
{
    wsl_list *n = c->link.next;
    return n == &s->lists[WSL_LIST_OPEN].head ? NULL : wsl_list_entry(n, wsl_conn, link);
}

static void on_sweep(uv_timer_t *t)
{
    wsl_server *s = t->data;
    uint64_t now = uv_now(s->loop);
    for (int i = WSL_LIST_HANDSHAKE; i < WSL_LIST_COUNT; i++) {
        /* Expiring moves or removes the head, so this ends; bound it anyway against a
         * connection that re-arms itself with a deadline already past. */
        size_t budget = s->lists[i].n;
        wsl_conn *c;
        while (budget-- > 0 && (c = list_head(s, i)) && c->deadline <= now)
            wsl_conn_expire(c);
    }
}

/* ---- output: one write per connection per loop iteration ----------------------------------
 * (and the connection whose input is being handled: right after it, see wsl_server.corked) */

void wsl_server_mark_dirty(wsl_server *s, wsl_conn *c)
{
    if (c->dirty) return;
    if (c->corked) { /* flushed as soon as its input is handled (uncork in conn.c) */
        c->corked_out = 1;
        return;
    }
    c->dirty = 1;
    c->dirty_next = s->dirty;
    s->dirty = c;
}

static void flush_all(wsl_server *s)
{
    /* The batch first: it holds the oldest bytes, and what a socket did not take of them marks
     * the connection dirty. Input OpenSSL held, read by a connection's flush, may add answers
     * to the batch: they go too before the loop polls. */
    do {
        if (s->uring) wsl_conn_submit(s);
        wsl_conn *c;
        while ((c = s->dirty)) {
            s->dirty = c->dirty_next;
            c->dirty = 0;
            wsl_conn_flush(c);
        }
    } while (s->uring && wsl_uring_queued(s->uring));
}

/* The one flush of an iteration: right before the loop polls, after the I/O callbacks of the
 * last iteration and the timers of this one, so whatever either wrote leaves in one write per
 * connection. */
static void on_prepare(uv_prepare_t *h)
{
    flush_all(h->data);
}

/* ---- broadcast, publish, topics: here and on the other nodes ----------------------------------
 */

/* Hand a message to the other nodes; local delivery happened already. A failure is counted and
 * logged (rate-limited) by the link: local delivery does not depend on Redis. */
static int to_cluster(wsl_server *s, wsl_cluster_kind kind, const char *topic, size_t len,
                      uint64_t target, const wsl_msg *m, const wsl_conn *except)
{
    wsl_cluster_msg cm = {.kind = kind,
                          .topic = topic,
                          .topic_len = len,
                          .target = target,
                          .except = except ? except->id : 0,
                          .opcode = m->hdr[0] & 0x0F,
                          .data = m->payload,
                          .len = m->len};
    return wsl_cluster_publish(s->cluster, &cm);
}

static size_t broadcast_here(wsl_server *s, wsl_msg *m, const wsl_conn *except)
{
    size_t n = 0;
    wsl_list *h = &s->lists[WSL_LIST_OPEN].head;
    wsl_msg_wire(m);
    for (wsl_list *l = h->next; l != h; l = l->next) {
        wsl_conn *c = wsl_list_entry(l, wsl_conn, link);
        if (c != except && wsl_conn_queue(c, m) == 0) n++;
    }
    wsl_metrics.broadcast_frames += n;
    wsl_metrics.messages_sent += n;
    return n;
}

static size_t publish_here(wsl_server *s, const char *topic, size_t len, wsl_msg *m,
                           const wsl_conn *except)
{
    size_t count, n = 0;
    wsl_sub *const *subs = wsl_topics_members(s->topics, topic, len, &count);
    if (count) wsl_msg_wire(m);
    for (size_t i = 0; i < count; i++) {
        wsl_conn *c = wsl_sub_who(subs[i]);
        if (c != except && wsl_conn_queue(c, m) == 0) n++;
    }
    wsl_metrics.publish_frames += n;
    wsl_metrics.messages_sent += n;
    return n;
}

size_t wsl_server_broadcast(wsl_server *s, wsl_msg *m, const wsl_conn *except)
{
    size_t n = broadcast_here(s, m, except);
    if (s->cluster) to_cluster(s, WSL_CLUSTER_BROADCAST, "", 0, 0, m, except);
    return n;
}

size_t wsl_server_publish(wsl_server *s, const char *topic, size_t len, wsl_msg *m,
                          const wsl_conn *except)
{
    size_t n = publish_here(s, topic, len, m, except);
    if (s->cluster) to_cluster(s, WSL_CLUSTER_TOPIC, topic, len, 0, m, except);
    return n;
}

int wsl_server_send_to(wsl_server *s, uint64_t id, wsl_msg *m)
{
    /* An id without a node number cannot belong to any node of a cluster. */
    if (!s->cluster || wsl_cluster_owns(s->cluster, id) || wsl_cluster_id_node(id) == 0) {
        wsl_conn *c = wsl_server_get(s, id);
        return c ? wsl_conn_send(c, m) : WSL_ECLOSED;
    }
    return to_cluster(s, WSL_CLUSTER_DIRECT, "", 0, id, m, NULL);
}

/* In a cluster this node receives a topic's messages from Redis while it has a local
 * subscriber: it subscribes with the first and unsubscribes after the last. */
int wsl_server_subscribe(wsl_server *s, wsl_conn *c, const char *topic, size_t len)
{
    if (!wsl_conn_is_open(c)) return WSL_ECLOSED;
    int r = wsl_topics_subscribe(s->topics, &c->subs, c, topic, len);
    if (r == 1 && s->cluster && wsl_server_subscribers(s, topic, len) == 1) {
        int e = wsl_cluster_subscribe(s->cluster, topic, len);
        if (e < 0) {
            wsl_topics_unsubscribe(s->topics, &c->subs, topic, len);
            return e;
        }
    }
    return r;
}

int wsl_server_unsubscribe(wsl_server *s, wsl_conn *c, const char *topic, size_t len)
{
    /* Before leaving: the name may belong to the topic, freed with its last subscriber. */
    bool last = s->cluster && wsl_server_subscribers(s, topic, len) == 1;
    int r = wsl_topics_unsubscribe(s->topics, &c->subs, topic, len);
    if (r == 1 && last) wsl_cluster_unsubscribe(s->cluster, topic, len);
    return r;
}

void wsl_server_leave_all(wsl_server *s, wsl_conn *c)
{
    if (!s->cluster) {
        wsl_topics_leave_all(s->topics, &c->subs);
        return;
    }
    wsl_sub *sub;
    while ((sub = c->subs.head)) {
        size_t len;
        const char *name = wsl_sub_topic(sub, &len);
        if (wsl_server_subscribers(s, name, len) == 1)
            wsl_cluster_unsubscribe(s->cluster, name, len);
        wsl_topics_unsubscribe(s->topics, &c->subs, name, len);
    }
}

/* ---- the cluster's events ---------------------------------------------------------------- */

/* A message from another node (or a backend's PUBLISH): local delivery only. */
static void on_cluster_message(void *ud, const wsl_cluster_msg *cm)
{
    wsl_server *s = ud;
    wsl_msg m;
    wsl_msg_init(&m, cm->opcode, cm->data, cm->len);
    const wsl_conn *except = cm->except ? wsl_server_get(s, cm->except) : NULL;
    switch (cm->kind) {
    case WSL_CLUSTER_TOPIC:
        publish_here(s, cm->topic, cm->topic_len, &m, except);
        break;
    case WSL_CLUSTER_BROADCAST:
        broadcast_here(s, &m, except);
        break;
    case WSL_CLUSTER_DIRECT: {
        wsl_conn *c = wsl_server_get(s, cm->target);
        if (c) wsl_conn_send(c, &m); /* one that has closed since: nobody to tell */
        break;
    }
    }
    wsl_msg_release(&m);
}

static void on_cluster_node(void *ud, uint32_t old_node, uint32_t new_node)
{
    wsl_server *s = ud;
    (void)old_node;
    s->node = new_node;
}

int wsl_server_join(wsl_server *s, const char *url, const char *prefix)
{
    static const wsl_cluster_events events = {.message = on_cluster_message,
                                              .node = on_cluster_node};
    wsl_cluster_config cfg = {.url = url, .prefix = prefix};
    int r = wsl_cluster_new(&s->cluster, s->loop, &cfg, &events, s);
    if (r < 0) return r;
    s->node = wsl_cluster_node(s->cluster);
    return 0;
}

void wsl_server_leave(wsl_server *s)
{
    if (s->cluster) wsl_cluster_close(s->cluster); /* pending commands are answered "closed" */
    s->cluster = NULL;
}

size_t wsl_server_subscribers(const wsl_server *s, const char *topic, size_t len)
{
    size_t n;
    wsl_topics_members(s->topics, topic, len, &n);
    return n;
}

/* ---- open connections by id ---------------------------------------------------------------- */

static size_t id_slot(uint64_t id, size_t cap)
{
    return (size_t)(id * 0x9E3779B97F4A7C15ull >> 17) & (cap - 1); /* Fibonacci hashing */
}

wsl_conn *wsl_server_get(wsl_server *s, uint64_t id)
{
    if (!s->by_id_cap) return NULL;
    for (size_t i = id_slot(id, s->by_id_cap);; i = (i + 1) & (s->by_id_cap - 1)) {
        wsl_conn *c = s->by_id[i];
        if (!c || c->id == id) return c;
    }
}

static int by_id_grow(wsl_server *s)
{
    size_t cap = s->by_id_cap ? s->by_id_cap * 2 : 64;
    wsl_conn **slots = calloc(cap, sizeof *slots);
    if (!slots) return -1;
    for (size_t i = 0; i < s->by_id_cap; i++) {
        wsl_conn *c = s->by_id[i];
        if (!c) continue;
        size_t j = id_slot(c->id, cap);
        while (slots[j])
            j = (j + 1) & (cap - 1);
        slots[j] = c;
    }
    free(s->by_id);
    s->by_id = slots;
    s->by_id_cap = cap;
    return 0;
}

int wsl_server_index(wsl_server *s, wsl_conn *c)
{
    /* Kept at most half full, so probes stay short. */
    if (2 * (s->lists[WSL_LIST_OPEN].n + 1) > s->by_id_cap && by_id_grow(s) != 0) return -1;
    size_t i = id_slot(c->id, s->by_id_cap);
    while (s->by_id[i])
        i = (i + 1) & (s->by_id_cap - 1);
    s->by_id[i] = c;
    return 0;
}

void wsl_server_unindex(wsl_server *s, wsl_conn *c)
{
    size_t mask = s->by_id_cap - 1, i;
    if (!s->by_id_cap) return;
    for (i = id_slot(c->id, s->by_id_cap); s->by_id[i] != c; i = (i + 1) & mask)
        if (!s->by_id[i]) return; /* not indexed */
    /* Backward-shift deletion: move later entries of the probe run into the hole, so lookups
     * never need tombstones. */
    for (size_t j = (i + 1) & mask; s->by_id[j]; j = (j + 1) & mask) {
        size_t home = id_slot(s->by_id[j]->id, s->by_id_cap);
        if (((j - home) & mask) >= ((j - i) & mask)) {
            s->by_id[i] = s->by_id[j];
            i = j;
        }
    }
    s->by_id[i] = NULL;
}

/* ---- accept ----------------------------------------------------------------------------- */

static void on_listen(uv_poll_t *h, int status, int events);

static void on_accept_resume(uv_timer_t *t)
{
    wsl_server *s = t->data;
    for (size_t i = 0; i < s->nlisteners && !s->stopping; i++)
        uv_poll_start(&s->listeners[i].poll, UV_READABLE, on_listen);
}

static bool shed_log_due(wsl_server *s)
{
    uint64_t now = uv_now(s->loop);
    if (now - s->last_shed_log < SHED_LOG_MS && s->last_shed_log) return false;
    s->last_shed_log = now;
    return true;
}

/* Refuse a connection politely: a 503 if the socket takes it at once, then close. On a TLS
 * listener just close: a 503 would cost a handshake. */
static void refuse(wsl_server *s, const wsl_listener *l, int fd, const char *why)
{
    char resp[256];
    char body[128];
    snprintf(body, sizeof body, "%s\n", why);
    size_t n = wsl_http_error_response(resp, sizeof resp, 503, "Retry-After: 1\r\n", body);
    ssize_t w = l->tls ? 0 : write(fd, resp, n);
    (void)w; /* best effort: the peer may already be gone */
    close(fd);
    wsl_metrics.refused++;
    if (shed_log_due(s)) wsl_warn("refusing connections: %s", why);
}

/* Out of descriptors: release the spare one to accept and refuse the waiting peer, so the
 * listening socket stops being readable instead of waking the loop forever. */
static void shed(wsl_server *s, wsl_listener *l)
{
    if (s->spare_fd >= 0) {
        close(s->spare_fd);
        s->spare_fd = -1;
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) refuse(s, l, fd, "out of file descriptors");
        s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    if (s->spare_fd < 0) {
        /* Could not even do that: stop listening for a moment rather than spin. */
        uv_poll_stop(&l->poll);
        uv_timer_start(&s->accept_pause, on_accept_resume, PAUSE_MS, 0);
        if (shed_log_due(s)) wsl_warn("out of file descriptors: pausing accept");
    }
}

static void on_listen(uv_poll_t *h, int status, int events)
{
    wsl_listener *l = h->data;
    wsl_server *s = l->srv;
    (void)events;
    if (status < 0) return;
    for (int i = 0; i < ACCEPT_BATCH && !s->stopping; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                shed(s, l);
                continue;
            }
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) wsl_warn("accept: %s", strerror(errno));
            return;
        }
        if (s->nconns >= s->max_conns) {
            refuse(s, l, fd, "too many connections");
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        wsl_conn *c = wsl_conn_new(s, fd, l->tls ? s->tls : NULL);
        if (!c) {
            refuse(s, l, fd, "out of memory");
            continue;
        }
        wsl_conn_accepted_from(c, &ss);
    }
}

/* ---- setup and shutdown ------------------------------------------------------------------ */

static unsigned default_max_conns(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024 - FD_HEADROOM;
    /* Use what the hard limit allows, as servers commonly do. */
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t want = rl.rlim_max == RLIM_INFINITY ? 1048576 : rl.rlim_max;
        struct rlimit nr = {want, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &nr) == 0) rl.rlim_cur = want;
    }
    rlim_t cur = rl.rlim_cur == RLIM_INFINITY ? 1048576 : rl.rlim_cur;
    if (cur <= FD_HEADROOM + 16) return 16;
    return (unsigned)(cur - FD_HEADROOM);
}

/* A timeout in whole milliseconds, where 0 means none: a positive one under a millisecond is
 * rounded up, not turned off. */
static uint64_t timeout_ms(double seconds)
{
    uint64_t ms = (uint64_t)(seconds * 1000);
    return ms == 0 && seconds > 0 ? 1 : ms;
}

int wsl_server_init(wsl_server *s, uv_loop_t *loop, const wsl_options *opt)
{
    static const wsl_conn_events nobody;
    *s = (wsl_server){.loop = loop, .opt = opt, .events = &nobody, .spare_fd = -1};
    for (int i = 0; i < WSL_LIST_COUNT; i++)
        wsl_list_init(&s->lists[i].head);
    s->rbuf = malloc(WSL_READ_BUF);
    s->cork = s->cork_buf = malloc(WSL_CORK_MAX);
    s->topics = wsl_topics_new();
    if (!s->rbuf || !s->cork_buf || !s->topics) return WSL_ENOMEM;
    if (opt->deflate && !(s->deflate = wsl_deflate_new())) return WSL_ENOMEM;
    if (!opt->no_io_uring &&
        !(s->uring = wsl_uring_new(WSL_BATCH_WRITES, WSL_BATCH_BYTES, wsl_conn_sent)))
        wsl_log(WSL_LOG_DEBUG, "io_uring is not available (%s): one send(2) per write",
                strerror(errno));
    s->handshake_ms = timeout_ms(opt->handshake_timeout);
    s->idle_ms = timeout_ms(opt->idle_timeout);
    s->keepalive_ms = s->idle_ms ? s->idle_ms : s->handshake_ms;
    s->request_ms = timeout_ms(opt->request_timeout);
    s->max_conns = opt->max_connections ? opt->max_connections : default_max_conns();

    uv_prepare_init(loop, &s->flush_prep);
    uv_timer_init(loop, &s->sweep);
    uv_timer_init(loop, &s->accept_pause);
    uv_timer_init(loop, &s->shutdown_timer);
    s->flush_prep.data = s;
    s->sweep.data = s->accept_pause.data = s->shutdown_timer.data = s;
    uv_prepare_start(&s->flush_prep, on_prepare);

    /* Sweep often enough that the shortest timeout fires within an eighth of itself. */
    double shortest = WSL_CLOSE_TIMEOUT_MS / 1000.0;
    if (opt->handshake_timeout > 0 && opt->handshake_timeout < shortest)
        shortest = opt->handshake_timeout;
    if (opt->idle_timeout > 0 && opt->idle_timeout < shortest) shortest = opt->idle_timeout;
    if (opt->request_timeout > 0 && opt->request_timeout < shortest)
        shortest = opt->request_timeout;
    uint64_t tick = (uint64_t)(shortest * 1000 / 8);
    if (tick < 10) tick = 10;
    if (tick > 250) tick = 250;
    s->sweep_ms = tick;
    uv_timer_start(&s->sweep, on_sweep, tick, tick);
    uv_unref((uv_handle_t *)&s->sweep);
    return 0;
}

void wsl_server_set_events(wsl_server *s, const wsl_conn_events *events, void *ud)
{
    s->events = events;
    s->events_ud = ud;
}

/* Bind and listen on one address of the options. */
static int listen_one(wsl_server *s, const wsl_listen_opt *o, wsl_listener *l)
{
    int fd = wsl_listen_tcp(o->host, o->port, 1024, s->opt->workers > 1, "listen on", l->addr,
                            sizeof l->addr);
    if (fd < 0) return fd;
    l->srv = s;
    l->fd = fd;
    l->tls = o->tls;
    uv_poll_init(s->loop, &l->poll, fd);
    l->poll.data = l;
    uv_poll_start(&l->poll, UV_READABLE, on_listen);
    return 0;
}

int wsl_server_listen(wsl_server *s)
{
    for (size_t i = 0; i < s->opt->nlisten; i++) {
        int r = listen_one(s, &s->opt->listen[i], &s->listeners[i]);
        if (r != 0) return r;
        s->nlisteners++;
    }
    snprintf(s->addr, sizeof s->addr, "%s", s->listeners[0].addr);
    s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return 0;
}

void wsl_server_set_tls(wsl_server *s, wsl_tls_ctx *ctx)
{
    wsl_tls_ctx_free(s->tls);
    s->tls = ctx;
}

const char *wsl_server_addresses(const wsl_server *s, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < s->nlisteners && n < cap; i++) {
        const wsl_listener *l = &s->listeners[i];
        int w =
            snprintf(buf + n, cap - n, "%s%s%s", i ? ", " : "", l->addr, l->tls ? " (TLS)" : "");
        if (w < 0) break;
        n += (size_t)w;
    }
    return buf;
}

static void on_shutdown_timeout(uv_timer_t *t)
{
    wsl_server *s = t->data;
    wsl_conn *c;
    for (int i = WSL_LIST_HANDSHAKE; i < WSL_LIST_COUNT; i++)
        while ((c = list_head(s, i)))
            wsl_conn_destroy(c);
}

/* Every connection is gone after a shutdown: release the loop. */
static void finish(wsl_server *s)
{
    wsl_server_leave(s);
    uv_close((uv_handle_t *)&s->flush_prep, NULL);
    uv_close((uv_handle_t *)&s->sweep, NULL);
    uv_close((uv_handle_t *)&s->accept_pause, NULL);
    uv_close((uv_handle_t *)&s->shutdown_timer, NULL);
    if (s->on_stopped) s->on_stopped(s);
}

void wsl_server_conn_gone(wsl_server *s)
{
    s->nconns--;
    if (s->stopping && s->nconns == 0) finish(s);
}

void wsl_server_shutdown(wsl_server *s)
{
    if (s->stopping) return;
    s->stopping = true;
    for (size_t i = 0; i < s->nlisteners; i++) {
        wsl_listener *l = &s->listeners[i];
        if (l->fd < 0) continue;
        uv_close((uv_handle_t *)&l->poll, NULL);
        close(l->fd);
        l->fd = -1;
    }
    uv_timer_stop(&s->accept_pause);
    s->nconns++; /* hold finish() back until every connection below is dealt with */
    wsl_conn *c;
    while ((c = list_head(s, WSL_LIST_HANDSHAKE)))
        wsl_conn_destroy(c);
    /* Plain HTTP between requests goes too; a request being read or answered has until the
     * shutdown timeout, and its answer closes the connection. */
    while ((c = list_head(s, WSL_LIST_KEEPALIVE)))
        wsl_conn_destroy(c);
    /* Every connection leaves the open state before any close handler runs: a handler that
     * tells the others someone left reaches nobody, instead of n handlers sending n frames
     * each. */
    static const char reason[] = "server shutting down";
    while ((c = list_head(s, WSL_LIST_OPEN)))
        wsl_conn_close_begin(c, 1001, reason, sizeof reason - 1);
    wsl_list *n, *next;
    wsl_list_each_safe(n, next, &s->lists[WSL_LIST_CLOSING].head)
        wsl_conn_close_finish(wsl_list_entry(n, wsl_conn, link), reason, sizeof reason - 1);
    uv_timer_start(&s->shutdown_timer, on_shutdown_timeout, WSL_SHUTDOWN_TIMEOUT_MS, 0);
    wsl_server_conn_gone(s);
}

void wsl_server_free(wsl_server *s)
{
    flush_all(s); /* frees the connections that died after the last flush (wsl_conn_flush) */
    if (s->has_files) wsl_static_close(&s->files);
    if (s->spare_fd >= 0) close(s->spare_fd);
    wsl_tls_ctx_free(s->tls);
    s->tls = NULL;
    wsl_topics_free(s->topics);
    wsl_deflate_free(s->deflate);
    free(s->by_id);
    free(s->rbuf);
    free(s->cork_buf);
    wsl_uring_free(s->uring);
}
