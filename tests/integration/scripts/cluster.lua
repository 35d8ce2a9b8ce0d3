-- Test script for a cluster (test_cluster.py). A connection is first greeted with
-- "hello id=<conn.id> node=<ws.node> pid=<pid>", so a test knows which node and process serves
-- it. Then, as in probe.lua, every text message is a Lua chunk run with `conn` (the sender) and
-- `S` (a table shared by the chunks of this node) in scope, answered with one text message:
-- "ok " and the results (tab-separated), or "err " and the error. Binary messages are echoed.
-- show(v) renders any value unambiguously (the replies of ws.redis); on_error tells the client
-- "on_error <err>". Tests publish payloads that never start with "ok " or "err ".
local f = assert(io.open("/proc/self/stat"))
local pid = math.tointeger(f:read("n"))
f:close()

S = {}

-- "nil", "true", "i42" (integer), "f1.5" (float), a string in %q quotes, tables as {a,b,k=v}
-- with the array part first (up to the highest integer key) and the other keys sorted.
function show(v)
  local t = type(v)
  if t == "number" then
    return (math.type(v) == "integer" and "i" or "f") .. tostring(v)
  elseif t == "string" then
    return (string.format("%q", v):gsub("\\\n", "\\n"))
  elseif t == "table" then
    local n = 0
    for k in pairs(v) do
      if math.type(k) == "integer" and k > n then n = k end
    end
    local out, keys = {}, {}
    for i = 1, n do out[#out + 1] = show(v[i]) end
    for k in pairs(v) do
      if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
    end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do out[#out + 1] = tostring(k) .. "=" .. show(v[k]) end
    return "{" .. table.concat(out, ",") .. "}"
  end
  return tostring(v)
end

-- show() of every argument, space-separated (n counts trailing nils).
function shows(...)
  local a, out = table.pack(...), {}
  for i = 1, a.n do out[i] = show(a[i]) end
  return table.concat(out, " ")
end

-- Wall-clock busy loop: a stretch of running code of about `secs` seconds.
function busy(secs)
  local t = ws.now() + secs
  while ws.now() < t do end
end

function on_open(conn)
  conn:send(string.format("hello id=%d node=%d pid=%d", conn.id, ws.node, pid))
  ws.log(string.format("on_open id=%d node=%d remote=%s", conn.id, ws.node, conn.remote))
end

on_message = require("chunks")("=chunk", S)

function on_close(conn, code)
  ws.log(string.format("on_close id=%d code=%d", conn.id, code))
end

function on_error(conn, err)
  ws.log("on_error id=" .. conn.id .. " " .. tostring(err))
  conn:send("on_error " .. tostring(err))
end
