-- Test script for test_storm_found.py: a handler runs four levels deep before any has run one
-- level deep. A function ws.spawn runs takes a level of nesting without a thread of the
-- server's, so the on_close that conn:close runs from the third of three nested ones (inside
-- on_open) is four levels deep; later, on_message closing its connection runs on_close one
-- level deep.
function on_open(conn)
  if conn.path == "/close-from-spawn" then
    ws.spawn(ws.spawn, ws.spawn, function() conn:close(4000, "from a spawned function") end)
  end
end

function on_message(conn)
  conn:close(4001, "from on_message")
end

function on_close(conn, code)
  ws.log("on_close", code)
end
