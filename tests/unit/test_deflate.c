/* Unit tests for src/deflate.c: the offer parser against RFC 7692's rules (every parameter, its
 * values, duplicates, malformed and quoted syntax, several offers and extensions), the answer,
 * the compressor against zlib's own inflate at every window size, and the inflater against
 * zlib's deflate and RFC 7692's worked examples: whole and in pieces, with and without context
 * takeover, final blocks, zip bombs, broken data and broken UTF-8. */
#include <errno.h>
#include <stdlib.h>
#include <zlib.h>

#include "deflate.h"
#include "test.h"
#include "utf8.h"

/* ---- negotiation -------------------------------------------------------------------------- */

/* The answer to an offer list ("" when nothing is accepted), with our usual client window. */
static const char *answer_bits(const char *offers, unsigned bits)
{
    static char out[256];
    wsl_deflate_params p;
    memset(&p, 0xAA, sizeof p);
    if (!wsl_deflate_negotiate(offers, strlen(offers), bits, &p)) return "";
    size_t n = wsl_deflate_answer(&p, out, sizeof out);
    CHECK(n > 0);
    return out;
}

static const char *answer(const char *offers)
{
    return answer_bits(offers, WSL_DEFLATE_CLIENT_BITS);
}

#define BASE  "permessage-deflate; server_no_context_takeover"
#define NOCTX BASE "; client_no_context_takeover"

static void test_offer_parameters(void)
{
    /* No parameter: the client keeps a 15-bit context we could not shrink: ask it to drop it. */
    CHECK_STR(answer("permessage-deflate"), NOCTX);
    /* client_max_window_bits without a value (what browsers send): ask for our window. */
    CHECK_STR(answer("permessage-deflate; client_max_window_bits"),
              BASE "; client_max_window_bits=11");
    CHECK_STR(answer("permessage-deflate; client_max_window_bits=15"),
              BASE "; client_max_window_bits=11");
    CHECK_STR(answer("permessage-deflate; client_max_window_bits=11"),
              BASE "; client_max_window_bits=11");
    /* A smaller value than ours is kept: the answer may not exceed the offer. */
    CHECK_STR(answer("permessage-deflate; client_max_window_bits=9"),
              BASE "; client_max_window_bits=9");
    CHECK_STR(answer("permessage-deflate; client_max_window_bits=8"),
              BASE "; client_max_window_bits=8");
    CHECK_STR(answer_bits("permessage-deflate; client_max_window_bits", 15),
              BASE "; client_max_window_bits=15");
    CHECK_STR(answer_bits("permessage-deflate; client_max_window_bits=12", 8),
              BASE "; client_max_window_bits=8");
    /* client_no_context_takeover: the client drops its context: no window to ask about. */
    CHECK_STR(answer("permessage-deflate; client_no_context_takeover"), NOCTX);
    CHECK_STR(answer("permessage-deflate; client_no_context_takeover; client_max_window_bits=10"),
              NOCTX);
    /* server_no_context_takeover is what we do anyway. */
    CHECK_STR(answer("permessage-deflate; server_no_context_takeover"), NOCTX);
    /* server_max_window_bits: every value from 8 to 15 is honoured and answered. */
    for (unsigned b = 8; b <= 15; b++) {
        char offer[128], want[160];
        snprintf(offer, sizeof offer, "permessage-deflate; server_max_window_bits=%u", b);
        snprintf(want, sizeof want, NOCTX "; server_max_window_bits=%u", b);
        TEST_CONTEXT("%s", offer);
        CHECK_STR(answer(offer), want);
        snprintf(offer, sizeof offer, "permessage-deflate; client_max_window_bits=%u", b);
        snprintf(want, sizeof want, BASE "; client_max_window_bits=%u", b < 11 ? b : 11);
        TEST_CONTEXT("%s", offer);
        CHECK_STR(answer(offer), want);
    }
    TEST_CONTEXT("%s", "");
    /* All four at once. */
    CHECK_STR(answer("permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
                     " server_max_window_bits=10; client_max_window_bits=9"),
              NOCTX "; server_max_window_bits=10");
    CHECK_STR(answer("permessage-deflate;client_max_window_bits;server_max_window_bits=12"),
              BASE "; client_max_window_bits=11; server_max_window_bits=12");

    /* The parameters in *p. */
    wsl_deflate_params p;
    const char *o = "permessage-deflate; client_max_window_bits=10; server_max_window_bits=9";
    CHECK(wsl_deflate_negotiate(o, strlen(o), 11, &p));
    CHECK_EQ(p.server_bits, 9);
    CHECK_EQ(p.client_bits, 10);
    CHECK(p.client_takeover);
    o = "permessage-deflate";
    CHECK(wsl_deflate_negotiate(o, strlen(o), 11, &p));
    CHECK_EQ(p.server_bits, 0);
    CHECK_EQ(p.client_bits, 0);
    CHECK(!p.client_takeover);
}

