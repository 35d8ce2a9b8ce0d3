/* The connection layer over TLS (src/conn.c on src/tls.c): a stub listens to the events and an
 * OpenSSL client on a socketpair plays the browser, with a certificate this test makes. Checked
 * on the wire, where integration tests cannot look: frames queued for a connection leave as one
 * TLS record, conn:buffered counts the ciphertext the kernel has not taken, close_notify comes
 * before the FIN, and input OpenSSL read ahead is delivered without the socket saying so. */
#include <getopt.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "conn.h"
#include "server.h"
#include "test.h"
#include "uring.h"

static const uint8_t MASK[4] = {0x0a, 0x0b, 0x0c, 0x0d};

static struct {
    int opens, messages, closes, drains, releases;
    unsigned close_code;
    size_t bytes;
    wsl_conn *conn;
    bool echo;
    wsl_conn *relay_from, *relay_to; /* test_batch_order: also send from's messages to to, */
    const uint8_t *answer;           /* and answer to's with this, */
    size_t answer_len;               /* not with an echo */
    wsl_conn *first;                 /* whose message came first */
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
    seen.bytes += len;
    if (!seen.first) seen.first = c;
    if (c == seen.relay_from) {
        wsl_msg m;
        wsl_msg_init(&m, WSL_OP_TEXT, data, len);
        CHECK_EQ(wsl_conn_send(seen.relay_to, &m), 0);
        wsl_msg_release(&m);
    }
    if (c == seen.relay_to && seen.answer) {
        data = seen.answer;
        len = seen.answer_len;
        binary = true;
    }
    if (seen.echo) {
        wsl_msg m;
        wsl_msg_init(&m, binary ? WSL_OP_BINARY : WSL_OP_TEXT, data, len);
        CHECK_EQ(wsl_conn_send(c, &m), 0);
        wsl_msg_release(&m);
    }
}

static void ev_close(void *ud, wsl_conn *c, unsigned code, const char *reason, size_t len)
{
    (void)ud, (void)c, (void)reason, (void)len;
    seen.closes++;
    seen.close_code = code;
}

static void ev_drain(void *ud, wsl_conn *c)
{
    (void)ud, (void)c;
    seen.drains++;
}

static void ev_release(void *ud, wsl_conn *c)
{
    (void)ud, (void)c;
    seen.releases++;
    seen.conn = NULL;
}

static const wsl_conn_events stub = {.open = ev_open,
                                     .message = ev_message,
                                     .close = ev_close,
                                     .drain = ev_drain,
                                     .release = ev_release};

static uv_loop_t *loop;
static wsl_server srv;
static wsl_options opt;
static wsl_tls_ctx *server_ctx;
static SSL_CTX *client_ctx;
static SSL *client;
static int client_fd;

/* Everything the server wrote is with the kernel before the loop polls: its flush, a prepare
 * handle started before this one (libuv runs the last started first), leaves neither a dirty
 * connection nor a write in the batch. Counted for every iteration of every test. */
static int unflushed_at_poll;

static void before_poll(uv_prepare_t *h)
{
    (void)h;
    if (srv.dirty || (srv.uring && wsl_uring_queued(srv.uring))) unflushed_at_poll++;
}

#define PUMP_UNTIL(cond)                                                                           \
    do {                                                                                           \
        for (int i_ = 0; i_ < 20000 && !(cond); i_++)                                              \
            uv_run(loop, UV_RUN_NOWAIT);                                                           \
        CHECK(cond);                                                                               \
    } while (0)

/* A self-signed P-256 certificate and its key, written to dir/cert.pem and dir/key.pem. */
static void make_pair(const char *dir, char *cert, char *key, size_t cap)
{
    snprintf(cert, cap, "%s/cert.pem", dir);
    snprintf(key, cap, "%s/key.pem", dir);
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    CHECK(pk && x);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 0x5eed);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pk);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"127.0.0.1", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    CHECK(X509_sign(x, pk, EVP_sha256()) > 0);
    FILE *f = fopen(cert, "w");
    CHECK(f && PEM_write_X509(f, x));
    fclose(f);
    f = fopen(key, "w");
    CHECK(f && PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL));
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(pk);
}

