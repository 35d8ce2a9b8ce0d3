/* The Prometheus text rendering (src/metrics.c): number formatting, escaping, histograms, the
 * close-code table, the server's counters, /proc/self/stat parsing, and the registry of script
 * metrics with its name rules and caps. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "metrics.h"
#include "test.h"

/* The text of one render: the buffer, NUL-terminated (or "" when nothing was written). */
static const char *text(const wsl_mbuf *b)
{
    return b->p ? b->p : "";
}

static void test_double(void)
{
    char out[32];
    CHECK_STR(wsl_prom_double(out, 0), "0");
    CHECK_STR(wsl_prom_double(out, 1), "1");
    CHECK_STR(wsl_prom_double(out, 0.25), "0.25");
    CHECK_STR(wsl_prom_double(out, 0.1), "0.1");
    CHECK_STR(wsl_prom_double(out, 1e-05), "1e-05");
    CHECK_STR(wsl_prom_double(out, -2.5), "-2.5");
    CHECK_STR(wsl_prom_double(out, 12345678901234.0), "12345678901234");
    CHECK_STR(wsl_prom_double(out, NAN), "NaN");
    CHECK_STR(wsl_prom_double(out, INFINITY), "+Inf");
    CHECK_STR(wsl_prom_double(out, -INFINITY), "-Inf");
    double third = 1.0 / 3;
    CHECK(strtod(wsl_prom_double(out, third), NULL) == third); /* 17 digits when 15 do not do */
}

