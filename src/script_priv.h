/* What the files of the Lua binding share, and nothing outside the binding includes: the state
 * (struct wsl_script), protected calls, and the conn objects. script.c is the core (state,
 * memory cap, time limit, load and reload, event dispatch); lconn.c the conn object, lrequest.c
 * the req object of on_request, lws.c the `ws` module, ltimer.c its timers, lhandle.c the box
 * they share. */
#ifndef WSL_SCRIPT_PRIV_H
#define WSL_SCRIPT_PRIV_H

#include <lauxlib.h>
#include <lua.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "list.h"
#include "metrics.h"
#include "script.h"
#include "server.h"

#define WSL_CONN_MT    "wsluad.conn"
#define WSL_TIMER_MT   "wsluad.timer"
#define WSL_REQUEST_MT "wsluad.request"

/* Lua's blocks of up to WSL_SMALL_MAX bytes come from free lists, one per class of 8, 24, 40 ...
 * bytes (script.c's lalloc). */
#define WSL_SMALL_MAX     128
#define WSL_SMALL_CLASSES ((WSL_SMALL_MAX + 7) / 16 + 1)

/* Owned by main: created by wsl_script_new, freed by wsl_script_free after the loop ended. */
struct wsl_script {
    lua_State *L;
    wsl_server *srv;
    char *path; /* the script file */
    size_t mem, mem_limit;
    void *small[WSL_SMALL_CLASSES]; /* the free lists (each block's first word: the next) */
    size_t small_bytes;             /* in them */
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
    wsl_conn *conn_now; /* whose handler runs now (NULL: none, or a timer) */
    /* The connections that have a conn object, by its slot (lconn.c): the connection (NULL
     * where none) and the object's address. */
    struct wsl_lconn_slot {
        wsl_conn *c;
        const void *obj;
    } * conns;
    unsigned nconns;
    int req_now;       /* the req object of the on_request that runs now (a registry ref; 0) */
    bool waiting;      /* the running coroutine of ws.spawn yields to wait (wsl_spawn_waiting) */
    wsl_list sleepers; /* ws.sleep timers (lspawn.c) */
    bool reloading;    /* a reload's top level runs: ws.spawn notes what it starts (lspawn.c) */
    /* wsl_script_stop ran: the loop is ending, and a timer started now (by a finalizer, which
     * may run until lua_close) would keep it alive, or use it once closed. */
    bool stopped;
    wsl_registry *metrics; /* ws.metric's (lmetric.c), freed with the state */
    bool ran;              /* the call wsl_protect_handler runs found its handler */
    /* The handlers as the script defined them when it was (re)loaded (see cache_handlers): a
     * registry slot each (the function, or false), read with lua_rawgeti, which is far cheaper
     * than looking the global up by name for every event; bit k of `defined`: a function. */
    int handler_refs[WSL_HANDLERS];
    unsigned defined;
    int kind_refs[2];        /* the strings "text" and "binary", pinned in the registry */
    const char *kind_str[2]; /* ... and their bytes: interned, so a string is one by identity */
    /* The runner whose stack bottom holds on_message and the kind strings (script.c's ANCHORS),
     * copied from there for every message; NULL when none does (the handlers changed, or the
     * runner was cleared or dropped). Never again once the script held runner 0 itself
     * (coroutine.running): idle, it must look as it always did, an empty thread. */
    lua_State *anchored;
    bool runner_seen;
    /* The text message the handler that runs now received, while its string is anchored under
     * the call: sending it back needs no second UTF-8 check (NULL: none). */
    const char *rx_text;
    size_t rx_len;
    bool timed_out; /* the last protected call ended by the time limit */
    /* The current top-level call is over its time and a call inside it already logged the
     * stop: the calls around it, stopped by the same stop, fail without a word (run_resume). */
    bool stop_logged;
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
/* wsl_protect for a handler or timer: counted and timed for the metrics (wsl_metrics.handlers)
 * when its body sets s->ran, which a body does once it found the script's function. */
bool wsl_protect_handler(wsl_script *s, wsl_handler_kind k, lua_CFunction body, void *arg,
                         const char *what, const wsl_conn *c);

/* How a body calls script code: like lua_call, but yieldable, so that the time limit can abandon
 * the call from inside any pcall (see script.c). Yieldable calls in a coroutine have a price:
 * once the script catches an error with pcall, Lua finishes the body through its continuation
 * instead of returning into it. wsl_call suits bodies with nothing left to do after the call
 * (its continuation returns 0 results); others use lua_callk with a continuation of their own. */
int wsl_body_done(lua_State *L, int status, lua_KContext ctx);
#define wsl_call(L, nargs, nresults) lua_callk(L, nargs, nresults, 0, wsl_body_done)

/* A coroutine of ws.spawn (lspawn.c): resume it with the nargs values on top of its stack, under
 * the time limit. 1 it finished, 0 it waits again, -1 it failed (logged; the caller then calls
 * wsl_handler_failed when it belongs to a connection), WSL_STOPPED_WITH_CALLER it was stopped by
 * the time limit of the call it runs in (its first stretch runs inside the handler that spawned
 * it): logged, and that call fails too, which is the failure on_error hears of. A function
 * about to yield to wait calls wsl_spawn_waiting first; any other yield of the coroutine is an
 * error. */
#define WSL_STOPPED_WITH_CALLER (-2)
int wsl_resume_spawned(wsl_script *s, lua_State *co, int nargs, const wsl_conn *c);
/* For a C function whose call inside it was stopped by the time limit of the call in progress:
 * stop L now, as the time limit's hook would a little later (return its result). */
int wsl_stop_here(lua_State *L);
static inline void wsl_spawn_waiting(wsl_script *s)
{
    s->waiting = true;
}

/* A handler of c failed: on_error runs, or without one (or if it fails too) c is closed with
 * 1011. Nothing when c is no longer open. */
void wsl_handler_failed(wsl_script *s, wsl_conn *c);

/* Push the error value and the traceback of the last failed protected call. */
void wsl_push_last_error(lua_State *L);

/* conn objects (lconn.c). */
void wsl_lconn_open(lua_State *L);              /* the metatable */
void wsl_lconn_push(lua_State *L, wsl_conn *c); /* creates it on first use */
wsl_conn *wsl_lconn_check(lua_State *L, int i); /* NULL once the connection is gone */
wsl_conn *wsl_lconn_get(lua_State *L, int i);   /* the same, NULL for anything else too */
/* The value at i is a conn object: its id and remote address (for ws.log); no error otherwise. */
bool wsl_lconn_ident(lua_State *L, int i, uint64_t *id, char *remote, size_t cap);
void wsl_lconn_set_data(lua_State *L, wsl_conn *c, int value);
void wsl_lconn_release(wsl_script *s, wsl_conn *c);
/* Add header (name in any case) to the table on top of the stack; repeats are joined. */
void wsl_lconn_add_header(lua_State *L, const char *name, size_t nlen, const char *value,
                          size_t vlen);

/* req objects (lrequest.c). A req object points at its connection while the request waits for
 * an answer; the connection's request slot holds its registry reference meanwhile. */
void wsl_lrequest_open(lua_State *L); /* the metatable */
/* Push a span of the request as a string ("" for an absent one). */
static inline void wsl_push_span(lua_State *L, wsl_span sp)
{
    lua_pushlstring(L, sp.p ? sp.p : "", sp.len);
}
/* Push a table of req's fields that on_upgrade's and on_request's req share (method, path, query,
 * remote, secure, headers), sized for `more` fields the caller adds. */
void wsl_lrequest_fields(lua_State *L, const wsl_request *req, int more);
/* Push a new req object for the request c reports (pinned, in c's request slot). */
void wsl_lrequest_push(lua_State *L, wsl_conn *c, const wsl_http_req *r);
/* Answer c's request with the status, body and headers at idx, idx + 1, idx + 2 (c NULL: it is
 * gone). The result of wsl_conn_respond (WSL_ECLOSED when gone); wrong values answer 500 and
 * raise an error naming fn. The req object stops answering. */
int wsl_lrequest_answer(lua_State *L, wsl_conn *c, int idx, const char *fn);
/* Whether the script called req:defer() on c's waiting request. */
bool wsl_lrequest_deferred(lua_State *L, wsl_conn *c);
/* The req object of c stops answering (answered, not deferred, or abandoned). */
void wsl_lrequest_release(lua_State *L, wsl_conn *c);
/* A handler failed for c's waiting request: 500, and the req object stops answering. */
void wsl_lrequest_fail(lua_State *L, wsl_conn *c);

/* The `ws` module (lws.c): pushes it. */
int wsl_lws_open(lua_State *L);

/* ws.spawn and ws.sleep (lspawn.c): into the table on top of the stack; whether L is a coroutine
 * of ws.spawn; stopping every sleep (at shutdown). Even in such a coroutine Lua cannot yield
 * inside a function that C code called (lua_isyieldable is false): ws.sleep and ws.redis then
 * raise WSL_CANNOT_WAIT before they start anything that would resume the coroutine later. */
#define WSL_CANNOT_WAIT                                                                            \
    "cannot wait inside a function called from C (a table.sort comparator, a string.gsub "         \
    "replacement, a __tostring...)"
/* What ws.timer, ws.every and ws.sleep raise once the script is stopped (s->stopped). */
#define WSL_SHUT_DOWN "the server has shut down"
void wsl_lspawn_register(lua_State *L);
bool wsl_lspawn_is_spawned(lua_State *L);
/* Whether L is a coroutine the script made itself (coroutine.create or wrap): not the main
 * thread, a runner or a coroutine of ws.spawn. Nothing of the server's resumes it, so it cannot
 * wait for a reply (script.c). */
bool wsl_script_own_coroutine(lua_State *L);
/* Whether co is a coroutine of ws.spawn still running or waiting (looked up with L's stack). */
bool wsl_lspawn_owns(lua_State *L, lua_State *co);
void wsl_lspawn_stop(wsl_script *s);
/* A reload's top level is over: when it failed, close the coroutines of ws.spawn it started that
 * still wait (a failed reload changes nothing; their timer or reply then finds nothing to
 * resume); either way forget which they were. */
void wsl_lspawn_reload_done(wsl_script *s, bool failed);
/* Close co, a suspended coroutine, as coroutine.close does: its pending __close handlers run
 * under the time limit (script.c). */
void wsl_close_thread(lua_State *L, lua_State *co);
/* Resume a waiting coroutine of ws.spawn with the nargs values on top of its stack. */
void wsl_lspawn_resume(wsl_script *s, lua_State *co, int nargs);

/* ws.redis (lredis.c): into the table on top of the stack. */
void wsl_lredis_register(lua_State *L);

/* ws.metric (lmetric.c): into the table on top of the stack. */
void wsl_lmetric_register(lua_State *L);

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
