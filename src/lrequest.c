/* The req object of on_request: the request's fields (method, path, query, headers, remote,
 * secure, body) and the methods that answer it later, req:defer() and req:respond(). It is a box
 * (lhandle.c) pointing at the connection while the request waits for its answer, cleared once it
 * is answered, once on_request returned without deferring it, or when it is abandoned (timed out,
 * the client gone): a late req:respond returns nil, "closed", "ECLOSED". */
#include <string.h>
#include <strings.h>

#include "lhandle.h"
#include "script_priv.h"

/* The box. Its user value 1 is the table of fields. */
typedef struct lrequest {
    wsl_lhandle h; /* h.p: the wsl_conn while its request waits */
    bool deferred; /* req:defer() was called */
} lrequest;

static const void *request_mt;

static const char internal_error[] = "Internal Server Error\n";

static lrequest *check_box(lua_State *L, int i)
{
    return wsl_lhandle_check(L, i, request_mt, WSL_REQUEST_MT);
}

void wsl_lrequest_fields(lua_State *L, const wsl_request *req, int more)
{
    lua_createtable(L, 0, 6 + more);
    wsl_push_span(L, req->method);
    lua_setfield(L, -2, "method");
    wsl_push_span(L, req->path);
    lua_setfield(L, -2, "path");
    wsl_push_span(L, req->query);
    lua_setfield(L, -2, "query");
    lua_pushstring(L, req->remote);
    lua_setfield(L, -2, "remote");
    lua_pushboolean(L, req->secure);
    lua_setfield(L, -2, "secure");
    lua_createtable(L, 0, (int)req->nheaders);
    for (size_t i = 0; i < req->nheaders; i++) {
        const wsl_header *h = &req->headers[i];
        wsl_lconn_add_header(L, h->name.p, h->name.len, h->value.p ? h->value.p : "", h->value.len);
    }
    lua_setfield(L, -2, "headers");
}

void wsl_lrequest_push(lua_State *L, wsl_conn *c, const wsl_http_req *r)
{
    /* The fields first: everything that may raise comes before the box is pinned. */
    wsl_lrequest_fields(L, r->head, 1);
    lua_pushlstring(L, (const char *)r->body, r->body_len);
    lua_setfield(L, -2, "body");
    luaL_checkstack(L, 4, NULL);
    wsl_lrequest_release(L, c); /* never two objects answering one connection */
    int ref;
    lrequest *u = wsl_lhandle_new(L, sizeof *u, 1, WSL_REQUEST_MT, c, &ref);
    u->deferred = false;
    lua_insert(L, -2);
    lua_setiuservalue(L, -2, 1);
    *wsl_conn_request_slot(c) = (uint32_t)ref;
}

void wsl_lrequest_release(lua_State *L, wsl_conn *c)
{
    uint32_t *slot = wsl_conn_request_slot(c);
    if (!slot || !*slot) return;
    wsl_script *s = wsl_script_of(L);
    if (s->req_now == (int)*slot) s->req_now = 0; /* ws.spawn must not find a freed reference */
    wsl_lhandle_release(L, (int)*slot);
    *slot = 0;
}

bool wsl_lrequest_deferred(lua_State *L, wsl_conn *c)
{
    uint32_t *slot = wsl_conn_request_slot(c);
    if (!slot || !*slot) return false;
    wsl_lhandle_push(L, (int)*slot);
    bool d = ((lrequest *)lua_touserdata(L, -1))->deferred;
    lua_pop(L, 1);
    return d;
}

void wsl_lrequest_fail(lua_State *L, wsl_conn *c)
{
    /* The error's own line names no client: this one does, whatever failed. */
    wsl_conn_log(c, WSL_LOG_WARN, "answered 500 after a Lua error");
    wsl_conn_respond(c, 500, NULL, 0, internal_error, sizeof internal_error - 1);
    wsl_lrequest_release(L, c);
}

/* ---- answers ----------------------------------------------------------------------------- */

