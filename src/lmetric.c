/* ws.metric: counters and gauges a script defines, exported with the server's own on --metrics.
 * The values live in C (a wsl_registry owned by the script's state, bounded in metrics and label
 * combinations) and survive a reload: defining a name again returns the same object, so the new
 * code counts on where the old one stopped. */
#include <float.h>
#include <string.h>

#include "log.h"
#include "script_priv.h"

#define MAX_METRICS 256   /* metrics a script may define */
#define MAX_SERIES  10000 /* label combinations over all of them */
#define DROP_LOG_MS 10000 /* at most one "cap reached" warning in this long */

#define COUNTER_MT "wsluad.counter"
#define GAUGE_MT   "wsluad.gauge"

/* The Lua object of a metric: a pointer into the registry, which outlives every object. */
typedef struct lmetric {
    wsl_metric *m;
} lmetric;

static char cache_key; /* registry: name -> its object, so that defining again returns it */

static wsl_registry *registry(lua_State *L)
{
    wsl_script *s = wsl_script_of(L);
    if (!s->metrics && !(s->metrics = wsl_registry_new(MAX_METRICS, MAX_SERIES)))
        luaL_error(L, "not enough memory");
    return s->metrics;
}

/* A string argument without NUL bytes (they would cut the name short in C). */
static const char *check_text(lua_State *L, int i, const char *fn, const char *what)
{
    size_t len;
    const char *s = luaL_checklstring(L, i, &len);
    if (strlen(s) != len) luaL_error(L, "%s: the %s holds a NUL byte", fn, what);
    return s;
}

static int define(lua_State *L, wsl_metric_type type, const char *fn, const char *mt)
{
    const char *name = check_text(L, 1, fn, "name");
    const char *help = check_text(L, 2, fn, "help");
    const char *labels[WSL_METRIC_LABELS_MAX];
    size_t n = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        n = lua_rawlen(L, 3);
        if (n > WSL_METRIC_LABELS_MAX)
            return luaL_error(L, "%s: at most %d labels", fn, WSL_METRIC_LABELS_MAX);
        for (size_t i = 0; i < n; i++) {
            if (lua_rawgeti(L, 3, (lua_Integer)i + 1) != LUA_TSTRING)
                return luaL_error(L, "%s: label names are strings", fn);
            labels[i] = check_text(L, -1, fn, "label name"); /* the table keeps it alive */
            lua_pop(L, 1);
        }
    }
    wsl_metric *m;
    const char *why;
    int r = wsl_registry_define(registry(L), type, name, help, n, labels, &m, &why);
    if (r == -ENOMEM) return luaL_error(L, "not enough memory");
    if (r < 0) return luaL_error(L, "%s('%s'): %s", fn, name, why);

    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &cache_key) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &cache_key);
    }
    if (lua_getfield(L, -1, name) == LUA_TUSERDATA) return 1;
    lua_pop(L, 1);
    lmetric *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->m = m;
    luaL_setmetatable(L, mt);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, name);
    return 1;
}

static int metric_counter(lua_State *L)
{
    return define(L, WSL_METRIC_COUNTER, "ws.metric.counter", COUNTER_MT);
}

static int metric_gauge(lua_State *L)
{
    return define(L, WSL_METRIC_GAUGE, "ws.metric.gauge", GAUGE_MT);
}

static wsl_metric *check_metric(lua_State *L)
{
    /* inc is both types' method: the error names both. */
    lmetric *u = luaL_testudata(L, 1, COUNTER_MT);
    if (!u) u = luaL_testudata(L, 1, GAUGE_MT);
    if (!u) luaL_typeerror(L, 1, COUNTER_MT " or " GAUGE_MT);
    return u->m;
}

/* The value of the series named by the label values from stack index `first`, or NULL when the
 * cap of label combinations refuses a new one (counted, and logged now and then). */
