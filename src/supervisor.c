/* The supervisor of --workers: forks the workers, restarts those that die (with a back-off),
 * relays SIGHUP, SIGTERM and SIGINT, tells systemd when the workers are ready, and collects the
 * exit status. Plain POSIX: every signal it cares about stays blocked and is taken synchronously
 * with sigtimedwait, so there are no handlers to race with, and no event loop and no Lua in this
 * process. Workers report to it with a queued real-time signal, so that it stays one loop. */
#include "supervisor.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "notify.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define STABLE_MS      10000 /* a worker up this long is healthy: its back-off starts over */

/* One per worker number; owned by wsl_supervise, freed before it returns (in every process). */
typedef struct worker {
    pid_t pid;           /* 0: not running */
    unsigned runs;       /* times started */
    uint64_t started;    /* ms, monotonic */
    uint64_t restart_at; /* ms, monotonic: when a worker that is not running starts again */
    unsigned backoff;    /* ms: the delay before the restart after its next death */
    bool listening;      /* this run has reported WSL_WORKER_LISTENING */
    bool reloaded;       /* since the last SIGHUP: reloaded, or started with the new code */
    bool reload_failed;  /* since the last SIGHUP: its reload failed, the old code still runs */
} worker;

#define REPORT_SIG SIGRTMIN

/* In a worker: its supervisor's pid, for wsl_worker_report. */
static pid_t supervisor_pid;

void wsl_worker_report(int event)
{
    /* If the supervisor is gone, our parent is some reaper that must not get the signal (to
     * systemd as PID 1, SIGRTMIN means "go to default.target"). */
    if (supervisor_pid && getppid() == supervisor_pid &&
        sigqueue(supervisor_pid, REPORT_SIG, (union sigval){.sival_int = event}) != 0)
        wsl_warn("cannot report to the supervisor: %s", strerror(errno));
}

/* What the supervisor has told systemd; owned by wsl_supervise. */
typedef struct readiness {
    bool ready;     /* READY=1 sent: every worker listened once */
    bool reloading; /* RELOADING=1 sent, READY=1 not yet */
} readiness;

/* After any change: READY=1 when the last worker is up, or when the last running worker has
 * reloaded (one that died meanwhile starts with the new code anyway). */
static void tell_systemd(const worker *ws, int n, readiness *r)
{
    int listening = 0, pending = 0, failed = 0;
    for (int i = 1; i <= n; i++) {
        listening += ws[i].listening;
        pending += ws[i].pid > 0 && !ws[i].reloaded;
        failed += ws[i].pid > 0 && ws[i].reload_failed;
    }
    if (!r->ready && listening == n) {
        r->ready = true;
        wsl_info("all %d workers listening", n);
        wsl_notify("READY=1\nSTATUS=%d workers listening", n);
    } else if (r->reloading && pending == 0 && failed) {
        /* As a single process says: ready again, but nothing changed where it failed. */
        r->reloading = false;
        wsl_warn("the reload failed in %d of %d workers: they run the old code", failed, n);
        wsl_notify("READY=1\nSTATUS=%d workers, reload failed in %d: old code running", n, failed);
    } else if (r->reloading && pending == 0) {
        r->reloading = false;
        wsl_info("every worker has reloaded");
        wsl_notify("READY=1\nSTATUS=%d workers, reloaded", n);
    }
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Installed only so that SIGCHLD is never discarded as "ignored"; it stays blocked and is taken
 * by sigtimedwait, so this never runs. */
static void on_sigchld(int sig)
{
    (void)sig;
}

/* Port 0 would give every worker a different port. Bind a SO_REUSEPORT socket here to learn a
 * free port and keep it bound, never listening (so it takes no connections), so the port stays
 * ours while workers come and go. Returns the socket, or a negative errno (logged). */
static int reserve_port(wsl_listen_opt *o)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res;
    int gai = getaddrinfo(o->host, "0", &hints, &res);
    if (gai != 0) {
        wsl_error("cannot listen on %s:0: %s", o->host, gai_strerror(gai));
        return -EINVAL;
    }
    int err = EADDRNOTAVAIL, fd = -1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
            (ai->ai_family == AF_INET6 &&
             setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) ||
            bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (fd >= 0 && getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        err = errno;
        close(fd);
        fd = -1;
    }
    if (fd < 0) {
        wsl_error("cannot listen on %s:0: %s", o->host, strerror(err));
        return -err;
    }
    o->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

static void close_reserved(const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fds[i] >= 0) close(fds[i]);
}

