-- Test script for test_spawn_limit.py: functions run by ws.spawn whose first stretch (inside the
-- handler that spawned them) never ends, and an on_close that conn:close runs inside a handler
-- that never ends either. on_error counts its calls; "count" reports them.
local errors = 0

local function loop()
  while true do end -- the spawned loop
end

function on_open(conn)
  ws.log("on_open id=" .. conn.id .. " remote=" .. conn.remote)
end

function on_message(conn, data)
  if data == "count" then
    ws.log("counted " .. errors)
    conn:send("on_error calls: " .. errors)
  elseif data == "spawn" then
    ws.spawn(loop)
  elseif data == "pcall-spawn" then
    pcall(ws.spawn, loop)
  elseif data == "sort-spawn" then -- where Lua cannot yield: the caller stops by an error
    table.sort({2, 1}, function(x, y) ws.spawn(loop) return x < y end)
  elseif data:match("^close ") then -- its on_close, run by conn:close in here, never ends
    ws.get(tonumber(data:match("%d+"))):close(4000, "loop")
  elseif data == "timer" then
    ws.timer(0, function() ws.spawn(loop) ws.log("timer went on") end)
  end
end

function on_close(conn, code, reason)
  if reason == "loop" then while true do end end
end

function on_error(conn, err, traceback)
  errors = errors + 1
  -- where the traceback says the code was: the spawned loop (by the line defining it), or a
  -- handler by name
  local where = traceback:match("in function <[^>]*spawn_limit%.lua:(%d+)>")
    or traceback:match("in function '([%w_]+)'") or "-"
  conn:send("on_error " .. errors .. " in " .. where .. ": " .. tostring(err))
end

function on_request(req)
  if req.path == "/spawn" then ws.spawn(loop) end
  if req.path == "/count" then return 200, "on_error calls: " .. errors end
end
