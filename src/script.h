/* The Lua side of the server, and the only module that includes Lua: the state and its memory
 * cap, handler dispatch under pcall with tracebacks and a time limit, the conn objects, the `ws`
 * module, timers, and live reload. The core calls it through the functions below. */
#ifndef WSL_SCRIPT_H
#define WSL_SCRIPT_H

#include <stdbool.h>
#include <stddef.h>

#include "conn.h"
#include "http.h"
#include "server.h"

/* What on_upgrade decided. */
typedef struct wsl_upgrade {
    int status;         /* 0: accept; otherwise refuse with this HTTP status */
    char body[512];     /* refusal body */
    char protocol[256]; /* chosen subprotocol, "" for none */
} wsl_upgrade;

/* Create the state; NULL when out of memory. wsl_script_load then runs the script's top level:
 * 0, or -1 with the error logged. Either way, wsl_script_stop and (after the loop has closed the
 * handles) wsl_script_free release it. */
wsl_script *wsl_script_new(wsl_server *srv, const char *path);
int wsl_script_load(wsl_script *s);
/* Re-run the script file in the same state (SIGHUP, --reload). 0 took, -1 kept the old code. */
int wsl_script_reload(wsl_script *s);
/* Watch the script file and reload when it changes. */
int wsl_script_watch(wsl_script *s);
/* Stop timers and watchers so the loop can end; then wsl_script_free after the loop. */
void wsl_script_stop(wsl_script *s);
void wsl_script_free(wsl_script *s);

bool wsl_script_has_upgrade(const wsl_script *s);
void wsl_script_on_upgrade(wsl_script *s, wsl_conn *c, const wsl_request *req, wsl_upgrade *out);
void wsl_script_on_open(wsl_script *s, wsl_conn *c);
void wsl_script_on_message(wsl_script *s, wsl_conn *c, const uint8_t *data, size_t len,
                           bool binary);
void wsl_script_on_close(wsl_script *s, wsl_conn *c, unsigned code, const char *reason, size_t len);
void wsl_script_on_drain(wsl_script *s, wsl_conn *c);
/* The connection is about to be freed: its Lua object keeps its fields but loses the pointer. */
void wsl_script_release(wsl_script *s, wsl_conn *c);

#endif
