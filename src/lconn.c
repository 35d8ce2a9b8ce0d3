/* The conn object scripts see: one per connection, made on first use. It is a table, so that
 * conn:send is one table lookup in the VM, not a call of a C __index (over a tenth of an echo):
 * [1] the connection's slot while it lives (see conn_of), false after; "send" the method itself;
 * "data" the script's own value once set; [2] the fields table once needed. Every other method
 * and field comes through the metatable, from the connection while it lives and from copies
 * once it is gone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lhandle.h"
#include "script_priv.h"
#include "utf8.h"

enum { SLOT = 1, FIELDS = 2 }; /* the object's integer keys */

/* The conn metatable, anchored in the registry for the state's life, so its address identifies
 * it (see conn_slow). */
static const void *conn_mt;

static int conn_send(lua_State *L);

/* A connection's slot is its object's registry reference, and s->conns[slot] the connection:
 * the object names its connection by a number, so nothing a script does to the table (which is
 * its own to write) can make us follow a stale or forged pointer. A number put there by hand
 * names some live connection or none. */
static int slot_reserve(wsl_script *s, int ref)
{
    if ((unsigned)ref < s->nconns) return 0;
    unsigned n = s->nconns ? s->nconns : 64;
    while (n <= (unsigned)ref)
        n *= 2;
    struct wsl_lconn_slot *p = realloc(s->conns, n * sizeof *p);
    if (!p) return -1;
    memset(p + s->nconns, 0, (n - s->nconns) * sizeof *p);
    s->conns = p;
    s->nconns = n;
    return 0;
}

void wsl_lconn_push(lua_State *L, wsl_conn *c)
{
    if (c->udata) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, (int)c->udata);
        return;
    }
    wsl_script *s = wsl_script_of(L);
    lua_createtable(L, 0, 2); /* send and the slot: one block (an array part would be another) */
    lua_pushliteral(L, "send");
    lua_pushcfunction(L, conn_send);
    lua_rawset(L, -3);
    luaL_setmetatable(L, WSL_CONN_MT);
    lua_pushvalue(L, -1);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (slot_reserve(s, ref) != 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        luaL_error(L, "not enough memory");
    }
    lua_pushinteger(L, ref);
    lua_rawseti(L, -2, SLOT);
    s->conns[ref] = (struct wsl_lconn_slot){c, lua_topointer(L, -1)};
    c->udata = (uint32_t)ref;
}

/* Whether the value at i is a conn object, live or closed: by its metatable. */
static bool is_conn(lua_State *L, int i)
{
    if (lua_type(L, i) != LUA_TTABLE || !lua_getmetatable(L, i)) return false;
    bool yes = lua_topointer(L, -1) == conn_mt;
    lua_pop(L, 1);
    return yes;
}

/* Not a live connection's object: a closed one's (NULL), or not a conn at all (raises). */
static __attribute__((noinline)) wsl_conn *conn_slow(lua_State *L, int i)
{
    if (!is_conn(L, i)) luaL_typeerror(L, i, WSL_CONN_MT);
    return NULL;
}

/* The connection of the object at i, without raising: NULL when there is none. */
static inline wsl_conn *live_conn(lua_State *L, int i)
{
    if (lua_type(L, i) != LUA_TTABLE) return NULL;
    const wsl_script *s = wsl_script_of(L);
    int isnum;
    lua_rawgeti(L, i, SLOT);
    lua_Integer slot = lua_tointegerx(L, -1, &isnum);
    lua_pop(L, 1);
    return isnum && slot > 0 && (lua_Unsigned)slot < s->nconns ? s->conns[slot].c : NULL;
}

/* Every method checks its object: its connection, NULL once that is gone; not a conn raises.
 * Most calls are about the connection whose handler runs (conn:send answering a message, the
 * sender left out of ws.broadcast): that one is known by the object's address. */
static inline wsl_conn *conn_of(lua_State *L, int i)
{
    const wsl_script *s = wsl_script_of(L);
    wsl_conn *c = s->conn_now;
    if (c && c->udata && lua_topointer(L, i) == s->conns[c->udata].obj) return c;
    c = live_conn(L, i);
    return c ? c : conn_slow(L, i);
}

wsl_conn *wsl_lconn_check(lua_State *L, int i)
{
    return conn_of(L, i);
}

wsl_conn *wsl_lconn_get(lua_State *L, int i)
{
    return live_conn(L, i);
}

