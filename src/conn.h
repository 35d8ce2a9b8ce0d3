/* One client connection's life: the HTTP upgrade, or plain HTTP requests (keep-alive, pipelined,
 * answered in order), frames in and out, the close handshake, the output queue with
 * back-pressure, and the timeouts (handshake, request, idle ping, close). It reads from the
 * server's shared buffer and keeps private memory only while something is partial, and reports
 * what happens through a table of event callbacks (wsl_conn_events): it knows nothing above it. */
#ifndef WSL_CONN_H
#define WSL_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "deflate.h"
#include "error.h"
#include "frame.h"
#include "http.h"
#include "list.h"
#include "log.h"
#include "tls.h"
#include "topic.h"

typedef struct wsl_server wsl_server;
typedef struct wsl_conn wsl_conn;

typedef enum {
    WSL_CONN_HANDSHAKE,  /* reading a request head: the first, or the next on a kept-alive one */
    WSL_CONN_BODY,       /* reading the body of a plain request */
    WSL_CONN_REQUEST,    /* a plain request is with the event owner, waiting for its answer */
    WSL_CONN_RESPONDING, /* writing the last plain HTTP answer; closes once it is written */
    WSL_CONN_OPEN,       /* WebSocket open: the event owner sees it */
    WSL_CONN_CLOSING,    /* a close frame went one way or both; no more messages */
    WSL_CONN_DEAD,       /* socket closed; freed by libuv's close callback */
} wsl_conn_state;

/* What the upgrade event decided. Zeroed by the connection before it asks. */
typedef struct wsl_upgrade {
    int status;         /* 0: accept; otherwise refuse with this HTTP status */
    char body[512];     /* refusal body */
    char protocol[256]; /* chosen subprotocol, "" for none */
} wsl_upgrade;

/* A plain HTTP request as the request event reports it. Everything it points to is valid for
 * the call only. */
typedef struct wsl_http_req {
    const wsl_request *head; /* method, path, query, headers; remote and secure filled */
    const uint8_t *body;     /* the whole body, decoded ("" when there was none) */
    size_t body_len;
} wsl_http_req;

/* How a connection reports to whoever owns its events (the server holds the table and passes
 * `ud` back; main points it at the script). Every callback may run arbitrary code, including
 * closing or sending on this or any other connection; none may free a connection (only the
 * connection layer does, through wsl_conn_destroy). A NULL callback is skipped. */
typedef struct wsl_conn_events {
    /* A valid upgrade request arrived: accept it (leave *out zeroed, or choose a protocol) or
     * refuse it (out->status). The connection is not open yet: sends fail. */
    void (*upgrade)(void *ud, wsl_conn *c, const wsl_request *req, wsl_upgrade *out);
    /* The 101 answer is queued: the connection is open. */
    void (*open)(void *ud, wsl_conn *c);
    /* A whole message; data is valid for the call only. */
    void (*message)(void *ud, wsl_conn *c, const uint8_t *data, size_t len, bool binary);
    /* The connection left the open state (exactly once for every open): the code and reason
     * of the first close frame, 1005 for an empty one, 1006 when there was none. */
    void (*close)(void *ud, wsl_conn *c, unsigned code, const char *reason, size_t len);
    /* Output queued beyond half of --max-backpressure has been written. */
    void (*drain)(void *ud, wsl_conn *c);
    /* The connection is about to be freed: drop every pointer to it. Must not send or close. */
    void (*release)(void *ud, wsl_conn *c);
    /* A plain request (not an upgrade), whole. The owner answers it with wsl_conn_respond, now
     * or, after wsl_conn_defer, later (within --request-timeout); if it does neither before
     * returning, the connection answers as it does without an owner: a static file for GET and
     * HEAD, else 404. */
    void (*request)(void *ud, wsl_conn *c, const wsl_http_req *req);
    /* A deferred request will get no answer from the owner: it timed out (the connection
     * answers 504 right after) or the connection is going. Must not send or close. */
    void (*request_abandoned)(void *ud, wsl_conn *c);
} wsl_conn_events;

/* Growable bytes owned by one connection (the request being read, a partial frame header or
 * control frame, a message spanning reads). NULL while not needed. */
