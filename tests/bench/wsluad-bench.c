/* wsluad-bench: a WebSocket load generator for comparing servers side by side. One libuv loop on
 * one thread, pre-built masked client frames, one shared read buffer parsed in place; it checks
 * every frame it gets back, so a bounded run doubles as a correctness smoke test. With --port2 the
 * clients are split between two servers (two nodes of a cluster); latency is then also reported
 * apart for deliveries on the sender's own server and on the other one. With --tls it speaks
 * wss:// (OpenSSL through memory BIOs: what a connection has to send is encrypted at once and
 * leaves in one write at a time). With --deflate it negotiates permessage-deflate (RFC 7692,
 * no context takeover either way), sends every message compressed and inflates every compressed
 * message it gets before checking it. */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <zlib.h>

#include "frame.h"
#include "handshake.h"

enum { M_ECHO, M_BROADCAST, M_CHAT, M_CONNECT, M_IDLE, M_LATENCY };
static const char *const mode_names[] = {"echo",         "broadcast",   "chat",
                                         "connect-rate", "idle-memory", "latency"};

enum { C_FREE, C_CONNECTING, C_TLS, C_HANDSHAKE, C_OPEN, C_CLOSING, C_CLOSED };

enum { P_ABC, P_CHAT }; /* --payload: what the bytes before the trailer are */

#define TRAILER        18 /* "[" sender(8 hex) seq(8 hex) "]" at the end of every payload */
#define TRAILER_LAT    26 /* "[" sender(8 hex) send time in ns(16 hex) "]" in latency mode */
#define RESPONSE_MAX   8192
#define DRAIN_MS       5000 /* latency: how long to wait for the last deliveries */
#define SETTLE_STEP_MS 50   /* idle-memory: how often the server's CPU time is read */
#define SETTLE_MS      300  /* ... and how long it must stay unchanged */
#define SETTLE_MAX_MS  10000
#define HIST_SUB       64
#define HIST_BUCKETS   (HIST_SUB + 40 * HIST_SUB)
#define ORDER_MAX_N    2048 /* latency: order checked per (receiver, sender) up to this many */
#define PROBE_MS       20   /* with --port2: how often the probes go before the run starts */
#define PROBE_TEXT     "wsluad-bench probe from " /* then "A" or "B" */
#define PROBE_LEN      (sizeof PROBE_TEXT)        /* the text and the letter */

/* A latency histogram: log-linear buckets, about 1.6% precision. `missing` counts deliveries
 * that never came (beyond every percentile). */
typedef struct histo {
    uint64_t b[HIST_BUCKETS];
    uint64_t n, max, missing;
} histo;

/* One client connection. Lives in g.conns, allocated once before the loop starts and freed at
 * exit; `carry` (bytes of a partial frame or response) is malloc'ed on first need, kept for reuse
 * and freed at exit. The handle is re-initialised when connect-rate reuses the slot. */
typedef struct bconn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;  /* the data frame or upgrade request */
    uv_write_t cwreq; /* control frames we send: ping, close */
    uint8_t *frame;   /* this connection's pre-built masked frame, inside g.frames */
    uint8_t *carry;
    uint32_t carry_len;
    uint32_t carry_cap;
    uint32_t id;
    uint32_t seq;        /* echo: sequence number of the message in flight */
    uint32_t got;        /* broadcast/chat: frames of the current round received */
    uint64_t sender_sum; /* broadcast/chat: sum of the senders seen this round */
    uint8_t state;
    uint8_t write_pending;
    uint8_t send_again; /* a frame send was asked for while a write was still pending */
    uint8_t got_pong;
    uint8_t control_pending; /* cwreq is in use */
    /* --tls: the client, its memory BIOs, and its ciphertext: `out` is being written (wreq),
     * `acc` collects what is encrypted meanwhile. Freed when the slot is reused and at exit. */
    SSL *ssl;
    BIO *rbio, *wbio;
    uint8_t *out, *acc;
    size_t out_cap, acc_len, acc_cap;
} bconn;

static struct {
    /* options */
    int mode;
    uint32_t n; /* connections (connect-rate: handshakes in flight) */
    size_t size;
    double duration, warmup, timeout, rate;
    uint64_t limit; /* --messages: a bounded count instead of a duration */
    const char *host, *path;
    int port, port2, pid, pid2;
    uint32_t split;   /* with port2: connections [0, split) go to port, the others to port2 */
    uint32_t senders; /* latency: connections [0, senders) send, all of them receive */
    uint32_t open_conc;
    bool json, binary, quickack, tls, deflate;
    int payload;
    SSL_CTX *ssl_ctx;
    uint8_t *cbuf; /* --tls: ciphertext read, before decryption into rbuf */
    /* --deflate: one inflate stream for every connection (the server keeps no context, so each
     * message starts afresh), and the buffer a message is inflated into */
    z_stream zin;
    bool zin_ok;
    uint8_t *ibuf;
    size_t ibuf_size;
    uint64_t z_frames, z_bytes, z_out, plain_frames; /* data frames received, compressed or not */

    /* built once */
    uv_loop_t *loop;
    struct sockaddr_storage addr, addr2;
    bconn *conns;
    uint8_t *frames;  /* n pre-built masked frames, frame_len bytes each */
    uint8_t *filler;  /* the unmasked payload bytes before the trailer */
    size_t frame_len; /* header + payload */
    size_t hdr_len;   /* client header length, mask included */
    size_t wire_len;  /* payload bytes on the wire: g.size, or compressed with --deflate */
    size_t tr_len;    /* trailer length in use (0 when the payload is too small for one) */
    size_t tr_off;    /* where the trailer starts in the payload on the wire */
    uint8_t opcode;   /* WSL_OP_TEXT or WSL_OP_BINARY */
    char request[512], request2[512]; /* the upgrade requests to port and port2 */
    size_t request_len, request2_len;
    char accept[WSL_ACCEPT_LEN + 1];
    uint8_t close_frame[WSL_FRAME_HDR_MAX + 2];
    uint8_t ping_frame[WSL_FRAME_HDR_MAX];
    uint8_t probe_frame[2][WSL_FRAME_HDR_MAX + PROBE_LEN]; /* from port (A) and port2 (B) */
    size_t probe_len;
    size_t close_len, ping_len;
    uint8_t *rbuf; /* the one read buffer shared by every connection */
    size_t rbuf_size;
    uv_timer_t phase_timer, tick_timer, watch_timer, close_timer;

    /* progress */
    uint32_t started, upgraded, open_now, pongs;
    uint64_t sent, received, rounds, round, satisfied, handshakes, foreign, slots, late;
    uint64_t progress, last_progress;
    unsigned stalled_s;
    bool stopping, sending_stopped, failed, measure_done, timers_closed;
    uint64_t t0, now_read, round_t0;

    /* measurement window */
    uint64_t m_t0, m_t1, m_recv0, m_rounds0, m_hs0, m_sent0, m_cpu0, m_cpu1;
    double m_ccpu0, m_ccpu1;
    bool m_cpu_ok, m_busy_ok;
    uint64_t m_busy0, m_busy1;
    uint64_t undelivered; /* latency: deliveries still missing when the drain time ran out */
    uint64_t rss_before, rss_idle, rss_after, rss_end;
    uint64_t settle_ticks;
    unsigned settle_waited;
    histo hist;        /* latency: every delivery; broadcast/chat: round times */
    histo hist_local;  /* latency with port2: deliveries on the sender's server */
    histo hist_remote; /* ... and on the other one */
    uint64_t delivered, delivered_local, expected_local, expected_remote;
    uint64_t *last_seen; /* latency: [receiver * n + sender] the last send time seen + 1 */
    bool priming, probe_ab, probe_ba; /* with --port2: see start_priming */
    uint64_t probes, probes_sent;
} g;

static void finish(void);
static void conn_start(bconn *c);

/* ---- failure and shutdown ------------------------------------------------------------------ */

static void on_timer_closed(uv_handle_t *h)
{
    (void)h;
}

static void close_timers(void)
{
    if (g.timers_closed) return;
    g.timers_closed = true;
    uv_close((uv_handle_t *)&g.phase_timer, on_timer_closed);
    uv_close((uv_handle_t *)&g.tick_timer, on_timer_closed);
    uv_close((uv_handle_t *)&g.watch_timer, on_timer_closed);
    uv_close((uv_handle_t *)&g.close_timer, on_timer_closed);
}

static void on_conn_closed(uv_handle_t *h);

static void conn_close(bconn *c)
{
    if (c->state == C_FREE || c->state == C_CLOSED) return;
    c->state = C_CLOSED;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void abort_all(void)
{
    for (uint32_t i = 0; i < g.n; i++)
        conn_close(&g.conns[i]);
    close_timers();
}

__attribute__((format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
    if (g.failed) return;
    g.failed = true;
    va_list ap;
    va_start(ap, fmt);
    fputs("wsluad-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort_all();
}

/* ---- /proc readers: the server's CPU time and memory --------------------------------------- */

static bool proc_cpu_ticks(int pid, uint64_t *ticks)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* The command name may hold spaces and parentheses: count fields after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p) return false;
    unsigned long long ut = 0, st = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return false;
    *ticks = ut + st;
    return true;
}

static bool proc_rss_kb(int pid, uint64_t *kb)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return false;
    bool ok = false;
    while (fgets(line, sizeof line, f)) {
        unsigned long long v;
        if (sscanf(line, "VmRSS: %llu kB", &v) == 1) {
            *kb = v;
            ok = true;
            break;
        }
    }
    fclose(f);
    return ok;
}

/* Busy time of the whole machine, to tell how much other processes took during a run. */
static bool machine_busy_ticks(uint64_t *ticks)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return false;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 8) return false;
    *ticks = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]; /* all but idle and iowait */
    return true;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
}

/* ---- measurement window -------------------------------------------------------------------- */

