/* The `ws` module: what a script can do beyond one connection (broadcast, publish, the open
 * connections, timers, logging, the server's options), opened once as the global `ws`. */
#include <string.h>

#include "log.h"
#include "script_priv.h"

static wsl_server *server_of(lua_State *L)
{
    return wsl_script_of(L)->srv;
}

/* The optional `except` connection at stack index i. */
static const wsl_conn *opt_except(lua_State *L, int i)
{
    return lua_isnoneornil(L, i) ? NULL : wsl_lconn_check(L, i);
}

static int ws_broadcast(lua_State *L)
{
    wsl_msg m;
    wsl_lcheck_msg(L, 1, &m, "ws.broadcast");
    size_t n = wsl_server_broadcast(server_of(L), &m, opt_except(L, 3));
    wsl_msg_release(&m);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

static int ws_publish(lua_State *L)
{
    size_t len;
    const char *t = wsl_lcheck_topic(L, 1, &len);
    wsl_msg m;
    wsl_lcheck_msg(L, 2, &m, "ws.publish");
    size_t n = wsl_server_publish(server_of(L), t, len, &m, opt_except(L, 4));
    wsl_msg_release(&m);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

/* ws.send(id, data [, kind]): to a connection by id, on whichever node holds it. */
static int ws_send(lua_State *L)
{
    lua_Integer id = luaL_checkinteger(L, 1);
    wsl_msg m;
    wsl_lcheck_msg(L, 2, &m, "ws.send");
    int r = id > 0 ? wsl_server_send_to(server_of(L), (uint64_t)id, &m) : WSL_ECLOSED;
    wsl_msg_release(&m);
    return wsl_lresult(L, r);
}

static int ws_subscribers(lua_State *L)
{
    size_t len;
    const char *t = wsl_lcheck_topic(L, 1, &len);
    lua_pushinteger(L, (lua_Integer)wsl_server_subscribers(server_of(L), t, len));
    return 1;
}

static int ws_count(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)wsl_server_count(server_of(L)));
    return 1;
}

static int conns_next(lua_State *L)
{
    /* upvalue 1: the snapshot; upvalue 2: the next index */
    lua_Integer i = lua_tointeger(L, lua_upvalueindex(2));
    for (;;) {
        if (lua_rawgeti(L, lua_upvalueindex(1), ++i) == LUA_TNIL) return 1;
        wsl_conn *c = wsl_lconn_check(L, -1);
        if (c && wsl_conn_is_open(c)) break; /* skip those closed since the snapshot */
        lua_pop(L, 1);
    }
    lua_pushinteger(L, i);
    lua_replace(L, lua_upvalueindex(2));
    return 1;
}

/* for conn in ws.connections() do ... end: a snapshot, so the loop body may close connections. */
static int ws_connections(lua_State *L)
{
    wsl_server *srv = server_of(L);
    lua_createtable(L, (int)wsl_server_count(srv), 0);
    int i = 0;
    for (wsl_conn *c = wsl_server_first_open(srv); c; c = wsl_server_next_open(srv, c)) {
        wsl_lconn_push(L, c);
        lua_rawseti(L, -2, ++i);
    }
    lua_pushinteger(L, 0);
    lua_pushcclosure(L, conns_next, 2);
    return 1;
}

static int ws_get(lua_State *L)
{
    lua_Integer id = luaL_checkinteger(L, 1);
    wsl_conn *c = id > 0 ? wsl_server_get(server_of(L), (uint64_t)id) : NULL;
    if (c)
        wsl_lconn_push(L, c);
    else
        lua_pushnil(L);
    return 1;
}

static int ws_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
    return 1;
}

/* True once the server is shutting down: on_close then tells a client leaving (false) from the
 * shutdown closing everyone (true, code 1001). */
static int ws_stopping(lua_State *L)
{
    lua_pushboolean(L, wsl_server_stopping(server_of(L)));
    return 1;
}

/* ---- ws.log ------------------------------------------------------------------------------ */

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
    /* ws.log(conn, ...): the JSON log also gets the connection as fields. */
    uint64_t id;
    char remote[80];
    bool has_conn = first <= n && wsl_lconn_ident(L, first, &id, remote, sizeof remote);
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    wsl_log_bytes(level, has_conn, has_conn ? id : 0, has_conn ? remote : NULL, msg, len);
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