static void test_offer_invalid(void)
{
    /* Each of these makes the offer invalid (RFC 7692 section 7): declined, and with no other
     * offer nothing is accepted (the handshake itself goes on). */
    static const char *const bad[] = {
        "permessage-deflate; server_max_window_bits",        /* needs a value */
        "permessage-deflate; server_max_window_bits=7",      /* out of range */
        "permessage-deflate; server_max_window_bits=16",     /* out of range */
        "permessage-deflate; server_max_window_bits=08",     /* leading zero */
        "permessage-deflate; server_max_window_bits=+9",     /* sign */
        "permessage-deflate; server_max_window_bits=9.0",    /* not an integer */
        "permessage-deflate; server_max_window_bits=0x9",    /* not decimal */
        "permessage-deflate; server_max_window_bits=\"\"",   /* empty */
        "permessage-deflate; server_max_window_bits=1500",   /* out of range */
        "permessage-deflate; client_max_window_bits=7",      /* out of range */
        "permessage-deflate; client_max_window_bits=16",     /* out of range */
        "permessage-deflate; client_max_window_bits=010",    /* leading zero */
        "permessage-deflate; client_max_window_bits=\"8 \"", /* quoted, not a token */
        "permessage-deflate; server_no_context_takeover=1",  /* takes no value */
        "permessage-deflate; client_no_context_takeover=\"\"",
        "permessage-deflate; client_no_context_takeover=true",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        "permessage-deflate; client_max_window_bits=10; client_max_window_bits",
        "permessage-deflate; mux",                         /* unknown parameter */
        "permessage-deflate; x-webkit=1",                  /* unknown parameter */
        "permessage-deflate; server_max_window",           /* unknown parameter */
        "permessage-deflate; ",                            /* a ';' without a parameter */
        "permessage-deflate;;client_max_window_bits",      /* empty parameter */
        "permessage-deflate; =10",                         /* no name */
        "permessage-deflate; client_max_window_bits=",     /* '=' without a value */
        "permessage-deflate client_max_window_bits",       /* no ';' */
        "permessage-deflate; server_max_window_bits=\"10", /* unterminated quote */
        "permessage-deflate; server_max_window_bits=1 0",
        "permessage-deflate/1",
        "permessage-deflate-x",
        "x-permessage-deflate",
        "deflate-frame",
        "x-webkit-deflate-frame",
        "permessage-deflate\x01",
        "\"permessage-deflate\"",
        "",
        " , ,, ",
        ";client_max_window_bits",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        TEST_CONTEXT("offer '%s'", bad[i]);
        CHECK_STR(answer(bad[i]), "");
        wsl_deflate_params p;
        CHECK(!wsl_deflate_negotiate(bad[i], strlen(bad[i]), 11, &p));
    }
    TEST_CONTEXT("%s", "");
}

static void test_offer_syntax(void)
{
    /* Quoted values: a quoted-string whose content is a token counts as that token, escapes
     * included (RFC 6455 section 9.1). */
    CHECK_STR(answer("permessage-deflate; server_max_window_bits=\"10\""),
              NOCTX "; server_max_window_bits=10");
    CHECK_STR(answer("permessage-deflate; client_max_window_bits=\"9\""),
              BASE "; client_max_window_bits=9");
    CHECK_STR(answer("permessage-deflate; server_max_window_bits=\"1\\2\""),
              NOCTX "; server_max_window_bits=12");
    /* Whitespace around every separator; tabs too; names in any case. */
    CHECK_STR(answer("  permessage-deflate \t;\tclient_max_window_bits = 10 ; "
                     "server_max_window_bits= \"9\"  "),
              BASE "; client_max_window_bits=10; server_max_window_bits=9");
    CHECK_STR(answer("PerMessage-Deflate; Client_Max_Window_Bits"),
              BASE "; client_max_window_bits=11");

    /* Several offers: the first acceptable one wins (Chrome and Firefox send one; RFC 7692's
     * example offers a preferred configuration, then a fallback). */
    CHECK_STR(answer("permessage-deflate; client_max_window_bits=10, permessage-deflate"),
              BASE "; client_max_window_bits=10");
    CHECK_STR(answer("permessage-deflate; server_max_window_bits=7, permessage-deflate; "
                     "client_max_window_bits"),
              BASE "; client_max_window_bits=11");
    CHECK_STR(answer("permessage-deflate; foo, permessage-deflate; bar=1, "
                     "permessage-deflate; server_max_window_bits=13"),
              NOCTX "; server_max_window_bits=13");
    /* Other extensions (with parameters and quoted values holding separators) are skipped. */
    CHECK_STR(answer("x-webkit-deflate-frame, permessage-deflate; client_max_window_bits"),
              BASE "; client_max_window_bits=11");
    CHECK_STR(answer("foo; a=\"x,permessage-deflate;b\"; c, permessage-deflate"), NOCTX);
    CHECK_STR(answer("foo; a=\"x,permessage-deflate\""), "");
    CHECK_STR(answer("mux; max-channels=4; flow-control, permessage-deflate; "
                     "server_no_context_takeover"),
              NOCTX);
    /* A malformed element is skipped, the next one still read; quotes in it are honoured. */
    CHECK_STR(answer("foo bar, permessage-deflate"), NOCTX);
    CHECK_STR(answer("permessage-deflate; a=\"x\" y, permessage-deflate; client_max_window_bits"),
              BASE "; client_max_window_bits=11");
    CHECK_STR(answer("permessage-deflate; a=\"x, permessage-deflate"), "");
    CHECK_STR(answer("permessage-deflate; a=\"x\\\", permessage-deflate\", permessage-deflate"),
              NOCTX);
    /* Empty elements mean nothing. */
    CHECK_STR(answer(",, permessage-deflate ,"), NOCTX);
    /* The value's length is honoured, not its NUL. */
    const char with_nul[] = "permessage-deflate; client_max_window_bits=1\0";
    wsl_deflate_params p;
    CHECK(!wsl_deflate_negotiate(with_nul, sizeof with_nul - 1, 11, &p));
    CHECK(!wsl_deflate_negotiate(with_nul, sizeof with_nul - 3, 11, &p)); /* "...=" */
    CHECK(wsl_deflate_negotiate(with_nul, sizeof with_nul - 4, 11, &p));  /* "..._bits" */
    CHECK_EQ(p.client_bits, 11);
}

