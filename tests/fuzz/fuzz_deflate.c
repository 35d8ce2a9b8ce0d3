/* libFuzzer target for src/deflate.c. Byte 0 picks what the rest is:
 *   0: a Sec-WebSocket-Extensions value. An accepted offer has parameters in range, an answer
 *      that fits, and that answer read back as an offer agrees with itself; junk after an
 *      accepted list changes nothing.
 *   1: a compressed message's payload (byte 1: size limit, byte 2: how it is cut, byte 3:
 *      flags). Inflated whole and in pieces, the outcome (error or bytes) is the same, stays
 *      within the limit, and is UTF-8 when text; with context takeover, twice in a row.
 *   2: a message to compress (byte 1: the server window): whatever we send, zlib inflates with
 *      exactly that window, and so does our own inflater.
 * Any other value of byte 0 is folded onto these. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "deflate.h"
#include "fuzz.h"
#include "utf8.h"

static wsl_deflate *D;

static void offers(const uint8_t *p, size_t n)
{
    wsl_deflate_params a, b;
    for (unsigned bits = 8; bits <= 15; bits += 3) {
        if (!wsl_deflate_negotiate((const char *)p, n, bits, &a)) continue;
        ASSERT(a.server_bits == 0 || (a.server_bits >= 8 && a.server_bits <= 15));
        if (a.client_takeover)
            ASSERT(a.client_bits >= 8 && a.client_bits <= bits);
        else
            ASSERT(a.client_bits == 0);
        char ans[160];
        size_t len = wsl_deflate_answer(&a, ans, sizeof ans);
        ASSERT(len > 0 && len == strlen(ans));
        ASSERT(strncmp(ans, "permessage-deflate; server_no_context_takeover", 46) == 0);
        /* Our answer is a valid offer of the same configuration. */
        ASSERT(wsl_deflate_negotiate(ans, len, bits, &b));
        ASSERT(b.server_bits == a.server_bits && b.client_bits == a.client_bits &&
               b.client_takeover == a.client_takeover);
        /* Whatever follows the accepted list cannot change the choice. */
        char *more = malloc(n + 32);
        ASSERT(more);
        memcpy(more, p, n);
        memcpy(more + n, ", permessage-deflate, \"", 23);
        ASSERT(wsl_deflate_negotiate(more, n + 23, bits, &b));
        ASSERT(b.server_bits == a.server_bits && b.client_bits == a.client_bits &&
               b.client_takeover == a.client_takeover);
        free(more);
    }
}

typedef struct outcome {
    int err;
    uint8_t *p;
    size_t len;
} outcome;

/* Inflate one message, cut into pieces of sizes drawn from seed (0: whole). */
static void inflate_msg(wsl_inflater **inf, unsigned flags, const uint8_t *in, size_t n,
                        uint64_t max, uint32_t seed, outcome *o)
{
    o->err = 0;
    o->len = 0;
    o->p = malloc(1);
    ASSERT(o->p);
    size_t at = 0;
    bool first = true;
    for (;;) {
        size_t k = n - at;
        if (seed) {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            size_t c = seed % 23;
            if (c < k) k = c;
        }
        bool last = at + k == n;
        unsigned f = flags | (first ? WSL_INFLATE_FIRST : 0) | (last ? WSL_INFLATE_LAST : 0);
        /* Each piece in a buffer of its own, so AddressSanitizer sees any read past it. */
        uint8_t *piece = malloc(k ? k : 1);
        ASSERT(piece);
        memcpy(piece, in + at, k);
        const uint8_t *out = NULL;
        size_t len = 0;
        int r = wsl_inflate(D, inf, f, 10, piece, k, max, &out, &len);
        free(piece);
        if (r) {
            ASSERT(r == -EMSGSIZE || r == -EBADMSG || r == -EILSEQ);
            const char *why;
            unsigned code = wsl_inflate_close_code(r, &why);
            ASSERT(code == 1009 || code == 1007);
            o->err = r;
            wsl_inflater_free(D, *inf);
            *inf = NULL;
            return;
        }
        o->p = realloc(o->p, o->len + len + 1);
        ASSERT(o->p);
        if (len) memcpy(o->p + o->len, out, len);
        o->len += len;
        ASSERT(o->len <= max);
        at += k;
        first = false;
        if (last) break;
    }
    if (flags & WSL_INFLATE_TEXT) ASSERT(wsl_utf8_valid(o->p, o->len));
    if (!(flags & WSL_INFLATE_TAKEOVER)) ASSERT(*inf == NULL);
}

static void same(const outcome *a, const outcome *b)
{
    ASSERT(a->err == b->err);
    if (!a->err) ASSERT(a->len == b->len && memcmp(a->p, b->p, a->len) == 0);
}

static void inflating(const uint8_t *p, size_t n)
{
    if (n < 3) return;
    uint64_t max = p[0] == 255 ? UINT64_MAX : (uint64_t)p[0] * 64;
    uint32_t seed = p[1] * 2654435761u | 1;
    unsigned flags = (p[2] & 1 ? WSL_INFLATE_TEXT : 0) | (p[2] & 2 ? WSL_INFLATE_TAKEOVER : 0);
    p += 3;
    n -= 3;
    /* With takeover the payload goes twice: the second time it may refer to the first. */
    int rounds = flags & WSL_INFLATE_TAKEOVER ? 2 : 1;
    wsl_inflater *whole = NULL, *cut = NULL;
    for (int i = 0; i < rounds; i++) {
        outcome a, b;
        inflate_msg(&whole, flags, p, n, max, 0, &a);
        inflate_msg(&cut, flags, p, n, max, seed, &b);
        same(&a, &b);
        bool stop = a.err != 0;
        free(a.p);
        free(b.p);
        if (stop) break;
    }
    wsl_inflater_free(D, whole);
    wsl_inflater_free(D, cut);
}

static void compressing(const uint8_t *p, size_t n)
{
    if (n < 1) return;
    unsigned bits = 8 + p[0] % 8;
    p++;
    n--;
    const uint8_t *z;
    size_t zlen;
    int r = wsl_deflate_compress(D, bits, p, n, &z, &zlen);
    ASSERT(r == 0 || r == 1);
    if (r == 0) return;
    ASSERT(zlen < n);
    uint8_t *in = malloc(zlen + 4), *out = malloc(n + 1);
    ASSERT(in && out);
    memcpy(in, z, zlen);
    memcpy(in + zlen, "\x00\x00\xff\xff", 4);
    z_stream s;
    memset(&s, 0, sizeof s);
    ASSERT(inflateInit2(&s, -(int)bits) == Z_OK);
    s.next_in = in;
    s.avail_in = (uInt)(zlen + 4);
    s.next_out = out;
    s.avail_out = (uInt)(n + 1);
    int zr = inflate(&s, Z_SYNC_FLUSH);
    ASSERT((zr == Z_OK || zr == Z_BUF_ERROR) && s.avail_in == 0);
    ASSERT(s.total_out == n && memcmp(out, p, n) == 0);
    inflateEnd(&s);
    wsl_inflater *inf = NULL;
    outcome o;
    inflate_msg(&inf, 0, in, zlen, n, 0, &o);
    ASSERT(o.err == 0 && o.len == n && memcmp(o.p, p, n) == 0);
    free(o.p);
    free(in);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    if (!D) D = wsl_deflate_new(); /* kept for the whole run, like the server's */
    ASSERT(D);
    switch (data[0] % 3) {
    case 0:
        offers(data + 1, size - 1);
        break;
    case 1:
        inflating(data + 1, size - 1);
        break;
    default:
        compressing(data + 1, size - 1);
        break;
    }
    return 0;
}
