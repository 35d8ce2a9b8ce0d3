/* TLS through one loop-wide BIO of our own. OpenSSL reads ciphertext with read(2) straight into
 * its record buffer (read-ahead: one system call per ~16 KiB), only while the poll says the
 * socket is readable; what it writes leaves in one write(2) per call (a lone record straight
 * from OpenSSL's buffer, several gathered in a loop-wide one), the rest kept per connection
 * until the kernel takes it. So a connection's queued frames are coalesced and encrypted by one
 * SSL_write, OpenSSL's own buffers are released between calls (SSL_MODE_RELEASE_BUFFERS), and an
 * idle connection holds nothing but its SSL. */
#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "error.h"
#include "metrics.h"
#include "uring.h"

#define MAX_IOV 64

/* The BIO every SSL reads and writes through (as uSockets does: one per loop, not one per
 * connection, whose ~200 bytes each idle connection would keep). `cur` is the connection whose
 * OpenSSL call is in progress; every entry point below sets it first. Single-threaded. */
static BIO_METHOD *method;
static BIO *bio;
static wsl_tls *cur;
static uint8_t *cbuf; /* ciphertext the call in progress made */
static size_t clen, ccap;
static bool direct;      /* the SSL_write in progress makes one record, with nothing kept ahead */
static wsl_uring *batch; /* wsl_tls_write_batched: where a direct record goes, and for whom */
static void *batch_owner;
static uint8_t *pbuf; /* WSL_TLS_BATCH bytes: queued frames gathered for one SSL_write */
static char errbuf[256];

/* ---- OpenSSL's record buffers ------------------------------------------------------------------
 * SSL_MODE_RELEASE_BUFFERS has OpenSSL take a record buffer of about 17 KiB from malloc and give
 * it back around every read and every write, so that idle connections hold none. glibc serves
 * that size from its general bins: two malloc/free pairs cost about 1,400 instructions per
 * echoed message. A stack of such blocks kept by the loop makes each a pop and a push. The
 * blocks live in one mapping, so a free knows them by their address (pages are touched, and so
 * resident, only as deep as the stack was ever used); other sizes, other threads and a stack
 * run dry go to malloc as before. Not under AddressSanitizer, which must see every buffer.
 * Letting busy connections keep their buffers instead saves OpenSSL about 340 instructions per
 * echo, but was no faster in interleaved runs at 100 connections (0.1-0.3 us more CPU per echo):
 * each connection's buffers are out of the cache, where the stack's top block always is. */
#if defined(__SANITIZE_ADDRESS__)
#define RECBUF_POOL 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RECBUF_POOL 0
#endif
#endif
#ifndef RECBUF_POOL
#define RECBUF_POOL 1
#endif
#define RECBUF_MIN  16384       /* smaller requests are not record buffers */
#define RECBUF_SIZE (18 * 1024) /* OpenSSL asks for 16 KiB of plaintext plus its overhead */
#define RECBUF_N    32

static uint8_t *arena; /* RECBUF_N blocks; mapped once, for the life of the process */
static void *stack[RECBUF_N];
static int depth;
static _Thread_local bool owner; /* on the loop's thread: the only one that takes from the stack */

static bool in_arena(const void *p)
{
    const uint8_t *b = p;
    return arena && b >= arena && b < arena + (size_t)RECBUF_N * RECBUF_SIZE;
}

/* Every record OpenSSL writes builds its header and body with a WPACKET, which takes a 40-byte
 * block from malloc for each level of nesting and frees it before the write returns: four
 * malloc/free pairs per record, about 450 instructions. Those blocks, and only those (they are
 * known by the file OpenSSL names, crypto/packet.c, whose blocks never outlive the call), come
 * from a small stack of their own; long-lived blocks of the same size would drain it. */
#define SMALL_SIZE 64
#define SMALL_N    64
static _Alignas(16) uint8_t small[SMALL_N][SMALL_SIZE];
static void *small_stack[SMALL_N];
static int small_depth;
static const char *packet_file; /* OpenSSL's name for crypto/packet.c, once seen */

static bool in_small(const void *p)
{
    const uint8_t *b = p, *s = (const uint8_t *)small;
    return b >= s && b < s + sizeof small;
}