/* The CPU time and memory of the server, or of both servers with --server-pid2. */
static bool servers_cpu_ticks(uint64_t *ticks)
{
    uint64_t a = 0, b = 0;
    if (g.pid <= 0 || !proc_cpu_ticks(g.pid, &a)) return false;
    if (g.pid2 > 0 && !proc_cpu_ticks(g.pid2, &b)) return false;
    *ticks = a + b;
    return true;
}

static bool servers_rss_kb(uint64_t *kb)
{
    uint64_t a = 0, b = 0;
    if (g.pid <= 0 || !proc_rss_kb(g.pid, &a)) return false;
    if (g.pid2 > 0 && !proc_rss_kb(g.pid2, &b)) return false;
    *kb = a + b;
    return true;
}

static void begin_measure(void)
{
    g.m_t0 = uv_hrtime();
    g.m_recv0 = g.received;
    g.m_rounds0 = g.rounds;
    g.m_hs0 = g.handshakes;
    g.m_sent0 = g.sent;
    g.m_ccpu0 = self_cpu_s();
    g.m_cpu_ok = servers_cpu_ticks(&g.m_cpu0);
    g.m_busy_ok = machine_busy_ticks(&g.m_busy0);
}

static void end_measure(void)
{
    if (g.measure_done) return;
    g.measure_done = true;
    g.m_t1 = uv_hrtime();
    g.m_ccpu1 = self_cpu_s();
    if (g.m_cpu_ok) g.m_cpu_ok = servers_cpu_ticks(&g.m_cpu1);
    if (g.m_busy_ok) g.m_busy_ok = machine_busy_ticks(&g.m_busy1);
    if (!servers_rss_kb(&g.rss_end)) g.rss_end = 0;
}

/* ---- latency histograms --------------------------------------------------------------------- */

static unsigned hist_index(uint64_t v)
{
    if (v < HIST_SUB) return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= 6 */
    unsigned idx = HIST_SUB + (e - 6) * HIST_SUB + (unsigned)((v >> (e - 6)) & (HIST_SUB - 1));
    return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

static uint64_t hist_value(unsigned idx)
{
    if (idx < HIST_SUB) return idx;
    unsigned e = (idx - HIST_SUB) / HIST_SUB + 6;
    uint64_t sub = (idx - HIST_SUB) % HIST_SUB;
    return (HIST_SUB + sub) << (e - 6);
}

/* Percentile in microseconds; -1 when it falls among deliveries that never came. */
static double hist_pct(const histo *h, double q)
{
    uint64_t total = h->n + h->missing;
    if (!total) return 0;
    uint64_t rank = (uint64_t)(q * (double)total);
    if (rank >= h->n) return -1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen > rank) return (double)hist_value(i) / 1000.0;
    }
    return (double)h->max / 1000.0;
}

/* ---- payloads ------------------------------------------------------------------------------ */

static const char hexdig[] = "0123456789abcdef";

static void hex_put(uint8_t *out, uint64_t v, int digits)
{
    for (int i = digits - 1; i >= 0; i--, v >>= 4)
        out[i] = (uint8_t)hexdig[v & 15];
}

#define BYTES(b) (0x0101010101010101ull * (b))

/* Decodes 8 lower-case hex digits at once (the generator checks millions of frames a second).
 * Each byte becomes its nibble, the nibbles are encoded back and compared with the input, so
 * anything but 0-9a-f is refused; then the nibbles are packed, first digit most significant. */
static bool hex8_get(const uint8_t *p, uint32_t *out)
{
    uint64_t x;
    memcpy(&x, p, 8); /* little-endian: the first digit is the lowest byte */
    uint64_t n = (x & BYTES(0x0f)) + 9 * ((x >> 6) & BYTES(0x01));
    uint64_t ge10 = ((n + BYTES(0x76)) & BYTES(0x80)) >> 7;
    uint64_t enc = n + BYTES(0x30) + ge10 * 0x27;
    if (enc != x || ((n + BYTES(0x70)) & BYTES(0x80))) return false;
    n = __builtin_bswap64(n);
    n = ((n >> 4) | n) & 0x00ff00ff00ff00ffull;
    n = ((n >> 8) | n) & 0x0000ffff0000ffffull;
    n = ((n >> 16) | n) & 0x00000000ffffffffull;
    *out = (uint32_t)n;
    return true;
}

/* Returns false when a character is not a lower-case hex digit; digits is 8 or 16. */
static bool hex_get(const uint8_t *p, int digits, uint64_t *out)
{
    uint32_t hi, lo;
    if (digits == 8) {
        if (!hex8_get(p, &lo)) return false;
        *out = lo;
        return true;
    }
    if (!hex8_get(p, &hi) || !hex8_get(p + 8, &lo)) return false;
    *out = (uint64_t)hi << 32 | lo;
    return true;
}

/* Writes `digits` hex characters of v into c's masked frame at payload offset off. */
static void patch_hex(bconn *c, size_t off, uint64_t v, int digits)
{
    uint8_t tmp[16];
    hex_put(tmp, v, digits);
    uint8_t *mask = c->frame + g.hdr_len - 4;
    uint8_t *p = c->frame + g.hdr_len + off;
    for (int i = 0; i < digits; i++)
        p[i] = tmp[i] ^ mask[(off + (size_t)i) & 3];
}

static void patch_seq(bconn *c, uint64_t v)
{
    if (g.tr_len == TRAILER) patch_hex(c, g.tr_off + 9, v, 8);
    if (g.tr_len == TRAILER_LAT) patch_hex(c, g.tr_off + 9, v, 16);
}

static uint32_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint32_t)(*s >> 16);
}

static const char *const chat_words[] = {
    "hello",  "there", "how", "are",     "you",      "the",    "meeting", "is",
    "at",     "noon",  "see", "you",     "later",    "thanks", "ok",      "great",
    "news",   "about", "the", "release", "tomorrow", "I",      "think",   "we",
    "should", "ship",  "it",  "on",      "friday",
};

/* The n bytes before the trailer: the alphabet over and over, or (--payload chat) chat-like
 * JSON text, {"type":"message",...,"text":"hello there ..."}, which compresses like real chat
 * (to about a third at 1 KiB) rather than to almost nothing. */
static void fill_payload(uint8_t *p, size_t n)
{
    if (g.payload == P_ABC) {
        for (size_t i = 0; i < n; i++)
            p[i] = (uint8_t)('a' + i % 26);
        return;
    }
    static const char head[] = "{\"type\":\"message\",\"room\":\"general\",\"from\":\"user42\","
                               "\"id\":1234567,\"text\":\"";
    size_t len = n < sizeof head - 1 ? n : sizeof head - 1;
    memset(p, ' ', n);
    memcpy(p, head, len);
    uint32_t seed = 12345;
    while (n >= 2 && len < n - 2) {
        seed = seed * 1103515245u + 12345u;
        const char *w = chat_words[(seed >> 16) % (sizeof chat_words / sizeof chat_words[0])];
        size_t wl = strlen(w);
        if (len + wl + 1 > n - 2) wl = n - 2 - len - 1; /* the last word cut short */
        memcpy(p + len, w, wl);
        len += wl;
        p[len++] = ' ';
    }
    if (n >= sizeof head + 1) memcpy(p + n - 2, "\"}", 2);
}

/* --deflate: the message as it goes on the wire (RFC 7692): the bytes before the trailer
 * compressed by zlib and ended by a sync flush; then the trailer in a stored block of its own,
 * so that it is patched in place as a plain message's is; then the first byte of the empty stored
 * block whose other four bytes (00 00 ff ff) the receiver appends. Sets wire_len and tr_off. */
static uint8_t *compress_message(void)
{
    size_t body = g.size - g.tr_len;
    z_stream z = {0};
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL;
    size_t cap = deflateBound(&z, body) + 16 + g.tr_len;
    uint8_t *w = malloc(cap);
    int r = Z_STREAM_ERROR;
    if (w) {
        z.next_in = g.filler;
        z.avail_in = (uInt)body;
        z.next_out = w;
        z.avail_out = (uInt)(cap - 16 - g.tr_len);
        r = deflate(&z, Z_SYNC_FLUSH);
    }
    size_t n = w ? cap - 16 - g.tr_len - z.avail_out : 0;
    deflateEnd(&z);
    if (r != Z_OK || z.avail_in || !z.avail_out || n < 4 || memcmp(w + n - 4, "\0\0\xff\xff", 4)) {
        free(w);
        return NULL;
    }
    if (g.tr_len) {
        w[n++] = 0x00; /* BFINAL 0, BTYPE 00 (stored); LEN and NLEN follow, byte-aligned */
        w[n++] = (uint8_t)(g.tr_len & 0xff);
        w[n++] = (uint8_t)(g.tr_len >> 8);
        w[n++] = (uint8_t)(~g.tr_len & 0xff);
        w[n++] = (uint8_t)((~g.tr_len >> 8) & 0xff);
        g.tr_off = n;
        n += g.tr_len;
        w[n++] = 0x00;
    } else {
        n -= 4;
    }
    g.wire_len = n;
    return w;
}

