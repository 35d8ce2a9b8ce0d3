/* The core of the Lua binding: the state and its memory cap, protected calls under a time limit
 * that no Lua code can escape (coroutines included), loading and live reload, and the dispatch
 * of connection events to the script's handlers. The Lua types live in lconn.c, lrequest.c,
 * lws.c, ltimer.c, lspawn.c, lredis.c and lmetric.c; what they share is in script_priv.h. */
#include "script_priv.h"

#include <lualib.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define TICKS         4                   /* time-limit checks per --handler-timeout */
#define TRIM_GROWTH   (16u * 1024 * 1024) /* heap growth in a failed call worth giving back */
#define REPEAT_WINDOW 10000               /* ms: identical errors are counted, not logged */

/* Registry keys (their addresses). */
static char err_value_key, err_trace_key, saved_key, chunk_key, last_key;

/* ---- time limit ------------------------------------------------------------------------------
 * Every protected call runs on a thread of its own (a "runner", kept and reused), and every
 * coroutine the script resumes goes through co_resume below, so the thread running right now is
 * always known (`running`). While a call is in progress an interval timer (SIGALRM) ticks TICKS
 * times per time limit; a tick that finds the same top-level call in progress for more than
 * TICKS ticks installs a hook on the running thread. The hook yields wherever Lua can: on the
 * runner that abandons the call however many pcalls the script wrapped around its loop; in a
 * coroutine it returns to the coroutine.resume that resumed it, which reports the stop, and the
 * resuming thread gets the hook in turn. Where Lua cannot yield (inside a C function such as
 * table.sort, or on the main thread) the hook raises an error, which no pcall of the script can
 * keep (co_pcall). Until a call overruns, no clock is read and no hook runs. lua_sethook is safe
 * in a signal handler; the server starts no other threads.
 *
 * Lua leaves hooks disabled on a thread an error raised from a hook unwinds, until a pcall
 * catches it: hence an error only where Lua cannot yield, and a runner such an error may have
 * ended is not used again (wsl_protect). */

static lua_State *volatile running; /* the thread running Lua now; NULL between calls */
static volatile sig_atomic_t in_call;
static volatile sig_atomic_t call_seq, seen_seq, ticks;
static volatile sig_atomic_t alarm_armed;
static volatile sig_atomic_t overrun; /* the current top-level call must end */
static const char *volatile overrun_why;
static volatile sig_atomic_t interrupt_seq, interrupt_pending;
static const char *volatile interrupt_why;
static volatile sig_atomic_t stop_sig;       /* the signal that asked the process to end */
static volatile sig_atomic_t told, told_seq; /* a call was told to stop (stop_call) */
static volatile sig_atomic_t told_said;      /* ... and the log says it is stuck */
static double handler_timeout;
static char timeout_msg[96];
static volatile sig_atomic_t closing; /* lua_close runs (wsl_script_free, last_finalizer) */

/* Once a signal asked the process to end, a call still running after this long is stuck, as one
 * running when the signal came is (wsl_script_interrupt): the shutdown runs on_close for every
 * connection, and one that never returns must not hold it for the whole --handler-timeout each,
 * or for ever when that is off. lua_close at exit keeps --handler-timeout: freeing a large heap
 * is slow, not stuck. */
#define STUCK_SEC 0.1

/* The time limit in force (0: none). */
static double limit_now(void)
{
    if (stop_sig && !closing && (handler_timeout <= 0 || handler_timeout > STUCK_SEC))
        return STUCK_SEC;
    return handler_timeout;
}

static void overrun_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    if (!overrun) { /* left over from a call that has ended */
        lua_sethook(L, NULL, 0, 0);
        return;
    }
    if (lua_isyieldable(L)) {
        lua_yield(L, 0);
        return;
    }
    /* Stays armed: if the script catches this error and loops on, it is raised again. */
    luaL_error(L, "%s", overrun_why);
}

/* Not again on a thread that has it: that would restart its count, and a loop that resumes a
 * coroutine (which gets stopped each time) would never reach it. */
static void hook(lua_State *L)
{
    if (L && lua_gethook(L) != overrun_hook) lua_sethook(L, overrun_hook, LUA_MASKCOUNT, 100);
}

static void arm_in(double sec)
{
    struct itimerval it = {
        .it_value = {(time_t)sec, (suseconds_t)((sec - (double)(time_t)sec) * 1e6) + 1}};
    setitimer(ITIMER_REAL, &it, NULL);
    alarm_armed = 1;
}

static void arm_alarm(void)
{
    double limit = limit_now();
    if (limit > 0) arm_in(limit / TICKS);
}

