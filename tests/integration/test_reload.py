"""Live reload: SIGHUP and --reload swap the handlers without dropping anyone; conn.data,
subscriptions and globals survive; timers are stopped and re-created by the new top level; a
script that fails to compile or whose top level raises leaves the old behaviour in place. The
handlers are the globals as they stand once the top level ran: assigned later, seen at the next
reload."""

import os
import re
import signal

import pytest

from harness import Server, run

VERSION = r'''
-- reload test script, {v}
version = "{v}"
count = count or 0 -- survives reloads: the new code does not reassign it

function on_open(conn)
  conn.data.name = "c" .. conn.id
  conn:subscribe("all")
  ws.log("on_open id=" .. conn.id .. " " .. version)
end

function on_message(conn, data)
  count = count + 1
  if data == "pub" then
    conn:send("pub " .. ws.publish("all", version .. " published", "text", conn))
  elseif data == "count" then
    conn:send(version .. " count=" .. ws.count() .. " subs=" .. ws.subscribers("all"))
  else
    conn:send("{v}:" .. tostring(conn.data.name) .. ":" .. data .. ":" .. count)
  end
end

ws.every(0.02, function() ws.log("tick {v}") end)
'''

SYNTAX_ERROR = "function on_message(conn, data\n  conn:send('v-broken')\nend\n"
TOPLEVEL_ERROR = ('function on_message(conn, data) conn:send("v-raised:" .. data) end\n'
                  'ws.every(0.02, function() ws.log("tick v-raised") end)\n'
                  'error("the new top level raises")\n')


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def reload_rx(path):
    name = re.escape(os.path.basename(path))
    return rf"(?i)reload.*{name}|{name}.*reload"


def hup(s, script=None, text=None):
    """Rewrite the script with text (when given) and send SIGHUP: the log mark from before."""
    if text is not None:
        write(script, text)
    mark = s.mark()
    s.signal(signal.SIGHUP)
    return mark


def say(c, text):
    c.send_frame(1, text)
    return c.recv_text()


@pytest.fixture
def script(tmp_path):
    p = tmp_path / "room.lua"
    write(p, VERSION.format(v="v1"))
    return str(p)


def test_sighup_reload_with_50_clients(script):
    with Server(script) as s:
        clients = [s.connect() for _ in range(50)]
        ids = [int(m.group(1)) for m in s.wait_for_logs(r"on_open id=(\d+) v1", 50)]
        names = {}
        for c in clients:
            reply = say(c, "before")
            assert reply.startswith("v1:c") and ":before:" in reply
            names[c] = reply.split(":")[1]
        assert sorted(int(n[1:]) for n in names.values()) == sorted(ids)
        s.wait_for_log(r"tick v1")

        mark = hup(s, script, VERSION.format(v="v2"))
        i, m = s.wait_for_line(reload_rx(script), after=mark)
        assert not re.search(r" (ERROR|WARN) ", m.string), m.string

        # Everyone is still there and served by the new code with its old conn.data; the
        # global counter kept its value (50 messages so far).
        for n, c in enumerate(clients):
            assert say(c, "after") == f"v2:{names[c]}:after:{51 + n}"
        assert say(clients[0], "count") == "v2 count=50 subs=50"
        # Subscriptions survived: a publish reaches the 49 others.
        assert say(clients[7], "pub") == "pub 49"
        for n, c in enumerate(clients):
            if n != 7:
                assert c.recv_text() == "v2 published"
        # The old timer was stopped; the new top level started its own.
        s.wait_for_logs(r"tick v2", 3, after=i)
        assert not s.find_logs(r"tick v1", after=i + 1)
        # New connections get the new on_open.
        mark = s.mark()
        late = s.connect()
        s.wait_for_log(r"on_open id=\d+ v2", after=mark)
        assert say(late, "x").startswith("v2:c")
        assert not s.find_logs(r"on_close")


def test_reload_syntax_error_keeps_old_behaviour(script):
    with Server(script) as s:
        c = s.connect()
        assert say(c, "a").startswith("v1:")
        mark = hup(s, script, SYNTAX_ERROR)
        i, m = s.wait_for_line(r"ERROR.*room\.lua", after=mark)
        assert say(c, "b").startswith("v1:")
        # Fixed again, the next reload takes.
        mark = hup(s, script, VERSION.format(v="v2"))
        s.wait_for_line(reload_rx(script), after=mark)
        s.wait_for_log(r"tick v2", after=mark)
        assert say(c, "c").startswith("v2:")


def test_reload_syntax_error_keeps_old_timers(script):
    with Server(script) as s:
        s.wait_for_log(r"tick v1")
        mark = hup(s, script, SYNTAX_ERROR)
        i, _ = s.wait_for_line(r"ERROR.*room\.lua", after=mark)
        s.wait_for_logs(r"tick v1", 2, after=i)


