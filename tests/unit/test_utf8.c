/* Unit tests for src/utf8.c: named valid and invalid sequences (overlongs, surrogates, past
 * U+10FFFF, truncations), every 1- to 3-byte input and the 4-byte lead ranges against a slow
 * reference, streaming split at every position, and the 8-byte ASCII fast path. */
#include <stdlib.h>

#include "test.h"
#include "utf8.h"

enum { REF_VALID, REF_PREFIX, REF_INVALID };

/* The slow reference: decode each code point by its definition (RFC 3629): the lead byte gives
 * the length, the value must need exactly that length, and must not be a surrogate or past
 * U+10FFFF. A truncated last sequence is a valid prefix when some completion of it is valid:
 * its possible values form a range, which must meet the allowed values of its length. */
static int ref_check(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        size_t len;
        uint32_t cp;
        if (b < 0x80) {
            i++;
            continue;
        } else if (b >= 0xC0 && b < 0xE0) {
            len = 2, cp = b & 0x1F;
        } else if (b >= 0xE0 && b < 0xF0) {
            len = 3, cp = b & 0x0F;
        } else if (b >= 0xF0 && b < 0xF8) {
            len = 4, cp = b & 0x07;
        } else {
            return REF_INVALID;
        }
        size_t have = n - i < len ? n - i : len;
        for (size_t k = 1; k < have; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return REF_INVALID;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        /* The values this sequence can still become, and those its length may encode. */
        size_t missing = len - have;
        uint32_t lo = cp << (6 * missing), hi = lo | ((1u << (6 * missing)) - 1);
        uint32_t min = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
        uint32_t max = len == 2 ? 0x7FF : len == 3 ? 0xFFFF : 0x10FFFF;
        if (lo < min) lo = min;
        if (hi > max) hi = max;
        if (lo > hi) return REF_INVALID;                      /* overlong or too large */
        if (lo >= 0xD800 && hi <= 0xDFFF) return REF_INVALID; /* only surrogates */
        if (missing) return REF_PREFIX;
        i += len;
    }
    return REF_VALID;
}
static int dfa_check(const uint8_t *s, size_t n)
{
    uint32_t st = wsl_utf8_feed(WSL_UTF8_ACCEPT, s, n);
    return st == WSL_UTF8_ACCEPT ? REF_VALID : st == WSL_UTF8_REJECT ? REF_INVALID : REF_PREFIX;
}

/* The DFA fed in two pieces split at every position, and byte by byte, must agree with it
 * fed whole. */
static void check_streaming(const uint8_t *s, size_t n)
{
    uint32_t whole = wsl_utf8_feed(WSL_UTF8_ACCEPT, s, n);
    for (size_t cut = 0; cut <= n; cut++) {
        uint32_t st = wsl_utf8_feed(WSL_UTF8_ACCEPT, s, cut);
        st = wsl_utf8_feed(st, s + cut, n - cut);
        TEST_CONTEXT("split at %zu of %zu", cut, n);
        CHECK_EQ(st, whole);
    }
    uint32_t st = WSL_UTF8_ACCEPT;
    for (size_t i = 0; i < n; i++)
        st = wsl_utf8_feed(st, s + i, 1);
    TEST_CONTEXT("byte by byte, %zu bytes", n);
    CHECK_EQ(st, whole);
    TEST_CONTEXT("%s", "");
}

static void expect(const char *s, int want)
{
    size_t n = strlen(s);
    TEST_CONTEXT("%s", s);
    CHECK_EQ(dfa_check((const uint8_t *)s, n), want);
    CHECK_EQ(ref_check((const uint8_t *)s, n), want);
    check_streaming((const uint8_t *)s, n);
}

