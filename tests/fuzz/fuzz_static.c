/* libFuzzer target for the static file handler's path decoder and normaliser (src/static.c):
 * arbitrary bytes as a request path. The normalised path must never hold a "..", "." or empty
 * segment, never climb above the root, agree with a slow reference (decode everything, then a
 * stack of segments), be stable (normalising it again changes nothing) and fit any capacity or
 * say it does not; the whole handler, over a real tree with a secret next to the root and
 * symlinks pointing at it, must answer a known status and never the secret. */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "static.h"

#define SECRET "TOP-SECRET-OUTSIDE-THE-ROOT"

static char base[64]; /* the temp tree; the root is base/www */
static wsl_static root;

static void put(const char *rel, const char *content)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", base, rel);
    FILE *f = fopen(p, "wb");
    ASSERT(f);
    fputs(content, f);
    fclose(f);
}

static void remove_tree(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", base);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(base, sizeof base, "/tmp/wsluad-fuzz-static-XXXXXX");
    ASSERT(mkdtemp(base));
    atexit(remove_tree);
    char p[PATH_MAX];
    put("secret.txt", SECRET "\n");
    snprintf(p, sizeof p, "%s/www", base);
    ASSERT(mkdir(p, 0755) == 0);
    snprintf(p, sizeof p, "%s/www/sub", base);
    ASSERT(mkdir(p, 0755) == 0);
    snprintf(p, sizeof p, "%s/www-evil", base); /* shares the root's name as a prefix */
    ASSERT(mkdir(p, 0755) == 0);
    put("www-evil/f.txt", SECRET "\n");
    put("www/index.html", "home\n");
    put("www/a", "a\n");
    put("www/sub/index.html", "sub\n");
    put("www/sub/b", "b\n");
    snprintf(p, sizeof p, "%s/www/out", base);
    ASSERT(symlink("../secret.txt", p) == 0);
    snprintf(p, sizeof p, "%s/www/up", base);
    ASSERT(symlink("..", p) == 0);
    snprintf(p, sizeof p, "%s/www/evil", base);
    ASSERT(symlink("../www-evil", p) == 0);
    snprintf(p, sizeof p, "%s/www/sub/in", base);
    ASSERT(symlink("../a", p) == 0);
    snprintf(p, sizeof p, "%s/www", base);
    ASSERT(wsl_static_open(&root, p) == 0);
    return 0;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The reference, written the slow and obvious way: decode the whole path, then walk its
 * segments with a stack. Returns the length written to out (which has room for len + 2), or
 * -EINVAL (bad escape, NUL or control byte, no leading '/') or -ENOENT (above the root). */
static long reference(const uint8_t *src, size_t len, char *out)
{
    if (len == 0 || src[0] != '/') return -EINVAL;
    char *dec = malloc(len + 1);
    ASSERT(dec);
    size_t d = 0;
    for (size_t i = 0; i < len; i++) {
        int c = src[i];
        if (c == '%') {
            int hi = i + 2 < len ? hexval(src[i + 1]) : -1;
            int lo = i + 2 < len ? hexval(src[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                free(dec);
                return -EINVAL;
            }
            c = hi * 16 + lo;
            i += 2;
        }
        if (c < 0x20 || c == 0x7f) {
            free(dec);
            return -EINVAL;
        }
        dec[d++] = (char)c;
    }
    dec[d] = '\0';

    /* Segments as (start, length) in dec; the stack holds the kept ones. */
    size_t *st = malloc(2 * (d + 1) * sizeof *st);
    ASSERT(st);
    size_t depth = 0;
    bool dir = false; /* the last segment names a directory */
    size_t i = 1;
    for (;;) {
        size_t s = i;
        while (i < d && dec[i] != '/')
            i++;
        size_t sl = i - s;
        bool last = i >= d;
        if (sl == 0 || (sl == 1 && dec[s] == '.')) {
            dir = true;
        } else if (sl == 2 && dec[s] == '.' && dec[s + 1] == '.') {
            if (depth == 0) {
                free(st);
                free(dec);
                return -ENOENT;
            }
            depth--;
            dir = true;
        } else {
            st[2 * depth] = s;
            st[2 * depth + 1] = sl;
            depth++;
            dir = false;
        }
        if (last) break;
        i++; /* over the '/' */
    }
    size_t n = 0;
    out[n++] = '/';
    for (size_t k = 0; k < depth; k++) {
        memcpy(out + n, dec + st[2 * k], st[2 * k + 1]);
        n += st[2 * k + 1];
        if (k + 1 < depth || dir) out[n++] = '/';
    }
    out[n] = '\0';
    free(st);
    free(dec);
    return (long)n;
}

/* What every successful result promises, checked on its own. */
static void check_shape(const char *out, long n)
{
    ASSERT(n >= 1 && out[0] == '/' && strlen(out) == (size_t)n);
    for (long i = 0; i < n; i++)
        ASSERT((unsigned char)out[i] >= 0x20 && out[i] != 0x7f);
    /* Segment by segment: none empty (but the one after a final '/'), ".", or "..". */
    const char *p = out + 1;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t sl = e ? (size_t)(e - p) : strlen(p);
        ASSERT(sl > 0);
        ASSERT(!(sl == 1 && p[0] == '.'));
        ASSERT(!(sl == 2 && p[0] == '.' && p[1] == '.'));
        p += sl + (e ? 1 : 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = (const char *)data;

    /* Room for any result: the decoded path is never longer than the raw one. An exact-size
     * heap buffer, so a write past cap is an ASan report. */
    size_t cap = size + 2;
    char *out = malloc(cap);
    ASSERT(out);
    long n = wsl_static_normalize(path, size, out, cap);
    ASSERT(n != -ENAMETOOLONG);
    char *ref = malloc(size + 2);
    ASSERT(ref);
    long r = reference(data, size, ref);
    if (n >= 0) {
        check_shape(out, n);
        ASSERT(r == n && memcmp(out, ref, (size_t)n + 1) == 0);
    } else {
        /* The single pass stops at the first problem, the reference decodes everything first:
         * they may name different problems, never a problem and a path. */
        ASSERT(n == -EINVAL || n == -ENOENT);
        ASSERT(r < 0);
        if (n == -EINVAL) ASSERT(r == -EINVAL);
    }

    if (n >= 0) {
        /* Stable: the result, with its '%' escaped again, normalises to itself. */
        size_t elen = 0;
        char *esc = malloc(3 * (size_t)n + 1);
        ASSERT(esc);
        for (long i = 0; i < n; i++) {
            if (out[i] == '%') {
                memcpy(esc + elen, "%25", 3);
                elen += 3;
            } else {
                esc[elen++] = out[i];
            }
        }
        char *again = malloc((size_t)n + 1);
        ASSERT(again);
        ASSERT(wsl_static_normalize(esc, elen, again, (size_t)n + 1) == n);
        ASSERT(memcmp(again, out, (size_t)n + 1) == 0);
        free(again);
        free(esc);

        /* Any capacity: the same result, or "too long"; never a partial answer. */
        size_t small = 1 + (size > 0 ? data[size - 1] % ((size_t)n + 2) : 0);
        char *tight = malloc(small);
        ASSERT(tight);
        long t = wsl_static_normalize(path, size, tight, small);
        ASSERT(t == -ENAMETOOLONG || (t == n && memcmp(tight, out, (size_t)n + 1) == 0));
        if (small <= (size_t)n) ASSERT(t == -ENAMETOOLONG);
        free(tight);
    }
    free(ref);
    free(out);

    /* The whole handler over the real tree. */
    char *resp = NULL;
    size_t resp_len = 0;
    int status =
        wsl_static_respond(&root, path, size, size > 0 && (data[0] & 1),
                           size > 0 && (data[0] & 2) ? "keep-alive" : NULL, &resp, &resp_len, NULL);
    ASSERT(status == 200 || status == 301 || status == 400 || status == 403 || status == 404);
    ASSERT(resp && resp_len > 0);
    ASSERT(!memmem(resp, resp_len, SECRET, sizeof SECRET - 1));
    free(resp);
    return 0;
}
