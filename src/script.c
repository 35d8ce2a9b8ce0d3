/* The Lua binding, in one place: the state (with a memory cap), handler dispatch (every call
 * protected, errors logged with a traceback and contained, a time limit enforced by a signal
 * that arms a hook only when a handler overruns), the conn objects, the `ws` module, timers and
 * live reload. Nothing else in the server includes Lua. */
#include "script.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "log.h"
#include "utf8.h"

#define CONN_MT  "wsluad.conn"
#define TIMER_MT "wsluad.timer"

typedef struct ltimer ltimer;

/* Owned by main: created by wsl_script_new, freed by wsl_script_free after the loop ended. */
struct wsl_script {
    lua_State *L;
    wsl_server *srv;
    char *path; /* the script file */
    size_t mem, mem_limit;
    int depth;      /* nested handler calls in progress */
    bool timed_out; /* the overrun hook was armed during the current call */
    unsigned gen;   /* timers created by the current load of the script */
    ltimer *timers; /* every running timer */
    uv_fs_event_t watch;
    uv_timer_t debounce;
    bool watching;
};

/* A timer made by ws.timer/ws.every. Owned by the script while running; freed by libuv's close
 * callback once stopped. Its Lua handle holds a pointer that is cleared when it stops. */
struct ltimer {
    uv_timer_t t;
    wsl_script *s;
    ltimer *prev, *next;
    int fn_ref;
    int handle_ref;
    unsigned gen;
    bool repeat;
};

typedef struct lconn {
    wsl_conn *c; /* NULL once the connection is gone */
    uint64_t id;
} lconn;

typedef struct lhandle {
    ltimer *t; /* NULL once stopped */
} lhandle;

/* Registry keys (their addresses). */
static char conns_key, saved_key, errmsg_key, chunk_key;

/* The conn metatable, anchored in the registry for the state's life, so its address identifies
 * it: comparing with lua_topointer is far cheaper than luaL_checkudata's lookup by name. */
static const void *conn_mt;

/* ---- time limit ------------------------------------------------------------------------------
 * A count hook on every call would slow every handler down. Instead an interval timer (SIGALRM)
 * checks, at most every `timeout`, whether the same call is still running past its deadline and
 * only then installs a hook that raises an error inside it. lua_sethook is safe in a signal
 * handler; the server starts no other threads, so the signal arrives on the loop thread. */

static lua_State *volatile alarm_L;
static volatile sig_atomic_t alarm_running; /* a handler call is in progress */
static volatile sig_atomic_t alarm_armed;
static volatile sig_atomic_t alarm_fired;
static double handler_timeout;
static struct timespec call_deadline;

static void timeout_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    /* Stay armed: if the script catches this error and keeps looping, it is raised again. */
    char msg[96];
    snprintf(msg, sizeof msg, "handler timeout: still running after %g s (--handler-timeout)",
             handler_timeout);
    luaL_error(L, "%s", msg);
}

static bool past(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > t->tv_sec || (now.tv_sec == t->tv_sec && now.tv_nsec >= t->tv_nsec);
}

static void arm_alarm(double seconds)
{
    struct itimerval it = {
        .it_value = {(time_t)seconds, (suseconds_t)((seconds - (time_t)seconds) * 1e6) + 1}};
    setitimer(ITIMER_REAL, &it, NULL);
    alarm_armed = 1;
}

static void on_alarm(int sig)
{
    (void)sig;
    alarm_armed = 0;
    if (!alarm_running) return;
    if (past(&call_deadline)) {
        alarm_fired = 1;
        lua_sethook(alarm_L, timeout_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1000);
    } else {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double left = (double)(call_deadline.tv_sec - now.tv_sec) +
                      (double)(call_deadline.tv_nsec - now.tv_nsec) / 1e9;
        arm_alarm(left > 0 ? left : 0.001);
    }
}

static void call_begin(wsl_script *s)
{
    if (s->depth++ > 0 || handler_timeout <= 0) return;
    clock_gettime(CLOCK_MONOTONIC, &call_deadline);
    double whole = (double)(long)handler_timeout;
    call_deadline.tv_sec += (time_t)whole;
    call_deadline.tv_nsec += (long)((handler_timeout - whole) * 1e9);
    if (call_deadline.tv_nsec >= 1000000000L) {
        call_deadline.tv_sec++;
        call_deadline.tv_nsec -= 1000000000L;
    }
    alarm_running = 1;
    if (!alarm_armed) arm_alarm(handler_timeout);
}

static void call_end(wsl_script *s)
{
    if (--s->depth > 0 || handler_timeout <= 0) return;
    alarm_running = 0;
    if (alarm_fired) {
        alarm_fired = 0;
        lua_sethook(s->L, NULL, 0, 0);
    }
}

/* ---- memory cap ------------------------------------------------------------------------- */

static void *lalloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    wsl_script *s = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        s->mem -= old;
        return NULL;
    }
    if (s->mem_limit && nsize > old && s->mem - old + nsize > s->mem_limit)
        return NULL; /* Lua collects garbage and retries, then raises "not enough memory" */
    void *p = realloc(ptr, nsize);
    if (p) s->mem = s->mem - old + nsize;
    return p;
}

/* ---- protected calls ------------------------------------------------------------------------ */

static wsl_script *script_of(lua_State *L)
{
    return *(wsl_script **)lua_getextraspace(L);
}

