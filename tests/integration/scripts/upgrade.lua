-- Test script for on_upgrade: the request path picks what the hook does. Accepted connections
-- answer every message with what they know about themselves.
local function list(t)
  local out = {}
  for i, v in ipairs(t or {}) do
    out[i] = tostring(v)
  end
  return table.concat(out, ",")
end

function on_upgrade(req)
  ws.log("on_upgrade path=" .. req.path)
  local p = req.path
  if p == "/refuse" then
    return false, 401, "go away, " .. (req.query or "")
  elseif p == "/refuse-status" then
    return false, 429
  elseif p == "/refuse-default" then
    return false
  elseif p == "/refuse-float" then
    return false, 451.5
  elseif p == "/refuse-huge" then
    return false, 2 ^ 40 + 403
  elseif p == "/refuse-body-table" then
    return false, 403, {}
  elseif p == "/nothing" then
    return
  elseif p == "/true" then
    return true
  elseif p == "/proto" then
    return "chat.v2"
  elseif p == "/proto-unoffered" then
    return "never-offered"
  elseif p == "/error" then
    error("upgrade exploded")
  elseif p == "/data" then
    req.data.user = "alice"
    req.data.n = 42
    return true
  elseif p == "/data-not-table" then
    req.data = "alice"
    return true
  elseif p == "/data-nil" then
    req.data = nil
    return true
  elseif p == "/req" then
    local names = {}
    for k in pairs(req.headers) do
      if k ~= k:lower() then
        names[#names + 1] = k
      end
    end
    req.data.report = table.concat({
      "method=" .. tostring(req.method),
      "path=" .. tostring(req.path),
      "query=" .. tostring(req.query),
      "x-custom=" .. tostring(req.headers["x-custom"]),
      "key=" .. tostring(req.headers["sec-websocket-key"] ~= nil),
      "upper=" .. table.concat(names, ","),
      "remote=" .. tostring(req.remote),
      "origin=" .. tostring(req.origin),
      "protocols=" .. list(req.protocols),
      "data=" .. type(req.data) .. ":" .. tostring(next(req.data)),
    }, "|")
    return true
  end
  return true
end

function on_open(conn)
  ws.log("on_open path=" .. conn.path .. " remote=" .. conn.remote)
end

function on_message(conn, data)
  if data == "data" then
    conn:send(tostring(conn.data.user) .. ":" .. tostring(conn.data.n))
  elseif data == "report" then
    conn:send(tostring(conn.data.report))
  elseif data == "protocol" then
    conn:send(tostring(conn.protocol))
  end
end
