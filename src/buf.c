/* Refcounted buffers and per-connection output queues. Chunks (WSL_CHUNK_SIZE) and queue nodes
 * come from free lists bounded in size, so steady traffic reuses memory instead of calling
 * malloc; a burst's extra memory goes back to the allocator once the free lists are full. */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

#define CHUNK_CAP (WSL_CHUNK_SIZE - sizeof(wsl_buf))
#define POOL_MAX  1024 /* free chunks (16 MiB) and nodes kept for reuse */

typedef struct pool_item {
    struct pool_item *next;
} pool_item;

static pool_item *free_chunks, *free_segs;
static unsigned n_free_chunks, n_free_segs;

wsl_buf *wsl_buf_new(size_t cap)
{
    wsl_buf *b;
    if (cap <= CHUNK_CAP && free_chunks) {
        b = (wsl_buf *)free_chunks;
        free_chunks = free_chunks->next;
        n_free_chunks--;
        cap = CHUNK_CAP;
    } else {
        if (cap > UINT32_MAX - WSL_CHUNK_SIZE) return NULL;
        if (cap <= CHUNK_CAP) cap = CHUNK_CAP; /* every small buffer is a reusable chunk */
        b = malloc(sizeof(wsl_buf) + cap);
        if (!b) return NULL;
    }
    b->refs = 1;
    b->len = 0;
    b->cap = (uint32_t)cap;
    return b;
}

void wsl_buf_unref(wsl_buf *b)
{
    if (--b->refs > 0) return;
    if (b->cap == CHUNK_CAP && n_free_chunks < POOL_MAX) {
        pool_item *it = (pool_item *)b;
        it->next = free_chunks;
        free_chunks = it;
        n_free_chunks++;
        return;
    }
    free(b);
}

static wsl_seg *seg_new(wsl_buf *b, uint8_t own)
{
    wsl_seg *s;
    if (free_segs) {
        s = (wsl_seg *)free_segs;
        free_segs = free_segs->next;
        n_free_segs--;
    } else if (!(s = malloc(sizeof *s))) {
        return NULL;
    }
    *s = (wsl_seg){.buf = b, .own = own};
    return s;
}

static void seg_free(wsl_seg *s)
{
    wsl_buf_unref(s->buf);
    if (n_free_segs < POOL_MAX) {
        pool_item *it = (pool_item *)s;
        it->next = free_segs;
        free_segs = it;
        n_free_segs++;
    } else {
        free(s);
    }
}

static void push(wsl_queue *q, wsl_seg *s)
{
    if (q->tail)
        q->tail->next = s;
    else
        q->head = s;
    q->tail = s;
    q->bytes += s->buf->len;
}

int wsl_queue_copy(wsl_queue *q, const void *hdr, size_t hlen, const void *payload, size_t n)
{
    size_t need = hlen + n;
    wsl_seg *t = q->tail;
    if (!t || !t->own || t->buf->cap - t->buf->len < need) {
        wsl_buf *b = wsl_buf_new(need);
        if (!b) return -1;
        wsl_seg *s = seg_new(b, b->cap == CHUNK_CAP);
        if (!s) {
            wsl_buf_unref(b);
            return -1;
        }
        push(q, s);
        t = s;
    }
    uint8_t *dst = t->buf->data + t->buf->len;
    memcpy(dst, hdr, hlen);
    if (n) memcpy(dst + hlen, payload, n);
    t->buf->len += (uint32_t)need;
    q->bytes += need;
    return 0;
}

int wsl_queue_share(wsl_queue *q, wsl_buf *b)
{
    wsl_seg *s = seg_new(wsl_buf_ref(b), 0);
    if (!s) {
        wsl_buf_unref(b);
        return -1;
    }
    push(q, s);
    return 0;
}

int wsl_queue_iov(const wsl_queue *q, struct iovec *iov, int max)
{
    int n = 0;
    for (const wsl_seg *s = q->head; s && n < max; s = s->next) {
        iov[n].iov_base = s->buf->data + s->off;
        iov[n].iov_len = s->buf->len - s->off;
        n++;
    }
    return n;
}

void wsl_queue_consume(wsl_queue *q, size_t n)
{
    q->bytes -= n;
    while (n > 0) {
        wsl_seg *s = q->head;
        size_t left = s->buf->len - s->off;
        if (n < left) {
            s->off += (uint32_t)n;
            return;
        }
        n -= left;
        q->head = s->next;
        if (!q->head) q->tail = NULL;
        seg_free(s);
    }
}

void wsl_queue_truncate(wsl_queue *q)
{
    wsl_seg *first = q->head;
    if (!first) return;
    wsl_seg *s = first->next;
    while (s) {
        wsl_seg *next = s->next;
        q->bytes -= s->buf->len - s->off;
        seg_free(s);
        s = next;
    }
    first->next = NULL;
    q->tail = first;
}

void wsl_queue_clear(wsl_queue *q)
{
    wsl_seg *s = q->head;
    while (s) {
        wsl_seg *next = s->next;
        seg_free(s);
        s = next;
    }
    *q = (wsl_queue){0};
}

void wsl_buf_pool_drain(void)
{
    while (free_chunks) {
        pool_item *it = free_chunks;
        free_chunks = it->next;
        free(it);
    }
    while (free_segs) {
        pool_item *it = free_segs;
        free_segs = it->next;
        free(it);
    }
    n_free_chunks = n_free_segs = 0;
}