static void test_named(void)
{
    expect("", REF_VALID);
    expect("Hello, world", REF_VALID);
    expect("\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5", REF_VALID); /* κόσμε */
    expect("\x7F", REF_VALID);
    expect("\xC2\x80", REF_VALID);         /* U+0080 */
    expect("\xDF\xBF", REF_VALID);         /* U+07FF */
    expect("\xE0\xA0\x80", REF_VALID);     /* U+0800 */
    expect("\xED\x9F\xBF", REF_VALID);     /* U+D7FF */
    expect("\xEE\x80\x80", REF_VALID);     /* U+E000 */
    expect("\xEF\xBF\xBD", REF_VALID);     /* U+FFFD */
    expect("\xEF\xBF\xBF", REF_VALID);     /* U+FFFF: a noncharacter, still valid */
    expect("\xF0\x90\x80\x80", REF_VALID); /* U+10000 */
    expect("\xF4\x8F\xBF\xBF", REF_VALID); /* U+10FFFF */
    expect("\xF3\xBF\xBF\xBF", REF_VALID); /* U+FFFFF */

    expect("\x80", REF_INVALID); /* lone continuation bytes */
    expect("\xBF", REF_INVALID);
    expect("a\x80"
           "b",
           REF_INVALID);
    expect("\xC0\x80", REF_INVALID);                 /* overlong NUL */
    expect("\xC1\xBF", REF_INVALID);                 /* overlong U+007F */
    expect("\xE0\x80\x80", REF_INVALID);             /* overlong */
    expect("\xE0\x9F\xBF", REF_INVALID);             /* overlong U+07FF */
    expect("\xF0\x80\x80\x80", REF_INVALID);         /* overlong */
    expect("\xF0\x8F\xBF\xBF", REF_INVALID);         /* overlong U+FFFF */
    expect("\xED\xA0\x80", REF_INVALID);             /* U+D800 */
    expect("\xED\xAD\xBF", REF_INVALID);             /* U+DB7F */
    expect("\xED\xBF\xBF", REF_INVALID);             /* U+DFFF */
    expect("\xED\xA0\x80\xED\xB0\x80", REF_INVALID); /* a surrogate pair, CESU-style */
    expect("\xF4\x90\x80\x80", REF_INVALID);         /* U+110000 (Autobahn 6.4.1) */
    expect("\xF7\xBF\xBF\xBF", REF_INVALID);         /* U+1FFFFF */
    expect("\xF5", REF_INVALID);
    expect("\xF8\x88\x80\x80\x80", REF_INVALID); /* 5-byte form */
    expect("\xFC\x84\x80\x80\x80\x80", REF_INVALID);
    expect("\xFE", REF_INVALID);
    expect("\xFF", REF_INVALID);
    expect("\xC2"
           "a",
           REF_INVALID); /* a lead byte cut short by ASCII */
    expect("\xE1\x80"
           "a",
           REF_INVALID);
    expect("\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0\x80"
           "edited",
           REF_INVALID);

    expect("\xC2", REF_PREFIX); /* truncated: valid so far */
    expect("\xE0\xA0", REF_PREFIX);
    expect("\xE1", REF_PREFIX);
    expect("\xED\x9F", REF_PREFIX);
    expect("\xF0\x90\x80", REF_PREFIX);
    expect("\xF4\x8F", REF_PREFIX);
    expect("\xF4", REF_PREFIX);
    expect("abc\xF1\x80\x80", REF_PREFIX);
    /* ... but not when the bytes already rule every completion out. */
    expect("\xE0\x80", REF_INVALID);
    expect("\xED\xA0", REF_INVALID);
    expect("\xF0\x80", REF_INVALID);
    expect("\xF4\x90", REF_INVALID);
}

/* Every input of 1, 2 and 3 bytes, and the 4-byte inputs that start with a 4-byte lead. */
static void test_exhaustive(void)
{
    uint8_t s[4];
    long bad = 0;
    for (unsigned a = 0; a < 256; a++) {
        s[0] = (uint8_t)a;
        if (dfa_check(s, 1) != ref_check(s, 1)) bad++;
        for (unsigned b = 0; b < 256; b++) {
            s[1] = (uint8_t)b;
            if (dfa_check(s, 2) != ref_check(s, 2)) bad++;
            for (unsigned c = 0; c < 256; c++) {
                s[2] = (uint8_t)c;
                if (dfa_check(s, 3) != ref_check(s, 3)) {
                    if (bad++ < 5) fprintf(stderr, "mismatch %02x %02x %02x\n", a, b, c);
                }
            }
        }
    }
    CHECK_EQ(bad, 0);
    bad = 0;
    for (unsigned a = 0xF0; a < 0xF8; a++) {
        s[0] = (uint8_t)a;
        for (unsigned b = 0x70; b < 0xD0; b++)
            for (unsigned c = 0x70; c < 0xD0; c++)
                for (unsigned d = 0x70; d < 0xD0; d++) {
                    s[1] = (uint8_t)b, s[2] = (uint8_t)c, s[3] = (uint8_t)d;
                    if (dfa_check(s, 4) != ref_check(s, 4) && bad++ < 5)
                        fprintf(stderr, "mismatch %02x %02x %02x %02x\n", a, b, c, d);
                }
    }
    CHECK_EQ(bad, 0);
}

/* The fast path skips 8 ASCII bytes at a time only in ACCEPT: put a bad byte, and a multi-byte
 * character, at every position of longer ASCII runs. */