/* Whether file is crypto/packet.c: a string compared once, its address after that. */
static bool is_packet(const char *file)
{
    if (file == packet_file) return file != NULL;
    if (packet_file || !file) return false;
    size_t n = strlen(file);
    if (n < 9 || strcmp(file + n - 9, "/packet.c") != 0) return false;
    packet_file = file;
    return true;
}

static void *ossl_malloc(size_t n, const char *file, int line)
{
    (void)line;
    if (n > RECBUF_MIN && n <= RECBUF_SIZE && depth && owner) return stack[--depth];
    if (n <= SMALL_SIZE && small_depth && owner && is_packet(file))
        return small_stack[--small_depth];
    return malloc(n);
}

static void ossl_free(void *p, const char *file, int line)
{
    (void)file, (void)line;
    if (!p) return; /* OpenSSL frees many NULLs: each would cost a call into libc */
    if (in_small(p))
        small_stack[small_depth++] = p;
    else if (in_arena(p))
        stack[depth++] = p;
    else
        free(p);
}

static void *ossl_realloc(void *p, size_t n, const char *file, int line)
{
    (void)file, (void)line;
    size_t have = in_small(p) ? SMALL_SIZE : in_arena(p) ? RECBUF_SIZE : 0;
    if (!have) return realloc(p, n);
    if (n <= have) return p;
    void *q = malloc(n);
    if (q) {
        memcpy(q, p, have);
        ossl_free(p, file, line);
    }
    return q;
}

void wsl_tls_global_init(void)
{
    if (!RECBUF_POOL || arena) return;
    void *m = mmap(NULL, (size_t)RECBUF_N * RECBUF_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return;
    owner = true;
    /* Refused once OpenSSL has allocated anything: then malloc it is, as before. */
    if (!CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free)) {
        munmap(m, (size_t)RECBUF_N * RECBUF_SIZE);
        return;
    }
    arena = m;
    for (depth = 0; depth < RECBUF_N; depth++)
        stack[depth] = arena + (size_t)(RECBUF_N - 1 - depth) * RECBUF_SIZE;
    for (small_depth = 0; small_depth < SMALL_N; small_depth++)
        small_stack[small_depth] = small[small_depth];
}

/* ---- the BIO ------------------------------------------------------------------------------ */

static int bio_write(BIO *b, const char *p, int n)
{
    (void)b;
    if (n <= 0) return 0;
    /* A lone record joins the write batch (wsl_tls_write_batched), or goes to the kernel from
     * OpenSSL's buffer, not copied first; what the kernel does not take, or an error, is left to
     * emit after the call, as for the rest. */
    if (direct && !clen && batch && wsl_uring_add(batch, cur->fd, p, (size_t)n, batch_owner)) {
        cur->inflight = 1;
        return n;
    }
    if (direct && !clen) {
        ssize_t w = write(cur->fd, p, (size_t)n);
        if (w > 0) {
            wsl_metrics.bytes_sent += (size_t)w;
            if (w == n) return n;
            p += w;
            n -= (int)w;
        }
    }
    if (clen + (size_t)n > ccap) {
        size_t cap = ccap ? ccap : 32768;
        while (cap < clen + (size_t)n)
            cap *= 2;
        uint8_t *nb = realloc(cbuf, cap);
        if (!nb) return -1;
        cbuf = nb;
        ccap = cap;
    }
    memcpy(cbuf + clen, p, (size_t)n);
    clen += (size_t)n;
    return n;
}

