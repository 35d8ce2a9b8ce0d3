-- Test script for back-pressure. Each client first gets "id N". Commands:
--   "burst N": broadcast N numbered 16 KiB messages to everyone, then tell the sender
--              "burst done <last seq> <recipients>";
--   "fill N":  log how many bytes are queued for the sender, then queue 16 KiB binary chunks
--              until at least N bytes are queued (never more than N + 16 KiB);
--   "buffered": answer with conn:buffered().
local chunk = string.rep("x", 16 * 1024)
seq = 0

function on_open(conn)
  ws.log(string.format("on_open id=%d", conn.id))
  conn:send("id " .. conn.id)
end

function on_message(conn, data)
  local cmd, arg = data:match("^(%S+)%s*(.*)$")
  if cmd == "burst" then
    local n, count = tonumber(arg), 0
    for _ = 1, n do
      seq = seq + 1
      count = ws.broadcast(string.format("%010d", seq) .. chunk)
    end
    conn:send(string.format("burst done %d %d", seq, count))
  elseif cmd == "fill" then
    ws.log(string.format("fill id=%d start=%d", conn.id, conn:buffered()))
    local target = tonumber(arg)
    while conn:buffered() < target do
      if not conn:send(chunk, "binary") then
        break -- closed: never spin
      end
    end
  elseif cmd == "buffered" then
    conn:send("buffered " .. conn:buffered())
  end
end

function on_drain(conn)
  ws.log(string.format("on_drain id=%d buffered=%d", conn.id, conn:buffered()))
  conn:send("drained")
end

function on_close(conn, code)
  ws.log(string.format("on_close id=%d code=%d", conn.id, code))
end
