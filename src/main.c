/* wsluad's entry point: options, finding the script and the bundled pages, signals (SIGINT and
 * SIGTERM shut down gracefully, SIGHUP reloads the script), wiring the server's connection
 * events to the script, and the exit status. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "buf.h"
#include "log.h"
#include "metrics_http.h"
#include "notify.h"
#include "options.h"
#include "script.h"
#include "server.h"
#include "supervisor.h"
#include "tls.h"

/* SIGHUP reloads through a libuv watcher. SIGINT and SIGTERM have a handler of our own, since
 * libuv's watchers only run when the loop turns, which a stuck handler prevents: the first one
 * stops whatever Lua code is running and wakes the loop, which then shuts down gracefully; a
 * second one ends the process at once. */
static uv_signal_t sig_hup;
static uv_async_t stop_async;
static volatile sig_atomic_t stop_signal;
static int worker_number;         /* --workers: this worker's; 0 alone */
static wsl_metrics_http *metrics; /* --metrics, until the shutdown is over */
static wsl_server *tls_server;    /* with --tls-listen: SIGHUP reloads its certificate */

static bool is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static bool is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The directory of this binary, from /proc/self/exe; false if unknown. */
static bool exe_dir(char *out, size_t cap)
{
    ssize_t n = readlink("/proc/self/exe", out, cap - 1);
    if (n <= 0) return false;
    out[n] = '\0';
    char *slash = strrchr(out, '/');
    if (!slash) return false;
    *slash = '\0';
    return true;
}

/* True when this binary runs from the build tree it was compiled in. */
static bool in_build_tree(void)
{
    char exe[PATH_MAX], dir[PATH_MAX];
    return exe_dir(exe, sizeof exe) && realpath(WSLUAD_BUILD_DIR, dir) && strcmp(dir, exe) == 0;
}

/* The installed share/wsluad: next to the binary (so an install under any prefix works), or
 * else where the build was configured to install. */
static const char *installed_dir(void)
{
    static char dir[PATH_MAX];
    char exe[PATH_MAX], rel[PATH_MAX + 32];
    if (exe_dir(exe, sizeof exe)) {
        snprintf(rel, sizeof rel, "%s/../share/wsluad", exe);
        if (realpath(rel, dir) && is_dir(dir)) return dir;
    }
    return WSLUAD_DATA_DIR;
}

/* The script as given if it exists; otherwise the shipped one of that name: from the source
 * tree's lua/ when this binary runs from its build tree, then from the installed directory. On
 * failure `why` says what is wrong, naming only the places really searched (a script directory
 * that does not exist is not one) and, when the name is one of the examples, where it is. */
static bool find_script(const char *name, char *out, size_t cap, char *why, size_t whycap)
{
    char path[2 * PATH_MAX];
    struct stat st;
    if (stat(name, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            snprintf(why, whycap, "script '%s' is a directory (give the .lua file to run)", name);
            return false;
        }
        if (!S_ISREG(st.st_mode)) {
            snprintf(why, whycap, "script '%s' is not a regular file", name);
            return false;
        }
        if (!realpath(name, out)) snprintf(out, cap, "%s", name);
        return true;
    }
    if (strchr(name, '/')) {
        snprintf(why, whycap, "cannot open script '%s': %s", name, strerror(errno));
        return false;
    }
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) snprintf(cwd, sizeof cwd, "%s", ".");
    char lua[PATH_MAX + 8];
    snprintf(lua, sizeof lua, "%s/lua", installed_dir());
    const char *dirs[] = {in_build_tree() ? WSLUAD_SOURCE_DIR "/lua" : NULL, lua};
    size_t w = (size_t)snprintf(
        why, whycap, "cannot find script '%s': not in the current directory (%s)", name, cwd);
    bool searched = false;
    for (size_t i = 0; i < 2; i++) {
        if (!dirs[i] || !is_dir(dirs[i])) continue;
        searched = true;
        snprintf(path, sizeof path, "%s/%s", dirs[i], name);
        if (is_file(path)) {
            if (!realpath(path, out)) return false;
            return true;
        }
        if (w < whycap) w += (size_t)snprintf(why + w, whycap - w, " nor in %s", dirs[i]);
    }
    if (!searched && w < whycap)
        w += (size_t)snprintf(why + w, whycap - w, "; wsluad's scripts are not installed (no %s)",
                              lua);
    /* `wsluad rooms.lua` from elsewhere: the examples are not installed as scripts. */
    char examples[PATH_MAX + 32];
    if (in_build_tree())
        snprintf(examples, sizeof examples, "%s", WSLUAD_SOURCE_DIR "/examples");
    else
        snprintf(examples, sizeof examples, "%s/../doc/wsluad/examples", installed_dir());
    snprintf(path, sizeof path, "%s/%s", examples, name);
    char example[PATH_MAX];
    if (is_file(path) && realpath(path, example) && w < whycap)
        snprintf(why + w, whycap - w, "; %s is an example script: give its path, wsluad %s", name,
                 example);
    return false;
}

