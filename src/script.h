/* The Lua side of the server, and the only part that includes Lua: the script's state, its
 * handlers (reached through the connection events it listens to), timers and live reload. The
 * binding's files share script_priv.h; everything else sees only this header. */
#ifndef WSL_SCRIPT_H
#define WSL_SCRIPT_H

#include <stdbool.h>
#include <stddef.h>

#include "conn.h"
#include "metrics.h"
#include "server.h"

typedef struct wsl_script wsl_script;

/* Create the state; NULL when out of memory. wsl_script_load then runs the script's top level:
 * 0, or -1 with the error logged. Either way, wsl_script_stop and (after the loop has closed the
 * handles) wsl_script_free release it. */
wsl_script *wsl_script_new(wsl_server *srv, const char *path);
int wsl_script_load(wsl_script *s);
/* Re-run the script file in the same state (SIGHUP, --reload). 0 took, -1 kept the old code. */
int wsl_script_reload(wsl_script *s);
/* Watch the script file and reload when it changes. 0 or a negative (libuv) code. */
int wsl_script_watch(wsl_script *s);
/* Stop timers and watchers so the loop can end; then wsl_script_free after the loop. */
void wsl_script_stop(wsl_script *s);
void wsl_script_free(wsl_script *s);
/* The script file's path. */
const char *wsl_script_path(const wsl_script *s);

/* The connection events that run the script's handlers (on_upgrade, on_open, on_message,
 * on_close, on_drain; release clears the conn object). Pass the script as their ud. */
extern const wsl_conn_events wsl_script_events;

/* The script's part of a scrape (--metrics): wsluad_lua_memory_bytes and the metrics the script
 * defined with ws.metric. */
void wsl_script_metrics(wsl_script *s, wsl_mbuf *out);

/* Async-signal-safe: abandon whatever Lua code is running now, as if its time limit had passed
 * (SIGTERM uses it so that a stuck handler cannot delay the shutdown). `why` is a static string
 * for the log. From then on, Lua code that a stop cannot reach (a __gc finalizer, a blocked C
 * function) ends the process by `sig` a second after it was told to stop. */
void wsl_script_interrupt(const char *why, int sig);

#endif
