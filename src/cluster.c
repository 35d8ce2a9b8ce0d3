/* The Redis link of a cluster node (see cluster.h): three hiredis async connections attached to
 * the server's libuv loop, each with its own reconnect state machine, plus the node-number
 * claim, the topic set that is subscribed again after every reconnect, and the bounded queues.
 *
 * hiredis 0.14 rules this file lives by: a context that failed to connect is freed by hiredis
 * right after the connect callback; a context that was connected reports its end through the
 * disconnect callback, after running every pending reply callback with a NULL reply; and
 * redisAsyncFree called inside a reply callback only marks the context, which hiredis frees
 * when the callback returns. Its libuv adapter is not used: it drops the errors libuv reports
 * (a refused connect, a reset connection arrive as POLLERR, which libuv passes as UV_EBADF), so
 * hiredis would never notice them; the hooks below hand those to hiredis instead. */
#include "cluster.h"

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "log.h"
#include "topic.h"
#include "utf8.h"

#define CMD_OVERHEAD 64  /* bytes of hiredis bookkeeping counted per queued command */
#define MAX_ADDRS    4   /* resolved addresses tried in turn before backing off */
#define MAX_NODES    8   /* node numbers remembered (and their channels kept) */
#define SUB_BATCH    256 /* channels per SUBSCRIBE when subscribing everything again */
#define SCRATCH_KEEP (1u << 20)

enum { SUB, PUB, CMD, NLINKS };
static const char *const link_name[NLINKS] = {"sub", "pub", "cmd"};

typedef enum {
    L_IDLE,        /* no context: waiting for the retry timer */
    L_RESOLVING,   /* uv_getaddrinfo running */
    L_CONNECTING,  /* context created, TCP/Unix connect in progress */
    L_HANDSHAKE,   /* AUTH / SELECT / PING sent */
    L_SUBSCRIBING, /* sub only: SUBSCRIBE sent, waiting for the broadcast channel's answer */
    L_READY,
} link_state;

/* One of the three connections; embedded in wsl_cluster. */
typedef struct rlink {
    wsl_cluster *c;
    int role;
    link_state state;
    redisAsyncContext *ac; /* owned by hiredis once created; NULL when there is none */
    uv_timer_t timer;      /* the retry delay while IDLE, the connect deadline after */
    uv_getaddrinfo_t gai;
    bool gai_pending;
    char addrs[MAX_ADDRS][INET6_ADDRSTRLEN]; /* the host's addresses, from the last resolve */
    int naddrs, addr_i;
    uint32_t backoff; /* ms: the next retry delay's upper bound */
    size_t queued;    /* bytes counted against max_queue */
    bool was_ready;   /* for the reconnect counter */
    bool aborting;    /* we freed the context: why holds the reason */
    bool reset_soon;  /* start over from the timer (a SUBSCRIBE could not be queued) */
    char why[192];
} rlink;

/* Owned by the server, which creates it with wsl_cluster_new and ends it with
 * wsl_cluster_close; freed by this module once every handle and context is gone. */
struct wsl_cluster {
    uv_loop_t *loop;
    wsl_cluster_events ev;
    void *ud;
    wsl_cluster_addr addr;
    char addr_str[300];
    bool host_literal; /* an IP address: no resolving */
    char *prefix;
    size_t prefix_len;
    char *broadcast; /* "<prefix>:broadcast" */
    size_t broadcast_len;
    size_t max_queue;
    rlink links[NLINKS];

    uint64_t instance; /* random, in the envelope's origin */
    uint64_t rng;      /* xorshift state for back-off jitter */
    uint32_t nodes[MAX_NODES];
    int nnodes; /* nodes[nnodes - 1] is the current number */
    bool claimed, claiming;
    char claim_value[160];
    uv_timer_t claim_timer;

    uv_timer_t drop_timer; /* the rate limit of the "dropped" warning */
    bool drop_window;
    uint64_t win_down, win_full, win_refused;
    char refused_msg[128];

    wsl_topics *topics; /* the topics to subscribe; the cluster is their one member */
    wsl_sublist topic_list;

    bool up, ever_up, down_logged;
    char config_err[192]; /* the last AUTH/SELECT/claim error logged, not to repeat it */
    char *scratch;        /* one formatted PUBLISH */
    size_t scratch_cap;
    wsl_cluster_counters st;

    bool closing;
    int hold;         /* > 0 while wsl_cluster_close runs: no freeing under its feet */
    int open_handles; /* our timers not closed yet */
};

/* A command from wsl_cluster_command in flight. */
typedef struct pending_cmd {
    wsl_cluster_reply_fn cb;
    void *arg;
    size_t cost;
} pending_cmd;

static void link_connect(rlink *l);
static void update_state(wsl_cluster *c);
static void maybe_free(wsl_cluster *c);
static void claim_start(wsl_cluster *c);
static void on_claim_timer(uv_timer_t *t);
static void on_sub_reply(redisAsyncContext *ac, void *r, void *priv);

/* --- hiredis on libuv ---------------------------------------------------------------------- */

/* The watch of one context's socket: created when the context is attached, freed in the close
 * callback of its handle after hiredis asked for cleanup (hiredis closes the socket right after
 * that, and never touches this again). */
typedef struct watch {
    redisAsyncContext *ac; /* NULL once hiredis has cleaned up */
    uv_poll_t poll;
    int events;
} watch;

static void on_poll(uv_poll_t *h, int status, int events)
{
    watch *w = h->data;
    /* On an error (UV_EBADF for POLLERR) libuv has stopped the handle: let hiredis look at the
     * socket for what it was waiting for; it reads or checks the error and ends the context. */
    int ev = status < 0 ? w->events : events;
    if (w->ac && (ev & UV_READABLE)) redisAsyncHandleRead(w->ac);
    if (w->ac && (ev & UV_WRITABLE)) redisAsyncHandleWrite(w->ac);
}

