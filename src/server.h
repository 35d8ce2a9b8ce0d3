/* The listener and everything loop-wide: accept with connection limits, the shared read buffer,
 * the lists that give each connection state its timeout, the once-per-iteration flush of every
 * connection with output, broadcast and publish, and graceful shutdown. */
#ifndef WSL_SERVER_H
#define WSL_SERVER_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cluster.h"
#include "conn.h"
#include "options.h"
#include "static.h"
#include "tls.h"
#include "topic.h"

#define WSL_READ_BUF            (64 * 1024)
#define WSL_CORK_MAX            (16 * 1024) /* the cork buffer (see wsl_server.corked) */
#define WSL_BATCH_WRITES        64          /* writes in one io_uring_enter (wsl_server.uring) */
#define WSL_BATCH_BYTES         (64 * 1024) /* and their bytes; at least WSL_CORK_MAX */
#define WSL_CLOSE_TIMEOUT_MS    2000        /* wait for the peer's close reply, or its FIN */
#define WSL_SHUTDOWN_TIMEOUT_MS 3000        /* graceful shutdown gives clients this long */

enum {
    WSL_LIST_NONE,
    WSL_LIST_HANDSHAKE,
    WSL_LIST_OPEN,
    WSL_LIST_CLOSING,
    WSL_LIST_KEEPALIVE, /* plain HTTP between requests (deadline: the idle timeout) */
    WSL_LIST_REQUEST,   /* a plain request's body or answer (deadline: --request-timeout) */
    WSL_LIST_COUNT
};

/* Connections linked through wsl_conn.link, oldest deadline first: every connection in one list
 * has the same timeout, so appending keeps it sorted and the sweep only looks at the head. */
typedef struct wsl_conn_list {
    wsl_list head;
    size_t n;
} wsl_conn_list;

/* One listening socket (-l or --tls-listen); part of the server. */
typedef struct wsl_listener {
    uv_poll_t poll; /* poll.data == this listener */
    wsl_server *srv;
    int fd;         /* -1 when closed */
    bool tls;       /* connections take the server's current TLS context */
    char addr[128]; /* "host:port" actually bound */
} wsl_listener;

/* Owned by main; wsl_server_free releases everything but the loop. */
struct wsl_server {
    uv_loop_t *loop;
    const wsl_options *opt;
    const wsl_conn_events *events; /* whoever listens to the connections (main: the script) */
    void *events_ud;
    wsl_topics *topics;
    wsl_cluster *cluster; /* the Redis link with --redis (wsl_server_join), else NULL */
    wsl_deflate *deflate; /* the loop's zlib state with --deflate, else NULL */
    uint32_t node;        /* the node number in new connection ids; 0 without a cluster */
    wsl_static files;
    bool has_files;

    wsl_listener listeners[WSL_MAX_LISTEN]; /* as the options list them */
    size_t nlisteners;
    wsl_tls_ctx *tls; /* the context new TLS connections take (wsl_server_set_tls), or NULL */
    int spare_fd;     /* kept open to be released when accept fails with EMFILE */
    uv_timer_t accept_pause; /* resumes accepting after a descriptor shortage */
    uv_prepare_t flush_prep; /* writes what the last iteration queued, before the loop polls */
    uv_timer_t sweep;        /* timeouts */
    uv_timer_t shutdown_timer;
    char addr[128]; /* "host:port" the first listener actually bound */

    /* Indexed by WSL_LIST_*: HANDSHAKE (deadline = accept + handshake timeout), OPEN (deadline =
     * last input + idle timeout, the input to within a sweep tick; also the set broadcast walks),
     * CLOSING (RESPONDING and CLOSING connections; deadline = close timeout), KEEPALIVE,
     * REQUEST. */
    wsl_conn_list lists[WSL_LIST_COUNT];
    wsl_conn *dirty;
    /* The connection whose own input is being handled (on_poll in conn.c), or NULL. What it is
     * sent meanwhile is written right after its input, while its socket and state are still in
     * cache, not at the end of the iteration after every other ready socket was read (at a
     * thousand connections those evict them). Small frames go to `cork` while its queue is empty:
     * one write(), no chunk taken. */
    wsl_conn *corked;
    uint8_t *cork; /* WSL_CORK_MAX bytes: cork_buf, or the write batch's next bytes */
    size_t cork_len;
    uint8_t *cork_buf; /* WSL_CORK_MAX bytes, owned */
    /* The cork's bytes, once the input is handled, wait here with other connections' for one
     * io_uring_enter at the end of the iteration (or sooner, when it is full); NULL without
     * io_uring (then each is a send). A plain connection's cork is in the batch already. */
    struct wsl_uring *uring;
    wsl_conn **by_id; /* open connections by id: open addressing, linear probing */
    size_t by_id_cap; /* a power of two, or 0 */
    size_t nconns;    /* every accepted socket not yet closed */
    unsigned max_conns;
    uint64_t next_id;

    uint64_t handshake_ms, idle_ms, keepalive_ms, request_ms; /* the lists' timeouts */
    uint64_t sweep_ms; /* how often the timeouts are checked */
    uint8_t *rbuf;     /* WSL_READ_BUF bytes shared by every read */
    bool stopping;
    volatile sig_atomic_t stop_asked;        /* see wsl_server_stop_asked */
    void (*on_stopped)(struct wsl_server *); /* set by main: shutdown finished */
    uint64_t last_shed_log;
};

