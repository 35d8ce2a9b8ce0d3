"""A script cannot freeze the server (issues 4 and 8): Lua code that never returns is stopped after
--handler-timeout wherever it runs (a handler, any coroutine it resumes, nested or wrapped, a timer
callback, on_upgrade, the top level, a reload), logged with the handler's name and a traceback
into the script, and handled like any other error (the connection closed 1011, or on_error
called) while every other client keeps being served; no pcall can keep the stop. SIGTERM stops a
stuck handler and shuts down gracefully; a second signal ends the process at once. A script
allocating without bound hits --lua-memory, and after such a failure the memory goes back to the
system. Hostile scripts (scripts/chunk.lua runs any chunk a client sends) try the corners.
"""

import os
import re
import signal
import subprocess
import time
import urllib.parse

import pytest

import confutil as cu
import harness
import wsclient
from confutil import OP_TEXT

RUNAWAY = cu.script("runaway.lua")
CHUNK = cu.script("chunk.lua")
GUARD = 20  # failure guard for anything that waits on a stopped handler
LIMIT = "0.5"
TIMEOUT = f"handler timeout: still running after {LIMIT} s (--handler-timeout)"
INTERRUPTED = "interrupted: the server is shutting down"


def served(c, text="bystander"):
    c.send_text(text)
    assert c.recv_message(GUARD) == (OP_TEXT, text.encode())


def error_logged(srv, handler, message, after, script="runaway.lua", timeout=GUARD):
    """Wait for the "Lua error in HANDLER" line carrying `message` and check that its traceback
    follows (in the same write) and points into the script. Returns the traceback's lines."""
    rx = rf" ERROR Lua error in {re.escape(handler)}( \(conn#\d+ [^)]*\))?: .*{re.escape(message)}"
    i, _ = srv.wait_for_line(rx, timeout, after)
    srv.wait_for_line(r"^stack traceback:$", timeout, i + 1)
    with srv.cond:
        lines = srv.lines[i + 1:]
    assert lines and lines[0] == "stack traceback:", lines[:3]
    frames = []
    for line in lines[1:]:
        if not line.startswith("\t"):
            break
        frames.append(line)
    where = rf"{re.escape(script)}:\d+: in "
    assert any(re.search(where, f) for f in frames), \
        f"no frame in {script} in the traceback:\n" + "\n".join(frames)
    return frames


def no_sanitizer_report(srv):
    bad = [l for l in srv.lines if cu.SANITIZER_RX.search(l)]
    assert not bad, "sanitizer report in the server's stderr:\n" + "\n".join(bad[:20])


# --- runaway loops in handlers -----------------------------------------------------------------

HANDLER_LOOPS = [
    "spin",        # a plain loop
    "spin-pcall",  # a loop catching every error it gets
    "co-wrap",     # issue 8's repro: coroutine.wrap(function() while true do end end)()
    "co-resume",   # while true do coroutine.resume(co) end, co looping
    "co-nested",   # a coroutine resuming another that loops
    "co-pcall",    # a pcall loop inside a coroutine
    "pcall-wrap",  # while true do pcall(coroutine.wrap(function() while true do end end)) end
    "sort-pcall",  # a pcall loop in a table.sort comparator, where Lua cannot yield
]


@pytest.mark.parametrize("what", HANDLER_LOOPS)
def test_endless_handler_is_stopped(what):
    with cu.server(RUNAWAY, "--static", "none", "--handler-timeout", LIMIT) as srv:
        bystander = srv.connect()
        mark = srv.mark()
        with srv.connect() as bad:
            start = time.monotonic()
            bad.send_text(what)
            served(bystander)  # queued behind the loop; answered once it is stopped
            cu.expect_fail(bad, 1011, GUARD)
            took = time.monotonic() - start
        assert took >= float(LIMIT) - 0.05, f"stopped after {took:.2f}s, before the limit"
        error_logged(srv, "on_message", TIMEOUT, mark)
        served(bystander, "and again")
        cu.check_serving(srv)
        cu.finish_clean(bystander)