/* The bundled pages: examples/www in the source tree, www once installed. */
static const char *default_static(void)
{
    static char dir[PATH_MAX];
    if (in_build_tree() && is_dir(WSLUAD_SOURCE_DIR "/examples/www"))
        return WSLUAD_SOURCE_DIR "/examples/www";
    snprintf(dir, sizeof dir, "%s/www", installed_dir());
    return is_dir(dir) ? dir : NULL;
}

/* The certificate and key again, for the connections accepted from now on; a pair that does not
 * load leaves the old one in use. */
static void reload_tls(wsl_server *srv)
{
    const wsl_options *o = wsl_server_options(srv);
    wsl_tls_ctx *ctx;
    char why[1024], serial[128];
    if (wsl_tls_ctx_new(&ctx, o->tls_cert, o->tls_key, why, sizeof why) != 0) {
        wsl_warn("SIGHUP: %s: keeping the certificate in use", why);
        return;
    }
    wsl_server_set_tls(srv, ctx);
    wsl_info("SIGHUP: reloaded the certificate %s (serial %s)", o->tls_cert,
             wsl_tls_ctx_serial(ctx, serial, sizeof serial));
}

static void on_hup(uv_signal_t *h, int signum)
{
    (void)signum;
    if (stop_signal) { /* shutting down: nothing left to reload for (as the supervisor does) */
        wsl_info("SIGHUP: ignored, the server is shutting down");
        return;
    }
    wsl_info("SIGHUP: reloading the script");
    /* systemd hears of the reload from us, or from the supervisor once every worker reloaded. */
    if (!worker_number) wsl_notify_reloading();
    if (tls_server) reload_tls(tls_server);
    int r = wsl_script_reload(h->data);
    if (worker_number)
        wsl_worker_report(r == 0 ? WSL_WORKER_RELOADED : WSL_WORKER_RELOAD_FAILED);
    else
        wsl_notify("READY=1\nSTATUS=%s", r == 0 ? "reloaded" : "reload failed: old code running");
}

