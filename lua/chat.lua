-- chat.lua: the default wsluad room. Every message a client sends goes to every other
-- connected client, never back to the sender (the page shows your own messages itself).
--
-- Run it:   wsluad chat.lua        then open http://127.0.0.1:8080/ in two tabs.
-- Edit it while the server runs and send SIGHUP (or start with --reload): nobody is dropped.

function on_open(conn)
  ws.log.debug(conn, "joined;", ws.count(), "online")
end

function on_message(conn, data, kind)
  -- The frame is encoded once and shared by every recipient.
  ws.broadcast(data, kind, conn)
end

function on_close(conn, code, reason)
  ws.log.debug(conn, "left with", code, reason)
end