def test_stop_swallowed_by_coroutine_resume_still_fails_the_call():
    # coroutine.resume reports the stop as an error; a script that ignores it and returns has
    # still overrun: the call counts as failed, logged like any other.
    with cu.server(RUNAWAY, "--static", "none", "--handler-timeout", LIMIT) as srv:
        bystander = srv.connect()
        mark = srv.mark()
        with srv.connect() as bad:
            bad.send_text("co-swallow")
            code, _ = bad.expect_close(GUARD, skip_data=True)  # "returned" may come first
            assert code == 1011
        srv.wait_for_log(rf"co-swallow resumed: false .*{re.escape(TIMEOUT)}", after=mark)
        srv.wait_for_log(rf"Lua error in on_message \(conn#\d+ [^)]*\): {re.escape(TIMEOUT)}",
                         after=mark)
        served(bystander)
        cu.finish_clean(bystander)


def test_endless_handler_with_on_error_calls_it():
    with cu.server(RUNAWAY, "--static", "none", "--handler-timeout", LIMIT,
                   env={"WSLUAD_TEST_ON_ERROR": "1"}) as srv:
        bystander = srv.connect()
        srv.wait_for_log(cu.OPEN_RX)  # its line must not be taken for bad's below
        mark = srv.mark()
        bad = srv.connect()
        bad_id = int(srv.wait_for_log(cu.OPEN_RX, after=mark).group(1))
        bad.send_text("co-wrap")
        served(bystander)
        srv.wait_for_log(rf"on_error id={bad_id} .*handler timeout", GUARD, after=mark)
        bad.sock.close()
        cu.check_serving(srv)
        cu.finish_clean(bystander)


def test_endless_on_open_is_stopped():
    with cu.server(RUNAWAY, "--static", "none", "--handler-timeout", LIMIT) as srv:
        bystander = srv.connect()
        mark = srv.mark()
        with srv.connect(path="/spin-open", timeout=GUARD) as bad:
            served(bystander)
            cu.expect_fail(bad, 1011, GUARD)
        error_logged(srv, "on_open", TIMEOUT, mark)
        cu.check_serving(srv)
        cu.finish_clean(bystander)


def test_endless_on_upgrade_is_answered_500():
    with cu.server(RUNAWAY, "--static", "none", "--handler-timeout", LIMIT) as srv:
        bystander = srv.connect()
        mark = srv.mark()
        with cu.raw_connect(srv, GUARD) as s:
            req, _ = wsclient.handshake_request(srv.host, srv.port, "/spin-upgrade")
            s.sendall(req)
            served(bystander)  # waits for the stop, then is answered
            status, _, _, _ = wsclient.read_http_response(s, GUARD)
        assert status == 500
        error_logged(srv, "on_upgrade", TIMEOUT, mark)
        cu.check_serving(srv)
        cu.finish_clean(bystander)


TIMER_LOOPS = {
    "timer-spin": "timer callback spinning",
    "timer-co": "timer callback resuming a coroutine",   # a coroutine resumed from a timer
    "timer-pcall": "timer callback looping in pcall",    # a loop inside pcall
}


@pytest.mark.parametrize("what", sorted(TIMER_LOOPS))
def test_endless_timer_callback_is_stopped(what):
    with cu.server(RUNAWAY, "--static", "none", "--handler-timeout", LIMIT) as srv:
        bystander = srv.connect()
        c = srv.connect()
        mark = srv.mark()
        c.send_text(what)
        assert c.recv_message() == (OP_TEXT, b"timer set")
        srv.wait_for_log(TIMER_LOOPS[what], after=mark)
        served(bystander)
        error_logged(srv, "ws.timer callback", TIMEOUT, mark)
        served(c, "the timer's connection too")  # a timer belongs to no connection
        cu.check_serving(srv)
        cu.finish_clean(bystander)
        cu.finish_clean(c)


# --- the top level and reload --------------------------------------------------------------

TOP_LOOPS = {
    "plain": "while true do end",
    "pcall-in-coroutine": "coroutine.wrap(function()\n"
                          "  while true do pcall(function() while true do end end) end\n"
                          "end)()",
}


