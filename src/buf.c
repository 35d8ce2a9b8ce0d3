/* Refcounted buffers and per-connection output queues. Chunks (WSL_CHUNK_SIZE) and queue nodes
 * come from free lists bounded in size, so steady traffic reuses memory instead of calling
 * malloc; a burst's extra memory goes back to the allocator once the free lists are full. */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

/* Buffers up to WSL_CHUNK_SIZE come in power-of-two classes from 256 bytes, each class with a
 * free list of at most POOL_BYTES: an idle connection's first small frame costs 256 bytes, a
 * burst grows its chunks geometrically, and steady traffic reuses instead of calling malloc. */
#define MIN_CLASS_SHIFT 8
#define NCLASSES        7 /* 256 B .. 16 KiB */
#define POOL_BYTES      (256 * 1024)

typedef struct pool_item {
    struct pool_item *next;
} pool_item;

static pool_item *free_chunks[NCLASSES], *free_segs;
static unsigned n_free_chunks[NCLASSES], n_free_segs;

/* The class whose size (header included) holds cap bytes of data, or -1 for larger ones. */
static int size_class(size_t cap)
{
    size_t total = cap + sizeof(wsl_buf);
    for (int c = 0; c < NCLASSES; c++)
        if (total <= (size_t)1 << (MIN_CLASS_SHIFT + c)) return c;
    return -1;
}

static size_t class_cap(int c)
{
    return ((size_t)1 << (MIN_CLASS_SHIFT + c)) - sizeof(wsl_buf);
}

wsl_buf *wsl_buf_new(size_t cap)
{
    wsl_buf *b;
    int c = size_class(cap);
    if (c >= 0 && free_chunks[c]) {
        b = (wsl_buf *)free_chunks[c];
        free_chunks[c] = free_chunks[c]->next;
        n_free_chunks[c]--;
    } else {
        if (cap > UINT32_MAX - WSL_CHUNK_SIZE) return NULL;
        b = malloc(sizeof(wsl_buf) + (c >= 0 ? class_cap(c) : cap));
        if (!b) return NULL;
    }
    b->refs = 1;
    b->len = 0;
    b->cap = (uint32_t)(c >= 0 ? class_cap(c) : cap);
    return b;
}

void wsl_buf_unref(wsl_buf *b)
{
    if (--b->refs > 0) return;
    int c = size_class(b->cap);
    if (c >= 0 && b->cap == class_cap(c) &&
        (size_t)(n_free_chunks[c] + 1) << (MIN_CLASS_SHIFT + c) <= POOL_BYTES) {
        pool_item *it = (pool_item *)b;
        it->next = free_chunks[c];
        free_chunks[c] = it;
        n_free_chunks[c]++;
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
    if (n_free_segs < POOL_BYTES / sizeof(wsl_seg)) {
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
        /* Each new chunk of a queue is twice the last, so a burst takes few chunks. */
        size_t want = t && t->own ? 2 * (size_t)t->buf->cap : 0;
        if (want > WSL_CHUNK_SIZE - sizeof(wsl_buf)) want = WSL_CHUNK_SIZE - sizeof(wsl_buf);
        wsl_buf *b = wsl_buf_new(need > want ? need : want);
        if (!b) return WSL_ENOMEM;
        wsl_seg *s = seg_new(b, size_class(b->cap) >= 0);
        if (!s) {
            wsl_buf_unref(b);
            return WSL_ENOMEM;
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

int wsl_queue_prepend(wsl_queue *q, const void *p, size_t n)
{
    if (!q->head) return wsl_queue_copy(q, p, n, NULL, 0);
    wsl_buf *b = wsl_buf_new(n);
    if (!b) return WSL_ENOMEM;
    wsl_seg *s = seg_new(b, 0); /* not the tail: nothing is ever appended to it */
    if (!s) {
        wsl_buf_unref(b);
        return WSL_ENOMEM;
    }
    memcpy(b->data, p, n);
    b->len = (uint32_t)n;
    s->next = q->head;
    q->head = s;
    q->bytes += n;
    return 0;
}

int wsl_queue_share(wsl_queue *q, wsl_buf *b)
{
    wsl_seg *s = seg_new(wsl_buf_ref(b), 0);
    if (!s) {
        wsl_buf_unref(b);
        return WSL_ENOMEM;
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
    for (int c = 0; c < NCLASSES; c++) {
        while (free_chunks[c]) {
            pool_item *it = free_chunks[c];
            free_chunks[c] = it->next;
            free(it);
        }
        n_free_chunks[c] = 0;
    }
    while (free_segs) {
        pool_item *it = free_segs;
        free_segs = it->next;
        free(it);
    }
    n_free_segs = 0;
}
