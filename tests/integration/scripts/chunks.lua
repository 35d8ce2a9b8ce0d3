-- Shared by probe.lua and cluster.lua: on_message runs every text message as a Lua chunk (named
-- `name` in tracebacks) with `conn` (the sender) and `S` (a table shared by all chunks) in
-- scope, and answers "ok " and the results (tostring, tab-separated) or "err " and the error.
-- Binary messages are echoed.
return function(name, S)
  return function(conn, data, kind)
    if kind == "binary" then
      conn:send(data, "binary")
      return
    end
    local env = setmetatable({ conn = conn, S = S }, { __index = _G })
    local fn, err = load(data, name, "t", env)
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
end
