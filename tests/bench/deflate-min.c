/* How the default of --deflate-min was chosen: for chat-like JSON messages of each size, what
 * the server's compressor (src/deflate.c, as the server runs it: no context takeover, one
 * message at a time) saves on the wire and what it costs in CPU. Not a test; run it by hand:
 *
 *   build/tests/bench/deflate-min            # time per message (median of 7 runs)
 *   valgrind --tool=callgrind build/tests/bench/deflate-min --size 256 --count 1000
 *                                            # instructions, repeatable on a busy machine
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deflate.h"

static const char *const WORDS[] = {"hello",   "there",   "how",     "are",   "you",  "the",
                                    "meeting", "is",      "at",      "noon",  "see",  "you",
                                    "later",   "thanks",  "ok",      "great", "news", "about",
                                    "the",     "release", "tomorrow"};

/* A chat message of about n bytes: {"type":"message","room":...,"text":"..."}. */
static size_t message(char *out, size_t n, unsigned seed)
{
    int k = snprintf(out, n + 1,
                     "{\"type\":\"message\",\"room\":\"general\",\"from\":\"user%u\","
                     "\"id\":%u,\"text\":\"",
                     seed % 50, seed);
    size_t len = k > 0 && (size_t)k < n ? (size_t)k : 0;
    while (len + 3 < n) {
        seed = seed * 1103515245u + 12345u;
        const char *w = WORDS[(seed >> 16) % (sizeof WORDS / sizeof WORDS[0])];
        size_t wl = strlen(w);
        if (len + wl + 3 > n) break;
        memcpy(out + len, w, wl);
        len += wl;
        out[len++] = ' ';
    }
    memcpy(out + len, "\"}", 2);
    return len + 2;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    size_t only = 0, count = 2000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--size") == 0) only = (size_t)atol(argv[i + 1]);
        if (strcmp(argv[i], "--count") == 0) count = (size_t)atol(argv[i + 1]);
    }
    static const size_t sizes[] = {32, 64, 96, 128, 192, 256, 384, 512, 1024, 4096, 16384};
    wsl_deflate *d = wsl_deflate_new();
    char *msg = malloc(16384 + 64);
    if (!d || !msg) return 1;
    printf("%8s %10s %8s %10s %12s\n", "bytes", "deflated", "saved", "ns/msg", "ns/byte saved");
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        if (only && sizes[s] != only) continue;
        double runs[7];
        size_t in = 0, out = 0;
        for (int r = 0; r < 7; r++) {
            in = out = 0;
            double t0 = now();
            for (size_t i = 0; i < count; i++) {
                size_t n = message(msg, sizes[s], (unsigned)i);
                const uint8_t *z;
                size_t zlen;
                int k = wsl_deflate_compress(d, 15, msg, n, &z, &zlen);
                in += n;
                out += k == 1 ? zlen : n; /* not worth it: sent as it is */
            }
            runs[r] = (now() - t0) / (double)count * 1e9;
            if (only) break; /* under callgrind one run is enough */
        }
        int nr = only ? 1 : 7;
        qsort(runs, (size_t)nr, sizeof runs[0], cmp);
        double ns = runs[nr / 2], saved = (double)(in - out) / (double)count;
        printf("%8zu %10.0f %7.0f%% %10.0f %12.1f\n", sizes[s], (double)out / (double)count,
               100.0 * (double)(in - out) / (double)in, ns, saved > 0 ? ns / saved : 0.0);
    }
    free(msg);
    wsl_deflate_free(d);
    return 0;
}
