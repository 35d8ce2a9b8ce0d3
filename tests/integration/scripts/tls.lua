-- Test script for TLS (tests/integration/test_tls.py): echoes, and says whether a connection or
-- a request came over TLS. Messages: "secure?" answers "secure=true|false"; "chat: ..." goes
-- to everyone else; "big N" answers N bytes; anything else comes back as it was.
ws.log("options listen=" .. ws.options.listen .. " tls_listen=" .. ws.options.tls_listen)

function on_open(conn)
  ws.log(string.format("on_open id=%d secure=%s remote=%s", conn.id, tostring(conn.secure),
                       conn.remote))
end

function on_message(conn, data, kind)
  if data == "secure?" then
    conn:send("secure=" .. tostring(conn.secure))
  elseif data:sub(1, 6) == "chat: " then
    ws.broadcast(data, kind, conn)
  elseif data:sub(1, 4) == "big " then
    conn:send(string.rep("b", tonumber(data:sub(5))), "binary")
  elseif data == "close me" then
    conn:close(4001, "as asked")
  else
    conn:send(data, kind)
  end
end

function on_close(conn, code)
  ws.log(string.format("on_close id=%d code=%d", conn.id, code))
end

function on_request(req)
  if req.path == "/secure" then return 200, "secure=" .. tostring(req.secure) end
  if req.path == "/echo" then return 200, req.body end
end
