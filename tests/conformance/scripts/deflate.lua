-- permessage-deflate test target: echoes every message with its kind; logs conn.compressed at
-- open and close. "broadcast:TEXT" sends TEXT to every client, "publish:TEXT" to the subscribers
-- of "room" (every connection on the path /room subscribes), each compressed once for all.
function on_open(conn)
  ws.log(string.format("on_open id=%d compressed=%s", conn.id, tostring(conn.compressed)))
  if conn.path == "/room" then
    conn:subscribe("room")
  end
end

function on_message(conn, data, kind)
  local b = data:match("^broadcast:(.*)$")
  if b then
    ws.broadcast(b, kind)
    return
  end
  local p = data:match("^publish:(.*)$")
  if p then
    ws.publish("room", p, kind)
    return
  end
  conn:send(data, kind)
end

function on_close(conn, code)
  ws.log(string.format("on_close id=%d code=%d compressed=%s", conn.id, code,
    tostring(conn.compressed)))
end
