/* The Prometheus text format (version 0.0.4) for the server's counters, the process_* metrics
 * and the metrics scripts define: escaping, number formatting, histograms, the close-code table
 * and the bounded registry behind ws.metric. Pure: the caller reads /proc and writes sockets. */
#include "metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

wsl_metrics_counters wsl_metrics;

const char *const wsl_handler_names[WSL_HANDLERS] = {
    "on_upgrade", "on_open", "on_message", "on_close", "on_drain",
    "on_error",   "timer",   "on_request", "spawn",
};

/* 5 us to 10 s: a message handler takes microseconds; --handler-timeout defaults to 2 s. */
const uint64_t wsl_hist_bounds_ns[WSL_HIST_BUCKETS] = {
    5000,      10000,     25000,      50000,      100000,     250000,      500000,
    1000000,   2500000,   5000000,    10000000,   25000000,   50000000,    100000000,
    250000000, 500000000, 1000000000, 2500000000, 5000000000, 10000000000,
};

/* ---- output ------------------------------------------------------------------------------ */

void wsl_mbuf_free(wsl_mbuf *b)
{
    free(b->p);
    *b = (wsl_mbuf){0};
}

static bool reserve(wsl_mbuf *b, size_t more)
{
    if (b->failed) return false;
    if (b->cap - b->len > more) return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len <= more) {
        if (cap > SIZE_MAX / 2) {
            b->failed = true;
            return false;
        }
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void wsl_mbuf_add(wsl_mbuf *b, const char *s, size_t n)
{
    if (!reserve(b, n)) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void add_str(wsl_mbuf *b, const char *s)
{
    wsl_mbuf_add(b, s, strlen(s));
}

void wsl_mbuf_printf(wsl_mbuf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = true;
        return;
    }
    if ((size_t)n < sizeof small) {
        wsl_mbuf_add(b, small, (size_t)n);
        return;
    }
    if (!reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* ---- the text format ------------------------------------------------------------------------ */

/* Label values escape backslash, double quote and newline; help text backslash and newline. */
static void add_escaped(wsl_mbuf *b, const char *s, size_t n, bool quote)
{
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        const char *esc = s[i] == '\\'           ? "\\\\"
                          : s[i] == '\n'         ? "\\n"
                          : quote && s[i] == '"' ? "\\\""
                                                 : NULL;
        if (!esc) continue;
        wsl_mbuf_add(b, s + run, i - run);
        wsl_mbuf_add(b, esc, 2);
        run = i + 1;
    }
    wsl_mbuf_add(b, s + run, n - run);
}

void wsl_prom_header(wsl_mbuf *b, const char *name, const char *help, wsl_metric_type type)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    add_str(b, "# HELP ");
    add_str(b, name);
    wsl_mbuf_add(b, " ", 1);
    add_escaped(b, help, strlen(help), false);
    wsl_mbuf_printf(b, "\n# TYPE %s %s\n", name, types[type]);
}

const char *wsl_prom_double(char *out, double v)
{
    if (isnan(v)) return strcpy(out, "NaN");
    if (isinf(v)) return strcpy(out, v > 0 ? "+Inf" : "-Inf");
    /* Fifteen digits are exact for what people write (0.1); seventeen always read back. */
    snprintf(out, 32, "%.15g", v);
    if (strtod(out, NULL) != v) snprintf(out, 32, "%.17g", v);
    return out;
}

static void add_labels(wsl_mbuf *b, size_t n, const char *const *names, const char *const *values)
{
    if (!n) return;
    wsl_mbuf_add(b, "{", 1);
    for (size_t i = 0; i < n; i++) {
        if (i) wsl_mbuf_add(b, ",", 1);
        add_str(b, names[i]);
        wsl_mbuf_add(b, "=\"", 2);
        add_escaped(b, values[i], strlen(values[i]), true);
        wsl_mbuf_add(b, "\"", 1);
    }
    wsl_mbuf_add(b, "}", 1);
}

void wsl_prom_sample(wsl_mbuf *b, const char *name, size_t nlabels, const char *const *names,
                     const char *const *values, double v)
{
    char num[32];
    add_str(b, name);
    add_labels(b, nlabels, names, values);
    wsl_mbuf_printf(b, " %s\n", wsl_prom_double(num, v));
}

void wsl_prom_sample_u64(wsl_mbuf *b, const char *name, size_t nlabels, const char *const *names,
                         const char *const *values, uint64_t v)
{
    add_str(b, name);
    add_labels(b, nlabels, names, values);
    wsl_mbuf_printf(b, " %" PRIu64 "\n", v);
}

void wsl_prom_histogram(wsl_mbuf *b, const char *name, const char *lname, const char *lvalue,
                        const wsl_hist *h)
{
    const char *names[2] = {lname, "le"}, *values[2] = {lvalue, NULL};
    size_t first = lname ? 0 : 1, n = 2 - first;
    char le[32], metric[WSL_METRIC_NAME_MAX + 16];
    uint64_t total = 0;
    snprintf(metric, sizeof metric, "%s_bucket", name);
    for (size_t i = 0; i <= WSL_HIST_BUCKETS; i++) {
        total += h->n[i];
        values[1] = i < WSL_HIST_BUCKETS ? wsl_prom_double(le, (double)wsl_hist_bounds_ns[i] / 1e9)
                                         : "+Inf";
        wsl_prom_sample_u64(b, metric, n, names + first, values + first, total);
    }
    snprintf(metric, sizeof metric, "%s_sum", name);
    wsl_prom_sample(b, metric, lname ? 1 : 0, names, values, (double)h->sum_ns / 1e9);
    snprintf(metric, sizeof metric, "%s_count", name);
    wsl_prom_sample_u64(b, metric, lname ? 1 : 0, names, values, total);
}

/* ---- the server's counters ------------------------------------------------------------------ */

void wsl_close_count(wsl_close_counts *t, unsigned code)
{
    if (code == 0 || code > UINT16_MAX) {
        t->other++;
        return;
    }
    for (size_t i = 0, s = code % WSL_CLOSE_SLOTS; i < WSL_CLOSE_SLOTS;
         i++, s = (s + 1) % WSL_CLOSE_SLOTS) {
        if (t->code[s] == code || t->code[s] == 0) {
            t->code[s] = (uint16_t)code;
            t->n[s]++;
            return;
        }
    }
    t->other++;
}

static void counter(wsl_mbuf *b, const char *name, const char *help, uint64_t v)
{
    wsl_prom_header(b, name, help, WSL_METRIC_COUNTER);
    wsl_prom_sample_u64(b, name, 0, NULL, NULL, v);
}

static void close_codes(wsl_mbuf *b, const char *name, const char *help, const wsl_close_counts *t)
{
    static const char *const code[] = {"code"};
    char num[16];
    const char *v[1] = {num};
    wsl_prom_header(b, name, help, WSL_METRIC_COUNTER);
    /* In code order, so that a scrape reads the same way every time. */
    for (unsigned last = 0;;) {
        size_t best = WSL_CLOSE_SLOTS;
        for (size_t i = 0; i < WSL_CLOSE_SLOTS; i++)
            if (t->code[i] > last && (best == WSL_CLOSE_SLOTS || t->code[i] < t->code[best]))
                best = i;
        if (best == WSL_CLOSE_SLOTS) break;
        last = t->code[best];
        snprintf(num, sizeof num, "%u", last);
        wsl_prom_sample_u64(b, name, 1, code, v, t->n[best]);
    }
    if (t->other) {
        v[0] = "other";
        wsl_prom_sample_u64(b, name, 1, code, v, t->other);
    }
}

static void per_handler(wsl_mbuf *b, const char *name, const char *help,
                        const wsl_metrics_counters *m, size_t offset)
{
    static const char *const handler[] = {"handler"};
    wsl_prom_header(b, name, help, WSL_METRIC_COUNTER);
    for (size_t i = 0; i < WSL_HANDLERS; i++) {
        uint64_t v;
        memcpy(&v, (const char *)&m->handlers[i] + offset, sizeof v);
        wsl_prom_sample_u64(b, name, 1, handler, &wsl_handler_names[i], v);
    }
}

void wsl_metrics_render(wsl_mbuf *b, const wsl_metrics_counters *m)
{
    counter(b, "wsluad_connections_accepted_total",
            "TCP connections accepted on the public address (those refused at once not included).",
            m->accepted);
    counter(b, "wsluad_connections_refused_total",
            "Connections refused with 503 at once (--max-connections, out of descriptors).",
            m->refused);
    counter(b, "wsluad_upgrades_total", "WebSocket upgrades that opened a connection.",
            m->upgrades);

    static const char *const status[] = {"status"};
    const char *name = "wsluad_upgrades_refused_total";
    wsl_prom_header(b, name,
                    "Upgrade requests answered with an HTTP error instead of 101, by status.",
                    WSL_METRIC_COUNTER);
    for (int s = WSL_STATUS_MIN; s <= WSL_STATUS_MAX; s++) {
        uint64_t v = m->upgrades_refused[s - WSL_STATUS_MIN];
        if (!v) continue;
        char num[8];
        const char *vals[1] = {num};
        snprintf(num, sizeof num, "%d", s);
        wsl_prom_sample_u64(b, name, 1, status, vals, v);
    }

    counter(b, "wsluad_messages_received_total", "WebSocket messages received from clients.",
            m->messages_received);
    counter(b, "wsluad_messages_sent_total",
            "WebSocket messages queued to clients (a broadcast counts each recipient).",
            m->messages_sent);
    counter(b, "wsluad_received_bytes_total",
            "Bytes read from client sockets (requests and frames).", m->bytes_received);
    counter(b, "wsluad_sent_bytes_total", "Bytes written to client sockets (answers and frames).",
            m->bytes_sent);
    counter(b, "wsluad_broadcast_frames_total",
            "Frames queued to connections by broadcasts, from this node or another.",
            m->broadcast_frames);
    counter(b, "wsluad_publish_frames_total",
            "Frames queued to topic subscribers by publishes, from this node or another.",
            m->publish_frames);
    counter(b, "wsluad_backpressure_closes_total",
            "Connections closed with 1008 for queueing more than --max-backpressure.",
            m->backpressure_closes);
    close_codes(b, "wsluad_close_frames_sent_total",
                "Close frames sent, by code (1005: a close frame without a code).", &m->close_sent);
    close_codes(b, "wsluad_close_frames_received_total",
                "Close frames received, by code (1005: a close frame without a code).",
                &m->close_received);

    per_handler(b, "wsluad_handler_calls_total", "Calls of the script's handlers and timers.", m,
                offsetof(wsl_handler_stats, calls));
    per_handler(b, "wsluad_handler_errors_total",
                "Handler calls that failed (Lua error, time limit, memory cap).", m,
                offsetof(wsl_handler_stats, errors));
    per_handler(b, "wsluad_handler_timeouts_total",
                "Handler calls stopped by --handler-timeout (also counted as errors).", m,
                offsetof(wsl_handler_stats, timeouts));
    name = "wsluad_handler_duration_seconds";
    wsl_prom_header(b, name, "Run time of handler calls, the handlers they caused included.",
                    WSL_METRIC_HISTOGRAM);
    for (size_t i = 0; i < WSL_HANDLERS; i++)
        wsl_prom_histogram(b, name, "handler", wsl_handler_names[i], &m->handlers[i].time);

    counter(b, "wsluad_script_metric_updates_dropped_total",
            "ws.metric updates refused because the script reached the cap of label combinations.",
            m->script_updates_dropped);
}

/* ---- process_* ------------------------------------------------------------------------------ */

int wsl_process_parse(const char *self_stat, const char *proc_stat, long hz, long page,
                      wsl_process_stats *out)
{
    /* "pid (comm) state ppid ...": the command name may hold spaces and parentheses, so the
     * fields are counted from the last ')'. Field 14 is utime, 15 stime, 22 starttime, 23
     * vsize, 24 rss (man 5 proc). */
    const char *p = strrchr(self_stat, ')');
    if (!p || hz <= 0 || page <= 0) return -EINVAL;
    unsigned long long f[25] = {0};
    p++;
    for (int field = 3; field <= 24; field++) {
        while (*p == ' ')
            p++;
        if (!*p) return -EINVAL;
        if (field == 3) { /* the state letter */
            p++;
            continue;
        }
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno) return -EINVAL;
        f[field] = v < 0 ? 0 : (unsigned long long)v;
        p = end;
    }
    const char *bt = strstr(proc_stat, "btime ");
    if (!bt || (bt != proc_stat && bt[-1] != '\n')) return -EINVAL;
    char *end;
    unsigned long long btime = strtoull(bt + 6, &end, 10);
    if (end == bt + 6) return -EINVAL;
    out->cpu_seconds = (double)(f[14] + f[15]) / (double)hz;
    out->start_time = (double)btime + (double)f[22] / (double)hz;
    out->vm_bytes = f[23];
    out->rss_bytes = f[24] * (uint64_t)page;
    return 0;
}