static void watch_set(watch *w, int events)
{
    w->events = events;
    if (events)
        uv_poll_start(&w->poll, events, on_poll);
    else
        uv_poll_stop(&w->poll);
}

static void ev_add_read(void *p)
{
    watch *w = p;
    watch_set(w, w->events | UV_READABLE);
}

static void ev_del_read(void *p)
{
    watch *w = p;
    watch_set(w, w->events & ~UV_READABLE);
}

static void ev_add_write(void *p)
{
    watch *w = p;
    watch_set(w, w->events | UV_WRITABLE);
}

static void ev_del_write(void *p)
{
    watch *w = p;
    watch_set(w, w->events & ~UV_WRITABLE);
}

static void on_watch_closed(uv_handle_t *h)
{
    free(h->data);
}

static void ev_cleanup(void *p)
{
    watch *w = p;
    w->ac = NULL;
    uv_close((uv_handle_t *)&w->poll, on_watch_closed);
}

static int attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    watch *w = calloc(1, sizeof *w);
    if (!w) return WSL_ENOMEM;
    int r = uv_poll_init(loop, &w->poll, ac->c.fd);
    if (r < 0) {
        free(w);
        return r;
    }
    w->ac = ac;
    w->poll.data = w;
    ac->ev.data = w;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    return 0;
}

/* --- small helpers ------------------------------------------------------------------------ */

static uint64_t random64(void)
{
    uint64_t v;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) == (ssize_t)sizeof v) return v;
    /* No entropy yet (early boot): still different per process and per start. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    v = (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 30 ^ (uint64_t)getpid() << 48;
    return v ? v : 1;
}

static uint64_t next_rand(wsl_cluster *c)
{
    uint64_t x = c->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return c->rng = x;
}

static bool node_used(const wsl_cluster *c, uint32_t n)
{
    for (int i = 0; i < c->nnodes; i++)
        if (c->nodes[i] == n) return true;
    return false;
}

static uint32_t draw_node(wsl_cluster *c)
{
    for (;;) {
        uint32_t n = (uint32_t)(random64() % WSL_CLUSTER_NODE_MAX) + 1;
        if (!node_used(c, n)) return n;
    }
}

static uint32_t current_node(const wsl_cluster *c)
{
    return c->nodes[c->nnodes - 1];
}

static bool link_ready(const rlink *l)
{
    /* hiredis runs the pending callbacks of a dying context before telling us: a command sent
     * from one of them would be refused anyway, so the link counts as down already. */
    return l->state == L_READY && l->ac &&
           !(l->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING));
}

static bool sub_subscribed(const rlink *l)
{
    return (l->state == L_SUBSCRIBING || l->state == L_READY) && l->ac &&
           !(l->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING));
}

static size_t node_channel(const wsl_cluster *c, uint32_t node, char *out, size_t n)
{
    int w = snprintf(out, n, "%s:node:%u", c->prefix, node);
    return w < 0 ? 0 : (size_t)w;
}

/* "<prefix>:topic:<name>" in a fresh allocation. */
static char *topic_channel(const wsl_cluster *c, const char *name, size_t len, size_t *out_len)
{
    size_t n = c->prefix_len + 7 + len;
    char *ch = malloc(n + 1);
    if (!ch) return NULL;
    memcpy(ch, c->prefix, c->prefix_len);
    memcpy(ch + c->prefix_len, ":topic:", 7);
    if (len) memcpy(ch + c->prefix_len + 7, name, len);
    ch[n] = 0;
    *out_len = n;
    return ch;
}

/* Logs an error from Redis about our configuration (AUTH, SELECT, the claim) once, not at
 * every retry. */
static void config_error(wsl_cluster *c, const char *what, const char *msg)
{
    char line[sizeof c->config_err];
    snprintf(line, sizeof line, "%s: %s", what, msg);
    if (strcmp(line, c->config_err) == 0) return;
    snprintf(c->config_err, sizeof c->config_err, "%s", line);
    wsl_error("redis: %s refused by %s: %s", what, c->addr_str, msg);
}

/* --- dropped publishes: counted, reported at most once per WSL_CLUSTER_DROP_LOG_MS ----------- */

enum { DROP_DOWN, DROP_FULL, DROP_REFUSED };

static void drop_report(wsl_cluster *c)
{
    uint64_t n = c->win_down + c->win_full + c->win_refused;
    if (n)
        wsl_warn("redis: dropped %llu publishes to other nodes in the last %d s (%llu link down, "
                 "%llu queue full, %llu refused by Redis%s%s)",
                 (unsigned long long)n, WSL_CLUSTER_DROP_LOG_MS / 1000,
                 (unsigned long long)c->win_down, (unsigned long long)c->win_full,
                 (unsigned long long)c->win_refused, c->win_refused ? ": " : "",
                 c->win_refused ? c->refused_msg : "");
    c->win_down = c->win_full = c->win_refused = 0;
}

static void on_drop_timer(uv_timer_t *t)
{
    wsl_cluster *c = t->data;
    if (c->win_down + c->win_full + c->win_refused == 0) {
        c->drop_window = false; /* quiet for a whole interval: the next drop logs at once */
        return;
    }
    drop_report(c);
    uv_timer_start(&c->drop_timer, on_drop_timer, WSL_CLUSTER_DROP_LOG_MS, 0);
}

static void drop(wsl_cluster *c, int why, const char *msg)
{
    c->st.dropped++;
    if (why == DROP_DOWN) {
        c->st.dropped_down++;
        c->win_down++;
    } else if (why == DROP_FULL) {
        c->st.dropped_full++;
        c->win_full++;
    } else {
        c->st.dropped_refused++;
        c->win_refused++;
        snprintf(c->refused_msg, sizeof c->refused_msg, "%s", msg ? msg : "");
    }
    if (c->drop_window || c->closing) return;
    c->drop_window = true;
    wsl_warn("redis: dropped a publish to other nodes (%s%s); further drops are counted and "
             "reported every %d s at most",
             why == DROP_DOWN   ? "the link is down"
             : why == DROP_FULL ? "the queue towards Redis is full"
                                : "refused by Redis: ",
             why == DROP_REFUSED && msg ? msg : "", WSL_CLUSTER_DROP_LOG_MS / 1000);
    c->win_down = c->win_full = c->win_refused = 0;
    uv_timer_start(&c->drop_timer, on_drop_timer, WSL_CLUSTER_DROP_LOG_MS, 0);
}