/* Drive the client until op succeeds (the server runs in between); returns op's result. */
static int client_step(int (*op)(SSL *, void *, int), void *buf, int n)
{
    for (int i = 0; i < 20000; i++) {
        int r = op(client, buf, n);
        if (r > 0) return r;
        int e = SSL_get_error(client, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) return r;
        uv_run(loop, UV_RUN_NOWAIT);
    }
    return -1;
}

static int op_read(SSL *s, void *buf, int n)
{
    return SSL_read(s, buf, n);
}

static int op_write(SSL *s, void *buf, int n)
{
    return SSL_write(s, buf, n);
}

static void client_write(const void *p, size_t n)
{
    CHECK_EQ(client_step(op_write, (void *)p, (int)n), (int)n);
}

static void send_frame(int op, const void *payload, size_t n)
{
    static uint8_t buf[WSL_FRAME_HDR_MAX + 65536];
    size_t h = wsl_frame_header_masked(buf, op, true, n, MASK);
    memcpy(buf + h, payload, n);
    wsl_frame_mask(buf + h, n, MASK, 0);
    client_write(buf, h + n);
}

/* Exactly n decrypted bytes from the server. */
static void client_read_exact(uint8_t *out, size_t n)
{
    size_t got = 0;
    while (got < n) {
        int r = client_step(op_read, out + got, (int)(n - got));
        CHECK(r > 0);
        if (r <= 0) return;
        got += (size_t)r;
    }
}

/* A connection over a socketpair (sndbuf: the server's send and the client's receive buffer,
 * 0 for the defaults), the TLS handshake done. */
