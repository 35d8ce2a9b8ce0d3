/* Unit tests for src/frame.c: header encoding, masking at any offset and alignment, and the
 * receive state machine driven the way a connection drives it (unconsumed bytes kept and
 * topped up), over every length form, splits at every byte, fragmentation with interleaved
 * control frames, and every protocol error with its close code. */
#include <stdlib.h>

#include "frame.h"
#include "test.h"
#include "utf8.h"

static const uint8_t MASK[4] = {0x37, 0xFA, 0x21, 0x3D};

/* ---- building client frames ------------------------------------------------------------ */

typedef struct stream {
    uint8_t *p;
    size_t len, cap;
} stream;

static void put(stream *s, const void *d, size_t n)
{
    if (s->len + n > s->cap) {
        s->cap = (s->len + n) * 2 + 64;
        s->p = realloc(s->p, s->cap);
        if (!s->p) abort();
    }
    if (n) memcpy(s->p + s->len, d, n);
    s->len += n;
}

/* A masked frame; first_byte_extra ORs raw bits (RSV) into byte 0. */
static void frame_raw(stream *s, int op, bool fin, const void *payload, size_t n, uint8_t extra)
{
    uint8_t hdr[WSL_FRAME_HDR_MAX];
    size_t h = wsl_frame_header_masked(hdr, op, fin, n, MASK);
    hdr[0] |= extra;
    put(s, hdr, h);
    size_t at = s->len;
    put(s, payload, n);
    wsl_frame_mask(s->p + at, n, MASK, 0);
}

static void frame(stream *s, int op, bool fin, const char *text)
{
    frame_raw(s, op, fin, text, strlen(text), 0);
}

/* An unmasked or otherwise hand-made header followed by raw bytes. */
static void bytes(stream *s, const char *b, size_t n)
{
    put(s, b, n);
}

/* ---- driving the parser like a connection does ----------------------------------------- */

typedef struct result {
    char log[4096]; /* transcript: "T[text]" "B[len]" "ping[..]" "pong[..]" "close[code:reason]"
                       "error[code]" */
    size_t loglen;
    uint8_t *msg; /* the last complete message (in last_msg: valid until the next drive) */
    size_t msg_len;
    int events;
    int data_events; /* DATA events, to check incremental delivery */
    uint16_t error;
    bool closed;
} result;

static void logf_(result *r, const char *fmt, const char *s, size_t n, long num)
{
    char tmp[512];
    int k;
    if (s)
        k = snprintf(tmp, sizeof tmp, fmt, (int)(n > 200 ? 200 : n), s);
    else
        k = snprintf(tmp, sizeof tmp, fmt, num);
    if (k > 0 && r->loglen + (size_t)k < sizeof r->log) {
        memcpy(r->log + r->loglen, tmp, (size_t)k + 1);
        r->loglen += (size_t)k;
    }
}

static uint8_t *last_msg;
static size_t last_msg_cap;
static bool drive_deflate; /* the parser runs as if permessage-deflate was agreed */

/* Feed st->p in chunks ending at cuts[0], cuts[1], ... (then the rest), keeping unconsumed
 * bytes at the front of a working buffer as a real reader does, and check the contract on
 * every call. */
static void drive(const stream *st, const size_t *cuts, size_t ncuts, uint64_t max, result *r)
{
    memset(r, 0, sizeof *r);
    uint8_t *buf = malloc(st->len + 1);
    uint8_t *msg = malloc(st->len + 1);
    uint8_t *before = malloc(st->len + 1);
    if (!buf || !msg || !before) abort();
    size_t have = 0, fed = 0, msg_len = 0, need = 0;
    bool in_msg = false, stop = false;
    uint8_t msg_op = 0;
    bool msg_z = false;
    wsl_rx rx = {.deflate = drive_deflate};
    for (size_t c = 0; c <= ncuts && !stop; c++) {
        size_t upto = c < ncuts ? cuts[c] : st->len;
        if (upto < fed) continue;
        memcpy(buf + have, st->p + fed, upto - fed);
        have += upto - fed;
        fed = upto;
        bool first_call = true;
        for (;;) {
            wsl_rx_event ev;
            memcpy(before, buf, have);
            size_t used = wsl_rx_next(&rx, buf, have, max, &ev);
            r->events++;
            CHECK(used <= have);
            if (used > have) {
                stop = true;
                break;
            }
            /* Bytes not consumed are kept for the next call exactly as they came. */
            CHECK(memcmp(buf + used, before + used, have - used) == 0);
            /* After MORE(need), once `need` bytes are there, the next call makes progress:
             * consumes, reports something, or (a header whose size the first 2 bytes tell)
             * asks for more than before. */
            if (first_call && need && have >= need)
                CHECK(used > 0 || ev.kind != WSL_RX_MORE || ev.need > need);
            first_call = false;
            need = 0;
            switch (ev.kind) {
            case WSL_RX_MORE:
                CHECK(ev.need > 0);
                CHECK(have - used < ev.need); /* really nothing more to do */
                need = ev.need;
                break;
            case WSL_RX_DATA:
                r->data_events++;
                CHECK(ev.data >= buf && ev.data + ev.len <= buf + used);
                CHECK(ev.opcode == WSL_OP_TEXT || ev.opcode == WSL_OP_BINARY);
                CHECK(ev.len > 0 || ev.last); /* only a message's last piece may be empty */
                CHECK_EQ(ev.first, !in_msg);
                if (ev.first) msg_op = ev.opcode, msg_len = 0, msg_z = ev.compressed;
                CHECK_EQ(ev.opcode, msg_op);
                CHECK_EQ(ev.compressed, msg_z); /* a message is compressed or not as a whole */
                in_msg = true;
                memcpy(msg + msg_len, ev.data, ev.len);
                msg_len += ev.len;
                if (ev.last) {
                    CHECK_EQ(ev.frame_left, 0);
                    in_msg = false;
                    if (msg_len + 1 > last_msg_cap) {
                        free(last_msg);
                        last_msg_cap = msg_len + 1;
                        last_msg = malloc(last_msg_cap);
                        if (!last_msg) abort();
                    }
                    memcpy(last_msg, msg, msg_len);
                    r->msg = last_msg;
                    r->msg_len = msg_len;
                    if (msg_z) { /* compressed: handed out as it came, never UTF-8-checked */
                        logf_(r, msg_op == WSL_OP_TEXT ? "ZT[%.*s]" : "ZB[%.*s]", (const char *)msg,
                              msg_len, 0);
                    } else if (msg_op == WSL_OP_TEXT) {
                        CHECK(wsl_utf8_valid(msg, msg_len));
                        logf_(r, "T[%.*s]", (const char *)msg, msg_len, 0);
                    } else {
                        logf_(r, "B[%ld]", NULL, 0, (long)msg_len);
                    }
                }
                break;
            case WSL_RX_CONTROL:
                CHECK(ev.data >= buf && ev.data + ev.len <= buf + used);
                CHECK(ev.len <= WSL_CONTROL_MAX);
                if (ev.opcode == WSL_OP_PING)
                    logf_(r, "ping[%.*s]", (char *)ev.data, ev.len, 0);
                else if (ev.opcode == WSL_OP_PONG)
                    logf_(r, "pong[%.*s]", (char *)ev.data, ev.len, 0);
                else {
                    CHECK_EQ(ev.opcode, WSL_OP_CLOSE);
                    CHECK(rx.done);
                    CHECK(ev.reason != NULL);
                    logf_(r, "close[%ld:", NULL, 0, (long)ev.code);
                    logf_(r, "%.*s]", ev.reason, ev.reason_len, 0);
                    r->closed = true;
                    stop = true;
                }
                break;
            case WSL_RX_ERROR:
                CHECK(rx.done);
                CHECK(ev.reason != NULL && ev.reason_len == strlen(ev.reason));
                r->error = ev.code;
                logf_(r, "error[%ld]", NULL, 0, (long)ev.code);
                stop = true;
                break;
            }
            memmove(buf, buf + used, have - used);
            have -= used;
            if (stop || ev.kind == WSL_RX_MORE) break;
        }
    }
    if (stop) {
        /* Nothing is accepted after a close or an error. */
        wsl_rx_event ev;
        CHECK_EQ(wsl_rx_next(&rx, buf, have, max, &ev), 0);
        CHECK_EQ(ev.kind, WSL_RX_ERROR);
    }
    free(buf);
    free(msg);
    free(before);
}