static void test_offer_request(void)
{
    /* Several Sec-WebSocket-Extensions lines: read in order. */
    static const char head[] = "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                               "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                               "Sec-WebSocket-Extensions: foo, permessage-deflate; x=1\r\n"
                               "sec-websocket-extensions: permessage-deflate; "
                               "client_max_window_bits=10\r\n\r\n";
    wsl_request req;
    CHECK_EQ(wsl_http_parse(&req, head, sizeof head - 1), WSL_REQ_UPGRADE);
    wsl_deflate_params p;
    CHECK(wsl_deflate_negotiate_request(&req, 11, &p));
    CHECK(p.client_takeover);
    CHECK_EQ(p.client_bits, 10);
    static const char none[] = "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                               "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    CHECK_EQ(wsl_http_parse(&req, none, sizeof none - 1), WSL_REQ_UPGRADE);
    CHECK(!wsl_deflate_negotiate_request(&req, 11, &p));

    /* The answer needs room. */
    char out[160];
    p = (wsl_deflate_params){.server_bits = 10, .client_bits = 9, .client_takeover = true};
    size_t n = wsl_deflate_answer(&p, out, sizeof out);
    CHECK_MEM(out, n, BASE "; client_max_window_bits=9; server_max_window_bits=10");
    CHECK_EQ(wsl_deflate_answer(&p, out, n), 0);
    CHECK_EQ(wsl_deflate_answer(&p, out, n + 1), n);
}

/* ---- a client's compressor (zlib), as browsers and libraries do it ------------------------ */

typedef struct client {
    z_stream z;
    int bits;
    bool takeover;
} client;

static void client_init(client *c, int bits, bool takeover)
{
    memset(c, 0, sizeof *c);
    c->bits = bits;
    c->takeover = takeover;
    /* zlib refuses a raw 8-bit window; like other zlib users, ask for 9 (it never reaches back
     * further than 250 bytes then). */
    CHECK_EQ(deflateInit2(&c->z, 6, Z_DEFLATED, -(bits < 9 ? 9 : bits), 8, Z_DEFAULT_STRATEGY),
             Z_OK);
}

/* One message's payload: compressed, sync-flushed, the tail cut off. Caller frees. */
static uint8_t *client_compress(client *c, const void *msg, size_t n, size_t *out_len)
{
    if (!c->takeover) deflateReset(&c->z);
    size_t cap = n + n / 8 + 64;
    uint8_t *out = malloc(cap);
    if (!out) abort();
    c->z.next_in = (Bytef *)(uintptr_t)msg;
    c->z.avail_in = (uInt)n;
    c->z.next_out = out;
    c->z.avail_out = (uInt)cap;
    int r = deflate(&c->z, Z_SYNC_FLUSH);
    if (r == Z_BUF_ERROR && n == 0) { /* a second flush with nothing new: zlib has nothing */
        *out_len = 0;
        return out;
    }
    CHECK_EQ(r, Z_OK);
    CHECK_EQ(c->z.avail_in, 0);
    size_t len = cap - c->z.avail_out;
    CHECK(len >= 4 && memcmp(out + len - 4, "\x00\x00\xff\xff", 4) == 0);
    *out_len = len - 4;
    return out;
}

static void client_end(client *c)
{
    deflateEnd(&c->z);
}

/* The inflated result of a whole message given in pieces cut at cuts[] (ascending); the output
 * of every piece is appended. Returns 0 or wsl_inflate's error. */
typedef struct inflated {
    uint8_t *p;
    size_t len;
} inflated;

static int inflate_pieces(wsl_deflate *d, wsl_inflater **inf, unsigned flags, unsigned bits,
                          const uint8_t *in, size_t n, const size_t *cuts, size_t ncuts,
                          uint64_t max, inflated *res)
{
    free(res->p);
    res->p = NULL;
    res->len = 0;
    size_t from = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : n;
        unsigned f = flags & (WSL_INFLATE_TEXT | WSL_INFLATE_TAKEOVER);
        if (i == 0) f |= WSL_INFLATE_FIRST;
        if (i == ncuts) f |= WSL_INFLATE_LAST;
        const uint8_t *out = NULL;
        size_t len = 0;
        int r = wsl_inflate(d, inf, f, bits, in + from, to - from, max, &out, &len);
        if (r) return r;
        uint8_t *np = realloc(res->p, res->len + len + 1);
        if (!np) abort();
        res->p = np;
        if (len) memcpy(res->p + res->len, out, len);
        res->len += len;
        from = to;
    }
    return 0;
}

