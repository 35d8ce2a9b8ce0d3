-- Test script for on_request (tests/integration/test_request.py). Plain HTTP requests are routed
-- by path; WebSocket clients subscribe to the topic named by their path ("/t/NAME") and their
-- on_open logs who they are (remote last, for harness.connect_id).
local kept = {} -- req objects kept after their answer, to respond again later

local function describe(req)
  local names = {}
  for k in pairs(req.headers) do names[#names + 1] = k end
  table.sort(names)
  local lines = {
    "method=" .. req.method, "path=" .. req.path, "query=" .. req.query,
    "remote=" .. req.remote, "secure=" .. tostring(req.secure), "body=" .. #req.body,
  }
  for _, k in ipairs(names) do lines[#lines + 1] = "h:" .. k .. "=" .. req.headers[k] end
  return table.concat(lines, "\n") .. "\n"
end

local routes = {}

routes["/hello"] = function(req) return 200, "hello " .. req.method end
routes["/describe"] = function(req) return 200, describe(req) end
routes["/echo"] = function(req)
  return 200, req.body, {["Content-Type"] = req.headers["content-type"] or "application/octet-stream"}
end
routes["/json"] = function() return 201, '{"ok":true}', {["content-type"] = "application/json"} end
routes["/cookies"] = function() return 200, "c", {["Set-Cookie"] = {"a=1", "b=2"}, ["X-N"] = 42} end
routes["/status"] = function(req)
  return tonumber(req.query:match("code=(%d+)")), "a body that may not be sent"
end
routes["/big"] = function(req) return 200, string.rep("x", tonumber(req.query:match("n=(%d+)"))) end
-- n bytes answered with req:respond, starting with the query (so pipelined answers can be told
-- apart): "/tagged?n=1048576&i=7".
routes["/tagged"] = function(req)
  local n = tonumber(req.query:match("n=(%d+)"))
  req:respond(200, req.query .. string.rep("x", n - #req.query))
end
routes["/fallback"] = function() end
routes["/index.html"] = function(req)
  if req.query == "script" then return 200, "from the script" end
end
routes["/error"] = function() error("boom in on_request") end
routes["/error-table"] = function() error({code = 7}) end
routes["/bad-status"] = function() return 700, "x" end
routes["/bad-status-1xx"] = function() return 101, "x" end
routes["/bad-status-type"] = function() return "200", "x" end
routes["/bad-status-float"] = function() return 200.5, "x" end
routes["/bad-status-inf"] = function() return math.huge, "x" end
routes["/bad-body"] = function() return 200, {} end
routes["/bad-header-value"] = function() return 200, "x", {["X-Bad"] = "a\r\nX-Injected: 1"} end
routes["/bad-header-ctl"] = function() return 200, "x", {["X-Bad"] = "a\0b"} end
routes["/bad-header-name"] = function() return 200, "x", {["Bad Name"] = "x"} end
routes["/bad-header-reserved"] = function() return 200, "x", {["Content-Length"] = "1"} end
routes["/bad-headers"] = function() return 200, "x", "not a table" end

routes["/defer"] = function(req)
  local ms = tonumber(req.query:match("ms=(%d+)") or "50")
  assert(req:defer())
  ws.log("deferring", req.path, ms)
  ws.timer(ms / 1000, function()
    local ok, err, code = req:respond(200, "late " .. req.path)
    ws.log("deferred respond:", tostring(ok), tostring(err), tostring(code))
  end)
end
routes["/defer-never"] = function(req)
  req:defer()
  kept.never = req
end
routes["/defer-keep"] = function(req)
  -- answered by /answer-kept later, whatever happened to the client meanwhile
  req:defer()
  kept.keep = req
  ws.log("kept", tostring(req))
end
routes["/answer-kept"] = function()
  local ok, err, code = kept.keep:respond(200, "kept answer")
  ws.log("kept respond:", tostring(ok), tostring(err), tostring(code))
  return 200, string.format("%s %s %s", tostring(ok), tostring(err), tostring(code))
end
routes["/answer-never"] = function()
  local ok, err, code = kept.never:respond(200, "too late")
  return 200, string.format("%s %s %s", tostring(ok), tostring(err), tostring(code))
end
routes["/respond-twice"] = function(req)
  local a = req:respond(202, "first")
  local ok, err, code = req:respond(200, "second")
  ws.log("respond twice:", tostring(a), tostring(ok), tostring(err), tostring(code))
  return 200, "ignored: already answered"
end
routes["/after-return"] = function(req)
  kept.returned = req
  return 200, "returned"
end
routes["/answer-returned"] = function()
  local ok, err, code = kept.returned:respond(200, "again")
  local d1, d2, d3 = kept.returned:defer()
  return 200, string.format("%s %s %s %s %s", tostring(ok), tostring(err), tostring(code),
                            tostring(d1), tostring(d3))
end
routes["/spawn"] = function(req)
  req:defer()
  ws.spawn(function()
    ws.sleep(0.05)
    req:respond(200, "spawned " .. req.body)
  end)
end
routes["/redis-callback"] = function(req)
  req:defer()
  ws.redis({"INCRBY", "hits", req.body}, function(n, err)
    req:respond(err and 502 or 200, "hits " .. tostring(n or err))
  end)
end
routes["/redis-spawn"] = function(req)
  req:defer()
  ws.spawn(function()
    local n = ws.redis({"INCRBY", "hits", req.body})
    req:respond(200, "hits " .. tostring(n))
  end)
end
routes["/spawn-error"] = function(req)
  req:defer()
  ws.spawn(function()
    ws.sleep(0.05)
    error("boom in a spawned function")
  end)
end
routes["/respond-bad-later"] = function(req)
  req:defer()
  ws.timer(0.02, function() req:respond(200, "x", {["X"] = "a\nb"}) end)
end
routes["/publish"] = function(req)
  local topic = req.query:match("topic=([%w_]+)")
  return 200, tostring(ws.publish(topic, req.body)) .. "\n"
end
routes["/broadcast"] = function(req) return 200, tostring(ws.broadcast(req.body)) .. "\n" end
routes["/readonly"] = function(req) req.method = "x" end
routes["/fields"] = function(req)
  return 200, string.format("%s|%s|%s", tostring(req), type(req.respond), type(req.nothing))
end

function on_request(req)
  local route = routes[req.path]
  if route then return route(req) end
  if req.path:match("^/deferred/") then
    req:defer()
    ws.timer(0.01, function() req:respond(200, req.path) end)
    return
  end
  if req.path:match("^/n/") then return 200, req.path end
  -- anything else: nothing, so the server answers (files, 404)
end

function on_upgrade(req)
  ws.log(string.format("on_upgrade remote=%s secure=%s", req.remote, tostring(req.secure)))
end

function on_open(conn)
  local topic = conn.path:match("^/t/(%w+)$")
  if topic then conn:subscribe(topic) end
  ws.log(string.format("on_open id=%d secure=%s remote=%s", conn.id, tostring(conn.secure),
                       conn.remote))
end

function on_message(conn, data, kind)
  conn:send(data, kind)
end