/* Message handler: keep the bare message for on_error, return it with a traceback for the log. */
static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = luaL_tolstring(L, 1, NULL);
    lua_pushstring(L, msg);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &errmsg_key);
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Run fn(L) with the pointer `arg` under pcall. On failure, logs "<what>: <traceback>" and
 * returns false, leaving the bare error message in s->... via errmsg_key. */
static bool protect(wsl_script *s, lua_CFunction fn, void *arg, const char *what, const wsl_conn *c)
{
    lua_State *L = s->L;
    int base = lua_gettop(L);
    lua_pushcfunction(L, traceback);
    lua_pushcfunction(L, fn);
    lua_pushlightuserdata(L, arg);
    call_begin(s);
    int r = lua_pcall(L, 1, 0, base + 1);
    call_end(s);
    if (r == LUA_OK) {
        lua_settop(L, base);
        return true;
    }
    const char *err = lua_tostring(L, -1);
    if (r == LUA_ERRMEM) {
        err = "not enough memory (--lua-memory)";
        lua_pushstring(L, err);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &errmsg_key);
    }
    if (c)
        wsl_error("Lua error in %s (conn#%llu %s): %s", what, (unsigned long long)c->id,
                  wsl_conn_remote(c), err ? err : "(error object is not a string)");
    else
        wsl_error("Lua error in %s: %s", what, err ? err : "(error object is not a string)");
    lua_settop(L, base);
    return false;
}

/* ---- conn objects --------------------------------------------------------------------------- */

/* Push the Lua object of c, creating it on first use. */
static void push_conn(lua_State *L, wsl_conn *c)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &conns_key);
    if (c->lua_ref) {
        lua_rawgeti(L, -1, c->lua_ref);
        lua_remove(L, -2);
        return;
    }
    lconn *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->c = c;
    u->id = c->id;
    luaL_setmetatable(L, CONN_MT);
    lua_pushvalue(L, -1);
    c->lua_ref = luaL_ref(L, -3);
    lua_remove(L, -2);
}

/* luaL_checkudata, minus the lookup of the metatable by name on every call: every method of
 * every message goes through here. */
static lconn *check_conn(lua_State *L, int i)
{
    void *u = lua_touserdata(L, i);
    if (u && lua_getmetatable(L, i)) {
        bool ok = lua_topointer(L, -1) == conn_mt;
        lua_pop(L, 1);
        if (ok) return u;
    }
    luaL_typeerror(L, i, CONN_MT);
    return NULL;
}

/* The object's own table (created on first use) for data and remembered fields. */
static void push_fields(lua_State *L, int ud)
{
    if (lua_getiuservalue(L, ud, 1) == LUA_TTABLE) return;
    lua_pop(L, 1);
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, ud, 1);
}

/* Add one header to the headers table on top of the stack, the name in lower case. A repeated
 * header reads as one, its values joined as HTTP allows. */
static void add_header(lua_State *L, const char *name, size_t nlen, const char *value, size_t vlen)
{
    luaL_Buffer b;
    char *lower = luaL_buffinitsize(L, &b, nlen);
    for (size_t k = 0; k < nlen; k++)
        lower[k] = (name[k] >= 'A' && name[k] <= 'Z') ? (char)(name[k] + 32) : name[k];
    luaL_pushresultsize(&b, nlen);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) {
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, value, vlen);
        lua_concat(L, 3);
    } else {
        lua_pop(L, 1);
        lua_pushlstring(L, value, vlen);
    }
    lua_rawset(L, -3);
}

static void push_headers(lua_State *L, const wsl_conn *c)
{
    lua_newtable(L);
    const char *name, *value;
    for (size_t i = 0; wsl_conn_header(c, i, &name, &value); i++)
        add_header(L, name, strlen(name), value, strlen(value));
}

/* Field values come from the connection while it lives; afterwards from the copies that
 * wsl_script_release left in the object's table. */
static bool push_live_field(lua_State *L, const wsl_conn *c, const char *k)
{
    if (strcmp(k, "remote") == 0)
        lua_pushstring(L, wsl_conn_remote(c));
    else if (strcmp(k, "path") == 0)
        lua_pushstring(L, wsl_conn_path(c));
    else if (strcmp(k, "query") == 0)
        lua_pushstring(L, wsl_conn_query(c));
    else if (strcmp(k, "protocol") == 0) {
        const char *p = wsl_conn_protocol(c);
        if (*p)
            lua_pushstring(L, p);
        else
            lua_pushnil(L);
    } else
        return false;
    return true;
}

static int conn_index(lua_State *L)
{
    /* Methods first, and before any check: conn:send is looked up for every message, and
     * the method itself checks its argument. */
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
    lua_pop(L, 1);
    lconn *u = check_conn(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "id") == 0) {
        lua_pushinteger(L, (lua_Integer)u->id);
        return 1;
    }
    if (strcmp(k, "data") == 0 || strcmp(k, "headers") == 0) {
        push_fields(L, 1);
        if (lua_getfield(L, -1, k) != LUA_TNIL) return 1;
        lua_pop(L, 1);
        if (k[0] == 'd')
            lua_newtable(L);
        else if (u->c)
            push_headers(L, u->c);
        else
            lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, k);
        return 1;
    }
    if (u->c) {
        if (!push_live_field(L, u->c, k)) lua_pushnil(L);
        return 1;
    }
    push_fields(L, 1); /* closed: the copies kept by wsl_script_release */
    lua_getfield(L, -1, k);
    return 1;
}

