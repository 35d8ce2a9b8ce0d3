/* ws.timer and ws.every: libuv timers that call a Lua function, each with a Lua handle (a box
 * whose pointer is cleared when the timer stops) for :stop() and :active(). A reload stops the
 * timers of the previous load once the new one took (see wsl_script_reload). */
#include <stdlib.h>

#include "lhandle.h"
#include "script_priv.h"

/* Owned by the script while running (linked in s->timers); freed by libuv's close callback once
 * stopped. */
typedef struct ltimer {
    uv_timer_t t;
    wsl_script *s;
    wsl_list link;
    int box_ref; /* its handle: a wsl_lhandle box pointing here, the function its user value */
    unsigned gen;
    bool repeat;
} ltimer;

static const void *timer_mt;

static void timer_stop(lua_State *L, ltimer *t)
{
    wsl_lhandle_release(L, t->box_ref);
    wsl_list_remove(&t->link);
    uv_timer_stop(&t->t);
    uv_close((uv_handle_t *)&t->t, (uv_close_cb)free);
}

static int fire_body(lua_State *L)
{
    ltimer *t = lua_touserdata(L, 1);
    t->s->ran = true;
    wsl_lhandle_push(L, t->box_ref);
    lua_getiuservalue(L, -1, 1);
    lua_insert(L, -2);
    if (!t->repeat) timer_stop(L, t); /* before the call: the callback may start it anew */
    wsl_call(L, 1, 0);
    return 0;
}

static void on_timer(uv_timer_t *ut)
{
    ltimer *t = (ltimer *)ut;
    wsl_protect_handler(t->s, WSL_HANDLER_TIMER, fire_body, t,
                        t->repeat ? "ws.every callback" : "ws.timer callback", NULL);
}

static int make_timer(lua_State *L, bool repeat)
{
    wsl_script *s = wsl_script_of(L);
    lua_Number secs = luaL_checknumber(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (!(secs >= 0) || secs > 1e9 || (repeat && secs <= 0))
        return luaL_error(L, "%s: bad interval %f", repeat ? "ws.every" : "ws.timer", secs);
    if (s->stopped) return luaL_error(L, "%s: %s", repeat ? "ws.every" : "ws.timer", WSL_SHUT_DOWN);
    uint64_t ms = (uint64_t)(secs * 1000 + 0.5);
    if (repeat && ms == 0) ms = 1;

    int ref;
    wsl_lhandle *h = wsl_lhandle_new(L, sizeof *h, 1, WSL_TIMER_MT, NULL, &ref);
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, -2, 1);
    ltimer *t = malloc(sizeof *t);
    if (!t) {
        wsl_lhandle_release(L, ref);
        return luaL_error(L, "not enough memory");
    }
    /* Nothing below raises, so neither t nor the pinned box can leak. */
    h->p = t;
    t->box_ref = ref;
    t->s = s;
    t->gen = s->gen;
    t->repeat = repeat;
    wsl_list_push_front(&s->timers, &t->link);
    uv_timer_init(wsl_server_loop(s->srv), &t->t);
    uv_timer_start(&t->t, on_timer, ms, repeat ? ms : 0);
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
    wsl_lhandle *h = wsl_lhandle_check(L, 1, timer_mt, WSL_TIMER_MT);
    bool was = h->p != NULL;
    if (h->p) timer_stop(L, h->p);
    lua_pushboolean(L, was);
    return 1;
}

static int timer_active(lua_State *L)
{
    wsl_lhandle *h = wsl_lhandle_check(L, 1, timer_mt, WSL_TIMER_MT);
    lua_pushboolean(L, h->p != NULL);
    return 1;
}

void wsl_ltimer_open(lua_State *L)
{
    static const luaL_Reg timer_methods[] = {
        {"stop", timer_stop_method}, {"active", timer_active}, {NULL, NULL}};
    luaL_newmetatable(L, WSL_TIMER_MT);
    timer_mt = lua_topointer(L, -1);
    luaL_newlib(L, timer_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}

void wsl_ltimer_register(lua_State *L)
{
    lua_pushcfunction(L, ws_timer);
    lua_setfield(L, -2, "timer");
    lua_pushcfunction(L, ws_every);
    lua_setfield(L, -2, "every");
}

void wsl_ltimer_stop(wsl_script *s, int which, unsigned gen)
{
    wsl_list *n, *next;
    wsl_list_each_safe(n, next, &s->timers)
    {
        ltimer *t = wsl_list_entry(n, ltimer, link);
        if (which == WSL_TIMERS_ALL || (t->gen == gen) == (which == WSL_TIMERS_GEN))
            timer_stop(s->L, t);
    }
}
