/* Command-line parsing with getopt_long. Every option is listed once in the usage text below,
 * which a test compares with the man page and with what the parser really accepts. */
#include "options.h"

#include "cluster_proto.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster_proto.h"

#define WSL_STR_(x) #x
#define WSL_STR(x)  WSL_STR_(x)

static const char usage[] =
    "Usage: wsluad [OPTIONS] [SCRIPT]\n"
    "A WebSocket server whose behaviour is a Lua script (default: chat.lua).\n"
    "\n"
    "Options:\n"
    "  -l, --listen HOST:PORT       address to listen on (default 127.0.0.1:8080;\n"
    "                               IPv6 as [::1]:8080; :PORT or *:PORT: every IPv4\n"
    "                               interface; port 0 picks a free port); repeatable\n"
    "      --tls-listen HOST:PORT   address to listen on with TLS (wss://, https://);\n"
    "                               repeatable; needs --tls-cert and --tls-key\n"
    "      --tls-cert FILE          certificate for TLS (PEM: the server's first, then\n"
    "                               its chain); SIGHUP reads it again\n"
    "      --tls-key FILE           its private key (PEM, unencrypted)\n"
    "      --static DIR             serve files from DIR for plain HTTP GETs\n"
    "                               (default: the bundled chat page; 'none' turns it off)\n"
    "      --max-message BYTES      largest message a client may send (default 1M)\n"
    "      --max-backpressure BYTES close a client with more unsent bytes queued (default 1M)\n"
    "      --deflate                compress messages for clients that offer permessage-deflate\n"
    "      --deflate-min BYTES      send shorter messages uncompressed (default 256)\n"
    "      --max-connections N      answer 503 past N connections (default: from the\n"
    "                               open-file limit)\n"
    "      --handshake-timeout SEC  close connections that have not upgraded (default 10)\n"
    "      --idle-timeout SEC       ping a silent client, close it if still silent after\n"
    "                               as long again (default 60; 0 disables)\n"
    "      --handler-timeout SEC    stop a Lua handler running longer (default 2; 0 disables)\n"
    "      --max-request-body BYTES largest body of a plain HTTP request (default 1M)\n"
    "      --request-timeout SEC    answer 408 to a plain request whose body takes longer, 504\n"
    "                               to one whose answer does (default 30; 0 disables)\n"
    "      --trust-proxy CIDRS      peers in these comma-separated ranges (127.0.0.1/32,::1)\n"
    "                               may name the client: X-Forwarded-For, X-Real-IP and\n"
    "                               X-Forwarded-Proto (default: no one)\n"
    "      --lua-memory BYTES       memory cap of the Lua state (default 512M; 0 disables)\n"
    "      --reload                 reload the script when its file changes (SIGHUP always does)\n"
    "      --log-queries            log query strings, which may hold tokens (default: the\n"
    "                               path only)\n"
    "      --log-format FORMAT      text (default) or json: one JSON object per line\n"
    "      --no-io-uring            write to each socket with its own send(2) rather than\n"
    "                               all of an iteration's with one io_uring_enter(2)\n"
    "      --check                  load the script, report errors and exit\n"
    "      --workers N              serve with N worker processes sharing the port; 'auto':\n"
    "                               one per online core (default 1; above 1 needs --redis)\n"
    "      --redis URL              connect this node to a cluster through Redis\n"
    "                               (redis://[:PASSWORD@]HOST[:PORT][/DB] or unix:PATH)\n"
    "      --redis-prefix NAME      start of every Redis key and channel (default wsluad)\n"
    "      --metrics HOST:PORT      serve Prometheus metrics at http://HOST:PORT/metrics, a\n"
    "                               listener of its own (with --workers, worker N on\n"
    "                               PORT+N-1)\n"
    "  -q, --quiet                  log only warnings and errors\n"
    "  -v, --verbose                log every connection and debug details\n"
    "      --version                print the version and exit\n"
    "  -h, --help                   print this help and exit\n"
    "\n"
    "Sizes accept K, M and G suffixes (powers of 1024); durations are seconds (0.5 is fine).\n"
    "Exit status: 0 clean shutdown, 1 script failed to load, 2 usage error, 3 cannot listen\n"
    "(2 also for a --static directory, a certificate or a key that cannot be used).\n";

