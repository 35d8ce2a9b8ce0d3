-- Test script for test_systemd.py. Logs what the environment says about NOTIFY_SOCKET (wsluad
-- takes it out, so that children of the script do not speak in its name). With HOLD_DIR set,
-- the process that takes the token file HOLD_DIR/start (first load) or HOLD_DIR/reload (a
-- reload) holds its top level until HOLD_DIR/release-start or release-reload exists: the test
-- makes one worker slow and watches what the supervisor tells systemd meanwhile.
ws.log("NOTIFY_SOCKET in the environment: " .. tostring(os.getenv("NOTIFY_SOCKET")))

local dir = os.getenv("HOLD_DIR")
local kind = loaded_once and "reload" or "start"
loaded_once = true
if dir and os.rename(dir .. "/" .. kind, dir .. "/" .. kind .. ".taken") then
  ws.log("holding the " .. kind)
  local release = dir .. "/release-" .. kind
  while true do -- polls a condition the test sets; the handler time limit is off
    local f = io.open(release)
    if f then
      f:close()
      break
    end
    os.execute("sleep 0.02")
  end
  ws.log("released the " .. kind)
end

function on_message(conn, data)
  conn:send(data)
end