static void run(const stream *st, uint64_t max, result *r)
{
    drive(st, NULL, 0, max, r);
}

/* The transcript must be the same whole, split once at every position, and byte by byte. */
static void check_all_splits(const stream *st, uint64_t max, const char *want)
{
    if (!want) abort(); /* (gcc -O3 would otherwise warn of a NULL %s below) */
    result r;
    run(st, max, &r);
    CHECK_STR(r.log, want);
    for (size_t cut = 0; cut <= st->len; cut++) {
        drive(st, &cut, 1, max, &r);
        TEST_CONTEXT("split at %zu of %zu, want %s", cut, st->len, want);
        CHECK_STR(r.log, want);
    }
    size_t *cuts = malloc((st->len + 1) * sizeof *cuts);
    if (!cuts) abort();
    for (size_t i = 0; i < st->len; i++)
        cuts[i] = i + 1;
    drive(st, cuts, st->len, max, &r);
    TEST_CONTEXT("byte by byte, want %s", want);
    CHECK_STR(r.log, want);
    free(cuts);
    TEST_CONTEXT("%s", "");
}

/* ---- encoding -------------------------------------------------------------------------- */

static void test_header_encoding(void)
{
    uint8_t h[WSL_SERVER_HDR_MAX];
    CHECK_EQ(wsl_frame_header(h, WSL_OP_TEXT, true, 0), 2);
    CHECK(h[0] == 0x81 && h[1] == 0);
    CHECK_EQ(wsl_frame_header(h, WSL_OP_BINARY, false, 125), 2);
    CHECK(h[0] == 0x02 && h[1] == 125);
    CHECK_EQ(wsl_frame_header(h, WSL_OP_TEXT, true, 126), 4);
    CHECK(h[1] == 126 && h[2] == 0 && h[3] == 126);
    CHECK_EQ(wsl_frame_header(h, WSL_OP_TEXT, true, 65535), 4);
    CHECK(h[1] == 126 && h[2] == 0xFF && h[3] == 0xFF);
    CHECK_EQ(wsl_frame_header(h, WSL_OP_CLOSE, true, 65536), 10);
    CHECK(h[0] == 0x88 && h[1] == 127);
    static const uint8_t l65536[8] = {0, 0, 0, 0, 0, 1, 0, 0};
    CHECK(memcmp(h + 2, l65536, 8) == 0);
    CHECK_EQ(wsl_frame_header(h, WSL_OP_CONT, true, 0x0102030405060708ull), 10);
    static const uint8_t lbig[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    CHECK(h[0] == 0x80 && memcmp(h + 2, lbig, 8) == 0);

    uint8_t m[WSL_FRAME_HDR_MAX];
    CHECK_EQ(wsl_frame_header_masked(m, WSL_OP_PING, true, 5, MASK), 6);
    CHECK(m[0] == 0x89 && m[1] == 0x85 && memcmp(m + 2, MASK, 4) == 0);
    CHECK_EQ(wsl_frame_header_masked(m, WSL_OP_TEXT, true, 300, MASK), 8);
    CHECK(m[1] == 0xFE && m[2] == 1 && m[3] == 44 && memcmp(m + 4, MASK, 4) == 0);
    CHECK_EQ(wsl_frame_header_masked(m, WSL_OP_TEXT, true, 70000, MASK), 14);
    CHECK(m[1] == 0xFF && memcmp(m + 10, MASK, 4) == 0);
}

static void test_mask(void)
{
    uint8_t orig[200], work[208];
    for (size_t i = 0; i < sizeof orig; i++)
        orig[i] = (uint8_t)(i * 13 + 7);
    for (size_t align = 0; align < 8; align++) {
        for (size_t n = 0; n <= 150; n++) {
            for (uint64_t off = 0; off < 8; off++) {
                uint8_t *p = work + align;
                memcpy(p, orig, n);
                wsl_frame_mask(p, n, MASK, off);
                bool ok = true;
                for (size_t i = 0; i < n; i++)
                    if (p[i] != (orig[i] ^ MASK[(off + i) & 3])) ok = false;
                TEST_CONTEXT("align %zu n %zu offset %llu", align, n, (unsigned long long)off);
                CHECK(ok);
            }
        }
    }
    /* Piece by piece at odd offsets gives what one pass gives, and masking twice undoes it. */
    uint8_t whole[200], pieces[200];
    memcpy(whole, orig, 200);
    memcpy(pieces, orig, 200);
    wsl_frame_mask(whole, 200, MASK, 0);
    static const size_t cuts[] = {0, 1, 4, 7, 8, 13, 31, 64, 65, 99, 150, 151, 200};
    for (size_t i = 0; i + 1 < sizeof cuts / sizeof cuts[0]; i++)
        wsl_frame_mask(pieces + cuts[i], cuts[i + 1] - cuts[i], MASK, cuts[i]);
    TEST_CONTEXT("pieces");
    CHECK(memcmp(whole, pieces, 200) == 0);
    wsl_frame_mask(whole, 200, MASK, 0);
    CHECK(memcmp(whole, orig, 200) == 0);
    /* Large offsets only matter modulo 4. */
    memcpy(pieces, orig, 200);
    wsl_frame_mask(pieces, 200, MASK, 0x100000003ull);
    memcpy(whole, orig, 200);
    wsl_frame_mask(whole, 200, MASK, 3);
    CHECK(memcmp(whole, pieces, 200) == 0);
    wsl_frame_mask(NULL, 0, MASK, 0);
    TEST_CONTEXT("%s", "");
}

static void test_close_codes(void)
{
    int valid = 0;
    for (unsigned c = 0; c < 70000; c++) {
        bool want =
            (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
        TEST_CONTEXT("code %u", c);
        CHECK_EQ(wsl_close_code_valid(c), want);
        valid += want;
    }
    TEST_CONTEXT("%s", "");
    CHECK_EQ(valid, 4 + 8 + 2000);
}

/* ---- receiving ------------------------------------------------------------------------- */

static void test_length_forms(void)
{
    static const size_t lens[] = {0, 1, 125, 126, 127, 65535, 65536, 65537, (1u << 20) + 3};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t n = lens[i];
        uint8_t *payload = malloc(n + 1);
        if (!payload) abort();
        for (int op = WSL_OP_TEXT; op <= WSL_OP_BINARY; op++) {
            for (size_t k = 0; k < n; k++)
                payload[k] = op == WSL_OP_TEXT ? (uint8_t)('a' + k % 26) : (uint8_t)(k * 7 + 1);
            stream s = {0};
            frame_raw(&s, op, true, payload, n, 0);
            size_t hdr = n < 126 ? 6 : n <= 65535 ? 8 : 14;
            CHECK_EQ(s.len, hdr + n);
            result r;
            run(&s, 1u << 24, &r);
            TEST_CONTEXT("%s of %zu bytes", op == WSL_OP_TEXT ? "text" : "binary", n);
            CHECK_EQ(r.msg_len, n);
            CHECK(r.msg && memcmp(r.msg, payload, n) == 0);
            CHECK_EQ(r.error, 0);
            CHECK_EQ(r.data_events, 1); /* all here at once: one piece */
            /* Header split at each position, then the payload in odd-sized chunks. */
            size_t cuts[64];
            for (size_t cut = 1; cut < hdr; cut++) {
                size_t nc = 0;
                cuts[nc++] = cut;
                for (size_t at = hdr + 1; at < s.len && nc < 60; at += 1 + at % 9973)
                    cuts[nc++] = at;
                drive(&s, cuts, nc, 1u << 24, &r);
                TEST_CONTEXT("%zu bytes, header cut at %zu", n, cut);
                CHECK_EQ(r.msg_len, n);
                CHECK(r.msg && memcmp(r.msg, payload, n) == 0);
            }
            free(s.p);
        }
        free(payload);
    }
    TEST_CONTEXT("%s", "");
}

static void test_every_split(void)
{
    stream s = {0};
    frame(&s, WSL_OP_TEXT, true, "Hello");
    check_all_splits(&s, 1000, "T[Hello]");
    free(s.p);

    /* Each length form, cut at every byte (the 16-bit and 64-bit headers included). */
    char big[300];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = 0;
    s = (stream){0};
    frame(&s, WSL_OP_TEXT, false, big + 299 - 126);
    frame(&s, WSL_OP_CONT, true, "!");
    char want[400];
    snprintf(want, sizeof want, "T[%s!]", big + 299 - 126);
    check_all_splits(&s, 1000, want);
    free(s.p);

    s = (stream){0};
    uint8_t hdr[WSL_FRAME_HDR_MAX];
    /* A 64-bit length form for a short payload (not minimal, but legal to receive). */
    size_t h = wsl_frame_header_masked(hdr, WSL_OP_BINARY, true, 70000, MASK);
    hdr[2] = hdr[3] = hdr[4] = hdr[5] = hdr[6] = 0;
    hdr[7] = 0, hdr[8] = 0, hdr[9] = 3;
    put(&s, hdr, h);
    const uint8_t three[3] = {1, 2, 3};
    size_t at = s.len;
    put(&s, three, 3);
    wsl_frame_mask(s.p + at, 3, MASK, 0);
    check_all_splits(&s, 1000, "B[3]");
    free(s.p);
}

static void test_fragmentation(void)
{
    stream s = {0};
    frame(&s, WSL_OP_TEXT, false, "Hel");
    frame(&s, WSL_OP_PING, true, "p1");
    frame(&s, WSL_OP_CONT, false, "lo ");
    frame(&s, WSL_OP_PONG, true, "");
    frame(&s, WSL_OP_CONT, false, "");
    frame(&s, WSL_OP_PING, true, "");
    frame(&s, WSL_OP_CONT, true, "World");
    frame(&s, WSL_OP_BINARY, true, "xyz");
    frame(&s, WSL_OP_CLOSE, true,
          "\x03\xe8"
          "bye");
    check_all_splits(&s, 1000, "ping[p1]pong[]ping[]T[Hello World]B[3]close[1000:bye]");
    free(s.p);

    /* The exact event sequence of a fragmented message fed whole. */
    s = (stream){0};
    frame(&s, WSL_OP_BINARY, false, "ab");
    frame(&s, WSL_OP_PING, true, "x");
    frame(&s, WSL_OP_CONT, false, "");
    frame(&s, WSL_OP_CONT, true, "c");
    wsl_rx rx = {0};
    wsl_rx_event ev;
    size_t off = 0;
    off += wsl_rx_next(&rx, s.p + off, s.len - off, 100, &ev);
    CHECK(ev.kind == WSL_RX_DATA && ev.first && !ev.last && ev.len == 2);
    CHECK_EQ(ev.opcode, WSL_OP_BINARY);
    CHECK_MEM(ev.data, ev.len, "ab");
    CHECK_EQ(rx.msg_op, WSL_OP_BINARY);
    off += wsl_rx_next(&rx, s.p + off, s.len - off, 100, &ev);
    CHECK(ev.kind == WSL_RX_CONTROL && ev.opcode == WSL_OP_PING);
    CHECK_MEM(ev.data, ev.len, "x");
    /* The empty middle fragment is not an event of its own. */
    off += wsl_rx_next(&rx, s.p + off, s.len - off, 100, &ev);
    CHECK(ev.kind == WSL_RX_DATA && !ev.first && ev.last && ev.len == 1);
    CHECK_EQ(ev.opcode, WSL_OP_BINARY);
    CHECK_MEM(ev.data, ev.len, "c");
    CHECK_EQ(rx.msg_op, 0);
    CHECK_EQ(off, s.len);
    size_t used = wsl_rx_next(&rx, s.p + off, s.len - off, 100, &ev);
    CHECK(used == 0 && ev.kind == WSL_RX_MORE && ev.need == 2);
    free(s.p);

    /* A UTF-8 character split across fragments is fine. */
    s = (stream){0};
    frame(&s, WSL_OP_TEXT, false, "\xCE");
    frame(&s, WSL_OP_CONT, false, "\xBA\xE1\xBD");
    frame(&s, WSL_OP_PING, true, "");
    frame(&s, WSL_OP_CONT, true, "\xB9");
    check_all_splits(&s, 1000, "ping[]T[\xCE\xBA\xE1\xBD\xB9]");
    free(s.p);
}

static void test_empty_messages(void)
{
    wsl_rx rx = {0};
    wsl_rx_event ev;
    stream s = {0};
    frame(&s, WSL_OP_TEXT, true, "");
    CHECK_EQ(wsl_rx_next(&rx, s.p, s.len, 0, &ev), 6);
    CHECK(ev.kind == WSL_RX_DATA && ev.first && ev.last && ev.len == 0);
    CHECK_EQ(ev.opcode, WSL_OP_TEXT);
    CHECK(ev.data == s.p + 6);
    free(s.p);

    /* Empty in fragments: one event, both first and last. */
    s = (stream){0};
    frame(&s, WSL_OP_BINARY, false, "");
    frame(&s, WSL_OP_CONT, false, "");
    frame(&s, WSL_OP_CONT, true, "");
    rx = (wsl_rx){0};
    CHECK_EQ(wsl_rx_next(&rx, s.p, s.len, 0, &ev), 18);
    CHECK(ev.kind == WSL_RX_DATA && ev.first && ev.last && ev.len == 0);
    CHECK_EQ(ev.opcode, WSL_OP_BINARY);
    free(s.p);

    /* An empty non-final fragment with nothing after it: consumed, then MORE. */
    s = (stream){0};
    frame(&s, WSL_OP_TEXT, false, "");
    rx = (wsl_rx){0};
    CHECK_EQ(wsl_rx_next(&rx, s.p, s.len, 0, &ev), 6);
    CHECK(ev.kind == WSL_RX_MORE && ev.need == 2);
    CHECK_EQ(rx.msg_op, WSL_OP_TEXT);
    free(s.p);

    s = (stream){0};
    frame(&s, WSL_OP_TEXT, true, "");
    frame(&s, WSL_OP_BINARY, true, "");
    frame(&s, WSL_OP_TEXT, false, "");
    frame(&s, WSL_OP_CONT, true, "a");
    check_all_splits(&s, 10, "T[]B[0]T[a]");
    free(s.p);
}

/* What MORE asks for, step by step. */
static void test_more_and_need(void)
{
    wsl_rx rx = {0};
    wsl_rx_event ev;
    stream s = {0};
    frame(&s, WSL_OP_PING, true, "12345");
    for (size_t have = 0; have < s.len; have++) {
        TEST_CONTEXT("ping, %zu bytes", have);
        CHECK_EQ(wsl_rx_next(&rx, s.p, have, 100, &ev), 0);
        CHECK_EQ(ev.kind, WSL_RX_MORE);
        CHECK_EQ(ev.need, have < 2 ? 2 : 11); /* a control frame only whole */
    }
    TEST_CONTEXT("%s", "");
    free(s.p);

    /* A data frame: the header is consumed as soon as it is whole, payload bytes go out as
     * they come. */
    s = (stream){0};
    char payload[300];
    memset(payload, 'q', 299);
    payload[299] = 0;
    frame(&s, WSL_OP_TEXT, true, payload);
    rx = (wsl_rx){0};
    CHECK_EQ(wsl_rx_next(&rx, s.p, 1, 1000, &ev), 0);
    CHECK(ev.kind == WSL_RX_MORE && ev.need == 2);
    CHECK_EQ(wsl_rx_next(&rx, s.p, 3, 1000, &ev), 0);
    CHECK(ev.kind == WSL_RX_MORE && ev.need == 8);
    CHECK_EQ(wsl_rx_next(&rx, s.p, 8, 1000, &ev), 8);
    CHECK(ev.kind == WSL_RX_MORE && ev.need == 1);
    CHECK(rx.in_frame && rx.remaining == 299);
    CHECK_EQ(wsl_rx_next(&rx, s.p + 8, 0, 1000, &ev), 0);
    CHECK(ev.kind == WSL_RX_MORE && ev.need == 1);
    CHECK_EQ(wsl_rx_next(&rx, s.p + 8, 100, 1000, &ev), 100);
    CHECK(ev.kind == WSL_RX_DATA && ev.first && !ev.last && ev.len == 100 && ev.frame_left == 199);
    CHECK_EQ(wsl_rx_next(&rx, s.p + 108, 199, 1000, &ev), 199);
    CHECK(ev.kind == WSL_RX_DATA && !ev.first && ev.last && ev.len == 199 && ev.frame_left == 0);
    CHECK(memcmp(s.p + 8, payload, 299) == 0); /* unmasked in place */
    free(s.p);

    /* Header and part of the payload in one call: the piece comes with the header. */
    s = (stream){0};
    frame(&s, WSL_OP_BINARY, true, "abcdef");
    rx = (wsl_rx){0};
    CHECK_EQ(wsl_rx_next(&rx, s.p, 9, 1000, &ev), 9);
    CHECK(ev.kind == WSL_RX_DATA && ev.first && !ev.last && ev.len == 3 && ev.frame_left == 3);
    CHECK_MEM(ev.data, ev.len, "abc");
    free(s.p);
}

/* The error code for a stream, checked whole, at every split and byte by byte. */
static void expect_error(const stream *s, uint64_t max, const char *want_log)
{
    check_all_splits(s, max, want_log);
}

static void test_errors(void)
{
    stream s;
    /* Unmasked client frame. */
    s = (stream){0};
    bytes(&s, "\x81\x02hi", 4);
    expect_error(&s, 100, "error[1002]");
    free(s.p);

    /* Reserved bits, each alone, on data and control frames. */
    for (int bit = 0; bit < 3; bit++) {
        s = (stream){0};
        frame(&s, WSL_OP_TEXT, true, "ok");
        frame_raw(&s, WSL_OP_TEXT, true, "x", 1, (uint8_t)(0x10 << bit));
        expect_error(&s, 100, "T[ok]error[1002]");
        free(s.p);
        s = (stream){0};
        frame_raw(&s, WSL_OP_PING, true, "", 0, (uint8_t)(0x10 << bit));
        expect_error(&s, 100, "error[1002]");
        free(s.p);
    }

    /* Reserved opcodes. */
    static const int reserved[] = {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF};
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
        s = (stream){0};
        frame(&s, WSL_OP_PING, true, "a");
        frame(&s, reserved[i], true, "");
        frame(&s, WSL_OP_PING, true, "b");
        TEST_CONTEXT("opcode %d", reserved[i]);
        expect_error(&s, 100, "ping[a]error[1002]");
        free(s.p);
    }

    /* Fragmented control frames. */
    static const int controls[] = {WSL_OP_CLOSE, WSL_OP_PING, WSL_OP_PONG};
    for (size_t i = 0; i < 3; i++) {
        s = (stream){0};
        frame(&s, controls[i], false, "");
        expect_error(&s, 100, "error[1002]");
        free(s.p);
        /* Control payload over 125 bytes, in the 16-bit length form. */
        char p126[127];
        memset(p126, 'a', 126);
        p126[126] = 0;
        s = (stream){0};
        frame(&s, controls[i], true, p126);
        expect_error(&s, 1000, "error[1002]");
        free(s.p);
        s = (stream){0};
        p126[125] = 0;
        if (controls[i] == WSL_OP_CLOSE) p126[0] = 0x03, p126[1] = (char)0xE8;
        frame(&s, controls[i], true, p126);
        result r;
        run(&s, 1000, &r);
        CHECK_EQ(r.error, 0); /* exactly 125 is fine */
        free(s.p);
    }

    /* Continuation without a message, also right after a finished one. */
    s = (stream){0};
    frame(&s, WSL_OP_CONT, true, "x");
    expect_error(&s, 100, "error[1002]");
    free(s.p);
    s = (stream){0};
    frame(&s, WSL_OP_TEXT, true, "a");
    frame(&s, WSL_OP_CONT, false, "x");
    expect_error(&s, 100, "T[a]error[1002]");
    free(s.p);

    /* A new message while one is in progress. */
    for (int op = WSL_OP_TEXT; op <= WSL_OP_BINARY; op++) {
        s = (stream){0};
        frame(&s, WSL_OP_TEXT, false, "a");
        frame(&s, WSL_OP_PING, true, "");
        frame(&s, op, true, "b");
        expect_error(&s, 100, "ping[]error[1002]");
        free(s.p);
    }

    /* 64-bit length with the top bit set: refused at the length, before the mask key. */
    s = (stream){0};
    bytes(&s, "\x82\xff\x80\x00\x00\x00\x00\x00\x00\x01", 10);
    expect_error(&s, UINT64_MAX, "error[1002]");
    free(s.p);

    /* Too big, at the header, before any payload (only the header is in the stream). */
    uint8_t hdr[WSL_FRAME_HDR_MAX];
    s = (stream){0};
    put(&s, hdr, wsl_frame_header_masked(hdr, WSL_OP_BINARY, true, 101, MASK));
    expect_error(&s, 100, "error[1009]");
    free(s.p);
    s = (stream){0};
    put(&s, hdr, wsl_frame_header_masked(hdr, WSL_OP_BINARY, true, 1ull << 40, MASK));
    expect_error(&s, 1 << 20, "error[1009]");
    free(s.p);
    s = (stream){0}; /* the 64-bit length alone tells, without the mask key */
    put(&s, hdr, wsl_frame_header_masked(hdr, WSL_OP_BINARY, true, 1ull << 40, MASK) - 4);
    expect_error(&s, 1 << 20, "error[1009]");
    free(s.p);
    /* ... or across fragments: 60 + 41 > 100 at the second header. */
    char sixty[61], fortyone[42];
    memset(sixty, 's', 60), sixty[60] = 0;
    memset(fortyone, 'f', 41), fortyone[41] = 0;
    s = (stream){0};
    frame(&s, WSL_OP_TEXT, false, sixty);
    frame(&s, WSL_OP_PING, true, "");
    put(&s, hdr, wsl_frame_header_masked(hdr, WSL_OP_CONT, true, 41, MASK));
    expect_error(&s, 100, "ping[]error[1009]");
    free(s.p);
    s = (stream){0}; /* exactly the limit is fine */
    frame(&s, WSL_OP_TEXT, false, sixty);
    frame(&s, WSL_OP_CONT, true, fortyone + 1);
    result r;
    run(&s, 100, &r);
    CHECK_EQ(r.error, 0);
    CHECK_EQ(r.msg_len, 100);
    free(s.p);
    s = (stream){0}; /* a limit of 0 allows only empty messages */
    frame(&s, WSL_OP_TEXT, true, "");
    frame(&s, WSL_OP_PING, true, "control frames do not count");
    frame(&s, WSL_OP_BINARY, true, "x");
    expect_error(&s, 0, "T[]ping[control frames do not count]error[1009]");
    free(s.p);
}