static int build_frames(void)
{
    uint8_t hdr[WSL_FRAME_HDR_MAX], mask[4] = {0, 0, 0, 0};
    size_t nframes = g.mode == M_CONNECT || g.mode == M_IDLE ? 0 : g.n;
    g.filler = malloc(g.size + 1);
    if (!g.filler) return -1;
    fill_payload(g.filler, g.size - g.tr_len);
    /* what every connection sends, unmasked, its trailer still to be written at tr_off */
    uint8_t *wire = g.filler;
    g.wire_len = g.size;
    g.tr_off = g.size - g.tr_len;
    if (g.deflate && nframes && !(wire = compress_message())) return -1;
    g.hdr_len = wsl_frame_header_masked(hdr, g.opcode, true, g.wire_len, mask);
    g.frame_len = g.hdr_len + g.wire_len;
    g.frames = malloc(nframes * g.frame_len + WSL_FRAME_HDR_MAX);
    if (!g.frames) {
        if (wire != g.filler) free(wire);
        return -1;
    }
    uint64_t seed = uv_hrtime() | 1;
    for (size_t i = 0; i < nframes; i++) {
        bconn *c = &g.conns[i];
        c->frame = g.frames + i * g.frame_len;
        uint32_t m = xorshift(&seed);
        memcpy(mask, &m, 4);
        wsl_frame_header_masked(c->frame, g.opcode, true, g.wire_len, mask);
        if (g.deflate) c->frame[0] |= 0x40; /* RSV1: compressed */
        uint8_t *p = c->frame + g.hdr_len;
        memcpy(p, wire, g.wire_len);
        if (g.tr_len) {
            uint8_t *t = p + g.tr_off;
            t[0] = '[';
            hex_put(t + 1, i, 8);
            hex_put(t + 9, 0, (int)g.tr_len - 10);
            t[g.tr_len - 1] = ']';
        }
        wsl_frame_mask(p, g.wire_len, mask, 0);
    }
    if (wire != g.filler) free(wire);
    /* Control frames are shared read-only buffers; a fixed mask is enough for a benchmark. */
    static const uint8_t cmask[4] = {0x37, 0xfa, 0x21, 0x3d};
    size_t h = wsl_frame_header_masked(g.close_frame, WSL_OP_CLOSE, true, 2, cmask);
    g.close_frame[h] = 1000 >> 8;
    g.close_frame[h + 1] = 1000 & 0xff;
    wsl_frame_mask(g.close_frame + h, 2, cmask, 0);
    g.close_len = h + 2;
    g.ping_len = wsl_frame_header_masked(g.ping_frame, WSL_OP_PING, true, 0, cmask);
    for (int i = 0; i < 2; i++) {
        h = wsl_frame_header_masked(g.probe_frame[i], WSL_OP_TEXT, true, PROBE_LEN, cmask);
        memcpy(g.probe_frame[i] + h, PROBE_TEXT, PROBE_LEN - 1);
        g.probe_frame[i][h + PROBE_LEN - 1] = (uint8_t)('A' + i);
        wsl_frame_mask(g.probe_frame[i] + h, PROBE_LEN, cmask, 0);
        g.probe_len = h + PROBE_LEN;
    }
    return 0;
}

static size_t format_request(char *out, size_t cap, int port, const char *key)
{
    int n = snprintf(out, cap,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s\r\n",
                     g.path, g.host, port, key,
                     g.deflate ? "Sec-WebSocket-Extensions: permessage-deflate; "
                                 "client_no_context_takeover; server_no_context_takeover\r\n"
                               : "");
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static void build_request(void)
{
    uint8_t raw[16];
    uint64_t seed = uv_hrtime() ^ 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 16; i += 4) {
        uint32_t r = xorshift(&seed);
        memcpy(raw + i, &r, 4);
    }
    char key[32];
    size_t klen = wsl_base64_encode(raw, 16, key);
    wsl_handshake_accept(key, klen, g.accept);
    g.request_len = format_request(g.request, sizeof g.request, g.port, key);
    g.request2_len = format_request(g.request2, sizeof g.request2, g.port2, key);
}

/* ---- writing ------------------------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status);

static void on_cwrite(uv_write_t *req, int status)
{
    ((bconn *)req->handle->data)->control_pending = 0;
    if (status < 0 && status != UV_ECANCELED && !g.stopping) fail("write: %s", uv_strerror(status));
}

static void on_tls_write(uv_write_t *req, int status);

/* *buf with room for need bytes (its contents kept); false when out of memory (reported). */
static bool reserve(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap) return true;
    size_t n = *cap ? *cap : 4096;
    while (n < need)
        n *= 2;
    uint8_t *q = realloc(*buf, n);
    if (!q) {
        fail("out of memory");
        return false;
    }
    *buf = q;
    *cap = n;
    return true;
}

/* --tls: hand what the client encrypted to the socket; one write in flight at a time. */
static void tls_flush(bconn *c)
{
    char *p;
    long n = BIO_get_mem_data(c->wbio, &p);
    if (n > 0) {
        if (!reserve(&c->acc, &c->acc_cap, c->acc_len + (size_t)n)) return;
        memcpy(c->acc + c->acc_len, p, (size_t)n);
        c->acc_len += (size_t)n;
        (void)BIO_reset(c->wbio);
    }
    if (c->write_pending || !c->acc_len || c->state == C_CLOSED) return;
    uv_buf_t b = uv_buf_init((char *)c->acc, (unsigned)c->acc_len);
    int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (r == (int)c->acc_len) {
        c->acc_len = 0;
        return;
    }
    if (r < 0 && r != UV_EAGAIN) {
        fail("write on connection %u: %s", c->id, uv_strerror(r));
        return;
    }
    size_t off = r > 0 ? (size_t)r : 0, left = c->acc_len - off;
    if (!reserve(&c->out, &c->out_cap, left)) return;
    memcpy(c->out, c->acc + off, left);
    c->acc_len = 0;
    b = uv_buf_init((char *)c->out, (unsigned)left);
    c->write_pending = 1;
    r = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_tls_write);
    if (r) fail("write on connection %u: %s", c->id, uv_strerror(r));
}

static void tls_send(bconn *c, const uint8_t *p, size_t n)
{
    if (SSL_write(c->ssl, p, (int)n) != (int)n) {
        fail("connection %u: SSL_write failed", c->id);
        return;
    }
    tls_flush(c);
}

/* The end of a data write: its connection, or NULL when it failed (reported unless cancelled). */
static bconn *write_done(uv_write_t *req, int status)
{
    bconn *c = req->handle->data;
    c->write_pending = 0;
    if (status >= 0) return c;
    if (status != UV_ECANCELED && !g.stopping)
        fail("write on connection %u: %s", c->id, uv_strerror(status));
    return NULL;
}

static void on_tls_write(uv_write_t *req, int status)
{
    bconn *c = write_done(req, status);
    if (c) tls_flush(c);
}

