-- chat.lua: the default wsluad room. Every message a client sends goes to every other
-- connected client, never back to the sender (the bundled page shows your own messages itself).
--
-- Run it:  wsluad chat.lua         then open http://127.0.0.1:8080/ in two browser tabs.
-- Change it while the server runs, then send SIGHUP (or start with --reload): nobody is dropped.
-- More handlers (on_open, on_close, on_upgrade, ...) are in `man wsluad` and examples/.

function on_message(conn, data, kind)
  -- kind is "text" or "binary"; the frame is encoded once and shared by every recipient,
  -- and the third argument leaves the sender out.
  ws.broadcast(data, kind, conn)
end
