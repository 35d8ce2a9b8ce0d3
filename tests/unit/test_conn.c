/* The connection layer on its own (src/conn.c with the server's loop machinery): a stub listens
 * to its events and a socketpair plays the client, so the upgrade, echo, the close handshake and
 * its lingering close, back-pressure and drain are checked without Lua or TCP. */
#include <getopt.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "server.h"
#include "test.h"

static const uint8_t MASK[4] = {0x11, 0x22, 0x33, 0x44};

/* What the stub saw. */
static struct {
    int opens, messages, closes, drains, releases;
    unsigned close_code;
    char last[256];
    wsl_conn *conn;
    bool echo; /* answer each message with itself */
} seen;

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
    if (seen.echo) {
        wsl_msg m;
        wsl_msg_init(&m, binary ? WSL_OP_BINARY : WSL_OP_TEXT, data, len);
        CHECK_EQ(wsl_conn_send(c, &m), 0);
        wsl_msg_release(&m);
    }
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

static void connect_and_upgrade(void)
{
    int sv[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    client = sv[1];
    int small = 4096; /* so that output really queues up when the client does not read */
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(client, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    CHECK(wsl_conn_new(&srv, sv[0], NULL) != NULL);
    static const char req[] =
        "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n";
    CHECK_EQ(write(client, req, sizeof req - 1), (ssize_t)(sizeof req - 1));
    PUMP_UNTIL(seen.opens == 1);
    uint8_t resp[512];
    size_t n = receive(resp, sizeof resp - 1);
    resp[n] = '\0';
    CHECK(strstr((char *)resp, "HTTP/1.1 101") == (char *)resp);
    CHECK(strstr((char *)resp, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") != NULL);
    CHECK_STR(wsl_conn_path(seen.conn), "/chat");
}

static void test_echo_and_close_handshake(void)
{
    memset(&seen, 0, sizeof seen);
    seen.echo = true;
    connect_and_upgrade();

    send_frame(WSL_OP_TEXT, "hello", 5);
    PUMP_UNTIL(seen.messages == 1);
    CHECK_STR(seen.last, "hello");
    uint8_t f[64];
    size_t n = receive(f, sizeof f);
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
    memset(&seen, 0, sizeof seen);
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

static void test_protocol_error(void)
{
    memset(&seen, 0, sizeof seen);
    connect_and_upgrade();
    static const uint8_t unmasked[] = {0x81, 0x02, 'h', 'i'}; /* clients must mask */
    CHECK_EQ(write(client, unmasked, sizeof unmasked), (ssize_t)sizeof unmasked);
    PUMP_UNTIL(seen.closes == 1);
    CHECK_EQ(seen.close_code, 1002);
    CHECK_EQ(seen.messages, 0);
    close(client);
    PUMP_UNTIL(seen.releases == 1);
}

int main(void)
{
    char *argv[] = {"wsluad", "--max-backpressure", "256K", "--quiet", "x.lua", NULL};
    optind = 0;
    if (wsl_options_parse(&opt, 5, argv) != WSL_OPTIONS_RUN) return 1;
    wsl_log_set_level(WSL_LOG_WARN);
    loop = uv_default_loop();
    CHECK_EQ(wsl_server_init(&srv, loop, &opt), 0);
    wsl_server_set_events(&srv, &stub, NULL);

    test_echo_and_close_handshake();
    test_backpressure_and_drain();
    test_protocol_error();

    for (int i = 0; i < 10; i++) /* the close callbacks that free the connections */
        uv_run(loop, UV_RUN_NOWAIT);
    wsl_server_free(&srv);
    wsl_buf_pool_drain();
    TEST_MAIN_END();
}
