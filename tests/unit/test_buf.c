/* Output queues (src/buf.c): copies coalesce into private chunks, shared buffers are queued by
 * reference and released once written, iovecs cover exactly the unwritten bytes in order, and
 * prepend/consume/truncate/clear keep the byte count right. */
#include <stdint.h>
#include <stdlib.h>

#include "buf.h"
#include "test.h"

/* Everything queued, gathered through the iovecs as writev would send it. */
static size_t gather(const wsl_queue *q, uint8_t *out, size_t cap)
{
    struct iovec iov[64];
    int n = wsl_queue_iov(q, iov, 64);
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        if (len + iov[i].iov_len > cap) return SIZE_MAX;
        memcpy(out + len, iov[i].iov_base, iov[i].iov_len);
        len += iov[i].iov_len;
    }
    return len;
}

static int count_iov(const wsl_queue *q)
{
    struct iovec iov[64];
    return wsl_queue_iov(q, iov, 64);
}

static void test_copies_coalesce(void)
{
    wsl_queue q = {0};
    CHECK_EQ(count_iov(&q), 0);
    CHECK_EQ(wsl_queue_copy(&q, "ab", 2, "cde", 3), 0);
    CHECK_EQ(wsl_queue_append(&q, "fg", 2), 0);
    CHECK_EQ(wsl_queue_copy(&q, "h", 1, NULL, 0), 0);
    CHECK_EQ(q.bytes, 8);
    CHECK_EQ(count_iov(&q), 1); /* small frames share one chunk: one iovec for the write */
    uint8_t out[64];
    size_t n = gather(&q, out, sizeof out);
    CHECK_MEM(out, n, "abcdefgh");
    wsl_queue_clear(&q);
    CHECK_EQ(q.bytes, 0);
    CHECK(q.head == NULL && q.tail == NULL);
}

static void test_chunks_grow_and_keep_order(void)
{
    wsl_queue q = {0};
    uint8_t frame[1000], expect[100 * 1000], out[100 * 1000];
    size_t total = 0;
    for (int i = 0; i < 100; i++) {
        memset(frame, 'a' + i % 26, sizeof frame);
        CHECK_EQ(wsl_queue_append(&q, frame, sizeof frame), 0);
        memcpy(expect + total, frame, sizeof frame);
        total += sizeof frame;
    }
    CHECK_EQ(q.bytes, total);
    CHECK(count_iov(&q) > 1);  /* more than one chunk ... */
    CHECK(count_iov(&q) < 20); /* ... but far fewer than frames: chunks double */
    size_t n = gather(&q, out, sizeof out);
    CHECK_EQ(n, total);
    CHECK(memcmp(out, expect, total) == 0);
    wsl_queue_clear(&q);
}

static void test_shared_buffers(void)
{
    wsl_queue a = {0}, b = {0};
    wsl_buf *big = wsl_buf_new(4096);
    CHECK(big != NULL);
    memset(big->data, 'x', 4096);
    big->len = 4096;
    CHECK_EQ(wsl_queue_copy(&a, "1", 1, NULL, 0), 0);
    CHECK_EQ(wsl_queue_share(&a, big), 0);
    CHECK_EQ(wsl_queue_share(&b, big), 0);
    CHECK_EQ(big->refs, 3);
    CHECK_EQ(wsl_queue_append(&a, "2", 1), 0); /* after a shared buffer: a new private chunk */
    CHECK_EQ(a.bytes, 4098);
    CHECK_EQ(count_iov(&a), 3);

    wsl_queue_consume(&a, 1 + 4096); /* the shared one is written: a's reference goes */
    CHECK_EQ(big->refs, 2);
    CHECK_EQ(a.bytes, 1);
    uint8_t out[8];
    size_t n = gather(&a, out, sizeof out);
    CHECK_MEM(out, n, "2");
    wsl_queue_clear(&a);
    wsl_queue_clear(&b);
    CHECK_EQ(big->refs, 1);
    wsl_buf_unref(big);
}