static int bio_read(BIO *b, char *p, int n)
{
    wsl_tls *t = cur;
    BIO_clear_retry_flags(b);
    if (!t->readable || n <= 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    ssize_t r = read(t->fd, p, (size_t)n);
    if (r > 0) {
        wsl_metrics.bytes_received += (size_t)r;
        if (r < n) t->readable = 0; /* the kernel had no more: the poll says when it has */
        return (int)r;
    }
    t->readable = 0;
    if (r == 0) {
        t->eof = 1;
        return 0;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        BIO_set_retry_read(b);
        return -1;
    }
    t->err = errno;
    return -1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b, (void)num, (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0; /* writes are never buffered here */
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static int setup(void)
{
    if (bio) return 0;
    if (!pbuf && !(pbuf = malloc(WSL_TLS_BATCH))) return WSL_ENOMEM;
    if (!method) {
        method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "wsluad socket");
        if (!method || !BIO_meth_set_write(method, bio_write) ||
            !BIO_meth_set_read(method, bio_read) || !BIO_meth_set_ctrl(method, bio_ctrl) ||
            !BIO_meth_set_create(method, bio_create))
            return WSL_ENOMEM;
    }
    bio = BIO_new(method);
    return bio ? 0 : WSL_ENOMEM;
}

void wsl_tls_cleanup(void)
{
    BIO_free(bio);
    BIO_meth_free(method);
    free(cbuf);
    free(pbuf);
    bio = NULL;
    method = NULL;
    cbuf = pbuf = NULL;
    clen = ccap = 0;
}

/* OpenSSL's reason for the oldest error queued, into errbuf; the queue is emptied. */
static const char *ssl_reason(const char *fallback)
{
    unsigned long e = ERR_get_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(errbuf, sizeof errbuf, "%s", r ? r : fallback);
    ERR_clear_error();
    return errbuf;
}

const char *wsl_tls_error(void)
{
    return errbuf[0] ? errbuf : "TLS error";
}

/* ---- contexts ------------------------------------------------------------------------------ */

/* ALPN: http/1.1 or nothing; a client that offers protocols but not that one is refused with
 * no_application_protocol (RFC 7301 section 3.2). */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned inlen, void *arg)
{
    static const unsigned char h11[] = "\x08http/1.1";
    (void)ssl, (void)arg;
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, h11, sizeof h11 - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* An encrypted key would make OpenSSL ask for its pass phrase on the terminal: refuse instead. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

/* Opening is not enough: a directory opens, and only reading it says what it is (EISDIR). */
static int readable_file(const char *opt, const char *path, char *why, size_t whycap)
{
    FILE *f = fopen(path, "r");
    int e = 0;
    if (!f)
        e = errno;
    else if (getc(f) == EOF && ferror(f))
        e = errno;
    if (f) fclose(f);
    if (e) snprintf(why, whycap, "%s %s: %s", opt, path, strerror(e));
    return -e;
}

/* Whether the error queue holds PEM's "bad password read": the key is encrypted and
 * no_passphrase refused to ask for it. Anything else is a file that holds no key at all. */
static bool key_is_encrypted(void)
{
    unsigned long e;
    while ((e = ERR_get_error()))
        if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_BAD_PASSWORD_READ)
            return true;
    return false;
}

int wsl_tls_ctx_new(wsl_tls_ctx **out, const char *cert, const char *key, char *why, size_t whycap)
{
    *out = NULL;
    int r = readable_file("--tls-cert", cert, why, whycap);
    if (r == 0) r = readable_file("--tls-key", key, why, whycap);
    if (r != 0) return r;
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(why, whycap, "TLS: %s", ssl_reason("out of memory"));
        return WSL_ENOMEM;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_read_ahead(ctx, 1);
    /* Resumption by stateless tickets only: a server-side cache would hold up to 20,000
     * sessions for five minutes whatever the connections do. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);

    r = -EINVAL;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        snprintf(why, whycap, "--tls-cert %s: no usable PEM certificate in it (%s)", cert,
                 ssl_reason("unreadable"));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_LIB(e) == ERR_LIB_X509 && (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH ||
                                               ERR_GET_REASON(e) == X509_R_KEY_TYPE_MISMATCH))
            snprintf(why, whycap, "--tls-key %s: does not match the certificate in %s", key, cert);
        else if (key_is_encrypted())
            snprintf(why, whycap,
                     "--tls-key %s: no usable PEM private key in it (it is encrypted; encrypted "
                     "keys are not supported)",
                     key);
        else
            snprintf(why, whycap, "--tls-key %s: no usable PEM private key in it (no key found)",
                     key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(why, whycap, "--tls-key %s: does not match the certificate in %s", key, cert);
        goto fail;
    }
    ERR_clear_error();
    *out = ctx;
    return 0;
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return r;
}

void wsl_tls_ctx_free(wsl_tls_ctx *ctx)
{
    SSL_CTX_free(ctx);
}

const char *wsl_tls_ctx_serial(const wsl_tls_ctx *ctx, char *buf, size_t cap)
{
    buf[0] = '\0';
    X509 *x = ctx ? SSL_CTX_get0_certificate(ctx) : NULL;
    BIGNUM *bn = x ? ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL) : NULL;
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    if (hex) snprintf(buf, cap, "%s", hex);
    OPENSSL_free(hex);
    BN_free(bn);
    return buf;
}

/* ---- connections --------------------------------------------------------------------------- */

int wsl_tls_init(wsl_tls *t, wsl_tls_ctx *ctx, int fd)
{
    memset(t, 0, sizeof *t);
    t->fd = fd;
    if (setup() != 0 || !(t->ssl = SSL_new(ctx))) {
        ERR_clear_error();
        return WSL_ENOMEM;
    }
    BIO_up_ref(bio); /* SSL_set_bio takes this one and a second of its own (rbio == wbio) */
    SSL_set_bio(t->ssl, bio, bio);
    SSL_set_accept_state(t->ssl);
    return 0;
}

void wsl_tls_free(wsl_tls *t)
{
    cur = t;
    SSL_free(t->ssl);
    free(t->out);
    t->ssl = NULL;
    t->out = NULL;
    t->out_len = t->out_off = 0;
}

bool wsl_tls_established(const wsl_tls *t)
{
    return t->done_hs || SSL_is_init_finished(t->ssl);
}

/* Keep n bytes of ciphertext after what is kept already, or, ahead, before it. */
static int keep(wsl_tls *t, const uint8_t *p, size_t n, bool ahead)
{
    size_t have = wsl_tls_pending(t);
    if (have + n > UINT32_MAX) return WSL_ENOMEM;
    if (t->out_off) {
        memmove(t->out, t->out + t->out_off, have);
        t->out_off = 0;
        t->out_len = (uint32_t)have;
    }
    uint8_t *nb = realloc(t->out, have + n);
    if (!nb) return WSL_ENOMEM;
    if (ahead) memmove(nb + n, nb, have);
    memcpy(ahead ? nb : nb + have, p, n);
    t->out = nb;
    t->out_len = (uint32_t)(have + n);
    return 0;
}

/* Write what is kept. 0 once all of it is with the kernel (the buffer is freed), -EAGAIN when
 * the kernel takes no more, another negative errno when the socket failed. */
static int send_kept(wsl_tls *t)
{
    while (wsl_tls_pending(t)) {
        ssize_t w = write(t->fd, t->out + t->out_off, wsl_tls_pending(t));
        if (w < 0) {
            if (errno == EINTR) continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
        }
        wsl_metrics.bytes_sent += (size_t)w;
        t->out_off += (uint32_t)w;
    }
    free(t->out);
    t->out = NULL;
    t->out_len = t->out_off = 0;
    return 0;
}

/* What the OpenSSL call just made for t: to the kernel in one write when nothing is kept ahead
 * of it, the rest kept. 0, or a negative code (the connection is broken). */
static int emit(wsl_tls *t)
{
    size_t n = clen, done = 0;
    clen = 0;
    if (!n) return 0;
    if (!wsl_tls_pending(t) && !t->inflight) {
        ssize_t w = write(t->fd, cbuf, n);
        if (w > 0) {
            done = (size_t)w;
            wsl_metrics.bytes_sent += done;
        } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            return -errno;
        }
    }
    return done < n ? keep(t, cbuf + done, n - done, false) : 0;
}

ssize_t wsl_tls_read(wsl_tls *t, void *buf, size_t cap)
{
    size_t got = 0;
    ssize_t r = -EAGAIN;
    cur = t;
    /* Noted before a read that may fail: after a fatal error SSL_is_init_finished is false. */
    if (!t->done_hs && SSL_is_init_finished(t->ssl)) t->done_hs = 1;
    while (got < cap) {
        size_t n = 0;
        if (SSL_read_ex(t->ssl, (uint8_t *)buf + got, cap - got, &n) == 1) {
            got += n;
            t->done_hs = 1;
            /* Neither OpenSSL nor the socket has more: a call to find that out would set up a
             * read buffer for nothing (and an idle connection would keep it). */
            if (!t->readable && !SSL_has_pending(t->ssl)) break;
            continue;
        }
        int e = SSL_get_error(t->ssl, 0);
        if (e == SSL_ERROR_WANT_READ)
            r = -EAGAIN;
        else if (e == SSL_ERROR_ZERO_RETURN || (t->eof && !t->err)) /* close_notify, or EOF */
            r = 0;
        else if (t->err)
            r = -t->err;
        else {
            ssl_reason(e == SSL_ERROR_SYSCALL ? "broken" : "TLS error");
            r = -EPROTO;
        }
        /* The error queue is the thread's: a failure left in it would make the next
         * connection's SSL_get_error report it. It is empty whenever no call failed. */
        ERR_clear_error();
        break;
    }
    t->readable = 0;
    /* OpenSSL releases its read buffer after application data only: one that a handshake
     * record, or a read that found nothing, left empty goes now. */
    if (!got && !SSL_has_pending(t->ssl)) SSL_free_buffers(t->ssl);
    int w = emit(t);      /* the handshake's answers, alerts */
    t->full = got == cap; /* stopped by the caller's buffer: OpenSSL may hold more */
    if (got) {
        if (r != -EAGAIN) t->ended = 1; /* reported by the next read */
        return (ssize_t)got;
    }
    if (r == -EPROTO) t->failed = 1;
    return w < 0 && r == -EAGAIN ? w : r;
}

bool wsl_tls_more(const wsl_tls *t)
{
    return t->full || t->ended;
}

int wsl_tls_write(wsl_tls *t, const void *p, size_t n)
{
    const uint8_t *s = p;
    cur = t;
    while (n > 0) {
        size_t len = n < WSL_TLS_BATCH ? n : WSL_TLS_BATCH, w = 0;
        /* Larger writes make several records, gathered into one write(2) by emit. */
        direct = len <= SSL3_RT_MAX_PLAIN_LENGTH && !wsl_tls_pending(t) && !t->inflight;
        int ok = SSL_write_ex(t->ssl, s, len, &w);
        direct = false;
        if (ok != 1) {
            clen = 0;
            ssl_reason("cannot encrypt");
            t->failed = 1;
            return -EPROTO;
        }
        s += w;
        n -= w;
        int r = emit(t);
        if (r) {
            t->failed = 1; /* records are lost: the stream cannot go on */
            snprintf(errbuf, sizeof errbuf, "%s", strerror(-r));
            return r;
        }
    }
    return 0;
}

_Static_assert(WSL_TLS_RECORD_EXTRA == SSL3_RT_MAX_ENCRYPTED_OVERHEAD, "see tls.h");

int wsl_tls_write_batched(wsl_tls *t, const void *p, size_t n, wsl_uring *u, void *for_whom)
{
    batch = u;
    batch_owner = for_whom;
    int r = wsl_tls_write(t, p, n);
    batch = NULL;
    return r;
}

int wsl_tls_unsent(wsl_tls *t, const uint8_t *p, size_t n)
{
    return keep(t, p, n, true);
}

int wsl_tls_send(wsl_tls *t, wsl_queue *q)
{
    if (t->failed) return -EPROTO; /* see wsl_tls_write */
    for (;;) {
        int r = send_kept(t);
        if (r) return r;
        if (q->bytes == 0) return 0;
        struct iovec iov[MAX_IOV];
        int n = wsl_queue_iov(q, iov, MAX_IOV);
        const uint8_t *src = iov[0].iov_base;
        size_t len = iov[0].iov_len;
        if (n > 1 && len < WSL_TLS_BATCH) { /* coalesce: one SSL_write for all of them */
            len = 0;
            for (int i = 0; i < n && len < WSL_TLS_BATCH; i++) {
                size_t k =
                    iov[i].iov_len < WSL_TLS_BATCH - len ? iov[i].iov_len : WSL_TLS_BATCH - len;
                memcpy(pbuf + len, iov[i].iov_base, k);
                len += k;
            }
            src = pbuf;
        } else if (len > WSL_TLS_BATCH) {
            len = WSL_TLS_BATCH;
        }
        r = wsl_tls_write(t, src, len);
        if (r) return r;
        wsl_queue_consume(q, len);
    }
}

int wsl_tls_close_notify(wsl_tls *t)
{
    if (t->notified || t->failed || !SSL_is_init_finished(t->ssl)) return 0;
    t->notified = 1;
    cur = t;
    ERR_clear_error();
    SSL_shutdown(t->ssl); /* 0: sent, the peer's not seen yet; nothing to wait for */
    ERR_clear_error();
    return emit(t);
}