@pytest.mark.parametrize("kind", sorted(TOP_LOOPS))
def test_endless_top_level_exits_1(tmp_path, kind):
    p = tmp_path / "toplevel.lua"
    p.write_text("function on_message(c, d) c:send(d) end\n" + TOP_LOOPS[kind] + "\n")
    start = time.monotonic()
    r = harness.run("-l", "127.0.0.1:0", "--static", "none", "--handler-timeout", LIMIT, str(p),
                    timeout=GUARD)
    took = time.monotonic() - start
    assert r.returncode == 1, r.stderr
    assert took < 5, f"exit after {took:.1f}s"
    assert re.search(rf"Lua error in \S*toplevel\.lua: .*{re.escape(TIMEOUT)}", r.stderr), r.stderr
    assert "stack traceback:" in r.stderr
    assert re.search(r"toplevel\.lua:\d+: in ", r.stderr), r.stderr
    assert "listening on" not in r.stderr


V1 = 'function on_message(c, d) c:send("v1:" .. d) end\n'
V2 = ('function on_message(c, d) c:send("v2:" .. d) end\n'
      'ws.timer(0, function() ws.log("v2 timer ran") end)\n')


def echoed_by(c, text, version):
    c.send_text(text)
    assert c.recv_text(GUARD) == f"{version}:{text}"


@pytest.mark.parametrize("kind", sorted(TOP_LOOPS))
def test_reload_with_endless_top_level_keeps_the_running_code(tmp_path, kind):
    p = tmp_path / "reloaded.lua"
    p.write_text(V1)
    with cu.server(str(p), "--static", "none", "--handler-timeout", LIMIT) as srv:
        c = srv.connect()
        echoed_by(c, "before", "v1")
        p.write_text(V2 + TOP_LOOPS[kind] + "\n")
        mark = srv.mark()
        srv.signal(signal.SIGHUP)
        c.send_text("during")  # queued behind the reload; answered by the old code
        assert c.recv_text(GUARD) == "v1:during"
        error_logged(srv, os.path.realpath(p), TIMEOUT, mark, script="reloaded.lua")
        srv.wait_for_log(r"reload of \S+ failed: keeping the running handlers", after=mark)
        echoed_by(c, "after", "v1")
        d = srv.connect()
        echoed_by(d, "new client", "v1")
        # The failed run's timer was stopped with it (a 0 s timer fires on the next turn of the
        # loop; the round trips above took several).
        assert not srv.find_logs("v2 timer ran", after=mark)
        cu.finish_clean(c)
        cu.finish_clean(d)


# --- signals -------------------------------------------------------------------------------

@pytest.mark.parametrize("what", ["spin", "co-pcall", "sort-pcall"])
def test_sigterm_stops_a_stuck_handler_and_shuts_down(what):
    # --handler-timeout 0: no time limit, so only the signal can stop the loop.
    srv = cu.start_server(RUNAWAY, "--static", "none", "--handler-timeout", "0")
    with srv:
        bystander = srv.connect()
        bad = srv.connect()
        mark = srv.mark()
        bad.send_text(what)
        srv.wait_for_log(rf"runaway {what}$", after=mark)
        bystander.send_text("queued behind the loop")
        assert cu.nothing_arrives(bystander, 0.3), "the loop was not stuck"
        start = time.monotonic()
        srv.signal(signal.SIGTERM)
        srv.wait_for_log(rf"Lua error in on_message \(conn#\d+ [^)]*\): .*{re.escape(INTERRUPTED)}",
                         GUARD, after=mark)
        # The graceful shutdown goes on: the bystander gets 1001 (its queued message may be
        # answered first), the stuck one 1011 for its failed handler or 1001.
        code, _ = bystander.expect_close(GUARD, skip_data=True)
        assert code == 1001
        bystander.close(1001)
        code, _ = bad.expect_close(GUARD, skip_data=True)
        assert code in (1011, 1001)
        bad.close(code)
        rc = srv.wait_exit(GUARD)
        took = time.monotonic() - start
        assert rc == 0, f"exit status {rc}"
        assert took < 5, f"exit {took:.1f}s after SIGTERM"
        no_sanitizer_report(srv)


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_second_signal_ends_the_process_at_once(second):
    srv = cu.start_server(RUNAWAY, "--static", "none")
    with srv:
        silent = srv.connect()  # never answers the close: the shutdown would wait 3 s for it
        srv.signal(signal.SIGTERM)
        assert silent.expect_close(GUARD)[0] == 1001
        srv.signal(second)
        try:
            rc = srv.wait_exit(2.0)  # a deadline on waitpid, well under the 3 s it would wait
        except subprocess.TimeoutExpired:
            pytest.fail("still running 2 s after the second signal")
        assert rc == -second, f"exit status {rc}, expected killed by signal {second}"