/* Monotonic seconds; clock_gettime is async-signal-safe. */
static double mono_sec(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double told_at; /* when `told` was set (only the SIGALRM handler touches it) */

/* How long a call told to stop has to come back to Lua (where the hook ends it) before the
 * process ends: a second once the process was asked to end, else as long again as its limit
 * (at least a second). */
static double grace(void)
{
    double limit = limit_now();
    return stop_sig || limit < 1.0 ? 1.0 : limit;
}

/* While a told call may still end by itself: tick as the limit does (so that once it ended, the
 * call after it is watched as soon as ever), and wake when its grace is over. */
static void arm_told(void)
{
    double left = told_at + grace() - mono_sec(), limit = limit_now();
    double tick = limit > 0 ? limit / TICKS : left;
    arm_in(left > 0 && left < tick ? left : tick > 0 ? tick : 0.001);
}

/* Stop the current top-level call. Some code the hook cannot reach: Lua runs __gc finalizers
 * with hooks off, and a C function (a pattern match, os.execute) does not return to Lua. Such a
 * call still running when its grace is over has the server stuck for good: it ends the process,
 * as a second signal would once the process was asked to end (SIGTERM always works), else with
 * SIGABRT as a watchdog would, for the supervisor of --workers or systemd to start it again. */
static void stop_call(const char *why)
{
    overrun_why = why;
    overrun = 1;
    hook(running);
    told = 1;
    told_said = 0;
    told_seq = call_seq;
    told_at = mono_sec();
    arm_told();
}

static void on_alarm(int sig)
{
    (void)sig;
    alarm_armed = 0;
    if (!in_call) return; /* idle: the next call arms it again */
    if (told && told_seq == call_seq && mono_sec() - told_at < grace()) {
        /* Lua code told to stop ends within a hook's 100 instructions: a tick later, the call
         * can only be in C or in a finalizer. The operator hears of it while it lasts. */
        if (!told_said) {
            told_said = 1;
            wsl_log_from_signal(WSL_LOG_WARN, "a Lua call over its time limit is stuck where it "
                                              "cannot be stopped (a __gc finalizer, or blocked "
                                              "in C): the process ends unless it comes back");
        }
        arm_told();
        return;
    }
    if (told && told_seq == call_seq) {
        wsl_log_from_signal(WSL_LOG_ERROR, "Lua code that cannot be stopped (a __gc finalizer, "
                                           "or blocked in C) is still running: exiting");
        int end = stop_sig ? stop_sig : SIGABRT;
        signal(end, SIG_DFL);
        raise(end);
        return;
    }
    told = 0;
    if (interrupt_pending) {
        interrupt_pending = 0;
        if (interrupt_seq == call_seq) {
            stop_call(interrupt_why);
            return;
        }
    }
    double limit = limit_now();
    if (limit <= 0) return;
    if (seen_seq != call_seq) {
        seen_seq = call_seq;
        ticks = 0;
    }
    if (++ticks > TICKS) {
        stop_call(limit == handler_timeout ? timeout_msg : interrupt_why);
        return;
    }
    arm_alarm();
}

/* A call that is still the same one 100 ms later is stuck, not merely running: only that one
 * is stopped, so a shutdown does not abandon healthy handlers. */
void wsl_script_interrupt(const char *why, int sig)
{
    interrupt_why = why; /* before stop_sig: limit_now's stops say it too */
    stop_sig = sig;
    if (!in_call) return;
    interrupt_seq = call_seq;
    interrupt_pending = 1;
    arm_in(STUCK_SEC);
}

/* Enter a call on thread co; returns the thread that ran before. */
static inline lua_State *call_begin(wsl_script *s, lua_State *co)
{
    lua_State *outer = running;
    running = co;
    if (s->depth++ == 0) {
        call_seq++;
        in_call = 1;
        if (!alarm_armed) arm_alarm();
    } else if (overrun) {
        hook(co);
    }
    return outer;
}

static inline void call_end(wsl_script *s, lua_State *outer)
{
    running = outer;
    if (--s->depth > 0) {
        if (overrun) hook(outer); /* the whole top-level call is over its time */
        return;
    }
    in_call = 0;
    overrun = 0; /* threads still hooked unhook themselves (overrun_hook) */
}

/* Script code also runs where no handler is called: a __tostring describing an error, the
 * __close handlers of an abandoned call, finalizers (__gc) that the collector runs at any
 * allocation (while compiling, say) and at exit. Such work runs as a call of its own on the main
 * thread (which cannot yield, so an overrun raises there), under the time limit and the
 * shutdown's interrupt like any handler; depth is held, so a handler it triggers (a __close that
 * closes a connection runs on_close) gets a runner of its own, not the one being reset. Lua runs
 * finalizers with hooks off: only stop_call's last resort ends one that never returns. */
static lua_State *guard_begin(wsl_script *s)
{
    return call_begin(s, s->L);
}

static void guard_end(wsl_script *s, lua_State *outer)
{
    call_end(s, outer);
}

/* Run the pending __close handlers of co (lua_resetthread) with the time limit on co. */
void wsl_close_thread(lua_State *L, lua_State *co)
{
    running = co;
    if (overrun) hook(co);
    lua_resetthread(co);
    running = L;
    if (overrun) hook(L);
}

/* ---- coroutines, tracked -------------------------------------------------------------------- */

/* Why co cannot be resumed from L, or NULL. */
static const char *not_resumable(lua_State *L, lua_State *co)
{
    lua_Debug ar;
    if (co == L) return "cannot resume non-suspended coroutine";
    /* Only its timer or reply may resume it (coroutine.running() hands it out): resumed by the
     * script, it would go on with a wait unfinished, and the timer or reply would later resume
     * it in the middle of another wait, or once it has ended and been collected. */
    if (lua_status(co) == LUA_YIELD && wsl_lspawn_owns(L, co))
        return "cannot resume a function run by ws.spawn (its ws.sleep or ws.redis resumes it)";
    switch (lua_status(co)) {
    case LUA_YIELD:
        return NULL;
    case LUA_OK:
        if (lua_getstack(co, 0, &ar)) return "cannot resume non-suspended coroutine";
        return lua_gettop(co) == 0 ? "cannot resume dead coroutine" : NULL;
    default:
        return "cannot resume dead coroutine";
    }
}

/* Resume co with the top narg values of L. Pushes its results and returns their count, or pushes
 * its error and returns -1. The time limit follows the resumed thread and comes back with it. */
static int resume(lua_State *L, lua_State *co, int narg)
{
    const char *why = not_resumable(L, co);
    if (!why && !lua_checkstack(co, narg)) why = "too many arguments to resume";
    if (why) {
        lua_pushstring(L, why);
        return -1;
    }
    lua_xmove(L, co, narg);
    running = co;
    if (overrun) hook(co);
    int nres, st = lua_resume(co, L, narg, &nres);
    running = L;
    if (overrun) {
        hook(L);
        if (st == LUA_YIELD) { /* (most likely) the stop, not the script's yield: say so */
            lua_pop(co, nres);
            lua_pushstring(L, overrun_why);
            return -1;
        }
    }
    if (st == LUA_OK || st == LUA_YIELD) {
        if (!lua_checkstack(L, nres + 1)) {
            lua_pop(co, nres);
            lua_pushliteral(L, "too many results to resume");
            return -1;
        }
        lua_xmove(co, L, nres);
        return nres;
    }
    lua_xmove(co, L, 1);
    return -1;
}

static int co_resume(lua_State *L)
{
    lua_State *co = lua_tothread(L, 1);
    luaL_argexpected(L, co, 1, "coroutine");
    int n = resume(L, co, lua_gettop(L) - 1);
    lua_pushboolean(L, n >= 0);
    lua_insert(L, n >= 0 ? -(n + 1) : -2);
    return n >= 0 ? n + 1 : 2;
}

static int co_wrapped(lua_State *L)
{
    lua_State *co = lua_tothread(L, lua_upvalueindex(1));
    int n = resume(L, co, lua_gettop(L));
    if (n >= 0) return n;
    int st = lua_status(co);
    /* Dead by an error: close its pending variables; not once the call is over its time (an
     * error the hook raised may have left the coroutine's hooks off, see above). */
    if (st != LUA_OK && st != LUA_YIELD && !overrun) {
        wsl_close_thread(L, co);
        lua_settop(co, 0);
    }
    if (lua_type(L, -1) == LUA_TSTRING) { /* where the wrapped function was called */
        luaL_where(L, 1);
        lua_insert(L, -2);
        lua_concat(L, 2);
    }
    return lua_error(L);
}

static int co_wrap(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_State *co = lua_newthread(L);
    lua_pushvalue(L, 1);
    lua_xmove(L, co, 1);
    lua_pushcclosure(L, co_wrapped, 1);
    return 1;
}

/* Lua's coroutine.close, kept in C only (see replace). */
static lua_CFunction lua_co_close;

/* coroutine.close runs co's pending __close handlers on co: Lua's, with the time limit on co. */
static int co_close(lua_State *L)
{
    lua_State *co = lua_tothread(L, 1);
    lua_pushcfunction(L, lua_co_close);
    lua_insert(L, 1);
    if (co && co != L) {
        running = co;
        if (overrun) hook(co);
    }
    int st = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    running = L;
    if (overrun) hook(L);
    return st == LUA_OK ? lua_gettop(L) : lua_error(L);
}

/* pcall and xpcall, as Lua's except that an error caught while the current call is over its time
 * is raised again. Where Lua cannot yield (in a coroutine, or inside a C function such as
 * table.sort) the stop is an error, and a script catching it in a loop would never give control
 * back. The first result (true) sits at index `ok`. */
static int catch_done(lua_State *L, int status, lua_KContext ok)
{
    if (status == LUA_OK || status == LUA_YIELD) return lua_gettop(L) - (int)ok + 1;
    if (overrun) return lua_error(L);
    lua_pushboolean(L, 0);
    lua_pushvalue(L, -2);
    return 2;
}

static int co_pcall(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_pushboolean(L, 1);
    lua_insert(L, 1);
    return catch_done(L, lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 1, catch_done), 1);
}

/* xpcall's message handler, around the script's: not run once the call is over its time. The
 * stop's error is raised from the hook, and Lua runs a message handler for it with hooks off: a
 * handler that loops could never be stopped. */
static int co_msgh(lua_State *L)
{
    if (overrun) return 1; /* the error as it is */
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static int co_xpcall(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION); /* the message handler stays at 2 */
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, co_msgh, 1);
    lua_replace(L, 2);
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2); /* true and the function below the arguments */
    return catch_done(L, lua_pcallk(L, n - 2, LUA_MULTRET, 2, 3, catch_done), 3);
}

/* Lua code in a hook function runs with hooks off, so the time limit could never stop it; and a
 * script clearing hooks in a loop would remove the one that stops it. */
static int no_sethook(lua_State *L)
{
    return luaL_error(L, "debug.sethook is not available: wsluad's time limit uses the hook");
}

/* The rest of the debug library that writes: scripts are trusted code, but these reach values
 * that are the server's, not the script's, and a wrong one there is a crash, not a Lua error.
 * The registry holds the runners and every object's pin; a C function's locals and upvalues
 * are its own state (a body's argument is a pointer it trusts); a userdata's metatable or user
 * value is how its methods know it (a box given a timer's metatable would pass for a timer);
 * and a C function taken from a frame (getinfo "f") may be such a body, called with anything. */
static lua_CFunction lua_db_setlocal, lua_db_setupvalue, lua_db_setmetatable, lua_db_getinfo;

static int no_getregistry(lua_State *L)
{
    return luaL_error(L, "debug.getregistry is not available: the registry holds wsluad's own "
                         "objects");
}

static int no_setuservalue(lua_State *L)
{
    return luaL_error(L, "debug.setuservalue is not available: user values hold wsluad's own "
                         "objects");
}

/* Where debug.setlocal and debug.getinfo take an optional thread first. */
static lua_State *db_thread(lua_State *L, int *arg)
{
    *arg = lua_isthread(L, 1);
    return *arg ? lua_tothread(L, 1) : L;
}

static int safe_setlocal(lua_State *L)
{
    int arg;
    lua_State *co = db_thread(L, &arg);
    lua_Debug ar;
    int level = (int)luaL_checkinteger(L, arg + 1);
    if (lua_getstack(co, level, &ar) && lua_getinfo(co, "S", &ar) && ar.what[0] == 'C')
        return luaL_error(L, "debug.setlocal: level %d is a C function, whose values are its own",
                          level);
    return lua_db_setlocal(L);
}

static int safe_setupvalue(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    if (lua_iscfunction(L, 1))
        return luaL_error(L, "debug.setupvalue: a C function's upvalues are its own");
    return lua_db_setupvalue(L);
}

static int safe_setmetatable(lua_State *L)
{
    int t = lua_type(L, 1);
    if (t == LUA_TUSERDATA || t == LUA_TLIGHTUSERDATA)
        return luaL_error(L, "debug.setmetatable: a userdata's metatable is wsluad's (or its "
                             "library's)");
    return lua_db_setmetatable(L);
}

/* As Lua's, but the function running at a level is left out when it is a C function. */
static int safe_getinfo(lua_State *L)
{
    int arg;
    db_thread(L, &arg);
    bool by_level = !lua_isfunction(L, arg + 1);
    int n = lua_db_getinfo(L);
    if (by_level && lua_type(L, -1) == LUA_TTABLE) {
        lua_getfield(L, -1, "func");
        bool c_func = lua_iscfunction(L, -1);
        lua_pop(L, 1);
        if (c_func) {
            lua_pushnil(L);
            lua_setfield(L, -2, "func");
        }
    }
    return n;
}

/* os.exit ends the process at once, as in Lua (and Node's process.exit): no close frames, no
 * on_close. It says so first, so that the end is never silent. */
static lua_CFunction lua_os_exit;

