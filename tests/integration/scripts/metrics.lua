-- Test script for test_metrics.py. Each text message is a Lua chunk run with `conn` in scope;
-- its results come back as one text message "ok <results, tab-separated>". Unlike probe.lua no
-- pcall surrounds the chunk: one that raises (or runs past --handler-timeout) makes on_message
-- fail, which is what the handler metrics count. Upgrades to /refuse are refused with 403.
hits = ws.metric.counter("test_chunks_total", "Chunks run, by the first word of their text.",
  { "word" })
online = ws.metric.gauge("test_online", "Connections open now, as the script counts them.")

function on_upgrade(req)
  if req.path == "/refuse" then return false, 403, "refused for the test" end
end

function on_open(conn)
  online:inc()
end

function on_close(conn, code)
  online:dec()
end

function on_message(conn, data, kind)
  if kind == "binary" then
    conn:send(data, "binary")
    return
  end
  hits:inc(data:match("^%a*"))
  local env = setmetatable({ conn = conn }, { __index = _G })
  local fn = assert(load(data, "=chunk", "t", env))
  local r = table.pack(fn(conn))
  local out = {}
  for i = 1, r.n do
    out[#out + 1] = tostring(r[i])
  end
  conn:send("ok " .. table.concat(out, "\t"))
end