# --- memory --------------------------------------------------------------------------------

LUA_MEMORY = 64 << 20


def check_peak_rss(srv):
    """Without the cap these scripts would take the machine's memory; with it the process
    peak stays in the cap's neighbourhood (generous slack; skipped under ASan)."""
    if cu.is_sanitized():
        return
    with open(f"/proc/{srv.proc.pid}/status") as f:
        hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    assert hwm * 1024 < LUA_MEMORY + (192 << 20), f"peak RSS {hwm} KiB"


@pytest.mark.parametrize("what", ["hog", "string-hog"])
def test_unbounded_allocation_hits_the_lua_memory_cap(what):
    with cu.server(RUNAWAY, "--static", "none", "--lua-memory", str(LUA_MEMORY)) as srv:
        bystander = srv.connect()
        mark = srv.mark()
        with srv.connect() as bad:
            bad.send_text(what)
            cu.expect_fail(bad, 1011, 60)
        srv.wait_for_log(r" ERROR ", after=mark)
        check_peak_rss(srv)
        served(bystander)
        cu.check_serving(srv)
        cu.finish_clean(bystander)


def test_unbounded_allocation_in_a_timer_hits_the_cap():
    with cu.server(RUNAWAY, "--static", "none", "--lua-memory", str(LUA_MEMORY)) as srv:
        c = srv.connect()
        mark = srv.mark()
        c.send_text("timer-hog")
        assert c.recv_message() == (OP_TEXT, b"timer set")
        srv.wait_for_log("timer callback hogging", after=mark)
        srv.wait_for_log(r" ERROR ", 60, after=mark)
        check_peak_rss(srv)
        served(c)
        cu.check_serving(srv)
        cu.finish_clean(c)


def vm_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


RSS_SLACK_KIB = 16 << 10
RSS_CASES = {
    # stopped by the time limit (the cap far away) / by the cap (the time limit far away)
    "time-limit": (["--handler-timeout", "2", "--lua-memory", "4G"], "handler timeout"),
    "memory-cap": (["--handler-timeout", "60", "--lua-memory", "64M"], "not enough memory"),
}


def lua_heap_kib(c):
    c.send_text("heap")
    kind, data = c.recv_message(GUARD)
    return int(data.split()[1])


@pytest.mark.parametrize("case", sorted(RSS_CASES))
def test_memory_goes_back_after_a_runaway_allocation_fails(case):
    """The Lua heap is collected at once after the failure, and (glibc's malloc_trim) the
    process gives the pages back. ASan keeps freed memory in its quarantine, so there only the
    Lua heap is checked."""
    args, message = RSS_CASES[case]
    with cu.server(RUNAWAY, "--static", "none", *args) as srv:
        pid = srv.proc.pid
        bystander = srv.connect()
        served(bystander)
        before = vm_kib(pid, "VmRSS")
        heap_before = lua_heap_kib(bystander)
        mark = srv.mark()
        with srv.connect() as bad:
            bad.send_text("hog-table")  # appends strings to a table until stopped
            cu.expect_fail(bad, 1011, 60)
        srv.wait_for_log(rf"Lua error in on_message .*{message}", 60, after=mark)
        # No collection has to happen for this: the full one after the failed call did it (the
        # string table, grown to hold millions of strings, shrinks by half per collection: a
        # few MB stay for now).
        assert lua_heap_kib(bystander) <= heap_before + RSS_SLACK_KIB
        if cu.is_sanitized():
            cu.finish_clean(bystander)
            return
        grown = vm_kib(pid, "VmHWM") - before
        assert grown > 2 * RSS_SLACK_KIB, f"the handler grew RSS by {grown} KiB only"
        deadline = time.monotonic() + 10
        while True:
            rss = vm_kib(pid, "VmRSS")
            if rss <= before + RSS_SLACK_KIB:
                break
            assert time.monotonic() < deadline, \
                f"RSS {rss} KiB, {rss - before} KiB above {before} KiB before the handler " \
                f"(peak +{grown} KiB)"
            time.sleep(0.1)
        served(bystander)
        cu.finish_clean(bystander)


# --- hostile scripts: scripts/chunk.lua runs what a client sends ---------------------------

