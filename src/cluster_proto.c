/* The pure half of the cluster link: --redis URL parsing, channel names, the envelope of
 * wsluad's own messages and the commands scripts may not send. Everything here works on bytes
 * handed in and writes into caller memory; nothing allocates. */
#include "cluster_proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes [p, p+n) into out (cap bytes with the NUL). 0, or a negative value: -1 a bad
 * escape, -2 too long, -3 a NUL byte. */
static int pct_decode(const char *p, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '%') {
            if (i + 2 >= n) return -1;
            int hi = hexval(p[i + 1]);
            int lo = hexval(p[i + 2]);
            if (hi < 0 || lo < 0) return -1;
            ch = (char)(hi << 4 | lo);
            if (!ch) return -3;
            i += 2;
        }
        if (o + 1 >= cap) return -2;
        out[o++] = ch;
    }
    out[o] = 0;
    return 0;
}

/* A decimal number of 1..10 digits at most max, all of [p, p+n). -1 when it is not one. */
static long long decimal(const char *p, size_t n, long long max)
{
    if (n == 0 || n > 10) return -1;
    long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v <= max ? v : -1;
}

static bool host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
}

static int parse_unix(const char *rest, wsl_cluster_addr *out, char *err, size_t errlen)
{
    /* unix:///path is the same as unix:/path; unix://host/path names a host we cannot reach. */
    if (rest[0] == '/' && rest[1] == '/') {
        rest += 2;
        if (rest[0] != '/')
            return fail(err, errlen, "a unix socket URL takes a path: unix:/path/to/redis.sock");
    }
    if (rest[0] != '/')
        return fail(err, errlen, "the unix socket path must be absolute: unix:/path/to/redis.sock");
    if (rest[1] == 0) return fail(err, errlen, "the unix socket path is empty");
    size_t n = strlen(rest);
    if (n >= sizeof out->path)
        return fail(err, errlen, "the unix socket path is %zu bytes long, the limit is %zu", n,
                    sizeof out->path - 1);
    out->unix_socket = true;
    memcpy(out->path, rest, n + 1);
    return 0;
}

