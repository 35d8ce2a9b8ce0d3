-- Script-limits test target: messages ask it to misbehave; anything else is echoed.
--   "spin"        an endless loop in the handler
--   "spin-pcall"  an endless loop that catches every error it gets (the stop must still win)
--   "co-wrap"     an endless loop in a coroutine.wrap'ed function (issue 8's repro)
--   "co-resume"   coroutine.resume in a loop, of a coroutine that loops
--   "co-nested"   a coroutine resuming another that loops
--   "co-pcall"    a coroutine looping on pcall of an endless loop
--   "pcall-wrap"  pcall of a wrapped endless loop, in a loop
--   "sort-pcall"  a pcall loop inside a table.sort comparator (where Lua cannot yield)
--   "hog-table"   appends short strings to a table until stopped (the time limit, or the cap)
--   "co-swallow"  coroutine.resume of an endless loop once, then return (the stop is swallowed)
--   "timer-spin"  a timer callback that never returns (answers "timer set" first)
--   "timer-co"    a timer callback resuming a coroutine that loops (answers "timer set")
--   "timer-pcall" a timer callback looping inside pcall (answers "timer set")
--   "hog"         allocates without bound (a table of strings, then a doubling string)
--   "timer-hog"   the same inside a timer callback
--   "heap"        answers "heap N KiB": the size of the Lua heap
-- The handler runaways (spin to co-swallow) log "runaway <name>" first.
-- Paths: /spin-open loops in on_open, /spin-upgrade in on_upgrade.
-- With WSLUAD_TEST_ON_ERROR set in the environment it also defines on_error.
function on_upgrade(req)
  if req.path == "/spin-upgrade" then
    while true do end
  end
end

function on_open(conn)
  ws.log(string.format("on_open id=%d", conn.id))
  if conn.path == "/spin-open" then
    while true do end
  end
end

local function spin()
  while true do end
end

local function spin_pcall()
  while true do
    pcall(spin)
  end
end

local runaways = {
  ["spin"] = spin,
  ["spin-pcall"] = spin_pcall,
  ["co-wrap"] = function()
    coroutine.wrap(function() while true do end end)()
  end,
  ["co-resume"] = function()
    local co = coroutine.create(spin)
    while true do coroutine.resume(co) end
  end,
  ["co-nested"] = function()
    local outer = coroutine.create(function()
      local inner = coroutine.create(spin)
      while true do coroutine.resume(inner) end
    end)
    while true do coroutine.resume(outer) end
  end,
  ["co-pcall"] = function()
    coroutine.wrap(spin_pcall)()
  end,
  ["pcall-wrap"] = function()
    while true do pcall(coroutine.wrap(function() while true do end end)) end
  end,
  ["sort-pcall"] = function()
    table.sort({3, 1, 2}, function(a, b)
      spin_pcall()
    end)
  end,
  ["hog-table"] = function()
    local t = {}
    for i = 1, math.huge do
      t[i] = "string number " .. i
    end
  end,
  ["co-swallow"] = function(conn)
    local ok, err = coroutine.resume(coroutine.create(spin))
    ws.log("co-swallow resumed: " .. tostring(ok) .. " " .. tostring(err))
  end,
}

local timers = {
  ["timer-co"] = function()
    ws.log("timer callback resuming a coroutine")
    local co = coroutine.create(spin)
    while true do coroutine.resume(co) end
  end,
  ["timer-pcall"] = function()
    ws.log("timer callback looping in pcall")
    spin_pcall()
  end,
}

local function hog()
  local t = {}
  for i = 1, math.huge do
    t[i] = string.rep("x", 1000) .. i
  end
end

local function string_hog()
  local s = "x"
  while true do
    s = s .. s
  end
end

function on_message(conn, data, kind)
  if runaways[data] then
    ws.log("runaway " .. data)
    runaways[data](conn)
    conn:send("returned") -- only co-swallow gets here (and its call still counts as stopped)
  elseif timers[data] then
    ws.timer(0, timers[data])
    conn:send("timer set")
  elseif data == "heap" then
    conn:send(string.format("heap %.0f KiB", collectgarbage("count")))
  elseif data == "timer-spin" then
    ws.timer(0, function()
      ws.log("timer callback spinning")
      while true do end
    end)
    conn:send("timer set")
  elseif data == "hog" then
    hog()
  elseif data == "string-hog" then
    string_hog()
  elseif data == "timer-hog" then
    ws.timer(0, function()
      ws.log("timer callback hogging")
      hog()
    end)
    conn:send("timer set")
  else
    conn:send(data, kind)
  end
end

function on_close(conn, code, reason)
  ws.log(string.format("on_close id=%d code=%d", conn.id, code))
end

if os.getenv("WSLUAD_TEST_ON_ERROR") then
  function on_error(conn, err)
    ws.log(string.format("on_error id=%d err=%s", conn.id, (tostring(err):gsub("\n", " | "))))
  end
end
