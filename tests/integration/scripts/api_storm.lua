-- Test script for test_api_storm.py: every event makes a few random calls from the whole script
-- API with random arguments (right and wrong types, nil, NaN, inf, huge numbers and strings,
-- connections that closed, timers that stopped, requests that were answered, functions that
-- raise or yield), keeping old objects in tables so that they outlive what they stand for.
-- The PRNG is seeded from STORM_SEED (the environment), so a failing run can be repeated.
-- GET /calm stops the storm, GET /storm starts it again; /echo connections echo and take no part
-- in it. Some reloads fail (the top level raises at its end).

storm = storm or { conns = {}, timers = {}, reqs = {}, upreqs = {}, cos = {}, metrics = {}, reloads = -1 }
storm.reloads = storm.reloads + 1
local S = storm
local seed = tonumber(os.getenv("STORM_SEED") or "1") or 1
math.randomseed(seed, S.reloads)
local R = math.random

local function pick(t)
  if #t == 0 then return nil end
  return t[R(#t)]
end

local function keep(t, v)
  if #t >= 40 then table.remove(t, R(#t)) end
  t[#t + 1] = v
end

local function size()
  local r = R(100)
  if r <= 50 then return R(0, 16) end
  if r <= 80 then return R(0, 200) end
  if r <= 95 then return R(0, 70000) end
  if r <= 99 then return R(0, 1100000) end
  -- (Not more: compressing a broadcast of 9 MB for two dozen clients blocks in C past the
  -- time limit's grace under ASan, which ends the process as documented.)
  return R(0, 3000000)
end

local function str()
  local r = R(6)
  if r == 1 then return "" end
  if r == 2 then return string.rep("\0\255", size() // 2) end
  if r == 3 then return "r" .. R(5) end
  if r == 4 then return string.rep("é", size() // 2) end
  return string.rep(string.char(R(0, 255)), size())
end

local bad_tostring = setmetatable({}, { __tostring = function() error("tostring broke") end })
local num_tostring = setmetatable({}, { __tostring = function() return 42 end })
local yields = function(...) return coroutine.yield(...) end
local raises = function() error({ code = R(100) }) end

local rv
local pool = {
  function() return nil end,
  function() return true end,
  function() return false end,
  function() return 0 end,
  function() return -1 end,
  function() return R(-5, 5000) end,
  function() return R(1000, 5000) end,
  function() return 1.5 end,
  function() return 0 / 0 end,
  function() return math.huge end,
  function() return -math.huge end,
  function() return math.maxinteger end,
  function() return math.mininteger end,
  function() return 2 ^ 63 end,
  function() return 1e308 end,
  function() return R() * 0.05 end,
  str, str, str,
  function() return "text" end,
  function() return "binary" end,
  function() return pick(S.conns) end,
  function() return pick(S.conns) end,
  function() return pick(S.timers) end,
  function() return pick(S.reqs) end,
  function() return pick(S.upreqs) end,
  function() return raises end,
  function() return yields end,
  function() return bad_tostring end,
  function() return num_tostring end,
  function() return pick(S.cos) end,
  function() return {} end,
  function() return { rv(), rv(), rv() } end,
  function() return { "SET", "storm:" .. R(5), str() } end,
  function() return { "GET", "storm:" .. R(5) } end,
  function() return { "BLPOP", "storm:none", R(0, 1) / 4 } end,
  function() return { "SUBSCRIBE", "x" } end,
  function() return { "DEBUG", "SLEEP", 0 } end,
  function() return { ["Set-Cookie"] = { "a=1", "b=2" }, ["X-R"] = str() } end,
  function() return { [str()] = rv() } end,
  function() return setmetatable({}, { __index = function() error("index") end }) end,
  function() return ws end,
  function() return print end,
}
rv = function() return pool[R(#pool)]() end

local function args(n)
  local t = {}
  for i = 1, R(0, n) do t[i] = rv() end
  return table.unpack(t, 1, n)
end

local function anyconn()
  if R(3) == 1 then
    local all = {}
    for c in ws.connections() do all[#all + 1] = c end
    if #all > 0 then return all[R(#all)] end
  end
  return pick(S.conns) or rv()
end

local ops
local function storm_fn()
  return function(...)
    for _ = 1, R(0, 3) do
      if S.calm then return end
      ops[R(#ops)](...)
    end
    return rv()
  end
end

ops = {
  function() anyconn():send(rv(), rv()) end,
  function() anyconn():send(str()) end,
  function() anyconn():send(str(), R(2) == 1 and "binary" or "text") end,
  function() anyconn():close(rv(), rv()) end,
  function() if R(4) == 1 then anyconn():close(R(1000, 5000), str()) end end,
  function() anyconn():subscribe(rv()) end,
  function() anyconn():subscribe("r" .. R(5)) end,
  function() anyconn():unsubscribe(rv()) end,
  function() anyconn():unsubscribe("r" .. R(5)) end,
  function() local t = anyconn():topics(); t[1] = rv() end,
  function() anyconn():buffered() end,
  function() anyconn():is_open() end,
  function() local c = anyconn(); return c.id, c.remote, c.path, c.query, c.headers, c.protocol, c.secure, c.compressed, tostring(c) end,
  function() local c = anyconn(); c.data[rv() or 1] = rv() end,
  function() local c = anyconn(); c.data = rv() end,
  function() local c = anyconn(); c.id = rv() end,
  function() local c = anyconn(); c[rv() or "x"] = rv() end,
  function() ws.publish(rv(), rv(), rv(), rv()) end,
  function() ws.publish("r" .. R(5), str(), R(2) == 1 and "binary" or "text", pick(S.conns)) end,
  function() ws.broadcast(rv(), rv(), rv()) end,
  function() ws.broadcast(str(), nil, pick(S.conns)) end,
  function() ws.send(rv(), rv(), rv()) end,
  function() ws.send(R(0, 50), str()) end,
  function() local c = pick(S.conns); if c then ws.send(c.id, str(), rv()) end end,
  function() ws.subscribers(rv()) end,
  function() ws.subscribers("r" .. R(5)) end,
  function() for c in ws.connections() do if R(3) == 1 then c:send(str()) end end end,
  function() local it = ws.connections(); for _ = 1, R(0, 3) do ops[R(#ops)]() end; it() end,
  function() ws.count(rv()) end,
  function() ws.get(rv()) end,
  function() ws.get(R(0, 50)) end,
  function() ws.now(); ws.stopping(); local _ = ws.node, ws.version end,
  function() local o = ws.options; for k, v in pairs(o) do local _ = k, v end; o[rv() or 1] = rv() end,
  function() ws.options = rv() end,
  function() ws[rv() or "x"] = rv() end,
  function() keep(S.timers, ws.timer(rv(), rv())) end,
  function() keep(S.timers, ws.timer(R() * 0.1, storm_fn())) end,
  function() keep(S.timers, ws.every(R() * 0.1 + 0.01, storm_fn())) end,
  function() keep(S.timers, ws.every(rv(), storm_fn())) end,
  function() local t = pick(S.timers); if t then t:stop() end end,
  function() local t = pick(S.timers); if t then t:active() end end,
  function() local t = pick(S.timers); if t then t.stop(rv()) end end,
  function() local t = pick(S.timers); if t then t.active(rv()) end end,
  function() ws.spawn(storm_fn(), args(3)) end,
  function() ws.spawn(rv(), args(3)) end,
  function()
    ws.spawn(function(...)
      for _ = 1, R(3) do
        ws.sleep(R(2) == 1 and R() * 0.05 or rv())
        if S.calm then return end
        ops[R(#ops)](...)
      end
    end, rv())
  end,
  function() ws.sleep(rv()) end,
  function() ws.sleep(R() * 0.02) end,
  function() ws.redis(rv(), rv()) end,
  function() ws.redis({ "INCR", "storm:n" }, storm_fn()) end,
  function() ws.redis(({ { "SET", "storm:" .. R(5), str() }, { "GET", "storm:" .. R(5) },
                         { "PING" }, { "NOSUCH" }, { "LRANGE", "storm:l", 0, -1 },
                         { "RPUSH", "storm:l", str() } })[R(6)], R(2) == 1 and storm_fn() or nil) end,
  function() ws.log(args(5)) end,
  function() ws.log.error(args(3)) end,
  function() ws.log.warn(rv(), str()) end,
  function() ws.log.info(rv()) end,
  function() ws.log.debug(args(4)) end,
  function() ws.log[rv() or "x"](args(2)) end,
  function() keep(S.metrics, ws.metric.counter("storm_c" .. R(3) .. "_total", "A counter.", R(2) == 1 and { "k" } or nil)) end,
  function() keep(S.metrics, ws.metric.gauge("storm_g" .. R(3), "A gauge.", R(2) == 1 and { "k", "j" } or nil)) end,
  function() ws.metric.counter(rv(), rv(), rv()) end,
  function() ws.metric.gauge(rv(), rv(), rv()) end,
  function() local m = pick(S.metrics); if m then m:inc(rv(), rv(), rv()) end end,
  function() local m = pick(S.metrics); if m then m:inc(R(5), "a", "b") end end,
  function() local m = pick(S.metrics); if m then m:inc(1, str(), str()) end end,
  function() local m = pick(S.metrics); if m and m.set then m:set(rv(), "a", "b") end end,
  function() local m = pick(S.metrics); if m and m.set then m:set(rv(), rv(), rv()) end end,
  function() local m = pick(S.metrics); if m and m.dec then m:dec(rv(), rv()) end end,
  function() local q = pick(S.reqs); if q then q:respond(rv(), rv(), rv()) end end,
  function() local q = pick(S.reqs); if q then q:respond(R(100, 700), str(), rv()) end end,
  function() local q = pick(S.reqs); if q then q:defer() end end,
  function() local q = pick(S.reqs); if q then return q.method, q.path, q.query, q.headers, q.body, q.remote, q.secure, tostring(q) end end,
  function() local q = pick(S.reqs); if q then q.data = rv(); q[rv() or 1] = rv() end end,
  function()
    local co = coroutine.create(storm_fn())
    keep(S.cos, co)
    coroutine.resume(co, args(2))
  end,
  function() local co = pick(S.cos); if co then coroutine.resume(co, rv()) end end,
  function() local co = pick(S.cos); if co then coroutine.close(co) end end,
  function() local co = pick(S.cos); if co then coroutine.status(co) end end,
  function() coroutine.wrap(storm_fn())(args(2)) end,
  function() local f = coroutine.wrap(yields); f(rv()); f(rv()); f(rv()) end,
  function() coroutine.yield(rv()) end,
  function() coroutine.isyieldable(); keep(S.cos, (coroutine.running())) end,
  function() ws.spawn(function() keep(S.cos, (coroutine.running())); ws.sleep(R() * 0.05) end) end,
  function() ws.spawn(function() keep(S.cos, (coroutine.running())); ws.redis({ "PING" }) end) end,
  function(x) -- a method of whatever the event handed over (conn, req, data ...)
    local m = ({ "send", "close", "subscribe", "respond", "defer", "stop", "active", "inc", "set", "topics" })[R(10)]
    x[m](x, rv(), rv())
  end,
  function(x) if type(x) == "table" then x[rv() or 1] = rv(); x.data = rv(); x.headers = rv() end end,
  function() pcall(storm_fn(), args(2)) end,
  function() xpcall(storm_fn(), storm_fn(), args(2)) end,
  function() xpcall(raises, function(e) ws.sleep(0) return e end) end,
  function() error(rv()) end,
  function() error(setmetatable({}, { __tostring = function() return str() end })) end,
  function() error(bad_tostring) end,
  function() local x <close> = setmetatable({}, { __close = function() ops[R(#ops)]() end }); ops[R(#ops)]() end,
  function() local x <close> = setmetatable({}, { __close = function() error("close broke") end }) end,
  -- Lua runs finalizers with hooks off: one that never returns ends the process (documented).
  -- Lua runs finalizers with hooks off: one that never returns, or runs long, ends the process
  -- (documented), so finalizers make only quick calls.
  function()
    setmetatable({}, { __gc = function()
      local c, t = pick(S.conns), pick(S.timers)
      local gc_ops = {
        function() c:send("gc") end, function() c:close(4000, "gc") end,
        function() c:subscribe("r1") end, function() t:stop() end,
        function() ws.publish("r1", "gc") end, function() ws.timer(0, function() c:send("gc2") end) end,
        function() ws.redis({ "PING" }, function() end) end, function() ws.spawn(function() ws.sleep(0) end) end,
        function() pick(S.reqs):respond(200, "gc") end, function() coroutine.wrap(yields)() end,
      }
      pcall(gc_ops[R(#gc_ops)])
    end })
  end,
  function() setmetatable({}, { __gc = function() error("gc broke") end }) end,
  function() if R(10) == 1 then collectgarbage() end end,
  function() local t = {}; for i = 1, R(0, 100000) do t[i] = i end end,
  function() string.rep(str(), R(0, 4)) end,
  function() tostring(rv()); type(rv()) end,
  function() if R(40) == 1 then while true do end end end,
  function() if R(20) == 1 then local t = {}; while true do t[#t + 1] = string.rep("x", 4096) end end end,
}

local events = ws.metric.counter("storm_events_total", "Events the storm saw.")
keep(S.metrics, events)

local function storm_event(...)
  if S.calm then return end
  events:inc()
  for _ = 1, R(0, 4) do
    local op = ops[R(#ops)]
    if R(12) == 1 then op(...) else pcall(op, ...) end
  end
end

local function remember(c)
  if c then keep(S.conns, c) end
end

function on_open(conn)
  remember(conn)
  if conn.path == "/echo" then return end
  storm_event(conn)
end

function on_message(conn, data, kind)
  if conn.path == "/echo" then
    conn:send(data, kind)
    return
  end
  storm_event(conn, data, kind)
end

function on_close(conn, code, reason)
  if conn.path == "/echo" then return end
  storm_event(conn, code, reason)
end

function on_drain(conn)
  if conn.path == "/echo" then return end
  storm_event(conn)
end

function on_error(conn, err, tb)
  if conn and conn.path == "/echo" then return end
  if R(3) == 1 then storm_event(conn, err, tb) end
end

function on_upgrade(req)
  if req.path == "/echo" or S.calm then return true end
  keep(S.upreqs, req)
  storm_event(req)
  local r = R(10)
  if r == 1 then return false, rv(), rv() end
  if r == 2 then return rv() end
  if r == 3 then req.data = rv() end
  if r == 4 then return "nope" end
  return true
end

function on_request(req)
  if req.path == "/calm" then
    S.calm = true
    return 200, "calm\n"
  elseif req.path == "/storm" then
    S.calm = false
    return 200, "storm\n"
  end
  if S.calm then return 200, "ok\n" end
  keep(S.reqs, req)
  storm_event(req)
  local r = R(8)
  if r == 1 then req:defer() return end
  if r == 2 then return rv(), rv(), rv() end
  if r == 3 then return end
  if r == 4 then req:defer(); keep(S.timers, ws.timer(R() * 0.1, function() req:respond(200, str()) end)) return end
  if r == 5 then req:defer(); ws.spawn(function() ws.sleep(R() * 0.05) req:respond(R(199, 600), str(), rv()) end) return end
  return 200, str()
end

if not S.calm then
  -- (Not on the first load: one over its time or memory would fail the start.)
  if S.reloads > 0 then
    for _ = 1, R(0, 3) do pcall(ops[R(#ops)]) end
  end
  keep(S.timers, ws.every(0.05, function() storm_event() end))
  -- A reload that fails after its top level started timers and functions that wait: they stop.
  if S.reloads > 0 and R(4) == 1 then error(rv()) end
end
