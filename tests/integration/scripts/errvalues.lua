-- Test script: on_message raises the error value a message names; on_error answers with what it
-- got (the type of err, err.code read raw, whether the traceback is one). A repeating timer that
-- raises on request, and a counter of its firings.
local raise = {
  ["table"] = function() error({ code = 42 }) end,
  ["tostring"] = function()
    error(setmetatable({ code = 7 }, { __tostring = function(e) return "custom error " .. e.code end }))
  end,
  ["plain-table"] = function() error({}) end,
  -- What tostring() makes of them: "42", and an error ('__tostring' must return a string).
  ["tostring-number"] = function() error(setmetatable({}, { __tostring = function() return 42 end })) end,
  ["tostring-table"] = function() error(setmetatable({}, { __tostring = function() return {} end })) end,
  ["string"] = function() error("a string error") end,
  ["nil"] = function() error(nil) end,
}

fired = 0
local every

function on_message(conn, data)
  if raise[data] then
    raise[data]()
  elseif data == "every" then
    every = ws.every(0.05, function()
      fired = fired + 1
      error("the timer broke")
    end)
    conn:send("started")
  elseif data == "fired" then
    conn:send(tostring(fired))
  elseif data == "stop" then
    every:stop()
    conn:send(tostring(fired))
  elseif data == "once" then
    ws.timer(0, function() error("a one-shot timer broke") end)
    conn:send("set")
  else
    conn:send(data)
  end
end

function on_error(conn, err, traceback)
  local code = type(err) == "table" and rawget(err, "code") or nil
  conn:send(string.format("type=%s code=%s traceback=%s value=%s", type(err), tostring(code),
    type(traceback) == "string" and (traceback:find("stack traceback", 1, true) and "yes" or "no")
      or type(traceback),
    type(err) == "string" and err or "-"))
end