typedef struct wsl_bytes {
    uint32_t len, cap;
    uint8_t data[];
} wsl_bytes;

/* The strings of wsl_conn_info, in the order they are stored. */
typedef enum {
    WSL_INFO_REMOTE,
    WSL_INFO_PATH,
    WSL_INFO_QUERY,
    WSL_INFO_PROTOCOL,
    WSL_INFO_HEADERS, /* where the headers start */
} wsl_info_field;

/* A connection's plain HTTP requests (conn.c): created at the first, freed with the connection. */
typedef struct wsl_conn_http wsl_conn_http;

/* What the upgrade request said, kept for the event owner: one allocation made at the upgrade,
 * freed with the connection. Strings are NUL-terminated inside data. */
typedef struct wsl_conn_info {
    uint16_t len[WSL_INFO_HEADERS]; /* of remote, path, query, protocol */
    uint16_t nheaders;
    char data[]; /* remote, path, query, protocol, then nheaders x (lower-case name, value) */
} wsl_conn_info;

/* Created by the server on accept (wsl_conn_new). wsl_conn_destroy closes the socket and marks
 * it DEAD; the memory stays valid, DEAD, until libuv's close callback frees it later in the same
 * loop iteration, so a caller that destroyed a connection may still read its state. Everything
 * it points to is its own, except srv.
 * Laid out for the cache: a message touches the poll handle's second half (libuv reads its
 * watcher and callback; on_poll does not read poll.data), then the fields right after it, up to
 * rx's flags: about 140 bytes, three lines. What only the slow paths need comes last. */
struct wsl_conn {
    uv_poll_t poll; /* first: on_poll and libuv's close callback (free) use its address */
    wsl_server *srv;
    wsl_bytes *in;  /* unconsumed input: the request so far, or a partial frame */
    wsl_bytes *msg; /* a message spanning reads or frames */
    int fd;
    uint32_t udata;          /* the event owner's slot (the script keeps its object's reference) */
    uint8_t state;           /* wsl_conn_state */
    uint8_t list;            /* which of the server's lists holds it (WSL_LIST_*) */
    uint16_t close_code;     /* reported to the close event */
    unsigned events : 2;     /* UV_READABLE | UV_WRITABLE currently polled */
    unsigned dirty : 1;      /* on the server's dirty list */
    unsigned corked_out : 1; /* output came meanwhile: written right after the input */
    unsigned opened : 1;     /* the open event ran: the close event must run exactly once */
    unsigned close_sent : 1;
    unsigned close_rcvd : 1;
    unsigned failing : 1;   /* close without waiting for the peer's reply */
    unsigned lingering : 1; /* our side is shut down; read and discard until EOF */
    unsigned pinged : 1;    /* an idle ping is outstanding */
    unsigned drain_armed : 1;
    unsigned secure : 1;    /* the upgrade came over TLS (to us, or to a trusted proxy) */
    unsigned corked : 1;    /* its input is being handled (wsl_server.corked); next to deflate:
                             * queue_msg tests both at once */
    unsigned deflate : 1;   /* permessage-deflate agreed (what follows is what it agreed) */
    unsigned zsmall : 1;    /* the client asked for a server window under 15 bits */
    unsigned ztakeover : 1; /* the client keeps its context: c->inflater keeps its window */
    unsigned zbits : 4;     /* the client's window (client_max_window_bits), with ztakeover */
    unsigned tls : 1;       /* accepted on a TLS listener: its wsl_tls follows it (conn.c) */
    unsigned inflight : 1;  /* bytes wait in the server's write batch: everything else after */
    unsigned freed : 1;     /* gone, but still on the dirty list: its walk frees it */
    uint64_t deadline;      /* loop time (ms) when this state's timeout fires */
    wsl_queue out;
    wsl_rx rx; /* its flags first */
    /* cold: set up, torn down, or used by broadcast, HTTP, deflate and topics */
    wsl_conn_http *http; /* plain HTTP requests; NULL for a WebSocket */
    uint64_t id;
    wsl_list link;        /* in the server's list for this state (see server.h) */
    wsl_conn *dirty_next; /* the server's list of connections with output to write */
    wsl_conn_info *info;
    wsl_inflater *inflater; /* permessage-deflate: a client's kept window, a message in progress */
    wsl_sublist subs;       /* topics, owned by the server's wsl_topics */
};

