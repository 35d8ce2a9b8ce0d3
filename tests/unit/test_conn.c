/* The connection layer on its own (src/conn.c with the server's loop machinery): a stub listens
 * to its events and a socketpair plays the client, so the upgrade, echo, the close handshake and
 * its lingering close, back-pressure and drain are checked without Lua or TCP. */
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include "conn.h"
#include "server.h"
#include "test.h"
#include "uring.h"

static const uint8_t MASK[4] = {0x11, 0x22, 0x33, 0x44};

/* What the stub saw. */
static struct {
    int opens, messages, closes, drains, releases;
    unsigned close_code;
    char last[256];
    uint8_t *whole; /* the last message, all of it */
    size_t whole_len;
    wsl_conn *conn;
    bool echo; /* answer each message with itself */
    int mixed; /* answer with a small frame, then 1: a large one and a small one; 2: a close */
    size_t buffered; /* wsl_conn_buffered right after the answer */
    /* test_reply_before_next_input: the connections and their clients; whether the first
     * connection's answer could be read when the second one's message was handled */
    wsl_conn *pair[2];
    int pair_fd[2];
    wsl_conn *first;
    int readable_at_second;
    size_t first_buffered; /* wsl_conn_buffered of the first, when the second is handled */
    bool relay;            /* test_batch_order: pair[1]'s message goes to pair[0] */
    bool relay_then_end;   /* test_gone_while_dirty: and pair[0] is destroyed right after */
} seen;

static void reset_seen(void)
{
    free(seen.whole);
    memset(&seen, 0, sizeof seen);
}

static void ev_open(void *ud, wsl_conn *c)
{
    (void)ud;
    seen.opens++;
    seen.conn = c;
}

