/* Metrics in the Prometheus text format, version 0.0.4: the counters the server bumps (plain
 * integers in one global struct, wsl_metrics: no allocation, no lookup in the hot path), a
 * bounded registry of the labelled metrics scripts define (ws.metric), the parsing of
 * /proc/self/stat for the process_* metrics, and the rendering of all of it. Pure: no I/O. */
#ifndef WSL_METRICS_H
#define WSL_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- output ----------------------------------------------------------------------------------
 * A growable buffer the rendering appends to. Zero-initialise it; free p with wsl_mbuf_free.
 * Once an allocation fails, `failed` is set and further appends do nothing. */
typedef struct wsl_mbuf {
    char *p;
    size_t len, cap;
    bool failed;
} wsl_mbuf;

void wsl_mbuf_free(wsl_mbuf *b);
void wsl_mbuf_add(wsl_mbuf *b, const char *s, size_t n);
void wsl_mbuf_printf(wsl_mbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

typedef enum { WSL_METRIC_COUNTER, WSL_METRIC_GAUGE, WSL_METRIC_HISTOGRAM } wsl_metric_type;

/* One metric family's "# HELP" and "# TYPE" lines (help escaped). */
void wsl_prom_header(wsl_mbuf *b, const char *name, const char *help, wsl_metric_type type);
/* A sample: name, then nlabels pairs of (names[i], values[i]) with values escaped, then the
 * value. values may be NULL when nlabels is 0. The _u64 form prints integers exactly. */
void wsl_prom_sample(wsl_mbuf *b, const char *name, size_t nlabels, const char *const *names,
                     const char *const *values, double v);
void wsl_prom_sample_u64(wsl_mbuf *b, const char *name, size_t nlabels, const char *const *names,
                         const char *const *values, uint64_t v);
/* The shortest text that reads back as v (Go's ParseFloat reads it): "0.25", "1e-05", "+Inf",
 * "NaN". out must hold 32 bytes. */
const char *wsl_prom_double(char *out, double v);

/* ---- histograms with fixed buckets -----------------------------------------------------------
 * Durations in nanoseconds, exported in seconds. n[i] counts observations in (bound[i-1],
 * bound[i]]; n[WSL_HIST_BUCKETS] those above the last bound (only +Inf has them). */
#define WSL_HIST_BUCKETS 20
extern const uint64_t wsl_hist_bounds_ns[WSL_HIST_BUCKETS];

typedef struct wsl_hist {
    uint64_t n[WSL_HIST_BUCKETS + 1];
    uint64_t sum_ns;
} wsl_hist;

static inline void wsl_hist_observe(wsl_hist *h, uint64_t ns)
{
    size_t i = 0;
    while (i < WSL_HIST_BUCKETS && ns > wsl_hist_bounds_ns[i])
        i++;
    h->n[i]++;
    h->sum_ns += ns;
}

/* _bucket (cumulative, le="+Inf" last), _sum (seconds) and _count of h; the label pair
 * (lname, lvalue) goes before le, or none when lname is NULL. */
void wsl_prom_histogram(wsl_mbuf *b, const char *name, const char *lname, const char *lvalue,
                        const wsl_hist *h);

/* ---- the server's own counters ----------------------------------------------------------------
 */

/* What ran Lua, for the handler metrics (label handler="..."). */
typedef enum {
    WSL_HANDLER_UPGRADE,
    WSL_HANDLER_OPEN,
    WSL_HANDLER_MESSAGE,
    WSL_HANDLER_CLOSE,
    WSL_HANDLER_DRAIN,
    WSL_HANDLER_ERROR,
    WSL_HANDLER_TIMER, /* ws.timer and ws.every callbacks */
    WSL_HANDLER_REQUEST,
    WSL_HANDLER_SPAWN, /* each run of a ws.spawn function, up to its next wait or its end */
    WSL_HANDLERS
} wsl_handler_kind;

extern const char *const wsl_handler_names[WSL_HANDLERS];

typedef struct wsl_handler_stats {
    uint64_t calls;    /* calls of a handler the script defines */
    uint64_t errors;   /* ... that failed (a Lua error, the time limit, out of memory) */
    uint64_t timeouts; /* ... that --handler-timeout stopped (also counted in errors) */
    wsl_hist time;     /* each call's run time, handlers it caused to run included */
} wsl_handler_stats;

/* Close codes by value, in a small open-addressing table: codes are few in practice (RFC 6455's
 * and an application's 4xxx); past WSL_CLOSE_SLOTS distinct codes the rest count as "other". */
#define WSL_CLOSE_SLOTS 32

typedef struct wsl_close_counts {
    uint16_t code[WSL_CLOSE_SLOTS]; /* 0: a free slot */
    uint64_t n[WSL_CLOSE_SLOTS];
    uint64_t other;
} wsl_close_counts;

void wsl_close_count(wsl_close_counts *t, unsigned code);

#define WSL_STATUS_MIN 100
#define WSL_STATUS_MAX 599

/* Since start. Bumped by the connection layer, the server and the Lua binding, on the loop's
 * thread only; read by the scrape. One process-wide instance, wsl_metrics. */
typedef struct wsl_metrics_counters {
    uint64_t accepted; /* TCP connections accepted on the public port */
    uint64_t refused;  /* ... refused at once: --max-connections, no descriptors */
    uint64_t upgrades; /* upgrades that opened a WebSocket */
    uint64_t upgrades_refused[WSL_STATUS_MAX - WSL_STATUS_MIN + 1]; /* by the HTTP status */
    uint64_t messages_received; /* whole messages delivered to the script */
    uint64_t messages_sent;     /* data frames queued to clients (each recipient counts) */
    uint64_t bytes_received;    /* read from client sockets: requests, frames */
    uint64_t bytes_sent;        /* written to client sockets: answers, frames */
    uint64_t broadcast_frames;  /* frames queued by broadcasts (from this node or others) */
    uint64_t publish_frames;    /* frames queued by publishes to topics */
    uint64_t backpressure_closes;
    wsl_close_counts close_sent, close_received; /* 1005: a close frame without a code */
    wsl_handler_stats handlers[WSL_HANDLERS];
    uint64_t script_updates_dropped; /* ws.metric updates refused by the series cap */
    bool timing; /* handler run times are measured (set while --metrics serves them) */
} wsl_metrics_counters;

extern wsl_metrics_counters wsl_metrics;

static inline void wsl_metrics_refused(int status)
{
    if (status >= WSL_STATUS_MIN && status <= WSL_STATUS_MAX)
        wsl_metrics.upgrades_refused[status - WSL_STATUS_MIN]++;
}

/* A handler call ended; ns: its run time, 0 when not measured (see timing). */
static inline void wsl_metrics_handler(wsl_handler_kind k, bool ok, bool timed_out, uint64_t ns)
{
    wsl_handler_stats *h = &wsl_metrics.handlers[k];
    h->calls++;
    h->errors += !ok;
    h->timeouts += timed_out;
    if (ns) wsl_hist_observe(&h->time, ns);
}

/* Every wsluad_* metric of m, the gauges excepted (the caller renders those). */
void wsl_metrics_render(wsl_mbuf *b, const wsl_metrics_counters *m);

/* ---- process_* ----------------------------------------------------------------------------------
 */

typedef struct wsl_process_stats {
    double cpu_seconds; /* user + system */
    double start_time;  /* seconds since the epoch */
    uint64_t rss_bytes; /* resident memory */
    uint64_t vm_bytes;  /* virtual memory */
    uint64_t open_fds;  /* 0 when unknown */
    uint64_t max_fds;   /* the soft limit; 0 when unknown */
} wsl_process_stats;

/* Fill cpu_seconds, start_time, rss_bytes and vm_bytes from the text of /proc/self/stat and
 * the btime line of /proc/stat (clock ticks per second: hz; page size in bytes). 0, or -EINVAL
 * when either text is malformed (the command name in parentheses may hold anything). */
int wsl_process_parse(const char *self_stat, const char *proc_stat, long hz, long page,
                      wsl_process_stats *out);
void wsl_process_render(wsl_mbuf *b, const wsl_process_stats *p);

/* ---- the registry of script metrics ------------------------------------------------------------
 * Counters and gauges with labels, defined by scripts (ws.metric). Bounded: at most max_metrics
 * metrics and max_series label combinations in all (a metric without labels has one, made at its
 * definition); label values at most WSL_METRIC_VALUE_MAX bytes of UTF-8. Names follow
 * Prometheus's rules ([a-zA-Z_][a-zA-Z0-9_]*, no colons: those are for recording rules), must
 * not begin with "wsluad_" or "process_" (the server's own), counters end in "_total" and gauges
 * do not; label names likewise, not beginning "__", and never "le" or "quantile". */
#define WSL_METRIC_NAME_MAX   128
#define WSL_METRIC_HELP_MAX   1024
#define WSL_METRIC_LABELS_MAX 8
#define WSL_METRIC_VALUE_MAX  128

typedef struct wsl_registry wsl_registry;
typedef struct wsl_metric wsl_metric;

/* NULL when out of memory. Freed with everything in it by wsl_registry_free. */
wsl_registry *wsl_registry_new(size_t max_metrics, size_t max_series);
void wsl_registry_free(wsl_registry *r);

/* Define a metric, or find the one of that name: then type and label names must be the same
 * (the help text is updated). 0 and *out; -EINVAL (a bad name, help or label; *why says which),
 * -EEXIST (defined before with another type or labels; *why says how), -ENOSPC (max_metrics
 * reached), -ENOMEM. *why is a static string. */
int wsl_registry_define(wsl_registry *r, wsl_metric_type type, const char *name, const char *help,
                        size_t nlabels, const char *const *labels, wsl_metric **out,
                        const char **why);

wsl_metric_type wsl_metric_type_of(const wsl_metric *m);
size_t wsl_metric_nlabels(const wsl_metric *m);

/* The value of m's series for these label values (wsl_metric_nlabels of them), found or made:
 * 0 and *value, which stays valid as long as the registry. -EINVAL: a value that is too long
 * or not UTF-8 (*why says which); -ENOSPC: a new combination past max_series; -ENOMEM. */
int wsl_metric_series(wsl_metric *m, const char *const *values, const size_t *lens, double **value,
                      const char **why);

/* Every metric, in the order defined, each series in the order made. */
void wsl_registry_render(wsl_mbuf *b, const wsl_registry *r);

#endif