static void test_utf8_errors(void)
{
    stream s;
    /* Fail fast: the bad byte sits mid-frame; the rest of the frame never arrives. */
    s = (stream){0};
    uint8_t hdr[WSL_FRAME_HDR_MAX];
    const char *good_then_bad = "\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xF4\x90\x80\x80";
    size_t h = wsl_frame_header_masked(hdr, WSL_OP_TEXT, true, 100, MASK);
    put(&s, hdr, h);
    size_t at = s.len;
    put(&s, good_then_bad, strlen(good_then_bad));
    wsl_frame_mask(s.p + at, strlen(good_then_bad), MASK, 0);
    expect_error(&s, 1000, "error[1007]");
    /* The valid part alone gives a piece and no error. */
    size_t cut = at + 11;
    result r;
    drive(&s, &cut, 1, 1000, &r);
    CHECK_EQ(r.data_events >= 1, 1);
    CHECK_EQ(r.error, 1007);
    free(s.p);

    /* Autobahn 6.4.1's shape: three fragments, the second impossible: error at the second. */
    s = (stream){0};
    frame(&s, WSL_OP_TEXT, false, "\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5");
    frame(&s, WSL_OP_CONT, false, "\xF4\x90\x80\x80");
    expect_error(&s, 1000, "error[1007]");
    free(s.p);

    /* Invalid in a frame that is otherwise fine, and a message that ends mid-character. */
    static const char *bad[] = {"\x80", "a\xC0\xAF", "\xED\xA0\x80", "\xFF", "\xE0\x80\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s = (stream){0};
        frame(&s, WSL_OP_TEXT, true, bad[i]);
        TEST_CONTEXT("bad utf8 %zu", i);
        expect_error(&s, 1000, "error[1007]");
        free(s.p);
    }
    s = (stream){0};
    frame(&s, WSL_OP_TEXT, true, "ok\xE2\x82");
    expect_error(&s, 1000, "error[1007]");
    free(s.p);
    s = (stream){0}; /* ends mid-character with an empty final fragment */
    frame(&s, WSL_OP_TEXT, false, "ok\xE2\x82");
    frame(&s, WSL_OP_CONT, true, "");
    expect_error(&s, 1000, "error[1007]");
    free(s.p);
    /* Binary is not checked. */
    s = (stream){0};
    frame(&s, WSL_OP_BINARY, true, "\xFF\xFE");
    expect_error(&s, 1000, "B[2]");
    free(s.p);
}

