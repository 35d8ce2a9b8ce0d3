-- Test script for test_shutdown.py: every message starts a loop that never ends (run with
-- --handler-timeout 0, so that only the shutdown can stop it).
function on_message(conn, data)
  ws.log("spinning on " .. data)
  while true do end
end