static void on_stop_signal(int sig)
{
    if (stop_signal) { /* the second one: no more waiting */
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    stop_signal = sig;
    wsl_server_stop_asked(stop_async.data);
    wsl_script_interrupt("interrupted: the server is shutting down", sig);
    uv_async_send(&stop_async);
}

static void on_stop(uv_async_t *h)
{
    wsl_info("%s: shutting down", stop_signal == SIGINT ? "SIGINT" : "SIGTERM");
    wsl_notify("STOPPING=1");
    wsl_server_shutdown(h->data);
}

/* The shutdown is over: release what keeps the loop alive. */
static void on_stopped(wsl_server *srv)
{
    wsl_script_stop(srv->events_ud);
    wsl_metrics_http_close(metrics);
    metrics = NULL;
    uv_close((uv_handle_t *)&sig_hup, NULL);
    uv_close((uv_handle_t *)&stop_async, NULL);
}

/* Listen for signals, serve until the shutdown is over. */
static void serve(uv_loop_t *loop, wsl_server *srv, wsl_script *script)
{
    srv->on_stopped = on_stopped;
    uv_signal_init(loop, &sig_hup);
    sig_hup.data = script;
    uv_signal_start(&sig_hup, on_hup, SIGHUP);
    uv_async_init(loop, &stop_async, on_stop);
    stop_async.data = srv;
    struct sigaction sa = {.sa_handler = on_stop_signal, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (srv->tls) tls_server = srv;
    /* Tests and supervisors take this line to mean "ready": signals are handled by now. */
    char addrs[WSL_MAX_LISTEN * 160];
    wsl_info("wsluad %s listening on %s (script %s%s%s)", WSLUAD_VERSION,
             wsl_server_addresses(srv, addrs, sizeof addrs), wsl_script_path(script),
             srv->has_files ? ", files from " : "", srv->has_files ? srv->files.root : "");
    if (worker_number)
        wsl_worker_report(WSL_WORKER_LISTENING);
    else
        wsl_notify("READY=1\nSTATUS=listening on %s", srv->addr);
    uv_run(loop, UV_RUN_DEFAULT);
}

static void collect_script_metrics(void *script, wsl_mbuf *out)
{
    wsl_script_metrics(script, out);
}

/* --metrics: with --workers, worker N serves on PORT+N-1 (port 0: each a free port). */
static int start_metrics(const wsl_options *o, wsl_server *srv, wsl_script *script)
{
    int port = o->metrics_port && o->worker > 1 ? o->metrics_port + o->worker - 1 : o->metrics_port;
    if (port > 65535) {
        wsl_error("cannot serve metrics: port %d is past 65535", port);
        return -EINVAL;
    }
    return wsl_metrics_http_start(&metrics, srv, o->metrics_host, port, collect_script_metrics,
                                  script);
}

static void close_all(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Close whatever is still open and let the loop run the close callbacks. */
static void drain_loop(uv_loop_t *loop)
{
    uv_walk(loop, close_all, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
}

int main(int argc, char **argv)
{
    wsl_tls_global_init(); /* before anything allocates through OpenSSL */
    wsl_options opt;
    switch (wsl_options_parse(&opt, argc, argv)) {
    case WSL_OPTIONS_EXIT:
        return WSL_EXIT_OK;
    case WSL_OPTIONS_USAGE:
        return WSL_EXIT_USAGE;
    default:
        break;
    }
    wsl_log_set_level(opt.verbosity < 0   ? WSL_LOG_WARN
                      : opt.verbosity > 0 ? WSL_LOG_DEBUG
                                          : WSL_LOG_INFO);
    wsl_log_set_format(opt.log_json ? WSL_LOG_JSON : WSL_LOG_TEXT);
    if (!opt.check) wsl_notify_init();
    signal(SIGPIPE, SIG_IGN);

    char script_path[PATH_MAX], why[4 * PATH_MAX];
    if (!find_script(opt.script, script_path, sizeof script_path, why, sizeof why)) {
        wsl_log_fatal("%s", why);
        return WSL_EXIT_SCRIPT;
    }
    /* The certificate is read before the workers are forked: a bad one stops everything at
     * once, and the workers share the context (and so its session ticket keys). */
    wsl_tls_ctx *tls = NULL;
    if (opt.tls_cert) {
        char twhy[1024];
        if (wsl_tls_ctx_new(&tls, opt.tls_cert, opt.tls_key, twhy, sizeof twhy) != 0) {
            wsl_log_fatal("%s", twhy);
            return WSL_EXIT_USAGE;
        }
    }
    /* The supervisor returns only once its workers are gone; a worker goes on from here. */
    int supervised;
    if (opt.workers > 1 && !opt.check && wsl_supervise(&opt, &supervised) == 0) {
        wsl_tls_ctx_free(tls);
        wsl_tls_cleanup();
        return supervised;
    }
    worker_number = opt.worker;

    uv_loop_t *loop = uv_default_loop();
    wsl_server srv;
    if (wsl_server_init(&srv, loop, &opt) != 0) {
        wsl_error("out of memory");
        wsl_tls_ctx_free(tls);
        return WSL_EXIT_SCRIPT;
    }
    wsl_server_set_tls(&srv, tls);
    const char *files = opt.static_off ? NULL : opt.static_dir ? opt.static_dir : default_static();
    if (files) {
        int r = wsl_static_open(&srv.files, files);
        if (r != 0 && opt.static_dir) {
            wsl_log_fatal("--static %s: %s", files, strerror(-r));
            wsl_server_free(&srv);
            return WSL_EXIT_USAGE;
        }
        srv.has_files = r == 0;
    }

    /* Before the script loads, so that its top level knows ws.node; the link comes up on the
     * loop (the URL was checked with the options; joining never waits for Redis). */
    if (opt.redis_url && !opt.check) wsl_server_join(&srv, opt.redis_url, opt.redis_prefix);
    int status = WSL_EXIT_OK;
    wsl_script *script = wsl_script_new(&srv, script_path);
    if (!script || wsl_script_load(script) != 0) {
        status = WSL_EXIT_SCRIPT;
    } else if (opt.check) {
        printf("%s: OK\n", script_path);
    } else if (wsl_server_listen(&srv) != 0 ||
               (opt.metrics && start_metrics(&opt, &srv, script) != 0)) {
        status = WSL_EXIT_LISTEN;
    } else {
        wsl_server_set_events(&srv, &wsl_script_events, script);
        if (opt.reload) wsl_script_watch(script);
        serve(loop, &srv, script);
    }

    /* The one way out. */
    wsl_server_leave(&srv);
    if (script) wsl_script_stop(script);
    wsl_metrics_http_close(metrics);
    drain_loop(loop);
    wsl_script_free(script);
    wsl_server_free(&srv);
    wsl_buf_pool_drain();
    wsl_tls_cleanup();
    if (status == WSL_EXIT_OK && !opt.check) wsl_info("bye");
    return status;
}
