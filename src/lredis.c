/* ws.redis: Redis commands from scripts, on the cluster link's command connection (never the
 * subscriber one). With a callback, the reply comes later as callback(reply, err); inside a
 * function run by ws.spawn, without a callback, the coroutine waits and ws.redis returns
 * reply, err; in a coroutine the script made, that is an error; elsewhere the reply is dropped
 * and an error reply is logged. */
#include <hiredis/hiredis.h>
#include <stdlib.h>

#include "log.h"
#include "script_priv.h"

#define MAX_ARGS  1024 /* arguments of one command */
#define MAX_DEPTH 8    /* nested arrays in a reply (EXEC of a SCAN ...) */

/* One command in flight; freed by on_reply. */
typedef struct pending {
    wsl_script *s;
    int fn_ref;    /* the callback, or LUA_NOREF */
    lua_State *co; /* the waiting coroutine of ws.spawn, or NULL */
    int co_ref;    /* ... pinned (see lspawn.c's sleeper), or LUA_NOREF */
} pending;

/* Push a reply as Lua values: integers as integers, strings and status replies as strings,
 * nil as nil (false inside an array, which cannot hold nil), arrays as tables, an error inside
 * an array as {err = message}. A top-level error is pushed as nil, message by push_result. */
static void push_reply(lua_State *L, const redisReply *r)
{
    luaL_checkstack(L, 3, "reply too deep");
    switch (r->type) {
    case REDIS_REPLY_INTEGER:
        lua_pushinteger(L, (lua_Integer)r->integer);
        break;
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        lua_pushlstring(L, r->str, r->len);
        break;
    case REDIS_REPLY_ARRAY:
        lua_createtable(L, (int)r->elements, 0);
        for (size_t i = 0; i < r->elements; i++) {
            if (r->element[i]->type == REDIS_REPLY_NIL)
                lua_pushboolean(L, 0);
            else
                push_reply(L, r->element[i]);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    case REDIS_REPLY_ERROR:
        lua_createtable(L, 0, 1);
        lua_pushlstring(L, r->str, r->len);
        lua_setfield(L, -2, "err");
        break;
    default: /* REDIS_REPLY_NIL */
        lua_pushnil(L);
        break;
    }
}

/* How deeply arrays nest in r (hiredis 0.14 itself stops at 8 levels; a newer one may not). */
static int depth_of(const redisReply *r)
{
    int d = 0;
    if (r->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < r->elements; i++) {
            int e = depth_of(r->element[i]) + 1;
            if (e > d) d = e;
            if (d > MAX_DEPTH) break;
        }
    return d;
}

/* reply, nil; or nil, message for an error reply, a reply too deep to convert, or a command
 * that got no reply. */
static int push_result(lua_State *L, const redisReply *r, int err)
{
    if (!r) {
        lua_pushnil(L);
        lua_pushstring(L, wsl_strerror(err));
        return 2;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        lua_pushnil(L);
        lua_pushlstring(L, r->str, r->len);
        return 2;
    }
    if (depth_of(r) > MAX_DEPTH) {
        lua_pushnil(L);
        lua_pushliteral(L, "reply nested too deeply");
        return 2;
    }
    push_reply(L, r);
    lua_pushnil(L);
    return 2;
}

/* The reply of a command made with a callback. */
typedef struct reply_call {
    pending *p;
    const redisReply *reply;
    int err;
} reply_call;

static int callback_body(lua_State *L)
{
    reply_call *rc = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, rc->p->fn_ref);
    push_result(L, rc->reply, rc->err);
    wsl_call(L, 2, 0);
    return 0;
}

/* The waiting coroutine resumes here with the reply as a light userdata and err: it turns the
 * reply into Lua values on its own stack, under its own protection and time limit. */
static int wait_done(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    const redisReply *r = lua_touserdata(L, -2);
    int err = (int)lua_tointeger(L, -1);
    lua_pop(L, 2);
    return push_result(L, r, err);
}

