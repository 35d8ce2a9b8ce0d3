-- Test script: compiles, but its top level raises.
function on_message(conn, data)
  conn:send(data)
end
error("top level refuses to load")
