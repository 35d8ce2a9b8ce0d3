/* The command line turned into one settings struct, plus the --help text. Knows nothing else. */
#ifndef WSL_OPTIONS_H
#define WSL_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "proxy.h"

/* Filled by wsl_options_parse; strings point into argv or into host[], never freed. */
typedef struct wsl_options {
    char host[256];         /* without brackets for IPv6; ":PORT" and "*:PORT" give 0.0.0.0 */
    int port;               /* 0: any free port (the log says which) */
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

/* "1M", "512K", "1048576" -> bytes; false on a malformed or overflowing size. */
bool wsl_parse_size(const char *s, uint64_t *out);

#endif
