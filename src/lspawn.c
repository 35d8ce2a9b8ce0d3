/* ws.spawn and ws.sleep: straight-line code that waits (as in OpenResty). ws.spawn runs a function
 * in a coroutine of its own; inside it ws.sleep and ws.redis (without a callback) yield, and the
 * timer or the reply resumes it. Every stretch of running code is under the time limit; the
 * waiting is not. An error is logged and reaches on_error when the function was spawned by a
 * handler of a connection that is still open. */
#include <stdlib.h>

#include "lhandle.h"
#include "script_priv.h"

/* The registry table of coroutines of ws.spawn still running or waiting: coroutine -> the conn
 * object of the handler that spawned it, or false. It also keeps a waiting coroutine alive. */
static char spawned_key;
/* The registry table of coroutines a reload's top level started (coroutine -> true), while it
 * runs: a failed reload closes those still waiting. */
static char reload_key;

/* A ws.sleep in progress. Owned by the script (s->sleepers) until it fires or is stopped; freed
 * by libuv's close callback. */
typedef struct sleeper {
    uv_timer_t t;
    wsl_script *s;
    lua_State *co; /* kept alive by co_ref */
    /* A registry reference to co: the spawned table lets go of a coroutine the time limit
     * stopped just as it began to wait, and this timer must not find it freed. */
    int co_ref;
    wsl_list link;
} sleeper;

bool wsl_lspawn_is_spawned(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &spawned_key);
    lua_pushthread(L);
    bool yes = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 2);
    return yes;
}

bool wsl_lspawn_owns(lua_State *L, lua_State *co)
{
    if (!lua_checkstack(co, 1)) return true; /* cannot tell: the caller refuses */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &spawned_key);
    lua_pushthread(co);
    lua_xmove(co, L, 1);
    bool yes = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 2);
    return yes;
}

/* The connection co was spawned for, when it is still there. */
static wsl_conn *owner(lua_State *L, lua_State *co)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &spawned_key);
    lua_pushthread(co);
    lua_xmove(co, L, 1);
    lua_rawget(L, -2);
    wsl_conn *c = NULL;
    if (lua_type(L, -1) == LUA_TUSERDATA) /* a req object's */
        c = ((wsl_lhandle *)lua_touserdata(L, -1))->p;
    else
        c = wsl_lconn_get(L, -1);
    lua_pop(L, 2);
    return c;
}

/* co finished or failed: forget it (the collector takes it). */
static void forget(lua_State *L, lua_State *co)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &spawned_key);
    lua_pushthread(co);
    lua_xmove(co, L, 1);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* Resume co with the nargs values on its stack; afterwards it either waits or is forgotten.
 * L is any thread with a free stack slot or two (the main one, outside Lua code). Returns what
 * wsl_resume_spawned did. */
static int step(wsl_script *s, lua_State *L, lua_State *co, int nargs)
{
    wsl_conn *c = owner(L, co);
    /* A plain request's connection has no remote to name in the log: its errors are logged
     * without one, as on_request's are. */
    int r = wsl_resume_spawned(s, co, nargs, c && *wsl_conn_remote(c) ? c : NULL);
    if (r == 0) return r;
    forget(L, co);
    if (r == -1 && c) wsl_handler_failed(s, c);
    return r;
}

void wsl_lspawn_resume(wsl_script *s, lua_State *co, int nargs)
{
    if (lua_status(co) != LUA_YIELD || !wsl_lspawn_owns(s->L, co)) {
        /* The script closed it (coroutine.close) while it waited: that cancels it. Or the time
         * limit stopped it as it began to wait (failed, logged and forgotten): it stays so. */
        lua_settop(co, 0);
        forget(s->L, co);
        return;
    }
    step(s, s->L, co, nargs);
}

