-- Hostile-input test target: echoes every message; logs each on_open/on_close with the
-- connection id so tests can check on_close runs exactly once per opened connection.
-- "error" raises a Lua error; "flood N" queues N binary messages of 64 KiB; the paths
-- /err-open and /err-close make on_open / on_close raise (after logging).
local chunk = string.rep("x", 65536)

function on_open(conn)
  ws.log(string.format("on_open id=%d path=%s", conn.id, conn.path))
  if conn.path == "/err-open" then
    error("requested error in on_open")
  end
end

function on_message(conn, data, kind)
  if data == "error" then
    error("requested error")
  end
  local n = data:match("^flood (%d+)$")
  if n then
    for _ = 1, tonumber(n) do
      if not conn:send(chunk, "binary") then
        break
      end
    end
    return
  end
  conn:send(data, kind)
end

function on_close(conn, code, reason)
  ws.log(string.format("on_close id=%d code=%d", conn.id, code))
  if conn.path == "/err-close" then
    error("requested error in on_close")
  end
end