def run_chunk(srv, chunk, expect="fail", timeout=GUARD):
    """Send a chunk on a fresh connection: "fail" expects close 1011 (data first allowed),
    "done" the reply "done". A bystander is served meanwhile and afterwards."""
    bystander = srv.connect()
    with srv.connect() as c:
        c.send_text(chunk)
        served(bystander)
        if expect == "done":
            assert c.recv_text(timeout) == "done"
            cu.finish_clean(c)
        else:
            code, _ = c.expect_close(timeout, skip_data=True)
            assert code == 1011, f"closed with {code}"
    served(bystander, "after")
    cu.finish_clean(bystander)


HOSTILE_STOPPED = {
    # __close handlers of the abandoned call run under a time limit of their own
    "close-loops-after-loop": "local x <close> = setmetatable({}, {__close = function() "
                              "while true do end end}); while true do end",
    "close-loops-after-error": "local x <close> = setmetatable({}, {__close = function() "
                               "while true do end end}); error('boom')",
    # the stop raised where Lua cannot yield: the thread's hooks must come back for __close
    "close-loops-after-sort": "local x <close> = setmetatable({}, {__close = function() "
                              "while true do end end}); "
                              "table.sort({3, 2, 1}, function() while true do end end)",
    # an error whose __tostring never returns, describing it for the log
    "tostring-loops": "error(setmetatable({}, {__tostring = function() while true do end end}))",
    # Lua runs a message handler for an error the hook raised with hooks off
    "xpcall-handler-loops": "xpcall(error, function() while true do end end)",
    "xpcall-both-loop": "xpcall(function() while true do end end, "
                        "function() while true do end end)",
    # clearing hooks in a loop, or a hook function that loops (Lua runs it with hooks off)
    "sethook-clears": "while true do debug.sethook() end",
    "sethook-loops": "debug.sethook(function() while true do end end, 'l'); local x = 1",
    # closing a coroutine whose __close never returns
    "coroutine-close-loops": "local co = coroutine.create(function() local x <close> = "
                             "setmetatable({}, {__close = function() while true do end end}); "
                             "coroutine.yield() end); coroutine.resume(co); coroutine.close(co)",
    "yield-at-top": "coroutine.yield(1, 2)",
    # Lua's own functions are out of reach: its resume (which the time limit would not follow)
    # and its sethook (which would clear the hook) are no upvalues of the replacements
    "lua-resume": "local _, raw = debug.getupvalue(coroutine.resume, 1) "
                  "raw(coroutine.create(function() while true do end end))",
    "lua-sethook": "local _, raw = debug.getupvalue(debug.sethook, 1) while true do raw() end",
    "close-running": "coroutine.close(coroutine.running())",
    # the debug library's writes reach only the script's own values: the registry (whose
    # threads are the runners), a C function's locals and upvalues, a userdata's metatable and
    # user value are the server's, and a wrong value there would crash it
    "getregistry": "local r = debug.getregistry() for k, v in pairs(r) do "
                   "if type(v) == 'thread' then r[k] = nil end end collectgarbage()",
    "setupvalue-c": "debug.setupvalue(ws.connections(), 1, 42)",
    "setmetatable-userdata": "debug.setmetatable(ws.timer(1, print), {})",
    # a conn is a table, whose metatable the script may change: the server's functions check
    # what they are given all the same (a timer's method on a conn, a conn's on a forged table)
    "conn-as-timer": "debug.setmetatable(conn, debug.getmetatable(ws.timer(1, print))) "
                     "conn:stop()",
    "forged-conn": "local send = conn.send send(setmetatable({1e9}, "
                   "debug.getmetatable(conn)), 'x') send({}, 'x')",
    "setuservalue": "debug.setuservalue(conn, 42, 1)",
    "deep-recursion": "local function f() return f() + 1 end f()",
    "c-stack-recursion": "local function f() coroutine.wrap(f)() end f()",
    "huge-rep": "local s = string.rep('x', 1 << 40)",
    "rep-over-cap": "local s = string.rep('x', 1e9)",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_STOPPED))
def test_hostile_chunk_is_stopped_and_the_server_goes_on(name):
    with cu.server(CHUNK, "--static", "none", "--handler-timeout", LIMIT) as srv:
        mark = srv.mark()
        run_chunk(srv, HOSTILE_STOPPED[name])
        srv.wait_for_log(r"ERROR Lua error in on_message", after=mark)
        # the same runner serves the next call, its time limit intact (only it ends this one)
        run_chunk(srv, "while true do end")


