-- Test script: loads fine and does nothing.
function on_message(conn, data, kind)
  conn:send(data, kind)
end