/* --- connection life cycle ---------------------------------------------------------------- */

static void note_failure(wsl_cluster *c, rlink *l, const char *why)
{
    if (!c->down_logged) {
        c->down_logged = true;
        if (c->ever_up)
            wsl_warn("redis: lost the link to %s (%s: %s); publishing to local subscribers only "
                     "and reconnecting",
                     c->addr_str, link_name[l->role], why);
        else
            wsl_warn("redis: cannot reach %s (%s: %s); serving local rooms and reconnecting "
                     "(at most every %d s)",
                     c->addr_str, link_name[l->role], why, WSL_CLUSTER_RETRY_MAX_MS / 1000);
    } else {
        wsl_debug("redis: %s link to %s: %s", link_name[l->role], c->addr_str, why);
    }
}

static void on_link_timer(uv_timer_t *t);

/* The link has no context any more (it never had one, hiredis is freeing it, or we freed it):
 * log, schedule the next attempt, and report the state. Ends with the upcall. */
static void link_lost(rlink *l, const char *why)
{
    wsl_cluster *c = l->c;
    link_state was = l->state;
    l->ac = NULL;
    l->state = L_IDLE;
    l->queued = 0;
    l->aborting = false;
    l->reset_soon = false;
    if (c->closing) {
        maybe_free(c);
        return;
    }
    uv_timer_stop(&l->timer);
    c->st.failures++;
    note_failure(c, l, why);

    uint32_t delay;
    if (was <= L_CONNECTING && l->addr_i + 1 < l->naddrs) {
        l->addr_i++; /* the next address of the same name, at once */
        delay = 0;
    } else {
        l->naddrs = l->addr_i = 0; /* resolve again next time */
        uint32_t b = l->backoff;
        delay = b / 2 + (uint32_t)(next_rand(c) % (b / 2 + 1));
        l->backoff = b * 2 > WSL_CLUSTER_RETRY_MAX_MS ? WSL_CLUSTER_RETRY_MAX_MS : b * 2;
    }
    uv_timer_start(&l->timer, on_link_timer, delay, 0);
    if (l->role == PUB) c->claimed = false; /* Redis may have restarted without our key */
    update_state(c);
}

/* Ends the link's context from our side (deadline, refused handshake, close). */
static void link_abort(rlink *l, const char *why)
{
    redisAsyncContext *ac = l->ac;
    if (!ac || l->aborting) return;
    l->aborting = true;
    snprintf(l->why, sizeof l->why, "%s", why);
    if (ac->c.flags & REDIS_IN_CALLBACK) {
        /* hiredis frees it when our callback returns, then calls on_disconnect. */
        redisAsyncFree(ac);
        return;
    }
    bool connected = ac->c.flags & REDIS_CONNECTED;
    redisAsyncFree(ac); /* connected: on_disconnect has run link_lost by now */
    if (!connected) link_lost(l, l->why);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    rlink *l = ac->data;
    char why[sizeof l->why];
    if (l->aborting)
        snprintf(why, sizeof why, "%s", l->why);
    else if (status != REDIS_OK && ac->errstr && ac->errstr[0])
        snprintf(why, sizeof why, "%s", ac->errstr);
    else
        snprintf(why, sizeof why, "connection closed");
    link_lost(l, why);
}

static void set_keepalive(int fd)
{
    /* A Redis host that vanishes without a FIN is noticed in about 30 s, not hours. */
    int on = 1, idle = 15, intvl = 5, cnt = 3;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
}

static void on_hs_auth(redisAsyncContext *ac, void *r, void *priv);
static void on_hs_select(redisAsyncContext *ac, void *r, void *priv);
static void on_hs_ping(redisAsyncContext *ac, void *r, void *priv);

static void on_connect(const redisAsyncContext *cac, int status)
{
    rlink *l = cac->data;
    wsl_cluster *c = l->c;
    if (status != REDIS_OK) {
        /* hiredis frees the context when we return. */
        char why[sizeof l->why];
        snprintf(why, sizeof why, "%s", cac->errstr ? cac->errstr : "connect failed");
        link_lost(l, why);
        return;
    }
    redisAsyncContext *ac = l->ac;
    if (!c->addr.unix_socket) set_keepalive(ac->c.fd);
    l->state = L_HANDSHAKE;
    /* Nothing here may free the context (hiredis goes on using it after we return): a command
     * that cannot be queued leaves the handshake to the deadline. */
    const wsl_cluster_addr *a = &c->addr;
    if (a->password[0]) {
        const char *argv[3] = {"AUTH", a->user, a->password};
        size_t lens[3] = {4, strlen(a->user), strlen(a->password)};
        if (a->user[0])
            redisAsyncCommandArgv(ac, on_hs_auth, l, 3, argv, lens);
        else {
            argv[1] = a->password;
            lens[1] = lens[2];
            redisAsyncCommandArgv(ac, on_hs_auth, l, 2, argv, lens);
        }
    }
    if (a->db) redisAsyncCommand(ac, on_hs_select, l, "SELECT %d", a->db);
    redisAsyncCommand(ac, on_hs_ping, l, "PING");
}