int wsl_cluster_parse_url(const char *url, wsl_cluster_addr *out, char *err, size_t errlen)
{
    static const char expected[] =
        "expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] or unix:/path/to/redis.sock";
    memset(out, 0, sizeof *out);
    if (err && errlen) err[0] = 0;
    if (!url || !*url) return fail(err, errlen, "empty URL: %s", expected);

    if (strncasecmp(url, "unix:", 5) == 0) return parse_unix(url + 5, out, err, errlen);
    if (strncasecmp(url, "rediss://", 9) == 0)
        return fail(err, errlen, "rediss:// (Redis over TLS) is not supported: %s", expected);
    if (strncasecmp(url, "redis://", 8) != 0) {
        const char *colon = strchr(url, ':');
        if (colon && colon[1] == '/' && colon[2] == '/')
            return fail(err, errlen, "unsupported scheme \"%.*s\": %s",
                        (int)(colon - url > 20 ? 20 : colon - url), url, expected);
        return fail(err, errlen, "no scheme: %s", expected);
    }
    const char *rest = url + 8;
    if (strpbrk(rest, "?#"))
        return fail(err, errlen, "query strings and fragments (?, #) are not supported: %s",
                    expected);

    /* The last '@' ends the user part, so a password with an unencoded '@' or '/' still works. */
    const char *at = strrchr(rest, '@');
    if (at) {
        const char *colon = memchr(rest, ':', (size_t)(at - rest));
        if (!colon)
            return fail(err, errlen,
                        "the part before '@' must be :PASSWORD or USER:PASSWORD (a user alone "
                        "cannot log in)");
        int r = pct_decode(rest, (size_t)(colon - rest), out->user, sizeof out->user);
        if (r == -1) return fail(err, errlen, "bad percent escape in the user name");
        if (r == -2)
            return fail(err, errlen, "the user name is longer than %zu bytes",
                        sizeof out->user - 1);
        if (r == -3) return fail(err, errlen, "the user name contains a NUL byte");
        r = pct_decode(colon + 1, (size_t)(at - colon - 1), out->password, sizeof out->password);
        if (r == -1) return fail(err, errlen, "bad percent escape in the password");
        if (r == -2)
            return fail(err, errlen, "the password is longer than %zu bytes",
                        sizeof out->password - 1);
        if (r == -3) return fail(err, errlen, "the password contains a NUL byte");
        if (!out->password[0]) return fail(err, errlen, "the password after ':' is empty");
        rest = at + 1;
    }

    /* Host, then an optional port, up to the path. */
    const char *slash = strchr(rest, '/');
    size_t alen = slash ? (size_t)(slash - rest) : strlen(rest);
    const char *host = rest, *port = NULL;
    size_t hlen, plen = 0;
    if (alen > 0 && rest[0] == '[') {
        const char *close = memchr(rest, ']', alen);
        if (!close) return fail(err, errlen, "an IPv6 address must be closed with ']'");
        host = rest + 1;
        hlen = (size_t)(close - host);
        const char *after = close + 1;
        if (after < rest + alen) {
            if (*after != ':')
                return fail(err, errlen, "expected ':PORT' or '/DB' after the IPv6 address");
            port = after + 1;
            plen = (size_t)(rest + alen - port);
        }
        char tmp[64];
        struct in6_addr a6;
        if (hlen == 0 || hlen >= sizeof tmp)
            return fail(err, errlen, "bad IPv6 address in brackets");
        memcpy(tmp, host, hlen);
        tmp[hlen] = 0;
        if (inet_pton(AF_INET6, tmp, &a6) != 1)
            return fail(err, errlen, "bad IPv6 address \"%s\"", tmp);
    } else {
        const char *colon = memchr(rest, ':', alen);
        hlen = colon ? (size_t)(colon - rest) : alen;
        if (colon) {
            port = colon + 1;
            plen = (size_t)(rest + alen - port);
        }
        if (hlen == 0) return fail(err, errlen, "no host: %s", expected);
        for (size_t i = 0; i < hlen; i++)
            if (!host_char(host[i]))
                return fail(err, errlen,
                            "invalid character '%c' in the host (a name, an IPv4 address or "
                            "[IPv6])",
                            host[i] >= 32 && host[i] < 127 ? host[i] : '?');
    }
    if (hlen >= sizeof out->host)
        return fail(err, errlen, "the host name is longer than %zu bytes", sizeof out->host - 1);
    memcpy(out->host, host, hlen);
    out->host[hlen] = 0;

    out->port = 6379;
    if (port) {
        long long p = decimal(port, plen, 65535);
        if (p < 1)
            return fail(err, errlen, "bad port \"%.*s\": expected a number from 1 to 65535",
                        (int)(plen > 20 ? 20 : plen), port);
        out->port = (uint16_t)p;
    }

    if (slash && slash[1]) {
        size_t dlen = strlen(slash + 1);
        long long db = decimal(slash + 1, dlen, 2147483647);
        if (db < 0)
            return fail(err, errlen, "bad database \"%.*s\": expected /DB, a number such as /0",
                        (int)(dlen > 20 ? 20 : dlen), slash + 1);
        out->db = (int)db;
    }
    return 0;
}

const char *wsl_cluster_addr_str(const wsl_cluster_addr *a, char *out, size_t n)
{
    if (!n) return out;
    if (a->unix_socket) {
        snprintf(out, n, "unix:%s", a->path);
        return out;
    }
    bool v6 = strchr(a->host, ':') != NULL;
    int w = snprintf(out, n, "%s%s%s:%u", v6 ? "[" : "", a->host, v6 ? "]" : "", a->port);
    if (a->db && w >= 0 && (size_t)w < n) snprintf(out + w, n - (size_t)w, "/%d", a->db);
    return out;
}

