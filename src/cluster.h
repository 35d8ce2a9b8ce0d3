/* The Redis link of a cluster node: three hiredis connections on the server's libuv loop that
 * carry topic, broadcast and direct messages between nodes (PUBLISH/SUBSCRIBE) and run commands
 * for scripts. It knows topics, frames (opcode + payload) and connection ids; it reports upward
 * through wsl_cluster_events and never sees Lua or sockets of clients. Created only with
 * --redis. Channel names, the envelope and the id layout are in cluster_proto.h.
 *
 * Connections, each reconnecting on its own (100 ms doubling to 5 s, with jitter), each sending
 * AUTH and SELECT from the URL and a PING before it counts as up:
 *   sub  SUBSCRIBE only: <prefix>:broadcast, <prefix>:node:<n> for each number this node has
 *        used, and <prefix>:topic:<name> for every topic it was asked to subscribe; after a
 *        reconnect it subscribes all of them again by itself.
 *   pub  PUBLISH only (and the node-number claim), so the messages of one publisher keep their
 *        order and a slow command never delays them.
 *   cmd  commands for scripts: a BLPOP there delays only the commands queued behind it.
 *
 * Node numbers: a node draws a random number 1..65535 at start (or takes cfg->node) and uses it
 * at once, whether Redis is up or not, because ids are needed before Redis answers. When pub
 * comes up it claims the key <prefix>:node:<n> (SET NX EX 30, value: its 64-bit instance id,
 * host and pid) and renews it every 10 s. If another live node holds that key, it logs an
 * error, draws a new number, claims that one and reports it through ev->node: connections
 * opened from then on get ids with the new number; those opened before keep theirs, and the
 * node stays subscribed to every node channel it has used, so direct messages still reach
 * them. Its own messages are recognised by the instance id in the envelope, not by the number.
 *
 * The process must ignore SIGPIPE (hiredis writes with write(2)); the server does. */
#ifndef WSL_CLUSTER_H
#define WSL_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "cluster_proto.h"

struct redisReply; /* hiredis.h: a caller that reads replies includes <hiredis/hiredis.h> */

#define WSL_CLUSTER_MAX_QUEUE_DEFAULT (8u << 20) /* bytes: see wsl_cluster_config.max_queue */
#define WSL_CLUSTER_NODE_TTL          30         /* s: the node-number key's expiry */
#define WSL_CLUSTER_NODE_REFRESH      10         /* s: how often a node renews it */
#define WSL_CLUSTER_RETRY_MIN_MS      100        /* reconnect back-off: first delay */
#define WSL_CLUSTER_RETRY_MAX_MS      5000       /* ... doubling up to this */
#define WSL_CLUSTER_CONNECT_TIMEOUT   5000       /* ms: connect + AUTH/SELECT/PING, else retry */
#define WSL_CLUSTER_DROP_LOG_MS       5000       /* at most one "dropped" warning per interval */

typedef struct wsl_cluster wsl_cluster;

typedef enum {
    WSL_CLUSTER_TOPIC = 1, /* to the subscribers of topic, on every node */
    WSL_CLUSTER_BROADCAST, /* to every connection on every node */
    WSL_CLUSTER_DIRECT,    /* to the one connection `target`, on the node its id names */
} wsl_cluster_kind;

/* A message going out (wsl_cluster_publish) or coming in (ev->message). Every pointer is
 * borrowed: valid during the call only. */
typedef struct wsl_cluster_msg {
    wsl_cluster_kind kind;
    const char *topic; /* TOPIC: the name (any bytes, even none), not NUL-terminated; not NULL */
    size_t topic_len;
    uint64_t target; /* DIRECT: the connection id; 0 otherwise */
    uint64_t except; /* a connection id that must not get it; 0 for none */
    int opcode;      /* 1 text, 2 binary (WebSocket opcodes) */
    const void *data;
    size_t len;
    /* Incoming only: published by something other than wsluad (no envelope): a PUBLISH to
     * <prefix>:topic:<name> or <prefix>:broadcast. Its opcode is 1 (text) when the payload is
     * valid UTF-8, else 2 (binary); except and target are 0. Ignored by wsl_cluster_publish. */
    bool external;
} wsl_cluster_msg;

/* Read during wsl_cluster_new only; the strings are copied. */
typedef struct wsl_cluster_config {
    const char *url;    /* the --redis URL (cluster_proto.h), required */
    const char *prefix; /* NULL: "wsluad" (wsl_cluster_check_prefix rules) */
    /* Bytes of commands handed to Redis whose replies have not come back yet, counted per
     * connection (pub and cmd) with 64 bytes of bookkeeping each: past it, publishes are
     * dropped (-ENOBUFS) and commands refused (-ENOBUFS). This bounds what a stalled Redis can
     * make the node hold. A message larger than the whole bound still goes when nothing is
     * queued. 0: WSL_CLUSTER_MAX_QUEUE_DEFAULT (8 MiB). */
    size_t max_queue;
    uint32_t node; /* 0: a random node number; else 1..WSL_CLUSTER_NODE_MAX to ask for */
} wsl_cluster_config;

/* Upward reports. Any of them may be NULL. They run on the loop, never inside an API call of
 * this module (except where wsl_cluster_close says so), and may call any function of this
 * module, wsl_cluster_close included. */
