/* Byte buffers for outgoing data. A wsl_buf is refcounted so one encoded frame can sit in many
 * connections' queues at once; a wsl_queue is one connection's pending output: small frames are
 * copied into a private chunk (so many of them leave in one write), large ones are queued by
 * reference. Chunks and queue nodes are recycled through free lists, so a steady stream of
 * messages allocates nothing. Single-threaded: the whole server runs on one loop. */
#ifndef WSL_BUF_H
#define WSL_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

#define WSL_CHUNK_SIZE 16384 /* largest private chunk, header included */
#define WSL_COPY_MAX   2048  /* frames up to this size are copied rather than shared */

/* Owned by its references: whoever holds one calls wsl_buf_unref once; the last one frees it. */
typedef struct wsl_buf {
    uint32_t refs;
    uint32_t len; /* bytes used */
    uint32_t cap; /* bytes available in data */
    uint8_t data[];
} wsl_buf;

wsl_buf *wsl_buf_new(size_t cap); /* refs = 1, len = 0; NULL when out of memory */
void wsl_buf_unref(wsl_buf *b);

static inline wsl_buf *wsl_buf_ref(wsl_buf *b)
{
    b->refs++;
    return b;
}

/* One queued range of a buffer; the queue holds a reference to buf. */
typedef struct wsl_seg {
    struct wsl_seg *next;
    wsl_buf *buf;
    uint32_t off; /* first byte not yet written */
    uint8_t own;  /* buf is this queue's private chunk: small frames may be appended */
} wsl_seg;

/* Embedded in a connection; empty queues hold no memory. */
typedef struct wsl_queue {
    wsl_seg *head, *tail;
    size_t bytes; /* queued and not yet written */
} wsl_queue;

/* Append hdr then payload, copied. 0, or WSL_ENOMEM (nothing was queued). */
int wsl_queue_copy(wsl_queue *q, const void *hdr, size_t hlen, const void *payload, size_t n);
/* wsl_queue_copy of one piece, inlined for the common case: room left in the private chunk at
 * the tail (a broadcast appends one small frame to every recipient this way). */
static inline int wsl_queue_append(wsl_queue *q, const void *p, size_t n)
{
    wsl_seg *t = q->tail;
    if (t && t->own && t->buf->cap - t->buf->len >= n) {
        memcpy(t->buf->data + t->buf->len, p, n);
        t->buf->len += (uint32_t)n;
        q->bytes += n;
        return 0;
    }
    return wsl_queue_copy(q, p, n, NULL, 0);
}

/* Put n bytes, copied, ahead of everything queued. 0 or WSL_ENOMEM (nothing was queued). */
int wsl_queue_prepend(wsl_queue *q, const void *p, size_t n);
/* Append all of b by reference (takes a new reference). 0 or WSL_ENOMEM. */
int wsl_queue_share(wsl_queue *q, wsl_buf *b);
/* Fill up to max iovecs with the queued bytes, oldest first; returns the count. */
int wsl_queue_iov(const wsl_queue *q, struct iovec *iov, int max);
/* n bytes were written: release what is done. */
void wsl_queue_consume(wsl_queue *q, size_t n);
/* Drop everything after the first segment (whose bytes may be partly written already). */
void wsl_queue_truncate(wsl_queue *q);
void wsl_queue_clear(wsl_queue *q);

/* Return pooled chunks and nodes to the allocator (at exit, so leak checkers see a clean heap). */
void wsl_buf_pool_drain(void);

#endif