static void start_context(rlink *l, redisAsyncContext *ac)
{
    wsl_cluster *c = l->c;
    char why[sizeof l->why];
    if (!ac) {
        link_lost(l, "out of memory");
        return;
    }
    if (ac->err) {
        snprintf(why, sizeof why, "%s", ac->errstr);
        redisAsyncFree(ac); /* never connected: no callbacks */
        link_lost(l, why);
        return;
    }
    ac->data = l;
    int r = attach(ac, c->loop);
    if (r < 0) {
        snprintf(why, sizeof why, "cannot watch the socket: %s", wsl_strerror(r));
        redisAsyncFree(ac);
        link_lost(l, why);
        return;
    }
    l->ac = ac;
    l->state = L_CONNECTING;
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    redisAsyncSetConnectCallback(ac, on_connect); /* after attaching: it arms the write watch */
    uv_timer_start(&l->timer, on_link_timer, WSL_CLUSTER_CONNECT_TIMEOUT, 0);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    rlink *l = req->data;
    wsl_cluster *c = l->c;
    l->gai_pending = false;
    l->naddrs = l->addr_i = 0;
    if (status == 0)
        for (struct addrinfo *ai = res; ai && l->naddrs < MAX_ADDRS; ai = ai->ai_next) {
            const void *a = ai->ai_family == AF_INET
                                ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                                : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
            if (inet_ntop(ai->ai_family, a, l->addrs[l->naddrs], INET6_ADDRSTRLEN)) l->naddrs++;
        }
    uv_freeaddrinfo(res);
    if (c->closing) {
        l->state = L_IDLE;
        maybe_free(c);
        return;
    }
    if (l->naddrs == 0) {
        char why[sizeof l->why];
        snprintf(why, sizeof why, "cannot resolve %.100s: %s", c->addr.host,
                 status ? uv_strerror(status) : "no address");
        l->state = L_IDLE;
        link_lost(l, why);
        return;
    }
    start_context(l, redisAsyncConnect(l->addrs[0], c->addr.port));
}

static void link_connect(rlink *l)
{
    wsl_cluster *c = l->c;
    const wsl_cluster_addr *a = &c->addr;
    if (a->unix_socket) {
        start_context(l, redisAsyncConnectUnix(a->path));
    } else if (c->host_literal) {
        start_context(l, redisAsyncConnect(a->host, a->port));
    } else if (l->naddrs > 0) {
        start_context(l, redisAsyncConnect(l->addrs[l->addr_i], a->port));
    } else {
        /* Resolving a name may block on DNS: in the thread pool, not on the loop. */
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        l->state = L_RESOLVING;
        int r = uv_getaddrinfo(c->loop, &l->gai, on_resolved, a->host, NULL, &hints);
        if (r < 0) {
            char why[sizeof l->why];
            snprintf(why, sizeof why, "cannot resolve %.100s: %s", a->host, uv_strerror(r));
            link_lost(l, why);
            return;
        }
        l->gai_pending = true;
    }
}

static void on_link_timer(uv_timer_t *t)
{
    rlink *l = t->data;
    if (l->reset_soon) {
        l->reset_soon = false;
        if (l->ac) link_abort(l, "out of memory");
        return;
    }
    if (l->state == L_IDLE)
        link_connect(l);
    else if (l->state != L_RESOLVING && l->state != L_READY)
        link_abort(l, "no answer in time");
}

/* --- handshake ---------------------------------------------------------------------------- */

/* AUTH and SELECT: an error is a configuration problem, logged once, and the attempt ends. */
static void hs_check(redisAsyncContext *ac, void *r, void *priv, const char *what)
{
    (void)ac;
    rlink *l = priv;
    redisReply *reply = r;
    if (!reply || l->c->closing || l->state != L_HANDSHAKE) return;
    if (reply->type == REDIS_REPLY_ERROR) {
        config_error(l->c, what, reply->str);
        link_abort(l, reply->str);
    }
}

static void on_hs_auth(redisAsyncContext *ac, void *r, void *priv)
{
    hs_check(ac, r, priv, "AUTH");
}

static void on_hs_select(redisAsyncContext *ac, void *r, void *priv)
{
    hs_check(ac, r, priv, "SELECT");
}

static void subscribe_all(wsl_cluster *c);

static void on_hs_ping(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    rlink *l = priv;
    wsl_cluster *c = l->c;
    redisReply *reply = r;
    if (!reply || c->closing || l->state != L_HANDSHAKE) return;
    if (reply->type == REDIS_REPLY_ERROR) {
        if (strncmp(reply->str, "NOAUTH", 6) == 0) config_error(c, "PING", reply->str);
        link_abort(l, reply->str);
        return;
    }
    l->backoff = WSL_CLUSTER_RETRY_MIN_MS;
    if (l->was_ready) c->st.reconnects++;
    l->was_ready = true;
    if (l->role == SUB) {
        l->state = L_SUBSCRIBING; /* the deadline runs on until the broadcast channel answers */
        subscribe_all(c);
        return;
    }
    uv_timer_stop(&l->timer);
    l->state = L_READY;
    if (l->role == PUB) {
        claim_start(c);
        uv_timer_start(&c->claim_timer, on_claim_timer, WSL_CLUSTER_NODE_REFRESH * 1000,
                       WSL_CLUSTER_NODE_REFRESH * 1000);
    }
    update_state(c);
}

/* --- subscriptions ------------------------------------------------------------------------ */

/* Out of memory while (un)subscribing: the subscriptions are no longer what the topic set says,
 * so start over on a fresh connection, which subscribes everything again. From the timer, so
 * that no event is reported from inside an API call. */
static void link_reset_soon(rlink *l)
{
    if (!l->ac || l->reset_soon) return;
    l->reset_soon = true;
    uv_timer_start(&l->timer, on_link_timer, 0, 0);
}