static int logged_exit(lua_State *L)
{
    int n = lua_gettop(L);
    wsl_warn("os.exit(%s) called by the script: the process ends now, without closing its "
             "connections",
             n ? luaL_tolstring(L, 1, NULL) : "");
    lua_settop(L, n);
    return lua_os_exit(L);
}

/* A handler runs on a runner, a function of ws.spawn in a coroutine that only ws.sleep and
 * ws.redis may suspend: coroutine.yield is an error in both, so coroutine.isyieldable says false
 * there, and coroutine.running calls a runner the main thread (code that is in no coroutine of
 * the script's), as code that checks them before yielding expects. */
static bool is_runner(const wsl_script *s, const lua_State *co)
{
    for (int d = 0; d < s->nrunners; d++)
        if (s->runners[d] == co) return true;
    return false;
}

bool wsl_script_own_coroutine(lua_State *L)
{
    return L != wsl_script_of(L)->L && !is_runner(wsl_script_of(L), L) && !wsl_lspawn_owns(L, L);
}

static int co_isyieldable(lua_State *L)
{
    lua_State *co = lua_isnone(L, 1) ? L : lua_tothread(L, 1);
    luaL_argexpected(L, co, 1, "coroutine");
    lua_pushboolean(L, lua_isyieldable(co) && !is_runner(wsl_script_of(L), co) &&
                           !wsl_lspawn_owns(L, co));
    return 1;
}

/* ... and coroutine.yield there is an error the script can catch, as on Lua's main thread (the
 * message as Lua's, without a position). */
static int checked_yield(lua_State *L)
{
    if (is_runner(wsl_script_of(L), L)) {
        lua_pushliteral(L, "attempt to yield from outside a coroutine");
        return lua_error(L);
    }
    if (wsl_lspawn_owns(L, L)) {
        lua_pushliteral(L, "coroutine.yield() in a function run by ws.spawn (wait with ws.sleep "
                           "or ws.redis)");
        return lua_error(L);
    }
    return lua_yield(L, lua_gettop(L));
}

static int co_running(lua_State *L)
{
    int main = lua_pushthread(L);
    wsl_script *s = wsl_script_of(L);
    if (s->nrunners > 0 && L == s->runners[0]) { /* see anchored */
        s->runner_seen = true;
        s->anchored = NULL; /* (the call's end clears the stack) */
    }
    lua_pushboolean(L, main || is_runner(s, L));
    return 2;
}

/* Replace fn in the library table lib by f. The original is kept nowhere a script can reach
 * (as an upvalue, debug.getupvalue would hand out Lua's resume, which the time limit does not
 * follow, or Lua's sethook, which clears its hook): it is gone, or kept in C (lua_co_close,
 * lua_db_*). */
static void replace(lua_State *L, const char *lib, const char *fn, lua_CFunction f)
{
    if (lua_getglobal(L, lib) == LUA_TTABLE) {
        lua_pushcfunction(L, f);
        lua_setfield(L, -2, fn);
    }
    lua_pop(L, 1);
}

/* lib.fn as Lua made it (NULL when the library is not there). */
static lua_CFunction lib_function(lua_State *L, const char *lib, const char *fn)
{
    lua_CFunction f = NULL;
    if (lua_getglobal(L, lib) == LUA_TTABLE) {
        lua_getfield(L, -1, fn);
        f = lua_tocfunction(L, -1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return f;
}

/* What runs the script's code in other threads or catches errors goes through the functions
 * above, so the time limit always knows the running thread and its stop cannot be caught; the
 * debug library writes only the script's own values; os.exit says what it does. */
static void replace_functions(lua_State *L)
{
    lua_co_close = lib_function(L, "coroutine", "close");
    lua_db_setlocal = lib_function(L, "debug", "setlocal");
    lua_db_setupvalue = lib_function(L, "debug", "setupvalue");
    lua_db_setmetatable = lib_function(L, "debug", "setmetatable");
    lua_db_getinfo = lib_function(L, "debug", "getinfo");
    lua_os_exit = lib_function(L, "os", "exit");
    replace(L, "coroutine", "resume", co_resume);
    replace(L, "coroutine", "wrap", co_wrap);
    replace(L, "coroutine", "close", co_close);
    replace(L, "coroutine", "isyieldable", co_isyieldable);
    replace(L, "coroutine", "running", co_running);
    replace(L, "coroutine", "yield", checked_yield);
    replace(L, "_G", "pcall", co_pcall);
    replace(L, "_G", "xpcall", co_xpcall);
    replace(L, "debug", "sethook", no_sethook);
    replace(L, "debug", "getregistry", no_getregistry);
    replace(L, "debug", "setuservalue", no_setuservalue);
    replace(L, "debug", "setlocal", safe_setlocal);
    replace(L, "debug", "setupvalue", safe_setupvalue);
    replace(L, "debug", "setmetatable", safe_setmetatable);
    replace(L, "debug", "getinfo", safe_getinfo);
    replace(L, "os", "exit", logged_exit);
}

/* ---- memory cap ------------------------------------------------------------------------- */

/* Lua allocates and frees small blocks all the time (every message is a string, every call
 * may make closures and tables) and frees them in batches when the collector runs, which
 * overflows glibc's per-thread cache into its slower bins. Blocks of up to WSL_SMALL_MAX bytes
 * therefore come from free lists of our own, one per class (see small_class), holding at most
 * SMALL_POOL_BYTES in all; the rest goes to malloc. Drained where a failed call gives memory
 * back (failed) and when the state closes. The memory cap counts the sizes Lua asked for, as
 * before. Not under AddressSanitizer, which must see every block. */
#ifndef SMALL_POOL /* (-DSMALL_POOL=1 checks the pool itself under the sanitizer) */
#if defined(__SANITIZE_ADDRESS__)
#define SMALL_POOL 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SMALL_POOL 0
#endif
#endif
#endif
#ifndef SMALL_POOL
#define SMALL_POOL 1
#endif
#define SMALL_POOL_BYTES (256 * 1024)

/* A block's class, by the size Lua asked for (1..WSL_SMALL_MAX), and the class's block size.
 * Every block of a class is at least that large, so any of them serves any request of the
 * class. Classes are 8, 24, 40 ... 136 bytes: glibc's chunks are 16-byte multiples with an
 * 8-byte header, so a block of 16k + 8 bytes fills its chunk, where one of 16k would leave 8
 * bytes unused and make a request of 16k - 8 (a table's 56) take a chunk 16 bytes larger. */
static inline unsigned small_class(size_t n)
{
    return (unsigned)((n + 7) >> 4);
}

static inline size_t class_size(unsigned c)
{
    return 16 * (size_t)c + 8;
}

static inline bool is_small(size_t n)
{
    return SMALL_POOL && n - 1 < WSL_SMALL_MAX; /* (0 is no block: wraps around) */
}

static inline void *small_get(wsl_script *s, size_t n)
{
    unsigned c = small_class(n);
    void *p = s->small[c];
    if (!p) return malloc(class_size(c));
    s->small[c] = *(void **)p;
    s->small_bytes -= class_size(c);
    return p;
}

static inline void small_put(wsl_script *s, void *p, size_t n)
{
    unsigned c = small_class(n);
    if (s->small_bytes + class_size(c) > SMALL_POOL_BYTES) {
        free(p);
        return;
    }
    *(void **)p = s->small[c];
    s->small[c] = p;
    s->small_bytes += class_size(c);
}

/* Give the free lists back to malloc. */
static void small_drain(wsl_script *s)
{
    for (unsigned c = 0; c < WSL_SMALL_CLASSES; c++) {
        while (s->small[c]) {
            void *p = s->small[c];
            s->small[c] = *(void **)p;
            free(p);
        }
    }
    s->small_bytes = 0;
}

/* The block p, if any, now counts n bytes instead of old (the caller checked the cap). */
static inline void *counted(wsl_script *s, void *p, size_t old, size_t n)
{
    if (!p) return NULL;
    s->mem = s->mem - old + n;
    if (s->mem > s->peak) s->peak = s->mem;
    return p;
}

/* Whether a block growing from old to n bytes would pass the cap: Lua then collects garbage
 * and retries, then raises "not enough memory". */
static inline bool over_cap(const wsl_script *s, size_t old, size_t n)
{
    return s->mem_limit && n > old && s->mem - old + n > s->mem_limit;
}

/* A block that changes size (the uncommon case). On failure the old block is left as it was,
 * as Lua requires. */
static __attribute__((noinline)) void *lalloc_resize(wsl_script *s, void *ptr, size_t old,
                                                     size_t nsize)
{
    if (over_cap(s, old, nsize)) return NULL;
    if (!is_small(old) && !is_small(nsize)) return counted(s, realloc(ptr, nsize), old, nsize);
    if (is_small(old) && is_small(nsize) && small_class(old) == small_class(nsize))
        return counted(s, ptr, old, nsize);
    void *p = is_small(nsize) ? small_get(s, nsize) : malloc(nsize);
    if (!p) return NULL;
    memcpy(p, ptr, old < nsize ? old : nsize);
    if (is_small(old))
        small_put(s, ptr, old);
    else
        free(ptr);
    return counted(s, p, old, nsize);
}

static void *lalloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    wsl_script *s = ud;
    if (nsize == 0) { /* free */
        if (!ptr) return NULL;
        s->mem -= osize;
        if (is_small(osize))
            small_put(s, ptr, osize);
        else
            free(ptr);
        return NULL;
    }
    if (ptr) return lalloc_resize(s, ptr, osize, nsize);
    /* A new block (osize then says what kind of object it is for). */
    if (over_cap(s, 0, nsize)) return NULL;
    return counted(s, is_small(nsize) ? small_get(s, nsize) : malloc(nsize), 0, nsize);
}

/* ---- protected calls ------------------------------------------------------------------------ */

static int new_runner_body(lua_State *L)
{
    lua_State **t = lua_touserdata(L, 1);
    *t = lua_newthread(L);
    lua_pushinteger(L, luaL_ref(L, LUA_REGISTRYINDEX));
    return 1;
}

/* The thread for calls at depth d, created on first use and kept. Created in protected mode:
 * at the memory cap even this fails, and an unprotected error would abort the process. */
static lua_State *runner(wsl_script *s, int d)
{
    if (d < s->nrunners && s->runners[d]) return s->runners[d];
    lua_State **r = s->runners;
    int *refs = s->runner_refs;
    if (d >= s->nrunners) {
        r = realloc(s->runners, (size_t)(d + 1) * sizeof *r);
        if (r) s->runners = r;
        refs = r ? realloc(s->runner_refs, (size_t)(d + 1) * sizeof *refs) : NULL;
        if (refs) s->runner_refs = refs;
        if (!r || !refs) return NULL;
        /* Levels can be skipped (a function run by ws.spawn nests without a runner): every
         * new slot is empty, not only d's. */
        for (int i = s->nrunners; i <= d; i++)
            r[i] = NULL;
        s->nrunners = d + 1;
    }
    if (!lua_checkstack(s->L, 2)) return NULL;
    /* No collection step here, outside any call: it could run the script's finalizers. */
    bool gc = lua_gc(s->L, LUA_GCISRUNNING);
    lua_gc(s->L, LUA_GCSTOP);
    lua_pushcfunction(s->L, new_runner_body);
    lua_pushlightuserdata(s->L, &r[d]);
    bool ok = lua_pcall(s->L, 1, 1, 0) == LUA_OK;
    if (ok)
        refs[d] = (int)lua_tointeger(s->L, -1);
    else
        r[d] = NULL; /* made, perhaps, but not kept */
    lua_pop(s->L, 1);
    if (gc) lua_gc(s->L, LUA_GCRESTART);
    return ok ? r[d] : NULL;
}

/* Let a runner go; the next call at depth d makes another. Done with one that an error from the
 * hook may have ended (its hooks stay off, see the time limit), and with one abandoned by a
 * yield, which keeps the message handler of the pcall it was in as its own (lua_resetthread
 * does not clear it): an error raised outside a pcall on its next call would call whatever
 * sits at that stack slot. */
static void drop_runner(wsl_script *s, int d)
{
    luaL_unref(s->L, LUA_REGISTRYINDEX, s->runner_refs[d]);
    if (s->runners[d] == s->anchored) s->anchored = NULL;
    s->runners[d] = NULL;
}

/* What a failed call left, for failed_body. */
typedef struct failure {
    lua_State *co;
    int status;
    const char *yield_why; /* LUA_YIELD: why the call was abandoned */
    bool hooks_off;        /* the runner may have hooks off: not to run again */
    int depth;             /* the runner's */
    bool quiet;            /* the stop, logged already (see stop_logged): only clean up */
    const char *what;
    const char *conn; /* "conn#ID ADDR" or NULL */
    uint64_t conn_id; /* with conn: for the JSON log's fields */
    const char *remote;
    char msg[256]; /* the message, for the log and the repeat check */
} failure;

/* A readable message for any error value: a string, __tostring, or its type. What __tostring
 * returns counts as tostring() takes it: a number is its text, anything else an error. */
static const char *describe(lua_State *L, int i)
{
    if (lua_type(L, i) == LUA_TSTRING || lua_type(L, i) == LUA_TNUMBER) return lua_tostring(L, i);
    if (luaL_callmeta(L, i, "__tostring")) {
        if (!lua_isstring(L, -1)) luaL_error(L, "'__tostring' must return a string");
        return lua_tostring(L, -1);
    }
    return lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, i));
}