static void test_close_frames(void)
{
    stream s;
    s = (stream){0};
    frame(&s, WSL_OP_CLOSE, true, "");
    frame(&s, WSL_OP_TEXT, true, "ignored");
    expect_error(&s, 100, "close[1005:]");
    free(s.p);

    s = (stream){0};
    frame(&s, WSL_OP_CLOSE, true, "\x03");
    expect_error(&s, 100, "error[1002]");
    free(s.p);

    static const unsigned good[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                                    1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999};
    static const unsigned badc[] = {0,    999,  1004, 1005, 1006, 1015,  1016, 1100,
                                    2000, 2999, 5000, 6000, 9999, 65535, 1999};
    char want[64], payload[8];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        s = (stream){0};
        payload[0] = (char)(good[i] >> 8), payload[1] = (char)good[i];
        frame_raw(&s, WSL_OP_CLOSE, true, payload, 2, 0);
        snprintf(want, sizeof want, "close[%u:]", good[i]);
        expect_error(&s, 100, want);
        free(s.p);
    }
    for (size_t i = 0; i < sizeof badc / sizeof badc[0]; i++) {
        s = (stream){0};
        payload[0] = (char)(badc[i] >> 8), payload[1] = (char)badc[i];
        frame_raw(&s, WSL_OP_CLOSE, true, payload, 2, 0);
        TEST_CONTEXT("close code %u", badc[i]);
        expect_error(&s, 100, "error[1002]");
        free(s.p);
    }
    s = (stream){0};
    frame(&s, WSL_OP_CLOSE, true,
          "\x03\xe8\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0\x80");
    expect_error(&s, 100, "error[1007]");
    free(s.p);
    s = (stream){0};
    frame(&s, WSL_OP_CLOSE, true, "\x0b\xb8\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5");
    expect_error(&s, 100, "close[3000:\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5]");
    free(s.p);

    /* A close in the middle of a fragmented message ends everything. */
    s = (stream){0};
    frame(&s, WSL_OP_TEXT, false, "part");
    frame(&s, WSL_OP_CLOSE, true, "\x03\xe9");
    frame(&s, WSL_OP_CONT, true, "rest");
    expect_error(&s, 100, "close[1001:]");
    free(s.p);

    /* The event itself: code, reason and payload pointers into the input. */
    s = (stream){0};
    frame(&s, WSL_OP_CLOSE, true,
          "\x0f\xa0"
          "done");
    wsl_rx rx = {0};
    wsl_rx_event ev;
    CHECK_EQ(wsl_rx_next(&rx, s.p, s.len, 100, &ev), s.len);
    CHECK(ev.kind == WSL_RX_CONTROL && ev.opcode == WSL_OP_CLOSE && ev.code == 4000);
    CHECK(ev.data == s.p + 6 && ev.len == 6);
    CHECK(ev.reason == (const char *)s.p + 8);
    CHECK_MEM(ev.reason, ev.reason_len, "done");
    CHECK(rx.done);
    free(s.p);
}

