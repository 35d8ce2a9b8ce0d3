/* A batch of socket writes handed to the kernel with one io_uring_enter(2) instead of one
 * send(2) each. Writes are copied into the batch's arena (or made there in place) and never
 * wait: a socket that takes less than all reports how much it took, exactly as a non-blocking
 * send would. The batch never writes on its own: its owner submits it, and so knows when nothing
 * waits in it any more. */
#ifndef WSL_URING_H
#define WSL_URING_H

#include <linux/io_uring.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct wsl_uring wsl_uring;

/* A write its socket did not take whole: res is the bytes it took (0..n-1) or a negative errno
 * (-EAGAIN when it took nothing). p and n are the bytes that were to be written (valid during
 * the call). Writes taken whole are not reported: the common case costs no call. */
typedef void (*wsl_uring_done)(void *owner, const uint8_t *p, size_t n, int res);

/* A batch of up to `depth` writes and `arena` bytes, or NULL with errno set (io_uring is absent
 * or forbidden: ENOSYS, EPERM, ...; the caller then writes with send(2)). */
wsl_uring *wsl_uring_new(unsigned depth, size_t arena, wsl_uring_done done);
void wsl_uring_free(wsl_uring *u);

/* One more write: p[0..n), copied, to fd for owner (handed back to `done`). False when the
 * batch has no room for it (wsl_uring_fits). */
static inline bool wsl_uring_add(wsl_uring *u, int fd, const void *p, size_t n, void *owner);
/* Whether a write of n bytes would join the batch now. */
static inline bool wsl_uring_fits(const wsl_uring *u, size_t n);
/* Where the next write's n bytes may be written in place, for wsl_uring_add_placed: the arena's
 * free part, or NULL when the batch has no room for them. */
static inline uint8_t *wsl_uring_room(const wsl_uring *u, size_t n);
/* wsl_uring_add for bytes already at p, which wsl_uring_room gave with room for n. Nothing may be
 * added in between; a submit may (it leaves the bytes alone). */
static inline void wsl_uring_add_placed(wsl_uring *u, int fd, const uint8_t *p, size_t n,
                                        void *owner);
/* Writes waiting for wsl_uring_submit, and the owner of write i of them. */
static inline unsigned wsl_uring_queued(const wsl_uring *u);
static inline void *wsl_uring_owner(const wsl_uring *u, unsigned i);
/* Bytes waiting for wsl_uring_submit on owner's behalf. */
size_t wsl_uring_bytes_of(const wsl_uring *u, const void *owner);
/* Hand every waiting write to the kernel (a lone one is a plain send), report those not taken
 * whole to `done` in the order added, and empty the batch. `done` must not add writes. Returns
 * the bytes of the writes taken whole. Never blocks on a socket. */
size_t wsl_uring_submit(wsl_uring *u);

/* Owned by the server (wsl_uring_new, wsl_uring_free: the ring, the arena); in the open only so
 * that adding an entry is inlined. */
struct wsl_uring {
    int fd;            /* the ring; -1 once it failed (then plain calls, the SQEs as our notes) */
    unsigned *sq_tail; /* shared with the kernel */
    unsigned tail;     /* ours: where the batch's first SQE is */
    unsigned sq_mask;
    struct io_uring_sqe *sqes; /* entry i of the batch is sqes[(tail + i) & sq_mask] */
    unsigned *cq_head, *cq_tail;
    unsigned cq_mask;
    struct io_uring_cqe *cqes;
    void *rings;
    size_t rings_len, sqes_len;

    wsl_uring_done done;
    unsigned depth, n; /* n writes added */
    size_t cap, used;  /* arena bytes */
    uint8_t *arena;
    void *owner[]; /* depth of them: write i's */
};

static inline bool wsl_uring_fits(const wsl_uring *u, size_t n)
{
    return u->n < u->depth && n <= u->cap - u->used;
}

static inline unsigned wsl_uring_queued(const wsl_uring *u)
{
    return u->n;
}

static inline void *wsl_uring_owner(const wsl_uring *u, unsigned i)
{
    return u->owner[i];
}

static inline uint8_t *wsl_uring_room(const wsl_uring *u, size_t n)
{
    return wsl_uring_fits(u, n) ? u->arena + u->used : NULL;
}

static inline void wsl_uring_add_placed(wsl_uring *u, int fd, const uint8_t *p, size_t n,
                                        void *owner)
{
    /* Its opcode and flags were written once (wsl_uring_new). */
    struct io_uring_sqe *q = &u->sqes[(u->tail + u->n) & u->sq_mask];
    q->fd = fd;
    q->addr = (uint64_t)(uintptr_t)p;
    q->len = (uint32_t)n;
    q->user_data = (uint64_t)n << 32 | u->n; /* its length: a whole write is told at a glance */
    u->owner[u->n++] = owner;
    u->used = (size_t)(p - u->arena) + n; /* (after a submit meanwhile, what is before p is free) */
}

static inline bool wsl_uring_add(wsl_uring *u, int fd, const void *p, size_t n, void *owner)
{
    uint8_t *at = wsl_uring_room(u, n);
    if (!at) return false;
    memcpy(at, p, n);
    wsl_uring_add_placed(u, fd, at, n, owner);
    return true;
}

#endif