static int ws_spawn(lua_State *L)
{
    wsl_script *s = wsl_script_of(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int nargs = lua_gettop(L) - 1;
    lua_State *co = lua_newthread(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &spawned_key);
    lua_pushvalue(L, -2);
    if (s->req_now) /* for on_request: a failure answers its request 500 */
        wsl_lhandle_push(L, s->req_now);
    else if (s->conn_now)
        wsl_lconn_push(L, s->conn_now);
    else
        lua_pushboolean(L, 0);
    lua_rawset(L, -3);
    if (s->reloading) { /* the stack: co, the spawned table */
        if (lua_rawgetp(L, LUA_REGISTRYINDEX, &reload_key) != LUA_TTABLE) {
            lua_pop(L, 1);
            lua_newtable(L);
            lua_pushvalue(L, -1);
            lua_rawsetp(L, LUA_REGISTRYINDEX, &reload_key);
        }
        lua_pushvalue(L, -3);
        lua_pushboolean(L, 1);
        lua_rawset(L, -3);
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
    lua_xmove(L, co, nargs + 1); /* the function and its arguments */
    /* The first stretch runs now, inside the caller's own time limit: when that stops it, the
     * caller is over its time as well, and stops here. */
    if (step(s, L, co, nargs) == WSL_STOPPED_WITH_CALLER) return wsl_stop_here(L);
    return 0;
}

static void sleeper_stop(sleeper *z)
{
    luaL_unref(z->s->L, LUA_REGISTRYINDEX, z->co_ref);
    wsl_list_remove(&z->link);
    uv_timer_stop(&z->t);
    uv_close((uv_handle_t *)&z->t, (uv_close_cb)free);
}

static void on_wake(uv_timer_t *t)
{
    sleeper *z = (sleeper *)t;
    wsl_script *s = z->s;
    lua_State *co = z->co;
    int ref = z->co_ref;
    z->co_ref = LUA_NOREF; /* co stays pinned while it runs */
    sleeper_stop(z);
    wsl_lspawn_resume(s, co, 0);
    luaL_unref(s->L, LUA_REGISTRYINDEX, ref);
}

static int ws_sleep(lua_State *L)
{
    wsl_script *s = wsl_script_of(L);
    lua_Number secs = luaL_checknumber(L, 1);
    if (!(secs >= 0) || secs > 1e9) return luaL_error(L, "ws.sleep: bad interval %f", secs);
    if (!wsl_lspawn_is_spawned(L))
        return luaL_error(L, "ws.sleep: only inside a function run by ws.spawn (itself, not a "
                             "coroutine it made)");
    /* Checked before the timer starts: if the yield below failed, the timer would still
     * resume the coroutine later, in the middle of another wait or after it ended. */
    if (!lua_isyieldable(L)) return luaL_error(L, "ws.sleep: %s", WSL_CANNOT_WAIT);
    if (s->stopped) return luaL_error(L, "ws.sleep: %s", WSL_SHUT_DOWN);
    lua_pushthread(L);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX); /* (may raise: before anything to undo) */
    sleeper *z = malloc(sizeof *z);
    if (!z) {
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        return luaL_error(L, "not enough memory");
    }
    z->s = s;
    z->co = L;
    z->co_ref = ref;
    wsl_list_push_back(&s->sleepers, &z->link);
    uv_timer_init(wsl_server_loop(s->srv), &z->t);
    uv_timer_start(&z->t, on_wake, (uint64_t)(secs * 1000 + 0.5), 0);
    wsl_spawn_waiting(s);
    return lua_yield(L, 0);
}

void wsl_lspawn_register(lua_State *L)
{
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &spawned_key);
    lua_pushcfunction(L, ws_spawn);
    lua_setfield(L, -2, "spawn");
    lua_pushcfunction(L, ws_sleep);
    lua_setfield(L, -2, "sleep");
}

void wsl_lspawn_stop(wsl_script *s)
{
    wsl_list *n, *next;
    wsl_list_each_safe(n, next, &s->sleepers)
    {
        sleeper_stop(wsl_list_entry(n, sleeper, link));
    }
}

static int close_reload_body(lua_State *L)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &reload_key) != LUA_TTABLE) return 0;
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_pop(L, 1);
        lua_State *co = lua_tothread(L, -1);
        /* Still waiting: closed here, it stays in the spawned table until its timer or reply
         * comes and finds it closed (wsl_lspawn_resume), which keeps it alive until then. */
        if (co && lua_status(co) == LUA_YIELD && wsl_lspawn_owns(L, co)) wsl_close_thread(L, co);
    }
    return 0;
}

void wsl_lspawn_reload_done(wsl_script *s, bool failed)
{
    if (failed) wsl_protect(s, close_reload_body, NULL, "reload", NULL);
    lua_pushnil(s->L);
    lua_rawsetp(s->L, LUA_REGISTRYINDEX, &reload_key);
}