def test_reload_toplevel_error_keeps_old_handlers(script):
    with Server(script) as s:
        c = s.connect()
        assert say(c, "a").startswith("v1:")
        mark = hup(s, script, TOPLEVEL_ERROR)
        i, _ = s.wait_for_line(r"ERROR.*the new top level raises", after=mark)
        # The new top level defined on_message before raising: the old one must still serve.
        assert say(c, "b").startswith("v1:")


TOPLEVEL_ERROR_AFTER_SPAWN = (
    'ws.spawn(function() while true do ws.log("spawned v-raised") ws.sleep(0.02) end end)\n'
    'ws.spawn(function() local t <close> = setmetatable({}, {__close = function()\n'
    '  ws.log("closed v-raised") end}) ws.sleep(3600) end)\n'
    'error("the new top level raises")\n')


def test_reload_toplevel_error_cancels_what_it_spawned(script):
    # A failed reload changes nothing: like its timers, the functions its top level started
    # with ws.spawn must not go on (they would run once more after every failed reload).
    with Server(script) as s:
        s.wait_for_log(r"tick v1")
        mark = hup(s, script, TOPLEVEL_ERROR_AFTER_SPAWN)
        i, _ = s.wait_for_line(r"ERROR.*the new top level raises", after=mark)
        # The waiting one is closed: its pending __close handlers run.
        s.wait_for_log(r"closed v-raised", after=mark)
        # Five ticks of the old timer (100 ms) cover five wake-ups of the spawned loop.
        s.wait_for_logs(r"tick v1", 5, after=i)
        # Its first stretch ran before the error, and nothing after.
        assert len(s.find_logs(r"spawned v-raised", after=mark)) == 1


def test_reload_watch_in_place_write(script):
    with Server(script, "--reload") as s:
        c = s.connect()
        assert say(c, "a").startswith("v1:")
        mark = s.mark()
        write(script, VERSION.format(v="v2"))
        wait_for_version(s, c, "v2", mark, script)


def test_reload_watch_atomic_rename(script):
    # Editors often save by writing a new file and renaming it over the old one: the watch
    # must follow the name, and keep following it afterwards.
    with Server(script, "--reload") as s:
        c = s.connect()
        assert say(c, "a").startswith("v1:")
        for v in ("v2", "v3"):
            mark = s.mark()
            tmp = script + ".tmp"
            write(tmp, VERSION.format(v=v))
            os.replace(tmp, script)
            wait_for_version(s, c, v, mark, script)


def wait_for_version(s, c, v, mark, script):
    """After a change to the watched file, each reload line is an event: the behaviour must be
    the new one after one of them (a watcher may see the file change more than once)."""
    after = mark
    for _ in range(5):
        i, _ = s.wait_for_line(reload_rx(script), after=after)
        after = i + 1
        if say(c, "probe").startswith(f"{v}:"):
            return
    raise AssertionError(f"{v} never took over after 5 reloads")


LATE_HANDLER = r'''
-- The handlers are the globals as they stand once the top level has run (at load and at each
-- successful reload): a handler assigned later is seen at the next reload.
if not on_message then -- kept by a reload, so that what "swap" assigned survives it
  function on_message(conn, data)
    if data == "swap" then
      on_message = function(c, d) c:send("new:" .. d) end
      conn:send("swapped")
    else
      conn:send("old:" .. data)
    end
  end
end
'''


def test_handler_assigned_later_is_seen_at_the_next_reload(tmp_path):
    script = str(tmp_path / "late.lua")
    write(script, LATE_HANDLER)
    with Server(script) as s:
        c = s.connect()
        assert say(c, "a") == "old:a"
        assert say(c, "swap") == "swapped"
        # The global changed, the handler did not: it was taken when the script was loaded.
        assert say(c, "b") == "old:b"
        mark = hup(s)
        s.wait_for_line(reload_rx(script), after=mark)
        assert say(c, "c") == "new:c"


NOT_A_FUNCTION = ('function on_message(conn, data) conn:send("v-table:" .. data) end\n'
                  'on_close = {}  -- meant: a module of handlers\n')


def test_handler_that_is_not_a_function_fails_the_load(script, tmp_path):
    # A handler global that was neither nil nor a function (on_close = 5, a module's table)
    # was taken for "no handler" without a word: the script ran with its on_close missing. It
    # fails the load now, as an error at the top level does (false still means none).
    bad = tmp_path / "bad.lua"
    write(bad, "on_drain = false\non_close = 5\n")
    r = run("--check", str(bad))
    assert r.returncode == 1, r.stderr
    assert "on_close must be a function (or nil), got number" in r.stderr
    write(bad, "on_drain = false\n")
    assert run("--check", str(bad)).returncode == 0
    with Server(script) as s:
        c = s.connect()
        assert say(c, "a").startswith("v1:")
        mark = hup(s, script, NOT_A_FUNCTION)
        s.wait_for_line(r"ERROR.*on_close must be a function \(or nil\), got table", after=mark)
        s.wait_for_line(r"reload of .* failed: keeping the running handlers", after=mark)
        assert say(c, "b").startswith("v1:")
