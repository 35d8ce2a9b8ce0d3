/* The write batch (uring.h) over io_uring's raw interface (io_uring_setup(2), io_uring_enter(2)):
 * the kernel headers are all it needs. Each write is an IORING_OP_SEND with MSG_DONTWAIT, so the
 * kernel completes it inside the enter call, taking what the socket has room for, and the arena
 * is free again when the call returns. */
#include "uring.h"

#include <errno.h>
#include <linux/io_uring.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static int setup(unsigned entries, struct io_uring_params *p)
{
    /* The flags only spare work (no interrupting task work, one submitter); kernels before 6.0
     * refuse some of them, and then get none. */
    p->flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER;
    int fd = (int)syscall(__NR_io_uring_setup, entries, p);
    if (fd < 0 && errno == EINVAL) {
        memset(p, 0, sizeof *p);
        fd = (int)syscall(__NR_io_uring_setup, entries, p);
    }
    return fd;
}

wsl_uring *wsl_uring_new(unsigned depth, size_t arena, wsl_uring_done done)
{
    if (arena > INT32_MAX) { /* a write's length must fit a completion's result */
        errno = EINVAL;
        return NULL;
    }
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    int fd = setup(depth, &p);
    if (fd < 0) return NULL;
    if (!(p.features & IORING_FEAT_SINGLE_MMAP) || !(p.features & IORING_FEAT_NODROP)) {
        close(fd); /* kernels before 5.5: not worth a second code path */
        errno = ENOSYS;
        return NULL;
    }
    wsl_uring *u = calloc(1, sizeof *u + depth * sizeof(void *));
    uint8_t *a = malloc(arena);
    size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    size_t rlen = sq_len > cq_len ? sq_len : cq_len;
    size_t slen = p.sq_entries * sizeof(struct io_uring_sqe);
    void *r = MAP_FAILED, *s = MAP_FAILED;
    if (u && a) {
        r = mmap(NULL, rlen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                 IORING_OFF_SQ_RING);
        s = mmap(NULL, slen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                 IORING_OFF_SQES);
    }
    if (r == MAP_FAILED || s == MAP_FAILED) {
        int e = u && a ? errno : ENOMEM;
        if (r != MAP_FAILED) munmap(r, rlen);
        if (s != MAP_FAILED) munmap(s, slen);
        free(u);
        free(a);
        close(fd);
        errno = e;
        return NULL;
    }
    uint8_t *rb = r;
    u->fd = fd;
    u->rings = r;
    u->rings_len = rlen;
    u->sqes = s;
    u->sqes_len = slen;
    u->sq_tail = (unsigned *)(rb + p.sq_off.tail);
    u->tail = *u->sq_tail;
    u->sq_mask = *(unsigned *)(rb + p.sq_off.ring_mask);
    u->cq_head = (unsigned *)(rb + p.cq_off.head);
    u->cq_tail = (unsigned *)(rb + p.cq_off.tail);
    u->cq_mask = *(unsigned *)(rb + p.cq_off.ring_mask);
    u->cqes = (struct io_uring_cqe *)(rb + p.cq_off.cqes);
    unsigned *array = (unsigned *)(rb + p.sq_off.array);
    struct io_uring_sqe *q = s;
    for (unsigned i = 0; i < p.sq_entries; i++) {
        array[i] = i; /* slot i of the ring is always sqes[i] */
        /* The kernel only reads them: what every write has in common is written once. Each is
         * completed at once, never waiting for room. */
        memset(&q[i], 0, sizeof q[i]);
        q[i].opcode = IORING_OP_SEND;
        q[i].msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL;
    }
    u->done = done;
    u->depth = depth < p.sq_entries ? depth : p.sq_entries;
    u->cap = arena;
    u->arena = a;
    return u;
}

void wsl_uring_free(wsl_uring *u)
{
    if (!u) return;
    munmap(u->sqes, u->sqes_len);
    munmap(u->rings, u->rings_len);
    if (u->fd >= 0) close(u->fd);
    free(u->arena);
    free(u);
}

static inline struct io_uring_sqe *sqe(const wsl_uring *u, unsigned i)
{
    return &u->sqes[(u->tail + i) & u->sq_mask];
}

size_t wsl_uring_bytes_of(const wsl_uring *u, const void *owner)
{
    size_t n = 0;
    for (unsigned i = 0; i < u->n; i++)
        if (u->owner[i] == owner) n += sqe(u, i)->len;
    return n;
}

static inline void report(wsl_uring *u, unsigned i, int res)
{
    const struct io_uring_sqe *q = sqe(u, i);
    u->done(u->owner[i], (const uint8_t *)(uintptr_t)q->addr, q->len, res);
}

/* The writes from i on, one by one: a lone one, or all once the ring failed (it should not).
 * The bytes of those taken whole. */
static size_t each(wsl_uring *u, unsigned i)
{
    size_t whole = 0;
    for (; i < u->n; i++) {
        const struct io_uring_sqe *q = sqe(u, i);
        ssize_t r;
        do
            r = send(q->fd, (void *)(uintptr_t)q->addr, q->len, MSG_NOSIGNAL | MSG_DONTWAIT);
        while (r < 0 && errno == EINTR);
        if (r == (ssize_t)q->len)
            whole += q->len;
        else
            report(u, i, r < 0 ? -errno : (int)r);
    }
    return whole;
}

/* Completions until `want` have come; those not taken whole reported. The bytes of the others. */
static size_t reap(wsl_uring *u, unsigned want)
{
    size_t whole = 0;
    unsigned got = 0;
    while (got < want) {
        unsigned head = *u->cq_head;
        unsigned tail = atomic_load_explicit((_Atomic unsigned *)u->cq_tail, memory_order_acquire);
        if (head == tail) {
            /* Not posted yet (a kernel that defers completions to task work): wait for them. */
            int r = (int)syscall(__NR_io_uring_enter, u->fd, 0, want - got, IORING_ENTER_GETEVENTS,
                                 NULL, 0);
            if (r < 0 && errno != EINTR) break;
            continue;
        }
        for (; head != tail; head++, got++) {
            const struct io_uring_cqe *cqe = &u->cqes[head & u->cq_mask];
            int32_t len = (int32_t)(cqe->user_data >> 32); /* see wsl_uring_add_placed */
            if (cqe->res == len)
                whole += (size_t)len;
            else
                report(u, (uint32_t)cqe->user_data, cqe->res);
        }
        atomic_store_explicit((_Atomic unsigned *)u->cq_head, head, memory_order_release);
    }
    return whole;
}

size_t wsl_uring_submit(wsl_uring *u)
{
    unsigned n = u->n;
    size_t whole;
    if (u->fd < 0 || n <= 1) { /* a lone write costs less as a send */
        whole = each(u, 0);
    } else {
        atomic_store_explicit((_Atomic unsigned *)u->sq_tail, u->tail + n, memory_order_release);
        int r;
        do
            r = (int)syscall(__NR_io_uring_enter, u->fd, n, 0, 0, NULL, 0);
        while (r < 0 && errno == EINTR);
        unsigned taken = r > 0 ? (unsigned)r : 0;
        if (taken < n) {
            /* What the kernel did not take is withdrawn (it reads the tail only when entered)
             * and done the old way; the ring is not used again. */
            *u->sq_tail = u->tail + taken;
            whole = reap(u, taken);
            close(u->fd);
            u->fd = -1;
            whole += each(u, taken);
        } else {
            whole = reap(u, n);
        }
        u->tail += n;
    }
    u->n = 0;
    u->used = 0;
    return whole;
}
