/* Boxes for C objects seen from Lua: creation with a registry pin, release that clears the
 * pointer, and the fast type check. Shared by timers and req objects;
 * conn objects (lconn.c) are tables and use only the class. */
#include "lhandle.h"

#include <lauxlib.h>

const void *wsl_lhandle_class(lua_State *L, const char *mt, const luaL_Reg *methods,
                              lua_CFunction index, lua_CFunction newindex, lua_CFunction tostring)
{
    luaL_newmetatable(L, mt);
    const void *p = lua_topointer(L, -1);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_pushcclosure(L, index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    return p;
}

void *wsl_lhandle_new(lua_State *L, size_t size, int nuv, const char *mt, void *p, int *ref)
{
    wsl_lhandle *h = lua_newuserdatauv(L, size, nuv);
    h->p = p;
    luaL_setmetatable(L, mt);
    lua_pushvalue(L, -1);
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return h;
}

void wsl_lhandle_release(lua_State *L, int ref)
{
    if (lua_rawgeti(L, LUA_REGISTRYINDEX, ref) == LUA_TUSERDATA) {
        wsl_lhandle *h = lua_touserdata(L, -1);
        h->p = NULL;
    }
    lua_pop(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

void *wsl_lhandle_check(lua_State *L, int i, const void *mt, const char *tname)
{
    void *u = lua_touserdata(L, i);
    if (u && lua_getmetatable(L, i)) {
        int ok = lua_topointer(L, -1) == mt;
        lua_pop(L, 1);
        if (ok) return u;
    }
    luaL_typeerror(L, i, tname);
    return NULL;
}