void wsl_process_render(wsl_mbuf *b, const wsl_process_stats *p)
{
    wsl_prom_header(b, "process_cpu_seconds_total",
                    "Total user and system CPU time spent in seconds.", WSL_METRIC_COUNTER);
    wsl_prom_sample(b, "process_cpu_seconds_total", 0, NULL, NULL, p->cpu_seconds);
    wsl_prom_header(b, "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.", WSL_METRIC_GAUGE);
    wsl_prom_sample(b, "process_start_time_seconds", 0, NULL, NULL, p->start_time);
    wsl_prom_header(b, "process_resident_memory_bytes", "Resident memory size in bytes.",
                    WSL_METRIC_GAUGE);
    wsl_prom_sample_u64(b, "process_resident_memory_bytes", 0, NULL, NULL, p->rss_bytes);
    wsl_prom_header(b, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
                    WSL_METRIC_GAUGE);
    wsl_prom_sample_u64(b, "process_virtual_memory_bytes", 0, NULL, NULL, p->vm_bytes);
    if (p->open_fds) {
        wsl_prom_header(b, "process_open_fds", "Number of open file descriptors.",
                        WSL_METRIC_GAUGE);
        wsl_prom_sample_u64(b, "process_open_fds", 0, NULL, NULL, p->open_fds);
    }
    if (p->max_fds) {
        wsl_prom_header(b, "process_max_fds", "Maximum number of open file descriptors.",
                        WSL_METRIC_GAUGE);
        wsl_prom_sample_u64(b, "process_max_fds", 0, NULL, NULL, p->max_fds);
    }
}

