/* The --metrics listener: a tiny HTTP/1.1 responder on the loop, on an address of its own (never
 * the public port), answering GET /metrics with the Prometheus text format (0.0.4): the server's
 * counters and gauges, the Redis link, the script's metrics (through a callback) and process_*
 * read from /proc at scrape time. Anything else gets 404 or 405. One request per connection;
 * bounded: at most WSL_METRICS_MAX_CONNS connections (a new one closes the oldest), each closed
 * WSL_METRICS_TIMEOUT_MS after it was accepted whatever it is doing. */
#ifndef WSL_METRICS_HTTP_H
#define WSL_METRICS_HTTP_H

#include "metrics.h"
#include "server.h"

#define WSL_METRICS_MAX_CONNS  16
#define WSL_METRICS_TIMEOUT_MS 5000
#define WSL_METRICS_PATH       "/metrics"

typedef struct wsl_metrics_http wsl_metrics_http;

/* What the layer above adds to each scrape (main: the script's metrics). */
typedef void (*wsl_metrics_collect)(void *ud, wsl_mbuf *out);

/* Listen on host:port (port 0: any free port) on srv's loop. 0 and *out, or a negative errno
 * (the reason logged). collect may be NULL. The address bound is logged ("metrics at ..."). */
int wsl_metrics_http_start(wsl_metrics_http **out, wsl_server *srv, const char *host, int port,
                           wsl_metrics_collect collect, void *ud);

/* "host:port" really bound. */
const char *wsl_metrics_http_address(const wsl_metrics_http *m);

/* The page GET /metrics answers, appended to out. */
void wsl_metrics_http_render(wsl_metrics_http *m, wsl_mbuf *out);

/* Stop listening and close every scrape connection. The memory is released once the loop has run
 * the close callbacks; m must not be used after this call. */
void wsl_metrics_http_close(wsl_metrics_http *m);

#endif