/* Sends SUBSCRIBE or UNSUBSCRIBE for n channels. */
static void sub_command(wsl_cluster *c, const char *verb, int n, const char **chans,
                        const size_t *lens)
{
    rlink *l = &c->links[SUB];
    const char **argv = malloc(sizeof *argv * (size_t)(n + 1));
    size_t *alen = malloc(sizeof *alen * (size_t)(n + 1));
    if (argv && alen) {
        argv[0] = verb;
        alen[0] = strlen(verb);
        memcpy(argv + 1, chans, sizeof *argv * (size_t)n);
        memcpy(alen + 1, lens, sizeof *alen * (size_t)n);
        /* UNSUBSCRIBE answers through the channels' SUBSCRIBE callbacks: none of its own. */
        bool sub = verb[0] == 'S';
        if (redisAsyncCommandArgv(l->ac, sub ? on_sub_reply : NULL, sub ? l : NULL, n + 1, argv,
                                  alen) == REDIS_OK) {
            free(argv);
            free(alen);
            return;
        }
    }
    free(argv);
    free(alen);
    link_reset_soon(l);
}

static void subscribe_one(wsl_cluster *c, const char *verb, const char *ch, size_t len)
{
    sub_command(c, verb, 1, &ch, &len);
}

/* After (re)connecting: every node channel, every topic, then broadcast, whose confirmation
 * marks the link ready (Redis answers a connection's commands in order). */
static void subscribe_all(wsl_cluster *c)
{
    const char *chans[SUB_BATCH];
    size_t lens[SUB_BATCH];
    char nodebuf[MAX_NODES][WSL_CLUSTER_PREFIX_MAX + 16];
    char *owned[SUB_BATCH];
    int n = 0, nowned = 0;

    for (int i = 0; i < c->nnodes; i++) {
        lens[n] = node_channel(c, c->nodes[i], nodebuf[i], sizeof nodebuf[i]);
        chans[n++] = nodebuf[i];
    }
    for (wsl_sub *s = c->topic_list.head; s; s = wsl_sub_next(s)) {
        size_t tl;
        const char *t = wsl_sub_topic(s, &tl);
        char *ch = topic_channel(c, t, tl, &lens[n]);
        if (!ch) {
            for (int i = 0; i < nowned; i++)
                free(owned[i]);
            link_reset_soon(&c->links[SUB]);
            return;
        }
        owned[nowned++] = ch;
        chans[n++] = ch;
        if (n == SUB_BATCH) {
            sub_command(c, "SUBSCRIBE", n, chans, lens);
            for (int i = 0; i < nowned; i++)
                free(owned[i]);
            n = nowned = 0;
        }
    }
    chans[n] = c->broadcast; /* n < SUB_BATCH: a full batch was sent above */
    lens[n++] = c->broadcast_len;
    sub_command(c, "SUBSCRIBE", n, chans, lens);
    for (int i = 0; i < nowned; i++)
        free(owned[i]);
}

int wsl_cluster_subscribe(wsl_cluster *c, const char *topic, size_t len)
{
    if (c->closing) return WSL_ECLOSED;
    int r = wsl_topics_subscribe(c->topics, &c->topic_list, c, topic ? topic : "", len);
    if (r < 0) return WSL_ENOMEM;
    if (r == 0 || !sub_subscribed(&c->links[SUB])) return 0;
    size_t cl;
    char *ch = topic_channel(c, topic, len, &cl);
    if (!ch) {
        link_reset_soon(&c->links[SUB]); /* kept in the set: the next connection subscribes it */
        return 0;
    }
    subscribe_one(c, "SUBSCRIBE", ch, cl);
    free(ch);
    return 0;
}

int wsl_cluster_unsubscribe(wsl_cluster *c, const char *topic, size_t len)
{
    if (c->closing) return WSL_ECLOSED;
    if (wsl_topics_unsubscribe(c->topics, &c->topic_list, topic ? topic : "", len) == 0) return 0;
    if (!sub_subscribed(&c->links[SUB])) return 0;
    size_t cl;
    char *ch = topic_channel(c, topic, len, &cl);
    if (!ch) return 0; /* messages for it are filtered out anyway */
    subscribe_one(c, "UNSUBSCRIBE", ch, cl);
    free(ch);
    return 0;
}

static bool topic_held(const wsl_cluster *c, const char *name, size_t len)
{
    size_t n;
    wsl_topics_members(c->topics, name, len, &n);
    return n > 0;
}

static void deliver(wsl_cluster *c, const char *ch, size_t chlen, const char *p, size_t n)
{
    wsl_cluster_msg m = {0};
    uint32_t node = 0;
    switch (wsl_channel_parse(c->prefix, c->prefix_len, ch, chlen, &m.topic, &m.topic_len, &node)) {
    case WSL_CHAN_TOPIC:
        /* Unsubscribed already: Redis may still have sent a few. */
        if (!topic_held(c, m.topic, m.topic_len)) return;
        m.kind = WSL_CLUSTER_TOPIC;
        break;
    case WSL_CHAN_BROADCAST:
        m.kind = WSL_CLUSTER_BROADCAST;
        m.topic = NULL;
        break;
    case WSL_CHAN_NODE:
        if (!node_used(c, node)) return;
        m.kind = WSL_CLUSTER_DIRECT;
        break;
    default:
        return;
    }
    wsl_envelope e;
    int r = wsl_envelope_decode(p, n, &e);
    if (r < 0 || (r == 0 && m.kind == WSL_CLUSTER_DIRECT) ||
        (r == 1 && m.kind == WSL_CLUSTER_DIRECT && e.target == 0)) {
        c->st.invalid++;
        wsl_debug("redis: dropped a malformed message on %.*s (%zu bytes)", (int)chlen, ch, n);
        return;
    }
    if (r == 1) {
        if (e.origin == c->instance) {
            c->st.own++; /* delivered locally when it was published */
            return;
        }
        m.opcode = e.opcode;
        m.except = e.except;
        m.target = m.kind == WSL_CLUSTER_DIRECT ? e.target : 0;
        m.data = p + WSL_ENVELOPE_SIZE;
        m.len = n - WSL_ENVELOPE_SIZE;
    } else {
        m.external = true;
        m.opcode = wsl_utf8_valid(p, n) ? 1 : 2;
        m.data = p;
        m.len = n;
    }
    c->st.received++;
    if (c->ev.message) c->ev.message(c->ud, &m);
}