/* ---- the registry of script metrics -------------------------------------------------------- */

/* One label combination: its value and the label values, each followed by a NUL, in key. */
typedef struct series {
    double v;
    uint32_t hash;
    uint32_t keylen;
    char key[];
} series;

/* Owned by its registry. */
struct wsl_metric {
    wsl_registry *r;
    wsl_metric_type type;
    char *name, *help;
    size_t nlabels;
    char *labels[WSL_METRIC_LABELS_MAX];
    series **order; /* in the order made */
    size_t n, cap;
    series **slots; /* open addressing by hash, linear probing, at most half full */
    size_t nslots;  /* a power of two, or 0 */
};

/* Made by the Lua binding for the script's state; freed with it. */
struct wsl_registry {
    wsl_metric **m; /* in the order defined */
    size_t n, cap;
    size_t max_metrics, max_series, nseries;
};

wsl_registry *wsl_registry_new(size_t max_metrics, size_t max_series)
{
    wsl_registry *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->max_metrics = max_metrics;
    r->max_series = max_series;
    return r;
}

static void metric_free(wsl_metric *m)
{
    for (size_t i = 0; i < m->n; i++)
        free(m->order[i]);
    for (size_t i = 0; i < m->nlabels; i++)
        free(m->labels[i]);
    free(m->order);
    free(m->slots);
    free(m->name);
    free(m->help);
    free(m);
}

