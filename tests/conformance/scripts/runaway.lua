-- Script-limits test target: messages ask it to misbehave; anything else is echoed.
--   "spin"        an endless loop in the handler
--   "spin-pcall"  an endless loop that catches every error it gets (the stop must still win)
--   "timer-spin"  a timer callback that never returns (answers "timer set" first)
--   "hog"         allocates without bound (a table of strings, then a doubling string)
--   "timer-hog"   the same inside a timer callback
-- With WSLUAD_TEST_ON_ERROR set in the environment it also defines on_error.
function on_open(conn)
  ws.log(string.format("on_open id=%d", conn.id))
  if conn.path == "/spin-open" then
    while true do end
  end
end

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
  if data == "spin" then
    while true do end
  elseif data == "spin-pcall" then
    while true do
      pcall(function()
        while true do end
      end)
    end
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