/* 0 or WSL_ENOMEM. Connections report to `events` (with ud); NULL: nobody listens. */
int wsl_server_init(wsl_server *s, uv_loop_t *loop, const wsl_options *opt);
void wsl_server_set_events(wsl_server *s, const wsl_conn_events *events, void *ud);
/* Bind and listen on every address of the options; 0, or a negative errno (message logged). */
int wsl_server_listen(wsl_server *s);
/* The TLS context for connections accepted from now on (the server takes ctx's reference and
 * drops the one it held: connections on the old context keep it). */
void wsl_server_set_tls(wsl_server *s, wsl_tls_ctx *ctx);
/* Every address listened on, for the log: "127.0.0.1:8080, 127.0.0.1:8443 (TLS)". */
const char *wsl_server_addresses(const wsl_server *s, char *buf, size_t cap);
/* Stop accepting, close every connection with 1001 (running their close events), then call
 * on_stopped once all are gone. */
void wsl_server_shutdown(wsl_server *s);
/* A connection's socket was closed (called by wsl_conn_destroy). */
void wsl_server_conn_gone(wsl_server *s);
void wsl_server_free(wsl_server *s);

/* Move c to the tail of list `which` (or out of every list) with deadline now + ms. */
void wsl_server_track(wsl_server *s, wsl_conn *c, int which, uint64_t ms);
/* c has output (or a state step) for the flush: the end of this iteration's I/O, or right after
 * its own input when c is the corked connection. */
void wsl_server_mark_dirty(wsl_server *s, wsl_conn *c);

/* Join the cluster through the Redis at url (see cluster.h): from now on publish, broadcast and
 * send reach the other nodes too, and connection ids carry this node's number. 0 or a negative
 * code (the reason logged). Never waits for Redis. */
int wsl_server_join(wsl_server *s, const char *url, const char *prefix);
/* Close the Redis link (the shutdown does; harmless without one). The loop must run afterwards
 * for its handles to close. */
void wsl_server_leave(wsl_server *s);

/* Queue m on every open connection (but except) / every subscriber of topic, here and, in a
 * cluster, on every other node (one Redis message). Returns the count of local connections that
 * took it. Runs no event and destroys nothing. */
size_t wsl_server_broadcast(wsl_server *s, wsl_msg *m, const wsl_conn *except);
size_t wsl_server_publish(wsl_server *s, const char *topic, size_t len, wsl_msg *m,
                          const wsl_conn *except);

/* Send m to the connection with that id: here, or on the node that holds it. 0 when it was
 * queued or handed to Redis; WSL_ECLOSED when the id is this node's and not open; WSL_EDOWN or
 * -ENOBUFS when Redis could not take it. */
int wsl_server_send_to(wsl_server *s, uint64_t id, wsl_msg *m);

/* A connection's subscriptions all end (it closed). */
void wsl_server_leave_all(wsl_server *s, wsl_conn *c);

/* The id for a new connection: this node's number and a counter. */
static inline uint64_t wsl_server_new_id(wsl_server *s)
{
    return wsl_cluster_id(s->node, ++s->next_id);
}

/* This node's number in the cluster (in its connection ids); 0 without one. */
static inline uint32_t wsl_server_node(const wsl_server *s)
{
    return s->node;
}

/* The Redis link, or NULL without --redis. */
static inline wsl_cluster *wsl_server_cluster(const wsl_server *s)
{
    return s->cluster;
}

/* Topics of open connections. subscribe: 1 newly subscribed, 0 already was, WSL_ECLOSED when c
 * is not open, WSL_ENOMEM. unsubscribe: 1 or 0. */
int wsl_server_subscribe(wsl_server *s, wsl_conn *c, const char *topic, size_t len);
int wsl_server_unsubscribe(wsl_server *s, wsl_conn *c, const char *topic, size_t len);
size_t wsl_server_subscribers(const wsl_server *s, const char *topic, size_t len);

/* Open connections: how many, and a walk over them (oldest input first, to a sweep tick). The
 * walk must not close connections as it goes: take a snapshot first for that. */
static inline size_t wsl_server_count(const wsl_server *s)
{
    return s->lists[WSL_LIST_OPEN].n;
}
wsl_conn *wsl_server_first_open(wsl_server *s);
wsl_conn *wsl_server_next_open(wsl_server *s, wsl_conn *c);

static inline const wsl_options *wsl_server_options(const wsl_server *s)
{
    return s->opt;
}
static inline uv_loop_t *wsl_server_loop(const wsl_server *s)
{
    return s->loop;
}
/* True once a signal asked the process to end (wsl_server_stop_asked) or wsl_server_shutdown
 * has begun. */
static inline bool wsl_server_stopping(const wsl_server *s)
{
    return s->stopping || s->stop_asked;
}

/* Async-signal-safe: a signal asked the process to end. The shutdown starts when the loop next
 * turns; what runs before (the handler the signal stopped, its on_error, messages already read)
 * already sees the server stopping. */
static inline void wsl_server_stop_asked(wsl_server *s)
{
    s->stop_asked = 1;
}

/* The address the first listener really bound ("host:port"; "" before listening); the
 * effective connection cap. */
static inline const char *wsl_server_address(const wsl_server *s)
{
    return s->addr;
}
static inline unsigned wsl_server_max_connections(const wsl_server *s)
{
    return s->max_conns;
}
/* The open connection with that id, or NULL. Connections enter the index when they open and
 * leave it when they stop being open. */
wsl_conn *wsl_server_get(wsl_server *s, uint64_t id);
int wsl_server_index(wsl_server *s, wsl_conn *c);
void wsl_server_unindex(wsl_server *s, wsl_conn *c);

#endif
