-- Test script for test_stopping.py: "spin" (a message, or a plain request for /spin) starts a
-- loop that never ends (run with
-- --handler-timeout 0, so that only the shutdown stops it). Every handler logs what
-- ws.stopping() says; on_close tells the others who left. With STOPPING_ON_ERROR set in the
-- environment the script has an on_error (which leaves the connection open).
function on_open(conn)
  ws.log("on_open id=" .. conn.id .. " remote=" .. conn.remote)
end

function on_message(conn, data)
  ws.log("on_message id=" .. conn.id .. " data=" .. data .. " stopping=" .. tostring(ws.stopping()))
  if data == "spin" then while true do end end
end

function on_close(conn, code)
  ws.log("on_close id=" .. conn.id .. " code=" .. code .. " stopping=" .. tostring(ws.stopping()))
  ws.broadcast(conn.id .. " left")
end

function on_request(req)
  ws.log("on_request " .. req.path .. " stopping=" .. tostring(ws.stopping()))
  if req.path == "/spin" then while true do end end
end

if os.getenv("STOPPING_ON_ERROR") then
  function on_error(conn, err)
    ws.log("on_error id=" .. conn.id .. " stopping=" .. tostring(ws.stopping()) .. " err=" .. err)
  end
end