static int describe_body(lua_State *L)
{
    describe(L, 1);
    return 1;
}

/* Runs on the main thread, protected: keeps the error value and the traceback for on_error and
 * formats the message. The value is kept first, so on_error never gets an older one; __tostring
 * is script code that may fail or loop (and an overrun raises on this thread): protected too. */
static int failed_body(lua_State *L)
{
    failure *f = lua_touserdata(L, 1);
    if (f->status == LUA_YIELD) {
        lua_pushstring(L, f->yield_why);
    } else {
        lua_xmove(f->co, L, 1);
    }
    int v = lua_gettop(L);
    lua_pushvalue(L, v);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &err_value_key);
    lua_pushcfunction(L, describe_body);
    lua_pushvalue(L, v);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 1);
        lua_pushfstring(L, "(error object is a %s value whose __tostring failed)",
                        luaL_typename(L, v));
    }
    const char *msg = lua_tostring(L, -1);
    if (f->status == LUA_ERRMEM) msg = "not enough memory (--lua-memory)"; /* Lua's says less */
    snprintf(f->msg, sizeof f->msg, "%s", msg);
    /* The runner's stack is intact (dead or abandoned): it shows where the error or loop was.
     * A call that returned before its stop took effect (it ran out of time in C) has none. */
    luaL_traceback(L, f->co, msg, 0);
    lua_Debug ar;
    if (f->status == LUA_YIELD && !lua_getstack(f->co, 0, &ar)) {
        lua_pushliteral(L, "\n\t(none: the call had returned when its stop took effect; its time "
                           "ran out in C code or a finalizer)");
        lua_concat(L, 2);
    }
    lua_rawsetp(L, LUA_REGISTRYINDEX, &err_trace_key);
    return 0;
}

void wsl_push_last_error(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &err_value_key);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &err_trace_key);
}

/* Say how many times the last error logged repeated since it was logged or last counted. */
static void flush_repeats(wsl_script *s, uint64_t now)
{
    if (s->repeats) {
        int n = (int)strcspn(s->last_error, "\n"); /* the handler's name, from the key */
        wsl_error("the previous Lua error (in %.*s) repeated %u more times", n, s->last_error,
                  s->repeats);
    }
    s->repeats = 0;
    s->repeat_since = now;
}

/* Log the failure, or count it when it repeats the previous one (same handler, same message)
 * less than REPEAT_WINDOW after it: a timer that raises five times a second must not flood the
 * log. The count is logged at most once per REPEAT_WINDOW, and when another error comes; an
 * error that comes back after a quiet REPEAT_WINDOW is logged in full again. */
static void log_failure(wsl_script *s, const failure *f, const char *trace)
{
    char key[sizeof s->last_error];
    if (snprintf(key, sizeof key, "%s\n%s", f->what, f->msg) < 0) key[0] = '\0';
    uint64_t now = uv_now(wsl_server_loop(s->srv));
    bool again = strcmp(key, s->last_error) == 0 && now - s->last_seen < REPEAT_WINDOW;
    s->last_seen = now;
    if (again) {
        s->repeats++;
        if (now - s->repeat_since >= REPEAT_WINDOW) flush_repeats(s, now);
        return;
    }
    flush_repeats(s, now);
    snprintf(s->last_error, sizeof s->last_error, "%s", key);
    if (f->conn)
        wsl_log_about(WSL_LOG_ERROR, f->conn_id, f->remote, "Lua error in %s (%s): %s", f->what,
                      f->conn, trace);
    else
        wsl_error("Lua error in %s: %s", f->what, trace);
}

/* The error value and traceback when failed_body could not make them (under the memory cap,
 * or a __tostring that fails): the message, once the failed call's memory is back. */
static int fallback_body(lua_State *L)
{
    failure *f = lua_touserdata(L, 1);
    lua_pushstring(L, f->msg);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &err_trace_key);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &err_value_key);
    return 0;
}

/* Keep the error value and traceback for on_error, and log the failure; false when the error
 * could not be described (failed then keeps the message, once the memory is back). */
static bool report(wsl_script *s, failure *f)
{
    lua_State *L = s->L;
    int base = lua_gettop(L);
    lua_pushnil(L); /* setting nil allocates nothing: on_error never gets an older error */
    lua_rawsetp(L, LUA_REGISTRYINDEX, &err_value_key);
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &err_trace_key);
    lua_pushcfunction(L, failed_body);
    lua_pushlightuserdata(L, f);
    const char *trace = NULL;
    bool described = lua_pcall(L, 1, 0, 0) == LUA_OK;
    if (described) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &err_trace_key);
        trace = lua_tostring(L, -1);
    } else {
        snprintf(f->msg, sizeof f->msg, "%s",
                 f->status == LUA_ERRMEM ? "not enough memory (--lua-memory)"
                                         : "an error that could not be described");
    }
    log_failure(s, f, trace ? trace : f->msg);
    lua_settop(L, base);
    return described;
}

/* Under guard_begin: everything here may run script code. `grew`: the heap grew by more than
 * TRIM_GROWTH at some point of the call (it may have shrunk since, by an emergency collection
 * under the memory cap). A quiet failure leaves on_error the error of the call that logged the
 * stop. */
