/* What the files of the Lua binding share, and nothing outside the binding includes: the state
 * (struct wsl_script), protected calls, and the conn objects. script.c is the core (state,
 * memory cap, time limit, load and reload, event dispatch); lconn.c the conn object, lws.c the
 * `ws` module, ltimer.c its timers, lhandle.c the box they share. */
#ifndef WSL_SCRIPT_PRIV_H
#define WSL_SCRIPT_PRIV_H

#include <lauxlib.h>
#include <lua.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "list.h"
#include "script.h"
#include "server.h"

#define WSL_CONN_MT  "wsluad.conn"
#define WSL_TIMER_MT "wsluad.timer"

/* Owned by main: created by wsl_script_new, freed by wsl_script_free after the loop ended. */
struct wsl_script {
    lua_State *L;
    wsl_server *srv;
    char *path; /* the script file */
    size_t mem, mem_limit;
    size_t peak;         /* the highest mem during the current protected call (see wsl_protect) */
    int depth;           /* nested protected calls in progress (index into runners) */
    lua_State **runners; /* runners[d]: the thread that runs calls at depth d (see script.c) */
    int *runner_refs;
    int nrunners;
    unsigned gen;    /* timers created by the current load of the script */
    wsl_list timers; /* every running timer (ltimer.c) */
    uv_fs_event_t watch;
    uv_timer_t debounce;
    bool watching;
    /* The last error logged, so a repeated one is counted instead of logged each time. */
    char last_error[256];
    unsigned repeats;      /* since it was logged, or the count was */
    uint64_t repeat_since; /* when it was logged, or the count was (loop time, ms) */
    uint64_t last_seen;    /* when it last happened */
};

static inline wsl_script *wsl_script_of(lua_State *L)
{
    return *(wsl_script **)lua_getextraspace(L);
}

/* Protected calls. A "body" is a lua_CFunction that wsl_protect runs as a Lua call with `arg`
 * as light userdata at index 1; everything it does may raise. wsl_protect runs it on a thread
 * of its own under the time limit, so a runaway loop anywhere in it (coroutines included) is
 * abandoned; on failure it logs "Lua error in <what>: <traceback>" (with the connection when c is
 * given), keeps the error value and traceback for on_error, and returns false. */
bool wsl_protect(wsl_script *s, lua_CFunction body, void *arg, const char *what, const wsl_conn *c);

/* How a body calls script code: like lua_call, but yieldable, so that the time limit can abandon
 * the call from inside any pcall (see script.c). Yieldable calls in a coroutine have a price:
 * once the script catches an error with pcall, Lua finishes the body through its continuation
 * instead of returning into it. wsl_call suits bodies with nothing left to do after the call
 * (its continuation returns 0 results); others use lua_callk with a continuation of their own. */
int wsl_body_done(lua_State *L, int status, lua_KContext ctx);
#define wsl_call(L, nargs, nresults) lua_callk(L, nargs, nresults, 0, wsl_body_done)

/* Push the error value and the traceback of the last failed protected call. */
void wsl_push_last_error(lua_State *L);

/* conn objects (lconn.c). */
void wsl_lconn_open(lua_State *L);              /* the metatable */
void wsl_lconn_push(lua_State *L, wsl_conn *c); /* creates it on first use */
wsl_conn *wsl_lconn_check(lua_State *L, int i); /* NULL once the connection is gone */
void wsl_lconn_set_data(lua_State *L, wsl_conn *c, int value);
void wsl_lconn_release(wsl_script *s, wsl_conn *c);
/* Add header (name in any case) to the table on top of the stack; repeats are joined. */
void wsl_lconn_add_header(lua_State *L, const char *name, size_t nlen, const char *value,
                          size_t vlen);

/* The `ws` module (lws.c): pushes it. */
int wsl_lws_open(lua_State *L);

/* Timers (ltimer.c): the metatable; ws.timer and ws.every into the table on top of the stack;
 * stopping every timer, those of one load of the script (gen), or all but those. */
void wsl_ltimer_open(lua_State *L);
void wsl_ltimer_register(lua_State *L);
enum { WSL_TIMERS_ALL, WSL_TIMERS_GEN, WSL_TIMERS_OTHER_GENS };
void wsl_ltimer_stop(wsl_script *s, int which, unsigned gen);

/* Arguments shared by conn methods and the ws module: a message (data at i, kind at i + 1:
 * "text", the default, or "binary"; text must be UTF-8), encoded into m; a topic name. */
void wsl_lcheck_msg(lua_State *L, int i, wsl_msg *m, const char *fn);
const char *wsl_lcheck_topic(lua_State *L, int i, size_t *len);
/* Push the result of a send-like call: true, or nil, message, code name (the error convention). */
int wsl_lresult(lua_State *L, int r);

#endif