static int conn_newindex(lua_State *L)
{
    check_conn(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "data") != 0) return luaL_error(L, "conn.%s is read-only", k);
    push_fields(L, 1);
    lua_pushvalue(L, 3);
    lua_setfield(L, -2, "data");
    return 0;
}

static int conn_tostring(lua_State *L)
{
    lconn *u = check_conn(L, 1);
    if (u->c) {
        lua_pushfstring(L, "conn#%I (%s)", (lua_Integer)u->id, wsl_conn_remote(u->c));
    } else {
        push_fields(L, 1);
        lua_getfield(L, -1, "remote");
        lua_pushfstring(L, "conn#%I (%s, closed)", (lua_Integer)u->id,
                        lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
    }
    return 1;
}

/* "text" (the default) or "binary". */
static int kind_opcode(lua_State *L, int i)
{
    size_t len;
    const char *k = lua_isnoneornil(L, i) ? "text" : lua_tolstring(L, i, &len);
    if (k && strcmp(k, "text") == 0) return WSL_OP_TEXT;
    if (k && strcmp(k, "binary") == 0) return WSL_OP_BINARY;
    return luaL_argerror(L, i, "kind must be \"text\" or \"binary\"");
}

/* Check data and kind at stack positions i and i + 1, and encode the frame header. */
static void check_msg(lua_State *L, int i, wsl_msg *m, const char *fn)
{
    size_t len;
    const char *p = luaL_checklstring(L, i, &len);
    int op = kind_opcode(L, i + 1);
    if (op == WSL_OP_TEXT && !wsl_utf8_valid(p, len))
        luaL_error(L, "%s: text is not valid UTF-8 (send it as \"binary\")", fn);
    wsl_msg_init(m, op, p, len);
}

static int push_result(lua_State *L, int r)
{
    if (r == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, r == WSL_ECLOSED ? "closed" : "out of memory");
    return 2;
}

static int conn_send(lua_State *L)
{
    lconn *u = check_conn(L, 1);
    wsl_msg m;
    check_msg(L, 2, &m, "conn:send");
    int r = u->c ? wsl_conn_send(u->c, &m) : WSL_ECLOSED;
    wsl_msg_release(&m);
    return push_result(L, r);
}

static int conn_close(lua_State *L)
{
    lconn *u = check_conn(L, 1);
    lua_Integer code = luaL_optinteger(L, 2, 1000);
    size_t len;
    const char *reason = luaL_optlstring(L, 3, "", &len);
    if (code < 0 || code > 65535 || !wsl_close_code_valid((unsigned)code) ||
        (code >= 1004 && code <= 1006))
        return luaL_error(L, "conn:close: %d is not a close code a server may send", (int)code);
    if (len > WSL_CONTROL_MAX - 2)
        return luaL_error(L, "conn:close: reason longer than %d bytes", WSL_CONTROL_MAX - 2);
    if (!wsl_utf8_valid(reason, len)) return luaL_error(L, "conn:close: reason is not UTF-8");
    return push_result(L, u->c ? wsl_conn_close(u->c, (unsigned)code, reason, len) : WSL_ECLOSED);
}

static int conn_is_open(lua_State *L)
{
    lconn *u = check_conn(L, 1);
    lua_pushboolean(L, u->c && wsl_conn_is_open(u->c));
    return 1;
}

static int conn_buffered(lua_State *L)
{
    lconn *u = check_conn(L, 1);
    lua_pushinteger(L, u->c ? (lua_Integer)u->c->out.bytes : 0);
    return 1;
}

static const char *check_topic(lua_State *L, int i, size_t *len)
{
    if (lua_type(L, i) != LUA_TSTRING)
        luaL_error(L, "bad topic (a non-empty string expected, got %s)", luaL_typename(L, i));
    const char *t = lua_tolstring(L, i, len);
    if (*len == 0) luaL_error(L, "bad topic (a non-empty string expected, got \"\")");
    return t;
}

static int conn_subscribe(lua_State *L)
{
    lconn *u = check_conn(L, 1);
    size_t len;
    const char *t = check_topic(L, 2, &len);
    if (!u->c || !wsl_conn_is_open(u->c)) return push_result(L, WSL_ECLOSED);
    int r = wsl_topics_subscribe(u->c->srv->topics, &u->c->subs, u->c, t, len);
    if (r < 0) return push_result(L, WSL_ENOMEM);
    lua_pushboolean(L, r);
    return 1;
}

static int conn_unsubscribe(lua_State *L)
{
    lconn *u = check_conn(L, 1);
    size_t len;
    const char *t = check_topic(L, 2, &len);
    lua_pushboolean(L, u->c && wsl_topics_unsubscribe(u->c->srv->topics, &u->c->subs, t, len));
    return 1;
}

static int conn_topics(lua_State *L)
{
    lconn *u = check_conn(L, 1);
    lua_newtable(L);
    if (!u->c) return 1;
    int i = 0;
    for (wsl_sub *sub = u->c->subs.head; sub; sub = wsl_sub_next(sub)) {
        size_t len;
        const char *name = wsl_sub_topic(sub, &len);
        lua_pushlstring(L, name, len);
        lua_rawseti(L, -2, ++i);
    }
    return 1;
}

static const luaL_Reg conn_methods[] = {
    {"send", conn_send},           {"close", conn_close},
    {"is_open", conn_is_open},     {"buffered", conn_buffered},
    {"subscribe", conn_subscribe}, {"unsubscribe", conn_unsubscribe},
    {"topics", conn_topics},       {NULL, NULL},
};

/* ---- the ws module ------------------------------------------------------------------------- */

static const wsl_conn *opt_except(lua_State *L, int i)
{
    if (lua_isnoneornil(L, i)) return NULL;
    lconn *u = check_conn(L, i);
    return u->c;
}

static int ws_broadcast(lua_State *L)
{
    wsl_script *s = script_of(L);
    wsl_msg m;
    check_msg(L, 1, &m, "ws.broadcast");
    const wsl_conn *except = opt_except(L, 3);
    size_t n = wsl_server_broadcast(s->srv, &m, except);
    wsl_msg_release(&m);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

static int ws_publish(lua_State *L)
{
    wsl_script *s = script_of(L);
    size_t len;
    const char *t = check_topic(L, 1, &len);
    wsl_msg m;
    check_msg(L, 2, &m, "ws.publish");
    const wsl_conn *except = opt_except(L, 4);
    size_t n = wsl_server_publish(s->srv, t, len, &m, except);
    wsl_msg_release(&m);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

static int ws_subscribers(lua_State *L)
{
    wsl_script *s = script_of(L);
    size_t len, n;
    const char *t = check_topic(L, 1, &len);
    wsl_topics_members(s->srv->topics, t, len, &n);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

static int ws_count(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)script_of(L)->srv->lists[WSL_LIST_OPEN].n);
    return 1;
}

static int conns_next(lua_State *L)
{
    /* upvalue 1: the snapshot; upvalue 2: the next index */
    lua_Integer i = lua_tointeger(L, lua_upvalueindex(2));
    for (;;) {
        if (lua_rawgeti(L, lua_upvalueindex(1), ++i) == LUA_TNIL) return 1;
        lconn *u = lua_touserdata(L, -1);
        if (u->c && wsl_conn_is_open(u->c)) break; /* skip those closed since the snapshot */
        lua_pop(L, 1);
    }
    lua_pushinteger(L, i);
    lua_replace(L, lua_upvalueindex(2));
    return 1;
}

/* for conn in ws.connections() do ... end: a snapshot, so the loop body may close connections. */
static int ws_connections(lua_State *L)
{
    wsl_script *s = script_of(L);
    wsl_conn_list *l = &s->srv->lists[WSL_LIST_OPEN];
    lua_createtable(L, (int)l->n, 0);
    int i = 0;
    for (wsl_conn *c = l->head; c; c = c->next) {
        push_conn(L, c);
        lua_rawseti(L, -2, ++i);
    }
    lua_pushinteger(L, 0);
    lua_pushcclosure(L, conns_next, 2);
    return 1;
}

static int ws_get(lua_State *L)
{
    lua_Integer id = luaL_checkinteger(L, 1);
    wsl_conn *c = id > 0 ? wsl_server_get(script_of(L)->srv, (uint64_t)id) : NULL;
    if (c)
        push_conn(L, c);
    else
        lua_pushnil(L);
    return 1;
}

static int ws_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
    return 1;
}

static int log_at(lua_State *L, wsl_log_level level, int first)
{
    if (!wsl_log_enabled(level)) return 0;
    luaL_Buffer b;
    int n = lua_gettop(L);
    luaL_buffinit(L, &b);
    for (int i = first; i <= n; i++) {
        if (i > first) luaL_addchar(&b, ' ');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    wsl_log(level, "%s", lua_tostring(L, -1));
    return 0;
}

static int log_call(lua_State *L)
{
    return log_at(L, WSL_LOG_INFO, 2); /* argument 1 is the ws.log table itself */
}
static int log_error(lua_State *L)
{
    return log_at(L, WSL_LOG_ERROR, 1);
}
static int log_warn(lua_State *L)
{
    return log_at(L, WSL_LOG_WARN, 1);
}
static int log_info(lua_State *L)
{
    return log_at(L, WSL_LOG_INFO, 1);
}
static int log_debug(lua_State *L)
{
    return log_at(L, WSL_LOG_DEBUG, 1);
}

/* ---- timers -------------------------------------------------------------------------------- */

static void timer_stop(lua_State *L, ltimer *t)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->handle_ref);
    lhandle *h = lua_touserdata(L, -1);
    if (h) h->t = NULL;
    lua_pop(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, t->fn_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, t->handle_ref);
    if (t->prev)
        t->prev->next = t->next;
    else
        t->s->timers = t->next;
    if (t->next) t->next->prev = t->prev;
    uv_timer_stop(&t->t);
    uv_close((uv_handle_t *)&t->t, (uv_close_cb)free);
}