static int inflate_whole(wsl_deflate *d, wsl_inflater **inf, unsigned flags, unsigned bits,
                         const void *in, size_t n, uint64_t max, inflated *res)
{
    return inflate_pieces(d, inf, flags, bits, in, n, NULL, 0, max, res);
}

/* Some text that compresses like chat traffic does (mostly ASCII, some UTF-8). */
static size_t sample_text(char *out, size_t n, unsigned seed)
{
    static const char *const words[] = {"hello", "world", "κόσμε", "chat", "room",   "message",
                                        "the",   "quick", "brown", "fox",  "日本語", "€"};
    size_t len = 0;
    while (len < n) {
        seed = seed * 1103515245u + 12345u;
        const char *w = words[(seed >> 16) % (sizeof words / sizeof words[0])];
        size_t wl = strlen(w);
        if (len + wl + 1 > n) break;
        memcpy(out + len, w, wl);
        len += wl;
        out[len++] = ' ';
    }
    while (len < n)
        out[len++] = '.';
    return len;
}

/* The largest m <= n that ends text + off on a character boundary (text holds more after). */
static size_t whole_chars(const char *text, size_t n)
{
    while (n && (text[n] & 0xC0) == 0x80)
        n--;
    return n;
}

/* ---- inflating ---------------------------------------------------------------------------- */

static void test_rfc_examples(void)
{
    /* RFC 7692 section 7.2.3: the same "Hello" five ways. */
    wsl_deflate *d = wsl_deflate_new();
    CHECK(d != NULL);
    wsl_inflater *inf = NULL;
    inflated res = {0};
    static const uint8_t hello[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    static const uint8_t stored[] = {0x00, 0x05, 0x00, 0xfa, 0xff, 0x48,
                                     0x65, 0x6c, 0x6c, 0x6f, 0x00};
    static const uint8_t bfinal[] = {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00};
    static const uint8_t two_blocks[] = {0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff,
                                         0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00};
    static const uint8_t empty[] = {0x00};
    const struct {
        const uint8_t *p;
        size_t n;
        const char *want;
    } ex[] = {
        {hello, sizeof hello, "Hello"},
        {stored, sizeof stored, "Hello"},
        {bfinal, sizeof bfinal, "Hello"},
        {bfinal, sizeof bfinal - 1, "Hello"}, /* a final block without the RFC's extra 00 */
        {two_blocks, sizeof two_blocks, "Hello"},
        {empty, 1, ""},
    };
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        for (size_t cut = 0; cut <= ex[i].n; cut++) {
            TEST_CONTEXT("example %zu cut at %zu", i, cut);
            CHECK_EQ(
                inflate_pieces(d, &inf, WSL_INFLATE_TEXT, 0, ex[i].p, ex[i].n, &cut, 1, 100, &res),
                0);
            CHECK_MEM(res.p, res.len, ex[i].want);
            CHECK(inf == NULL); /* no context takeover: nothing kept between messages */
        }
    }
    TEST_CONTEXT("%s", "");
    /* Context takeover: the second "Hello" refers back to the first. */
    static const uint8_t again[] = {0xf2, 0x00, 0x11, 0x00, 0x00};
    unsigned tk = WSL_INFLATE_TEXT | WSL_INFLATE_TAKEOVER;
    CHECK_EQ(inflate_whole(d, &inf, tk, 15, hello, sizeof hello, 100, &res), 0);
    CHECK_MEM(res.p, res.len, "Hello");
    CHECK(inf != NULL);
    CHECK_EQ(inflate_whole(d, &inf, tk, 15, again, sizeof again, 100, &res), 0);
    CHECK_MEM(res.p, res.len, "Hello");
    /* Without the context, the same bytes refer to nothing. */
    wsl_inflater *fresh = NULL;
    CHECK_EQ(inflate_whole(d, &fresh, WSL_INFLATE_TEXT, 0, again, sizeof again, 100, &res),
             -EBADMSG);
    CHECK(fresh == NULL);
    /* A final block does not end the context: it carries on into the next message. */
    wsl_inflater_free(d, inf);
    inf = NULL;
    CHECK_EQ(inflate_whole(d, &inf, tk, 15, bfinal, sizeof bfinal, 100, &res), 0);
    CHECK_EQ(inflate_whole(d, &inf, tk, 15, again, sizeof again, 100, &res), 0);
    CHECK_MEM(res.p, res.len, "Hello");
    wsl_inflater_free(d, inf);
    free(res.p);
    wsl_deflate_free(d);
}

