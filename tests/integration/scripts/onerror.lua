-- Test script: on_message raises; on_error reports the error to the log and to the client.
function on_message(conn, data)
  error("failed on " .. data)
end

function on_error(conn, err)
  ws.log("on_error id=" .. conn.id .. " err=" .. tostring(err))
  conn:send("handled: " .. tostring(err))
end