static void test_partial_consume(void)
{
    wsl_queue q = {0};
    CHECK_EQ(wsl_queue_copy(&q, "hello ", 6, "world", 5), 0);
    wsl_queue_consume(&q, 4);
    CHECK_EQ(q.bytes, 7);
    uint8_t out[16];
    size_t n = gather(&q, out, sizeof out);
    CHECK_MEM(out, n, "o world");
    wsl_queue_consume(&q, 7);
    CHECK_EQ(q.bytes, 0);
    CHECK(q.head == NULL && q.tail == NULL);
    CHECK_EQ(wsl_queue_append(&q, "again", 5), 0); /* usable after draining */
    n = gather(&q, out, sizeof out);
    CHECK_MEM(out, n, "again");
    wsl_queue_clear(&q);
}

/* What a write left over goes back ahead of what was queued meanwhile; later copies still go to
 * the end. */
static void test_prepend(void)
{
    wsl_queue q = {0};
    CHECK_EQ(wsl_queue_prepend(&q, "lo ", 3), 0); /* into an empty queue */
    CHECK_EQ(wsl_queue_append(&q, "world", 5), 0);
    CHECK_EQ(wsl_queue_prepend(&q, "hel", 3), 0);
    CHECK_EQ(wsl_queue_append(&q, "!", 1), 0);
    CHECK_EQ(q.bytes, 12);
    uint8_t out[16];
    size_t n = gather(&q, out, sizeof out);
    CHECK_MEM(out, n, "hello world!");
    wsl_queue_consume(&q, 5);
    n = gather(&q, out, sizeof out);
    CHECK_MEM(out, n, " world!");
    wsl_queue_clear(&q);
    CHECK_EQ(q.bytes, 0);
}

static void test_truncate_keeps_the_first_segment(void)
{
    wsl_queue q = {0};
    wsl_buf *big = wsl_buf_new(3000);
    memset(big->data, 'y', 3000);
    big->len = 3000;
    CHECK_EQ(wsl_queue_share(&q, big), 0);
    wsl_queue_consume(&q, 1000); /* partly written: its rest must still go out */
    CHECK_EQ(wsl_queue_copy(&q, "tail", 4, NULL, 0), 0);
    CHECK_EQ(wsl_queue_share(&q, big), 0);
    wsl_queue_truncate(&q);
    CHECK_EQ(q.bytes, 2000);
    CHECK_EQ(count_iov(&q), 1);
    CHECK(q.head == q.tail);
    CHECK_EQ(big->refs, 2);
    CHECK_EQ(wsl_queue_append(&q, "z", 1), 0); /* still a working queue after truncation */
    CHECK_EQ(q.bytes, 2001);
    wsl_queue_clear(&q);
    CHECK_EQ(big->refs, 1);
    wsl_buf_unref(big);

    wsl_queue empty = {0};
    wsl_queue_truncate(&empty); /* harmless */
    CHECK(empty.head == NULL);
}

static void test_iov_limit(void)
{
    wsl_queue q = {0};
    wsl_buf *b = wsl_buf_new(16);
    b->len = 16;
    for (int i = 0; i < 10; i++)
        CHECK_EQ(wsl_queue_share(&q, b), 0);
    struct iovec iov[4];
    CHECK_EQ(wsl_queue_iov(&q, iov, 4), 4); /* never more than asked */
    CHECK_EQ(iov[0].iov_len, 16);
    wsl_queue_clear(&q);
    wsl_buf_unref(b);
}

static void test_pool_recycles(void)
{
    /* A steady stream allocates nothing: after a warm-up round, draining and refilling a queue
     * reuses pooled chunks and segments (observable as the same chunk address coming back). */
    wsl_queue q = {0};
    CHECK_EQ(wsl_queue_append(&q, "warm", 4), 0);
    const void *first = q.head->buf;
    wsl_queue_consume(&q, 4);
    CHECK_EQ(wsl_queue_append(&q, "again", 5), 0);
    CHECK(q.head->buf == first);
    wsl_queue_clear(&q);
    wsl_buf_pool_drain();
}

int main(void)
{
    test_copies_coalesce();
    test_chunks_grow_and_keep_order();
    test_prepend();
    test_shared_buffers();
    test_partial_consume();
    test_truncate_keeps_the_first_segment();
    test_iov_limit();
    test_pool_recycles();
    wsl_buf_pool_drain();
    TEST_MAIN_END();
}