static void push_log(lua_State *L)
{
    static const luaL_Reg logs[] = {
        {"error", log_error}, {"warn", log_warn}, {"info", log_info},
        {"debug", log_debug}, {NULL, NULL},
    };
    luaL_newlib(L, logs);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, log_call);
    lua_setfield(L, -2, "__call");
    lua_setmetatable(L, -2);
}

/* ---- ws.options: read-only ----------------------------------------------------------------- */

static int readonly(lua_State *L)
{
    return luaL_error(L, "ws.options is read-only");
}

/* ws.options.address: the address really bound (port 0 resolved), once listening. */
static int options_index(lua_State *L)
{
    const char *k = lua_tostring(L, 2);
    const char *addr = wsl_server_address(server_of(L));
    if (k && strcmp(k, "address") == 0 && addr[0]) {
        lua_pushstring(L, addr);
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
}

static void set_number(lua_State *L, const char *name, lua_Number v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, name);
}

static void set_integer(lua_State *L, const char *name, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, name);
}

static void push_options(lua_State *L, const wsl_server *srv)
{
    const wsl_options *o = wsl_server_options(srv);
    lua_newtable(L); /* the proxy */
    lua_newtable(L); /* its metatable */
    lua_newtable(L); /* the values */
    /* "HOST:PORT", or several joined with commas: the plain ones, then the TLS ones. */
    for (int tls = 0; tls < 2; tls++) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (size_t i = 0, n = 0; i < o->nlisten; i++) {
            const wsl_listen_opt *l = &o->listen[i];
            if (l->tls != tls) continue;
            if (n++) luaL_addchar(&b, ',');
            lua_pushfstring(L, strchr(l->host, ':') ? "[%s]:%d" : "%s:%d", l->host, l->port);
            luaL_addvalue(&b);
        }
        luaL_pushresult(&b);
        lua_setfield(L, -2, tls ? "tls_listen" : "listen");
    }
    lua_pushstring(L, o->static_dir ? o->static_dir : (o->static_off ? "none" : ""));
    lua_setfield(L, -2, "static");
    set_integer(L, "max_message", (lua_Integer)o->max_message);
    set_integer(L, "max_backpressure", (lua_Integer)o->max_backpressure);
    lua_pushboolean(L, o->deflate);
    lua_setfield(L, -2, "deflate");
    set_integer(L, "deflate_min", (lua_Integer)o->deflate_min);
    set_integer(L, "max_connections", wsl_server_max_connections(srv)); /* the effective limit */
    set_integer(L, "lua_memory", (lua_Integer)o->lua_memory);
    set_number(L, "handshake_timeout", o->handshake_timeout);
    set_number(L, "idle_timeout", o->idle_timeout);
    set_number(L, "handler_timeout", o->handler_timeout);
    set_integer(L, "max_request_body", (lua_Integer)o->max_request_body);
    set_number(L, "request_timeout", o->request_timeout);
    lua_pushboolean(L, o->reload);
    lua_setfield(L, -2, "reload");
    set_integer(L, "verbosity", o->verbosity);
    lua_pushstring(L, o->redis_prefix); /* a script's own Redis keys can follow it */
    lua_setfield(L, -2, "redis_prefix");
    lua_pushcclosure(L, options_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, readonly);
    lua_setfield(L, -2, "__newindex");
    lua_pushliteral(L, "read-only");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
}

/* Fields that change while the server runs: ws.node (a node takes another number when another
 * live node holds its own). */
static int ws_index(lua_State *L)
{
    const char *k = lua_tostring(L, 2);
    if (k && strcmp(k, "node") == 0) {
        lua_pushinteger(L, wsl_server_node(server_of(L)));
        return 1;
    }
    return 0;
}

int wsl_lws_open(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"broadcast", ws_broadcast},
        {"publish", ws_publish},
        {"send", ws_send},
        {"subscribers", ws_subscribers},
        {"connections", ws_connections},
        {"count", ws_count},
        {"get", ws_get},
        {"now", ws_now},
        {"stopping", ws_stopping},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    wsl_ltimer_register(L);
    wsl_lspawn_register(L);
    wsl_lredis_register(L);
    wsl_lmetric_register(L);
    push_log(L);
    lua_setfield(L, -2, "log");
    push_options(L, server_of(L));
    lua_setfield(L, -2, "options");
    lua_pushliteral(L, WSLUAD_VERSION);
    lua_setfield(L, -2, "version");
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, ws_index);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    return 1;
}