static int timer_fire_body(lua_State *L)
{
    ltimer *t = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->fn_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->handle_ref);
    if (!t->repeat) timer_stop(L, t); /* before the call: the callback may start it anew */
    lua_call(L, 1, 0);
    return 0;
}

static void on_timer(uv_timer_t *ut)
{
    ltimer *t = (ltimer *)ut;
    protect(t->s, timer_fire_body, t, t->repeat ? "ws.every callback" : "ws.timer callback", NULL);
}

static int make_timer(lua_State *L, bool repeat)
{
    wsl_script *s = script_of(L);
    lua_Number secs = luaL_checknumber(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (!(secs >= 0) || secs > 1e9 || (repeat && secs <= 0))
        return luaL_error(L, "%s: bad interval %f", repeat ? "ws.every" : "ws.timer", secs);
    uint64_t ms = (uint64_t)(secs * 1000 + 0.5);
    if (repeat && ms == 0) ms = 1;

    lhandle *h = lua_newuserdatauv(L, sizeof *h, 0);
    h->t = NULL;
    luaL_setmetatable(L, TIMER_MT);
    ltimer *t = malloc(sizeof *t);
    if (!t) return luaL_error(L, "not enough memory");
    lua_pushvalue(L, 2);
    t->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    t->handle_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    t->s = s;
    t->gen = s->gen;
    t->repeat = repeat;
    t->prev = NULL;
    t->next = s->timers;
    if (s->timers) s->timers->prev = t;
    s->timers = t;
    uv_timer_init(s->srv->loop, &t->t);
    uv_timer_start(&t->t, on_timer, ms, repeat ? ms : 0);
    h->t = t;
    return 1;
}

static int ws_timer(lua_State *L)
{
    return make_timer(L, false);
}

static int ws_every(lua_State *L)
{
    return make_timer(L, true);
}

static int timer_stop_method(lua_State *L)
{
    lhandle *h = luaL_checkudata(L, 1, TIMER_MT);
    bool was = h->t != NULL;
    if (h->t) timer_stop(L, h->t);
    lua_pushboolean(L, was);
    return 1;
}

static int timer_active(lua_State *L)
{
    lhandle *h = luaL_checkudata(L, 1, TIMER_MT);
    lua_pushboolean(L, h->t != NULL);
    return 1;
}

/* Which timers stop_timers stops: every one, those of one load of the script, or the others. */
enum { STOP_ALL, STOP_GEN, STOP_OTHER_GENS };

static void stop_timers(wsl_script *s, int which, unsigned gen)
{
    ltimer *t = s->timers;
    while (t) {
        ltimer *next = t->next;
        if (which == STOP_ALL || (t->gen == gen) == (which == STOP_GEN)) timer_stop(s->L, t);
        t = next;
    }
}

/* ---- setting up the state ----------------------------------------------------------------- */

static int readonly(lua_State *L)
{
    return luaL_error(L, "ws.options is read-only");
}

/* ws.options.address: the address really bound (port 0 resolved), once listening. */
static int options_index(lua_State *L)
{
    const char *k = lua_tostring(L, 2);
    wsl_server *srv = script_of(L)->srv;
    if (k && strcmp(k, "address") == 0 && srv->addr[0]) {
        lua_pushstring(L, srv->addr);
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
}

static void push_options(lua_State *L, const wsl_server *srv)
{
    const wsl_options *o = srv->opt;
    lua_newtable(L); /* the proxy */
    lua_newtable(L); /* its metatable */
    lua_newtable(L); /* the values */
    lua_pushfstring(L, strchr(o->host, ':') ? "[%s]:%d" : "%s:%d", o->host, o->port);
    lua_setfield(L, -2, "listen");
    lua_pushstring(L, o->static_dir ? o->static_dir : (o->static_off ? "none" : ""));
    lua_setfield(L, -2, "static");
#define NUM(name, v)                                                                               \
    do {                                                                                           \
        lua_pushnumber(L, (lua_Number)(v));                                                        \
        lua_setfield(L, -2, name);                                                                 \
    } while (0)
#define INT(name, v)                                                                               \
    do {                                                                                           \
        lua_pushinteger(L, (lua_Integer)(v));                                                      \
        lua_setfield(L, -2, name);                                                                 \
    } while (0)
    INT("max_message", o->max_message);
    INT("max_backpressure", o->max_backpressure);
    INT("max_connections", srv->max_conns); /* the effective limit */
    INT("lua_memory", o->lua_memory);
    NUM("handshake_timeout", o->handshake_timeout);
    NUM("idle_timeout", o->idle_timeout);
    NUM("handler_timeout", o->handler_timeout);
#undef NUM
#undef INT
    lua_pushboolean(L, o->reload);
    lua_setfield(L, -2, "reload");
    lua_pushinteger(L, o->verbosity);
    lua_setfield(L, -2, "verbosity");
    lua_pushcclosure(L, options_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, readonly);
    lua_setfield(L, -2, "__newindex");
    lua_pushliteral(L, "read-only");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
}

static int open_ws(lua_State *L)
{
    wsl_script *s = script_of(L);
    static const luaL_Reg fns[] = {
        {"broadcast", ws_broadcast},
        {"publish", ws_publish},
        {"subscribers", ws_subscribers},
        {"connections", ws_connections},
        {"count", ws_count},
        {"get", ws_get},
        {"now", ws_now},
        {"timer", ws_timer},
        {"every", ws_every},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);

    static const luaL_Reg logs[] = {
        {"error", log_error}, {"warn", log_warn}, {"info", log_info},
        {"debug", log_debug}, {NULL, NULL},
    };
    luaL_newlib(L, logs);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, log_call);
    lua_setfield(L, -2, "__call");
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "log");

    push_options(L, s->srv);
    lua_setfield(L, -2, "options");
    lua_pushliteral(L, WSLUAD_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}

/* package.path and cpath: the script's directory first, then Lua's defaults. */
static void set_paths(lua_State *L, const char *script)
{
    const char *slash = strrchr(script, '/');
    if (slash)
        lua_pushlstring(L, script, slash == script ? 1 : (size_t)(slash - script));
    else
        lua_pushliteral(L, ".");
    const char *dir = lua_tostring(L, -1);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 1);
    lua_getfield(L, -1, "cpath");
    lua_pushfstring(L, "%s/?.so;%s", dir, lua_tostring(L, -1));
    lua_setfield(L, -3, "cpath");
    lua_pop(L, 3);
}