enum {
    OPT_TLS_LISTEN = 256,
    OPT_TLS_CERT,
    OPT_TLS_KEY,
    OPT_STATIC,
    OPT_MAX_MESSAGE,
    OPT_MAX_BACKPRESSURE,
    OPT_DEFLATE,
    OPT_DEFLATE_MIN,
    OPT_MAX_CONNECTIONS,
    OPT_HANDSHAKE_TIMEOUT,
    OPT_IDLE_TIMEOUT,
    OPT_HANDLER_TIMEOUT,
    OPT_MAX_REQUEST_BODY,
    OPT_REQUEST_TIMEOUT,
    OPT_TRUST_PROXY,
    OPT_LUA_MEMORY,
    OPT_RELOAD,
    OPT_LOG_QUERIES,
    OPT_LOG_FORMAT,
    OPT_NO_IO_URING,
    OPT_CHECK,
    OPT_WORKERS,
    OPT_REDIS,
    OPT_REDIS_PREFIX,
    OPT_METRICS,
    OPT_VERSION,
};

static const struct option longopts[] = {
    {"listen", required_argument, NULL, 'l'},
    {"tls-listen", required_argument, NULL, OPT_TLS_LISTEN},
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
    {"static", required_argument, NULL, OPT_STATIC},
    {"max-message", required_argument, NULL, OPT_MAX_MESSAGE},
    {"max-backpressure", required_argument, NULL, OPT_MAX_BACKPRESSURE},
    {"deflate", no_argument, NULL, OPT_DEFLATE},
    {"deflate-min", required_argument, NULL, OPT_DEFLATE_MIN},
    {"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
    {"handshake-timeout", required_argument, NULL, OPT_HANDSHAKE_TIMEOUT},
    {"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
    {"handler-timeout", required_argument, NULL, OPT_HANDLER_TIMEOUT},
    {"max-request-body", required_argument, NULL, OPT_MAX_REQUEST_BODY},
    {"request-timeout", required_argument, NULL, OPT_REQUEST_TIMEOUT},
    {"trust-proxy", required_argument, NULL, OPT_TRUST_PROXY},
    {"lua-memory", required_argument, NULL, OPT_LUA_MEMORY},
    {"reload", no_argument, NULL, OPT_RELOAD},
    {"log-queries", no_argument, NULL, OPT_LOG_QUERIES},
    {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
    {"no-io-uring", no_argument, NULL, OPT_NO_IO_URING},
    {"check", no_argument, NULL, OPT_CHECK},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"redis", required_argument, NULL, OPT_REDIS},
    {"redis-prefix", required_argument, NULL, OPT_REDIS_PREFIX},
    {"metrics", required_argument, NULL, OPT_METRICS},
    {"quiet", no_argument, NULL, 'q'},
    {"verbose", no_argument, NULL, 'v'},
    {"version", no_argument, NULL, OPT_VERSION},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

bool wsl_parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9') return false;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno) return false;
    unsigned shift = 0;
    switch (*end) {
    case '\0':
        break;
    case 'k':
    case 'K':
        shift = 10;
        end++;
        break;
    case 'm':
    case 'M':
        shift = 20;
        end++;
        break;
    case 'g':
    case 'G':
        shift = 30;
        end++;
        break;
    default:
        return false;
    }
    if (*end == 'B' || *end == 'b') end++;
    /* At most 2^53: exact as a Lua integer, a double and a JavaScript number alike. */
    if (*end != '\0' || v > (WSL_SIZE_MAX >> shift)) return false;
    *out = (uint64_t)v << shift;
    return true;
}

const char *wsl_listen_list(const wsl_options *o, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < o->nlisten && n < cap; i++) {
        const wsl_listen_opt *l = &o->listen[i];
        bool v6 = strchr(l->host, ':') != NULL;
        int w = snprintf(buf + n, cap - n, "%s%s%s%s:%d%s", i ? ", " : "", v6 ? "[" : "", l->host,
                         v6 ? "]" : "", l->port, l->tls ? " (TLS)" : "");
        if (w < 0) break;
        n += (size_t)w;
    }
    return buf;
}

static bool parse_seconds(const char *s, double *out)
{
    /* Decimal only: strtod would take "0x10", "1e3" and "inf" as well. */
    if (s[strspn(s, "0123456789.")] != '\0') return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v) || v < 0 || v > 1e6) return false;
    *out = v;
    return true;
}

/* HOST:PORT, [IPV6]:PORT, or :PORT and *:PORT for every IPv4 interface (written 0.0.0.0, so the
 * address is the same whatever the resolver makes of "*"). */