/* Many frames back to back in one buffer, and a pseudo-random mix cut at random places. */
static void test_pipelined(void)
{
    stream s = {0};
    char want[4096] = "";
    size_t wl = 0;
    for (int i = 0; i < 40; i++) {
        char msg[32];
        snprintf(msg, sizeof msg, "message %d", i);
        if (i % 3 == 0) {
            frame(&s, WSL_OP_TEXT, false, "message ");
            frame(&s, WSL_OP_PING, true, "i");
            frame(&s, WSL_OP_CONT, true, msg + 8);
            wl += (size_t)snprintf(want + wl, sizeof want - wl, "ping[i]T[%s]", msg);
        } else {
            frame(&s, WSL_OP_TEXT, true, msg);
            wl += (size_t)snprintf(want + wl, sizeof want - wl, "T[%s]", msg);
        }
    }
    result r;
    run(&s, 100, &r);
    CHECK_STR(r.log, want);
    unsigned seed = 7;
    for (int round = 0; round < 200; round++) {
        size_t cuts[50];
        size_t nc = 0, at = 0;
        while (nc < 50) {
            seed = seed * 1103515245u + 12345u;
            at += 1 + (seed >> 16) % 40;
            if (at >= s.len) break;
            cuts[nc++] = at;
        }
        drive(&s, cuts, nc, 100, &r);
        TEST_CONTEXT("random cuts, round %d", round);
        CHECK_STR(r.log, want);
    }
    TEST_CONTEXT("%s", "");
    free(s.p);
}

