/* One client connection's life: the HTTP upgrade, frames in and out, the close handshake, the
 * output queue with back-pressure, and the timeouts (handshake, idle ping, close). It reads from
 * the server's shared buffer and keeps private memory only while something is partial. */
#ifndef WSL_CONN_H
#define WSL_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "frame.h"
#include "topic.h"

typedef struct wsl_server wsl_server;
typedef struct wsl_conn wsl_conn;

typedef enum {
    WSL_CONN_HANDSHAKE,  /* reading the HTTP request */
    WSL_CONN_RESPONDING, /* writing a plain HTTP answer; closes once it is written */
    WSL_CONN_OPEN,       /* WebSocket open: the script sees it */
    WSL_CONN_CLOSING,    /* a close frame went one way or both; no more messages */
    WSL_CONN_DEAD,       /* socket closed; freed by libuv's close callback */
} wsl_conn_state;

/* Growable bytes owned by one connection (the request being read, a partial frame header or
 * control frame, a message spanning reads). NULL while not needed. */
typedef struct wsl_bytes {
    uint32_t len, cap;
    uint8_t data[];
} wsl_bytes;

/* What the upgrade request said, kept for the script: one allocation made at the upgrade,
 * freed with the connection. Strings are NUL-terminated inside data. */
typedef struct wsl_conn_info {
    uint16_t remote_len, path_len, query_len, protocol_len, nheaders;
    uint32_t headers_len;
    char data[]; /* remote, path, query, protocol, then nheaders x (lower-case name, value) */
} wsl_conn_info;

/* Created by the server on accept, freed by the libuv close callback after wsl_conn_destroy.
 * Everything it points to is its own, except srv. */
struct wsl_conn {
    uv_poll_t poll; /* poll.data == this connection */
    wsl_server *srv;
    uint64_t id;
    wsl_conn *prev, *next; /* the server's list for this state (see server.h) */
    wsl_conn *dirty_next;  /* the server's list of connections with output to write */
    uint64_t deadline;     /* loop time (ms) when this state's timeout fires */
    wsl_rx rx;
    wsl_queue out;
    wsl_bytes *in;  /* unconsumed input: the request so far, or a partial frame */
    wsl_bytes *msg; /* a message spanning reads or frames */
    wsl_conn_info *info;
    wsl_sublist subs; /* topics, owned by the server's wsl_topics */
    int fd;
    int lua_ref;         /* the script's reference to this connection's Lua object; 0: none */
    uint8_t state;       /* wsl_conn_state */
    uint8_t list;        /* which of the server's lists holds it (WSL_LIST_*) */
    uint16_t close_code; /* reported to on_close */
    unsigned events : 2; /* UV_READABLE | UV_WRITABLE currently polled */
    unsigned dirty : 1;  /* on the server's dirty list */
    unsigned opened : 1; /* on_open ran: on_close must run exactly once */
    unsigned close_sent : 1;
    unsigned close_rcvd : 1;
    unsigned failing : 1;   /* close without waiting for the peer's reply */
    unsigned lingering : 1; /* our side is shut down; read and discard until EOF */
    unsigned pinged : 1;    /* an idle ping is outstanding */
    unsigned drain_armed : 1;
};

/* A frame encoded once and sent to any number of connections: small frames are copied into each
 * recipient's queue (the smallest from one contiguous copy of the whole frame), large ones shared
 * by reference (made on first use). Lives on the stack of whoever sends. */
#define WSL_MSG_WIRE 128

typedef struct wsl_msg {
    uint8_t hdr[WSL_SERVER_HDR_MAX];
    uint8_t hlen;
    const uint8_t *payload;
    size_t len;
    wsl_buf *shared;
    size_t wire_len;            /* bytes in wire; 0 when the frame does not fit */
    uint8_t wire[WSL_MSG_WIRE]; /* header and payload together */
} wsl_msg;

void wsl_msg_init(wsl_msg *m, int opcode, const void *payload, size_t len);
void wsl_msg_release(wsl_msg *m);

/* Take over an accepted, non-blocking socket. NULL when out of memory (fd left open). */
wsl_conn *wsl_conn_new(wsl_server *srv, int fd);

/* 0, WSL_ECLOSED when the connection is not open, WSL_ENOMEM. */
#define WSL_ECLOSED (-1)
#define WSL_ENOMEM  (-2)
int wsl_conn_send(wsl_conn *c, wsl_msg *m);

/* Start the close handshake with code and reason (truncated to fit a control frame). 0, or
 * WSL_ECLOSED when it was not open. */
int wsl_conn_close(wsl_conn *c, unsigned code, const char *reason, size_t len);

/* Close the socket now (on_close 1006 if the script saw the connection open). */
void wsl_conn_destroy(wsl_conn *c);

/* Write what is queued; called by the server once per loop iteration for dirty connections. */
void wsl_conn_flush(wsl_conn *c);

/* A state timeout passed (the server's sweep calls this for expired connections). */
void wsl_conn_expire(wsl_conn *c);

static inline bool wsl_conn_is_open(const wsl_conn *c)
{
    return c->state == WSL_CONN_OPEN;
}

/* "ip:port" of the peer into buf (at least 64 bytes). */
const char *wsl_conn_peer(const wsl_conn *c, char *buf, size_t cap);

/* Info strings (valid while the connection exists; "" before the upgrade). */
const char *wsl_conn_remote(const wsl_conn *c);
const char *wsl_conn_path(const wsl_conn *c);
const char *wsl_conn_query(const wsl_conn *c);
const char *wsl_conn_protocol(const wsl_conn *c);
/* Headers: i from 0 while it returns true. */
bool wsl_conn_header(const wsl_conn *c, size_t i, const char **name, const char **value);

#endif