/* "exited with status 1", "killed by signal 9 (Killed)". */
static const char *describe(int st, char *buf, size_t cap)
{
    if (WIFEXITED(st))
        snprintf(buf, cap, "exited with status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, cap, "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(buf, cap, "ended (wait status %#x)", (unsigned)st);
    return buf;
}

/* The status a worker contributes once we asked it to stop. Dying of the very signal that was
 * passed on counts as a clean stop: it arrived before the worker had set up its handlers. */
static int stop_status(int st, int stop_sig)
{
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) {
        int sig = WTERMSIG(st);
        return sig == stop_sig || sig == SIGTERM ? WSL_EXIT_OK : 128 + sig;
    }
    return WSL_EXIT_SCRIPT;
}

static void relay(const worker *ws, int n, int sig)
{
    for (int i = 1; i <= n; i++)
        if (ws[i].pid > 0 && kill(ws[i].pid, sig) != 0 && errno != ESRCH)
            wsl_warn("cannot signal worker %d (pid %d): %s", i, (int)ws[i].pid, strerror(errno));
}

/* What a new worker undoes of the supervisor before it returns to main. */
static void become_worker(pid_t supervisor, const int *reserved, size_t n, const sigset_t *mask,
                          const struct sigaction *chld)
{
    /* Die with the supervisor (a SIGKILL to it included): the graceful way. If it is already
     * gone, nobody would ever stop or reload us. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != supervisor) _exit(WSL_EXIT_OK);
    /* A group of our own, so that a Ctrl-C (or a kill of the terminal's group) reaches the
     * workers once, through the supervisor: a second SIGINT means "stop now" to a worker. */
    setpgid(0, 0);
    for (size_t i = 0; i < n; i++)
        if (reserved[i] >= 0) close(reserved[i]);
    sigaction(SIGCHLD, chld, NULL);
    /* A SIGHUP before the worker installs its handler would kill it; it is about to load the
     * script anyway, so ignoring it until then loses nothing. */
    signal(SIGHUP, SIG_IGN);
    sigprocmask(SIG_SETMASK, mask, NULL);
    supervisor_pid = supervisor;
    wsl_notify_forget(); /* systemd listens to the supervisor only (NotifyAccess=main) */
}