static bool parse_address(const char *s, char *out_host, size_t cap, int *out_port)
{
    const char *colon;
    const char *host = s;
    size_t hostlen;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':') return false;
        hostlen = (size_t)(close - s - 1);
        if (hostlen == 0) return false;
        host = s + 1;
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) return false;
        hostlen = (size_t)(colon - s);
        if (hostlen == 0 || (hostlen == 1 && s[0] == '*')) {
            host = "0.0.0.0";
            hostlen = strlen(host);
        }
    }
    if (hostlen >= cap) return false;
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end != '\0' || port < 0 || port > 65535) return false;
    memcpy(out_host, host, hostlen);
    out_host[hostlen] = '\0';
    *out_port = (int)port;
    return true;
}

/* "auto" is the number of online cores (at least 1, at most WSL_MAX_WORKERS). */
static bool parse_workers(const char *s, int *out)
{
    long n;
    if (strcmp(s, "auto") == 0) {
        n = sysconf(_SC_NPROCESSORS_ONLN);
        n = n < 1 ? 1 : n > WSL_MAX_WORKERS ? WSL_MAX_WORKERS : n;
    } else {
        char *end;
        errno = 0;
        n = strtol(s, &end, 10);
        if (errno || end == s || *end != '\0' || n < 1 || n > WSL_MAX_WORKERS) return false;
    }
    *out = (int)n;
    return true;
}

static int bad(const char *what, const char *value)
{
    fprintf(stderr, "wsluad: invalid %s: '%s'\nTry 'wsluad --help' for more information.\n", what,
            value);
    return WSL_OPTIONS_USAGE;
}

/* A value that a module checked and explained. */
static int bad_because(const char *option, const char *why)
{
    fprintf(stderr, "wsluad: invalid %s: %s\nTry 'wsluad --help' for more information.\n", option,
            why);
    return WSL_OPTIONS_USAGE;
}