/* Sends a frame or request from memory that stays valid and unchanged until the write is done. */
static void send_bytes(bconn *c, const uint8_t *p, size_t n)
{
    if (g.tls) {
        tls_send(c, p, n);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int r = c->write_pending ? UV_EAGAIN : uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (r == (int)n) return;
    if (r < 0 && r != UV_EAGAIN) {
        fail("write on connection %u: %s", c->id, uv_strerror(r));
        return;
    }
    size_t off = r > 0 ? (size_t)r : 0;
    b = uv_buf_init((char *)p + off, (unsigned)(n - off));
    c->write_pending = 1;
    r = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (r) fail("write on connection %u: %s", c->id, uv_strerror(r));
}

/* The upgrade request, to whichever server the connection went to. */
static void send_request(bconn *c)
{
    if (g.port2 && c->id >= g.split)
        send_bytes(c, (const uint8_t *)g.request2, g.request2_len);
    else
        send_bytes(c, (const uint8_t *)g.request, g.request_len);
}

/* Control frames go through their own request so they can queue behind a pending data write. */
static void send_control(bconn *c, const uint8_t *p, size_t n)
{
    if (g.tls) {
        tls_send(c, p, n);
        return;
    }
    if (c->control_pending) {
        conn_close(c); /* only at the end of a run: give up on a polite close */
        return;
    }
    c->control_pending = 1;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int r = uv_write(&c->cwreq, (uv_stream_t *)&c->tcp, &b, 1, on_cwrite);
    if (r) fail("write on connection %u: %s", c->id, uv_strerror(r));
}

static void send_frame(bconn *c)
{
    if (c->write_pending && !g.tls) {
        c->send_again = 1; /* the frame is patched and sent once the pending write is done */
        return;
    }
    send_bytes(c, c->frame, g.frame_len);
}

static void on_write(uv_write_t *req, int status)
{
    bconn *c = write_done(req, status);
    if (c && c->send_again && c->state == C_OPEN) {
        c->send_again = 0;
        send_bytes(c, c->frame, g.frame_len);
    }
}

/* ---- the modes ----------------------------------------------------------------------------- */

/* Patching the frame while a write of it is pending is safe here: an echo or a finished round
 * means the server had the whole frame, so libuv no longer reads it. */
static void echo_send(bconn *c)
{
    patch_seq(c, c->seq);
    g.sent++;
    send_frame(c);
}

static void start_round(void)
{
    g.round_t0 = uv_hrtime();
    g.round++;
    g.satisfied = 0;
    for (uint32_t i = 0; i < g.n; i++) {
        bconn *c = &g.conns[i];
        c->got = 0;
        c->sender_sum = 0;
        patch_seq(c, g.round & 0xffffffffu);
        send_frame(c);
    }
    g.sent += g.n;
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
    if (g.sending_stopped) return;
    uint64_t now = uv_hrtime();
    uint64_t due = (uint64_t)((double)(now - g.t0) * g.rate / 1e9);
    while (g.slots < due) {
        bconn *c = &g.conns[g.slots++ % g.senders];
        if (c->write_pending) {
            g.late++; /* the connection's previous message has not left yet: skip this slot */
            continue;
        }
        patch_seq(c, uv_hrtime() - g.t0);
        g.sent++;
        if (g.port2) {
            /* every client but the sender gets it: those on its server, those on the other */
            uint32_t here = c->id < g.split ? g.split : g.n - g.split;
            g.expected_local += here - 1;
            g.expected_remote += g.n - here;
        }
        send_frame(c);
    }
}

/* A server that cannot keep up would make the drain last minutes: what is still missing after
 * a few seconds counts as beyond every percentile. */
static void on_drain_timeout(uv_timer_t *t)
{
    (void)t;
    g.undelivered = g.sent * (g.n - 1) - g.delivered;
    g.hist.missing = g.undelivered;
    if (g.port2) {
        g.hist_local.missing = g.expected_local - g.delivered_local;
        g.hist_remote.missing = g.expected_remote - (g.delivered - g.delivered_local);
    }
    finish();
}

static void stop_latency(void)
{
    g.sending_stopped = true;
    uv_timer_stop(&g.tick_timer);
    end_measure();
    if (g.delivered == g.sent * (g.n - 1))
        finish();
    else
        uv_timer_start(&g.phase_timer, on_drain_timeout, DRAIN_MS, 0);
}

static void on_phase(uv_timer_t *t)
{
    (void)t;
    if (!g.m_t0) {
        /* warm-up over: measure from here for --duration */
        begin_measure();
        if (g.mode == M_LATENCY) {
            memset(&g.hist, 0, sizeof g.hist);
            memset(&g.hist_local, 0, sizeof g.hist_local);
            memset(&g.hist_remote, 0, sizeof g.hist_remote);
        }
        uv_timer_start(&g.phase_timer, on_phase, (uint64_t)(g.duration * 1000), 0);
        return;
    }
    if (g.mode == M_LATENCY) {
        stop_latency();
        return;
    }
    end_measure();
    finish();
}

static void send_pings(void)
{
    for (uint32_t i = 0; i < g.n; i++)
        send_control(&g.conns[i], g.ping_frame, g.ping_len);
}

/* Idle memory is read once the server has gone quiet after the last upgrade (its CPU time
 * unchanged for SETTLE_MS), before anything is sent; then once more after a ping round trip,
 * which makes the server write to every connection. */
static void on_settle(uv_timer_t *t)
{
    uint64_t ticks = 0;
    bool ok = proc_cpu_ticks(g.pid, &ticks);
    g.settle_waited += SETTLE_STEP_MS;
    if (ok && ticks == g.settle_ticks && g.settle_waited >= SETTLE_MS) {
        uv_timer_stop(t);
        if (!proc_rss_kb(g.pid, &g.rss_idle)) g.rss_idle = 0;
        send_pings();
    } else if (g.settle_waited >= SETTLE_MAX_MS) {
        fail("the server did not go quiet within %d ms of the last upgrade", SETTLE_MAX_MS);
    } else if (!ok || ticks != g.settle_ticks) {
        g.settle_ticks = ticks;
        g.settle_waited = 0;
    }
}

static void start_mode(void)
{
    if (g.mode == M_IDLE) {
        if (g.pid > 0 && proc_cpu_ticks(g.pid, &g.settle_ticks))
            uv_timer_start(&g.tick_timer, on_settle, SETTLE_STEP_MS, SETTLE_STEP_MS);
        else
            send_pings();
        return;
    }
    if (g.limit) {
        begin_measure();
    } else if (g.warmup > 0) {
        uv_timer_start(&g.phase_timer, on_phase, (uint64_t)(g.warmup * 1000), 0);
    } else {
        begin_measure();
        uv_timer_start(&g.phase_timer, on_phase, (uint64_t)(g.duration * 1000), 0);
    }
    if (g.mode == M_ECHO) {
        for (uint32_t i = 0; i < g.n && (!g.limit || g.sent < g.limit); i++)
            echo_send(&g.conns[i]);
    } else if (g.mode == M_BROADCAST || g.mode == M_CHAT) {
        start_round();
    } else if (g.mode == M_LATENCY) {
        g.t0 = uv_hrtime();
        uv_timer_start(&g.tick_timer, on_tick, 1, 1);
    }
}

/* With two servers (nodes of a cluster), a node subscribes to a topic when its first client
 * joins, and Redis takes it from then on: a message published on the other node a moment
 * earlier is not delivered, and would stall a chat round or count as lost. So before the run,
 * a client of each server sends a probe every PROBE_MS until each server's probe has reached a
 * client of the other one. Probes are recognised and ignored wherever they arrive. */
static void on_probe_tick(uv_timer_t *t)
{
    (void)t;
    bconn *a = &g.conns[0], *b = &g.conns[g.split];
    if (!a->control_pending) send_control(a, g.probe_frame[0], g.probe_len), g.probes_sent++;
    if (!b->control_pending) send_control(b, g.probe_frame[1], g.probe_len), g.probes_sent++;
}

static void start_priming(void)
{
    g.priming = true;
    uv_timer_start(&g.tick_timer, on_probe_tick, 0, PROBE_MS);
}

/* True (and handled) when p is a probe. */
static bool probe_seen(bconn *c, const uint8_t *p, size_t len)
{
    if (len != PROBE_LEN || memcmp(p, PROBE_TEXT, PROBE_LEN - 1) != 0) return false;
    g.probes++;
    if (!g.priming) return true;
    bool on_b = c->id >= g.split;
    if (p[PROBE_LEN - 1] == 'A' && on_b) g.probe_ab = true;
    if (p[PROBE_LEN - 1] == 'B' && !on_b) g.probe_ba = true;
    if (g.probe_ab && g.probe_ba) {
        g.priming = false;
        uv_timer_stop(&g.tick_timer);
        g.progress++;
        start_mode();
    }
    return true;
}

static void on_upgraded(bconn *c)
{
    g.progress++;
    if (g.mode == M_CONNECT) {
        c->state = C_CLOSING; /* wait for the server's close and its FIN: no TIME_WAIT here */
        send_control(c, g.close_frame, g.close_len);
        return;
    }
    g.upgraded++;
    if (g.started < g.n) conn_start(&g.conns[g.started]);
    if (g.upgraded < g.n) return;
    if (g.port2 && g.mode != M_ECHO)
        start_priming();
    else
        start_mode();
}

/* A round trip through every connection proves the server has processed all upgrades. */
static void on_pong(bconn *c)
{
    if (g.mode != M_IDLE || c->got_pong) return;
    c->got_pong = 1;
    g.progress++;
    if (++g.pongs == g.n) {
        if (g.pid > 0 && !proc_rss_kb(g.pid, &g.rss_after)) g.rss_after = 0;
        g.measure_done = true;
        finish();
    }
}

/* Parses our trailer at the end of p[0..len); false if it is not there. */
static bool read_trailer(const uint8_t *p, size_t len, uint64_t *sender, uint64_t *val)
{
    size_t t = g.tr_len;
    if (len < g.size || p[len - t] != '[' || p[len - 1] != ']') return false;
    return hex_get(p + len - t + 1, 8, sender) && hex_get(p + len - t + 9, (int)t - 10, val);
}

static bool filler_ok(const uint8_t *p, size_t len)
{
    return memcmp(p + len - g.size, g.filler, g.size - g.tr_len) == 0;
}

static void hist_add(histo *h, uint64_t v)
{
    h->b[hist_index(v)]++;
    h->n++;
    if (v > h->max) h->max = v;
}

static void round_done(void)
{
    if (g.m_t0 && !g.measure_done) hist_add(&g.hist, uv_hrtime() - g.round_t0);
    g.rounds++;
    g.progress++;
    if (g.limit && g.rounds >= g.limit) {
        end_measure();
        finish();
        return;
    }
    if (!g.stopping) start_round();
}

static void on_data(bconn *c, int op, const uint8_t *p, size_t len)
{
    uint64_t sender = 0, val = 0;
    bool tolerant = g.mode == M_CHAT || g.mode == M_LATENCY;
    if (c->state != C_OPEN || g.stopping) return;
    if (g.port2 && op == WSL_OP_TEXT && probe_seen(c, p, len)) return;
    if (g.mode == M_CONNECT || g.mode == M_IDLE) {
        g.foreign++; /* a greeting from the script, say: not ours to judge */
        return;
    }
    bool ours = op == g.opcode && len >= g.size &&
                (g.tr_len ? read_trailer(p, len, &sender, &val) : len == g.size);
    if (!ours) {
        if (tolerant) {
            g.foreign++;
            return;
        }
        fail("connection %u: unexpected %s frame of %zu bytes", c->id,
             op == WSL_OP_TEXT ? "text" : "binary", len);
        return;
    }
    if ((!tolerant && len != g.size) || !filler_ok(p, len)) {
        fail("connection %u: corrupted payload (%zu bytes)", c->id, len);
        return;
    }
    g.progress++;
    switch (g.mode) {
    case M_ECHO:
        if (g.tr_len && (sender != c->id || val != c->seq)) {
            fail("connection %u: echo of sender %" PRIu64 " seq %" PRIu64 ", expected %u seq %u",
                 c->id, sender, val, c->id, c->seq);
            return;
        }
        g.received++;
        c->seq++;
        if (g.limit) {
            if (g.received >= g.limit) {
                end_measure();
                finish();
            } else if (g.sent < g.limit) {
                echo_send(c);
            }
        } else {
            echo_send(c);
        }
        return;
    case M_BROADCAST:
    case M_CHAT: {
        uint32_t expect = g.mode == M_CHAT ? g.n - 1 : g.n;
        if (g.tr_len && (val != (g.round & 0xffffffffu) || sender >= g.n ||
                         (g.mode == M_CHAT && sender == c->id))) {
            fail("connection %u: round %" PRIu64 ": got sender %" PRIu64 " round %" PRIu64, c->id,
                 g.round, sender, val);
            return;
        }
        g.received++;
        c->sender_sum += sender;
        if (++c->got > expect) {
            fail("connection %u: more than %u messages in round %" PRIu64, c->id, expect, g.round);
            return;
        }
        if (c->got < expect) return;
        uint64_t sum = (uint64_t)g.n * (g.n - 1) / 2 - (g.mode == M_CHAT ? c->id : 0);
        if (g.tr_len && c->sender_sum != sum) {
            fail("connection %u: round %" PRIu64 ": senders do not add up (duplicates?)", c->id,
                 g.round);
            return;
        }
        if (++g.satisfied == g.n) round_done();
        return;
    }
    case M_LATENCY: {
        if (sender >= g.n || sender == c->id) {
            fail("connection %u: message from sender %" PRIu64, c->id, sender);
            return;
        }
        if (g.last_seen) {
            /* A sender's messages leave in order, each with a later time: anything else here
             * is a duplicate or a reordering. */
            uint64_t *last = &g.last_seen[(uint64_t)c->id * g.n + sender];
            if (val + 1 <= *last) {
                fail("connection %u: message of sender %" PRIu64 " sent at +%" PRIu64
                     " ns arrived after one sent at +%" PRIu64 " ns (%s)",
                     c->id, sender, val, *last - 1, val + 1 == *last ? "duplicate" : "reordered");
                return;
            }
            *last = val + 1;
        }
        bool local = !g.port2 || (sender < g.split) == (c->id < g.split);
        g.delivered++;
        if (local) g.delivered_local++;
        if (g.m_t0 && g.t0 + val >= g.m_t0) {
            uint64_t v = g.now_read > g.t0 + val ? g.now_read - (g.t0 + val) : 0;
            hist_add(&g.hist, v);
            if (g.port2) hist_add(local ? &g.hist_local : &g.hist_remote, v);
        }
        if (g.sending_stopped && g.delivered == g.sent * (g.n - 1)) finish();
        return;
    }
    }
}

static void on_control(bconn *c, int op, const uint8_t *p, size_t len)
{
    if (op == WSL_OP_PONG) {
        on_pong(c);
    } else if (op == WSL_OP_PING) {
        /* keepalive from the server: answer when the socket is free, else skip (rare) */
        uint8_t pong[WSL_FRAME_HDR_MAX + WSL_CONTROL_MAX];
        static const uint8_t m[4] = {0, 0, 0, 0};
        size_t h = wsl_frame_header_masked(pong, WSL_OP_PONG, true, len, m);
        memcpy(pong + h, p, len);
        uv_buf_t b = uv_buf_init((char *)pong, (unsigned)(h + len));
        if (g.tls)
            tls_send(c, pong, h + len);
        else if (!c->write_pending)
            (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    } else if (op == WSL_OP_CLOSE) {
        if (c->state == C_CLOSING || g.stopping) return; /* its answer to ours; FIN follows */
        unsigned code = len >= 2 ? (unsigned)p[0] << 8 | p[1] : 1005;
        fail("connection %u: server closed it with %u %.*s", c->id, code,
             len > 2 ? (int)(len - 2) : 0, (const char *)p + 2);
    }
}

/* ---- reading ------------------------------------------------------------------------------- */

/* The value of the first header `name` ("\r\nName:") in the response p[0..n), blanks around it
 * left out; NULL when it is not there. */
static const uint8_t *header_value(const uint8_t *p, size_t n, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i + nl < n; i++) {
        if (p[i] != '\r' || strncasecmp((const char *)p + i, name, nl)) continue;
        const uint8_t *v = p + i + nl, *end = memchr(v, '\r', (size_t)(p + n - v));
        if (!end) return NULL;
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        *len = (size_t)(end - v);
        return v;
    }
    return NULL;
}

/* --deflate: the answer must take our offer (RFC 7692) with server_no_context_takeover, so that
 * one inflate stream reset for every message serves every connection, and without
 * client_max_window_bits, which an offer without it may not get back (our messages are made with
 * a 15-bit window). Without --deflate, no extension may come back. */
static bool extensions_ok(bconn *c, const uint8_t *p, size_t n)
{
    size_t len = 0;
    const uint8_t *v = header_value(p, n, "\r\nSec-WebSocket-Extensions:", &len);
    if (!v) {
        if (g.deflate) fail("connection %u: the server did not accept permessage-deflate", c->id);
        return !g.deflate;
    }
    bool ok = g.deflate, server_nct = false, first = true;
    for (const uint8_t *q = v, *end = v + len; ok && q < end; first = false) {
        const uint8_t *semi = memchr(q, ';', (size_t)(end - q)), *e = semi ? semi : end;
        while (q < e && (*q == ' ' || *q == '\t'))
            q++;
        size_t tl = (size_t)(e - q);
        while (tl && (q[tl - 1] == ' ' || q[tl - 1] == '\t'))
            tl--;
#define IS(s) (tl == sizeof s - 1 && !strncasecmp((const char *)q, s, tl))
        if (first)
            ok = IS("permessage-deflate");
        else if (IS("server_no_context_takeover"))
            server_nct = true;
        else if (!IS("client_no_context_takeover") &&
                 !(tl > 22 && !strncasecmp((const char *)q, "server_max_window_bits", 22)))
            ok = false;
#undef IS
        q = semi ? semi + 1 : end;
    }
    if (ok && server_nct) return true;
    fail("connection %u: Sec-WebSocket-Extensions: %.*s (%s)", c->id, (int)len, v,
         !g.deflate ? "nothing was offered"
         : ok       ? "the generator needs server_no_context_takeover"
                    : "not the answer to our offer");
    return false;
}

/* Validates the 101 response in p[0..n) (ending with the blank line). */
static bool response_ok(bconn *c, const uint8_t *p, size_t n)
{
    if (n < 12 || memcmp(p, "HTTP/1.1 101", 12) != 0) {
        const uint8_t *eol = memchr(p, '\r', n);
        fail("connection %u: upgrade refused: %.*s", c->id, (int)(eol ? eol - p : 40), p);
        return false;
    }
    size_t len = 0;
    const uint8_t *v = header_value(p, n, "\r\nSec-WebSocket-Accept:", &len);
    if (!v || len != WSL_ACCEPT_LEN || memcmp(v, g.accept, WSL_ACCEPT_LEN)) {
        fail("connection %u: wrong or missing Sec-WebSocket-Accept", c->id);
        return false;
    }
    return extensions_ok(c, p, n);
}

/* --deflate: inflates one compressed message (its payload p[0..n), then the 00 00 ff ff RFC 7692
 * has the sender leave out) into g.ibuf. False (and the run failed) on invalid data. */
static bool inflate_message(bconn *c, const uint8_t *p, size_t n, size_t *out_len)
{
    static const uint8_t tail[4] = {0, 0, 0xff, 0xff};
    int r = inflateReset(&g.zin);
    g.zin.next_out = g.ibuf;
    g.zin.avail_out = (uInt)g.ibuf_size;
    for (int i = 0; i < 2 && r == Z_OK; i++) {
        g.zin.next_in = (Bytef *)(i ? tail : p);
        g.zin.avail_in = (uInt)(i ? sizeof tail : n);
        if (g.zin.avail_in) r = inflate(&g.zin, Z_SYNC_FLUSH);
    }
    if ((r != Z_OK && r != Z_STREAM_END) || !g.zin.avail_out) {
        fail("connection %u: a compressed message of %zu bytes %s", c->id, n,
             g.zin.avail_out ? "does not inflate" : "inflates past the generator's buffer");
        return false;
    }
    *out_len = g.ibuf_size - g.zin.avail_out;
    g.z_frames++;
    g.z_bytes += n;
    g.z_out += *out_len;
    return true;
}

/* Consumes whole frames (and first the HTTP response) from p[0..n); returns bytes used. */
static size_t consume(bconn *c, uint8_t *p, size_t n)
{
    size_t off = 0;
    if (c->state == C_HANDSHAKE) {
        uint8_t *end = memmem(p, n, "\r\n\r\n", 4);
        if (!end) {
            if (n > RESPONSE_MAX) fail("connection %u: response header too long", c->id);
            return 0;
        }
        off = (size_t)(end - p) + 4;
        if (!response_ok(c, p, off)) return n;
        c->state = C_OPEN;
        on_upgraded(c);
    }
    while (n - off >= 2 && (c->state == C_OPEN || c->state == C_CLOSING)) {
        uint8_t b0 = p[off], b1 = p[off + 1];
        uint64_t len = b1 & 0x7f;
        size_t hdr = 2;
        if (b1 & 0x80) {
            fail("connection %u: the server sent a masked frame", c->id);
            return n;
        }
        if (len == 126) {
            if (n - off < 4) break;
            len = (uint64_t)p[off + 2] << 8 | p[off + 3];
            hdr = 4;
        } else if (len == 127) {
            if (n - off < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | p[off + 2 + i];
            hdr = 10;
        }
        if (len > g.rbuf_size / 2) {
            fail("connection %u: a %" PRIu64 "-byte frame is too big for the generator", c->id,
                 len);
            return n;
        }
        if (n - off < hdr + len) break;
        int op = b0 & 0x0f;
        uint8_t *payload = p + off + hdr;
        off += hdr + (size_t)len;
        unsigned rsv = b0 & 0x70u;
        if ((rsv & ~0x40u) || (rsv && (!g.deflate || op >= WSL_OP_CLOSE))) {
            fail("connection %u: a frame with RSV bits %#x (opcode %d)", c->id, rsv, op);
            return n;
        }
        if (op >= WSL_OP_CLOSE) {
            on_control(c, op, payload, (size_t)len);
        } else if (!(b0 & 0x80) || op == WSL_OP_CONT) {
            fail("connection %u: fragmented messages are not supported by the generator", c->id);
            return n;
        } else if (rsv) {
            size_t out_len;
            if (!inflate_message(c, payload, (size_t)len, &out_len)) return n;
            on_data(c, op, g.ibuf, out_len);
        } else {
            g.plain_frames++;
            on_data(c, op, payload, (size_t)len);
        }
        if (g.failed) return n;
    }
    return off;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    bconn *c = h->data;
    if (g.tls) { /* decrypted into rbuf later */
        *buf = uv_buf_init((char *)g.cbuf, 65536);
        return;
    }
    /* Bytes of a partial frame go first, so every frame is parsed from one contiguous buffer. */
    if (c->carry_len) memcpy(g.rbuf, c->carry, c->carry_len);
    *buf = uv_buf_init((char *)g.rbuf + c->carry_len, (unsigned)(g.rbuf_size - c->carry_len));
}

static void keep_carry(bconn *c, const uint8_t *p, size_t n)
{
    if (n > c->carry_cap) {
        size_t cap = n < 256 ? 256 : n * 2;
        uint8_t *q = realloc(c->carry, cap);
        if (!q) {
            fail("out of memory");
            return;
        }
        c->carry = q;
        c->carry_cap = (uint32_t)cap;
    }
    memmove(c->carry, p, n);
    c->carry_len = (uint32_t)n;
}

/* --tls: the ciphertext in cbuf through the client; the upgrade request once the handshake is
 * done; then everything it decrypts, parsed as a plain connection's reads are. */
static void tls_read(bconn *c, size_t nread)
{
    if (BIO_write(c->rbio, g.cbuf, (int)nread) != (int)nread) {
        fail("out of memory");
        return;
    }
    if (c->state == C_TLS) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e != SSL_ERROR_WANT_READ) {
                unsigned long err = ERR_get_error();
                fail("connection %u: TLS handshake failed: %s", c->id,
                     err ? ERR_reason_error_string(err) : "the server closed it");
                return;
            }
            tls_flush(c);
            return;
        }
        g.progress++;
        c->state = C_HANDSHAKE;
        send_request(c);
    }
    for (;;) {
        size_t have = c->carry_len;
        if (have) memcpy(g.rbuf, c->carry, have);
        c->carry_len = 0;
        int n = SSL_read(c->ssl, g.rbuf + have, (int)(g.rbuf_size - have));
        if (n <= 0) {
            int e = SSL_get_error(c->ssl, n);
            if (have) keep_carry(c, g.rbuf, have);
            if (e == SSL_ERROR_ZERO_RETURN) { /* close_notify: EOF follows */
                if (c->state != C_CLOSING && !g.stopping)
                    fail("connection %u: the server ended TLS", c->id);
                break;
            }
            if (e != SSL_ERROR_WANT_READ) fail("connection %u: TLS error", c->id);
            break;
        }
        size_t total = have + (size_t)n;
        size_t used = consume(c, g.rbuf, total);
        if (g.failed) return;
        if (used < total &&
            (c->state == C_HANDSHAKE || c->state == C_OPEN || c->state == C_CLOSING))
            keep_carry(c, g.rbuf + used, total - used);
    }
    tls_flush(c); /* what reading made it say (none, usually) */
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    bconn *c = s->data;
    if (nread == 0) return;
    if (nread < 0) {
        if (c->state == C_CLOSING || g.stopping) {
            conn_close(c);
        } else if (c->state != C_CLOSED) {
            fail("connection %u: %s before %s", c->id,
                 nread == UV_EOF ? "the server closed the connection" : uv_strerror((int)nread),
                 c->state == C_HANDSHAKE ? "the upgrade" : "the end of the run");
        }
        return;
    }
    if (g.mode == M_LATENCY) g.now_read = uv_hrtime();
    if (g.tls) {
        tls_read(c, (size_t)nread);
        return;
    }
    if (g.quickack) {
        uv_os_fd_t fd;
        int one = 1;
        if (!uv_fileno((uv_handle_t *)s, &fd))
            setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
    }
    size_t n = c->carry_len + (size_t)nread;
    c->carry_len = 0;
    size_t used = consume(c, g.rbuf, n);
    if (used < n && (c->state == C_HANDSHAKE || c->state == C_OPEN || c->state == C_CLOSING))
        keep_carry(c, g.rbuf + used, n - used);
}