typedef struct wsl_cluster_events {
    /* A message from another node or from an external publisher. A node never gets its own
     * messages back here: it delivered them locally when it published them. A TOPIC message
     * comes only while the topic is subscribed (wsl_cluster_subscribe); a DIRECT one carries a
     * target whose node number is one this node has used (look the id up locally; it may have
     * closed since). */
    void (*message)(void *ud, const wsl_cluster_msg *m);
    /* The link came up (all three connections ready, subscriptions sent) or went down (any of
     * them lost). Starts down; reported on changes only. */
    void (*state)(void *ud, bool up);
    /* The node number changed because another live node holds old_node: give new connections
     * ids with new_node from now on. */
    void (*node)(void *ud, uint32_t old_node, uint32_t new_node);
} wsl_cluster_events;

/* Creates the link and starts connecting. Never blocks and never fails because Redis is down
 * (it logs a warning and keeps retrying). 0 and *out set, or -EINVAL (bad url, prefix, node;
 * the reason is logged), -ENOMEM, or a libuv error. ud is passed to every event. */
int wsl_cluster_new(wsl_cluster **out, uv_loop_t *loop, const wsl_cluster_config *cfg,
                    const wsl_cluster_events *ev, void *ud);

/* Disconnects and releases the link; c must not be used afterwards. Before it returns, every
 * command still waiting gets its callback with NULL and WSL_ECLOSED, except when called from
 * inside a callback of this module, where the connection that made the callback finishes
 * right after it returns; no event is reported after this call. The memory is released once
 * the loop has run the close callbacks of the handles: the caller keeps running the loop (as
 * the server does at shutdown until its handles are closed). Calling it twice is harmless
 * until then. */
void wsl_cluster_close(wsl_cluster *c);

/* The node number new connection ids use now (1..WSL_CLUSTER_NODE_MAX). */
uint32_t wsl_cluster_node(const wsl_cluster *c);

/* True when id belongs to this node: its node number is one this node has used. The server
 * delivers such ids locally and publishes DIRECT messages for the others. */
bool wsl_cluster_owns(const wsl_cluster *c, uint64_t id);

/* True while all three connections are ready (the last ev->state). */
bool wsl_cluster_up(const wsl_cluster *c);

/* Start / stop receiving TOPIC messages for topic: the server calls subscribe when the first
 * local subscriber joins and unsubscribe when the last one leaves. The set of topics is kept
 * here and subscribed again after every reconnect. Idempotent; delivery stops at once on
 * unsubscribe, even for messages Redis had already sent. 0 or -ENOMEM. */
int wsl_cluster_subscribe(wsl_cluster *c, const char *topic, size_t len);
int wsl_cluster_unsubscribe(wsl_cluster *c, const char *topic, size_t len);

/* Publishes m (kind, topic or target, except, opcode, data) to the other nodes as one Redis
 * PUBLISH. The caller has delivered it locally already. Returns 0 when handed to Redis;
 * WSL_EDOWN when pub is down and -ENOBUFS when the bound (max_queue) is reached: the message
 * is dropped, counted, and a warning says how many every WSL_CLUSTER_DROP_LOG_MS at most.
 * -EINVAL for a bad kind or opcode, a TOPIC without a topic pointer, or a DIRECT target
 * without a node number. Messages from
 * one node leave in the order of the calls. */
int wsl_cluster_publish(wsl_cluster *c, const wsl_cluster_msg *m);

/* The outcome of a command, called exactly once per command accepted by wsl_cluster_command,
 * always later from the loop, never from inside wsl_cluster_command:
 *   reply != NULL, err == 0     Redis answered; an error answer has reply->type
 *                               REDIS_REPLY_ERROR. reply is valid during the call only.
 *   reply == NULL, WSL_EDOWN    the connection was lost with the command in flight (it may or
 *                               may not have run).
 *   reply == NULL, WSL_ECLOSED  wsl_cluster_close was called first. */
typedef void (*wsl_cluster_reply_fn)(void *arg, const struct redisReply *reply, int err);

/* Sends a command (argc arguments, binary-safe) on cmd. 0: cb (which may be NULL: the reply is
 * dropped) will be called exactly once. A negative code means it was not sent and cb will never
 * be called: WSL_EDOWN when cmd is not up (immediately, nothing is queued while Redis is
 * away), -ENOBUFS when the bound is reached, -EINVAL for a command that
 * wsl_cluster_command_refused names (ask it for the reason), -ENOMEM. */
int wsl_cluster_command(wsl_cluster *c, int argc, const char *const *argv, const size_t *lens,
                        wsl_cluster_reply_fn cb, void *arg);

/* Link state and counters since wsl_cluster_new, for logs and metrics. */
typedef struct wsl_cluster_counters {
    bool up;                       /* all three connections ready */
    bool sub_up, pub_up, cmd_up;   /* each connection */
    uint32_t node;                 /* the current node number */
    bool node_claimed;             /* the node holds <prefix>:node:<n> in Redis */
    uint64_t published;            /* PUBLISH commands handed to Redis */
    uint64_t acked;                /* ... that Redis has answered */
    uint64_t received;             /* messages reported through ev->message */
    uint64_t own;                  /* own messages that came back and were skipped */
    uint64_t invalid;              /* messages dropped: bad envelope, external on a node channel */
    uint64_t dropped;              /* publishes dropped: the three below */
    uint64_t dropped_down;         /* ... pub was down */
    uint64_t dropped_full;         /* ... the bound was reached */
    uint64_t dropped_refused;      /* ... Redis answered with an error */
    uint64_t commands;             /* commands accepted by wsl_cluster_command */
    uint64_t reconnects;           /* connections made after the first one of each kind */
    uint64_t failures;             /* attempts that failed and ready connections lost */
    size_t pub_queued, cmd_queued; /* bytes counted against max_queue now */
} wsl_cluster_counters;

void wsl_cluster_stats(const wsl_cluster *c, wsl_cluster_counters *st);

#endif