/* The object's fields table (created on first use): the headers once read, and the copies of
 * every field made when the connection goes. */
static void push_fields(lua_State *L, int obj)
{
    if (lua_rawgeti(L, obj, FIELDS) == LUA_TTABLE) return;
    lua_pop(L, 1);
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, -1);
    lua_rawseti(L, obj, FIELDS);
}

bool wsl_lconn_ident(lua_State *L, int i, uint64_t *id, char *remote, size_t cap)
{
    if (!is_conn(L, i)) return false;
    wsl_conn *c = live_conn(L, i);
    if (c) {
        *id = wsl_conn_id(c);
        snprintf(remote, cap, "%s", wsl_conn_remote(c));
        return true;
    }
    push_fields(L, lua_absindex(L, i)); /* closed: the copies */
    lua_getfield(L, -1, "id");
    *id = (uint64_t)lua_tointeger(L, -1);
    lua_getfield(L, -2, "remote");
    snprintf(remote, cap, "%s", lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?");
    lua_pop(L, 3);
    return true;
}

void wsl_lconn_set_data(lua_State *L, wsl_conn *c, int value)
{
    value = lua_absindex(L, value);
    wsl_lconn_push(L, c);
    lua_pushliteral(L, "data");
    lua_pushvalue(L, value);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

void wsl_lconn_add_header(lua_State *L, const char *name, size_t nlen, const char *value,
                          size_t vlen)
{
    luaL_Buffer b;
    wsl_ascii_lower(luaL_buffinitsize(L, &b, nlen), name, nlen);
    luaL_pushresultsize(&b, nlen);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) { /* a repeated header reads as one, as HTTP allows */
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
        wsl_lconn_add_header(L, name, strlen(name), value, strlen(value));
}

/* The fields read from the connection while it lives; wsl_lconn_release keeps copies. */
static const struct {
    const char *name;
    wsl_info_field which;
} live_fields[] = {{"remote", WSL_INFO_REMOTE},
                   {"path", WSL_INFO_PATH},
                   {"query", WSL_INFO_QUERY},
                   {"protocol", WSL_INFO_PROTOCOL}};

static bool push_live_field(lua_State *L, const wsl_conn *c, const char *k)
{
    for (size_t i = 0; i < sizeof live_fields / sizeof live_fields[0]; i++) {
        if (strcmp(k, live_fields[i].name) != 0) continue;
        const char *v = wsl_conn_info_str(c, live_fields[i].which);
        if (live_fields[i].which == WSL_INFO_PROTOCOL && !*v)
            lua_pushnil(L); /* no subprotocol */
        else
            lua_pushstring(L, v);
        return true;
    }
    return false;
}

static int conn_index(lua_State *L)
{
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1; /* a method */
    lua_pop(L, 1);
    wsl_conn *c = conn_of(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "data") == 0) { /* not set yet: an empty table to fill */
        lua_newtable(L);
        lua_pushliteral(L, "data");
        lua_pushvalue(L, -2);
        lua_rawset(L, 1);
        return 1;
    }
    if (!c) { /* closed: the copies kept by wsl_lconn_release */
        push_fields(L, 1);
        lua_getfield(L, -1, k);
        return 1;
    }
    if (strcmp(k, "id") == 0) {
        lua_pushinteger(L, (lua_Integer)wsl_conn_id(c));
    } else if (strcmp(k, "secure") == 0) {
        lua_pushboolean(L, c->secure);
    } else if (strcmp(k, "compressed") == 0) { /* permessage-deflate agreed */
        lua_pushboolean(L, wsl_conn_compressed(c));
    } else if (strcmp(k, "headers") == 0) { /* made once, on first read */
        push_fields(L, 1);
        if (lua_getfield(L, -1, "headers") != LUA_TNIL) return 1;
        push_headers(L, c);
        lua_pushvalue(L, -1);
        lua_setfield(L, -4, "headers");
    } else if (!push_live_field(L, c, k)) {
        lua_pushnil(L);
    }
    return 1;
}

static int conn_newindex(lua_State *L)
{
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "data") == 0) {
        lua_settop(L, 3);
        lua_rawset(L, 1);
        return 0;
    }
    lua_pushvalue(L, 2);
    if (lua_gettable(L, 1) != LUA_TNIL) return luaL_error(L, "conn.%s is read-only", k);
    return luaL_error(L, "conn.%s: a conn has no such field (keep your own in conn.data)", k);
}