/* ---- connections --------------------------------------------------------------------------- */

static void on_connect(uv_connect_t *req, int status)
{
    bconn *c = req->data;
    if (status < 0) {
        if (status != UV_ECANCELED) fail("connect: %s", uv_strerror(status));
        return;
    }
    if (c->state != C_CONNECTING) return;
    /* connect-rate writes only after an answer (no unacknowledged bytes): Nagle never waits */
    int r = g.mode == M_CONNECT ? 0 : uv_tcp_nodelay(&c->tcp, 1);
    if (!r) r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (r) {
        fail("connection %u: %s", c->id, uv_strerror(r));
        return;
    }
    g.progress++;
    if (g.tls) {
        c->state = C_TLS;
        SSL_free(c->ssl);
        c->ssl = SSL_new(g.ssl_ctx);
        c->rbio = BIO_new(BIO_s_mem());
        c->wbio = BIO_new(BIO_s_mem());
        if (!c->ssl || !c->rbio || !c->wbio) {
            fail("out of memory");
            return;
        }
        SSL_set_bio(c->ssl, c->rbio, c->wbio);
        SSL_set_connect_state(c->ssl);
        (void)SSL_do_handshake(c->ssl); /* the ClientHello */
        tls_flush(c);
        return;
    }
    c->state = C_HANDSHAKE;
    send_request(c);
}

