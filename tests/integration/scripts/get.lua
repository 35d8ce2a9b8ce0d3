-- ws.get test target: a message holding an id is answered with ws.get(id).id, or "nil".
function on_message(conn, data)
  local id = tonumber(data)
  local c = ws.get(id)
  conn:send(c and tostring(c.id) or "nil")
end
