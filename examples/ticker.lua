-- ticker.lua: a timer publishes a tick every second to the connections subscribed to "ticks".
--
-- Run it (from the source tree):
--     wsluad examples/ticker.lua
-- Try it:
--     websocat ws://127.0.0.1:8080/
-- then type "subscribe": a line {"type":"tick","n":N,"time":"..."} arrives every second until
-- you type "unsubscribe". Each command is answered with "subscribed" or "unsubscribed".
--
-- Timers and reload: a live reload (SIGHUP or --reload) stops every timer, and this file's top
-- level runs again and starts a new one, so there is always exactly one. `ticks = ticks or 0`
-- keeps the count going across a reload.

ticks = ticks or 0

ws.every(1, function()
    ticks = ticks + 1
    -- Hand-written JSON: two fields do not need a library.
    local msg = string.format('{"type":"tick","n":%d,"time":"%s"}', ticks,
                              os.date("!%Y-%m-%dT%H:%M:%SZ"))
    ws.publish("ticks", msg)
end)

function on_message(conn, data)
    if data == "subscribe" then
        conn:subscribe("ticks")
        conn:send("subscribed")
    elseif data == "unsubscribe" then
        conn:unsubscribe("ticks")
        conn:send("unsubscribed")
    else
        conn:send('unknown command: say "subscribe" or "unsubscribe"')
    end
end
