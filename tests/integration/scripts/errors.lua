-- Test script: a chat room whose handlers raise on request ("boom" in on_message, path
-- /open-error in on_open, path /close-error in on_close). Everything else is relayed to the others.
function on_open(conn)
  ws.log(string.format("on_open id=%d", conn.id))
  if conn.path == "/open-error" then
    error("open exploded")
  end
end

function on_message(conn, data, kind)
  if data == "boom" then
    error("boom requested by " .. conn.id)
  end
  if data == "badarg" then
    conn:send({}) -- a bad argument is a Lua error like any other
  end
  ws.broadcast(data, kind, conn)
end

function on_close(conn, code, reason)
  ws.log(string.format("on_close id=%d code=%d", conn.id, code))
  if conn.path == "/close-error" then
    error("close exploded")
  end
end