static void test_round_trips(void)
{
    wsl_deflate *d = wsl_deflate_new();
    inflated res = {0};
    static char text[70100];
    sample_text(text, sizeof text, 7);
    static const size_t sizes[] = {0, 1, 5, 100, 1000, 4096, 65536, 70000};
    for (int bits = 8; bits <= 15; bits++) {
        for (int tk = 0; tk < 2; tk++) {
            client c;
            client_init(&c, bits, tk);
            wsl_inflater *inf = NULL;
            unsigned flags = WSL_INFLATE_TEXT | (tk ? WSL_INFLATE_TAKEOVER : 0);
            for (int round = 0; round < 3; round++) {
                for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
                    const char *msg = text + whole_chars(text, (size_t)round * 7);
                    size_t n = whole_chars(msg, sizes[i]);
                    size_t zlen;
                    TEST_CONTEXT("bits %d takeover %d round %d size %zu", bits, tk, round, n);
                    uint8_t *z = client_compress(&c, msg, n, &zlen);
                    CHECK_EQ(inflate_whole(d, &inf, flags, (unsigned)bits, z, zlen, 1 << 20, &res),
                             0);
                    CHECK(res.len == n && memcmp(res.p, msg, n) == 0);
                    /* State kept between messages: a window of 2^bits with takeover, none
                     * without. */
                    if (tk) {
                        CHECK(inf != NULL);
                        CHECK(wsl_inflater_memory(inf) < ((size_t)1 << bits) + 128);
                    } else {
                        CHECK(inf == NULL);
                    }
                    free(z);
                }
            }
            wsl_inflater_free(d, inf);
            client_end(&c);
        }
    }
    TEST_CONTEXT("%s", "");
    free(res.p);
    wsl_deflate_free(d);
}

/* A client that keeps its context, its messages fed in pieces at many cuts: every piece's
 * output appended gives the message, and a message in progress holds a lent stream. */
static void test_pieces(void)
{
    wsl_deflate *d = wsl_deflate_new();
    inflated res = {0};
    char text[3000];
    size_t tl = sample_text(text, sizeof text, 3);
    client c;
    client_init(&c, 10, true);
    wsl_inflater *inf = NULL;
    unsigned flags = WSL_INFLATE_TEXT | WSL_INFLATE_TAKEOVER;
    for (size_t m = 0; m < 12; m++) {
        const char *msg = text + whole_chars(text, m * 5);
        size_t n = whole_chars(msg, 200 + m * 150);
        if (msg + n > text + tl) abort();
        size_t zlen;
        uint8_t *z = client_compress(&c, msg, n, &zlen);
        /* Cuts every k bytes. */
        size_t k = 1 + m * 7;
        size_t ncuts = zlen / k, *cuts = malloc((ncuts + 1) * sizeof *cuts);
        if (!cuts) abort();
        for (size_t i = 0; i < ncuts; i++)
            cuts[i] = (i + 1) * k;
        if (ncuts && cuts[ncuts - 1] == zlen) ncuts--;
        TEST_CONTEXT("message %zu of %zu bytes (%zu compressed), pieces of %zu", m, n, zlen, k);
        CHECK_EQ(inflate_pieces(d, &inf, flags, 10, z, zlen, cuts, ncuts, 1 << 20, &res), 0);
        CHECK(res.len == n && memcmp(res.p, msg, n) == 0);
        free(cuts);
        free(z);
    }
    TEST_CONTEXT("%s", "");
    /* While a message is arriving, its stream is lent to the connection. */
    size_t zlen;
    uint8_t *z = client_compress(&c, text, 1000, &zlen);
    const uint8_t *out;
    size_t len;
    CHECK_EQ(wsl_inflate(d, &inf, flags | WSL_INFLATE_FIRST, 10, z, zlen / 2, 1 << 20, &out, &len),
             0);
    CHECK(wsl_inflater_memory(inf) > 32768);
    CHECK_EQ(wsl_inflate(d, &inf, flags | WSL_INFLATE_LAST, 10, z + zlen / 2, zlen - zlen / 2,
                         1 << 20, &out, &len),
             0);
    CHECK(wsl_inflater_memory(inf) < 1024 + 128);
    free(z);
    /* A piece that continues no message. */
    CHECK_EQ(wsl_inflate(d, &inf, flags | WSL_INFLATE_LAST, 10, (const uint8_t *)"x", 1, 100, &out,
                         &len),
             -EINVAL);
    wsl_inflater *none = NULL;
    CHECK_EQ(wsl_inflate(d, &none, WSL_INFLATE_LAST, 0, (const uint8_t *)"x", 1, 100, &out, &len),
             -EINVAL);
    /* Without takeover, a message in pieces holds state only until it ends. */
    client c2;
    client_init(&c2, 15, false);
    z = client_compress(&c2, text, 2000, &zlen);
    size_t cut = zlen / 3;
    CHECK_EQ(inflate_pieces(d, &none, WSL_INFLATE_TEXT, 0, z, zlen, &cut, 1, 1 << 20, &res), 0);
    CHECK(res.len == 2000 && memcmp(res.p, text, 2000) == 0);
    CHECK(none == NULL);
    /* A message abandoned halfway (its connection closed) is freed with the inflater. */
    CHECK_EQ(wsl_inflate(d, &none, WSL_INFLATE_FIRST, 0, z, cut, 1 << 20, &out, &len), 0);
    CHECK(none != NULL);
    wsl_inflater_free(d, none);
    /* A new message while one was in progress starts afresh (never happens through frame.c,
     * but must not leak). */
    none = NULL;
    CHECK_EQ(wsl_inflate(d, &none, WSL_INFLATE_FIRST, 0, z, cut, 1 << 20, &out, &len), 0);
    CHECK_EQ(inflate_whole(d, &none, 0, 0, z, zlen, 1 << 20, &res), 0);
    CHECK(none == NULL);
    free(z);
    client_end(&c2);
    client_end(&c);
    wsl_inflater_free(d, inf);
    free(res.p);
    wsl_deflate_free(d);
}

