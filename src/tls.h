/* The TLS transport of --tls-listen (OpenSSL 3): the server's certificate context, reloadable,
 * and one connection's TLS state. Connections keep today's socket design: OpenSSL reads and
 * writes through one loop-wide BIO of ours, so ciphertext is read straight into OpenSSL's record
 * buffer and what one SSL_write produces leaves in one write(2), the rest kept here and counted
 * as not yet handed to the kernel. Nothing here runs for plain connections. */
#ifndef WSL_TLS_H
#define WSL_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"

/* Call first thing in main, before anything uses OpenSSL: its record buffers then come from a
 * small stack kept by the loop rather than from malloc (see tls.c). Optional: without it, or
 * called too late, OpenSSL uses malloc. */
void wsl_tls_global_init(void);

/* OpenSSL's SSL_CTX, under its own struct name so that no caller needs OpenSSL's headers. */
typedef struct ssl_ctx_st wsl_tls_ctx;

/* A server context for cert (PEM: the leaf first, then its chain) and key (PEM): TLS 1.2 and
 * 1.3, OpenSSL's default ciphers, ALPN http/1.1, no renegotiation, buffers released when idle,
 * resumption by stateless tickets (no session cache). 0, or a negative code with why naming the
 * file and the reason ("--tls-key FILE: does not match the certificate in FILE"). */
int wsl_tls_ctx_new(wsl_tls_ctx **out, const char *cert, const char *key, char *why, size_t whycap);
/* Drops the caller's reference: connections made with ctx keep theirs (OpenSSL counts them), so
 * a reload swaps contexts without touching the connections that live on the old one. */
void wsl_tls_ctx_free(wsl_tls_ctx *ctx);
/* The serial number of ctx's certificate in hex, for the log; "" when unknown. */
const char *wsl_tls_ctx_serial(const wsl_tls_ctx *ctx, char *buf, size_t cap);

/* One connection's TLS state, embedded in its connection; wsl_tls_init and wsl_tls_free. */
typedef struct wsl_tls {
    struct ssl_st *ssl; /* owns a reference to its context */
    uint8_t *out;       /* ciphertext the kernel has not taken yet: malloc'ed, NULL when none */
    uint32_t out_len;   /* bytes in out */
    uint32_t out_off;   /* first byte not yet written */
    int fd;
    unsigned readable : 1; /* the poll said readable: OpenSSL may read the socket */
    unsigned eof : 1;      /* the socket read EOF */
    unsigned notified : 1; /* close_notify is queued */
    unsigned ended : 1;    /* the end (or an error) came behind plaintext: the next read says it */
    unsigned full : 1;     /* the last read filled the caller's buffer: OpenSSL may hold more */
    unsigned failed : 1;   /* TLS broke: no close_notify */
    unsigned done_hs : 1;  /* the handshake was over once (OpenSSL forgets it on an error) */
    unsigned inflight : 1; /* a record waits in a write batch: what follows is kept behind it */
    int err;               /* errno of a failed socket read, 0 when none */
} wsl_tls;

/* 0, or WSL_ENOMEM. The socket is the connection's: wsl_tls_free does not close it. */
int wsl_tls_init(wsl_tls *t, wsl_tls_ctx *ctx, int fd);
void wsl_tls_free(wsl_tls *t);

/* The socket is readable (the poll said so): the next read may take from it. */
static inline void wsl_tls_readable(wsl_tls *t)
{
    t->readable = 1;
}

/* Plaintext into buf[0..cap), as much as OpenSSL holds and the socket (once it was said
 * readable) gives: the handshake runs first, its answers leaving as they are made. A count;
 * 0 at the end (close_notify, or EOF); -EAGAIN when nothing is there yet; -EPROTO when the peer
 * broke TLS (wsl_tls_error says how); another negative errno when the socket failed. */
ssize_t wsl_tls_read(wsl_tls *t, void *buf, size_t cap);

/* Whether OpenSSL may hold input (plaintext, or records read ahead) that the socket's
 * readiness will not announce: the last read stopped at a full buffer, or the end is still to
 * be said. The connection must read again without waiting for the poll; a read that finds
 * nothing clears it, so asking again always makes progress. */
bool wsl_tls_more(const wsl_tls *t);

/* Encrypt p[0..n) and hand the records to the kernel (what it does not take is kept). 0, or a
 * negative code (WSL_ENOMEM, -EPROTO, a write error). */
int wsl_tls_write(wsl_tls *t, const void *p, size_t n);

/* wsl_tls_write, but a lone record with nothing kept ahead of it goes to batch u (for owner)
 * rather than to its own write(2): then t->inflight is set until the batch is submitted (whoever
 * submits it clears it). The batch is expected to have WSL_TLS_RECORD_EXTRA bytes of room
 * beyond n; without, the record is written directly. */
struct wsl_uring;
#define WSL_TLS_RECORD_EXTRA 320 /* what a record adds to its bytes, at most (header, MAC, pad) */
int wsl_tls_write_batched(wsl_tls *t, const void *p, size_t n, struct wsl_uring *u, void *owner);
/* The batch wrote t's record but for p[0..n): that goes back ahead of the ciphertext kept
 * since. 0 or WSL_ENOMEM. */
int wsl_tls_unsent(wsl_tls *t, const uint8_t *p, size_t n);

/* Write the ciphertext kept, then encrypt what q holds (coalesced: one SSL_write per
 * WSL_TLS_BATCH bytes, however many frames) and write it: one write(2) per batch, and no new
 * batch is made while the kernel has not taken the last one. Consumes from q what was
 * encrypted. 0 when everything is with the kernel; -EAGAIN when the kernel takes no more (poll
 * for writable); another negative code when the connection is broken. */
#define WSL_TLS_BATCH (64 * 1024)
int wsl_tls_send(wsl_tls *t, wsl_queue *q);

/* Queue close_notify (once, and only after the handshake) and try to write it. 0 or negative. */
int wsl_tls_close_notify(wsl_tls *t);

/* Whether the handshake is complete (or was, before TLS broke). */
bool wsl_tls_established(const wsl_tls *t);

/* Ciphertext made and not yet handed to the kernel. */
static inline size_t wsl_tls_pending(const wsl_tls *t)
{
    return t->out_len - t->out_off;
}

/* Why the last -EPROTO happened (OpenSSL's reason, e.g. "wrong version number"). */
const char *wsl_tls_error(void);

/* Free the loop-wide BIO and scratch buffers (at exit, so leak checkers see a clean heap). */
void wsl_tls_cleanup(void);

#endif