static int setup_body(lua_State *L)
{
    wsl_script *s = lua_touserdata(L, 1);
    luaL_openlibs(L);

    luaL_newmetatable(L, CONN_MT);
    conn_mt = lua_topointer(L, -1);
    luaL_newlib(L, conn_methods);
    lua_pushcclosure(L, conn_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, conn_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, conn_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    luaL_newmetatable(L, TIMER_MT);
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, timer_stop_method);
    lua_setfield(L, -2, "stop");
    lua_pushcfunction(L, timer_active);
    lua_setfield(L, -2, "active");
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &conns_key);
    /* Handlers make short-lived strings (every message is one): the generational collector
     * handles those with far less work than the incremental one. */
    lua_gc(L, LUA_GCGEN, 0, 0);

    luaL_requiref(L, "wsluad", open_ws, 0);
    lua_setglobal(L, "ws");
    set_paths(L, s->path);
    return 0;
}

/* Loading is two protected steps, so a reload can tell "does not compile" (nothing changed) from
 * "its top level raised" (handlers to restore): compile keeps the chunk in the registry, run
 * takes it from there. */
static int compile_body(lua_State *L)
{
    wsl_script *s = lua_touserdata(L, 1);
    if (luaL_loadfile(L, s->path) != LUA_OK) return lua_error(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &chunk_key);
    return 0;
}