static void failed(wsl_script *s, failure *f, bool grew)
{
    lua_State *L = s->L;
    int base = lua_gettop(L);
    bool described = f->quiet || report(s, f);
    if (!f->hooks_off) { /* (with hooks off its __close handlers would be beyond the limit) */
        wsl_close_thread(L, f->co); /* an abandoned or failed runner is clean for the next call */
        lua_settop(f->co, 0);
        if (f->co == s->anchored) s->anchored = NULL;
    }
    if (f->depth >= 0 && (f->hooks_off || f->status == LUA_YIELD)) drop_runner(s, f->depth);
    /* A call that failed after piling up memory leaves garbage the collector may take long to
     * reach, and free pages glibc keeps: give them back now. */
    if (grew) {
        lua_gc(L, LUA_GCCOLLECT);
        small_drain(s);
        malloc_trim(0);
    }
    if (!described) {
        lua_pushcfunction(L, fallback_body);
        lua_pushlightuserdata(L, f);
        lua_pcall(L, 1, 0, 0); /* on failure the keys stay nil */
        lua_settop(L, base);
    }
}

int wsl_body_done(lua_State *L, int status, lua_KContext ctx)
{
    (void)L;
    (void)status;
    (void)ctx;
    return 0;
}

/* The bottom of the anchored runner's stack (s->anchored): what every message call pushes, copied
 * from these slots, which is cheaper than reading the registry. Calls on that runner run above
 * them: a call's function and arguments are all the call sees. */
enum { ANCHOR_ON_MESSAGE = 1, ANCHOR_TEXT, ANCHOR_BINARY, ANCHORS = ANCHOR_BINARY };

/* What run_begin kept of the call around it, for run_resume. */
typedef struct run_state {
    lua_State *outer;
    size_t mem_before, outer_peak;
    bool outer_waiting;
} run_state;

/* A call on co starts: from here on it is under the time limit and its memory is counted, so
 * what is pushed for it after this (which may run finalizers) is part of the call. */
static inline void run_begin(wsl_script *s, lua_State *co, run_state *r)
{
    r->mem_before = s->mem;
    r->outer_peak = s->peak;
    s->peak = s->mem;
    r->outer = call_begin(s, co);
    /* A run inside a run (ws.spawn called by a spawned function) must not leave its own
     * `waiting` behind: the outer coroutine's coroutine.yield() would pass for a wait that
     * nothing ever ends. */
    r->outer_waiting = s->waiting;
    s->waiting = false;
}

static int run_ended(wsl_script *s, const run_state *r, lua_State *co, int st, int nres,
                     bool waiting, bool overrun_seen, int d, const char *what, const wsl_conn *c);

/* Resume co, begun with run_begin: a runner (at depth d) holding a body and its argument or a
 * handler and its arguments, or a coroutine of ws.spawn holding what it is resumed with (d < 0).
 * 1: it finished; 0: a coroutine of ws.spawn yields to wait (it called wsl_spawn_waiting); -1: it
 * failed, which is logged. Inline, the common case: every other ending is run_ended's. */
static inline int run_resume(wsl_script *s, const run_state *r, lua_State *co, int nargs, int d,
                             const char *what, const wsl_conn *c)
{
    lua_State *outer = r->outer;
    int nres, st = lua_resume(co, outer ? outer : s->L, nargs, &nres);
    bool waiting = s->waiting;
    s->waiting = r->outer_waiting;
    bool overrun_seen = overrun;
    if (st == LUA_OK && !overrun_seen) {
        s->timed_out = false;
        call_end(s, outer);
        if (s->peak < r->outer_peak) s->peak = r->outer_peak;
        lua_settop(co, co == s->anchored ? ANCHORS : 0);
        return 1;
    }
    return run_ended(s, r, co, st, nres, waiting, overrun_seen, d, what, c);
}

/* run_resume's other endings: st and nres as lua_resume returned them, waiting and overrun_seen
 * as they stood right after it. */
static __attribute__((noinline)) int run_ended(wsl_script *s, const run_state *r, lua_State *co,
                                               int st, int nres, bool waiting, bool overrun_seen,
                                               int d, const char *what, const wsl_conn *c)
{
    bool spawned = d < 0;
    lua_State *outer = r->outer;
    size_t mem_before = r->mem_before, outer_peak = r->outer_peak;
    const char *why = overrun_seen ? overrun_why : "attempt to yield from outside a coroutine";
    /* The outermost call told to stop fails even if it returned first: the stop reached a
     * coroutine whose coroutine.resume returned false, and the script went on to return. */
    bool stopped = overrun_seen && s->depth == 1;
    s->timed_out = overrun_seen && overrun_why == timeout_msg;
    call_end(s, outer);
    bool grew = s->peak > mem_before + TRIM_GROWTH;
    if (s->peak < outer_peak) s->peak = outer_peak;
    if (st == LUA_OK && !stopped) {
        lua_settop(co, co == s->anchored ? ANCHORS : 0);
        return 1;
    }
    if (st == LUA_YIELD && spawned && !overrun_seen) {
        if (waiting) {
            lua_pop(co, nres);
            return 0;
        }
        why = "coroutine.yield() in a function run by ws.spawn (wait with ws.sleep or ws.redis)";
    }
    if (st == LUA_OK) {
        lua_settop(co, 0);
        st = LUA_YIELD; /* failed_body: the message is `why` */
    }
    s->rx_text = NULL; /* its string may be collected from here on (failed runs finalizers) */
    /* An error while the call was over its time may come from the hook (see drop_runner). */
    failure f = {.co = co,
                 .status = st,
                 .yield_why = why,
                 .what = what,
                 .hooks_off = st != LUA_YIELD && overrun_seen,
                 .depth = d,
                 .quiet = overrun_seen && s->stop_logged};
    char who[96];
    if (c) {
        snprintf(who, sizeof who, "conn#%llu %s", (unsigned long long)wsl_conn_id(c),
                 wsl_conn_remote(c));
        f.conn = who;
        f.conn_id = wsl_conn_id(c);
        f.remote = wsl_conn_remote(c);
    }
    /* Describing the error and closing the abandoned call run script code: a call of their own,
     * with a time of their own when this one was the outermost. */
    lua_State *g = guard_begin(s);
    failed(s, &f, grew);
    guard_end(s, g);
    /* A call around this one is over its time too, and fails by the same stop: one failure,
     * logged once (here, where the code that overran shows), reaching on_error once (through
     * the outermost call, the one that was over its time). */
    bool with_caller = overrun_seen && s->depth > 0;
    s->stop_logged = with_caller;
    return with_caller ? WSL_STOPPED_WITH_CALLER : -1;
}

bool wsl_protect(wsl_script *s, lua_CFunction body, void *arg, const char *what, const wsl_conn *c)
{
    int d = s->depth;
    lua_State *co = runner(s, d);
    if (!co) {
        wsl_error("Lua error in %s: not enough memory for a call", what);
        return false;
    }
    run_state r;
    run_begin(s, co, &r);
    lua_pushcfunction(co, body);
    lua_pushlightuserdata(co, arg);
    return run_resume(s, &r, co, 1, d, what, c) > 0;
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

bool wsl_protect_handler(wsl_script *s, wsl_handler_kind k, lua_CFunction body, void *arg,
                         const char *what, const wsl_conn *c)
{
    bool outer = s->ran;
    s->ran = s->timed_out = false;
    uint64_t start = wsl_metrics.timing ? now_ns() : 0; /* nobody reads it without --metrics */
    bool ok = wsl_protect(s, body, arg, what, c);
    if (s->ran) wsl_metrics_handler(k, ok, !ok && s->timed_out, start ? now_ns() - start : 0);
    s->ran = outer;
    return ok;
}

int wsl_resume_spawned(wsl_script *s, lua_State *co, int nargs, const wsl_conn *c)
{
    uint64_t start = wsl_metrics.timing ? now_ns() : 0;
    run_state r;
    run_begin(s, co, &r);
    int st = run_resume(s, &r, co, nargs, -1, "a function run by ws.spawn", c);
    wsl_metrics_handler(WSL_HANDLER_SPAWN, st >= 0, st < 0 && s->timed_out,
                        start ? now_ns() - start : 0);
    return st;
}

int wsl_stop_here(lua_State *L)
{
    if (lua_isyieldable(L)) return lua_yield(L, 0); /* as overrun_hook does */
    return luaL_error(L, "%s", overrun_why);
}

/* ---- the state, loading and reload -------------------------------------------------------- */

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

/* The __gc of an object made before any other with a finalizer: lua_close runs finalizers in
 * the reverse order of their marking, so this one runs last, when no script code is left. It
 * ends the guard wsl_script_free put around lua_close (the state is freed right after). */
static int last_finalizer(lua_State *L)
{
    (void)L;
    if (closing) in_call = 0;
    return 0;
}

static int setup_body(lua_State *L)
{
    wsl_script *s = lua_touserdata(L, 1);
    lua_newuserdatauv(L, 0, 0);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, last_finalizer);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &last_key);
    luaL_openlibs(L);
    replace_functions(L);
    wsl_lconn_open(L);
    wsl_lrequest_open(L);
    wsl_ltimer_open(L);
    /* The slots of the handler cache and the kind strings: made once, so that refreshing the
     * cache only overwrites existing registry slots (which allocates nothing). */
    for (int k = 0; k < WSL_HANDLERS; k++) {
        lua_pushboolean(L, 0);
        s->handler_refs[k] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_pushliteral(L, "text");
    s->kind_str[0] = lua_tostring(L, -1);
    s->kind_refs[0] = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushliteral(L, "binary");
    s->kind_str[1] = lua_tostring(L, -1);
    s->kind_refs[1] = luaL_ref(L, LUA_REGISTRYINDEX);
    /* Handlers make short-lived strings (every message is one): the generational collector
     * handles those with far less work than the incremental one. */
    lua_gc(L, LUA_GCGEN, 0, 0);
    luaL_requiref(L, "wsluad", wsl_lws_open, 0);
    lua_setglobal(L, "ws");
    set_paths(L, s->path);
    return 0;
}

