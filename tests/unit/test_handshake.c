/* Unit tests for src/handshake.c: SHA-1 against FIPS 180 vectors (and the padding edge
 * lengths), base64 against RFC 4648, the key check, and RFC 6455's own accept example. */
#include <stdlib.h>

#include "handshake.h"
#include "test.h"

static void hex(const uint8_t *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void check_sha1(const void *data, size_t len, const char *want)
{
    uint8_t digest[20];
    char got[41];
    wsl_sha1(data, len, digest);
    hex(digest, 20, got);
    TEST_CONTEXT("sha1 of %zu bytes", len);
    CHECK_STR(got, want);
}

static void test_sha1(void)
{
    check_sha1("", 0, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    check_sha1(NULL, 0, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    check_sha1("abc", 3, "a9993e364706816aba3e25717850c26c9cd0d89d");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    check_sha1(two, strlen(two), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    const char *four =
        "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmn"
        "opqklmnopqrlmnopqrsmnopqrstnopqrstu";
    check_sha1(four, strlen(four), "a49b2446a02c645bf419f995b67091253a04a259");
    char *million = malloc(1000000);
    CHECK(million != NULL);
    if (million) {
        memset(million, 'a', 1000000);
        check_sha1(million, 1000000, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
        free(million);
    }
    /* Lengths around the padding boundary (55 fits the length in the same block, 56 does not). */
    static const struct {
        size_t len;
        const char *sha1;
    } edge[] = {
        {55, "ddf57317ef34bfee3b6df83d359098930eb278bc"},
        {56, "a0d492bb0fc889d0eca3bc137066ab6f4f74f369"},
        {63, "c55856749bef509bdfe6bfebfc7bf4e793e82132"},
        {64, "bede92be29c3874e1b54ddc77988d606fc857a8e"},
        {65, "b05a80522b053d6dc7e0a517d0e70212c7dad11f"},
        {119, "504e27376a6e0f0dba8295b85cb25dc4dfa17d23"},
        {120, "82134b02fb3f702491be9bed581eeab59334acb2"},
        {128, "a09133e6730ffe899efb70204cb5646cd5dc24ee"},
    };
    uint8_t buf[128];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(i * 7 + 3);
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++)
        check_sha1(buf, edge[i].len, edge[i].sha1);
    TEST_CONTEXT("%s", "");
}

static void check_b64(const char *in, const char *want)
{
    char out[64];
    size_t n = wsl_base64_encode((const uint8_t *)in, strlen(in), out);
    TEST_CONTEXT("base64 of \"%s\"", in);
    CHECK_EQ(n, strlen(want));
    CHECK_STR(out, want);
}

static void test_base64(void)
{
    check_b64("", "");
    check_b64("f", "Zg==");
    check_b64("fo", "Zm8=");
    check_b64("foo", "Zm9v");
    check_b64("foob", "Zm9vYg==");
    check_b64("fooba", "Zm9vYmE=");
    check_b64("foobar", "Zm9vYmFy");
    const uint8_t all[3] = {0xFB, 0xFF, 0xBF}; /* the two last alphabet characters */
    char out[8];
    CHECK_EQ(wsl_base64_encode(all, 3, out), 4);
    CHECK_STR(out, "+/+/");
    TEST_CONTEXT("%s", "");
}

static bool key_ok(const char *k)
{
    return wsl_handshake_key_valid(k, strlen(k));
}

static void test_key_valid(void)
{
    CHECK(key_ok("dGhlIHNhbXBsZSBub25jZQ=="));
    CHECK(key_ok("AAAAAAAAAAAAAAAAAAAAAA=="));
    CHECK(key_ok("/////////////////////w=="));
    CHECK(key_ok("+++++++++++++++++++++g=="));
    /* Encode 16 arbitrary bytes: whatever base64_encode makes must pass. */
    for (int seed = 0; seed < 256; seed++) {
        uint8_t raw[16];
        char k[32];
        for (int i = 0; i < 16; i++)
            raw[i] = (uint8_t)(seed * 31 + i * 17);
        wsl_base64_encode(raw, 16, k);
        TEST_CONTEXT("encoded seed %d: %s", seed, k);
        CHECK(key_ok(k));
    }
    TEST_CONTEXT("%s", "");
    CHECK(!key_ok(""));
    CHECK(!key_ok("dGhlIHNhbXBsZSBub25jZQ="));   /* 23 */
    CHECK(!key_ok("dGhlIHNhbXBsZSBub25jZQ===")); /* 25 */
    CHECK(!key_ok("dGhlIHNhbXBsZSBub25jZQ"));    /* no padding */
    CHECK(!key_ok("dGhlIHNhbXBsZSBub25jZR=="));  /* stray bits after the 16th byte */
    CHECK(!key_ok("dGhlIHNhbXBsZSBub25jZB=="));
    CHECK(!key_ok("dGhlIHNhbXBsZSBub25j\x80Q=="));
    CHECK(!key_ok("dGhlIHNhbXBsZSBub25jZ-==")); /* base64url is not base64 */
    CHECK(!key_ok("dGhlIHNhbXBsZSBub25j ZQ=")); /* a space inside */
    CHECK(!key_ok("dGhlIHNhbXBsZSBub2=jZQ=="));
    CHECK(!key_ok("dGhlIHNhbXBsZSBub25jZQ=A"));
    CHECK(!key_ok("MTIzNDU2Nzg5MDEyMzQ1Ng==x")); /* 16 bytes plus junk */
    CHECK(!key_ok("MTIzNDU2Nzg5MDEyMzQ1"));      /* 15 bytes, 20 characters */
    CHECK(!key_ok("MTIzNDU2Nzg5MDEyMzQ1Njc="));  /* 17 bytes */
    /* NUL inside the 24 bytes */
    CHECK(!wsl_handshake_key_valid("dGhlIHNhbXBsZSBub25j\0ZQ==", 24));
}

static void test_accept(void)
{
    char out[WSL_ACCEPT_LEN + 1];
    memset(out, 'x', sizeof out);
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    wsl_handshake_accept(key, strlen(key), out);
    CHECK_STR(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="); /* RFC 6455 section 1.3 */
    CHECK_EQ(strlen(out), WSL_ACCEPT_LEN);
    /* A second well-known pair (from the hybi drafts' examples as browsers send them). */
    key = "x3JJHMbDL1EzLkh9GBhXDw==";
    wsl_handshake_accept(key, strlen(key), out);
    CHECK_STR(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
}

int main(void)
{
    test_sha1();
    test_base64();
    test_key_valid();
    test_accept();
    TEST_MAIN_END();
}