def test_replaced_functions_keep_no_original():
    with cu.server(CHUNK, "--static", "none") as srv:
        run_chunk(srv, "for _, f in ipairs({coroutine.resume, coroutine.wrap, coroutine.close, "
                       "coroutine.yield, coroutine.isyieldable, coroutine.running, pcall, xpcall, "
                       "debug.sethook, debug.getregistry, debug.setuservalue, debug.setlocal, "
                       "debug.setupvalue, debug.setmetatable, debug.getinfo, os.exit}) do "
                       "assert(debug.getupvalue(f, 1) == nil) end",
                  expect="done")


@pytest.mark.parametrize("args,status", [("7", 7), ("false", 1), ("", 0), ("true, true", 0)])
def test_os_exit_ends_the_process_at_once_and_says_so(args, status):
    # As in Lua (and Node's process.exit): no close frame, no on_close; but never silently.
    srv = cu.start_server(CHUNK, "--static", "none")
    with srv:
        c = srv.connect()
        mark = srv.mark()
        c.send_text(f"os.exit({args})")
        rc = srv.wait_exit(GUARD)
        assert rc == status, f"exit status {rc}"
        shown = args.split(",")[0] if args else ""
        srv.wait_for_log(rf"WARN os\.exit\({shown}\) called by the script: the process ends "
                         r"now, without closing its connections$", after=mark)
        assert not srv.find_logs(r"on_close id=", after=mark)


def test_debug_getinfo_hands_out_no_c_function_of_a_frame():
    # A C frame's function may be one of the server's bodies, which trust their argument:
    # debug.getinfo leaves it out; everything else of it, and of Lua frames, is as in Lua.
    with cu.server(CHUNK, "--static", "none") as srv:
        run_chunk(srv, "local c, lua = 0, 0 assert(pcall(function() for l = 1, 30 do "
                       "local i = debug.getinfo(l, 'Sf') "
                       "if i and i.what == 'C' then c = c + 1 assert(i.func == nil) "
                       "elseif i then lua = lua + 1 assert(type(i.func) == 'function') end end "
                       "end)) assert(c > 0 and lua > 0) "
                       "assert(debug.getinfo(print).func == print) "
                       "assert(debug.getinfo(coroutine.running(), 1, 'f').func) "
                       "local x = 1 debug.setlocal(1, 1, 2) "
                       "local function f() return x end debug.setupvalue(f, 1, 3) "
                       "assert(debug.setmetatable(7, nil) == 7)",
                  expect="done")


def test_time_limit_survives_a_stop_raised_where_lua_cannot_yield():
    # An error the hook raises leaves Lua's hooks off on the thread until a pcall catches it;
    # the runner that served the call must still be stoppable afterwards.
    with cu.server(CHUNK, "--static", "none", "--handler-timeout", LIMIT) as srv:
        for _ in range(2):
            run_chunk(srv, "table.sort({3, 2, 1}, function() while true do end end)")
            run_chunk(srv, "while true do end")


def test_close_handler_closing_the_connection_during_a_failure():
    # A __close that closes the connection while the failed call is being cleaned up: on_close
    # must run normally (on a runner of its own), exactly once.
    with cu.server(CHUNK, "--static", "none", "--handler-timeout", LIMIT) as srv:
        c = srv.connect()
        cid = int(srv.wait_for_log(r"on_open id=(\d+)").group(1))
        mark = srv.mark()
        c.send_text("local x <close> = setmetatable({}, {__close = function() "
                    "conn:close(4000, 'from __close') end}); error('boom')")
        code, reason = c.expect_close(GUARD)
        assert (code, reason) == (4000, "from __close")
        srv.wait_for_log(rf"on_close id={cid} code=4000", after=mark)
        assert not srv.find_logs(r"Lua error in on_close", after=mark)
        assert len(srv.find_logs(rf"on_close id={cid} ", after=mark)) == 1
        c.close(4000)
        cu.check_serving(srv)


