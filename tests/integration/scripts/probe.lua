-- Test script: every text message is a Lua chunk, run with `conn` (the sender) and `S` (a table
-- shared by all chunks) in scope. The reply is one text message: "ok " followed by the results
-- (tostring, tab-separated), or "err " followed by the error. Binary messages are echoed.
S = {}
seen = {} -- conn -> id, filled by on_open: checks that the same object comes back

function on_open(conn)
  seen[conn] = conn.id
  ws.log(string.format("on_open id=%d path=%s remote=%s", conn.id, conn.path, conn.remote))
end

function on_message(conn, data, kind)
  if kind == "binary" then
    conn:send(data, "binary")
    return
  end
  local env = setmetatable({ conn = conn, S = S }, { __index = _G })
  local fn, err = load(data, "=probe", "t", env)
  if not fn then
    conn:send("err " .. err)
    return
  end
  local r = table.pack(pcall(fn, conn))
  if not r[1] then
    conn:send("err " .. tostring(r[2]))
    return
  end
  local out = {}
  for i = 2, r.n do
    out[#out + 1] = tostring(r[i])
  end
  conn:send("ok " .. table.concat(out, "\t"))
end

function on_close(conn, code, reason)
  ws.log(string.format("on_close id=%d code=%d reason=[%s] open=%s same=%s", conn.id, code,
    reason, tostring(conn:is_open()), tostring(seen[conn] == conn.id)))
end
