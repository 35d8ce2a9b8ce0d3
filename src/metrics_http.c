/* The --metrics listener: libuv TCP handles (scrapes are rare, so the stream API's convenience
 * costs nothing here), http.c's parser for the request, metrics.c's rendering for the answer.
 * Every connection is bounded in time and in number; its request buffer is fixed. */
#include "metrics_http.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http.h"
#include "list.h"
#include "listen.h"
#include "log.h"

/* Owned by main (wsl_metrics_http_start); freed by the last close callback after
 * wsl_metrics_http_close. */
struct wsl_metrics_http {
    wsl_server *srv;
    wsl_metrics_collect collect;
    void *collect_ud;
    uv_tcp_t listener;
    wsl_list scrapes; /* oldest first */
    size_t nscrapes;
    unsigned handles; /* libuv handles not yet closed, the listener's included */
    bool closing;
    char btime[64]; /* the "btime" line of /proc/stat, read once */
    long hz, page;
    char addr[128];
};

/* One scrape connection; owned by the listener's list, freed once both handles are closed. */
typedef struct scrape {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t write;
    uv_shutdown_t shutdown;
    wsl_metrics_http *mh;
    wsl_list link;
    wsl_mbuf out; /* the answer: head and body */
    unsigned handles;
    bool answered, closing;
    size_t len;
    char req[WSL_HTTP_MAX_HEAD];
} scrape;

/* ---- the page ------------------------------------------------------------------------------ */

static void gauge(wsl_mbuf *b, const char *name, const char *help, uint64_t v)
{
    wsl_prom_header(b, name, help, WSL_METRIC_GAUGE);
    wsl_prom_sample_u64(b, name, 0, NULL, NULL, v);
}

static void counter(wsl_mbuf *b, const char *name, const char *help, uint64_t v)
{
    wsl_prom_header(b, name, help, WSL_METRIC_COUNTER);
    wsl_prom_sample_u64(b, name, 0, NULL, NULL, v);
}

static void redis_metrics(wsl_mbuf *b, const wsl_cluster *c)
{
    wsl_cluster_counters st;
    wsl_cluster_stats(c, &st);
    gauge(b, "wsluad_redis_up", "1 while the Redis link's three connections are ready, else 0.",
          st.up);
    counter(b, "wsluad_redis_published_total", "Messages handed to Redis for the other nodes.",
            st.published);
    counter(b, "wsluad_redis_received_total", "Messages received from other nodes through Redis.",
            st.received);
    static const char *const reason[] = {"reason"};
    const char *name = "wsluad_redis_dropped_total";
    wsl_prom_header(b, name, "Messages for other nodes dropped, by reason.", WSL_METRIC_COUNTER);
    const char *down[] = {"down"}, *full[] = {"full"}, *refused[] = {"refused"},
               *invalid[] = {"invalid"};
    wsl_prom_sample_u64(b, name, 1, reason, down, st.dropped_down);
    wsl_prom_sample_u64(b, name, 1, reason, full, st.dropped_full);
    wsl_prom_sample_u64(b, name, 1, reason, refused, st.dropped_refused);
    wsl_prom_sample_u64(b, name, 1, reason, invalid, st.invalid);
    counter(b, "wsluad_redis_commands_total", "ws.redis commands sent.", st.commands);
    counter(b, "wsluad_redis_reconnects_total", "Connections to Redis made again after a loss.",
            st.reconnects);
    gauge(b, "wsluad_redis_queued_bytes",
          "Bytes sent to Redis whose replies have not come back yet.",
          (uint64_t)(st.pub_queued + st.cmd_queued));
}

/* Read a small file whole; -1 when it cannot be read. */
static ssize_t read_small(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t len = 0;
    ssize_t r;
    while (len < cap - 1 && (r = read(fd, buf + len, cap - 1 - len)) != 0) {
        if (r < 0) {
            if (errno == EINTR) continue;
            close(fd);
            return -1;
        }
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    return (ssize_t)len;
}

static uint64_t open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) return 0;
    uint64_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && atoi(e->d_name) != dirfd(d)) n++;
    closedir(d);
    return n;
}

static void process_metrics(wsl_metrics_http *m, wsl_mbuf *b)
{
    char stat[2048];
    wsl_process_stats p = {0};
    if (read_small("/proc/self/stat", stat, sizeof stat) < 0 ||
        wsl_process_parse(stat, m->btime, m->hz, m->page, &p) != 0)
        return; /* not Linux, or no /proc: the process_* metrics are left out */
    p.open_fds = open_fds();
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        p.max_fds = (uint64_t)rl.rlim_cur;
    wsl_process_render(b, &p);
}

