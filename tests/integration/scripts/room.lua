-- Test script: one room. on_close tells everyone still there "<id> left" (by publish and by a
-- send to each member) and logs the code, ws.stopping() and how many sends got through.
members = {}

function on_open(conn)
  members[conn.id] = conn
  conn:subscribe("room")
  ws.log(string.format("on_open id=%d remote=%s", conn.id, conn.remote))
end

function on_message(conn, data)
  ws.publish("room", conn.id .. ": " .. data)
end

function on_close(conn, code, reason)
  members[conn.id] = nil
  local published = ws.publish("room", conn.id .. " left", "text", conn)
  local sent, failures = 0, {}
  for _, other in pairs(members) do
    local ok, msg, name = other:send(conn.id .. " left (direct)")
    if ok then
      sent = sent + 1
    else
      failures[#failures + 1] = tostring(msg) .. "/" .. tostring(name)
    end
  end
  -- (ws.stopping is looked up, not called blindly, so that a server without it still shows
  -- what its clients receive)
  local stopping = ws.stopping and ws.stopping()
  ws.log(string.format("on_close id=%d code=%d stopping=%s published=%d sent=%d failures=%s",
    conn.id, code, tostring(stopping), published, sent, table.concat(failures, ",")))
end