static void on_sub_reply(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    rlink *l = priv;
    wsl_cluster *c = l->c;
    redisReply *reply = r;
    if (!reply || c->closing || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3) return;
    redisReply *kind = reply->element[0], *ch = reply->element[1], *data = reply->element[2];
    if (kind->type != REDIS_REPLY_STRING || ch->type != REDIS_REPLY_STRING) return;
    if (kind->len == 7 && memcmp(kind->str, "message", 7) == 0) {
        if (data->type == REDIS_REPLY_STRING) deliver(c, ch->str, ch->len, data->str, data->len);
    } else if (kind->len == 9 && memcmp(kind->str, "subscribe", 9) == 0) {
        if (l->state == L_SUBSCRIBING && ch->len == c->broadcast_len &&
            memcmp(ch->str, c->broadcast, ch->len) == 0) {
            uv_timer_stop(&l->timer);
            l->state = L_READY;
            update_state(c);
        }
    }
}

/* --- the node number ---------------------------------------------------------------------- */

static void on_claim_set(redisAsyncContext *ac, void *r, void *priv);

static void claim_key(const wsl_cluster *c, char *out, size_t n)
{
    node_channel(c, current_node(c), out, n); /* the key is spelled like the channel */
}

static void claim_send_set(wsl_cluster *c)
{
    char key[WSL_CLUSTER_PREFIX_MAX + 16];
    claim_key(c, key, sizeof key);
    if (redisAsyncCommand(c->links[PUB].ac, on_claim_set, c, "SET %s %s NX EX %d", key,
                          c->claim_value, WSL_CLUSTER_NODE_TTL) != REDIS_OK)
        c->claiming = false;
}

static void claim_start(wsl_cluster *c)
{
    if (c->closing || c->claiming || !link_ready(&c->links[PUB])) return;
    c->claiming = true;
    claim_send_set(c);
}

static void on_claim_timer(uv_timer_t *t)
{
    claim_start(t->data);
}

static void on_claim_done(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    (void)r;
    wsl_cluster *c = priv;
    c->claiming = false;
}

static void node_conflict(wsl_cluster *c, const char *holder)
{
    uint32_t old = current_node(c), now = draw_node(c);
    if (c->nnodes == MAX_NODES) {
        /* Forget the oldest number: its connections are long gone or very unlucky. */
        char ch[WSL_CLUSTER_PREFIX_MAX + 16];
        size_t n = node_channel(c, c->nodes[0], ch, sizeof ch);
        memmove(c->nodes, c->nodes + 1, sizeof *c->nodes * (MAX_NODES - 1));
        c->nnodes--;
        if (sub_subscribed(&c->links[SUB])) subscribe_one(c, "UNSUBSCRIBE", ch, n);
    }
    c->nodes[c->nnodes++] = now;
    c->claimed = false;
    wsl_error("redis: node number %u is held by another live node (%s); new connections get "
              "ids with node number %u",
              old, holder, now);
    if (sub_subscribed(&c->links[SUB])) {
        char ch[WSL_CLUSTER_PREFIX_MAX + 16];
        size_t n = node_channel(c, now, ch, sizeof ch);
        subscribe_one(c, "SUBSCRIBE", ch, n);
    }
    claim_send_set(c); /* still claiming */
    if (c->ev.node) c->ev.node(c->ud, old, now);
}

static void on_claim_get(redisAsyncContext *ac, void *r, void *priv)
{
    wsl_cluster *c = priv;
    redisReply *reply = r;
    if (!reply || c->closing) {
        c->claiming = false;
        return;
    }
    if (reply->type == REDIS_REPLY_NIL) {
        claim_send_set(c); /* expired in between: try again */
    } else if (reply->type == REDIS_REPLY_STRING && strcmp(reply->str, c->claim_value) == 0) {
        char key[WSL_CLUSTER_PREFIX_MAX + 16];
        claim_key(c, key, sizeof key);
        c->claimed = true;
        if (redisAsyncCommand(ac, on_claim_done, c, "EXPIRE %s %d", key, WSL_CLUSTER_NODE_TTL) !=
            REDIS_OK)
            c->claiming = false;
    } else if (reply->type == REDIS_REPLY_STRING) {
        node_conflict(c, reply->str);
    } else {
        config_error(c, "the node claim (GET)",
                     reply->type == REDIS_REPLY_ERROR ? reply->str : "?");
        c->claiming = false;
    }
}

static void on_claim_set(redisAsyncContext *ac, void *r, void *priv)
{
    wsl_cluster *c = priv;
    redisReply *reply = r;
    if (!reply || c->closing) {
        c->claiming = false;
        return;
    }
    if (reply->type == REDIS_REPLY_STATUS) {
        if (!c->claimed) wsl_debug("redis: claimed node number %u", current_node(c));
        c->claimed = true;
        c->claiming = false;
    } else if (reply->type == REDIS_REPLY_NIL) {
        /* Someone holds the key: ourselves from before a reconnect, or another node. */
        char key[WSL_CLUSTER_PREFIX_MAX + 16];
        claim_key(c, key, sizeof key);
        if (redisAsyncCommand(ac, on_claim_get, c, "GET %s", key) != REDIS_OK) c->claiming = false;
    } else {
        config_error(c, "the node claim (SET)",
                     reply->type == REDIS_REPLY_ERROR ? reply->str : "?");
        c->claiming = false;
    }
}

/* --- publishing and commands -------------------------------------------------------------- */