static void conn_start(bconn *c)
{
    c->state = C_CONNECTING;
    c->carry_len = 0;
    c->acc_len = 0;
    c->write_pending = c->send_again = c->got_pong = c->control_pending = 0;
    int r = uv_tcp_init(g.loop, &c->tcp);
    c->tcp.data = c;
    c->creq.data = c;
    const struct sockaddr_storage *to = g.port2 && c->id >= g.split ? &g.addr2 : &g.addr;
    if (!r) r = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)to, on_connect);
    g.started++;
    g.open_now++;
    if (r) fail("connect: %s", uv_strerror(r));
}

static void on_conn_closed(uv_handle_t *h)
{
    bconn *c = h->data;
    g.open_now--;
    if (g.mode == M_CONNECT && !g.failed && !g.stopping) {
        g.handshakes++;
        g.progress++;
        if (g.started < g.limit) {
            conn_start(c);
        } else if (g.handshakes == g.limit) {
            end_measure();
            finish();
        }
        return;
    }
    if (g.open_now == 0 && (g.stopping || g.failed)) close_timers();
}

static void on_close_timeout(uv_timer_t *t)
{
    (void)t;
    uint32_t left = 0;
    for (uint32_t i = 0; i < g.n; i++)
        if (g.conns[i].state == C_CLOSING) left++, conn_close(&g.conns[i]);
    if (left) fprintf(stderr, "wsluad-bench: %u connections did not finish closing\n", left);
    close_timers();
}

/* Ends the run: a close frame to every open connection, then wait for each server's FIN. */
static void finish(void)
{
    if (g.stopping) return;
    g.stopping = true;
    g.sending_stopped = true;
    uv_timer_stop(&g.phase_timer);
    uv_timer_stop(&g.tick_timer);
    for (uint32_t i = 0; i < g.n; i++) {
        bconn *c = &g.conns[i];
        if (c->state == C_OPEN) {
            c->state = C_CLOSING;
            send_control(c, g.close_frame, g.close_len);
        } else if (c->state == C_CONNECTING || c->state == C_TLS || c->state == C_HANDSHAKE) {
            conn_close(c);
        }
    }
    if (g.open_now == 0) {
        close_timers();
        return;
    }
    uv_timer_start(&g.close_timer, on_close_timeout, 5000, 0);
}

static void on_watch(uv_timer_t *t)
{
    (void)t;
    if (g.progress != g.last_progress || g.stopping) {
        g.last_progress = g.progress;
        g.stalled_s = 0;
        return;
    }
    if (++g.stalled_s < g.timeout) return;
    if (g.priming)
        fail("the two servers did not pass a message to each other within %u s (A to B: %s, "
             "B to A: %s)",
             g.stalled_s, g.probe_ab ? "yes" : "no", g.probe_ba ? "yes" : "no");
    else if (g.mode == M_IDLE)
        fail("stalled: %u of %u connections upgraded, %u pongs", g.upgraded, g.n, g.pongs);
    else if (g.mode == M_CONNECT)
        fail("stalled: %" PRIu64 " of %" PRIu64 " handshakes", g.handshakes, g.limit);
    else
        fail("stalled for %u s: %u of %u upgraded, %" PRIu64 " messages sent, %" PRIu64
             " received, round %" PRIu64 " (%" PRIu64 " of %u clients satisfied)",
             g.stalled_s, g.upgraded, g.n, g.sent, g.received, g.round, g.satisfied, g.n);
}

/* ---- report -------------------------------------------------------------------------------- */

static const char *const pct_names[] = {"p50", "p99", "p999"};
static const double pct_qs[] = {0.5, 0.99, 0.999};

static void json_pcts(const char *suffix, const histo *h)
{
    for (int i = 0; i < 3; i++) {
        double v = hist_pct(h, pct_qs[i]);
        if (v < 0)
            printf(",\"%s_us%s\":null", pct_names[i], suffix); /* beyond the drain time */
        else
            printf(",\"%s_us%s\":%.1f", pct_names[i], suffix, v);
    }
    printf(",\"max_us%s\":%.1f", suffix, (double)h->max / 1000);
}

static void text_pcts(const char *what, const histo *h)
{
    static const char *const names[] = {"p50", "p99", "p99.9"};
    printf("  %s over %" PRIu64 " deliveries:", what, h->n);
    for (int i = 0; i < 3; i++) {
        double v = hist_pct(h, pct_qs[i]);
        if (v < 0)
            printf(" %s > %d s,", names[i], DRAIN_MS / 1000);
        else
            printf(" %s %.1f us,", names[i], v);
    }
    printf(" max %.1f us\n", (double)h->max / 1000);
}

