-- Test script for --workers: each connection is first told which process serves it ("pid N",
-- from /proc/self/stat), then gets its messages echoed.
local f = assert(io.open("/proc/self/stat"))
local pid = math.tointeger(f:read("n"))
f:close()

function on_open(conn)
  conn:send("pid " .. pid)
  ws.log(string.format("on_open id=%d remote=%s", conn.id, conn.remote))
end

function on_message(conn, data, kind)
  if data == "block in C" then -- a pattern match that takes ages, where the time limit cannot reach
    string.find(string.rep("a", 50000), ".-.-.-.-b")
  end
  conn:send(data, kind)
end