void wsl_registry_free(wsl_registry *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n; i++)
        metric_free(r->m[i]);
    free(r->m);
    free(r);
}

static bool starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool ends(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* [a-zA-Z_][a-zA-Z0-9_]*, at most WSL_METRIC_NAME_MAX bytes. */
static bool ident(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > WSL_METRIC_NAME_MAX || (s[0] >= '0' && s[0] <= '9')) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return false;
    }
    return true;
}

static const char *check_name(wsl_metric_type type, const char *name)
{
    if (!ident(name)) return "a metric name is 1 to 128 of [a-zA-Z0-9_], not starting with a digit";
    if (starts(name, "wsluad_") || starts(name, "process_"))
        return "names beginning wsluad_ or process_ are the server's own";
    if (type == WSL_METRIC_COUNTER && !ends(name, "_total"))
        return "a counter's name ends in _total";
    if (type == WSL_METRIC_GAUGE && (ends(name, "_total") || ends(name, "_count") ||
                                     ends(name, "_sum") || ends(name, "_bucket")))
        return "a gauge's name does not end in _total, _count, _sum or _bucket";
    return NULL;
}

static const char *check_label(const char *label)
{
    if (!ident(label)) return "a label name is 1 to 128 of [a-zA-Z0-9_], not starting with a digit";
    if (starts(label, "__")) return "label names beginning __ are reserved";
    if (strcmp(label, "le") == 0 || strcmp(label, "quantile") == 0)
        return "the label names le and quantile are reserved";
    return NULL;
}