static void test_bombs_and_limits(void)
{
    wsl_deflate *d = wsl_deflate_new();
    inflated res = {0};
    /* 16 MiB of zeros compresses to about 16 KiB. */
    size_t big = 16u << 20;
    uint8_t *zeros = calloc(1, big);
    if (!zeros) abort();
    client c;
    client_init(&c, 15, false);
    size_t zlen;
    uint8_t *z = client_compress(&c, zeros, big, &zlen);
    CHECK(zlen < 20000);
    /* Limit 1 MiB: refused, and inflating stopped one byte past the limit, in the first piece
     * that got there (the rest is never looked at). */
    const uint8_t *out;
    size_t len = 0;
    wsl_inflater *inf = NULL;
    int r = wsl_inflate(d, &inf, WSL_INFLATE_FIRST, 0, z, zlen / 2, 1 << 20, &out, &len);
    CHECK_EQ(r, -EMSGSIZE);
    wsl_inflater_free(d, inf);
    inf = NULL;
    const char *why;
    CHECK_EQ(wsl_inflate_close_code(r, &why), 1009);
    /* Exactly at the limit is fine, one byte over is not, whole or in pieces. */
    free(z);
    z = client_compress(&c, zeros, 5000, &zlen);
    CHECK_EQ(inflate_whole(d, &inf, 0, 0, z, zlen, 5000, &res), 0);
    CHECK_EQ(res.len, 5000);
    CHECK_EQ(inflate_whole(d, &inf, 0, 0, z, zlen, 4999, &res), -EMSGSIZE);
    CHECK(inf == NULL);
    for (size_t cut = 0; cut <= zlen; cut++) {
        TEST_CONTEXT("cut %zu", cut);
        CHECK_EQ(inflate_pieces(d, &inf, 0, 0, z, zlen, &cut, 1, 4999, &res), -EMSGSIZE);
        wsl_inflater_free(d, inf);
        inf = NULL;
        CHECK_EQ(inflate_pieces(d, &inf, 0, 0, z, zlen, &cut, 1, 5000, &res), 0);
        CHECK_EQ(res.len, 5000);
        CHECK(inf == NULL);
    }
    TEST_CONTEXT("%s", "");
    CHECK_EQ(inflate_whole(d, &inf, 0, 0, z, zlen, UINT64_MAX, &res), 0);
    CHECK_EQ(res.len, 5000);
    free(z);
    /* Empty message, limit 0. */
    z = client_compress(&c, "", 0, &zlen);
    CHECK_EQ(inflate_whole(d, &inf, 0, 0, z, zlen, 0, &res), 0);
    CHECK_EQ(res.len, 0);
    free(z);
    /* A bomb from a client with context takeover: the limit is per message. */
    client ct;
    client_init(&ct, 11, true);
    for (int i = 0; i < 6; i++) {
        z = client_compress(&ct, zeros, 3000, &zlen);
        TEST_CONTEXT("takeover message %d", i);
        size_t half = zlen / 2; /* every other message in two pieces */
        CHECK_EQ(
            inflate_pieces(d, &inf, WSL_INFLATE_TAKEOVER, 11, z, zlen, &half, i % 2, 3000, &res),
            0);
        CHECK_EQ(res.len, 3000);
        free(z);
    }
    z = client_compress(&ct, zeros, 3001, &zlen);
    CHECK_EQ(inflate_whole(d, &inf, WSL_INFLATE_TAKEOVER, 11, z, zlen, 3000, &res), -EMSGSIZE);
    free(z);
    TEST_CONTEXT("%s", "");
    wsl_inflater_free(d, inf);
    client_end(&ct);
    client_end(&c);
    free(zeros);
    free(res.p);
    wsl_deflate_free(d);
}

