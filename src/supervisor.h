/* --workers N: a supervising process forks N workers that share the listening port, restarts
 * the ones that die, passes SIGHUP/SIGTERM/SIGINT on to all of them and exits when they have. */
#ifndef WSL_SUPERVISOR_H
#define WSL_SUPERVISOR_H

#include "options.h"

/* Call with o->workers > 1, after the options and the script lookup, before any libuv loop
 * exists. Returns twice, as fork does:
 *   - in a worker: its number (1..o->workers), with o->worker set, the log named "wN", port 0
 *     replaced by the port every worker shares; the caller goes on as a normal server;
 *   - in the supervisor, once every worker has exited: 0, with *status the exit status.
 * Start-up rule: a worker only exits with a non-zero status when it could not start (main.c: 1 the
 * script did not load, 2 a bad --static, 3 cannot listen); a crash is a signal. When that happens
 * to a worker's first run, every worker would fail alike, so the supervisor stops the others and
 * exits with that status instead of restarting them forever. Anything else is restarted. */
int wsl_supervise(wsl_options *o, int *status);

/* What a worker tells its supervisor, which tells systemd (NOTIFY_SOCKET) READY=1 once every
 * worker listens, and after a SIGHUP, READY=1 once every running worker has reloaded or failed to
 * (STATUS says which). Sent as a queued real-time signal (SIGRTMIN) with the event as its value;
 * outside a worker, a no-op. */
enum { WSL_WORKER_LISTENING = 1, WSL_WORKER_RELOADED = 2, WSL_WORKER_RELOAD_FAILED = 3 };
void wsl_worker_report(int event);

#endif