static wsl_metric *find_metric(const wsl_registry *r, const char *name)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->m[i]->name, name) == 0) return r->m[i];
    return NULL;
}

static int same_shape(const wsl_metric *m, wsl_metric_type type, size_t nlabels,
                      const char *const *labels, const char **why)
{
    if (m->type != type) {
        *why = "a metric of that name exists with another type";
        return -EEXIST;
    }
    bool same = m->nlabels == nlabels;
    for (size_t i = 0; same && i < nlabels; i++)
        same = strcmp(m->labels[i], labels[i]) == 0;
    if (!same) {
        *why = "a metric of that name exists with other label names";
        return -EEXIST;
    }
    return 0;
}

int wsl_registry_define(wsl_registry *r, wsl_metric_type type, const char *name, const char *help,
                        size_t nlabels, const char *const *labels, wsl_metric **out,
                        const char **why)
{
    *why = NULL;
    if (type == WSL_METRIC_HISTOGRAM) {
        *why = "scripts define counters and gauges";
        return -EINVAL;
    }
    if ((*why = check_name(type, name))) return -EINVAL;
    size_t hl = strlen(help);
    if (hl == 0 || hl > WSL_METRIC_HELP_MAX || !wsl_utf8_valid(help, hl)) {
        *why = "the help text is 1 to 1024 bytes of UTF-8";
        return -EINVAL;
    }
    if (nlabels > WSL_METRIC_LABELS_MAX) {
        *why = "a metric has at most 8 labels";
        return -EINVAL;
    }
    for (size_t i = 0; i < nlabels; i++) {
        if ((*why = check_label(labels[i]))) return -EINVAL;
        for (size_t j = 0; j < i; j++)
            if (strcmp(labels[i], labels[j]) == 0) {
                *why = "a label name is given twice";
                return -EINVAL;
            }
    }

    wsl_metric *m = find_metric(r, name);
    if (m) {
        int e = same_shape(m, type, nlabels, labels, why);
        if (e) return e;
        char *h = strdup(help); /* a reload may reword it */
        if (!h) return -ENOMEM;
        free(m->help);
        m->help = h;
        *out = m;
        return 0;
    }
    if (r->n >= r->max_metrics) {
        *why = "the script has defined as many metrics as wsluad allows";
        return -ENOSPC;
    }
    if (nlabels == 0 && r->nseries >= r->max_series) {
        *why = "the script has made as many label combinations as wsluad allows";
        return -ENOSPC;
    }
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        wsl_metric **a = realloc(r->m, cap * sizeof *a);
        if (!a) return -ENOMEM;
        r->m = a;
        r->cap = cap;
    }
    m = calloc(1, sizeof *m);
    if (!m) return -ENOMEM;
    m->r = r;
    m->type = type;
    m->name = strdup(name);
    m->help = strdup(help);
    bool ok = m->name && m->help;
    for (size_t i = 0; ok && i < nlabels; i++, m->nlabels++)
        ok = (m->labels[i] = strdup(labels[i])) != NULL;
    double *v;
    /* A metric without labels has its one series from the start, so it is exported as 0. */
    if (!ok || (nlabels == 0 && wsl_metric_series(m, NULL, NULL, &v, why) != 0)) {
        metric_free(m);
        return -ENOMEM;
    }
    r->m[r->n++] = m;
    *out = m;
    return 0;
}

