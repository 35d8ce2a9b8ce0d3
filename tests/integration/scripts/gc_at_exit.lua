-- Test script for test_storm_found.py: a finalizer that runs only when the server exits (as the
-- Lua state closes) calls what needs the event loop, which has ended by then: GC_CALL names
-- what. Each call says in the log how it went.
local calls = {
  timer = function() ws.log("at exit: timer", pcall(ws.timer, 0, function() end)) end,
  every = function() ws.log("at exit: every", pcall(ws.every, 1, function() end)) end,
  sleep = function()
    ws.spawn(function() ws.log("at exit: sleep", pcall(ws.sleep, 0)) end)
  end,
}
local call = assert(calls[os.getenv("GC_CALL")])
gc_at_exit = setmetatable({}, { __gc = call })