/* RSV1 as permessage-deflate (RFC 7692 section 6) uses it: on a data message's first frame
 * once the extension is agreed, nowhere else. */
static void test_rsv1(void)
{
    stream s = {0};
    /* Not agreed: RSV1 is a reserved bit like the others. */
    frame_raw(&s, WSL_OP_TEXT, true, "\xf2\x48", 2, WSL_FRAME_RSV1);
    expect_error(&s, 100, "error[1002]");
    free(s.p);

    drive_deflate = true;
    /* A compressed text message is handed out as it came: these bytes are no UTF-8, and a
     * compressed message is never checked as text here. Plain messages still are. */
    s = (stream){0};
    frame_raw(&s, WSL_OP_TEXT, true, "\xf2\x48\xcd", 3, WSL_FRAME_RSV1);
    frame(&s, WSL_OP_TEXT, true, "plain");
    frame_raw(&s, WSL_OP_BINARY, true, "zz", 2, WSL_FRAME_RSV1);
    frame_raw(&s, WSL_OP_TEXT, true, "\xff", 1, 0);
    expect_error(&s, 100, "ZT[\xf2\x48\xcd]T[plain]ZB[zz]error[1007]");
    free(s.p);

    /* Fragmented: RSV1 on the first frame only; control frames in between; empty pieces. */
    s = (stream){0};
    frame_raw(&s, WSL_OP_TEXT, false, "\xf2\x48", 2, WSL_FRAME_RSV1);
    frame(&s, WSL_OP_PING, true, "p");
    frame_raw(&s, WSL_OP_CONT, false, "", 0, 0);
    frame_raw(&s, WSL_OP_CONT, false, "\xcd\xc9", 2, 0);
    frame_raw(&s, WSL_OP_CONT, true, "\xc9\x07\x01", 3, 0);
    frame_raw(&s, WSL_OP_TEXT, false, "", 0, WSL_FRAME_RSV1);
    frame_raw(&s, WSL_OP_CONT, true, "", 0, 0);
    frame(&s, WSL_OP_TEXT, false, "a");
    frame(&s, WSL_OP_CONT, true, "b");
    check_all_splits(&s, 100, "ping[p]ZT[\xf2\x48\xcd\xc9\xc9\x07\x01]ZT[]T[ab]");
    free(s.p);

    /* RSV1 on a continuation frame, compressed message or not. */
    for (int z = 0; z < 2; z++) {
        s = (stream){0};
        frame_raw(&s, WSL_OP_TEXT, false, "a", 1, z ? WSL_FRAME_RSV1 : 0);
        frame_raw(&s, WSL_OP_CONT, true, "b", 1, WSL_FRAME_RSV1);
        TEST_CONTEXT("continuation, first frame compressed: %d", z);
        expect_error(&s, 100, "error[1002]");
        free(s.p);
    }
    /* On control frames, alone or inside a compressed message. */
    static const int controls[] = {WSL_OP_PING, WSL_OP_PONG, WSL_OP_CLOSE};
    for (size_t i = 0; i < 3; i++) {
        s = (stream){0};
        frame_raw(&s, controls[i], true, "", 0, WSL_FRAME_RSV1);
        TEST_CONTEXT("control %d", controls[i]);
        expect_error(&s, 100, "error[1002]");
        free(s.p);
        s = (stream){0};
        frame_raw(&s, WSL_OP_BINARY, false, "a", 1, WSL_FRAME_RSV1);
        frame_raw(&s, controls[i], true, "", 0, WSL_FRAME_RSV1);
        expect_error(&s, 100, "error[1002]");
        free(s.p);
    }
    /* RSV2 and RSV3 stay reserved, with or without RSV1. */
    static const uint8_t other[] = {0x20, 0x10, 0x60, 0x50, 0x70};
    for (size_t i = 0; i < sizeof other; i++) {
        s = (stream){0};
        frame_raw(&s, WSL_OP_TEXT, true, "x", 1, other[i]);
        TEST_CONTEXT("bits %#x", other[i]);
        expect_error(&s, 100, "error[1002]");
        free(s.p);
    }
    TEST_CONTEXT("%s", "");

    /* The size limit: a compressed payload may exceed the message limit by an eighth plus 64
     * bytes (a deflate encoding can be that much larger than its text); the inflated size is
     * the inflater's to check. A plain one may not, and neither may a larger compressed one. */
    uint8_t *big = calloc(1, 1200);
    if (!big) abort();
    s = (stream){0};
    frame_raw(&s, WSL_OP_BINARY, true, big, 1000 + 125 + 64, WSL_FRAME_RSV1);
    result r;
    run(&s, 1000, &r);
    CHECK_STR(r.log, "ZB[]");
    CHECK_EQ(r.msg_len, 1000 + 125 + 64);
    free(s.p);
    s = (stream){0};
    frame_raw(&s, WSL_OP_BINARY, false, big, 1000, WSL_FRAME_RSV1);
    frame_raw(&s, WSL_OP_CONT, true, big, 125 + 65, 0);
    run(&s, 1000, &r);
    CHECK_STR(r.log, "error[1009]");
    free(s.p);
    s = (stream){0};
    frame_raw(&s, WSL_OP_BINARY, true, big, 1001, 0);
    run(&s, 1000, &r);
    CHECK_STR(r.log, "error[1009]");
    free(s.p);
    free(big);
    drive_deflate = false;
}