wsl_metric_type wsl_metric_type_of(const wsl_metric *m)
{
    return m->type;
}

size_t wsl_metric_nlabels(const wsl_metric *m)
{
    return m->nlabels;
}

static uint32_t fnv1a(const char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)p[i]) * 16777619u;
    return h;
}

static int slots_grow(wsl_metric *m)
{
    size_t cap = m->nslots ? m->nslots * 2 : 8;
    series **slots = calloc(cap, sizeof *slots);
    if (!slots) return -ENOMEM;
    for (size_t i = 0; i < m->n; i++) {
        size_t j = m->order[i]->hash & (cap - 1);
        while (slots[j])
            j = (j + 1) & (cap - 1);
        slots[j] = m->order[i];
    }
    free(m->slots);
    m->slots = slots;
    m->nslots = cap;
    return 0;
}

int wsl_metric_series(wsl_metric *m, const char *const *values, const size_t *lens, double **value,
                      const char **why)
{
    char key[WSL_METRIC_LABELS_MAX * (WSL_METRIC_VALUE_MAX + 1)];
    size_t klen = 0;
    for (size_t i = 0; i < m->nlabels; i++) {
        if (lens[i] > WSL_METRIC_VALUE_MAX) {
            *why = "a label value is longer than 128 bytes";
            return -EINVAL;
        }
        if (!wsl_utf8_valid(values[i], lens[i]) || memchr(values[i], '\0', lens[i])) {
            *why = "a label value is not UTF-8 (or holds a NUL byte)";
            return -EINVAL;
        }
        memcpy(key + klen, values[i], lens[i]);
        klen += lens[i];
        key[klen++] = '\0';
    }
    uint32_t h = fnv1a(key, klen);
    if (m->nslots) {
        for (size_t j = h & (m->nslots - 1); m->slots[j]; j = (j + 1) & (m->nslots - 1)) {
            series *s = m->slots[j];
            if (s->hash == h && s->keylen == klen && memcmp(s->key, key, klen) == 0) {
                *value = &s->v;
                return 0;
            }
        }
    }
    wsl_registry *r = m->r;
    if (r->nseries >= r->max_series) {
        *why = "the script has made as many label combinations as wsluad allows";
        return -ENOSPC;
    }
    if (2 * (m->n + 1) > m->nslots && slots_grow(m) != 0) return -ENOMEM;
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 4;
        series **order = realloc(m->order, cap * sizeof *order);
        if (!order) return -ENOMEM;
        m->order = order;
        m->cap = cap;
    }
    series *s = malloc(sizeof *s + klen);
    if (!s) return -ENOMEM;
    s->v = 0;
    s->hash = h;
    s->keylen = (uint32_t)klen;
    memcpy(s->key, key, klen);
    size_t j = h & (m->nslots - 1);
    while (m->slots[j])
        j = (j + 1) & (m->nslots - 1);
    m->slots[j] = s;
    m->order[m->n++] = s;
    r->nseries++;
    *value = &s->v;
    return 0;
}

void wsl_registry_render(wsl_mbuf *b, const wsl_registry *r)
{
    for (size_t i = 0; i < r->n; i++) {
        const wsl_metric *m = r->m[i];
        wsl_prom_header(b, m->name, m->help, m->type);
        for (size_t j = 0; j < m->n; j++) {
            const series *s = m->order[j];
            const char *values[WSL_METRIC_LABELS_MAX];
            const char *p = s->key;
            for (size_t k = 0; k < m->nlabels; k++) {
                values[k] = p;
                p += strlen(p) + 1;
            }
            wsl_prom_sample(b, m->name, m->nlabels, (const char *const *)m->labels, values, s->v);
        }
    }
}
