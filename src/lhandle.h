/* The life of a Lua object that stands for a C object the server owns (a timer, a request):
 * a userdata box that starts with the C pointer, pinned by a registry reference while the C
 * object lives, and cleared (never freed by Lua) when it goes. Every method checks the pointer,
 * as liolib does for closed files. Part of the Lua binding. */
#ifndef WSL_LHANDLE_H
#define WSL_LHANDLE_H

#include <lauxlib.h>
#include <lua.h>
#include <stddef.h>

/* The first member of every box. */
typedef struct wsl_lhandle {
    void *p; /* the C object; NULL once it is gone */
} wsl_lhandle;

/* Register metatable `mt` for boxes of one kind and return its address (for wsl_lhandle_check):
 * `index` gets the methods table as its upvalue and serves the fields; `newindex` and
 * `tostring` as their metamethods. */
const void *wsl_lhandle_class(lua_State *L, const char *mt, const luaL_Reg *methods,
                              lua_CFunction index, lua_CFunction newindex, lua_CFunction tostring);

/* Push a new box of `size` bytes (at least a wsl_lhandle) with `nuv` user values and the
 * metatable registered as `mt`, pointing at p, and pin it: returns the registry reference. */
void *wsl_lhandle_new(lua_State *L, size_t size, int nuv, const char *mt, void *p, int *ref);

/* Push the box pinned by ref. */
static inline void wsl_lhandle_push(lua_State *L, int ref)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
}

/* The C object is going away: clear the box's pointer and unpin it. */
void wsl_lhandle_release(lua_State *L, int ref);

/* The box at index i when its metatable is `mt` (compared by address, which is far cheaper than
 * luaL_checkudata's lookup by name), else a type error naming `tname`. */
void *wsl_lhandle_check(lua_State *L, int i, const void *mt, const char *tname);

#endif