static void report(void)
{
    double secs = (double)(g.m_t1 - g.m_t0) / 1e9;
    double tick = (double)sysconf(_SC_CLK_TCK);
    double scpu = g.m_cpu_ok ? (double)(g.m_cpu1 - g.m_cpu0) / tick : -1;
    double ccpu = g.m_ccpu1 - g.m_ccpu0;
    uint64_t msgs = 0, frames = 0, rounds = g.rounds - g.m_rounds0;
    const char *unit = "msgs";
    double work = 0;
    switch (g.mode) {
    case M_ECHO:
        msgs = frames = g.received - g.m_recv0;
        break;
    case M_BROADCAST:
    case M_CHAT:
        msgs = rounds * g.n;
        frames = rounds * g.n * (g.mode == M_CHAT ? g.n - 1 : g.n);
        unit = "rounds";
        break;
    case M_CONNECT:
        msgs = g.handshakes - g.m_hs0;
        unit = "handshakes";
        break;
    case M_LATENCY:
        msgs = g.sent - g.m_sent0;
        frames = msgs * (g.n - 1);
        break;
    default:
        break;
    }
    work = g.mode == M_BROADCAST || g.mode == M_CHAT ? (double)rounds : (double)msgs;
    double rate = secs > 0 ? work / secs : 0;
    double us_msg = scpu >= 0 && msgs ? scpu * 1e6 / (double)msgs : -1;
    double ns_frame = scpu >= 0 && frames ? scpu * 1e9 / (double)frames : -1;
    /* CPU taken by processes other than the server and us, in % of one core */
    double other = -1;
    if (g.m_busy_ok && g.m_cpu_ok && secs > 0)
        other = ((double)(g.m_busy1 - g.m_busy0) / tick - scpu - ccpu) * 100 / secs;
    if (other < 0 && other > -5) other = 0; /* tick rounding */
    double per_conn =
        g.rss_idle && g.rss_before ? ((double)g.rss_idle - (double)g.rss_before) * 1024 / g.n : 0;
    double per_conn_ping =
        g.rss_after && g.rss_before ? ((double)g.rss_after - (double)g.rss_before) * 1024 / g.n : 0;
    if (g.json) {
        printf("{\"mode\":\"%s\",\"connections\":%u,\"size\":%zu", mode_names[g.mode], g.n, g.size);
        if (g.mode == M_IDLE) {
            printf(",\"rss_before_kb\":%" PRIu64 ",\"rss_idle_kb\":%" PRIu64
                   ",\"rss_after_ping_kb\":%" PRIu64 ",\"bytes_per_connection\":%.0f"
                   ",\"bytes_per_connection_after_ping\":%.0f",
                   g.rss_before, g.rss_idle, g.rss_after, per_conn, per_conn_ping);
        } else {
            printf(",\"seconds\":%.3f,\"%s\":%" PRIu64 ",\"%s_per_s\":%.2f", secs, unit,
                   (uint64_t)work, unit, rate);
            if (frames)
                printf(",\"frames\":%" PRIu64 ",\"frames_per_s\":%.1f", frames,
                       secs > 0 ? (double)frames / secs : 0);
            printf(",\"messages\":%" PRIu64, msgs);
            if (scpu >= 0)
                printf(",\"server_cpu_s\":%.3f,\"server_cpu_pct\":%.1f", scpu,
                       secs > 0 ? scpu * 100 / secs : 0);
            if (us_msg >= 0) printf(",\"server_cpu_us_per_msg\":%.3f", us_msg);
            if (ns_frame >= 0) printf(",\"server_cpu_ns_per_frame\":%.1f", ns_frame);
            printf(",\"client_cpu_s\":%.3f,\"client_cpu_pct\":%.1f", ccpu,
                   secs > 0 ? ccpu * 100 / secs : 0);
            if (g.rss_end) printf(",\"server_rss_kb\":%" PRIu64, g.rss_end);
            if (other >= 0) printf(",\"other_cpu_pct\":%.1f", other);
        }
        if (g.mode != M_IDLE && g.mode != M_CONNECT) printf(",\"sent_total\":%" PRIu64, g.sent);
        if (g.mode == M_LATENCY) {
            printf(",\"rate\":%.0f,\"senders\":%u,\"samples\":%" PRIu64 ",\"undelivered\":%" PRIu64
                   ",\"delivered\":%" PRIu64 ",\"expected\":%" PRIu64 ",\"order_checked\":%s",
                   g.rate, g.senders, g.hist.n, g.undelivered, g.delivered, g.sent * (g.n - 1),
                   g.last_seen ? "true" : "false");
            json_pcts("", &g.hist);
            if (g.port2) {
                printf(",\"samples_local\":%" PRIu64 ",\"samples_remote\":%" PRIu64, g.hist_local.n,
                       g.hist_remote.n);
                json_pcts("_local", &g.hist_local);
                json_pcts("_remote", &g.hist_remote);
            }
            printf(",\"late\":%" PRIu64, g.late);
        }
        if (g.mode == M_BROADCAST || g.mode == M_CHAT)
            printf(",\"round_p50_ms\":%.3f,\"round_p99_ms\":%.3f,\"round_max_ms\":%.3f",
                   hist_pct(&g.hist, 0.5) / 1000, hist_pct(&g.hist, 0.99) / 1000,
                   (double)g.hist.max / 1e6);
        if (g.port2)
            printf(",\"port2\":%d,\"split\":%u,\"probes_sent\":%" PRIu64, g.port2, g.split,
                   g.probes_sent);
        if (g.deflate)
            printf(",\"deflate\":true,\"wire_bytes_per_msg_sent\":%zu,\"compressed_in\":%" PRIu64
                   ",\"plain_in\":%" PRIu64 ",\"compressed_bytes_in\":%" PRIu64
                   ",\"inflated_bytes\":%" PRIu64,
                   g.wire_len, g.z_frames, g.plain_frames, g.z_bytes, g.z_out);
        printf(",\"foreign_frames\":%" PRIu64 "}\n", g.foreign);
        return;
    }
    printf("%s: %u connections, %zu-byte messages\n", mode_names[g.mode], g.n, g.size);
    if (g.mode == M_IDLE) {
        if (g.pid > 0)
            printf("  server RSS %" PRIu64 " kB -> %" PRIu64 " kB once quiet: %.0f bytes per "
                   "connection\n  after a ping round trip: %" PRIu64 " kB, %.0f bytes per "
                   "connection\n",
                   g.rss_before, g.rss_idle, per_conn, g.rss_after, per_conn_ping);
        else
            printf("  all connections upgraded and answered a ping (no --server-pid: no RSS)\n");
        return;
    }
    printf("  %.2f s: %" PRIu64 " %s, %.1f %s/s", secs, (uint64_t)work, unit, rate, unit);
    if (frames && g.mode != M_ECHO) printf(", %.0f frames/s", (double)frames / secs);
    printf("\n");
    if (scpu >= 0) {
        printf("  server CPU %.2f s (%.0f%%)", scpu, secs > 0 ? scpu * 100 / secs : 0);
        if (us_msg >= 0) printf(", %.2f us per message", us_msg);
        if (ns_frame >= 0 && g.mode != M_ECHO) printf(", %.0f ns per frame", ns_frame);
        if (g.rss_end) printf(", RSS %" PRIu64 " kB", g.rss_end);
        printf("\n");
    }
    printf("  generator CPU %.2f s (%.0f%%)\n", ccpu, secs > 0 ? ccpu * 100 / secs : 0);
    if (other >= 0) printf("  other processes CPU %.0f%%\n", other);
    if (g.mode == M_LATENCY) {
        text_pcts("latency", &g.hist);
        if (g.port2) {
            text_pcts("  on the sender's server", &g.hist_local);
            text_pcts("  on the other server", &g.hist_remote);
        }
        printf("  %" PRIu64 " messages sent by %u clients, %" PRIu64 " of %" PRIu64
               " deliveries made%s\n",
               g.sent, g.senders, g.delivered, g.sent * (g.n - 1),
               g.last_seen ? ", each in its sender's order, none twice" : "");
        if (g.undelivered)
            printf("  %" PRIu64 " deliveries still missing %d s after the last send\n",
                   g.undelivered, DRAIN_MS / 1000);
        if (g.late) printf("  %" PRIu64 " send slots skipped (socket still busy)\n", g.late);
    }
    if ((g.mode == M_BROADCAST || g.mode == M_CHAT) && g.hist.n)
        printf("  round time: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
               hist_pct(&g.hist, 0.5) / 1000, hist_pct(&g.hist, 0.99) / 1000,
               (double)g.hist.max / 1e6);
    if (g.foreign) printf("  %" PRIu64 " frames not from the generator ignored\n", g.foreign);
    if (g.deflate)
        printf("  permessage-deflate: messages sent as %zu bytes for %zu; %" PRIu64 " of %" PRIu64
               " data messages received compressed, %" PRIu64 " bytes inflated to %" PRIu64 "\n",
               g.wire_len, g.size, g.z_frames, g.z_frames + g.plain_frames, g.z_bytes, g.z_out);
    if (g.probes_sent)
        printf("  %" PRIu64 " probes sent before the run (each server's reached the other)\n",
               g.probes_sent);
}