static void ev_message(void *ud, wsl_conn *c, const uint8_t *data, size_t len, bool binary)
{
    (void)ud;
    seen.messages++;
    snprintf(seen.last, sizeof seen.last, "%.*s", (int)len, (const char *)data);
    free(seen.whole);
    seen.whole = malloc(len + 1);
    if (!seen.whole) abort();
    memcpy(seen.whole, data, len);
    seen.whole_len = len;
    if (seen.pair[0] && seen.messages == 2) {
        /* The other connection's message was handled before this one, in this same loop
         * iteration: its answer must already be in its client's socket. */
        int other = seen.first == seen.pair[0] ? seen.pair_fd[0] : seen.pair_fd[1];
        uint8_t b;
        seen.readable_at_second = (int)recv(other, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 1;
        seen.first_buffered = wsl_conn_buffered(seen.first);
    }
    if (seen.messages == 1) seen.first = c;
    if (seen.relay && c == seen.pair[1]) {
        wsl_msg m;
        wsl_msg_init(&m, WSL_OP_TEXT, data, len);
        CHECK_EQ(wsl_conn_send(seen.pair[0], &m), 0);
        wsl_msg_release(&m);
        if (seen.relay_then_end) wsl_conn_destroy(seen.pair[0]);
    } else if (seen.echo) {
        wsl_msg m;
        wsl_msg_init(&m, binary ? WSL_OP_BINARY : WSL_OP_TEXT, data, len);
        CHECK_EQ(wsl_conn_send(c, &m), 0);
        wsl_msg_release(&m);
    }
    if (seen.mixed) {
        static uint8_t big[20000];
        memset(big, 'B', sizeof big);
        wsl_msg m;
        wsl_msg_init(&m, WSL_OP_TEXT, "1", 1);
        CHECK_EQ(wsl_conn_send(c, &m), 0);
        if (seen.mixed == 2) {
            CHECK_EQ(wsl_conn_close(c, 1000, "", 0), 0);
            seen.buffered = wsl_conn_buffered(c);
            return;
        }
        wsl_msg_init(&m, WSL_OP_BINARY, big, sizeof big);
        CHECK_EQ(wsl_conn_send(c, &m), 0);
        wsl_msg_release(&m);
        wsl_msg_init(&m, WSL_OP_TEXT, "2", 1);
        CHECK_EQ(wsl_conn_send(c, &m), 0);
    }
    seen.buffered = wsl_conn_buffered(c);
}

static void ev_close(void *ud, wsl_conn *c, unsigned code, const char *reason, size_t len)
{
    (void)ud;
    (void)reason;
    (void)len;
    seen.closes++;
    seen.close_code = code;
    CHECK(!wsl_conn_is_open(c)); /* the close event sees it closed already */
}

static void ev_drain(void *ud, wsl_conn *c)
{
    (void)ud;
    (void)c;
    seen.drains++;
}

static void ev_release(void *ud, wsl_conn *c)
{
    (void)ud;
    (void)c;
    seen.releases++;
    seen.conn = NULL;
}

static const wsl_conn_events stub = {
    .open = ev_open,
    .message = ev_message,
    .close = ev_close,
    .drain = ev_drain,
    .release = ev_release,
};

static uv_loop_t *loop;
static wsl_server srv;
static wsl_options opt;
static int client; /* our end of the socketpair */

/* Everything the server wrote is with the kernel before the loop polls: its flush, a prepare
 * handle started before this one (libuv runs the last started first), leaves neither a dirty
 * connection nor a write in the batch. Counted for every iteration of every test. */
static int unflushed_at_poll;

static void before_poll(uv_prepare_t *h)
{
    (void)h;
    if (srv.dirty || (srv.uring && wsl_uring_queued(srv.uring))) unflushed_at_poll++;
}

/* Run the loop until cond holds (bounded: a broken connection layer fails, not hangs). */
#define PUMP_UNTIL(cond)                                                                           \
    do {                                                                                           \
        for (int i_ = 0; i_ < 10000 && !(cond); i_++)                                              \
            uv_run(loop, UV_RUN_NOWAIT);                                                           \
        CHECK(cond);                                                                               \
    } while (0)

static void send_frame(int op, const void *payload, size_t n)
{
    uint8_t buf[WSL_FRAME_HDR_MAX + 256];
    size_t h = wsl_frame_header_masked(buf, op, true, n, MASK);
    memcpy(buf + h, payload, n);
    wsl_frame_mask(buf + h, n, MASK, 0);
    CHECK_EQ(write(client, buf, h + n), (ssize_t)(h + n));
}

/* Read what the server wrote so far (pumping the loop until something came). */
static size_t receive(uint8_t *out, size_t cap)
{
    ssize_t r = -1;
    for (int i = 0; i < 10000 && r < 0; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        r = read(client, out, cap);
    }
    CHECK(r >= 0);
    return r < 0 ? 0 : (size_t)r;
}

static void connect_and_upgrade_with(const char *extra, char *resp_out, size_t cap);

static void connect_and_upgrade(void)
{
    connect_and_upgrade_with("", NULL, 0);
}

/* extra: more header lines (each ending in CRLF); the 101 answer is copied to resp_out. */
static void connect_and_upgrade_with(const char *extra, char *resp_out, size_t cap)
{
    int sv[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    client = sv[1];
    int small = 4096; /* so that output really queues up when the client does not read */
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(client, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    CHECK(wsl_conn_new(&srv, sv[0], NULL) != NULL);
    char req[1024];
    int len = snprintf(req, sizeof req,
                       "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Version: 13\r\n%s\r\n",
                       extra);
    CHECK_EQ(write(client, req, (size_t)len), (ssize_t)len);
    PUMP_UNTIL(seen.opens == 1);
    uint8_t resp[512];
    size_t n = receive(resp, sizeof resp - 1);
    resp[n] = '\0';
    if (resp_out) snprintf(resp_out, cap, "%s", (char *)resp);
    CHECK(strstr((char *)resp, "HTTP/1.1 101") == (char *)resp);
    CHECK(strstr((char *)resp, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") != NULL);
    CHECK_STR(wsl_conn_path(seen.conn), "/chat");
}

static void test_echo_and_close_handshake(void)
{
    reset_seen();
    seen.echo = true;
    connect_and_upgrade();

    send_frame(WSL_OP_TEXT, "hello", 5);
    PUMP_UNTIL(seen.messages == 1);
    CHECK_STR(seen.last, "hello");
    CHECK_EQ(seen.buffered, 7); /* the answer counts while it waits (in the cork buffer) */
    uint8_t f[64];
    size_t n = receive(f, sizeof f);
    CHECK_EQ(wsl_conn_buffered(seen.conn), 0);
    CHECK_EQ(n, 7);
    CHECK_EQ(f[0], 0x81);
    CHECK_EQ(f[1], 5);
    CHECK_MEM(f + 2, 5, "hello");

    /* The client closes with 1000: the close event runs once with it, the server echoes the
     * code, then shuts its side down (the lingering close): the client reads EOF. */
    send_frame(WSL_OP_CLOSE, "\x03\xe8", 2);
    PUMP_UNTIL(seen.closes == 1);
    CHECK_EQ(seen.close_code, 1000);
    n = receive(f, sizeof f);
    CHECK_EQ(n, 4);
    CHECK_EQ(f[0], 0x88);
    CHECK_MEM(f + 2, 2, "\x03\xe8");
    CHECK_EQ(receive(f, sizeof f), 0); /* FIN after the close frame */
    CHECK_EQ(seen.releases, 0);        /* still waiting for our FIN */
    close(client);
    PUMP_UNTIL(seen.releases == 1);
    CHECK_EQ(seen.closes, 1);
}

static void test_backpressure_and_drain(void)
{
    reset_seen();
    connect_and_upgrade();
    wsl_conn *c = seen.conn;
    static uint8_t payload[8192];
    memset(payload, 'p', sizeof payload);
    wsl_msg m;
    wsl_msg_init(&m, WSL_OP_BINARY, payload, sizeof payload);

    /* Past half the limit, then the client reads everything: the drain event says so. */
    size_t half = (size_t)opt.max_backpressure / 2;
    for (size_t q = 0; q <= half + sizeof payload; q += sizeof payload)
        CHECK_EQ(wsl_conn_send(c, &m), 0);
    uv_run(loop, UV_RUN_NOWAIT); /* the flush: more than the socket buffer takes */
    uint8_t sink[65536];
    for (int i = 0; i < 100000 && seen.drains == 0; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        while (read(client, sink, sizeof sink) > 0) {}
    }
    CHECK_EQ(seen.drains, 1);
    CHECK(wsl_conn_is_open(c));

    /* A client that stops reading: once more than the limit is queued after a write, it is
     * closed with 1008 and its queue dropped. */
    for (size_t q = 0; q <= opt.max_backpressure + sizeof payload; q += sizeof payload)
        wsl_conn_send(c, &m);
    PUMP_UNTIL(seen.closes == 1);
    CHECK_EQ(seen.close_code, 1008);
    CHECK(wsl_conn_buffered(c) <= sizeof payload + 64); /* only what was being written, + close */
    wsl_msg_release(&m);
    close(client);
    PUMP_UNTIL(seen.releases == 1);
}

static void connect_pair(void)
{
    for (int i = 0; i < 2; i++) {
        seen.opens = 0;
        connect_and_upgrade();
        seen.pair[i] = seen.conn;
        seen.pair_fd[i] = client;
    }
}

/* Both clients of connect_pair leave; their connections are released. */
static void disconnect_pair(void)
{
    close(seen.pair_fd[0]);
    close(seen.pair_fd[1]);
    PUMP_UNTIL(seen.releases == 2);
    seen.pair[0] = seen.pair[1] = NULL;
}

/* The answers to the input of one loop iteration leave together: with io_uring in one call at the
 * end of the iteration (the first answer waits, and counts as buffered, while the second input
 * is handled); without, each as soon as its connection's input is handled, not after the other
 * ready sockets were read too (at a thousand connections, waiting for those evicts the first
 * one's state from the caches). Two clients send at once, so both sockets are ready in the same
 * iteration. */
static void test_reply_before_next_input(void)
{
    reset_seen();
    seen.echo = true;
    connect_pair();
    send_frame(WSL_OP_TEXT, "b", 1); /* client is the second one's */
    client = seen.pair_fd[0];
    send_frame(WSL_OP_TEXT, "a", 1);
    PUMP_UNTIL(seen.messages == 2);
    CHECK_EQ(seen.readable_at_second, srv.uring == NULL);
    CHECK_EQ(seen.first_buffered, srv.uring ? 3 : 0);
    uint8_t f[16];
    for (int i = 0; i < 2; i++) { /* both answers, whole */
        client = seen.pair_fd[i];
        CHECK_EQ(receive(f, sizeof f), 3);
        CHECK_EQ(f[0], 0x81);
        CHECK_EQ(f[2], i ? 'b' : 'a');
    }
    disconnect_pair();
}

/* An answer the socket has no room for keeps its place ahead of what was queued for the same
 * connection after it, in the same iteration (with io_uring: while it waited in the batch). The
 * first client's socket is full; it sends, then the second client, whose message is relayed to
 * the first. */
static void test_batch_order(void)
{
    reset_seen();
    seen.echo = seen.relay = true;
    connect_pair();
    static const uint8_t filler[1024] = {0};
    size_t filled = 0;
    for (ssize_t w; (w = send(seen.pair[0]->fd, filler, sizeof filler, MSG_DONTWAIT)) > 0;)
        filled += (size_t)w;
    client = seen.pair_fd[0];
    send_frame(WSL_OP_TEXT, "a", 1);
    client = seen.pair_fd[1];
    send_frame(WSL_OP_TEXT, "b", 1);
    PUMP_UNTIL(seen.messages == 2);
    CHECK(seen.first == seen.pair[0]); /* handled in the order sent: the case meant */
    static uint8_t got[1 << 20];
    size_t have = 0;
    for (int i = 0; i < 100000 && have < filled + 6; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        ssize_t r = read(seen.pair_fd[0], got + have, sizeof got - have);
        if (r > 0) have += (size_t)r;
    }
    CHECK_EQ(have, filled + 6);
    CHECK_MEM(got + filled, 6,
              "\x81\x01"
              "a"
              "\x81\x01"
              "b");
    disconnect_pair();
}

/* A connection destroyed while output waits for it (on the dirty list) is freed by the next
 * flush, which takes it off the list, not when its handle is closed before that flush (the
 * closing phase ends the iteration; the flush starts the next). */
static void test_gone_while_dirty(void)
{
    reset_seen();
    seen.relay = seen.relay_then_end = true;
    connect_pair();
    client = seen.pair_fd[1];
    send_frame(WSL_OP_TEXT, "b", 1);
    PUMP_UNTIL(seen.messages == 1 && seen.releases == 1);
    wsl_conn *gone = seen.pair[0];
    CHECK(gone->dirty && gone->freed); /* still allocated (ASan says so) */
    CHECK(srv.dirty == gone);
    uv_run(loop, UV_RUN_NOWAIT); /* the flush */
    CHECK(srv.dirty == NULL);
    disconnect_pair();
}

/* Input restarts the idle timeout, to within a sweep tick (a connection is moved in the list
 * only when its deadline would advance by a tick or more). Real time passes here: the loop
 * runs, and wakes at least every sweep tick. */
static uint64_t run_until_readable(uint64_t bound_ms)
{
    uint8_t b;
    uint64_t end = uv_now(loop) + bound_ms;
    while (recv(client, &b, 1, MSG_PEEK | MSG_DONTWAIT) != 1 && uv_now(loop) < end)
        uv_run(loop, UV_RUN_ONCE);
    return uv_now(loop);
}

static void test_idle_ping_follows_input(void)
{
    reset_seen();
    connect_and_upgrade();
    wsl_conn *c = seen.conn;
    uint64_t saved = srv.idle_ms, idle = 1000, tick = srv.sweep_ms;
    srv.idle_ms = idle;
    wsl_server_track(&srv, c, WSL_LIST_OPEN, idle); /* as the upgrade would have with it */
    uint64_t t0 = uv_now(loop);
    while (uv_now(loop) < t0 + 600) /* silence, 600 ms of it */
        uv_run(loop, UV_RUN_ONCE);
    send_frame(WSL_OP_TEXT, "a", 1);
    PUMP_UNTIL(seen.messages == 1);
    uint64_t t1 = uv_now(loop);
    send_frame(WSL_OP_TEXT, "b", 1); /* soon after: within a tick, the deadline may stay */
    PUMP_UNTIL(seen.messages == 2);
    uint64_t t2 = uv_now(loop);
    uint64_t at = run_until_readable(10 * idle);
    uint8_t f[16];
    CHECK_EQ(receive(f, sizeof f), 2);
    CHECK_EQ(f[0], 0x89); /* the idle ping */
    /* Not at t0 + idle: the input moved the deadline; at most a tick before t2's. */
    CHECK(at >= t1 + idle);
    CHECK(at + tick >= t2 + idle);
    srv.idle_ms = saved;
    close(client);
    PUMP_UNTIL(seen.releases == 1);
}

/* Frames sent while the connection's input is handled keep their order whether they wait in
 * the cork buffer or have to queue (a frame larger than the cork moves it into the queue). */
static void test_answer_order(void)
{
    reset_seen();
    seen.mixed = 1;
    connect_and_upgrade();
    send_frame(WSL_OP_TEXT, "go", 2);
    PUMP_UNTIL(seen.messages == 1);
    CHECK_EQ(seen.buffered, 3 + 4 + 20000 + 3);
    static uint8_t got[3 + 4 + 20000 + 3 + 1];
    size_t have = 0;
    for (int i = 0; i < 100000 && have < sizeof got - 1; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        ssize_t r = read(client, got + have, sizeof got - have);
        if (r > 0) have += (size_t)r;
    }
    CHECK_EQ(have, sizeof got - 1);
    CHECK_MEM(got, 3,
              "\x81\x01"
              "1");
    CHECK_MEM(got + 3, 4, "\x82\x7e\x4e\x20");
    CHECK_EQ(got[7], 'B');
    CHECK_EQ(got[7 + 19999], 'B');
    CHECK_MEM(got + 7 + 20000, 3,
              "\x81\x01"
              "2");
    close(client);
    PUMP_UNTIL(seen.releases == 1);

    /* A control frame, which is written at once when nothing waits, comes after them too. */
    reset_seen();
    seen.mixed = 2;
    connect_and_upgrade();
    send_frame(WSL_OP_TEXT, "go", 2);
    PUMP_UNTIL(seen.closes == 1);
    uint8_t f[16];
    CHECK_EQ(receive(f, sizeof f), 7);
    CHECK_MEM(f, 7,
              "\x81\x01"
              "1\x88\x02\x03\xe8");
    close(client);
    PUMP_UNTIL(seen.releases == 1);
}

static void test_protocol_error(void)
{
    reset_seen();
    connect_and_upgrade();
    static const uint8_t unmasked[] = {0x81, 0x02, 'h', 'i'}; /* clients must mask */
    CHECK_EQ(write(client, unmasked, sizeof unmasked), (ssize_t)sizeof unmasked);
    PUMP_UNTIL(seen.closes == 1);
    CHECK_EQ(seen.close_code, 1002);
    CHECK_EQ(seen.messages, 0);
    close(client);
    PUMP_UNTIL(seen.releases == 1);
}

/* ---- permessage-deflate -------------------------------------------------------------------- */

/* A masked client frame of any size, RSV1 on request, written whole or only its first `upto`
 * bytes (the rest is returned in *rest for later). */
static void send_big(int op, const uint8_t *payload, size_t n, bool rsv1, size_t upto,
                     uint8_t **rest, size_t *rest_len)
{
    uint8_t *buf = malloc(WSL_FRAME_HDR_MAX + n);
    if (!buf) abort();
    size_t h = wsl_frame_header_masked(buf, op, true, n, MASK);
    if (rsv1) buf[0] |= WSL_FRAME_RSV1;
    memcpy(buf + h, payload, n);
    wsl_frame_mask(buf + h, n, MASK, 0);
    size_t total = h + n, first = upto && upto < total ? upto : total;
    CHECK_EQ(write(client, buf, first), (ssize_t)first);
    if (rest) {
        *rest_len = total - first;
        *rest = malloc(*rest_len + 1);
        if (!*rest) abort();
        memcpy(*rest, buf + first, *rest_len);
    }
    free(buf);
}

/* zlib as a client uses it: raw deflate, sync flush, the tail cut off. */
static size_t client_deflate(z_stream *z, const void *in, size_t n, uint8_t *out, size_t cap)
{
    z->next_in = (Bytef *)(uintptr_t)in;
    z->avail_in = (uInt)n;
    z->next_out = out;
    z->avail_out = (uInt)cap;
    CHECK_EQ(deflate(z, Z_SYNC_FLUSH), Z_OK);
    return cap - z->avail_out - 4;
}

static size_t sample(char *out, size_t n)
{
    static const char *const w[] = {"hello", "world", "chat", "room", "message", "quick", "fox"};
    size_t len = 0;
    unsigned x = 7;
    while (len + 8 < n) {
        x = x * 1103515245u + 12345u;
        len += (size_t)sprintf(out + len, "%s ", w[(x >> 16) % 7]);
    }
    while (len < n)
        out[len++] = '.';
    return len;
}

static void test_deflate(void)
{
    reset_seen();
    seen.echo = true;
    char resp[512];
    connect_and_upgrade_with("Sec-WebSocket-Extensions: permessage-deflate; "
                             "client_max_window_bits\r\n",
                             resp, sizeof resp);
    CHECK(strstr(resp, "\r\nSec-WebSocket-Extensions: permessage-deflate; "
                       "server_no_context_takeover; client_max_window_bits=11\r\n") != NULL);
    wsl_conn *c = seen.conn;
    CHECK(wsl_conn_compressed(c));
    CHECK(c->inflater == NULL); /* nothing before the first compressed message */

    /* A compressed message in, the same compressed out. */
    static char text[30000];
    sample(text, sizeof text);
    static uint8_t z[40000], out[40000];
    z_stream zs = {0};
    CHECK_EQ(deflateInit2(&zs, 6, Z_DEFLATED, -11, 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t zn = client_deflate(&zs, text, 600, z, sizeof z);
    send_big(WSL_OP_TEXT, z, zn, true, 0, NULL, NULL);
    PUMP_UNTIL(seen.messages == 1);
    CHECK_EQ(seen.whole_len, 600);
    CHECK(seen.whole && memcmp(seen.whole, text, 600) == 0);
    size_t n = receive(out, sizeof out);
    CHECK_EQ(out[0], 0x80 | WSL_FRAME_RSV1 | WSL_OP_TEXT);
    size_t plen = out[1] & 0x7F, h = 2;
    if (plen == 126) plen = (size_t)out[2] << 8 | out[3], h = 4;
    CHECK_EQ(n, h + plen);
    z_stream in = {0};
    CHECK_EQ(inflateInit2(&in, -15), Z_OK);
    memcpy(out + n, "\x00\x00\xff\xff", 4);
    static uint8_t back[1000];
    in.next_in = out + h;
    in.avail_in = (uInt)(plen + 4);
    in.next_out = back;
    in.avail_out = sizeof back;
    CHECK_EQ(inflate(&in, Z_SYNC_FLUSH), Z_OK);
    CHECK(in.total_out == 600 && memcmp(back, text, 600) == 0);
    inflateEnd(&in);
    /* The client keeps its context: the connection keeps a 2 KiB window, no stream. */
    CHECK(c->inflater != NULL);
    size_t kept = wsl_inflater_memory(c->inflater);
    CHECK(kept >= 2048 && kept < 2048 + 128);

    /* A message arriving in two reads borrows a stream until its end. */
    seen.echo = false;
    zn = client_deflate(&zs, text + 600, 5000, z, sizeof z);
    uint8_t *rest;
    size_t rest_len;
    send_big(WSL_OP_TEXT, z, zn, true, zn / 2, &rest, &rest_len);
    for (int i = 0; i < 100; i++)
        uv_run(loop, UV_RUN_NOWAIT);
    CHECK_EQ(seen.messages, 1);
    CHECK(wsl_inflater_memory(c->inflater) > 32768);
    CHECK_EQ(write(client, rest, rest_len), (ssize_t)rest_len);
    free(rest);
    PUMP_UNTIL(seen.messages == 2);
    CHECK(seen.whole_len == 5000 && memcmp(seen.whole, text + 600, 5000) == 0);
    CHECK_EQ(wsl_inflater_memory(c->inflater), kept);

    /* A second connection without context takeover keeps nothing. */
    wsl_conn *a = c;
    int client_a = client;
    reset_seen();
    connect_and_upgrade_with("Sec-WebSocket-Extensions: permessage-deflate\r\n", resp, sizeof resp);
    CHECK(strstr(resp, "client_no_context_takeover") != NULL);
    wsl_conn *b = seen.conn;
    z_stream zb = {0};
    CHECK_EQ(deflateInit2(&zb, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zn = client_deflate(&zb, text, 3000, z, sizeof z);
    send_big(WSL_OP_BINARY, z, zn, true, 0, NULL, NULL);
    PUMP_UNTIL(seen.messages == 1);
    CHECK(seen.whole_len == 3000 && memcmp(seen.whole, text, 3000) == 0);
    CHECK(b->inflater == NULL);
    deflateEnd(&zb);

    /* One message to both: compressed once, the same frame shared by their queues. */
    wsl_msg m;
    wsl_msg_init(&m, WSL_OP_TEXT, text, sizeof text);
    CHECK_EQ(wsl_conn_send(a, &m), 0);
    CHECK_EQ(wsl_conn_send(b, &m), 0);
    CHECK_EQ(m.zmade, 1);
    CHECK(m.z[0] != NULL && m.z[0]->len > WSL_COPY_MAX && m.z[0]->len < sizeof text / 2);
    CHECK_EQ(m.z[0]->refs, 3); /* the message and two queues */
    CHECK_EQ(m.z[0]->data[0], 0x80 | WSL_FRAME_RSV1 | WSL_OP_TEXT);
    /* Short messages go plain (--deflate-min 256). */
    wsl_msg small;
    wsl_msg_init(&small, WSL_OP_TEXT, text, 255);
    CHECK_EQ(wsl_conn_send(a, &small), 0);
    CHECK_EQ(small.zmade, 0); /* nothing made */
    wsl_msg_release(&small);
    wsl_msg_release(&m);

    deflateEnd(&zs);
    close(client);
    close(client_a);
    PUMP_UNTIL(seen.releases == 2); /* both connections */
    for (int i = 0; i < 100; i++)
        uv_run(loop, UV_RUN_NOWAIT);
}

/* With --no-io-uring (a second ctest test): the same, writing with send(2). */
int main(int argc, char **argv)
{
    bool send_only = argc > 1 && strcmp(argv[1], "--no-io-uring") == 0;
    char *args[] = {"wsluad",
                    "--max-backpressure",
                    "256K",
                    "--quiet",
                    "x.lua",
                    "--deflate",
                    send_only ? "--no-io-uring" : NULL,
                    NULL};
    optind = 0;
    if (wsl_options_parse(&opt, send_only ? 7 : 6, args) != WSL_OPTIONS_RUN) return 1;
    wsl_log_set_level(WSL_LOG_WARN);
    signal(SIGPIPE, SIG_IGN); /* as the server does: a write to a closed peer is an error */
    loop = uv_default_loop();
    uv_prepare_t check_flushed;
    uv_prepare_init(loop, &check_flushed);
    uv_prepare_start(&check_flushed, before_poll);
    CHECK_EQ(wsl_server_init(&srv, loop, &opt), 0);
    wsl_server_set_events(&srv, &stub, NULL);

    test_echo_and_close_handshake();
    test_backpressure_and_drain();
    test_reply_before_next_input();
    test_batch_order();
    test_gone_while_dirty();
    test_answer_order();
    test_idle_ping_follows_input();
    test_protocol_error();
    test_deflate();
    reset_seen();

    CHECK_EQ(unflushed_at_poll, 0);
    uv_close((uv_handle_t *)&check_flushed, NULL);
    for (int i = 0; i < 10; i++) /* the close callbacks that free the connections */
        uv_run(loop, UV_RUN_NOWAIT);
    wsl_server_free(&srv);
    wsl_buf_pool_drain();
    TEST_MAIN_END();
}