static int store_chunk(lua_State *L)
{
    lua_rawsetp(L, LUA_REGISTRYINDEX, &chunk_key);
    return 0;
}

/* Compile the file into the registry (chunk_key). A syntax error is logged as the compiler wrote
 * it (a traceback would say nothing). The compiler runs no script code, but its allocations may
 * let the collector run finalizers: guarded. */
static int compile(wsl_script *s)
{
    lua_State *L = s->L;
    int base = lua_gettop(L), r = 0;
    lua_State *g = guard_begin(s);
    if (luaL_loadfile(L, s->path) != LUA_OK) {
        wsl_error("%s", lua_tostring(L, -1));
        r = -1;
    } else { /* stored in protected mode: a new registry key may need memory */
        lua_pushcfunction(L, store_chunk);
        lua_insert(L, -2);
        if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
            wsl_error("%s: %s", s->path, lua_tostring(L, -1));
            r = -1;
        }
    }
    lua_settop(L, base);
    guard_end(s, g);
    return r;
}

static int run_body(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &chunk_key);
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &chunk_key);
    wsl_call(L, 0, 0);
    return 0;
}

/* Lua raised an error outside any protected call: only a failed allocation can, while a
 * handler's arguments are pushed (see direct_runner). Lua would abort without a word. */
static int on_panic(lua_State *L)
{
    const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
    wsl_error("Lua error outside a protected call (out of memory?): %s: aborting", msg);
    abort();
}

/* Lua's warnings (warn(), and the one for an error in a __gc finalizer) as log lines at WARN,
 * where lua_newstate would drop them; off until the script writes warn("@on"), as with the lua
 * command. A warning comes in pieces (tocont) and is logged whole, cut at the buffer. */
static struct {
    bool on, cont; /* cont: the next piece continues a warning */
    size_t len;
    char buf[2048];
} warns = {.len = sizeof "Lua warning: " - 1, .buf = "Lua warning: "};

static void on_warn(void *ud, const char *msg, int tocont)
{
    (void)ud;
    if (!warns.cont && msg[0] == '@') { /* a control message */
        if (strcmp(msg, "@on") == 0) warns.on = true;
        if (strcmp(msg, "@off") == 0) warns.on = false;
        return;
    }
    warns.cont = tocont;
    if (!warns.on) return;
    size_t n = strlen(msg), room = sizeof warns.buf - warns.len;
    memcpy(warns.buf + warns.len, msg, n < room ? n : room);
    warns.len += n < room ? n : room;
    if (tocont) return;
    wsl_log_bytes(WSL_LOG_WARN, false, 0, NULL, warns.buf, warns.len);
    warns.len = sizeof "Lua warning: " - 1;
}

wsl_script *wsl_script_new(wsl_server *srv, const char *path)
{
    wsl_script *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->srv = srv;
    wsl_list_init(&s->timers);
    wsl_list_init(&s->sleepers);
    s->path = strdup(path);
    s->mem_limit = wsl_server_options(srv)->lua_memory;
    s->L = lua_newstate(lalloc, s);
    if (!s->path || !s->L) {
        wsl_error("cannot create the Lua state: out of memory");
        wsl_script_free(s);
        return NULL;
    }
    lua_atpanic(s->L, on_panic);
    lua_setwarnf(s->L, on_warn, NULL);
    *(wsl_script **)lua_getextraspace(s->L) = s;

    struct sigaction sa = {.sa_handler = on_alarm, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);

    uv_timer_init(wsl_server_loop(srv), &s->debounce);
    s->debounce.data = s;
    /* No time limit yet: the setup runs none of the script's code, and takes longer than a tiny
     * --handler-timeout (a failure here is running out of memory). */
    handler_timeout = 0;
    if (!wsl_protect(s, setup_body, s, "setup", NULL)) {
        wsl_script_stop(s);
        lua_close(s->L);
        s->L = NULL;
    }
    handler_timeout = wsl_server_options(srv)->handler_timeout;
    snprintf(timeout_msg, sizeof timeout_msg,
             "handler timeout: still running after %g s (--handler-timeout)", handler_timeout);
    return s;
}

/* The handlers are the script's globals named after them (wsl_handler_names; timers have none)
 * as they stand once its top level has run: looked up here, once per load and successful reload
 * (a failed one leaves the cache as it was), not for every event. A handler the script assigns
 * later (in a handler or a timer) is seen at the next reload. Raw lookups: a "strict" __index on _G
 * that raises for undefined globals must not make a handler the script leaves out an error. */
static int cache_handlers_body(lua_State *L)
{
    wsl_script *s = wsl_script_of(L);
    /* All or nothing: what may need memory (the names) first, then only reads and writes of
     * existing registry slots, which cannot fail. */
    lua_pushglobaltable(L);
    int g = lua_gettop(L);
    for (int k = 0; k < WSL_HANDLERS; k++)
        lua_pushstring(L, wsl_handler_names[k]);
    /* Anything else than a function, nil or false (a number, a module's table) is a mistake:
     * taking it for "no handler" would run the script without it, silently. */
    for (int k = 0; k < WSL_HANDLERS; k++) {
        lua_pushvalue(L, g + 1 + k);
        int t = k == WSL_HANDLER_TIMER ? LUA_TNIL : lua_rawget(L, g);
        if (t != LUA_TFUNCTION && t != LUA_TNIL && !(t == LUA_TBOOLEAN && !lua_toboolean(L, -1)))
            return luaL_error(L, "%s must be a function (or nil), got %s", wsl_handler_names[k],
                              luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    for (int k = 0; k < WSL_HANDLERS; k++) {
        lua_pushvalue(L, g + 1 + k);
        bool fn = k != WSL_HANDLER_TIMER && lua_rawget(L, g) == LUA_TFUNCTION;
        if (!fn) {
            lua_pop(L, 1);
            lua_pushboolean(L, 0);
        }
        lua_rawseti(L, LUA_REGISTRYINDEX, s->handler_refs[k]);
        s->defined = fn ? s->defined | 1u << k : s->defined & ~(1u << k);
    }
    s->anchored = NULL; /* the next message anchors the new on_message */
    return 0;
}

static bool cache_handlers(wsl_script *s)
{
    return wsl_protect(s, cache_handlers_body, NULL, s->path, NULL);
}

int wsl_script_load(wsl_script *s)
{
    if (!s->L || compile(s) != 0) return -1;
    return wsl_protect(s, run_body, NULL, s->path, NULL) && cache_handlers(s) ? 0 : -1;
}

/* Raw, as cache_handlers reads them. */
static int save_handlers_body(lua_State *L)
{
    lua_createtable(L, 0, WSL_HANDLERS);
    lua_pushglobaltable(L);
    for (int k = 0; k < WSL_HANDLERS; k++) {
        if (k == WSL_HANDLER_TIMER) continue;
        lua_pushstring(L, wsl_handler_names[k]);
        lua_rawget(L, -2);
        lua_setfield(L, -3, wsl_handler_names[k]);
    }
    lua_pop(L, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &saved_key);
    return 0;
}

static int restore_handlers_body(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &saved_key);
    lua_pushglobaltable(L);
    for (int k = 0; k < WSL_HANDLERS; k++) {
        if (k == WSL_HANDLER_TIMER) continue;
        lua_pushstring(L, wsl_handler_names[k]);
        lua_getfield(L, -3, wsl_handler_names[k]);
        lua_rawset(L, -3);
    }
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &saved_key);
    return 0;
}

int wsl_script_reload(wsl_script *s)
{
    /* Compile first: a syntax error changes nothing at all. */
    if (compile(s) != 0) {
        wsl_warn("reload of %s failed: keeping the running code", s->path);
        return -1;
    }
    if (!wsl_protect(s, save_handlers_body, NULL, "reload", NULL)) return -1;
    unsigned old = s->gen++;
    s->reloading = true;
    bool ok = wsl_protect(s, run_body, NULL, s->path, NULL) && cache_handlers(s);
    s->reloading = false;
    wsl_lspawn_reload_done(s, !ok);
    if (!ok) {
        wsl_ltimer_stop(s, WSL_TIMERS_GEN, s->gen); /* whatever the failed top level started */
        s->gen = old;
        /* The globals as they were; the cache, untouched, still holds the running handlers. */
        wsl_protect(s, restore_handlers_body, NULL, "reload", NULL);
        wsl_warn("reload of %s failed: keeping the running handlers", s->path);
        return -1;
    }
    wsl_ltimer_stop(s, WSL_TIMERS_OTHER_GENS, s->gen);
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
    int r = uv_fs_event_init(wsl_server_loop(s->srv), &s->watch);
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
    s->stopped = true;
    flush_repeats(s, 0); /* a count not logged yet */
    if (s->L) {
        wsl_ltimer_stop(s, WSL_TIMERS_ALL, 0);
        wsl_lspawn_stop(s);
    }
    if (s->watching) uv_close((uv_handle_t *)&s->watch, NULL);
    s->watching = false;
    if (!uv_is_closing((uv_handle_t *)&s->debounce)) uv_close((uv_handle_t *)&s->debounce, NULL);
    struct itimerval off = {0};
    setitimer(ITIMER_REAL, &off, NULL);
    alarm_armed = 0;
}

