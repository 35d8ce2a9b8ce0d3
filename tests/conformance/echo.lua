-- Conformance-test target until examples/echo.lua exists: every message goes back to its
-- sender with the same kind (text or binary).
function on_message(conn, data, kind)
  conn:send(data, kind)
end