def test_on_error_never_gets_an_older_error():
    # A value whose __tostring fails cannot be described for the log; on_error must still get
    # that value, not the previous failure's (another client's) error.
    with cu.server(CHUNK, "--static", "none", "--handler-timeout", LIMIT,
                   env={"WSLUAD_TEST_ON_ERROR": "1"}) as srv:
        a = srv.connect()
        a_id = int(srv.wait_for_log(r"on_open id=(\d+)").group(1))
        a.send_text("error({code = 'secret of a'})")
        srv.wait_for_log(rf"on_error id={a_id} type=table code=secret of a")
        mark = srv.mark()
        b = srv.connect()
        b_id = int(srv.wait_for_log(r"on_open id=(\d+)", after=mark).group(1))
        b.send_text("error(setmetatable({code = 'of b'}, {__tostring = function() "
                    "error('no words') end}))")
        m = srv.wait_for_log(rf"on_error id={b_id} type=(\S+) code=(.*) traceback=(.*)$",
                             after=mark)
        assert m.group(1, 2, 3) == ("table", "of b", "stack traceback"), m.group(0)
        srv.wait_for_log(r"Lua error in on_message .*\(error object is a table value whose "
                         r"__tostring failed\)", after=mark)
        cu.finish_clean(a)
        cu.finish_clean(b)


def test_nested_call_at_the_memory_cap_does_not_abort():
    # Memory filled to the cap, then conn:close(), whose on_close is the first call at depth 1:
    # making a thread for it fails, which must be an error, not an abort (a Lua panic).
    with cu.server(CHUNK, "--static", "none", "--lua-memory", "16M") as srv:
        c = srv.connect()
        mark = srv.mark()
        c.send_text("local head "
                    "for _, size in ipairs({1 << 20, 1 << 16, 1 << 12, 256, 16}) do "
                    "  pcall(function() while true do head = {string.rep('x', size), head} end "
                    "  end) "
                    "end "
                    "conn:close(4001) head = nil")
        assert c.expect_close(GUARD, skip_data=True)[0] == 4001
        c.close(4001)
        srv.wait_for_log(r"Lua error in on_close: not enough memory", after=mark)
        cu.check_serving(srv)  # the memory came back with the chunk's end


def test_hostile_upgrade_hooks_answer_500():
    with cu.server(CHUNK, "--static", "none", "--handler-timeout", LIMIT) as srv:
        for chunk in ["coroutine.yield()", "while true do pcall(function() while true do end end) end",
                      "coroutine.wrap(function() while true do end end)()",
                      # on_upgrade runs under a C function whose first value is a pointer it
                      # trusts: it cannot be changed, given a metatable, or called anew
                      "for l = 1, 30 do local i = debug.getinfo(l, 'S') if i and i.what == 'C' then "
                      "debug.setlocal(l, 1, 42) break end end",
                      "for l = 1, 30 do local i = debug.getinfo(l, 'S') if i and i.what == 'C' then "
                      "debug.setmetatable(select(2, debug.getlocal(l, 1)), {}) break end end",
                      "for l = 1, 30 do local f = (debug.getinfo(l, 'f') or {}).func "
                      "if f and debug.getinfo(f, 'S').what == 'C' then f(nil) end end "
                      "error('no C function was handed out')"]:
            path = "/upgrade/" + urllib.parse.quote(chunk, safe="")
            with pytest.raises(wsclient.HandshakeError) as e:
                srv.connect(path=path, timeout=GUARD)
            assert e.value.status == 500, chunk
        cu.check_serving(srv)


def test_strict_globals_do_not_break_the_server():
    # A common idiom: an __index on _G that raises for undefined globals. Handlers the script
    # leaves out are not errors, and the server never trips on it (it used to abort).
    with cu.server(CHUNK, "--static", "none") as srv:
        c = srv.connect()
        c.send_text("setmetatable(_G, {__index = function(_, k) error('undefined global ' .. "
                    "tostring(k), 2) end})")
        assert c.recv_text() == "done"
        d = srv.connect()  # on_upgrade and on_open are defined, on_drain and on_error are not
        d.send_text("conn:send('hello')")
        assert d.recv_text() == "hello"
        assert d.recv_text() == "done"
        d.send_text("error('boom')")  # no on_error: 1011, and no abort looking for it
        assert d.expect_close(GUARD)[0] == 1011
        d.close(1011)
        cu.finish_clean(c)


# --- what the hook cannot reach ends the process ---------------------------------------------