static void connect_tls(int sndbuf)
{
    int sv[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    client_fd = sv[1];
    if (sndbuf) {
        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
        setsockopt(client_fd, SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof sndbuf);
    }
    CHECK(wsl_conn_new(&srv, sv[0], server_ctx) != NULL);
    client = SSL_new(client_ctx);
    SSL_set_fd(client, client_fd);
    SSL_set_connect_state(client);
    for (int i = 0; i < 20000 && SSL_do_handshake(client) != 1; i++)
        uv_run(loop, UV_RUN_NOWAIT);
}

static void connect_and_upgrade(int sndbuf)
{
    connect_tls(sndbuf);
    CHECK(SSL_is_init_finished(client));
    static const char req[] =
        "GET /tls HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n";
    client_write(req, sizeof req - 1);
    PUMP_UNTIL(seen.opens == 1);
    char resp[512];
    int n = client_step(op_read, resp, sizeof resp - 1);
    CHECK(n > 0);
    resp[n > 0 ? n : 0] = '\0';
    CHECK(strstr(resp, "HTTP/1.1 101") == resp);
    CHECK(seen.conn && seen.conn->secure);
}

static void disconnect(void)
{
    SSL_free(client);
    client = NULL;
    close(client_fd);
    PUMP_UNTIL(seen.releases == 1);
}

/* The TLS records waiting on the client's socket, counted by type without taking them. */
static int peek_records(int type, size_t *payload)
{
    static uint8_t buf[1 << 20];
    ssize_t n = recv(client_fd, buf, sizeof buf, MSG_PEEK);
    int count = 0;
    *payload = 0;
    for (ssize_t off = 0; n > 0 && off + 5 <= n;) {
        size_t len = (size_t)buf[off + 3] << 8 | buf[off + 4];
        if (buf[off] == type) count++, *payload += len;
        off += 5 + (ssize_t)len;
    }
    return count;
}

/* Run the loop until application data reaches the client: how many records are waiting, and
 * in *payload what they carry (the frames, plus a content type and a tag each). */
static int pump_until_records(size_t *payload)
{
    int records = 0;
    for (int i = 0; i < 20000 && !records; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        records = peek_records(23, payload); /* application_data */
    }
    return records;
}

static void test_one_record_per_flush(void)
{
    memset(&seen, 0, sizeof seen);
    connect_and_upgrade(0);
    wsl_conn *c = seen.conn;
    /* 50 frames queued in one go (as a broadcast round leaves them): one SSL_write, so one
     * record on the wire, not 50. */
    for (int i = 0; i < 50; i++) {
        char text[16];
        int n = snprintf(text, sizeof text, "frame %02d", i);
        wsl_msg m;
        wsl_msg_init(&m, WSL_OP_TEXT, text, (size_t)n);
        CHECK_EQ(wsl_conn_send(c, &m), 0);
        wsl_msg_release(&m);
    }
    size_t payload = 0;
    CHECK_EQ(pump_until_records(&payload), 1);
    CHECK_EQ(payload, 50 * (2 + 8) + 17); /* the frames, the content type and the AEAD tag */
    uint8_t got[50 * 10];
    client_read_exact(got, sizeof got);
    CHECK(memcmp(got,
                 "\x81\x08"
                 "frame 00",
                 10) == 0);
    CHECK(memcmp(got + 490,
                 "\x81\x08"
                 "frame 49",
                 10) == 0);
    disconnect();
}

static void test_buffered_counts_ciphertext(void)
{
    memset(&seen, 0, sizeof seen);
    connect_and_upgrade(4096);
    wsl_conn *c = seen.conn;
    static uint8_t payload[150000];
    memset(payload, 'z', sizeof payload);
    wsl_msg m;
    wsl_msg_init(&m, WSL_OP_BINARY, payload, sizeof payload);
    CHECK_EQ(wsl_conn_send(c, &m), 0);
    wsl_msg_release(&m);
    uv_run(loop, UV_RUN_NOWAIT); /* the flush: the socket takes a few KiB of a 64 KiB batch */
    size_t tls = wsl_conn_tls_pending(c);
    CHECK(tls > 0);                       /* ciphertext made and kept */
    CHECK(c->out.bytes > 0);              /* frames not encrypted yet: one batch at a time */
    CHECK(tls <= WSL_TLS_BATCH + 4 * 22); /* at most one batch, in 16 KiB records */
    CHECK_EQ(wsl_conn_buffered(c), c->out.bytes + tls);
    CHECK(wsl_conn_buffered(c) > sizeof payload - 64 * 1024);
    /* The client reads it all: everything is handed over, nothing kept. */
    static uint8_t got[sizeof payload + 16];
    client_read_exact(got, sizeof payload + 4);
    CHECK_EQ(got[0], 0x82);
    CHECK_EQ(got[1], 127);
    CHECK(memcmp(got + 10, payload, sizeof payload - 6) == 0);
    PUMP_UNTIL(wsl_conn_buffered(c) == 0);
    CHECK_EQ(c->out.bytes, 0);
    CHECK_EQ(wsl_conn_tls_pending(c), 0);
    disconnect();
}

static void test_read_ahead_input_is_delivered(void)
{
    memset(&seen, 0, sizeof seen);
    connect_and_upgrade(0);
    /* 166 frames of 400 bytes, each in a record of its own, sent before the server runs: more
     * than its 64 KiB read buffer. Reading ahead, OpenSSL takes the last records from the
     * socket along with the ones that fill the buffer, so the socket has nothing more to
     * announce: what OpenSSL holds must be delivered all the same. */
    static uint8_t frame[400];
    size_t h = wsl_frame_header_masked(frame, WSL_OP_BINARY, true, sizeof frame - 8, MASK);
    CHECK_EQ(h, 8);
    memset(frame + h, 'r', sizeof frame - h);
    wsl_frame_mask(frame + h, sizeof frame - h, MASK, 0);
    for (int i = 0; i < 166; i++)
        CHECK_EQ(SSL_write(client, frame, sizeof frame), (int)sizeof frame);
    seen.echo = true; /* the answers to what OpenSSL held leave before the loop polls */
    PUMP_UNTIL(seen.messages == 166);
    CHECK_EQ(seen.bytes, 166 * (sizeof frame - 8));
    static uint8_t back[166 * (sizeof frame - 8 + 4)]; /* each echo with a 4-byte header */
    size_t got = 0;
    while (got < sizeof back) {
        int r = client_step(op_read, back + got, (int)(sizeof back - got));
        CHECK(r > 0);
        if (r <= 0) break;
        got += (size_t)r;
    }
    CHECK_EQ(got, sizeof back);
    disconnect();
}

/* The same for plain requests, read at most 12 KiB ahead and answered one at a time: the rest
 * waits in OpenSSL while the answers go out, and is read once they are. */
static void test_pipelined_requests(void)
{
    memset(&seen, 0, sizeof seen);
    connect_tls(0);
    /* 40 records of 10 requests: 13 KiB, past what the server reads ahead for a connection. */
    static const char req[] = "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n";
    enum { N = 400, PER = 10 };
    char ten[PER * sizeof req];
    for (int i = 0; i < PER; i++)
        memcpy(ten + i * (sizeof req - 1), req, sizeof req - 1);
    for (int i = 0; i < N / PER; i++)
        CHECK_EQ(SSL_write(client, ten, PER * (int)(sizeof req - 1)), PER * (int)(sizeof req - 1));
    static char got[N * 200];
    size_t len = 0;
    int answers = 0;
    for (int i = 0; i < 200000 && answers < N; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        int r = SSL_read(client, got + len, (int)(sizeof got - 1 - len));
        if (r <= 0) continue;
        len += (size_t)r;
        got[len] = '\0';
        answers = 0;
        for (const char *p = got; (p = strstr(p, "HTTP/1.1 404 ")); p++)
            answers++;
    }
    CHECK_EQ(answers, N);
    SSL_free(client);
    client = NULL;
    close(client_fd);
    PUMP_UNTIL(seen.releases == 1);
}

/* Replies to the connection being handled go through the cork, encrypted at once: each echo
 * arrives whole, and the echoes of three frames that came in one record leave in one record. */
static void test_echo_through_the_cork(void)
{
    memset(&seen, 0, sizeof seen);
    seen.echo = true;
    connect_and_upgrade(0);
    for (int i = 0; i < 60; i++) {
        char text[16];
        int n = snprintf(text, sizeof text, "echo %02d", i);
        send_frame(WSL_OP_TEXT, text, (size_t)n);
        uint8_t got[2 + sizeof text];
        client_read_exact(got, 2 + (size_t)n);
        CHECK(got[0] == 0x81 && got[1] == n && memcmp(got + 2, text, (size_t)n) == 0);
    }
    uint8_t three[3 * (WSL_FRAME_HDR_MAX + 5)];
    size_t len = 0;
    for (int i = 0; i < 3; i++) {
        size_t h = wsl_frame_header_masked(three + len, WSL_OP_TEXT, true, 5, MASK);
        memcpy(three + len + h, i == 1 ? "three" : "one++", 5);
        wsl_frame_mask(three + len + h, 5, MASK, 0);
        len += h + 5;
    }
    client_write(three, len);
    size_t payload = 0;
    CHECK_EQ(pump_until_records(&payload), 1);
    CHECK_EQ(payload, 3 * (2 + 5) + 17);
    uint8_t got[3 * 7];
    client_read_exact(got, sizeof got);
    CHECK(memcmp(got + 7, "\x81\x05three", 7) == 0);
    CHECK_EQ(seen.messages, 63);
    disconnect();
}

/* Two connections' input in one loop iteration: both answers (one record each) wait in the
 * write batch for one io_uring_enter. The first connection's socket is small and its answer
 * large: its record goes in part, the rest is kept, and what the second connection relays to it
 * in the same iteration follows that rest. */
static void test_batch_order(void)
{
    memset(&seen, 0, sizeof seen);
    seen.echo = true;
    connect_and_upgrade(4096);
    SSL *ca = client;
    int fa = client_fd;
    wsl_conn *a = seen.conn;
    seen.opens = 0;
    connect_and_upgrade(0);
    SSL *cb = client;
    int fb = client_fd;
    seen.relay_from = seen.conn;
    seen.relay_to = a;
    static uint8_t big[12000], got[sizeof big + 4];
    memset(big, 't', sizeof big);
    seen.answer = big;
    seen.answer_len = sizeof big;
    /* An idle iteration: epoll forgets the sockets it last reported (level-triggered, it keeps
     * them listed until a wait finds them not ready), so it reports them in the order sent. */
    uv_run(loop, UV_RUN_NOWAIT);
    client = ca, client_fd = fa;
    send_frame(WSL_OP_TEXT, "a", 1);
    client = cb, client_fd = fb;
    send_frame(WSL_OP_TEXT, "b", 1);
    PUMP_UNTIL(seen.messages == 2);
    CHECK(seen.first == a); /* handled in the order sent: the case meant */
    client_read_exact(got, 3);
    CHECK(memcmp(got,
                 "\x81\x01"
                 "b",
                 3) == 0);
    client = ca, client_fd = fa;
    client_read_exact(got, sizeof got);
    CHECK(got[0] == 0x82 && got[1] == 126 && (got[2] << 8 | got[3]) == sizeof big);
    CHECK(memcmp(got + 4, big, sizeof big) == 0);
    client_read_exact(got, 3);
    CHECK(memcmp(got,
                 "\x81\x01"
                 "b",
                 3) == 0);
    disconnect();
    seen.releases = 0;
    client = cb, client_fd = fb;
    disconnect();
}

static void test_close_notify_before_fin(void)
{
    memset(&seen, 0, sizeof seen);
    connect_and_upgrade(0);
    send_frame(WSL_OP_CLOSE, "\x03\xe8", 2);
    PUMP_UNTIL(seen.closes == 1);
    CHECK_EQ(seen.close_code, 1000);
    uint8_t f[4];
    client_read_exact(f, sizeof f);
    CHECK_EQ(f[0], 0x88);
    CHECK(memcmp(f + 2, "\x03\xe8", 2) == 0);
    /* Then close_notify (a clean end of TLS), then the FIN. */
    char x;
    int r = client_step(op_read, &x, 1);
    CHECK_EQ(r, 0);
    CHECK_EQ(SSL_get_error(client, r), SSL_ERROR_ZERO_RETURN);
    ssize_t n = -1;
    for (int i = 0; i < 20000 && n < 0; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        n = recv(client_fd, &x, 1, 0);
    }
    CHECK_EQ(n, 0);
    disconnect();
}

int main(void)
{
    char *argv[] = {"wsluad", "--max-backpressure", "1M", "--quiet", "x.lua", NULL};
    optind = 0;
    if (wsl_options_parse(&opt, 5, argv) != WSL_OPTIONS_RUN) return 1;
    wsl_log_set_level(WSL_LOG_WARN);
    char dir[] = "/tmp/wsluad-test-tls-XXXXXX", cert[128], key[128], why[512];
    CHECK(mkdtemp(dir) != NULL);
    make_pair(dir, cert, key, sizeof cert);
    CHECK_EQ(wsl_tls_ctx_new(&server_ctx, cert, key, why, sizeof why), 0);
    client_ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(client_ctx, SSL_VERIFY_NONE, NULL);
    loop = uv_default_loop();
    uv_prepare_t check_flushed;
    uv_prepare_init(loop, &check_flushed);
    uv_prepare_start(&check_flushed, before_poll);
    CHECK_EQ(wsl_server_init(&srv, loop, &opt), 0);
    wsl_server_set_events(&srv, &stub, NULL);

    test_one_record_per_flush();
    test_buffered_counts_ciphertext();
    test_read_ahead_input_is_delivered();
    test_pipelined_requests();
    test_close_notify_before_fin();
    test_echo_through_the_cork();
    test_batch_order();

    CHECK_EQ(unflushed_at_poll, 0);
    uv_close((uv_handle_t *)&check_flushed, NULL);
    for (int i = 0; i < 10; i++) /* the close callbacks that free the connections */
        uv_run(loop, UV_RUN_NOWAIT);
    wsl_tls_ctx_free(server_ctx);
    SSL_CTX_free(client_ctx);
    wsl_server_free(&srv);
    wsl_buf_pool_drain();
    wsl_tls_cleanup();
    unlink(cert);
    unlink(key);
    rmdir(dir);
    TEST_MAIN_END();
}