/* Header names the server writes itself (the body's framing and the connection's fate). */
static bool reserved(const char *name, size_t len)
{
    static const char *const names[] = {"content-length", "transfer-encoding", "connection"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (len == strlen(names[i]) && strncasecmp(name, names[i], len) == 0) return true;
    return false;
}

/* Append "name: value\r\n" to the list at list_idx; the value is at the top of the stack (a
 * string or a number), the name at name_idx. NULL, or what is wrong (pushed). */
static const char *add_line(lua_State *L, int list_idx, int name_idx)
{
    int t = lua_type(L, -1);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
        return lua_pushfstring(L, "header '%s': a string value expected, got %s",
                               lua_tostring(L, name_idx), luaL_typename(L, -1));
    size_t vlen;
    lua_pushvalue(L, -1); /* tolstring converts a number in place: do it on a copy */
    const char *value = lua_tolstring(L, -1, &vlen);
    if (!wsl_http_field_value(value, vlen))
        return lua_pushfstring(L, "header '%s': CR, LF or another control byte in its value",
                               lua_tostring(L, name_idx));
    lua_pushvalue(L, name_idx);
    lua_pushliteral(L, ": ");
    lua_rotate(L, -3, 2); /* name, ": ", value */
    lua_pushliteral(L, "\r\n");
    lua_concat(L, 4);
    lua_rawseti(L, list_idx, (lua_Integer)lua_rawlen(L, list_idx) + 1);
    return NULL;
}

/* The headers table at idx (nil: none) as "Name: value\r\n" lines, pushed as one string. A value
 * may be a list of strings: one line each (Set-Cookie). NULL, or what is wrong (pushed instead of
 * the lines). */
static const char *header_block(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx)) {
        lua_pushliteral(L, "");
        return NULL;
    }
    if (!lua_istable(L, idx))
        return lua_pushfstring(L, "headers must be a table, got %s", luaL_typename(L, idx));
    lua_newtable(L); /* the lines: a string buffer cannot share the stack with lua_next */
    int lines = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int name = lua_gettop(L) - 1;
        size_t nlen;
        const char *n = lua_type(L, name) == LUA_TSTRING ? lua_tolstring(L, name, &nlen) : NULL;
        const char *why = NULL;
        if (!n || !wsl_http_token(n, nlen)) {
            why = "a header name must be a token (letters, digits, !#$%&'*+-.^_`|~)";
        } else if (reserved(n, nlen)) {
            why = lua_pushfstring(L, "header '%s' is written by the server", n);
        } else if (lua_istable(L, -1)) {
            int list = lua_gettop(L);
            for (lua_Integer i = 1; !why && lua_rawgeti(L, list, i) != LUA_TNIL; i++) {
                why = add_line(L, lines, name);
                if (!why) lua_pop(L, 1);
            }
        } else {
            why = add_line(L, lines, name);
        }
        if (why) return why;
        lua_settop(L, name); /* the key stays for lua_next */
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    lua_Integer n = (lua_Integer)lua_rawlen(L, lines);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, lines, i);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    lua_remove(L, lines);
    return NULL;
}

/* The status at idx: an integer 200-599 (1xx are interim answers the server sends itself). */
static const char *check_status(lua_State *L, int idx, int *status)
{
    int isint = 0;
    lua_Integer s = lua_type(L, idx) == LUA_TNUMBER ? lua_tointegerx(L, idx, &isint) : 0;
    if (!isint)
        return lua_pushfstring(L, "status must be an integer, got %s",
                               lua_type(L, idx) == LUA_TNUMBER ? lua_tostring(L, idx)
                                                               : luaL_typename(L, idx));
    if (s < 200 || s > 599) return lua_pushfstring(L, "status %I is not 200-599", s);
    *status = (int)s;
    return NULL;
}

int wsl_lrequest_answer(lua_State *L, wsl_conn *c, int idx, const char *fn)
{
    idx = lua_absindex(L, idx);
    int status = 0;
    const char *why = check_status(L, idx, &status);
    int bt = lua_type(L, idx + 1);
    if (!why && bt != LUA_TNONE && bt != LUA_TNIL && bt != LUA_TSTRING && bt != LUA_TNUMBER)
        why = lua_pushfstring(L, "body must be a string, got %s", luaL_typename(L, idx + 1));
    if (!why) why = header_block(L, idx + 2);
    if (why) {
        /* The client gets 500; the script gets an error, logged with its traceback. */
        if (c) wsl_lrequest_fail(L, c);
        return luaL_error(L, "%s: %s", fn, why);
    }
    size_t hlen, blen = 0;
    const char *headers = lua_tolstring(L, -1, &hlen);
    const char *body = "";
    if (bt == LUA_TSTRING || bt == LUA_TNUMBER) {
        lua_pushvalue(L, idx + 1);
        body = lua_tolstring(L, -1, &blen);
    }
    if (!c) return WSL_ECLOSED;
    int r = wsl_conn_respond(c, status, headers, hlen, body, blen);
    wsl_lrequest_release(L, c);
    return r;
}

/* ---- methods ------------------------------------------------------------------------------ */

static int req_respond(lua_State *L)
{
    lrequest *u = check_box(L, 1);
    lua_settop(L, 4);
    /* Arguments are checked even when the request is gone: a mistake raises either way. */
    return wsl_lresult(L, wsl_lrequest_answer(L, u->h.p, 2, "req:respond"));
}

static int req_defer(lua_State *L)
{
    lrequest *u = check_box(L, 1);
    int r = u->h.p ? wsl_conn_defer(u->h.p) : WSL_ECLOSED;
    if (r == 0) u->deferred = true;
    return wsl_lresult(L, r);
}

static int req_index(lua_State *L)
{
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1; /* a method */
    lua_pop(L, 1);
    check_box(L, 1);
    lua_getiuservalue(L, 1, 1);
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

static int req_newindex(lua_State *L)
{
    check_box(L, 1);
    return luaL_error(L, "req.%s is read-only", luaL_tolstring(L, 2, NULL));
}

static int req_tostring(lua_State *L)
{
    lrequest *u = check_box(L, 1);
    lua_getiuservalue(L, 1, 1);
    lua_getfield(L, -1, "method");
    lua_getfield(L, -2, "path");
    lua_pushfstring(L, "req (%s %s%s)", lua_tostring(L, -2), lua_tostring(L, -1),
                    u->h.p ? "" : ", answered");
    return 1;
}

void wsl_lrequest_open(lua_State *L)
{
    static const luaL_Reg req_methods[] = {
        {"respond", req_respond},
        {"defer", req_defer},
        {NULL, NULL},
    };
    request_mt =
        wsl_lhandle_class(L, WSL_REQUEST_MT, req_methods, req_index, req_newindex, req_tostring);
}