/* One whole frame given to a fresh parser in one call: how wsl_rx_next answered, and for a DATA
 * event whether its small-frame path took it (that path alone leaves rx.mask untouched; the
 * general path keeps every data frame's key there). The bytes not consumed must be as they
 * came. */
static size_t one_call(const stream *st, uint64_t max, bool deflate, wsl_rx_event *ev, bool *fast)
{
    uint8_t *buf = malloc(st->len + 1);
    if (!buf) abort();
    memcpy(buf, st->p, st->len);
    wsl_rx rx = {.deflate = deflate};
    size_t used = wsl_rx_next(&rx, buf, st->len, max, ev);
    *fast = memcmp(rx.mask, "\0\0\0\0", 4) == 0;
    CHECK(memcmp(buf + used, st->p + used, st->len - used) == 0);
    if (ev->kind == WSL_RX_DATA) { /* the payload, unmasked in place */
        CHECK(ev->data == buf + used - ev->len);
        static uint8_t copy[256];
        memcpy(copy, ev->data, ev->len);
        free(buf);
        ev->data = copy;
        return used;
    }
    free(buf);
    return used;
}

/* The small-frame path (a whole unfragmented text or binary frame of at most 125 bytes, nothing
 * in progress) at its edges: it must answer exactly as the general path does, which
 * check_all_splits compares (split, a frame goes the general way). */