static void on_reply(void *arg, const redisReply *reply, int err)
{
    pending *p = arg;
    wsl_script *s = p->s;
    if (p->co) {
        lua_pushlightuserdata(p->co, (void *)reply);
        lua_pushinteger(p->co, err);
        wsl_lspawn_resume(s, p->co, 2);
        luaL_unref(s->L, LUA_REGISTRYINDEX, p->co_ref);
    } else if (p->fn_ref != LUA_NOREF) {
        reply_call rc = {p, reply, err};
        wsl_protect(s, callback_body, &rc, "ws.redis callback", NULL);
        luaL_unref(s->L, LUA_REGISTRYINDEX, p->fn_ref);
    } else if (!reply || reply->type == REDIS_REPLY_ERROR) {
        wsl_warn("ws.redis: %s (the command had no callback)",
                 reply ? reply->str : wsl_strerror(err));
    }
    free(p);
}

static int ws_redis(lua_State *L)
{
    wsl_script *s = wsl_script_of(L);
    wsl_cluster *cluster = wsl_server_cluster(s->srv);
    if (!cluster) return luaL_error(L, "ws.redis: no Redis (start wsluad with --redis URL)");
    luaL_checktype(L, 1, LUA_TTABLE);
    bool has_cb = !lua_isnoneornil(L, 2);
    if (has_cb) luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_Integer argc = (lua_Integer)lua_rawlen(L, 1);
    if (argc < 1 || argc > MAX_ARGS)
        return luaL_error(L, "ws.redis: a command is a list of 1 to %d strings", MAX_ARGS);
    const char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    luaL_checkstack(L, (int)argc, "ws.redis: too many arguments");
    for (lua_Integer i = 0; i < argc; i++) {
        int t = lua_rawgeti(L, 1, i + 1);
        if (t != LUA_TSTRING && t != LUA_TNUMBER)
            return luaL_error(L, "ws.redis: argument %d is a %s (strings and numbers only)",
                              (int)i + 1, lua_typename(L, t));
        argv[i] = lua_tolstring(L, -1, &lens[i]); /* stays on the stack until the call */
    }
    const char *why = wsl_cluster_command_refused((int)argc, argv, lens);
    if (why) return luaL_error(L, "ws.redis: %s", why);

    bool wait = !has_cb && wsl_lspawn_is_spawned(L);
    /* There no reply could come back, and dropping it would pass for an answer (true). */
    if (!has_cb && !wait && wsl_script_own_coroutine(L))
        return luaL_error(L, "ws.redis: cannot wait in a coroutine of the script's own (only the "
                             "function ws.spawn runs waits); give a callback instead");
    /* Checked before the command is sent: if the yield below failed, the reply would still
     * resume the coroutine later, in the middle of another wait or after it ended. */
    if (wait && !lua_isyieldable(L))
        return luaL_error(L, "ws.redis: %s; give a callback instead", WSL_CANNOT_WAIT);
    int co_ref = LUA_NOREF;
    if (wait) {
        lua_pushthread(L);
        co_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* (may raise: before anything to undo) */
    }
    pending *p = malloc(sizeof *p);
    if (!p) {
        luaL_unref(L, LUA_REGISTRYINDEX, co_ref);
        return luaL_error(L, "not enough memory");
    }
    *p = (pending){.s = s, .fn_ref = LUA_NOREF, .co = wait ? L : NULL, .co_ref = co_ref};
    int r = wsl_cluster_command(cluster, (int)argc, argv, lens, on_reply, p);
    if (r < 0) { /* not sent: the outcome is known now */
        free(p);
        luaL_unref(L, LUA_REGISTRYINDEX, co_ref);
        if (has_cb) {
            lua_pushvalue(L, 2);
            lua_pushnil(L);
            lua_pushstring(L, wsl_strerror(r));
            wsl_call(L, 2, 0);
        }
        return wsl_lresult(L, r); /* as without a callback: it was not sent */
    }
    if (has_cb) {
        lua_pushvalue(L, 2);
        p->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    if (!wait) {
        lua_pushboolean(L, 1);
        return 1;
    }
    wsl_spawn_waiting(s);
    return lua_yieldk(L, 0, 0, wait_done);
}

void wsl_lredis_register(lua_State *L)
{
    lua_pushcfunction(L, ws_redis);
    lua_setfield(L, -2, "redis");
}