static int run_body(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &chunk_key);
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &chunk_key);
    lua_call(L, 0, 0);
    return 0;
}

wsl_script *wsl_script_new(wsl_server *srv, const char *path)
{
    wsl_script *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->srv = srv;
    s->path = strdup(path);
    s->mem_limit = srv->opt->lua_memory;
    s->L = lua_newstate(lalloc, s);
    if (!s->path || !s->L) {
        wsl_error("cannot create the Lua state: out of memory");
        wsl_script_free(s);
        return NULL;
    }
    *(wsl_script **)lua_getextraspace(s->L) = s;
    srv->script = s;

    handler_timeout = srv->opt->handler_timeout;
    alarm_L = s->L;
    struct sigaction sa = {.sa_handler = on_alarm, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);

    uv_timer_init(srv->loop, &s->debounce);
    s->debounce.data = s;
    if (!protect(s, setup_body, s, "setup", NULL)) {
        wsl_script_stop(s);
        lua_close(s->L);
        s->L = NULL;
    }
    return s;
}

int wsl_script_load(wsl_script *s)
{
    if (!s->L) return -1;
    return protect(s, compile_body, s, s->path, NULL) && protect(s, run_body, NULL, s->path, NULL)
               ? 0
               : -1;
}

/* ---- reload ------------------------------------------------------------------------------- */

static const char *const handler_names[] = {"on_open",    "on_message", "on_close", "on_error",
                                            "on_upgrade", "on_drain",   NULL};

static int save_handlers_body(lua_State *L)
{
    lua_newtable(L);
    for (int i = 0; handler_names[i]; i++) {
        lua_getglobal(L, handler_names[i]);
        lua_setfield(L, -2, handler_names[i]);
    }
    lua_rawsetp(L, LUA_REGISTRYINDEX, &saved_key);
    return 0;
}

static int restore_handlers_body(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &saved_key);
    for (int i = 0; handler_names[i]; i++) {
        lua_getfield(L, -1, handler_names[i]);
        lua_setglobal(L, handler_names[i]);
    }
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &saved_key);
    return 0;
}

int wsl_script_reload(wsl_script *s)
{
    /* Compile first: a syntax error changes nothing at all. */
    if (!protect(s, compile_body, s, s->path, NULL)) {
        wsl_warn("reload of %s failed: keeping the running code", s->path);
        return -1;
    }
    if (!protect(s, save_handlers_body, NULL, "reload", NULL)) return -1;
    unsigned old = s->gen++;
    if (!protect(s, run_body, NULL, s->path, NULL)) {
        stop_timers(s, STOP_GEN, s->gen); /* whatever the failed top level started */
        s->gen = old;
        protect(s, restore_handlers_body, NULL, "reload", NULL);
        wsl_warn("reload of %s failed: keeping the running handlers", s->path);
        return -1;
    }
    stop_timers(s, STOP_OTHER_GENS, s->gen);
    lua_pushnil(s->L);
    lua_rawsetp(s->L, LUA_REGISTRYINDEX, &saved_key);
    wsl_info("reloaded %s", s->path);
    return 0;
}

static void on_debounced(uv_timer_t *t)
{
    wsl_script_reload(t->data);
}

