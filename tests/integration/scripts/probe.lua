-- Test script: every text message is a Lua chunk, run with `conn` (the sender) and `S` (a table
-- shared by all chunks) in scope. The reply is one text message: "ok " followed by the results
-- (tostring, tab-separated), or "err " followed by the error. Binary messages are echoed.
S = {}
seen = {} -- conn -> id, filled by on_open: checks that the same object comes back

function on_open(conn)
  seen[conn] = conn.id
  ws.log(string.format("on_open id=%d path=%s remote=%s", conn.id, conn.path, conn.remote))
end

on_message = require("chunks")("=probe", S)

function on_close(conn, code, reason)
  ws.log(string.format("on_close id=%d code=%d reason=[%s] open=%s same=%s", conn.id, code,
    reason, tostring(conn:is_open()), tostring(seen[conn] == conn.id)))
end
