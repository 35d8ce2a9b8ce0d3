-- Hostile-script test target: each text message is a Lua chunk, run directly in on_message
-- (no pcall: its errors reach the server) with `conn` in scope; "done" is sent when it returns.
-- A message that is not Lua (it does not compile) is echoed, so plain clients can check that
-- the server still serves. On a path of /upgrade/<chunk> (percent-encoded) on_upgrade runs the
-- chunk first.
-- With WSLUAD_TEST_ON_ERROR set it defines on_error, which logs the type of the error value and
-- its `code` field (read raw: the value may carry hostile metamethods).
local function compile(src, env)
  return load(src, "=chunk", "t", setmetatable(env, { __index = _G }))
end

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

function on_upgrade(req)
  local src = req.path:match("^/upgrade/(.*)$")
  if src then
    assert(compile(unescape(src), {}))()
  end
end

function on_open(conn)
  ws.log(string.format("on_open id=%d path=%s", conn.id, conn.path))
end

function on_message(conn, data)
  local fn = compile(data, { conn = conn })
  if not fn then
    conn:send(data)
    return
  end
  fn()
  conn:send("done")
end

function on_close(conn, code)
  ws.log(string.format("on_close id=%d code=%d", conn.id, code))
end

if os.getenv("WSLUAD_TEST_ON_ERROR") then
  function on_error(conn, err, traceback)
    local code = type(err) == "table" and rawget(err, "code") or nil
    ws.log(string.format("on_error id=%d type=%s code=%s traceback=%s", conn.id, type(err),
      tostring(code), type(traceback) == "string" and traceback:match("stack traceback") or "-"))
  end
end