UNSTOPPABLE = {
    # Lua runs finalizers with hooks off
    "gc-loops": "setmetatable({}, {__gc = function() while true do end end}); "
                "collectgarbage()",
    # a pattern match that would take ages, all in C
    "c-pattern": "string.find(string.rep('a', 50000), '.-.-.-.-b')",
}


@pytest.mark.parametrize("name", sorted(UNSTOPPABLE))
def test_code_the_time_limit_cannot_reach_ends_the_process(name):
    # Told to stop, it does not come back to Lua within its grace: the server is stuck for good,
    # so it ends as a watchdog would end it (the supervisor or systemd starts it again).
    srv = cu.start_server(CHUNK, "--static", "none", "--handler-timeout", LIMIT)
    with srv:
        c = srv.connect()
        mark = srv.mark()
        c.send_text("ws.log('about to block'); " + UNSTOPPABLE[name])
        srv.wait_for_log("about to block", after=mark)
        rc = srv.wait_exit(GUARD)
        assert rc == -signal.SIGABRT, f"exit status {rc}"
        # While it lasted, the log said so; then why the process ends.
        warned, _ = srv.wait_for_line(r"Z WARN a Lua call over its time limit is stuck where it "
                                      r"cannot be stopped .*the process ends unless it comes back$",
                                      after=mark)
        ended, _ = srv.wait_for_line(r"Z ERROR Lua code that cannot be stopped .* exiting$",
                                     after=mark)
        assert warned < ended


def test_call_back_from_c_within_its_grace_fails_and_says_why():
    # Blocked in C past its limit but back within the grace: the process goes on, the call
    # fails as timed out, and its traceback says why it shows no Lua frame.
    srv = cu.start_server(CHUNK, "--static", "none", "--handler-timeout", "2")
    with srv:
        bystander = srv.connect()
        c = srv.connect()
        mark = srv.mark()
        c.send_text("os.execute('sleep 3')")
        srv.wait_for_log(r"Z WARN a Lua call over its time limit is stuck", after=mark)
        i, _ = srv.wait_for_line(r" ERROR Lua error in on_message \(conn#\d+ [^)]*\): handler "
                                 r"timeout: still running after 2 s", GUARD, after=mark)
        srv.wait_for_line(r"^\t\(none: the call had returned when its stop took effect; its "
                          r"time ran out in C code or a finalizer\)$", GUARD, after=i)
        assert c.expect_close(GUARD, skip_data=True)[0] == 1011
        c.close(1011)
        served(bystander)
        cu.finish_clean(bystander)


@pytest.mark.parametrize("name", sorted(UNSTOPPABLE))
def test_sigterm_ends_code_the_time_limit_cannot_reach(name):
    # No time limit: only the signal tells it to stop.
    srv = cu.start_server(CHUNK, "--static", "none", "--handler-timeout", "0")
    with srv:
        bystander = srv.connect()
        c = srv.connect()
        mark = srv.mark()
        c.send_text("ws.log('about to block'); " + UNSTOPPABLE[name])
        srv.wait_for_log("about to block", after=mark)
        bystander.send_text("return")
        assert cu.nothing_arrives(bystander, 1.0), "the call was not stuck"
        start = time.monotonic()
        srv.signal(signal.SIGTERM)
        rc = srv.wait_exit(GUARD)
        took = time.monotonic() - start
        assert rc == -signal.SIGTERM, f"exit status {rc}"
        assert took < 4, f"exit {took:.1f}s after SIGTERM"
        srv.wait_for_log(r"Z ERROR Lua code that cannot be stopped .* exiting$")


def test_sigterm_ends_a_finalizer_looping_at_exit():
    # A global with a __gc that never returns: lua_close runs it at exit.
    srv = cu.start_server(CHUNK, "--static", "none", "--handler-timeout", LIMIT)
    with srv:
        c = srv.connect()
        c.send_text("_G.keep = setmetatable({}, {__gc = function() while true do end end})")
        assert c.recv_text() == "done"
        start = time.monotonic()
        srv.signal(signal.SIGTERM)
        assert c.expect_close(GUARD)[0] == 1001
        c.close(1001)
        rc = srv.wait_exit(GUARD)
        took = time.monotonic() - start
        assert rc == -signal.SIGTERM, f"exit status {rc}"
        assert took < 5, f"exit {took:.1f}s after SIGTERM"
        srv.wait_for_log(r"Z ERROR Lua code that cannot be stopped .* exiting$")