static void on_file_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    wsl_script *s = h->data;
    (void)events;
    const char *base = strrchr(s->path, '/');
    base = base ? base + 1 : s->path;
    if (status < 0 || (filename && strcmp(filename, base) != 0)) return;
    /* Editors write in several steps: reload once things have been quiet for a moment. */
    uv_timer_start(&s->debounce, on_debounced, 100, 0);
}

int wsl_script_watch(wsl_script *s)
{
    /* Watch the directory: editors often replace the file rather than write into it. */
    char dir[4096];
    const char *slash = strrchr(s->path, '/');
    if (slash) {
        size_t n = (size_t)(slash - s->path);
        if (n >= sizeof dir) return -ENAMETOOLONG;
        memcpy(dir, s->path, n ? n : 1);
        dir[n ? n : 1] = '\0';
    } else {
        strcpy(dir, ".");
    }
    int r = uv_fs_event_init(s->srv->loop, &s->watch);
    if (r == 0) r = uv_fs_event_start(&s->watch, on_file_event, dir, 0);
    if (r != 0) {
        wsl_error("cannot watch %s: %s", dir, uv_strerror(r));
        return r;
    }
    s->watch.data = s;
    s->watching = true;
    return 0;
}

void wsl_script_stop(wsl_script *s)
{
    if (s->L) stop_timers(s, STOP_ALL, 0);
    if (s->watching) uv_close((uv_handle_t *)&s->watch, NULL);
    s->watching = false;
    if (!uv_is_closing((uv_handle_t *)&s->debounce)) uv_close((uv_handle_t *)&s->debounce, NULL);
    struct itimerval off = {0};
    setitimer(ITIMER_REAL, &off, NULL);
    alarm_armed = 0;
}

void wsl_script_free(wsl_script *s)
{
    if (!s) return;
    if (s->L) lua_close(s->L);
    alarm_L = NULL;
    free(s->path);
    free(s);
}

/* ---- events from the core ---------------------------------------------------------------- */

typedef enum { EV_PLAIN, EV_MESSAGE, EV_CLOSE, EV_ERROR } event_type;

typedef struct event {
    event_type type;
    wsl_script *s;
    wsl_conn *c;
    const char *handler;
    const uint8_t *data;
    size_t len;
    const char *kind;
    unsigned code;
    const wsl_request *req;
    wsl_upgrade *up;
} event;

/* Push the handler; false (nothing pushed) when the script does not define it. */
static bool get_handler(lua_State *L, const char *name)
{
    if (lua_getglobal(L, name) == LUA_TFUNCTION) return true;
    lua_pop(L, 1);
    return false;
}

static int conn_event_body(lua_State *L)
{
    event *e = lua_touserdata(L, 1);
    if (!get_handler(L, e->handler)) return 0;
    push_conn(L, e->c);
    int n = 1;
    switch (e->type) {
    case EV_PLAIN:
        break;
    case EV_MESSAGE:
        lua_pushlstring(L, (const char *)e->data, e->len);
        lua_pushstring(L, e->kind);
        n = 3;
        break;
    case EV_CLOSE:
        lua_pushinteger(L, e->code);
        lua_pushlstring(L, (const char *)e->data, e->len);
        n = 3;
        break;
    case EV_ERROR:
        lua_rawgetp(L, LUA_REGISTRYINDEX, &errmsg_key);
        n = 2;
        break;
    }
    lua_call(L, n, 0);
    return 0;
}

/* Dispatch a connection event; an error goes to on_error, or closes the connection with 1011. */
static void conn_event(event *e)
{
    if (protect(e->s, conn_event_body, e, e->handler, e->c)) return;
    if (!wsl_conn_is_open(e->c) || e->type == EV_CLOSE) return; /* only logged */
    lua_State *L = e->s->L;
    bool has_on_error = lua_getglobal(L, "on_error") == LUA_TFUNCTION;
    lua_pop(L, 1);
    if (has_on_error) {
        event err = {.type = EV_ERROR, .s = e->s, .c = e->c, .handler = "on_error"};
        if (protect(e->s, conn_event_body, &err, "on_error", e->c)) return;
    }
    if (wsl_conn_is_open(e->c)) wsl_conn_close(e->c, 1011, "internal error", 14);
}

void wsl_script_on_open(wsl_script *s, wsl_conn *c)
{
    conn_event(&(event){.s = s, .c = c, .handler = "on_open"});
}

void wsl_script_on_message(wsl_script *s, wsl_conn *c, const uint8_t *data, size_t len, bool binary)
{
    conn_event(&(event){.type = EV_MESSAGE,
                        .s = s,
                        .c = c,
                        .handler = "on_message",
                        .data = data,
                        .len = len,
                        .kind = binary ? "binary" : "text"});
}

void wsl_script_on_close(wsl_script *s, wsl_conn *c, unsigned code, const char *reason, size_t len)
{
    conn_event(&(event){.type = EV_CLOSE,
                        .s = s,
                        .c = c,
                        .handler = "on_close",
                        .code = code,
                        .data = (const uint8_t *)reason,
                        .len = len});
}

void wsl_script_on_drain(wsl_script *s, wsl_conn *c)
{
    conn_event(&(event){.s = s, .c = c, .handler = "on_drain"});
}