static void test_escaping(void)
{
    wsl_mbuf b = {0};
    wsl_prom_header(&b, "x_total", "a \\ back\nslash \"quoted\"", WSL_METRIC_COUNTER);
    const char *names[] = {"path", "kind"};
    const char *values[] = {"a\"b\\c\nd", ""};
    wsl_prom_sample(&b, "x_total", 2, names, values, 3);
    wsl_prom_sample_u64(&b, "x_total", 0, NULL, NULL, UINT64_MAX);
    CHECK_STR(text(&b), "# HELP x_total a \\\\ back\\nslash \"quoted\"\n"
                        "# TYPE x_total counter\n"
                        "x_total{path=\"a\\\"b\\\\c\\nd\",kind=\"\"} 3\n"
                        "x_total 18446744073709551615\n");
    CHECK(!b.failed);
    wsl_mbuf_free(&b);

    /* Growth past the first block. */
    for (int i = 0; i < 2000; i++)
        wsl_mbuf_printf(&b, "line %d of a long output\n", i);
    CHECK(!b.failed);
    CHECK(strstr(text(&b), "line 1999 of a long output\n") != NULL);
    CHECK_EQ(strlen(text(&b)), b.len);
    wsl_mbuf_free(&b);

    /* A formatted piece longer than printf's stack buffer. */
    char big[1000];
    memset(big, 'y', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    wsl_mbuf_add(&b, "<", 1);
    wsl_mbuf_printf(&b, "%s|%d", big, 42);
    CHECK_EQ(b.len, 1 + 999 + 3);
    CHECK(b.p && b.p[0] == '<' && b.p[1] == 'y' && strcmp(b.p + 1000, "|42") == 0);
    wsl_mbuf_free(&b);
}

static void test_histogram(void)
{
    wsl_hist h = {0};
    wsl_hist_observe(&h, 1000);        /* 1 us: the first bucket (5 us) */
    wsl_hist_observe(&h, 5000);        /* exactly 5 us: le is "less or equal" */
    wsl_hist_observe(&h, 5001);        /* the 10 us bucket */
    wsl_hist_observe(&h, 3000000000);  /* 3 s: the 5 s bucket */
    wsl_hist_observe(&h, 60000000000); /* a minute: only +Inf */
    CHECK_EQ(h.n[0], 2);
    CHECK_EQ(h.n[1], 1);
    CHECK_EQ(h.n[WSL_HIST_BUCKETS], 1);

    wsl_mbuf b = {0};
    wsl_prom_histogram(&b, "t_seconds", "handler", "on_open", &h);
    const char *t = text(&b);
    CHECK(strstr(t, "t_seconds_bucket{handler=\"on_open\",le=\"5e-06\"} 2\n") != NULL);
    CHECK(strstr(t, "t_seconds_bucket{handler=\"on_open\",le=\"1e-05\"} 3\n") != NULL);
    CHECK(strstr(t, "t_seconds_bucket{handler=\"on_open\",le=\"2.5\"} 3\n") != NULL);
    CHECK(strstr(t, "t_seconds_bucket{handler=\"on_open\",le=\"5\"} 4\n") != NULL);
    CHECK(strstr(t, "t_seconds_bucket{handler=\"on_open\",le=\"10\"} 4\n") != NULL);
    CHECK(strstr(t, "t_seconds_bucket{handler=\"on_open\",le=\"+Inf\"} 5\n") != NULL);
    CHECK(strstr(t, "t_seconds_sum{handler=\"on_open\"} 63.000011001\n") != NULL);
    CHECK(strstr(t, "t_seconds_count{handler=\"on_open\"} 5\n") != NULL);
    /* Buckets in increasing order, +Inf last, then _sum and _count. */
    CHECK(strstr(t, "le=\"5\"") < strstr(t, "le=\"10\""));
    CHECK(strstr(t, "le=\"10\"") < strstr(t, "le=\"+Inf\""));
    CHECK(strstr(t, "+Inf") < strstr(t, "_sum"));
    CHECK(strstr(t, "_sum") < strstr(t, "_count"));
    int lines = 0;
    for (const char *p = t; (p = strchr(p, '\n')); p++)
        lines++;
    CHECK_EQ(lines, WSL_HIST_BUCKETS + 3);
    wsl_mbuf_free(&b);

    /* Without a label. */
    wsl_prom_histogram(&b, "u_seconds", NULL, NULL, &(wsl_hist){0});
    CHECK(strstr(text(&b),
                 "u_seconds_bucket{le=\"+Inf\"} 0\nu_seconds_sum 0\nu_seconds_count 0\n") != NULL);
    wsl_mbuf_free(&b);
}

static void test_close_codes(void)
{
    wsl_close_counts t = {0};
    wsl_close_count(&t, 1001);
    wsl_close_count(&t, 1000);
    wsl_close_count(&t, 1000);
    wsl_close_count(&t, 4000 + WSL_CLOSE_SLOTS); /* the same home slot as 4000 */
    wsl_close_count(&t, 4000);
    /* Fill the table: codes past its size count as "other". */
    for (unsigned c = 3000; c < 3000 + WSL_CLOSE_SLOTS; c++)
        wsl_close_count(&t, c);
    wsl_close_count(&t, 0);

    wsl_metrics_counters m = {0};
    m.close_sent = t;
    wsl_mbuf b = {0};
    wsl_metrics_render(&b, &m);
    const char *s = text(&b);
    CHECK(strstr(s, "wsluad_close_frames_sent_total{code=\"1000\"} 2\n") != NULL);
    CHECK(strstr(s, "wsluad_close_frames_sent_total{code=\"1001\"} 1\n") != NULL);
    CHECK(strstr(s, "wsluad_close_frames_sent_total{code=\"4000\"} 1\n") != NULL);
    CHECK(strstr(s, "wsluad_close_frames_sent_total{code=\"4032\"} 1\n") != NULL);
    /* 32 slots: 1000, 1001, 4000, 4032 and 28 of the 3xxx codes; 4 of those and 0 are other. */
    CHECK(strstr(s, "wsluad_close_frames_sent_total{code=\"3027\"} 1\n") != NULL);
    CHECK(strstr(s, "code=\"3028\"") == NULL);
    CHECK(strstr(s, "wsluad_close_frames_sent_total{code=\"other\"} 5\n") != NULL);
    /* In code order. */
    CHECK(strstr(s, "code=\"1000\"") < strstr(s, "code=\"1001\""));
    CHECK(strstr(s, "code=\"1001\"") < strstr(s, "code=\"3000\""));
    CHECK(strstr(s, "code=\"4000\"") < strstr(s, "code=\"4032\""));
    CHECK(strstr(s, "wsluad_close_frames_received_total{") == NULL);
    wsl_mbuf_free(&b);
}

static void test_counters(void)
{
    wsl_metrics_counters m = {0};
    m.accepted = 7;
    m.messages_received = 3;
    m.bytes_sent = 1234;
    m.upgrades_refused[403 - WSL_STATUS_MIN] = 2;
    m.upgrades_refused[WSL_STATUS_MAX - WSL_STATUS_MIN] = 1;
    m.handlers[WSL_HANDLER_MESSAGE].calls = 3;
    m.handlers[WSL_HANDLER_MESSAGE].errors = 1;
    m.handlers[WSL_HANDLER_TIMER].timeouts = 1;
    wsl_hist_observe(&m.handlers[WSL_HANDLER_MESSAGE].time, 20000);
    wsl_mbuf b = {0};
    wsl_metrics_render(&b, &m);
    const char *s = text(&b);
    CHECK(strstr(s, "# TYPE wsluad_connections_accepted_total counter\n"
                    "wsluad_connections_accepted_total 7\n") != NULL);
    CHECK(strstr(s, "\nwsluad_messages_received_total 3\n") != NULL);
    CHECK(strstr(s, "\nwsluad_sent_bytes_total 1234\n") != NULL);
    CHECK(strstr(s, "\nwsluad_upgrades_refused_total{status=\"403\"} 2\n") != NULL);
    CHECK(strstr(s, "\nwsluad_upgrades_refused_total{status=\"599\"} 1\n") != NULL);
    CHECK(strstr(s, "status=\"400\"") == NULL); /* statuses that never happened are left out */
    CHECK(strstr(s, "\nwsluad_handler_calls_total{handler=\"on_message\"} 3\n") != NULL);
    CHECK(strstr(s, "\nwsluad_handler_calls_total{handler=\"on_open\"} 0\n") != NULL);
    CHECK(strstr(s, "\nwsluad_handler_errors_total{handler=\"on_message\"} 1\n") != NULL);
    CHECK(strstr(s, "\nwsluad_handler_timeouts_total{handler=\"timer\"} 1\n") != NULL);
    CHECK(strstr(s, "# TYPE wsluad_handler_duration_seconds histogram\n") != NULL);
    CHECK(strstr(s, "wsluad_handler_duration_seconds_bucket{handler=\"on_message\",le=\"2.5e-05\"}"
                    " 1\n") != NULL);
    CHECK(strstr(s, "wsluad_handler_duration_seconds_count{handler=\"on_drain\"} 0\n") != NULL);

    /* Every family has HELP then TYPE, every counter's name ends in _total, and every sample
     * belongs to the family declared last. */
    char family[160] = "";
    for (const char *line = s; *line;) {
        const char *nl = strchr(line, '\n');
        CHECK(nl != NULL);
        if (!nl) break;
        char l[512];
        snprintf(l, sizeof l, "%.*s", (int)(nl - line), line);
        TEST_CONTEXT("%.200s", l);
        if (strncmp(l, "# HELP ", 7) == 0) {
            sscanf(l + 7, "%159s", family);
            CHECK(strncmp(family, "wsluad_", 7) == 0);
            const char *next = nl + 1;
            char want[200];
            snprintf(want, sizeof want, "# TYPE %s ", family);
            CHECK(strncmp(next, want, strlen(want)) == 0);
        } else if (strncmp(l, "# TYPE ", 7) == 0) {
            if (strstr(l, " counter")) CHECK(strstr(l, "_total counter") != NULL);
        } else {
            CHECK(strncmp(l, family, strlen(family)) == 0);
        }
        line = nl + 1;
    }
    TEST_CONTEXT("%s", "");
    wsl_mbuf_free(&b);
}

static void test_process(void)
{
    /* A command name with spaces and parentheses, as a process may name itself. */
    static const char stat[] =
        "4242 (ws) (lu ad)) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 1 0 "
        "12000 104857600 2048 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 0 0 0 0 0 0\n";
    static const char procstat[] = "cpu  1 2 3 4\nintr 5\nctxt 6\nbtime 1700000000\nprocesses 9\n";
    wsl_process_stats p = {0};
    CHECK_EQ(wsl_process_parse(stat, procstat, 100, 4096, &p), 0);
    CHECK(fabs(p.cpu_seconds - 3.0) < 1e-9);         /* (250 + 50) / 100 */
    CHECK(fabs(p.start_time - 1700000120.0) < 1e-6); /* btime + 12000 / 100 */
    CHECK_EQ(p.vm_bytes, 104857600);
    CHECK_EQ(p.rss_bytes, 2048 * 4096);
    CHECK_EQ(wsl_process_parse("4242 (x) S 1 2", procstat, 100, 4096, &p), -EINVAL);
    CHECK_EQ(wsl_process_parse(stat, "cpu 1\n", 100, 4096, &p), -EINVAL);
    CHECK_EQ(wsl_process_parse("no parenthesis", procstat, 100, 4096, &p), -EINVAL);
    CHECK_EQ(wsl_process_parse(stat, "xbtime 5\n", 100, 4096, &p), -EINVAL);

    p.open_fds = 12;
    p.max_fds = 1024;
    wsl_mbuf b = {0};
    wsl_process_render(&b, &p);
    const char *s = text(&b);
    CHECK(strstr(s, "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3\n"));
    CHECK(strstr(s, "\nprocess_start_time_seconds 1700000120\n"));
    CHECK(strstr(s, "\nprocess_resident_memory_bytes 8388608\n"));
    CHECK(strstr(s, "\nprocess_virtual_memory_bytes 104857600\n"));
    CHECK(strstr(s, "\nprocess_open_fds 12\n"));
    CHECK(strstr(s, "\nprocess_max_fds 1024\n"));
    wsl_mbuf_free(&b);
}

static int define(wsl_registry *r, wsl_metric_type t, const char *name, size_t n,
                  const char *const *labels, wsl_metric **m, const char **why)
{
    return wsl_registry_define(r, t, name, "help", n, labels, m, why);
}

static void test_registry_rules(void)
{
    wsl_registry *r = wsl_registry_new(100, 1000);
    wsl_metric *m;
    const char *why;
    static const struct {
        wsl_metric_type type;
        const char *name;
        int want;
    } names[] = {
        {WSL_METRIC_COUNTER, "chat_messages_total", 0},
        {WSL_METRIC_COUNTER, "_private_total", 0},
        {WSL_METRIC_COUNTER, "A9_total", 0},
        {WSL_METRIC_GAUGE, "room_members", 0},
        {WSL_METRIC_COUNTER, "chat_messages", -EINVAL},    /* a counter ends in _total */
        {WSL_METRIC_GAUGE, "room_members_total", -EINVAL}, /* a gauge does not */
        {WSL_METRIC_GAUGE, "queue_count", -EINVAL},        /* nor in a histogram's suffix */
        {WSL_METRIC_GAUGE, "wait_sum", -EINVAL},
        {WSL_METRIC_GAUGE, "x_bucket", -EINVAL},
        {WSL_METRIC_COUNTER, "wsluad_mine_total", -EINVAL}, /* the server's own prefix */
        {WSL_METRIC_GAUGE, "process_things", -EINVAL},
        {WSL_METRIC_GAUGE, "", -EINVAL},
        {WSL_METRIC_GAUGE, "9lives", -EINVAL},
        {WSL_METRIC_GAUGE, "a:b", -EINVAL}, /* colons are for recording rules */
        {WSL_METRIC_GAUGE, "a-b", -EINVAL},
        {WSL_METRIC_GAUGE, "caf\xc3\xa9", -EINVAL},
        {WSL_METRIC_GAUGE, "a b", -EINVAL},
        {WSL_METRIC_HISTOGRAM, "h_seconds", -EINVAL},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        TEST_CONTEXT("name '%s'", names[i].name);
        why = NULL;
        CHECK_EQ(define(r, names[i].type, names[i].name, 0, NULL, &m, &why), names[i].want);
        CHECK((names[i].want == 0) == (why == NULL));
    }
    char longname[WSL_METRIC_NAME_MAX + 2];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    CHECK_EQ(define(r, WSL_METRIC_GAUGE, longname, 0, NULL, &m, &why), -EINVAL);
    longname[WSL_METRIC_NAME_MAX] = '\0';
    CHECK_EQ(define(r, WSL_METRIC_GAUGE, longname, 0, NULL, &m, &why), 0);

    static const struct {
        const char *label;
        int want;
    } labels[] = {
        {"room", 0},      {"_x", 0},       {"le", -EINVAL},  {"quantile", -EINVAL},
        {"__x", -EINVAL}, {"1a", -EINVAL}, {"a.b", -EINVAL}, {"", -EINVAL},
    };
    for (size_t i = 0; i < sizeof labels / sizeof labels[0]; i++) {
        TEST_CONTEXT("label '%s'", labels[i].label);
        char name[64];
        snprintf(name, sizeof name, "labelled_%zu_total", i);
        const char *l[] = {labels[i].label};
        CHECK_EQ(define(r, WSL_METRIC_COUNTER, name, 1, l, &m, &why), labels[i].want);
    }
    TEST_CONTEXT("%s", "");
    const char *two[] = {"a", "a"};
    CHECK_EQ(define(r, WSL_METRIC_COUNTER, "dup_total", 2, two, &m, &why), -EINVAL);
    const char *nine[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
    CHECK_EQ(define(r, WSL_METRIC_COUNTER, "many_total", 9, nine, &m, &why), -EINVAL);
    CHECK_EQ(define(r, WSL_METRIC_COUNTER, "eight_total", 8, nine, &m, &why), 0);
    CHECK_EQ(wsl_metric_nlabels(m), 8);
    CHECK_EQ(wsl_registry_define(r, WSL_METRIC_GAUGE, "bad_help", "\xff", 0, NULL, &m, &why),
             -EINVAL);
    CHECK_EQ(wsl_registry_define(r, WSL_METRIC_GAUGE, "no_help", "", 0, NULL, &m, &why), -EINVAL);

    /* Defining again: the same metric; another type or other labels: an error. */
    const char *room[] = {"room"}, *kind[] = {"kind"}, *room_kind[] = {"room", "kind"};
    wsl_metric *a, *b;
    CHECK_EQ(define(r, WSL_METRIC_COUNTER, "sent_total", 1, room, &a, &why), 0);
    CHECK_EQ(
        wsl_registry_define(r, WSL_METRIC_COUNTER, "sent_total", "new help", 1, room, &b, &why), 0);
    CHECK(a == b);
    CHECK_EQ(wsl_metric_type_of(a), WSL_METRIC_COUNTER);
    CHECK_EQ(define(r, WSL_METRIC_GAUGE, "room_members", 1, room, &b, &why), -EEXIST);
    CHECK(why && strstr(why, "label"));
    CHECK_EQ(define(r, WSL_METRIC_COUNTER, "sent_total", 1, kind, &b, &why), -EEXIST);
    CHECK_EQ(define(r, WSL_METRIC_COUNTER, "sent_total", 2, room_kind, &b, &why), -EEXIST);
    CHECK_EQ(define(r, WSL_METRIC_COUNTER, "sent_total", 0, NULL, &b, &why), -EEXIST);
    CHECK_EQ(define(r, WSL_METRIC_GAUGE, "chat_messages_total", 0, NULL, &b, &why), -EINVAL);
    CHECK_EQ(define(r, WSL_METRIC_COUNTER, "room_members_total", 0, NULL, &b, &why), 0);
    wsl_registry_free(r);
}

static void test_registry_series(void)
{
    wsl_registry *r = wsl_registry_new(4, 6);
    wsl_metric *plain, *rooms;
    const char *why;
    const char *labels[] = {"room", "kind"};
    CHECK_EQ(wsl_registry_define(r, WSL_METRIC_GAUGE, "members", "Members of a room.", 0, NULL,
                                 &plain, &why),
             0);
    CHECK_EQ(wsl_registry_define(r, WSL_METRIC_COUNTER, "msgs_total", "Messages by \"room\"\\kind.",
                                 2, labels, &rooms, &why),
             0);
    double *v, *w;
    CHECK_EQ(wsl_metric_series(plain, NULL, NULL, &v, &why), 0);
    *v = 2.5;
    const char *vals[] = {"lobby", "text"};
    size_t lens[] = {5, 4};
    CHECK_EQ(wsl_metric_series(rooms, vals, lens, &v, &why), 0);
    *v += 1;
    CHECK_EQ(wsl_metric_series(rooms, vals, lens, &w, &why), 0);
    CHECK(v == w);
    *w += 2;
    /* Values that only differ in where one ends and the next begins are different series. */
    const char *vals2[] = {"lobbyt", "ext"};
    size_t lens2[] = {6, 3};
    CHECK_EQ(wsl_metric_series(rooms, vals2, lens2, &w, &why), 0);
    CHECK(v != w);
    *w = 1;
    const char *vals3[] = {"a\"b\\c\nd", ""};
    size_t lens3[] = {7, 0};
    CHECK_EQ(wsl_metric_series(rooms, vals3, lens3, &w, &why), 0);
    *w = 0.5;

    wsl_mbuf b = {0};
    wsl_registry_render(&b, r);
    CHECK_STR(text(&b), "# HELP members Members of a room.\n"
                        "# TYPE members gauge\n"
                        "members 2.5\n"
                        "# HELP msgs_total Messages by \"room\"\\\\kind.\n"
                        "# TYPE msgs_total counter\n"
                        "msgs_total{room=\"lobby\",kind=\"text\"} 3\n"
                        "msgs_total{room=\"lobbyt\",kind=\"ext\"} 1\n"
                        "msgs_total{room=\"a\\\"b\\\\c\\nd\",kind=\"\"} 0.5\n");
    wsl_mbuf_free(&b);

    /* Bad values. */
    char big[WSL_METRIC_VALUE_MAX + 1];
    memset(big, 'x', sizeof big);
    const char *bigv[] = {big, "k"};
    size_t bigl[] = {sizeof big, 1};
    CHECK_EQ(wsl_metric_series(rooms, bigv, bigl, &w, &why), -EINVAL);
    bigl[0] = WSL_METRIC_VALUE_MAX;
    CHECK_EQ(wsl_metric_series(rooms, bigv, bigl, &w, &why), 0); /* series 5 of 6 */
    const char *badv[] = {"\xc3", "k"}, *nulv[] = {"a\0b", "k"};
    size_t badl[] = {1, 1}, null[] = {3, 1};
    CHECK_EQ(wsl_metric_series(rooms, badv, badl, &w, &why), -EINVAL);
    CHECK_EQ(wsl_metric_series(rooms, nulv, null, &w, &why), -EINVAL);

    /* The caps: six series in all (the gauge's counts), four metrics. */
    const char *v6[] = {"six", "k"}, *v7[] = {"seven", "k"};
    size_t l6[] = {3, 1}, l7[] = {5, 1};
    CHECK_EQ(wsl_metric_series(rooms, v6, l6, &w, &why), 0);
    CHECK_EQ(wsl_metric_series(rooms, v7, l7, &w, &why), -ENOSPC);
    CHECK(why != NULL);
    CHECK_EQ(wsl_metric_series(rooms, v6, l6, &w, &why), 0); /* existing ones still work */
    wsl_metric *m;
    CHECK_EQ(wsl_registry_define(r, WSL_METRIC_GAUGE, "third", "x", 0, NULL, &m, &why), -ENOSPC);
    const char *one[] = {"x"};
    CHECK_EQ(wsl_registry_define(r, WSL_METRIC_GAUGE, "third", "x", 1, one, &m, &why), 0);
    CHECK_EQ(wsl_registry_define(r, WSL_METRIC_GAUGE, "fourth", "x", 1, one, &m, &why), 0);
    CHECK_EQ(wsl_registry_define(r, WSL_METRIC_GAUGE, "fifth", "x", 1, one, &m, &why), -ENOSPC);
    CHECK_EQ(wsl_registry_define(r, WSL_METRIC_GAUGE, "fourth", "x", 1, one, &m, &why), 0);
    wsl_registry_free(r);

    /* Many series: the table grows and every one is found again. */
    r = wsl_registry_new(1, 5000);
    const char *l1[] = {"n"};
    CHECK_EQ(wsl_registry_define(r, WSL_METRIC_COUNTER, "n_total", "x", 1, l1, &m, &why), 0);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < 5000; i++) {
            char num[16];
            const char *vv[] = {num};
            size_t ll[] = {(size_t)snprintf(num, sizeof num, "%d", i)};
            CHECK_EQ(wsl_metric_series(m, vv, ll, &w, &why), 0);
            if (pass == 0) *w = i;
            if (pass == 1 && *w != i) CHECK_EQ(*w, i);
        }
    }
    wsl_mbuf_free(&b);
    wsl_registry_render(&b, r);
    CHECK(strstr(text(&b), "\nn_total{n=\"4999\"} 4999\n") != NULL);
    wsl_mbuf_free(&b);
    wsl_registry_free(r);
    wsl_registry_free(NULL);
}

int main(void)
{
    test_double();
    test_escaping();
    test_histogram();
    test_close_codes();
    test_counters();
    test_process();
    test_registry_rules();
    test_registry_series();
    TEST_MAIN_END();
}