/* A frame encoded once and sent to any number of connections: small frames are copied into each
 * recipient's queue (the smallest from one contiguous copy of the whole frame, made by the
 * fan-outs with wsl_msg_wire), large ones shared
 * by reference (made on first use). Recipients that agreed on permessage-deflate get a compressed
 * frame, made on first use too, once for all of them (one per server window size). Lives on the
 * stack of whoever sends; wsl_msg_release drops what was made. */
#define WSL_MSG_WIRE 128

typedef struct wsl_msg {
    uint8_t hdr[WSL_SERVER_HDR_MAX];
    uint8_t hlen;
    uint8_t zmade; /* bit v: z[v] was made (NULL: compressing was not worth it) */
    const uint8_t *payload;
    size_t len;
    wsl_buf *shared;
    wsl_buf *z[2];              /* the compressed frame for a 15-bit / a smaller server window */
    size_t wire_len;            /* bytes in wire; 0 when the frame does not fit */
    uint8_t wire[WSL_MSG_WIRE]; /* header and payload together */
} wsl_msg;

void wsl_msg_init(wsl_msg *m, int opcode, const void *payload, size_t len);
/* Make the contiguous copy of a small frame, for a fan-out (once, before its loop): one recipient
 * copies header and payload itself, cheaper than making it. */
void wsl_msg_wire(wsl_msg *m);
void wsl_msg_drop_made(wsl_msg *m);
/* Inline: a small frame sent to one connection made nothing, and pays one test for that. */
static inline void wsl_msg_release(wsl_msg *m)
{
    if (m->shared || m->zmade) wsl_msg_drop_made(m);
}

/* Take over an accepted, non-blocking socket; tls: the context of a TLS listener, NULL for a
 * plain one. NULL when out of memory (fd left open). */
wsl_conn *wsl_conn_new(wsl_server *srv, int fd, wsl_tls_ctx *tls);
/* The peer's address as accept(2) returned it, kept for a TLS connection's log lines (a plain
 * one asks getpeername when it needs it). */
struct sockaddr_storage;
void wsl_conn_accepted_from(wsl_conn *c, const struct sockaddr_storage *ss);

/* Queue a message. 0, WSL_ECLOSED when the connection is not open, WSL_ENOMEM. Runs no event
 * and never destroys the connection: it is written by the next flush. */
int wsl_conn_send(wsl_conn *c, wsl_msg *m);
/* The same for the fan-out loops of broadcast and publish, which count the messages they queued
 * once for all their recipients (the metrics), instead of once per recipient. */
int wsl_conn_queue(wsl_conn *c, wsl_msg *m);
/* wsl_conn_send of one final frame of `opcode` with payload p[0..len), for one recipient: a
 * reply to the connection being handled goes straight into the cork buffer when it may. */
int wsl_conn_send_frame(wsl_conn *c, int opcode, const void *p, size_t len);

/* Start the close handshake with code and reason (truncated to fit a control frame). 0, or
 * WSL_ECLOSED when it was not open. Runs the close event; the connection stays allocated. */
int wsl_conn_close(wsl_conn *c, unsigned code, const char *reason, size_t len);

/* wsl_conn_close in two steps, for a shutdown: the close frame (and the end of the open state)
 * first, the close event later, so that the close handlers of a shutdown find no connection
 * still open to send to. begin: 0 or WSL_ECLOSED; finish runs the close event if it is due. */
int wsl_conn_close_begin(wsl_conn *c, unsigned code, const char *reason, size_t len);
void wsl_conn_close_finish(wsl_conn *c, const char *reason, size_t len);

/* Close the socket now: runs the close event (1006) if it was open, request_abandoned if a
 * deferred request was waiting, then the release event; c is DEAD afterwards (see struct
 * wsl_conn). Harmless on a DEAD connection. */
void wsl_conn_destroy(wsl_conn *c);