bool wsl_script_has_upgrade(const wsl_script *s)
{
    lua_State *L = s->L;
    bool has = lua_getglobal(L, "on_upgrade") == LUA_TFUNCTION;
    lua_pop(L, 1);
    return has;
}

static void push_span(lua_State *L, wsl_span sp)
{
    lua_pushlstring(L, sp.p ? sp.p : "", sp.len);
}

static int upgrade_body(lua_State *L)
{
    event *e = lua_touserdata(L, 1);
    const wsl_request *req = e->req;
    lua_createtable(L, 0, 9);
    push_span(L, req->method);
    lua_setfield(L, -2, "method");
    push_span(L, req->path);
    lua_setfield(L, -2, "path");
    push_span(L, req->query);
    lua_setfield(L, -2, "query");
    char peer[64];
    lua_pushstring(L, wsl_conn_peer(e->c, peer, sizeof peer));
    lua_setfield(L, -2, "remote");
    if (req->origin.len) {
        push_span(L, req->origin);
        lua_setfield(L, -2, "origin");
    }
    lua_newtable(L);
    for (size_t i = 0; i < req->nheaders; i++) {
        const wsl_header *h = &req->headers[i];
        add_header(L, h->name.p, h->name.len, h->value.p ? h->value.p : "", h->value.len);
    }
    lua_setfield(L, -2, "headers");
    lua_newtable(L); /* the offered subprotocols, in order */
    wsl_span list = req->protocols, tok;
    for (int n = 1; wsl_http_next_token(&list, &tok); n++) {
        push_span(L, tok);
        lua_rawseti(L, -2, n);
    }
    lua_setfield(L, -2, "protocols");
    lua_newtable(L);
    lua_setfield(L, -2, "data");
    int req_index = lua_gettop(L);

    if (!get_handler(L, "on_upgrade")) return 0;
    lua_pushvalue(L, req_index);
    lua_call(L, 1, 3);
    wsl_upgrade *up = e->up;
    if (lua_type(L, -3) == LUA_TSTRING) {
        size_t len;
        const char *proto = lua_tolstring(L, -3, &len);
        if (len == 0 || len >= sizeof up->protocol)
            return luaL_error(L, "on_upgrade: bad subprotocol '%s'", proto);
        memcpy(up->protocol, proto, len + 1);
    } else if (lua_type(L, -3) == LUA_TBOOLEAN && !lua_toboolean(L, -3)) {
        lua_Integer status = luaL_optinteger(L, -2, 403);
        if (status < 400 || status > 599)
            return luaL_error(L, "on_upgrade: refusal status %d is not 4xx or 5xx", (int)status);
        const char *body = luaL_optstring(L, -1, wsl_http_reason((int)status));
        up->status = (int)status;
        snprintf(up->body, sizeof up->body, "%s", body);
        return 0;
    } else if (!lua_isnil(L, -3) && !(lua_type(L, -3) == LUA_TBOOLEAN)) {
        return luaL_error(L, "on_upgrade must return nothing, true, a subprotocol or false");
    }
    lua_pop(L, 3);

    /* Accepted: whatever the hook left in req.data becomes conn.data. */
    lua_getfield(L, req_index, "data");
    if (lua_type(L, -1) == LUA_TTABLE) {
        lua_pushnil(L);
        bool empty = lua_next(L, -2) == 0;
        if (!empty) lua_pop(L, 2);
        if (!empty) {
            push_conn(L, e->c);
            int ud = lua_gettop(L);
            push_fields(L, ud);
            lua_pushvalue(L, -3);
            lua_setfield(L, -2, "data");
        }
    }
    return 0;
}

void wsl_script_on_upgrade(wsl_script *s, wsl_conn *c, const wsl_request *req, wsl_upgrade *out)
{
    event e = {.s = s, .c = c, .req = req, .up = out};
    if (!protect(s, upgrade_body, &e, "on_upgrade", NULL)) {
        out->status = 500;
        snprintf(out->body, sizeof out->body, "Internal Server Error");
    }
}

static int release_body(lua_State *L)
{
    wsl_conn *c = lua_touserdata(L, 1);
    push_conn(L, c);
    int ud = lua_gettop(L);
    push_fields(L, ud);
    static const char *const keep[] = {"remote", "path", "query", "protocol", NULL};
    for (int i = 0; keep[i]; i++) {
        push_live_field(L, c, keep[i]);
        lua_setfield(L, -2, keep[i]);
    }
    if (lua_getfield(L, -1, "headers") == LUA_TNIL) {
        push_headers(L, c);
        lua_setfield(L, -3, "headers");
    }
    lconn *u = lua_touserdata(L, ud);
    u->c = NULL;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &conns_key);
    luaL_unref(L, -1, c->lua_ref);
    c->lua_ref = 0;
    return 0;
}

void wsl_script_release(wsl_script *s, wsl_conn *c)
{
    if (!c->lua_ref || !s) return;
    if (!protect(s, release_body, c, "release", c)) {
        /* Out of Lua memory: at least never leave a dangling pointer behind. */
        lua_State *L = s->L;
        lua_rawgetp(L, LUA_REGISTRYINDEX, &conns_key);
        lua_rawgeti(L, -1, c->lua_ref);
        lconn *u = lua_touserdata(L, -1);
        if (u) u->c = NULL;
        luaL_unref(L, -2, c->lua_ref);
        lua_pop(L, 2);
        c->lua_ref = 0;
    }
}