static void test_invalid(void)
{
    wsl_deflate *d = wsl_deflate_new();
    inflated res = {0};
    wsl_inflater *inf = NULL;
    const char *why;
    /* Block type 3 is reserved. */
    static const uint8_t btype3[] = {0x07, 0x00};
    CHECK_EQ(inflate_whole(d, &inf, 0, 0, btype3, 2, 100, &res), -EBADMSG);
    CHECK_EQ(wsl_inflate_close_code(-EBADMSG, &why), 1007);
    /* A stored block whose NLEN is not the complement of LEN. */
    static const uint8_t badlen[] = {0x00, 0x05, 0x00, 0xfa, 0xfe, 'H', 'e', 'l', 'l', 'o', 0x00};
    CHECK_EQ(inflate_whole(d, &inf, 0, 0, badlen, sizeof badlen, 100, &res), -EBADMSG);
    /* A distance back past the start of the data. */
    static const uint8_t far[] = {0xf2, 0x00, 0x11, 0x00, 0x00};
    CHECK_EQ(inflate_whole(d, &inf, 0, 0, far, sizeof far, 100, &res), -EBADMSG);
    /* Truncated: the message ends inside a block (the tail is then no block end). */
    static const uint8_t cut[] = {0xf2, 0x48, 0xcd, 0xc9};
    CHECK_EQ(inflate_whole(d, &inf, 0, 0, cut, sizeof cut, 100, &res), -EBADMSG);
    /* An empty payload is no deflate data at all (zlib's empty message is one 00 byte), but a
     * client whose second flush in a row gives nothing sends it: an empty message. */
    CHECK_EQ(inflate_whole(d, &inf, 0, 0, cut, 0, 100, &res), 0);
    CHECK_EQ(res.len, 0);
    size_t zero = 0;
    CHECK_EQ(inflate_pieces(d, &inf, WSL_INFLATE_TEXT, 0, cut, 0, &zero, 1, 100, &res), 0);
    CHECK_EQ(res.len, 0);
    /* The sender left its own tail in: then ours makes it inconsistent? No: an empty stored
     * block twice is still valid deflate. */
    static const uint8_t own_tail[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07,
                                       0x00, 0x00, 0x00, 0xff, 0xff, 0x00};
    CHECK_EQ(inflate_whole(d, &inf, 0, 0, own_tail, sizeof own_tail, 100, &res), 0);
    CHECK_MEM(res.p, res.len, "Hello");
    /* Garbage after a final block that does not form blocks of its own. */
    static const uint8_t after_final[] = {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0xff, 0xff};
    CHECK_EQ(inflate_whole(d, &inf, 0, 0, after_final, sizeof after_final, 100, &res), -EBADMSG);
    CHECK(inf == NULL);
    /* Every prefix of a valid message given as a whole message fails cleanly or inflates to a
     * prefix; never crashes. Every single-byte corruption too. */
    client c;
    client_init(&c, 15, false);
    char text[600];
    size_t tl = sample_text(text, sizeof text, 11);
    size_t zlen;
    uint8_t *z = client_compress(&c, text, tl, &zlen);
    for (size_t n = 0; n < zlen; n++) {
        int r = inflate_whole(d, &inf, 0, 0, z, n, 1 << 20, &res);
        TEST_CONTEXT("prefix %zu of %zu", n, zlen);
        CHECK(r == 0 || r == -EBADMSG);
        if (r == 0) CHECK(res.len <= tl && memcmp(res.p, text, res.len) == 0);
    }
    uint8_t *bad = malloc(zlen);
    if (!bad) abort();
    for (size_t i = 0; i < zlen; i++) {
        memcpy(bad, z, zlen);
        bad[i] ^= (uint8_t)(1u << (i % 8));
        int r = inflate_whole(d, &inf, 0, 0, bad, zlen, 1 << 20, &res);
        TEST_CONTEXT("flip at %zu", i);
        CHECK(r == 0 || r == -EBADMSG || r == -EMSGSIZE);
    }
    TEST_CONTEXT("%s", "");
    CHECK(inf == NULL);
    free(bad);
    free(z);
    client_end(&c);
    free(res.p);
    wsl_deflate_free(d);
}

static void test_utf8(void)
{
    wsl_deflate *d = wsl_deflate_new();
    inflated res = {0};
    wsl_inflater *inf = NULL;
    client c;
    client_init(&c, 15, false);
    /* Invalid UTF-8 in the inflated text: 1007 at the piece that produces it. */
    static const char bad[] = "valid text first, then \xed\xa0\x80 a surrogate";
    size_t zlen;
    uint8_t *z = client_compress(&c, bad, sizeof bad - 1, &zlen);
    int r = inflate_whole(d, &inf, WSL_INFLATE_TEXT, 0, z, zlen, 1000, &res);
    CHECK_EQ(r, -EILSEQ);
    const char *why;
    CHECK_EQ(wsl_inflate_close_code(r, &why), 1007);
    /* The same bytes as binary are fine. */
    CHECK_EQ(inflate_whole(d, &inf, 0, 0, z, zlen, 1000, &res), 0);
    free(z);
    /* A text message ending inside a character: whole, or cut anywhere. */
    static const char trunc[] = "ends with half of \xe2\x82";
    z = client_compress(&c, trunc, sizeof trunc - 1, &zlen);
    for (size_t cut = 0; cut <= zlen; cut++) {
        TEST_CONTEXT("cut %zu", cut);
        CHECK_EQ(inflate_pieces(d, &inf, WSL_INFLATE_TEXT, 0, z, zlen, &cut, 1, 1000, &res),
                 -EILSEQ);
        wsl_inflater_free(d, inf);
        inf = NULL;
    }
    free(z);
    /* A character split across two pieces' output is fine. */
    static const char split[] = "κόσμε κόσμε κόσμε";
    z = client_compress(&c, split, sizeof split - 1, &zlen);
    for (size_t cut = 0; cut <= zlen; cut++) {
        TEST_CONTEXT("cut %zu", cut);
        CHECK_EQ(inflate_pieces(d, &inf, WSL_INFLATE_TEXT, 0, z, zlen, &cut, 1, 1000, &res), 0);
        CHECK_MEM(res.p, res.len, split);
    }
    TEST_CONTEXT("%s", "");
    free(z);
    /* Invalid text in the first piece is refused before the rest arrives. */
    char longbad[4000];
    memset(longbad, 'a', sizeof longbad);
    longbad[10] = (char)0xff;
    client_end(&c);
    client_init(&c, 15, false);
    c.z.avail_in = 0;
    z = client_compress(&c, longbad, sizeof longbad, &zlen);
    const uint8_t *out;
    size_t len;
    CHECK_EQ(wsl_inflate(d, &inf, WSL_INFLATE_FIRST | WSL_INFLATE_TEXT, 0, z, zlen - 1, 1 << 20,
                         &out, &len),
             -EILSEQ);
    wsl_inflater_free(d, inf);
    free(z);
    client_end(&c);
    free(res.p);
    wsl_deflate_free(d);
}