static void test_fast_path(void)
{
    uint8_t s[80];
    for (size_t len = 1; len <= sizeof s; len++) {
        for (size_t pos = 0; pos < len; pos++) {
            memset(s, 'x', len);
            s[pos] = 0x80;
            TEST_CONTEXT("continuation at %zu of %zu", pos, len);
            CHECK_EQ(wsl_utf8_feed(WSL_UTF8_ACCEPT, s, len), WSL_UTF8_REJECT);
            s[pos] = 0xC2; /* a lead byte: valid only with a continuation after it */
            uint32_t st = wsl_utf8_feed(WSL_UTF8_ACCEPT, s, len);
            if (pos == len - 1)
                CHECK(st != WSL_UTF8_ACCEPT && st != WSL_UTF8_REJECT);
            else
                CHECK_EQ(st, WSL_UTF8_REJECT);
            if (pos + 1 < len) {
                s[pos + 1] = 0xA9; /* U+00A9 */
                CHECK_EQ(wsl_utf8_feed(WSL_UTF8_ACCEPT, s, len), WSL_UTF8_ACCEPT);
            }
        }
    }
    /* Mid-sequence, ASCII must not be skipped. */
    memset(s, 'x', sizeof s);
    s[0] = 0xE2;
    CHECK_EQ(wsl_utf8_feed(WSL_UTF8_ACCEPT, s, sizeof s), WSL_UTF8_REJECT);
    uint32_t mid = wsl_utf8_feed(WSL_UTF8_ACCEPT, s, 1);
    CHECK_EQ(wsl_utf8_feed(mid, s + 1, 16), WSL_UTF8_REJECT);
    TEST_CONTEXT("%s", "");
}

static void test_sticky_and_states(void)
{
    const uint8_t ascii[16] = "all plain ascii";
    CHECK_EQ(wsl_utf8_feed(WSL_UTF8_REJECT, ascii, 15), WSL_UTF8_REJECT);
    CHECK_EQ(wsl_utf8_feed(WSL_UTF8_REJECT, ascii, 0), WSL_UTF8_REJECT);
    CHECK_EQ(wsl_utf8_feed(WSL_UTF8_ACCEPT, ascii, 0), WSL_UTF8_ACCEPT);
    CHECK_EQ(wsl_utf8_feed(WSL_UTF8_ACCEPT, NULL, 0), WSL_UTF8_ACCEPT);
    /* A state that no feed returns is refused rather than indexing past the table. */
    CHECK_EQ(wsl_utf8_feed(5, ascii, 3), WSL_UTF8_REJECT);
    CHECK_EQ(wsl_utf8_feed(1200, ascii, 3), WSL_UTF8_REJECT);
    CHECK_EQ(wsl_utf8_feed(0xFFFFFFFFu, ascii, 3), WSL_UTF8_REJECT);
    CHECK(wsl_utf8_valid("ok", 2));
    CHECK(!wsl_utf8_valid("\xC3", 1));
    CHECK(!wsl_utf8_valid("\xC3(", 2));
}

/* Random mixes of valid characters and junk, long enough to exercise the fast path, checked
 * against the reference whole and split at every position. */
static void test_random_mix(void)
{
    static const char *pieces[] = {"a",
                                   "hello world ",
                                   "\xC2\xA9",
                                   "\xE2\x82\xAC",
                                   "\xF0\x9F\x98\x80",
                                   "\xED\x9F\xBF",
                                   "\xF4\x8F\xBF\xBF",
                                   "12345678",
                                   "\x80",
                                   "\xC0\xAF",
                                   "\xED\xA0\x80",
                                   "\xF4\x90\x80\x80",
                                   "\xE2\x82",
                                   "\xFF"};
    unsigned seed = 12345;
    uint8_t buf[256];
    for (int round = 0; round < 2000; round++) {
        size_t n = 0;
        int parts = 1 + round % 12;
        bool junk = round % 3 == 0;
        for (int i = 0; i < parts; i++) {
            seed = seed * 1103515245u + 12345u;
            size_t k = (seed >> 16) % (junk ? 14 : 8);
            size_t l = strlen(pieces[k]);
            if (n + l > sizeof buf) break;
            memcpy(buf + n, pieces[k], l);
            n += l;
        }
        TEST_CONTEXT("round %d", round);
        CHECK_EQ(dfa_check(buf, n), ref_check(buf, n));
        check_streaming(buf, n);
    }
}

int main(void)
{
    test_named();
    test_exhaustive();
    test_fast_path();
    test_sticky_and_states();
    test_random_mix();
    TEST_MAIN_END();
}