int wsl_cluster_check_prefix(const char *prefix, char *err, size_t errlen)
{
    if (err && errlen) err[0] = 0;
    size_t n = prefix ? strlen(prefix) : 0;
    if (n == 0) return fail(err, errlen, "the Redis prefix is empty");
    if (n > WSL_CLUSTER_PREFIX_MAX)
        return fail(err, errlen, "the Redis prefix is %zu bytes long, the limit is %d", n,
                    WSL_CLUSTER_PREFIX_MAX);
    for (size_t i = 0; i < n; i++) {
        char c = prefix[i];
        if (!host_char(c) && c != ':')
            return fail(err, errlen,
                        "the Redis prefix may hold letters, digits, '.', '_', '-' and ':' only");
    }
    return 0;
}

wsl_chan_kind wsl_channel_parse(const char *prefix, size_t prefix_len, const char *ch, size_t n,
                                const char **name, size_t *name_len, uint32_t *node)
{
    if (n <= prefix_len || memcmp(ch, prefix, prefix_len) != 0 || ch[prefix_len] != ':')
        return WSL_CHAN_OTHER;
    const char *r = ch + prefix_len + 1;
    size_t rn = n - prefix_len - 1;
    if (rn >= 6 && memcmp(r, "topic:", 6) == 0) {
        *name = r + 6;
        *name_len = rn - 6;
        return WSL_CHAN_TOPIC;
    }
    if (rn == 9 && memcmp(r, "broadcast", 9) == 0) return WSL_CHAN_BROADCAST;
    if (rn > 5 && memcmp(r, "node:", 5) == 0) {
        /* Exactly the spelling we subscribe to: decimal without a leading zero. */
        if (r[5] == '0') return WSL_CHAN_OTHER;
        long long v = decimal(r + 5, rn - 5, WSL_CLUSTER_NODE_MAX);
        if (v < 1) return WSL_CHAN_OTHER;
        *node = (uint32_t)v;
        return WSL_CHAN_NODE;
    }
    return WSL_CHAN_OTHER;
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

void wsl_envelope_encode(uint8_t out[WSL_ENVELOPE_SIZE], const wsl_envelope *e)
{
    memcpy(out, WSL_ENVELOPE_MAGIC, 4);
    out[4] = WSL_ENVELOPE_VERSION;
    out[5] = e->opcode;
    out[6] = out[7] = 0;
    put64(out + 8, e->origin);
    put64(out + 16, e->except);
    put64(out + 24, e->target);
}

int wsl_envelope_decode(const void *p, size_t n, wsl_envelope *e)
{
    const uint8_t *b = p;
    if (n < 4 || memcmp(b, WSL_ENVELOPE_MAGIC, 4) != 0) return 0;
    if (n < WSL_ENVELOPE_SIZE || b[4] != WSL_ENVELOPE_VERSION || (b[5] != 1 && b[5] != 2))
        return -EBADMSG;
    e->opcode = b[5];
    e->origin = get64(b + 8);
    e->except = get64(b + 16);
    e->target = get64(b + 24);
    return 1;
}

static bool arg_is(const char *a, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(a, word, n) == 0;
}

const char *wsl_cluster_command_refused(int argc, const char *const *argv, const size_t *lens)
{
    static const char *const words[] = {
        "SUBSCRIBE",    "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE",
        "SUNSUBSCRIBE", "MONITOR",    "SYNC",       "PSYNC",       "REPLCONF",
        "QUIT",         "RESET",      "HELLO",      "SELECT",
    };
    if (argc < 1 || !argv || !argv[0] || lens[0] == 0) return "empty command";
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (arg_is(argv[0], lens[0], words[i])) {
            if (i < 6) return "wsluad manages the subscriptions of the cluster itself";
            if (i == 13)
                return "SELECT would change the database for every script: use /DB in "
                       "the --redis URL";
            return "this command would break the shared command connection";
        }
    if (arg_is(argv[0], lens[0], "CLIENT") && argc > 1 && arg_is(argv[1], lens[1], "REPLY"))
        return "CLIENT REPLY would break the shared command connection";
    return NULL;
}
