-- Test script: does not compile.
function on_message(conn, data
  conn:send(data)
end