int wsl_options_parse(wsl_options *o, int argc, char **argv)
{
    *o = (wsl_options){
        .script = "chat.lua",
        .max_message = 1u << 20,
        .max_backpressure = 1u << 20,
        .deflate_min = 256, /* see tests/bench/deflate-min.c and README, Compression */
        .lua_memory = 512u << 20,
        .handshake_timeout = 10,
        .idle_timeout = 60,
        .handler_timeout = 2,
        .max_request_body = 1u << 20,
        .request_timeout = 30,
        .workers = 1,
        .redis_prefix = "wsluad",
    };

    opterr = 0;
    optind = 1;
    bool deflate_min = false; /* given */
    int c;
    while ((c = getopt_long(argc, argv, ":l:qvh", longopts, NULL)) != -1) {
        uint64_t n;
        switch (c) {
        case 'l':
        case OPT_TLS_LISTEN: {
            if (o->nlisten == WSL_MAX_LISTEN)
                return bad("listen address (at most " WSL_STR(WSL_MAX_LISTEN) " in all)", optarg);
            wsl_listen_opt *l = &o->listen[o->nlisten++];
            l->tls = c == OPT_TLS_LISTEN;
            if (!parse_address(optarg, l->host, sizeof l->host, &l->port))
                return bad("listen address (want HOST:PORT)", optarg);
            break;
        }
        case OPT_TLS_CERT:
            o->tls_cert = optarg;
            break;
        case OPT_TLS_KEY:
            o->tls_key = optarg;
            break;
        case OPT_STATIC:
            o->static_off = strcmp(optarg, "none") == 0;
            o->static_dir = o->static_off ? NULL : optarg;
            break;
        case OPT_MAX_MESSAGE:
            if (!wsl_parse_size(optarg, &o->max_message) || o->max_message == 0 ||
                o->max_message > (1ull << 31))
                return bad("--max-message (1 byte to 2G)", optarg);
            break;
        case OPT_MAX_BACKPRESSURE:
            if (!wsl_parse_size(optarg, &o->max_backpressure) || o->max_backpressure == 0)
                return bad("--max-backpressure", optarg);
            break;
        case OPT_NO_IO_URING:
            o->no_io_uring = true;
            break;
        case OPT_DEFLATE:
            o->deflate = true;
            break;
        case OPT_DEFLATE_MIN:
            if (!wsl_parse_size(optarg, &o->deflate_min)) return bad("--deflate-min", optarg);
            deflate_min = true;
            break;
        case OPT_MAX_CONNECTIONS:
            if (!wsl_parse_size(optarg, &n) || n == 0 || n > 10000000)
                return bad("--max-connections", optarg);
            o->max_connections = (unsigned)n;
            break;
        case OPT_HANDSHAKE_TIMEOUT:
            if (!parse_seconds(optarg, &o->handshake_timeout))
                return bad("--handshake-timeout", optarg);
            break;
        case OPT_IDLE_TIMEOUT:
            if (!parse_seconds(optarg, &o->idle_timeout)) return bad("--idle-timeout", optarg);
            break;
        case OPT_HANDLER_TIMEOUT:
            if (!parse_seconds(optarg, &o->handler_timeout))
                return bad("--handler-timeout", optarg);
            break;
        case OPT_MAX_REQUEST_BODY:
            if (!wsl_parse_size(optarg, &o->max_request_body) || o->max_request_body > (1u << 30))
                return bad("--max-request-body (0 to 1G)", optarg);
            break;
        case OPT_REQUEST_TIMEOUT:
            if (!parse_seconds(optarg, &o->request_timeout))
                return bad("--request-timeout", optarg);
            break;
        case OPT_TRUST_PROXY: {
            char why[256];
            if (wsl_proxy_parse(optarg, o->trust, WSL_PROXY_MAX_RANGES, &o->ntrust, why,
                                sizeof why) != 0)
                return bad_because("--trust-proxy", why);
            break;
        }
        case OPT_LUA_MEMORY:
            if (!wsl_parse_size(optarg, &o->lua_memory)) return bad("--lua-memory", optarg);
            break;
        case OPT_RELOAD:
            o->reload = true;
            break;
        case OPT_LOG_QUERIES:
            o->log_queries = true;
            break;
        case OPT_LOG_FORMAT:
            if (strcmp(optarg, "text") != 0 && strcmp(optarg, "json") != 0)
                return bad("--log-format (text or json)", optarg);
            o->log_json = strcmp(optarg, "json") == 0;
            break;
        case OPT_CHECK:
            o->check = true;
            break;
        case OPT_WORKERS:
            if (!parse_workers(optarg, &o->workers))
                return bad("--workers (1 to " WSL_STR(WSL_MAX_WORKERS) ", or auto)", optarg);
            break;
        case OPT_REDIS: {
            wsl_cluster_addr addr;
            char why[256];
            if (wsl_cluster_parse_url(optarg, &addr, why, sizeof why) != 0)
                return bad_because("--redis", why);
            o->redis_url = optarg;
            break;
        }
        case OPT_REDIS_PREFIX: {
            char why[256];
            if (wsl_cluster_check_prefix(optarg, why, sizeof why) != 0)
                return bad_because("--redis-prefix", why);
            o->redis_prefix = optarg;
            break;
        }
        case OPT_METRICS:
            if (!parse_address(optarg, o->metrics_host, sizeof o->metrics_host, &o->metrics_port))
                return bad("--metrics address (want HOST:PORT)", optarg);
            o->metrics = true;
            break;
        case 'q':
            o->verbosity = -1;
            break;
        case 'v':
            o->verbosity = 1;
            break;
        case OPT_VERSION:
            printf("wsluad %s\n", WSLUAD_VERSION);
            return WSL_OPTIONS_EXIT;
        case 'h':
            fputs(usage, stdout);
            return WSL_OPTIONS_EXIT;
        case ':':
            return bad("option (missing argument)", argv[optind - 1]);
        default:
            return bad("option", argv[optind - 1]);
        }
    }
    if (optind < argc) o->script = argv[optind++];
    if (optind < argc) return bad("argument (only one SCRIPT)", argv[optind]);
    if (o->nlisten == 0) {
        o->listen[0] = (wsl_listen_opt){.host = "127.0.0.1", .port = 8080};
        o->nlisten = 1;
    }
    bool tls = false;
    for (size_t i = 0; i < o->nlisten; i++)
        tls |= o->listen[i].tls;
    const char *why = tls && (!o->tls_cert || !o->tls_key)
                          ? "--tls-listen needs --tls-cert FILE and --tls-key FILE"
                      : !tls && o->tls_cert ? "--tls-cert is for --tls-listen, which is not given"
                      : !tls && o->tls_key  ? "--tls-key is for --tls-listen, which is not given"
                      : deflate_min && !o->deflate
                          ? "--deflate-min is for --deflate, which is not given"
                          : NULL;
    if (why) {
        fprintf(stderr, "wsluad: %s\nTry 'wsluad --help' for more information.\n", why);
        return WSL_OPTIONS_USAGE;
    }
    if (o->workers > 1 && !o->redis_url) {
        fprintf(stderr,
                "wsluad: --workers %d needs --redis: each worker is a separate process with its "
                "own Lua state,\nand without Redis the rooms of one worker would not see those "
                "of the others.\nTry 'wsluad --help' for more information.\n",
                o->workers);
        return WSL_OPTIONS_USAGE;
    }
    return WSL_OPTIONS_RUN;
}