void wsl_metrics_http_render(wsl_metrics_http *m, wsl_mbuf *b)
{
    wsl_server *srv = m->srv;
    wsl_prom_header(b, "wsluad_info", "The version of wsluad (the value is always 1).",
                    WSL_METRIC_GAUGE);
    static const char *const version[] = {"version"};
    static const char *const value[] = {WSLUAD_VERSION};
    wsl_prom_sample_u64(b, "wsluad_info", 1, version, value, 1);
    wsl_metrics_render(b, &wsl_metrics);
    gauge(b, "wsluad_open_connections", "WebSocket connections open now.", wsl_server_count(srv));
    gauge(b, "wsluad_max_connections", "The connection limit (--max-connections).",
          wsl_server_max_connections(srv));
    size_t subs, topics = wsl_topics_count(srv->topics, &subs);
    gauge(b, "wsluad_topics", "Topics with at least one subscriber on this node.", topics);
    gauge(b, "wsluad_subscriptions", "Subscriptions of connections to topics on this node.", subs);
    if (wsl_server_cluster(srv)) redis_metrics(b, wsl_server_cluster(srv));
    if (m->collect) m->collect(m->collect_ud, b);
    process_metrics(m, b);
}

/* ---- scrape connections --------------------------------------------------------------------- */

static void maybe_free(wsl_metrics_http *m)
{
    if (m->closing && m->handles == 0) free(m);
}

static void on_scrape_closed(uv_handle_t *h)
{
    scrape *sc = h->data;
    wsl_metrics_http *m = sc->mh;
    m->handles--;
    if (--sc->handles == 0) {
        wsl_mbuf_free(&sc->out);
        free(sc);
    }
    maybe_free(m);
}

static void scrape_close(scrape *sc)
{
    if (sc->closing) return;
    sc->closing = true;
    wsl_list_remove(&sc->link);
    sc->mh->nscrapes--;
    uv_close((uv_handle_t *)&sc->timer, on_scrape_closed);
    uv_close((uv_handle_t *)&sc->tcp, on_scrape_closed);
}

static void on_timeout(uv_timer_t *t)
{
    scrape_close(t->data);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status; /* the peer's EOF, an error or the timeout closes it */
}

static void on_written(uv_write_t *req, int status)
{
    scrape *sc = req->data;
    if (status < 0) {
        scrape_close(sc);
        return;
    }
    /* FIN after the answer, then read until the peer's: closing with unread bytes from it would
     * send a reset that can destroy the answer in flight. */
    sc->shutdown.data = sc;
    if (uv_shutdown(&sc->shutdown, (uv_stream_t *)&sc->tcp, on_shutdown) != 0) scrape_close(sc);
}

static bool span_is(wsl_span s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.p, lit, s.len) == 0;
}