int wsl_supervise(wsl_options *o, int *status)
{
    int n = o->workers;
    int reserved[WSL_MAX_LISTEN];
    for (size_t i = 0; i < o->nlisten; i++) {
        reserved[i] = -1;
        if (o->listen[i].port == 0 && (reserved[i] = reserve_port(&o->listen[i])) < 0) {
            close_reserved(reserved, i);
            *status = WSL_EXIT_LISTEN;
            return 0;
        }
    }
    worker *ws = calloc((size_t)n + 1, sizeof *ws); /* ws[1..n], by worker number */
    if (!ws) {
        wsl_error("out of memory");
        close_reserved(reserved, o->nlisten);
        *status = WSL_EXIT_SCRIPT;
        return 0;
    }
    for (int i = 1; i <= n; i++)
        ws[i].backoff = BACKOFF_MIN_MS;

    sigset_t relayed, old_mask;
    sigemptyset(&relayed);
    sigaddset(&relayed, SIGCHLD);
    sigaddset(&relayed, SIGHUP);
    sigaddset(&relayed, SIGTERM);
    sigaddset(&relayed, SIGINT);
    sigaddset(&relayed, REPORT_SIG);
    struct sigaction chld = {.sa_handler = on_sigchld, .sa_flags = SA_NOCLDSTOP}, old_chld;
    sigemptyset(&chld.sa_mask);
    sigaction(SIGCHLD, &chld, &old_chld);
    sigprocmask(SIG_BLOCK, &relayed, &old_mask);

    wsl_log_set_name("supervisor");
    char addrs[WSL_MAX_LISTEN * 80];
    wsl_info("wsluad %s: starting %d workers on %s", WSLUAD_VERSION, n,
             wsl_listen_list(o, addrs, sizeof addrs));

    pid_t self = getpid();
    int alive = 0, result = WSL_EXIT_OK, stop_sig = 0;
    bool stopping = false;
    readiness told = {0};
    for (;;) {
        int st;
        pid_t pid;
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
            int i = 1;
            while (i <= n && ws[i].pid != pid)
                i++;
            if (i > n) continue;
            worker *w = &ws[i];
            uint64_t now = now_ms();
            char why[96];
            w->pid = 0;
            w->listening = w->reload_failed = false;
            alive--;
            if (stopping) {
                int code = stop_status(st, stop_sig);
                wsl_log(code != WSL_EXIT_OK ? WSL_LOG_WARN : WSL_LOG_INFO, "worker %d %s", i,
                        describe(st, why, sizeof why));
                if (result == WSL_EXIT_OK) result = code;
            } else if (w->runs == 1 && WIFEXITED(st) && WEXITSTATUS(st) != 0) {
                /* The start-up rule (supervisor.h): what failed here fails for every worker. */
                wsl_error("worker %d %s at start-up: stopping", i, describe(st, why, sizeof why));
                result = WEXITSTATUS(st);
                stopping = true;
                stop_sig = SIGTERM;
                relay(ws, n, SIGTERM);
            } else {
                if (now - w->started >= STABLE_MS) w->backoff = BACKOFF_MIN_MS;
                w->restart_at = now + w->backoff;
                wsl_warn("worker %d (pid %d) %s; restarting it in %u ms", i, (int)pid,
                         describe(st, why, sizeof why), w->backoff);
                w->backoff = w->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : w->backoff * 2;
            }
        }
        if (stopping && alive == 0) break;
        if (!stopping) tell_systemd(ws, n, &told);

        uint64_t now = now_ms(), next = UINT64_MAX;
        for (int i = 1; i <= n && !stopping; i++) {
            worker *w = &ws[i];
            if (w->pid != 0) continue;
            if (w->restart_at > now) {
                if (w->restart_at < next) next = w->restart_at;
                continue;
            }
            fflush(NULL);
            pid = fork();
            if (pid == 0) {
                become_worker(self, reserved, o->nlisten, &old_mask, &old_chld);
                free(ws);
                char name[16];
                snprintf(name, sizeof name, "w%d", i);
                wsl_log_set_name(name);
                o->worker = i;
                return i;
            }
            if (pid < 0) {
                wsl_error("cannot start worker %d: %s", i, strerror(errno));
                w->restart_at = now + w->backoff;
                if (w->restart_at < next) next = w->restart_at;
                continue;
            }
            w->pid = pid;
            w->runs++;
            w->started = now;
            alive++;
            wsl_info("worker %d started (pid %d)", i, (int)pid);
        }

        siginfo_t info;
        int sig;
        if (next == UINT64_MAX) {
            sig = sigwaitinfo(&relayed, &info);
        } else {
            uint64_t ms = next - now;
            struct timespec timeout = {.tv_sec = (time_t)(ms / 1000),
                                       .tv_nsec = (long)(ms % 1000) * 1000000};
            sig = sigtimedwait(&relayed, &info, &timeout);
        }
        if (sig == SIGHUP && !stopping) {
            wsl_info("SIGHUP: reloading every worker");
            if (told.ready) { /* before that, systemd is still waiting for READY=1 */
                told.reloading = true;
                for (int i = 1; i <= n; i++)
                    ws[i].reloaded = ws[i].reload_failed = false;
                wsl_notify_reloading();
            }
            relay(ws, n, SIGHUP);
        } else if (sig == REPORT_SIG && info.si_code == SI_QUEUE) {
            int i = 1;
            while (i <= n && (ws[i].pid == 0 || ws[i].pid != info.si_pid))
                i++;
            if (i <= n && info.si_value.sival_int == WSL_WORKER_LISTENING) {
                ws[i].listening = ws[i].reloaded = true;
                wsl_debug("worker %d listening", i);
            } else if (i <= n && info.si_value.sival_int == WSL_WORKER_RELOADED) {
                ws[i].reloaded = true;
                wsl_debug("worker %d reloaded", i);
            } else if (i <= n && info.si_value.sival_int == WSL_WORKER_RELOAD_FAILED) {
                ws[i].reloaded = ws[i].reload_failed = true;
                wsl_debug("worker %d failed to reload", i);
            }
        } else if (sig == SIGTERM || sig == SIGINT) {
            const char *name = sig == SIGINT ? "SIGINT" : "SIGTERM";
            if (!stopping) {
                wsl_info("%s: stopping the workers", name);
                wsl_notify("STOPPING=1");
            } else
                wsl_info("%s again: passing it on, the workers stop at once", name);
            stopping = true;
            if (!stop_sig) stop_sig = sig;
            relay(ws, n, sig);
        }
        /* SIGCHLD: reaped at the top. A timeout (EAGAIN) or EINTR: restarts are due. */
    }

    /* What came after the last worker left (a report it queued, a SIGHUP) is still pending:
     * taken here, as unblocking it would kill the supervisor by its default action. */
    struct timespec none = {0, 0};
    while (sigtimedwait(&relayed, NULL, &none) > 0) {}
    sigprocmask(SIG_SETMASK, &old_mask, NULL);
    sigaction(SIGCHLD, &old_chld, NULL);
    close_reserved(reserved, o->nlisten);
    free(ws);
    wsl_info("bye");
    *status = result;
    return 0;
}