static void on_pub_reply(redisAsyncContext *ac, void *r, void *priv)
{
    rlink *l = ac->data;
    wsl_cluster *c = l->c;
    size_t cost = (size_t)(uintptr_t)priv;
    redisReply *reply = r;
    l->queued = l->queued > cost ? l->queued - cost : 0;
    if (!reply) return; /* lost in flight: it may or may not have gone out */
    if (reply->type == REDIS_REPLY_ERROR)
        drop(c, DROP_REFUSED, reply->str);
    else
        c->st.acked++;
}

static size_t digits(size_t v)
{
    size_t n = 1;
    while (v >= 10)
        v /= 10, n++;
    return n;
}

int wsl_cluster_publish(wsl_cluster *c, const wsl_cluster_msg *m)
{
    if (c->closing) return WSL_ECLOSED;
    if (m->kind < WSL_CLUSTER_TOPIC || m->kind > WSL_CLUSTER_DIRECT ||
        (m->opcode != 1 && m->opcode != 2) || (m->len && !m->data) ||
        (m->kind == WSL_CLUSTER_TOPIC && !m->topic) ||
        (m->kind == WSL_CLUSTER_DIRECT && wsl_cluster_id_node(m->target) == 0))
        return -EINVAL;
    rlink *l = &c->links[PUB];
    if (!link_ready(l)) {
        drop(c, DROP_DOWN, NULL);
        return WSL_EDOWN;
    }

    /* The PUBLISH is formatted here, envelope and payload as one argument, so the payload is
     * copied once into this buffer and once by hiredis. */
    char chbuf[WSL_CLUSTER_PREFIX_MAX + 32];
    const char *ch = chbuf;
    size_t chlen, tlen = 0;
    if (m->kind == WSL_CLUSTER_BROADCAST) {
        ch = c->broadcast;
        chlen = c->broadcast_len;
    } else if (m->kind == WSL_CLUSTER_DIRECT) {
        chlen = node_channel(c, wsl_cluster_id_node(m->target), chbuf, sizeof chbuf);
    } else {
        tlen = m->topic_len;
        chlen = c->prefix_len + 7 + tlen;
    }
    size_t arg = WSL_ENVELOPE_SIZE + m->len;
    size_t total = 4 + 13 + 1 + digits(chlen) + 2 + chlen + 2 + 1 + digits(arg) + 2 + arg + 2;
    size_t cost = total + CMD_OVERHEAD;
    if (l->queued && l->queued + cost > c->max_queue) {
        drop(c, DROP_FULL, NULL);
        return -ENOBUFS;
    }
    if (total > c->scratch_cap) {
        char *nb = malloc(total);
        if (!nb) return WSL_ENOMEM;
        free(c->scratch);
        c->scratch = nb;
        c->scratch_cap = total;
    }
    char *o = c->scratch;
    o += sprintf(o, "*3\r\n$7\r\nPUBLISH\r\n$%zu\r\n", chlen);
    if (m->kind == WSL_CLUSTER_TOPIC) {
        memcpy(o, c->prefix, c->prefix_len);
        memcpy(o + c->prefix_len, ":topic:", 7);
        if (tlen) memcpy(o + c->prefix_len + 7, m->topic, tlen);
    } else {
        memcpy(o, ch, chlen);
    }
    o += chlen;
    o += sprintf(o, "\r\n$%zu\r\n", arg);
    wsl_envelope e = {.opcode = (uint8_t)m->opcode,
                      .origin = c->instance,
                      .except = m->except,
                      .target = m->kind == WSL_CLUSTER_DIRECT ? m->target : 0};
    wsl_envelope_encode((uint8_t *)o, &e);
    o += WSL_ENVELOPE_SIZE;
    if (m->len) memcpy(o, m->data, m->len);
    o += m->len;
    memcpy(o, "\r\n", 2);
    o += 2;

    int r = redisAsyncFormattedCommand(l->ac, on_pub_reply, (void *)(uintptr_t)cost, c->scratch,
                                       (size_t)(o - c->scratch));
    if (c->scratch_cap > SCRATCH_KEEP) {
        free(c->scratch);
        c->scratch = NULL;
        c->scratch_cap = 0;
    }
    if (r != REDIS_OK) {
        drop(c, DROP_DOWN, NULL);
        return WSL_EDOWN;
    }
    l->queued += cost;
    c->st.published++;
    return 0;
}

static void on_cmd_reply(redisAsyncContext *ac, void *r, void *priv)
{
    rlink *l = ac->data;
    wsl_cluster *c = l->c;
    pending_cmd *p = priv;
    l->queued = l->queued > p->cost ? l->queued - p->cost : 0;
    if (p->cb) p->cb(p->arg, r, r ? 0 : c->closing ? WSL_ECLOSED : WSL_EDOWN);
    free(p);
}

int wsl_cluster_command(wsl_cluster *c, int argc, const char *const *argv, const size_t *lens,
                        wsl_cluster_reply_fn cb, void *arg)
{
    if (c->closing) return WSL_ECLOSED;
    if (argc < 1 || !argv || !lens || wsl_cluster_command_refused(argc, argv, lens)) return -EINVAL;
    rlink *l = &c->links[CMD];
    if (!link_ready(l)) return WSL_EDOWN;
    size_t cost = 1 + digits((size_t)argc) + 2 + CMD_OVERHEAD;
    for (int i = 0; i < argc; i++)
        cost += 1 + digits(lens[i]) + 2 + lens[i] + 2;
    if (l->queued && l->queued + cost > c->max_queue) return -ENOBUFS;
    pending_cmd *p = malloc(sizeof *p);
    if (!p) return WSL_ENOMEM;
    *p = (pending_cmd){cb, arg, cost};
    if (redisAsyncCommandArgv(l->ac, on_cmd_reply, p, argc, (const char **)argv, lens) !=
        REDIS_OK) {
        free(p);
        return WSL_EDOWN;
    }
    l->queued += cost;
    c->st.commands++;
    return 0;
}

/* --- state, creation, teardown ------------------------------------------------------------ */