static void answer(scrape *sc, const wsl_request *req, wsl_req_kind kind)
{
    char head[512];
    int status = 200;
    const char *why = NULL;
    if (kind == WSL_REQ_ERROR) {
        status = req->status;
        why = req->error;
    } else if (!span_is(req->method, "GET") && !span_is(req->method, "HEAD")) {
        status = 405;
    } else if (!span_is(req->path, WSL_METRICS_PATH)) {
        status = 404;
        why = "only " WSL_METRICS_PATH " is here";
    }
    wsl_mbuf *out = &sc->out;
    if (status == 200) {
        wsl_mbuf body = {0};
        wsl_metrics_http_render(sc->mh, &body);
        if (!body.failed) {
            int n = snprintf(head, sizeof head,
                             "HTTP/1.1 200 OK\r\n"
                             "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                             "Content-Length: %zu\r\n"
                             "Cache-Control: no-store\r\n"
                             "Connection: close\r\n\r\n",
                             body.len);
            wsl_mbuf_add(out, head, (size_t)n);
            if (!span_is(req->method, "HEAD")) wsl_mbuf_add(out, body.p ? body.p : "", body.len);
        }
        wsl_mbuf_free(&body);
        if (out->failed || !out->len) {
            wsl_mbuf_free(out);
            status = 500;
            why = "out of memory";
        }
    }
    if (status != 200) {
        char body[256];
        snprintf(body, sizeof body, "%s\n", why ? why : wsl_http_reason(status));
        /* A 405 gets its Allow header from wsl_http_error_response. */
        size_t n = wsl_http_error_response(head, sizeof head, status, NULL, body);
        wsl_mbuf_add(out, head, n);
    }
    if (out->failed || !out->len) {
        scrape_close(sc);
        return;
    }
    sc->answered = true;
    sc->write.data = sc;
    uv_buf_t buf = uv_buf_init(out->p, (unsigned)out->len);
    if (uv_write(&sc->write, (uv_stream_t *)&sc->tcp, &buf, 1, on_written) != 0) scrape_close(sc);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char sink[4096]; /* what follows the request is read and thrown away */
    scrape *sc = h->data;
    (void)suggested;
    if (sc->answered)
        *buf = uv_buf_init(sink, sizeof sink);
    else
        *buf = uv_buf_init(sc->req + sc->len, (unsigned)(sizeof sc->req - sc->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    scrape *sc = s->data;
    (void)buf;
    if (nread < 0) { /* EOF (after our answer, the normal end) or an error */
        scrape_close(sc);
        return;
    }
    if (nread == 0 || sc->answered) return;
    sc->len += (size_t)nread;
    wsl_request req;
    wsl_req_kind kind = wsl_http_parse(&req, sc->req, sc->len);
    if (kind != WSL_REQ_INCOMPLETE) answer(sc, &req, kind);
}

static void on_connection(uv_stream_t *server, int status)
{
    wsl_metrics_http *m = server->data;
    if (status < 0) return;
    scrape *sc = calloc(1, sizeof *sc);
    if (!sc) {
        wsl_warn("metrics: out of memory for a scrape");
        return;
    }
    sc->mh = m;
    uv_tcp_init(server->loop, &sc->tcp);
    uv_timer_init(server->loop, &sc->timer);
    sc->tcp.data = sc->timer.data = sc;
    sc->handles = 2;
    m->handles += 2;
    wsl_list_push_back(&m->scrapes, &sc->link);
    m->nscrapes++;
    if (uv_accept(server, (uv_stream_t *)&sc->tcp) != 0) {
        scrape_close(sc);
        return;
    }
    /* A client that opens connections and sends nothing cannot lock scrapes out: the oldest
     * goes. */
    if (m->nscrapes > WSL_METRICS_MAX_CONNS)
        scrape_close(wsl_list_entry(m->scrapes.next, scrape, link));
    uv_timer_start(&sc->timer, on_timeout, WSL_METRICS_TIMEOUT_MS, 0);
    if (uv_read_start((uv_stream_t *)&sc->tcp, on_alloc, on_read) != 0) scrape_close(sc);
}

/* ---- the listener --------------------------------------------------------------------------- */

/* The btime line of /proc/stat: the boot time, which process_start_time_seconds needs. */
static void read_btime(char *out, size_t cap)
{
    out[0] = '\0';
    FILE *f = fopen("/proc/stat", "re");
    if (!f) return;
    char *line = NULL;
    size_t n = 0;
    while (getline(&line, &n, f) > 0)
        if (strncmp(line, "btime ", 6) == 0) {
            snprintf(out, cap, "%s", line);
            break;
        }
    free(line);
    fclose(f);
}

int wsl_metrics_http_start(wsl_metrics_http **out, wsl_server *srv, const char *host, int port,
                           wsl_metrics_collect collect, void *ud)
{
    wsl_metrics_http *m = calloc(1, sizeof *m);
    if (!m) return -ENOMEM;
    int fd = wsl_listen_tcp(host, port, 64, false, "serve metrics on", m->addr, sizeof m->addr);
    if (fd < 0) {
        free(m);
        return fd;
    }
    m->srv = srv;
    m->collect = collect;
    m->collect_ud = ud;
    m->hz = sysconf(_SC_CLK_TCK);
    m->page = sysconf(_SC_PAGESIZE);
    read_btime(m->btime, sizeof m->btime);
    wsl_list_init(&m->scrapes);
    uv_loop_t *loop = wsl_server_loop(srv);
    uv_tcp_init(loop, &m->listener);
    m->listener.data = m;
    m->handles = 1;
    int r = uv_tcp_open(&m->listener, fd);
    bool owned = r == 0; /* from now on closing the handle closes fd */
    if (r == 0) r = uv_listen((uv_stream_t *)&m->listener, 64, on_connection);
    if (r != 0) {
        wsl_error("cannot serve metrics on %s: %s", m->addr, uv_strerror(r));
        if (!owned) close(fd);
        wsl_metrics_http_close(m);
        return r;
    }
    wsl_metrics.timing = true;
    wsl_info("metrics at http://%s" WSL_METRICS_PATH, m->addr);
    *out = m;
    return 0;
}

const char *wsl_metrics_http_address(const wsl_metrics_http *m)
{
    return m->addr;
}

static void on_listener_closed(uv_handle_t *h)
{
    wsl_metrics_http *m = h->data;
    m->handles--;
    maybe_free(m);
}

void wsl_metrics_http_close(wsl_metrics_http *m)
{
    if (!m || m->closing) return;
    m->closing = true;
    while (!wsl_list_empty(&m->scrapes))
        scrape_close(wsl_list_entry(m->scrapes.next, scrape, link));
    uv_close((uv_handle_t *)&m->listener, on_listener_closed);
}
