-- Test script: echoes every message with its kind; logs every on_open/on_close so tests can
-- wait for them.
function on_open(conn)
  ws.log(string.format("on_open id=%d remote=%s", conn.id, conn.remote))
end

function on_message(conn, data, kind)
  conn:send(data, kind)
end

function on_close(conn, code, reason)
  ws.log(string.format("on_close id=%d code=%d reason=[%s]", conn.id, code, reason))
end