const char *wsl_script_path(const wsl_script *s)
{
    return s->path;
}

void wsl_script_free(wsl_script *s)
{
    if (!s) return;
    if (s->L) {
        /* lua_close runs the script's finalizers: as a call, so that one that never returns
         * is watched like any script code (Lua runs finalizers with hooks off: stop_call's last
         * resort ends the process). last_finalizer ends the call
         * before the state is freed, so that SIGALRM cannot touch freed memory. */
        guard_begin(s);
        closing = 1;
        lua_close(s->L);
        in_call = 0; /* in case the script destroyed the registry and its last finalizer */
        closing = 0;
        overrun = 0;
        s->depth = 0;
        struct itimerval off = {0};
        setitimer(ITIMER_REAL, &off, NULL);
        alarm_armed = 0;
    }
    small_drain(s);
    wsl_registry_free(s->metrics);
    running = NULL;
    free(s->runners);
    free(s->runner_refs);
    free(s->conns);
    free(s->path);
    free(s);
}

/* ---- connection events -> handlers ---------------------------------------------------------- */

/* One handler call for a connection event: the argument of handler_body. */
typedef enum { ARGS_CONN, ARGS_MESSAGE, ARGS_CLOSE, ARGS_ERROR } handler_args;

typedef struct handler_call {
    handler_args args;
    wsl_handler_kind kind;
    wsl_conn *c;
    const uint8_t *data;
    size_t len;
    bool binary;
    unsigned code;
} handler_call;

/* Push the handler of kind k from the cache; false (and nothing pushed) when the script does
 * not define it. */
static bool get_handler(lua_State *L, wsl_handler_kind k)
{
    wsl_script *s = wsl_script_of(L);
    if (!(s->defined & 1u << k)) return false;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->handler_refs[k]);
    return true;
}

/* Push h's handler and its arguments; returns the argument count. A message's string goes
 * first, below the handler: there it stays for the whole call whatever the handler does with
 * its argument, so rx_text stays valid (see wsl_lcheck_msg). */
static inline int push_handler_call(lua_State *L, wsl_script *s, const handler_call *h)
{
    int str = 0;
    if (h->args == ARGS_MESSAGE) {
        s->rx_text = lua_pushlstring(L, (const char *)h->data, h->len);
        s->rx_len = h->len;
        if (h->binary) s->rx_text = NULL;
        str = lua_gettop(L);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->handler_refs[h->kind]);
    wsl_lconn_push(L, h->c);
    switch (h->args) {
    case ARGS_CONN:
        return 1;
    case ARGS_MESSAGE:
        lua_pushvalue(L, str);
        lua_rawgeti(L, LUA_REGISTRYINDEX, s->kind_refs[h->binary]);
        return 3;
    case ARGS_CLOSE:
        lua_pushinteger(L, h->code);
        lua_pushlstring(L, (const char *)h->data, h->len);
        return 3;
    case ARGS_ERROR:
        wsl_push_last_error(L); /* the error value as raised, then the traceback */
        return 3;
    }
    return 1;
}

static int handler_body(lua_State *L)
{
    handler_call *h = lua_touserdata(L, 1);
    wsl_script *s = wsl_script_of(L);
    if (!(s->defined & 1u << h->kind)) return 0;
    s->ran = true;
    wsl_call(L, push_handler_call(L, s, h), 0);
    return 0;
}

/* Free memory under --lua-memory that pushing a handler's arguments outside a protected call
 * needs beyond the bytes of the message: the string's header, and room to spare. */
#define DIRECT_HEADROOM 4096

/* The runner for h's direct path (runner 0), or NULL when h may not take it: its arguments
 * pushed from C onto the runner outside a protected call, where only a failed allocation can
 * raise (see on_panic). So: the conn object exists (making it takes more), the runner too, the
 * call is not nested (at depth 0 no Lua call is in progress anywhere to catch an error meant for
 * another), and the memory cap, if any, leaves enough room for the string. */
static inline lua_State *direct_runner(const wsl_script *s, const handler_call *h)
{
    if (s->depth != 0 || !h->c->udata ||
        (s->mem_limit && s->mem + h->len + DIRECT_HEADROOM > s->mem_limit))
        return NULL;
    if (h->args == ARGS_MESSAGE && s->anchored) return s->anchored; /* (runner 0, see anchor) */
    return s->nrunners > 0 ? s->runners[0] : NULL;
}

/* A message call on the anchored runner: as push_handler_call, from the anchors. */
static inline int push_message_call(lua_State *co, wsl_script *s, const handler_call *h)
{
    s->rx_text = lua_pushlstring(co, (const char *)h->data, h->len); /* at ANCHORS + 1 */
    s->rx_len = h->len;
    if (h->binary) s->rx_text = NULL;
    lua_pushvalue(co, ANCHOR_ON_MESSAGE);
    wsl_lconn_push(co, h->c);
    lua_pushvalue(co, ANCHORS + 1);
    lua_pushvalue(co, h->binary ? ANCHOR_BINARY : ANCHOR_TEXT);
    return 3;
}

/* Runner co, idle, anchors the current on_message and the kind strings (copies of values the
 * registry holds: nothing is allocated). True. */
static bool anchor(wsl_script *s, lua_State *co)
{
    lua_settop(co, 0);
    lua_rawgeti(co, LUA_REGISTRYINDEX, s->handler_refs[WSL_HANDLER_MESSAGE]);
    lua_rawgeti(co, LUA_REGISTRYINDEX, s->kind_refs[0]);
    lua_rawgeti(co, LUA_REGISTRYINDEX, s->kind_refs[1]);
    s->anchored = co;
    return true;
}

/* The direct path: the handler and its arguments go straight onto the runner, which runs the
 * Lua function itself, without handler_body (and its extra C call) in between. As
 * wsl_protect_handler: time limit, metrics, errors logged. */
static inline __attribute__((always_inline)) bool call_direct(wsl_script *s, const handler_call *h,
                                                              lua_State *co)
{
    bool outer_ran = s->ran;
    s->ran = true;
    s->timed_out = false;
    uint64_t start = wsl_metrics.timing ? now_ns() : 0;
    bool anchored =
        h->args == ARGS_MESSAGE && (co == s->anchored || (!s->runner_seen && anchor(s, co)));
    run_state r;
    run_begin(s, co, &r); /* the time limit covers finalizers the pushes may run */
    int n = anchored ? push_message_call(co, s, h) : push_handler_call(co, s, h);
    bool ok = run_resume(s, &r, co, n, 0, wsl_handler_names[h->kind], h->c) > 0;
    wsl_metrics_handler(h->kind, ok, !ok && s->timed_out, start ? now_ns() - start : 0);
    s->ran = outer_ran;
    return ok;
}

void wsl_handler_failed(wsl_script *s, wsl_conn *c)
{
    if (wsl_conn_request_pending(c)) { /* a function ws.spawn ran for on_request */
        wsl_lrequest_fail(s->L, c);
        return;
    }
    if (!wsl_conn_is_open(c)) return; /* only logged */
    handler_call err = {.args = ARGS_ERROR, .kind = WSL_HANDLER_ERROR, .c = c};
    if (s->defined & 1u << WSL_HANDLER_ERROR &&
        wsl_protect_handler(s, err.kind, handler_body, &err, "on_error", c))
        return;
    if (!wsl_conn_is_open(c)) return;
    /* Once a signal asked the process to end, c's on_close runs with the shutdown's, after
     * every connection left the open state (wsl_server_shutdown), as the others' do. */
    if (wsl_server_stopping(s->srv))
        wsl_conn_close_begin(c, 1011, "internal error", 14);
    else
        wsl_conn_close(c, 1011, "internal error", 14);
}

/* The protected path of dispatch, with a copy of h: dispatch's own never has its address taken,
 * so its fields stay constants and registers there. */
static __attribute__((noinline)) bool call_protected(wsl_script *s, handler_call h)
{
    return wsl_protect_handler(s, h.kind, handler_body, &h, wsl_handler_names[h.kind], h.c);
}

/* Run a handler for c; an error goes to on_error, or closes the connection with 1011. Inline in
 * each event, with call_direct: every test of h's fields folds. */