/* ---- options ------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fputs("usage: wsluad-bench --mode MODE [options]\n"
          "modes: echo, broadcast, chat, connect-rate, idle-memory, latency\n"
          "  --connections N     clients (connect-rate: handshakes in flight)  [100]\n"
          "  --size BYTES        payload size (K/M suffixes)                     [20]\n"
          "  --duration S        measured seconds                                [10]\n"
          "  --warmup S          seconds before measuring starts                 [0]\n"
          "  --messages N        bounded run instead: echo messages, broadcast/chat rounds,\n"
          "                      connect-rate handshakes [connect-rate: 10000]\n"
          "  --rate N            latency: messages per second in total          [1000]\n"
          "  --host ADDR --port N --path P                 [127.0.0.1 8080 /]\n"
          "  --port2 N           a second server (another node of a cluster) on the same host:\n"
          "                      connections from --split on go there; latency is then also\n"
          "                      reported apart for the sender's server and the other one\n"
          "  --split K           with --port2: connections 0..K-1 go to --port   [half]\n"
          "  --senders K         latency: only connections 0..K-1 send; all receive [all]\n"
          "  --server-pid PID    report the server's CPU time and memory from /proc\n"
          "  --server-pid2 PID   ... and add those of the second server\n"
          "  --open-concurrency N  connects in flight while opening           [256]\n"
          "  --timeout S         fail when nothing progresses for S seconds     [10]\n"
          "  --binary            binary frames instead of text\n"
          "  --tls               wss:// (TLS, the server's certificate not verified)\n"
          "  --deflate           permessage-deflate, no context takeover either way: every\n"
          "                      message sent compressed, every compressed one inflated\n"
          "  --payload KIND      the bytes before each message's trailer: abc (the alphabet)\n"
          "                      or chat (chat-like JSON text)                  [abc]\n"
          "  --quickack          ACK every read at once (TCP_QUICKACK) instead of delaying\n"
          "  --json              one JSON object on stdout\n",
          f);
}

static bool parse_num(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno) return false;
    if (*end == 'k' || *end == 'K')
        v *= 1024, end++;
    else if (*end == 'm' || *end == 'M')
        v *= 1024 * 1024, end++;
    if (*end || v < 0) return false;
    *out = v;
    return true;
}

static int parse_args(int argc, char **argv)
{
    static const struct option opts[] = {{"mode", required_argument, 0, 'm'},
                                         {"connections", required_argument, 0, 'c'},
                                         {"size", required_argument, 0, 's'},
                                         {"duration", required_argument, 0, 'd'},
                                         {"warmup", required_argument, 0, 'w'},
                                         {"messages", required_argument, 0, 'n'},
                                         {"count", required_argument, 0, 'n'},
                                         {"rate", required_argument, 0, 'r'},
                                         {"host", required_argument, 0, 'H'},
                                         {"port", required_argument, 0, 'p'},
                                         {"port2", required_argument, 0, '2'},
                                         {"split", required_argument, 0, 'k'},
                                         {"senders", required_argument, 0, 'e'},
                                         {"path", required_argument, 0, 'P'},
                                         {"server-pid", required_argument, 0, 'S'},
                                         {"server-pid2", required_argument, 0, 'T'},
                                         {"open-concurrency", required_argument, 0, 'o'},
                                         {"timeout", required_argument, 0, 't'},
                                         {"binary", no_argument, 0, 'b'},
                                         {"quickack", no_argument, 0, 'q'},
                                         {"tls", no_argument, 0, 'L'},
                                         {"deflate", no_argument, 0, 'D'},
                                         {"payload", required_argument, 0, 'y'},
                                         {"json", no_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    g.mode = -1;
    g.n = 100;
    g.size = 20;
    g.duration = 10;
    g.timeout = 10;
    g.rate = 1000;
    g.host = "127.0.0.1";
    g.path = "/";
    g.port = 8080;
    g.open_conc = 256;
    int ch;
    double v;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (ch == 'h') {
            usage(stdout);
            exit(0);
        }
        if (ch == 'b' || ch == 'j' || ch == 'q' || ch == 'L' || ch == 'D') {
            *(ch == 'b'   ? &g.binary
              : ch == 'j' ? &g.json
              : ch == 'q' ? &g.quickack
              : ch == 'L' ? &g.tls
                          : &g.deflate) = true;
            continue;
        }
        if (ch == 'y') {
            if (strcmp(optarg, "abc") && strcmp(optarg, "chat")) {
                fprintf(stderr, "wsluad-bench: --payload is abc or chat\n");
                return -1;
            }
            g.payload = strcmp(optarg, "chat") ? P_ABC : P_CHAT;
            continue;
        }
        if (ch == '?') return -1;
        if (ch == 'm') {
            for (int i = 0; i < 6; i++)
                if (!strcmp(optarg, mode_names[i])) g.mode = i;
            if (g.mode < 0) {
                fprintf(stderr, "wsluad-bench: unknown mode %s\n", optarg);
                return -1;
            }
            continue;
        }
        if (ch == 'H' || ch == 'P') {
            *(ch == 'H' ? &g.host : &g.path) = optarg;
            continue;
        }
        if (!parse_num(optarg, &v)) {
            fprintf(stderr, "wsluad-bench: bad number %s\n", optarg);
            return -1;
        }
        switch (ch) {
        case 'c':
            g.n = (uint32_t)v;
            break;
        case 's':
            g.size = (size_t)v;
            break;
        case 'd':
            g.duration = v;
            break;
        case 'w':
            g.warmup = v;
            break;
        case 'n':
            g.limit = (uint64_t)v;
            break;
        case 'r':
            g.rate = v;
            break;
        case 'p':
            g.port = (int)v;
            break;
        case '2':
            g.port2 = (int)v;
            break;
        case 'k':
            g.split = (uint32_t)v;
            break;
        case 'e':
            g.senders = (uint32_t)v;
            break;
        case 'S':
            g.pid = (int)v;
            break;
        case 'T':
            g.pid2 = (int)v;
            break;
        case 'o':
            g.open_conc = (uint32_t)v;
            break;
        case 't':
            g.timeout = v;
            break;
        }
    }
    if (g.mode < 0 || optind != argc) return -1;
    if (g.n < 1 || g.open_conc < 1 || g.duration <= 0 || g.rate <= 0 || g.size > (1u << 20)) {
        fprintf(stderr, "wsluad-bench: connections, duration and rate must be positive; size at "
                        "most 1M\n");
        return -1;
    }
    if ((g.mode == M_CHAT || g.mode == M_LATENCY) && g.n < 2) {
        fprintf(stderr, "wsluad-bench: chat and latency need at least 2 connections\n");
        return -1;
    }
    if (g.port2) {
        if (!g.split) g.split = g.n / 2;
        if (g.split < 1 || g.split >= g.n) {
            fprintf(stderr, "wsluad-bench: --split must leave clients on both servers\n");
            return -1;
        }
    }
    if (!g.senders) g.senders = g.n;
    if (g.senders > g.n || (g.senders != g.n && g.mode != M_LATENCY)) {
        fprintf(stderr, "wsluad-bench: --senders is for latency mode, at most --connections\n");
        return -1;
    }
    if (g.mode == M_CONNECT) {
        if (!g.limit) g.limit = 10000;
        if (g.n > g.limit) g.n = (uint32_t)g.limit;
    }
    if (g.mode == M_LATENCY) {
        if (g.size < TRAILER_LAT) g.size = TRAILER_LAT;
        g.limit = 0;
    }
    g.tr_len = g.mode == M_LATENCY ? TRAILER_LAT : g.size >= TRAILER ? TRAILER : 0;
    g.opcode = g.binary ? WSL_OP_BINARY : WSL_OP_TEXT;
    return 0;
}

static int resolve(int port_number, struct sockaddr_storage *out)
{
    struct addrinfo hints = {0}, *res = NULL;
    char port[16];
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof port, "%d", port_number);
    int r = getaddrinfo(g.host, port, &hints, &res);
    if (r || !res) {
        fprintf(stderr, "wsluad-bench: %s: %s\n", g.host, gai_strerror(r));
        return -1;
    }
    memcpy(out, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

/* 10,000 connections need more descriptors than the usual soft limit of 1024. */
static int raise_nofile(void)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)g.n + 64;
    if (getrlimit(RLIMIT_NOFILE, &rl)) return -1;
    if (rl.rlim_cur >= want) return 0;
    if (rl.rlim_max < want) rl.rlim_max = want; /* root may raise the hard limit too */
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) && getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < want) {
        fprintf(stderr, "wsluad-bench: need %lu file descriptors, the limit is %lu\n",
                (unsigned long)want, (unsigned long)rl.rlim_cur);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv)) {
        usage(stderr);
        return 2;
    }
    if (resolve(g.port, &g.addr) || (g.port2 && resolve(g.port2, &g.addr2)) || raise_nofile())
        return 1;
    g.loop = uv_default_loop();
    g.conns = calloc(g.n, sizeof *g.conns);
    g.rbuf_size = (size_t)4 << 20;
    g.rbuf = malloc(g.rbuf_size);
    if (g.mode == M_LATENCY && g.n <= ORDER_MAX_N)
        g.last_seen = calloc((size_t)g.n * g.n, sizeof *g.last_seen);
    if (g.tls) {
        g.cbuf = malloc(65536);
        g.ssl_ctx = SSL_CTX_new(TLS_client_method());
        if (g.ssl_ctx) {
            SSL_CTX_set_verify(g.ssl_ctx, SSL_VERIFY_NONE, NULL);
            SSL_CTX_set_mode(g.ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
        }
    }
    if (g.deflate) {
        g.ibuf_size = g.rbuf_size / 2 + 1; /* a frame's payload is at most rbuf_size / 2 */
        g.ibuf = malloc(g.ibuf_size);
        g.zin_ok = inflateInit2(&g.zin, -15) == Z_OK;
    }
    if (!g.conns || !g.rbuf || build_frames() ||
        (g.mode == M_LATENCY && g.n <= ORDER_MAX_N && !g.last_seen) ||
        (g.tls && (!g.cbuf || !g.ssl_ctx)) || (g.deflate && (!g.ibuf || !g.zin_ok))) {
        fprintf(stderr, "wsluad-bench: out of memory\n");
        return 1;
    }
    for (uint32_t i = 0; i < g.n; i++)
        g.conns[i].id = i;
    build_request();
    uv_timer_init(g.loop, &g.phase_timer);
    uv_timer_init(g.loop, &g.tick_timer);
    uv_timer_init(g.loop, &g.watch_timer);
    uv_timer_init(g.loop, &g.close_timer);
    uv_timer_start(&g.watch_timer, on_watch, 1000, 1000);
    if (g.mode == M_IDLE && g.pid > 0 && !proc_rss_kb(g.pid, &g.rss_before)) {
        fprintf(stderr, "wsluad-bench: cannot read /proc/%d/status\n", g.pid);
        return 1;
    }
    if (g.mode == M_CONNECT) begin_measure();
    uint32_t first = g.mode == M_CONNECT || g.open_conc > g.n ? g.n : g.open_conc;
    for (uint32_t i = 0; i < first && !g.failed; i++)
        conn_start(&g.conns[i]);
    uv_run(g.loop, UV_RUN_DEFAULT);
    if (!g.failed && g.mode != M_IDLE && !g.measure_done) fail("the run ended early");
    if (!g.failed) report();
    for (uint32_t i = 0; i < g.n; i++) {
        free(g.conns[i].carry);
        SSL_free(g.conns[i].ssl);
        free(g.conns[i].out);
        free(g.conns[i].acc);
    }
    SSL_CTX_free(g.ssl_ctx);
    free(g.cbuf);
    if (g.zin_ok) inflateEnd(&g.zin);
    free(g.ibuf);
    free(g.conns);
    free(g.frames);
    free(g.filler);
    free(g.rbuf);
    free(g.last_seen);
    uv_loop_close(g.loop);
    return g.failed ? 1 : 0;
}