static void update_state(wsl_cluster *c)
{
    bool up = true;
    for (int i = 0; i < NLINKS; i++)
        up = up && c->links[i].state == L_READY;
    if (up == c->up || c->closing) return;
    c->up = up;
    if (up) {
        c->ever_up = true;
        c->down_logged = false;
        c->config_err[0] = 0;
        wsl_info("redis: link up to %s (node %u)", c->addr_str, current_node(c));
    }
    if (c->ev.state) c->ev.state(c->ud, up);
}

static void maybe_free(wsl_cluster *c)
{
    if (!c->closing || c->hold || c->open_handles) return;
    for (int i = 0; i < NLINKS; i++)
        if (c->links[i].ac || c->links[i].gai_pending) return;
    wsl_topics_leave_all(c->topics, &c->topic_list);
    wsl_topics_free(c->topics);
    free(c->scratch);
    free(c->prefix);
    free(c->broadcast);
    free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    wsl_cluster *c = h->data;
    c->open_handles--;
    maybe_free(c);
}

int wsl_cluster_new(wsl_cluster **out, uv_loop_t *loop, const wsl_cluster_config *cfg,
                    const wsl_cluster_events *ev, void *ud)
{
    char err[256];
    *out = NULL;
    const char *prefix = cfg->prefix ? cfg->prefix : "wsluad";
    if (cfg->node > WSL_CLUSTER_NODE_MAX) {
        wsl_error("redis: node number %u is out of range 1..%u", cfg->node, WSL_CLUSTER_NODE_MAX);
        return -EINVAL;
    }
    if (wsl_cluster_check_prefix(prefix, err, sizeof err) < 0) {
        wsl_error("redis: %s", err);
        return -EINVAL;
    }
    wsl_cluster *c = calloc(1, sizeof *c);
    if (!c) return WSL_ENOMEM;
    if (wsl_cluster_parse_url(cfg->url, &c->addr, err, sizeof err) < 0) {
        wsl_error("redis: bad URL: %s", err);
        free(c);
        return -EINVAL;
    }
    c->loop = loop;
    if (ev) c->ev = *ev;
    c->ud = ud;
    c->max_queue = cfg->max_queue ? cfg->max_queue : WSL_CLUSTER_MAX_QUEUE_DEFAULT;
    c->prefix_len = strlen(prefix);
    c->prefix = strdup(prefix);
    c->broadcast_len = c->prefix_len + 10;
    c->broadcast = malloc(c->broadcast_len + 1);
    c->topics = wsl_topics_new();
    if (!c->prefix || !c->broadcast || !c->topics) {
        wsl_topics_free(c->topics);
        free(c->prefix);
        free(c->broadcast);
        free(c);
        return WSL_ENOMEM;
    }
    snprintf(c->broadcast, c->broadcast_len + 1, "%s:broadcast", prefix);
    wsl_cluster_addr_str(&c->addr, c->addr_str, sizeof c->addr_str);
    struct in6_addr a6;
    c->host_literal = !c->addr.unix_socket && (inet_pton(AF_INET, c->addr.host, &a6) == 1 ||
                                               inet_pton(AF_INET6, c->addr.host, &a6) == 1);

    c->instance = random64();
    c->rng = c->instance | 1;
    c->nodes[c->nnodes++] = cfg->node ? cfg->node : draw_node(c);
    char host[64] = "?";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    snprintf(c->claim_value, sizeof c->claim_value, "%016llx host=%s pid=%d",
             (unsigned long long)c->instance, host, (int)getpid());

    uv_timer_t *timers[NLINKS + 2] = {&c->links[SUB].timer, &c->links[PUB].timer,
                                      &c->links[CMD].timer, &c->claim_timer, &c->drop_timer};
    for (int i = 0; i < NLINKS + 2; i++) {
        uv_timer_init(loop, timers[i]); /* cannot fail for a timer */
        timers[i]->data = c;
        c->open_handles++;
    }
    for (int i = 0; i < NLINKS; i++) {
        rlink *l = &c->links[i];
        l->c = c;
        l->role = i;
        l->backoff = WSL_CLUSTER_RETRY_MIN_MS;
        l->timer.data = l;
        l->gai.data = l;
    }
    *out = c;
    for (int i = 0; i < NLINKS; i++)
        link_connect(&c->links[i]);
    return 0;
}

void wsl_cluster_close(wsl_cluster *c)
{
    if (!c || c->closing) return;
    c->closing = true;
    c->hold++;
    drop_report(c);
    uv_timer_t *timers[NLINKS + 2] = {&c->links[SUB].timer, &c->links[PUB].timer,
                                      &c->links[CMD].timer, &c->claim_timer, &c->drop_timer};
    for (int i = 0; i < NLINKS + 2; i++) {
        timers[i]->data = c;
        uv_close((uv_handle_t *)timers[i], on_handle_closed);
    }
    for (int i = 0; i < NLINKS; i++) {
        rlink *l = &c->links[i];
        if (l->gai_pending) uv_cancel((uv_req_t *)&l->gai);
        link_abort(l, "closing");
    }
    c->hold--;
    maybe_free(c);
}

uint32_t wsl_cluster_node(const wsl_cluster *c)
{
    return current_node(c);
}

bool wsl_cluster_owns(const wsl_cluster *c, uint64_t id)
{
    uint32_t n = wsl_cluster_id_node(id);
    return n != 0 && node_used(c, n);
}

bool wsl_cluster_up(const wsl_cluster *c)
{
    return c->up;
}

void wsl_cluster_stats(const wsl_cluster *c, wsl_cluster_counters *st)
{
    *st = c->st;
    st->up = c->up;
    st->sub_up = c->links[SUB].state == L_READY;
    st->pub_up = c->links[PUB].state == L_READY;
    st->cmd_up = c->links[CMD].state == L_READY;
    st->node = current_node(c);
    st->node_claimed = c->claimed;
    st->pub_queued = c->links[PUB].queued;
    st->cmd_queued = c->links[CMD].queued;
}
