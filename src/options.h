/* The command line turned into one settings struct, plus the --help text. Knows nothing else. */
#ifndef WSL_OPTIONS_H
#define WSL_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "proxy.h"

#define WSL_MAX_LISTEN 16

/* One address to listen on: -l (plain) or --tls-listen. */
typedef struct wsl_listen_opt {
    char host[256]; /* without brackets for IPv6; ":PORT" and "*:PORT" give 0.0.0.0 */
    int port;       /* 0: any free port (the log says which) */
    bool tls;
} wsl_listen_opt;

/* Filled by wsl_options_parse; strings point into argv or into listen[], never freed. */
typedef struct wsl_options {
    wsl_listen_opt listen[WSL_MAX_LISTEN]; /* as given, plain and TLS in order; when neither
                                              -l nor --tls-listen is: 127.0.0.1:8080, plain */
    size_t nlisten;
    const char *tls_cert; /* --tls-cert and --tls-key: PEM files, for the TLS listeners */
    const char *tls_key;
    const char *script;     /* as given; main.c resolves it */
    const char *static_dir; /* NULL: the bundled pages */
    bool static_off;        /* --static none */
    uint64_t max_message;
    uint64_t max_backpressure;
    bool deflate;             /* --deflate: accept permessage-deflate offers */
    uint64_t deflate_min;     /* messages shorter than this are sent uncompressed */
    uint64_t lua_memory;      /* 0: no cap */
    double handshake_timeout; /* seconds; 0: none */
    double idle_timeout;      /* seconds; 0: never ping idle clients */
    double handler_timeout;   /* seconds; 0: handlers may run forever */
    unsigned max_connections; /* 0: derive from the open-file limit */
    bool check;
    bool no_io_uring; /* write with send(2) per socket, not batched (see uring.h) */
    bool reload;
    bool log_queries; /* --log-queries: query strings may reach the log (they often hold tokens) */
    bool log_json;    /* --log-format json */
    int verbosity;    /* -1 quiet, 0 normal, 1 verbose */
    int workers;      /* processes serving (1: this one; more: a supervisor forks them) */
    int worker;       /* set by the supervisor in a worker: its number, 1..workers; 0 alone */
    const char *redis_url;    /* NULL: no cluster */
    const char *redis_prefix; /* of every Redis key and channel; "wsluad" unless given */
    bool metrics;             /* --metrics: serve GET /metrics on metrics_host:metrics_port */
    char metrics_host[256];   /* as host above */
    int metrics_port;

    /* Plain HTTP requests. */
    uint64_t max_request_body; /* a larger body gets 413 */
    double request_timeout;    /* seconds for a body to arrive, then for its answer; 0: none */
    wsl_cidr trust[WSL_PROXY_MAX_RANGES]; /* --trust-proxy: who may name the client */
    size_t ntrust;
} wsl_options;

#define WSL_MAX_WORKERS 1024

/* The exit statuses --help documents. */
enum { WSL_EXIT_OK = 0, WSL_EXIT_SCRIPT = 1, WSL_EXIT_USAGE = 2, WSL_EXIT_LISTEN = 3 };

enum {
    WSL_OPTIONS_RUN,   /* go on */
    WSL_OPTIONS_EXIT,  /* --help or --version was printed: exit 0 */
    WSL_OPTIONS_USAGE, /* a usage error was printed: exit 2 */
};

int wsl_options_parse(wsl_options *o, int argc, char **argv);

/* The listen addresses as a list for the log: "127.0.0.1:8080, [::1]:8443 (TLS)". */
const char *wsl_listen_list(const wsl_options *o, char *buf, size_t cap);

/* "1M", "512K", "1048576" -> bytes; false on a malformed size or one over WSL_SIZE_MAX. */
#define WSL_SIZE_MAX (1ull << 53)
bool wsl_parse_size(const char *s, uint64_t *out);

#endif