static double *series(lua_State *L, wsl_metric *m, int first, const char *fn)
{
    size_t n = wsl_metric_nlabels(m);
    const char *values[WSL_METRIC_LABELS_MAX];
    size_t lens[WSL_METRIC_LABELS_MAX];
    for (size_t i = 0; i < n; i++) {
        int t = lua_type(L, first + (int)i);
        if (t != LUA_TSTRING && t != LUA_TNUMBER)
            luaL_error(L, "%s: label value %d is a %s (a string or number expected)", fn,
                       (int)i + 1, lua_typename(L, t));
        values[i] = lua_tolstring(L, first + (int)i, &lens[i]);
    }
    double *v;
    const char *why;
    int r = wsl_metric_series(m, values, lens, &v, &why);
    if (r == 0) return v;
    if (r == -ENOMEM) luaL_error(L, "not enough memory");
    if (r != -ENOSPC) luaL_error(L, "%s: %s", fn, why);
    wsl_metrics.script_updates_dropped++;
    static uint64_t last_log;
    uint64_t now = uv_now(wsl_server_loop(wsl_script_of(L)->srv));
    if (!last_log || now - last_log >= DROP_LOG_MS) {
        last_log = now;
        wsl_warn("ws.metric: %s; updates of new label combinations are dropped "
                 "(wsluad_script_metric_updates_dropped_total counts them)",
                 why);
    }
    return NULL;
}

static int dropped(lua_State *L)
{
    lua_pushnil(L);
    lua_pushliteral(L, "too many label combinations");
    lua_pushliteral(L, "ENOSPC");
    return 3;
}

/* inc and dec: ([n] [, label values...]), n defaulting to 1. */
static int add(lua_State *L, double sign, const char *fn)
{
    wsl_metric *m = check_metric(L);
    int nl = (int)wsl_metric_nlabels(m), nargs = lua_gettop(L) - 1, first = 2;
    lua_Number n = 1;
    if (nargs == nl + 1) {
        n = luaL_optnumber(L, 2, 1);
        first = 3;
    } else if (nargs != nl) {
        return luaL_error(L, "%s: expected [n] and %d label value%s, got %d arguments", fn, nl,
                          nl == 1 ? "" : "s", nargs);
    }
    /* +inf would stick a counter there for the process's life: no later value could show. */
    if (wsl_metric_type_of(m) == WSL_METRIC_COUNTER && !(n >= 0 && n <= DBL_MAX))
        return luaL_error(L, "%s: a counter only goes up, by a finite amount (n = %f)", fn,
                          (double)n);
    double *v = series(L, m, first, fn);
    if (!v) return dropped(L);
    *v += sign * n;
    lua_pushboolean(L, 1);
    return 1;
}

static int metric_inc(lua_State *L)
{
    return add(L, 1, "inc");
}

static int metric_dec(lua_State *L)
{
    luaL_checkudata(L, 1, GAUGE_MT);
    return add(L, -1, "dec");
}

static int metric_set(lua_State *L)
{
    wsl_metric *m = ((lmetric *)luaL_checkudata(L, 1, GAUGE_MT))->m;
    int nl = (int)wsl_metric_nlabels(m);
    if (lua_gettop(L) - 1 != nl + 1)
        return luaL_error(L, "set: expected a value and %d label value%s", nl, nl == 1 ? "" : "s");
    lua_Number x = luaL_checknumber(L, 2);
    double *v = series(L, m, 3, "set");
    if (!v) return dropped(L);
    *v = x;
    lua_pushboolean(L, 1);
    return 1;
}

void wsl_lmetric_register(lua_State *L)
{
    static const luaL_Reg counter_methods[] = {{"inc", metric_inc}, {NULL, NULL}};
    static const luaL_Reg gauge_methods[] = {
        {"set", metric_set}, {"inc", metric_inc}, {"dec", metric_dec}, {NULL, NULL}};
    static const luaL_Reg metric_fns[] = {
        {"counter", metric_counter}, {"gauge", metric_gauge}, {NULL, NULL}};
    luaL_newmetatable(L, COUNTER_MT);
    luaL_newlib(L, counter_methods);
    lua_setfield(L, -2, "__index");
    luaL_newmetatable(L, GAUGE_MT);
    luaL_newlib(L, gauge_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 2);
    luaL_newlib(L, metric_fns);
    lua_setfield(L, -2, "metric");
}

void wsl_script_metrics(wsl_script *s, wsl_mbuf *b)
{
    wsl_prom_header(b, "wsluad_lua_memory_bytes", "Memory the Lua state holds.", WSL_METRIC_GAUGE);
    wsl_prom_sample_u64(b, "wsluad_lua_memory_bytes", 0, NULL, NULL, s->mem);
    if (s->mem_limit) {
        wsl_prom_header(b, "wsluad_lua_memory_limit_bytes", "The Lua state's cap (--lua-memory).",
                        WSL_METRIC_GAUGE);
        wsl_prom_sample_u64(b, "wsluad_lua_memory_limit_bytes", 0, NULL, NULL, s->mem_limit);
    }
    if (s->metrics) wsl_registry_render(b, s->metrics);
}
