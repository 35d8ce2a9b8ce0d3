-- Test script for test_storm_found.py: a handler already over its time limit (the alarm came
-- while it was blocked in C) spawns a function that starts to wait at once, before the time
-- limit's hook stops it; the wait ends later, when the stopped function has been collected.
function on_message(conn, data)
  os.execute("sleep 0.3") -- blocked in C past --handler-timeout: stopped only back in Lua
  ws.spawn(function()
    ws.sleep(0.1)
    ws.log("woke up after the stop")
  end)
end

function on_open(conn)
  conn:send("ready")
end

function on_close()
  ws.timer(0.05, function()
    collectgarbage()
    collectgarbage()
    ws.timer(0.2, function() ws.log("after the wait") end)
  end)
end