/* Answer the plain request c waits on (see the request event): status (100-999; the caller
 * keeps it to 200-599), the header lines `headers` (hlen bytes of "Name: value\r\n", checked by
 * the caller, without Content-Length, Transfer-Encoding or Connection; Content-Type defaults to
 * text/plain; charset=utf-8) and the body (not sent for HEAD, 204 and 304). The connection then
 * waits for the next request, or closes (the client asked, HTTP/1.0 without keep-alive, the
 * request cap, a shutdown). 0; WSL_ECLOSED when no request waits; WSL_ENOMEM (the connection
 * then closes). Runs no event. */
int wsl_conn_respond(wsl_conn *c, int status, const char *headers, size_t hlen, const void *body,
                     size_t len);
/* The owner will answer the waiting request later. 0, or WSL_ECLOSED when none waits. */
int wsl_conn_defer(wsl_conn *c);
/* Whether a plain request waits for the owner's answer. */
bool wsl_conn_request_pending(const wsl_conn *c);
/* The owner's slot for the waiting request (as udata is for the connection); NULL when c has
 * never had a plain request. */
uint32_t *wsl_conn_request_slot(wsl_conn *c);

/* Write what is queued; the server calls it once per loop iteration for dirty connections.
 * May run the drain event, and may destroy c (a write error, or the end of a lingering close);
 * once a plain answer is out it goes on with the requests the client pipelined, and over TLS
 * with input OpenSSL held back, which runs their events. Check wsl_conn_is_dead afterwards
 * before touching anything but its state. */
void wsl_conn_flush(wsl_conn *c);
/* Hand the server's write batch to the kernel: afterwards no connection's bytes wait in it. */
void wsl_conn_submit(wsl_server *srv);
/* The batch's socket did not take one of c's writes whole (a wsl_uring_done). */
void wsl_conn_sent(void *c, const uint8_t *p, size_t n, int res);

/* A state timeout passed (the server's sweep calls this for expired connections). May run the
 * close event and destroy c. */
void wsl_conn_expire(wsl_conn *c);

static inline bool wsl_conn_is_open(const wsl_conn *c)
{
    return c->state == WSL_CONN_OPEN;
}

static inline bool wsl_conn_is_dead(const wsl_conn *c)
{
    return c->state == WSL_CONN_DEAD;
}

/* permessage-deflate was agreed at the upgrade. */
static inline bool wsl_conn_compressed(const wsl_conn *c)
{
    return c->deflate;
}

static inline uint64_t wsl_conn_id(const wsl_conn *c)
{
    return c->id;
}

/* Ciphertext of a TLS connection not yet handed to the kernel. */
size_t wsl_conn_tls_pending(const wsl_conn *c);

/* Bytes queued and not yet handed to the kernel (what back-pressure counts): the frames in the
 * server's cork buffer while c's input is handled, then in its write batch until the iteration
 * ends, and over TLS, the frames not encrypted yet and the ciphertext the kernel has not taken. */
size_t wsl_conn_buffered(const wsl_conn *c);

/* The topics c subscribes to: walk them with wsl_sub_next / wsl_sub_topic (topic.h). */
static inline wsl_sub *wsl_conn_topics(const wsl_conn *c)
{
    return c->subs.head;
}

/* "ip:port" of the peer into buf (at least 64 bytes); a system call, so prefer
 * wsl_conn_remote once the connection is open. */
const char *wsl_conn_peer(const wsl_conn *c, char *buf, size_t cap);

/* Info strings (valid while the connection exists; "" before the upgrade). */
const char *wsl_conn_info_str(const wsl_conn *c, wsl_info_field which);
static inline const char *wsl_conn_remote(const wsl_conn *c)
{
    return wsl_conn_info_str(c, WSL_INFO_REMOTE);
}
static inline const char *wsl_conn_path(const wsl_conn *c)
{
    return wsl_conn_info_str(c, WSL_INFO_PATH);
}
static inline const char *wsl_conn_query(const wsl_conn *c)
{
    return wsl_conn_info_str(c, WSL_INFO_QUERY);
}
static inline const char *wsl_conn_protocol(const wsl_conn *c)
{
    return wsl_conn_info_str(c, WSL_INFO_PROTOCOL);
}
/* Headers: i from 0 while it returns true. */
bool wsl_conn_header(const wsl_conn *c, size_t i, const char **name, const char **value);

/* A log line about c: "conn#ID ADDR: message" (JSON: the fields conn and remote). */
void wsl_conn_log(const wsl_conn *c, wsl_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
