/* libFuzzer target for the UTF-8 validator (src/utf8.c): the DFA fed whole, and fed in chunks
 * whose sizes come from byte 0 of the input, must agree with a slow reference decoder written
 * here, at the end and after every chunk. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "utf8.h"

enum { COMPLETE, PARTIAL, BAD };

/* Encode cp the one way UTF-8 allows; returns the length. */
static size_t encode(uint32_t cp, uint8_t out[4])
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* One whole sequence of `len` bytes is valid when it decodes to a scalar value (not a
 * surrogate, at most U+10FFFF) whose unique encoding is exactly these bytes: that rules out
 * overlongs and stray continuation bytes without a rule of its own for each. */
static int sequence_ok(const uint8_t *s, size_t len)
{
    uint32_t cp;
    if (len == 1)
        cp = s[0];
    else if (len == 2)
        cp = s[0] & 0x1Fu;
    else if (len == 3)
        cp = s[0] & 0x0Fu;
    else
        cp = s[0] & 0x07u;
    for (size_t k = 1; k < len; k++)
        cp = cp << 6 | (s[k] & 0x3Fu);
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    uint8_t again[4];
    return encode(cp, again) == len && memcmp(again, s, len) == 0;
}

static size_t length_from_lead(uint8_t b)
{
    if (b < 0x80) return 1;
    if (b >= 0xC0 && b < 0xE0) return 2;
    if (b >= 0xE0 && b < 0xF0) return 3;
    if (b >= 0xF0 && b < 0xF8) return 4;
    return 0;
}

/* COMPLETE, PARTIAL (valid, but the last character is cut short and can still be completed)
 * or BAD. A cut-short character can be completed when some bytes appended make it a valid
 * sequence: all rules depend on the lead byte and the one after it only, so trying each value
 * of the first missing byte (and 0x80 for any after it) is enough. */
static int reference(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t len = length_from_lead(s[i]);
        if (!len) return BAD;
        if (i + len <= n) {
            if (!sequence_ok(s + i, len)) return BAD;
            i += len;
            continue;
        }
        uint8_t tmp[4];
        size_t have = n - i;
        memcpy(tmp, s + i, have);
        for (unsigned c = 0x80; c <= 0xBF; c++) {
            tmp[have] = (uint8_t)c;
            for (size_t k = have + 1; k < len; k++)
                tmp[k] = 0x80;
            if (sequence_ok(tmp, len)) return PARTIAL;
        }
        return BAD;
    }
    return COMPLETE;
}

static int classify(uint32_t state)
{
    return state == WSL_UTF8_ACCEPT ? COMPLETE : state == WSL_UTF8_REJECT ? BAD : PARTIAL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    unsigned seed = data[0];
    /* A copy of exactly the text, so a read past it is caught. */
    size_t n = size - 1;
    uint8_t *s = malloc(n ? n : 1);
    ASSERT(s);
    memcpy(s, data + 1, n);

    uint32_t whole = wsl_utf8_feed(WSL_UTF8_ACCEPT, s, n);
    ASSERT(classify(whole) == reference(s, n));
    ASSERT(wsl_utf8_valid(s, n) == (reference(s, n) == COMPLETE));

    /* In chunks of 1..seed+1 bytes (varying), checking the state after each. */
    uint32_t st = WSL_UTF8_ACCEPT;
    size_t at = 0, step = 0;
    while (at < n) {
        size_t c = 1 + (seed * 7 + step * 13) % (seed + 1);
        if (c > n - at) c = n - at;
        st = wsl_utf8_feed(st, s + at, c);
        at += c;
        step++;
        if (n <= 2048) ASSERT(classify(st) == reference(s, at));
        if (st == WSL_UTF8_REJECT) {
            /* Sticky: nothing brings it back. */
            ASSERT(wsl_utf8_feed(st, s + at, n - at) == WSL_UTF8_REJECT);
            break;
        }
    }
    if (st != WSL_UTF8_REJECT)
        ASSERT(st == whole);
    else
        ASSERT(whole == WSL_UTF8_REJECT);
    free(s);
    return 0;
}
