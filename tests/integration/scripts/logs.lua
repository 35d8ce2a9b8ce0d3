-- Test script for test_logs.py: log lines of every kind. ws.log with and without a connection,
-- hostile bytes, an on_upgrade refusal, a handler error with a traceback, a timer error.
HOSTILE = 'q" b\\ nl\n cr\r tab\t nul\0 esc\27[31m del\127 bad'
  .. string.char(0xff, 0xc0, 0x80, 0xed, 0xa0, 0x80) .. " ls\u{2028} end"

function on_upgrade(req)
  if req.path == "/refuse" then return false, 401, "a token is required" end
end

function on_open(conn)
  ws.log(conn, "opened")
end

function on_message(conn, data)
  if data == "boom" then
    error("boom\nsecond line of the message")
  elseif data == "hostile" then
    ws.log.warn(HOSTILE)
    ws.log(conn, HOSTILE)
  elseif data == "timer" then
    ws.timer(0, function() error("timer exploded") end)
  elseif data == "debug" then
    ws.log.debug("a debug line")
  end
  conn:send(data)
end