/* ---- compressing -------------------------------------------------------------------------- */

/* zlib's raw inflate with exactly the window the client announced must take our output. */
static bool zlib_inflates(const uint8_t *z, size_t zlen, int bits, const void *want, size_t n)
{
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, -bits) != Z_OK) return false;
    uint8_t *in = malloc(zlen + 4), *out = malloc(n + 16);
    if (!in || !out) abort();
    memcpy(in, z, zlen);
    memcpy(in + zlen, "\x00\x00\xff\xff", 4);
    s.next_in = in;
    s.avail_in = (uInt)(zlen + 4);
    s.next_out = out;
    s.avail_out = (uInt)(n + 16);
    int r = inflate(&s, Z_SYNC_FLUSH);
    bool ok = (r == Z_OK || r == Z_STREAM_END) && s.avail_in == 0 && s.total_out == n &&
              memcmp(out, want, n) == 0;
    inflateEnd(&s);
    free(in);
    free(out);
    return ok;
}

static void test_compress(void)
{
    wsl_deflate *d = wsl_deflate_new();
    static char text[100000];
    sample_text(text, sizeof text, 5);
    static const size_t sizes[] = {1, 10, 100, 300, 1000, 5000, 33000, 100000};
    for (unsigned bits = 8; bits <= 15; bits++) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            const uint8_t *z;
            size_t zlen;
            TEST_CONTEXT("server window %u, %zu bytes", bits, sizes[i]);
            int r = wsl_deflate_compress(d, bits, text, sizes[i], &z, &zlen);
            if (sizes[i] < 50) {
                CHECK_EQ(r, 0); /* too small to gain */
                continue;
            }
            CHECK_EQ(r, 1);
            CHECK(zlen < (sizes[i] < 1000 ? sizes[i] : sizes[i] / 2));
            /* No context: each message inflates alone, with the window the client allowed
             * (8 bits too, where zlib's own deflate would not go). */
            CHECK(zlib_inflates(z, zlen, (int)bits, text, sizes[i]));
        }
    }
    TEST_CONTEXT("%s", "");
    /* 0 and 15 mean the same. */
    const uint8_t *z;
    size_t zlen, zlen15;
    CHECK_EQ(wsl_deflate_compress(d, 15, text, 5000, &z, &zlen15), 1);
    CHECK_EQ(wsl_deflate_compress(d, 0, text, 5000, &z, &zlen), 1);
    CHECK_EQ(zlen, zlen15);
    /* Our own inflater takes it too, twice in a row without a context. */
    inflated res = {0};
    wsl_inflater *inf = NULL;
    uint8_t *copy = malloc(zlen);
    if (!copy) abort();
    memcpy(copy, z, zlen);
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(inflate_whole(d, &inf, 0, 0, copy, zlen, 1 << 20, &res), 0);
        CHECK(res.len == 5000 && memcmp(res.p, text, 5000) == 0);
    }
    free(copy);
    /* Incompressible bytes and empty messages are not worth it. */
    uint8_t noise[4096];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof noise; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise[i] = (uint8_t)x;
    }
    CHECK_EQ(wsl_deflate_compress(d, 15, noise, sizeof noise, &z, &zlen), 0);
    CHECK_EQ(wsl_deflate_compress(d, 15, "", 0, &z, &zlen), 0);
    /* After a refusal the stream is fine again. */
    CHECK_EQ(wsl_deflate_compress(d, 15, text, 1000, &z, &zlen), 1);
    CHECK(zlib_inflates(z, zlen, 15, text, 1000));
    free(res.p);
    wsl_deflate_free(d);
    wsl_deflate_free(NULL);
}

int main(void)
{
    test_offer_parameters();
    test_offer_invalid();
    test_offer_syntax();
    test_offer_request();
    test_rfc_examples();
    test_round_trips();
    test_pieces();
    test_bombs_and_limits();
    test_invalid();
    test_utf8();
    test_compress();
    TEST_MAIN_END();
}