static int conn_tostring(lua_State *L)
{
    wsl_conn *c = conn_of(L, 1);
    if (c) {
        /* "closed" as soon as is_open() is false: in on_close the socket is still there. */
        lua_pushfstring(L, wsl_conn_is_open(c) ? "conn#%I (%s)" : "conn#%I (%s, closed)",
                        (lua_Integer)wsl_conn_id(c), wsl_conn_remote(c));
    } else {
        push_fields(L, 1);
        lua_getfield(L, -1, "id");
        lua_getfield(L, -2, "remote");
        lua_pushfstring(L, "conn#%I (%s, closed)", lua_tointeger(L, -2),
                        lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
    }
    return 1;
}

/* ---- arguments and results shared with the ws module ------------------------------------- */

static int kind_opcode(lua_State *L, int i)
{
    /* "text" and "binary" are short strings, so interned: recognised by identity first. */
    const wsl_script *s = wsl_script_of(L);
    const char *k = lua_tostring(L, i);
    if (k == s->kind_str[0]) return WSL_OP_TEXT;
    if (k == s->kind_str[1]) return WSL_OP_BINARY;
    if (lua_isnoneornil(L, i)) k = "text";
    if (k && strcmp(k, "text") == 0) return WSL_OP_TEXT;
    if (k && strcmp(k, "binary") == 0) return WSL_OP_BINARY;
    return luaL_argerror(L, i, "kind must be \"text\" or \"binary\"");
}

/* The message at i and i + 1 (see wsl_lcheck_msg): its bytes, their count, its opcode. */
static inline const char *check_msg(lua_State *L, int i, size_t *len, int *op, const char *fn)
{
    const char *p = lua_tolstring(L, i, len); /* as luaL_checklstring, without its extra calls */
    if (!p) p = luaL_checklstring(L, i, len); /* raises */
    *op = kind_opcode(L, i + 1);
    const wsl_script *s = wsl_script_of(L);
    /* The text message being handled was checked when it arrived: sent back as it is (the very
     * string, kept alive under the call, see script.c), it is not checked again. */
    bool checked = p == s->rx_text && *len == s->rx_len;
    if (*op == WSL_OP_TEXT && !checked && !wsl_utf8_valid(p, *len))
        luaL_error(L, "%s: text is not valid UTF-8 (send it as \"binary\")", fn);
    return p;
}

void wsl_lcheck_msg(lua_State *L, int i, wsl_msg *m, const char *fn)
{
    size_t len;
    int op;
    const char *p = check_msg(L, i, &len, &op, fn);
    wsl_msg_init(m, op, p, len);
}

const char *wsl_lcheck_topic(lua_State *L, int i, size_t *len)
{
    if (lua_type(L, i) != LUA_TSTRING)
        luaL_error(L, "bad topic (a non-empty string expected, got %s)", luaL_typename(L, i));
    const char *t = lua_tolstring(L, i, len);
    if (*len == 0) luaL_error(L, "bad topic (a non-empty string expected, got \"\")");
    return t;
}

int wsl_lresult(lua_State *L, int r)
{
    if (r >= 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, wsl_strerror(r));
    lua_pushstring(L, wsl_err_name(r));
    return 3;
}

/* ---- methods ------------------------------------------------------------------------------ */

static int conn_send(lua_State *L)
{
    wsl_conn *c = conn_of(L, 1);
    size_t len;
    int op;
    const char *p = check_msg(L, 2, &len, &op, "conn:send");
    return wsl_lresult(L, c ? wsl_conn_send_frame(c, op, p, len) : WSL_ECLOSED);
}

static int conn_close(lua_State *L)
{
    wsl_conn *c = wsl_lconn_check(L, 1);
    lua_Integer code = luaL_optinteger(L, 2, 1000);
    size_t len;
    const char *reason = luaL_optlstring(L, 3, "", &len);
    if (code < 0 || code > 65535 || !wsl_close_code_valid((unsigned)code) ||
        (code >= 1004 && code <= 1006))
        return luaL_error(L, "conn:close: %d is not a close code a server may send", (int)code);
    if (len > WSL_CONTROL_MAX - 2)
        return luaL_error(L, "conn:close: reason longer than %d bytes", WSL_CONTROL_MAX - 2);
    if (!wsl_utf8_valid(reason, len)) return luaL_error(L, "conn:close: reason is not UTF-8");
    return wsl_lresult(L, c ? wsl_conn_close(c, (unsigned)code, reason, len) : WSL_ECLOSED);
}

static int conn_is_open(lua_State *L)
{
    wsl_conn *c = wsl_lconn_check(L, 1);
    lua_pushboolean(L, c && wsl_conn_is_open(c));
    return 1;
}

static int conn_buffered(lua_State *L)
{
    wsl_conn *c = wsl_lconn_check(L, 1);
    lua_pushinteger(L, c ? (lua_Integer)wsl_conn_buffered(c) : 0);
    return 1;
}

static int conn_subscribe(lua_State *L)
{
    wsl_conn *c = wsl_lconn_check(L, 1);
    size_t len;
    const char *t = wsl_lcheck_topic(L, 2, &len);
    int r = c ? wsl_server_subscribe(wsl_script_of(L)->srv, c, t, len) : WSL_ECLOSED;
    if (r < 0) return wsl_lresult(L, r);
    lua_pushboolean(L, r);
    return 1;
}

static int conn_unsubscribe(lua_State *L)
{
    wsl_conn *c = wsl_lconn_check(L, 1);
    size_t len;
    const char *t = wsl_lcheck_topic(L, 2, &len);
    lua_pushboolean(L, c && wsl_server_unsubscribe(wsl_script_of(L)->srv, c, t, len) > 0);
    return 1;
}

static int conn_topics(lua_State *L)
{
    wsl_conn *c = wsl_lconn_check(L, 1);
    lua_newtable(L);
    if (!c) return 1;
    int i = 0;
    for (wsl_sub *sub = wsl_conn_topics(c); sub; sub = wsl_sub_next(sub)) {
        size_t len;
        const char *name = wsl_sub_topic(sub, &len);
        lua_pushlstring(L, name, len);
        lua_rawseti(L, -2, ++i);
    }
    return 1;
}

void wsl_lconn_open(lua_State *L)
{
    static const luaL_Reg conn_methods[] = {
        {"send", conn_send},           {"close", conn_close},
        {"is_open", conn_is_open},     {"buffered", conn_buffered},
        {"subscribe", conn_subscribe}, {"unsubscribe", conn_unsubscribe},
        {"topics", conn_topics},       {NULL, NULL},
    };
    conn_mt =
        wsl_lhandle_class(L, WSL_CONN_MT, conn_methods, conn_index, conn_newindex, conn_tostring);
    /* Scripts get the name, not the metatable: an object keeps its fields and methods. */
    luaL_getmetatable(L, WSL_CONN_MT);
    lua_pushliteral(L, WSL_CONN_MT);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}

/* ---- release ---------------------------------------------------------------------------- */

static int release_body(lua_State *L)
{
    wsl_conn *c = lua_touserdata(L, 1);
    wsl_lconn_push(L, c);
    int obj = lua_gettop(L);
    lua_pushboolean(L, 0); /* first: the slot is about to name another connection */
    lua_rawseti(L, obj, SLOT);
    push_fields(L, obj);
    for (size_t i = 0; i < sizeof live_fields / sizeof live_fields[0]; i++) {
        push_live_field(L, c, live_fields[i].name);
        lua_setfield(L, -2, live_fields[i].name);
    }
    lua_pushinteger(L, (lua_Integer)wsl_conn_id(c));
    lua_setfield(L, -2, "id");
    lua_pushboolean(L, c->secure);
    lua_setfield(L, -2, "secure");
    lua_pushboolean(L, wsl_conn_compressed(c));
    lua_setfield(L, -2, "compressed");
    if (lua_getfield(L, -1, "headers") == LUA_TNIL) {
        push_headers(L, c);
        lua_setfield(L, -3, "headers");
    }
    return 0;
}

void wsl_lconn_release(wsl_script *s, wsl_conn *c)
{
    if (!c->udata || !s->L) return;
    /* Keep copies of the fields for code that still holds the object. Whatever happens to them
     * (Lua out of memory), the slot stops naming c here: at worst the object keeps a number a
     * later connection takes, never a freed connection. */
    wsl_protect(s, release_body, c, "release", c);
    s->conns[c->udata] = (struct wsl_lconn_slot){0};
    luaL_unref(s->L, LUA_REGISTRYINDEX, (int)c->udata);
    c->udata = 0;
}