static void test_small_frames(void)
{
    char text[200];
    for (size_t i = 0; i < sizeof text; i++)
        text[i] = (char)('a' + i % 26);
    /* Every length from 0 to 125 (the word loop, its 4-byte step and byte tail), text and
     * binary, and 126 (the 16-bit length form: the general path). */
    for (size_t len = 0; len <= 126; len++) {
        for (int op = WSL_OP_TEXT; op <= WSL_OP_BINARY; op++) {
            stream s = {0};
            frame_raw(&s, op, true, text, len, 0);
            wsl_rx_event ev;
            bool fast;
            TEST_CONTEXT("op %d, %zu bytes", op, len);
            CHECK_EQ(one_call(&s, 1000, false, &ev, &fast), s.len);
            CHECK_EQ(fast, len <= 125);
            CHECK_EQ(ev.kind, WSL_RX_DATA);
            CHECK_EQ(ev.opcode, op);
            CHECK(ev.first && ev.last && !ev.compressed);
            CHECK_EQ(ev.frame_left, 0);
            CHECK_EQ(ev.len, len);
            CHECK(memcmp(ev.data, text, len) == 0);
            free(s.p);
        }
    }
    TEST_CONTEXT("%s", "");

    /* Text beyond ASCII: valid UTF-8 of 2 to 4 bytes a character, a non-ASCII byte in every
     * position of a word; then impossible bytes, and a text ending inside a sequence. */
    static const char *const valid[] = {"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5",
                                        "abcdefg\xC3\xA9", "\xF0\x9F\x98\x80",
                                        "1234567\xE2\x82\xAC"};
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        stream s = {0};
        frame(&s, WSL_OP_TEXT, true, valid[i]);
        wsl_rx_event ev;
        bool fast;
        CHECK_EQ(one_call(&s, 1000, false, &ev, &fast), s.len);
        CHECK(fast);
        CHECK_EQ(ev.len, strlen(valid[i]));
        CHECK(memcmp(ev.data, valid[i], ev.len) == 0);
        char want[64];
        snprintf(want, sizeof want, "T[%s]", valid[i]);
        check_all_splits(&s, 1000, want);
        free(s.p);
    }
    static const char *const invalid[] = {"abcdefgh\xFF", "\xC0\xAF", "abc\xED\xA0\x80",
                                          "abcdefg\xE2\x82", "\xF4\x90\x80\x80xxxxxxxx"};
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        stream s = {0};
        frame(&s, WSL_OP_TEXT, true, invalid[i]);
        wsl_rx_event ev;
        bool fast;
        TEST_CONTEXT("invalid %zu", i);
        one_call(&s, 1000, false, &ev, &fast);
        CHECK(!fast); /* handed to the general path, the payload masked again */
        CHECK_EQ(ev.kind, WSL_RX_ERROR);
        CHECK_EQ(ev.code, 1007);
        expect_error(&s, 1000, "error[1007]");
        free(s.p);
    }
    /* The same bytes as binary are fine. */
    stream s = {0};
    frame(&s, WSL_OP_BINARY, true, "abcdefgh\xFF");
    check_all_splits(&s, 1000, "B[9]");
    free(s.p);

    /* Not for the small-frame path: a control frame, a fragment, a continuation, RSV bits
     * (errors without deflate; RSV1 a compressed message with it), an unmasked frame, a frame
     * over max_message, a frame cut short. */
    struct {
        int op;
        bool fin;
        uint8_t rsv;
        bool deflate;
        uint64_t max;
        const char *want;
    } other[] = {
        {WSL_OP_PING, true, 0, false, 1000, "ping[hello]"},
        {WSL_OP_PONG, true, 0, false, 1000, "pong[hello]"},
        {WSL_OP_TEXT, false, 0, false, 1000, ""},
        {WSL_OP_CONT, true, 0, false, 1000, "error[1002]"},
        {WSL_OP_TEXT, true, 0x40, false, 1000, "error[1002]"},
        {WSL_OP_TEXT, true, 0x20, false, 1000, "error[1002]"},
        {WSL_OP_BINARY, true, 0x10, false, 1000, "error[1002]"},
        {WSL_OP_TEXT, true, 0x40, true, 1000, "ZT[hello]"},
        {WSL_OP_BINARY, true, 0x40, true, 1000, "ZB[hello]"},
        {WSL_OP_TEXT, true, 0, false, 4, "error[1009]"},
        {WSL_OP_TEXT, true, 0, false, 5, "T[hello]"},
    };
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        s = (stream){0};
        frame_raw(&s, other[i].op, other[i].fin, "hello", 5, other[i].rsv);
        wsl_rx_event ev;
        bool fast;
        TEST_CONTEXT("case %zu", i);
        one_call(&s, other[i].max, other[i].deflate, &ev, &fast);
        if (ev.kind == WSL_RX_DATA) CHECK_EQ(fast, i == sizeof other / sizeof other[0] - 1);
        drive_deflate = other[i].deflate;
        check_all_splits(&s, other[i].max, other[i].want);
        drive_deflate = false;
        free(s.p);
    }
    s = (stream){0};
    bytes(&s, "\x81\x05hello", 7); /* unmasked */
    expect_error(&s, 1000, "error[1002]");
    free(s.p);
    s = (stream){0};
    frame(&s, WSL_OP_TEXT, true, "hello");
    s.len--; /* one byte short: the general path hands out what is there */
    wsl_rx_event ev;
    bool fast;
    CHECK_EQ(one_call(&s, 1000, false, &ev, &fast), 10);
    CHECK_EQ(ev.kind, WSL_RX_DATA);
    CHECK(ev.first && !ev.last && !fast);
    CHECK_EQ(ev.frame_left, 1);
    free(s.p);

    /* Behind a message in progress, the next whole frame goes the general way (it is its
     * continuation, or an error), and after a close nothing is read. */
    s = (stream){0};
    frame(&s, WSL_OP_TEXT, false, "ab");
    frame(&s, WSL_OP_CONT, true, "cd");
    frame(&s, WSL_OP_TEXT, true, "ef");
    frame(&s, WSL_OP_TEXT, false, "gh");
    frame(&s, WSL_OP_TEXT, true, "ij");
    expect_error(&s, 1000, "T[abcd]T[ef]error[1002]");
    free(s.p);
    s = (stream){0};
    frame(&s, WSL_OP_CLOSE, true, "");
    frame(&s, WSL_OP_TEXT, true, "late");
    check_all_splits(&s, 1000, "close[1005:]");
    free(s.p);
    TEST_CONTEXT("%s", "");
}

int main(void)
{
    test_header_encoding();
    test_mask();
    test_close_codes();
    test_length_forms();
    test_every_split();
    test_fragmentation();
    test_empty_messages();
    test_more_and_need();
    test_errors();
    test_utf8_errors();
    test_close_frames();
    test_pipelined();
    test_rsv1();
    test_small_frames();
    free(last_msg);
    TEST_MAIN_END();
}
