-- echo.lua: sends every message back to its sender, with the same kind (text stays text, binary
-- stays binary). The smallest useful script, and the target of the conformance tests.
--
-- Run it (from the source tree):
--     wsluad examples/echo.lua
-- Try it:
--     websocat ws://127.0.0.1:8080/          (type a line: it comes back)
-- or, in a browser's JavaScript console on any page:
--     s = new WebSocket("ws://127.0.0.1:8080/"); s.onmessage = e => console.log(e.data);
--     s.onopen = () => s.send("hello")

function on_message(conn, data, kind)
    conn:send(data, kind)
end