static inline __attribute__((always_inline)) void dispatch(wsl_script *s, const handler_call *h)
{
    if (!(s->defined & 1u << h->kind)) return;
    wsl_conn *outer = s->conn_now;
    const char *outer_rx = s->rx_text;
    size_t outer_len = s->rx_len;
    s->conn_now = h->c;
    lua_State *co = direct_runner(s, h);
    bool ok = co ? call_direct(s, h, co) : call_protected(s, *h);
    s->conn_now = outer;
    s->rx_text = outer_rx; /* (the outer call's string is still anchored under it) */
    s->rx_len = outer_len;
    if (!ok && h->args != ARGS_CLOSE) wsl_handler_failed(s, h->c);
}

static void on_open(void *ud, wsl_conn *c)
{
    dispatch(ud, &(handler_call){.args = ARGS_CONN, .kind = WSL_HANDLER_OPEN, .c = c});
}

static void on_message(void *ud, wsl_conn *c, const uint8_t *data, size_t len, bool binary)
{
    dispatch(ud, &(handler_call){.args = ARGS_MESSAGE,
                                 .kind = WSL_HANDLER_MESSAGE,
                                 .c = c,
                                 .data = data,
                                 .len = len,
                                 .binary = binary});
}

static void on_close(void *ud, wsl_conn *c, unsigned code, const char *reason, size_t len)
{
    dispatch(ud, &(handler_call){.args = ARGS_CLOSE,
                                 .kind = WSL_HANDLER_CLOSE,
                                 .c = c,
                                 .code = code,
                                 .data = (const uint8_t *)reason,
                                 .len = len});
}

static void on_drain(void *ud, wsl_conn *c)
{
    dispatch(ud, &(handler_call){.args = ARGS_CONN, .kind = WSL_HANDLER_DRAIN, .c = c});
}

/* on_upgrade's argument. */
typedef struct upgrade_call {
    wsl_conn *c;
    const wsl_request *req;
    wsl_upgrade *out;
} upgrade_call;

/* The req table of on_upgrade. */
static void push_request(lua_State *L, const upgrade_call *u)
{
    const wsl_request *req = u->req;
    wsl_lrequest_fields(L, req, 3);
    if (req->origin.len) {
        wsl_push_span(L, req->origin);
        lua_setfield(L, -2, "origin");
    }
    lua_newtable(L); /* the offered subprotocols, in order */
    wsl_span list = req->protocols, tok;
    for (int n = 1; wsl_http_next_token(&list, &tok); n++) {
        wsl_push_span(L, tok);
        lua_rawseti(L, -2, n);
    }
    lua_setfield(L, -2, "protocols");
    lua_newtable(L);
    lua_setfield(L, -2, "data");
}

/* What on_upgrade returned (the stack: arg, the handler, req, its three results). A
 * continuation, so that it also runs after the script caught an error with pcall. */
enum { UPGRADE_REQ = 3 };

static int upgrade_done(lua_State *L, int call_status, lua_KContext ctx)
{
    (void)call_status;
    (void)ctx;
    upgrade_call *u = lua_touserdata(L, 1);
    int req_index = UPGRADE_REQ;
    wsl_upgrade *up = u->out;
    if (lua_type(L, -3) == LUA_TSTRING) {
        size_t len;
        const char *proto = lua_tolstring(L, -3, &len);
        if (len == 0 || len >= sizeof up->protocol)
            return luaL_error(L, "on_upgrade: bad subprotocol '%s'", proto);
        memcpy(up->protocol, proto, len + 1);
    } else if (lua_type(L, -3) == LUA_TBOOLEAN && !lua_toboolean(L, -3)) {
        /* Checked here rather than by luaL_opt*, whose messages ("bad argument #-2 to '?'")
         * would not say that on_upgrade's return value is wrong. */
        int isint = 1;
        lua_Integer status = lua_isnil(L, -2) ? 403 : lua_tointegerx(L, -2, &isint);
        if (!isint)
            return luaL_error(L,
                              "on_upgrade: the refusal status must be an integer from 400 to 599, "
                              "got %s",
                              lua_type(L, -2) == LUA_TNUMBER ? lua_tostring(L, -2)
                                                             : luaL_typename(L, -2));
        if (status < 400 || status > 599)
            return luaL_error(L, "on_upgrade: refusal status %I is not 4xx or 5xx", status);
        if (!lua_isnil(L, -1) && !lua_isstring(L, -1))
            return luaL_error(L, "on_upgrade: the refusal body must be a string, got %s",
                              luaL_typename(L, -1));
        const char *body = lua_isnil(L, -1) ? wsl_http_reason((int)status) : lua_tostring(L, -1);
        up->status = (int)status;
        snprintf(up->body, sizeof up->body, "%s", body);
        return 0;
    } else if (!lua_isnil(L, -3) && !(lua_type(L, -3) == LUA_TBOOLEAN)) {
        return luaL_error(L, "on_upgrade must return nothing, true, a subprotocol or false");
    }
    lua_pop(L, 3);

    /* Accepted: whatever the hook left in req.data becomes conn.data. */
    int data = lua_getfield(L, req_index, "data");
    if (data != LUA_TTABLE && data != LUA_TNIL)
        return luaL_error(L, "on_upgrade: req.data must be a table (it becomes conn.data), got %s",
                          lua_typename(L, data));
    if (data == LUA_TTABLE) {
        lua_pushnil(L);
        if (lua_next(L, -2)) {
            lua_pop(L, 2);
            wsl_lconn_set_data(L, u->c, lua_gettop(L));
        }
    }
    return 0;
}

static int upgrade_body(lua_State *L)
{
    upgrade_call *u = lua_touserdata(L, 1);
    if (!get_handler(L, WSL_HANDLER_UPGRADE)) return 0;
    wsl_script_of(L)->ran = true;
    push_request(L, u); /* at UPGRADE_REQ */
    lua_pushvalue(L, UPGRADE_REQ - 1);
    lua_pushvalue(L, UPGRADE_REQ);
    lua_callk(L, 1, 3, 0, upgrade_done);
    return upgrade_done(L, LUA_OK, 0);
}

static void on_upgrade(void *ud, wsl_conn *c, const wsl_request *req, wsl_upgrade *out)
{
    upgrade_call u = {.c = c, .req = req, .out = out};
    if (!wsl_protect_handler(ud, WSL_HANDLER_UPGRADE, upgrade_body, &u, "on_upgrade", NULL)) {
        out->status = 500;
        snprintf(out->body, sizeof out->body, "Internal Server Error");
    }
}

/* ---- on_request ------------------------------------------------------------------------ */

/* on_request's argument. */
typedef struct request_call {
    wsl_conn *c;
    const wsl_http_req *req;
} request_call;

/* The stack of request_body: the argument, the handler, req, then on_request's results. */
enum { REQUEST_OBJ = 3 };

/* What on_request returned: status, body, headers is the answer; nothing leaves the request to
 * req:defer() or to the server (files, 404). A continuation, as upgrade_done is. */
static int request_done(lua_State *L, int call_status, lua_KContext ctx)
{
    (void)call_status;
    (void)ctx;
    request_call *rc = lua_touserdata(L, 1);
    /* Answered inside the handler (req:respond, a failure of what it spawned): results unused. */
    if (!wsl_conn_request_pending(rc->c) || lua_isnil(L, REQUEST_OBJ + 1)) return 0;
    wsl_lrequest_answer(L, rc->c, REQUEST_OBJ + 1, "on_request");
    return 0;
}

static int request_body(lua_State *L)
{
    request_call *rc = lua_touserdata(L, 1);
    if (!get_handler(L, WSL_HANDLER_REQUEST)) return 0;
    wsl_script_of(L)->ran = true;
    wsl_lrequest_push(L, rc->c, rc->req); /* at REQUEST_OBJ */
    wsl_script_of(L)->req_now = (int)*wsl_conn_request_slot(rc->c);
    lua_pushvalue(L, REQUEST_OBJ - 1);
    lua_pushvalue(L, REQUEST_OBJ);
    lua_callk(L, 1, 3, 0, request_done);
    return request_done(L, LUA_OK, 0);
}

static void on_request(void *ud, wsl_conn *c, const wsl_http_req *req)
{
    wsl_script *s = ud;
    request_call rc = {.c = c, .req = req};
    int outer = s->req_now;
    bool ok = wsl_protect_handler(s, WSL_HANDLER_REQUEST, request_body, &rc, "on_request", NULL);
    s->req_now = outer;
    if (!ok && wsl_conn_request_pending(c)) {
        wsl_lrequest_fail(s->L, c);
    } else if (!wsl_conn_request_pending(c) || !wsl_lrequest_deferred(s->L, c)) {
        wsl_lrequest_release(s->L, c); /* answered, or the server answers: req is done */
    }
}

/* A deferred request timed out, or its client left. */
static void on_request_abandoned(void *ud, wsl_conn *c)
{
    wsl_script *s = ud;
    if (s->L) wsl_lrequest_release(s->L, c);
}

static void on_release(void *ud, wsl_conn *c)
{
    wsl_script *s = ud;
    if (s->L) wsl_lrequest_release(s->L, c); /* already done, unless something was missed */
    wsl_lconn_release(ud, c);
}

const wsl_conn_events wsl_script_events = {
    .upgrade = on_upgrade,
    .open = on_open,
    .message = on_message,
    .close = on_close,
    .drain = on_drain,
    .release = on_release,
    .request = on_request,
    .request_abandoned = on_request_abandoned,
};
