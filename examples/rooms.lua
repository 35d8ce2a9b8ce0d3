-- rooms.lua: chat rooms chosen by URL path, with nicknames, JSON messages and member lists.
--
-- Run it (from the source tree; needs Debian's lua-cjson: apt-get install lua-cjson):
--     wsluad examples/rooms.lua
-- Try it: open http://127.0.0.1:8080/rooms.html in two browser tabs, join the same room with two
-- nicknames and chat. Or from a terminal:
--     websocat 'ws://127.0.0.1:8080/room/lobby?nick=ann'
-- and type lines (plain text, or {"type":"message","text":"hi"}).
--
-- Protocol. Connect to ws://HOST:PORT/room/NAME?nick=NICK. NAME is 1-64 of A-Z a-z 0-9 _ . -;
-- NICK is percent-encoded UTF-8, at most 24 characters, no control characters; a missing or
-- empty nick becomes "guest". A path not under /room/ is refused with HTTP 404.
-- A join that could never succeed as asked (a bad NAME or NICK) is accepted, then closed at once
-- with an application close code and the reason, before any message:
--   4404 "bad room name: ..."   4400 "bad nickname: ..."
-- rather than refused with an HTTP status, because a browser cannot read the status of a refused
-- upgrade: it sees close 1006, exactly as when the server is down, and would retry for ever. A
-- close frame it can read, and a 4xxx code (4000-4999 belong to the application) says "asking
-- again gets the same answer": rooms.html shows the reason and does not retry.
-- Every message the server sends is a JSON object with "type", "from" and "text":
--   {"type":"members","from":null,"text":"...","room":NAME,"you":NICK,"members":[...]}
--        to you when you join: your final nickname and everyone in the room (you included)
--   {"type":"join","from":NICK,"text":"NICK joined"}     to the others when someone joins
--   {"type":"leave","from":NICK,"text":"NICK left"}      to the others when someone leaves
--   {"type":"message","from":NICK,"text":TEXT}           a message from NICK
--   {"type":"error","from":null,"text":WHY}              your last message was not accepted
-- A message is never sent back to its sender (the page shows its own lines itself).
--
-- Nicknames are unique per room: when the nick you ask for is taken you are renamed, not
-- refused ("ann" becomes "ann2", then "ann3", ...), and the "members" message tells you the name
-- you got: a taken name is no mistake of yours, so it costs you no round trip.

local cjson = require "cjson"

local MAX_NICK = 24
local MAX_TEXT = 4000

-- rooms[name][nick] = conn. "or {}" keeps the rooms (and everyone in them) across a live reload.
rooms = rooms or {}

local function send_json(conn, t)
    conn:send(cjson.encode(t))
end

local function topic(name)
    return "room:" .. name
end

local function unescape(s)
    s = s:gsub("+", " ")
    return (s:gsub("%%(%x%x)", function(h)
        return string.char(tonumber(h, 16))
    end))
end

local function query_param(query, key)
    for k, v in query:gmatch("([^&=]+)=?([^&]*)") do
        if unescape(k) == key then
            return unescape(v)
        end
    end
    return nil
end

-- The first nick not taken in the room: nick, nick2, nick3, ...
local function unique(members, nick)
    if not members[nick] then
        return nick
    end
    local i = 2
    while members[nick .. i] do
        i = i + 1
    end
    return nick .. i
end

local function member_list(members)
    local list = {}
    for nick in pairs(members) do
        list[#list + 1] = nick
    end
    table.sort(list)
    return list
end

function on_upgrade(req)
    local name = req.path:match("^/room/(.*)$")
    if not name then
        return false, 404, "not a room: connect to /room/NAME"
    end
    if not name:match("^[%w_.%-]+$") or #name > 64 then
        req.data.refused = {4404, "bad room name: 1 to 64 letters, digits, _ . or -"}
        return
    end
    local nick = query_param(req.query or "", "nick") or ""
    nick = nick:match("^%s*(.-)%s*$")
    if nick == "" then
        nick = "guest"
    end
    local chars = utf8.len(nick)
    if not chars or chars > MAX_NICK or nick:find("%c") then
        req.data.refused = {4400, "bad nickname: at most " .. MAX_NICK ..
                                      " characters, no control characters"}
        return
    end
    req.data.room = name
    req.data.wanted = nick
end

-- The nickname is settled here rather than in on_upgrade, so two clients asking for the same
-- name at the same moment still end up with different ones.
function on_open(conn)
    local refused = conn.data.refused
    if refused then
        -- on_close runs for it too, and finds no room to leave.
        conn:close(refused[1], refused[2])
        return
    end
    local name = conn.data.room
    local members = rooms[name] or {}
    rooms[name] = members
    local nick = unique(members, conn.data.wanted)
    members[nick] = conn
    conn.data.nick = nick
    conn:subscribe(topic(name))

    local list = member_list(members)
    local text = "you joined " .. name .. " as " .. nick
    if nick ~= conn.data.wanted then
        text = text .. " (" .. conn.data.wanted .. " was taken)"
    end
    send_json(conn, {
        type = "members",
        from = cjson.null,
        text = text .. "; here: " .. table.concat(list, ", "),
        room = name,
        you = nick,
        members = list,
    })
    ws.publish(topic(name), cjson.encode({type = "join", from = nick, text = nick .. " joined"}),
               "text", conn)
end

function on_message(conn, data, kind)
    local nick = conn.data.nick
    if kind ~= "text" then
        return send_json(conn, {type = "error", from = cjson.null, text = "send text, not binary"})
    end
    local text = data
    if data:match("^%s*{") then
        local ok, msg = pcall(cjson.decode, data)
        if not ok or type(msg) ~= "table" or msg.type ~= "message" or type(msg.text) ~= "string" then
            return send_json(conn, {
                type = "error",
                from = cjson.null,
                text = 'expected {"type":"message","text":"..."} or plain text',
            })
        end
        text = msg.text
    end
    -- JSON's \u escapes can produce bytes that are not UTF-8 (lone surrogates); they could not be
    -- sent on as text.
    local chars = utf8.len(text)
    if not chars then
        return send_json(conn, {type = "error", from = cjson.null, text = "text is not valid UTF-8"})
    end
    if chars > MAX_TEXT then
        return send_json(conn, {
            type = "error",
            from = cjson.null,
            text = "message too long (at most " .. MAX_TEXT .. " characters)",
        })
    end
    if text:match("^%s*$") then
        return
    end
    ws.publish(topic(conn.data.room), cjson.encode({type = "message", from = nick, text = text}),
               "text", conn)
end

function on_close(conn)
    local name, nick = conn.data.room, conn.data.nick
    local members = name and rooms[name]
    if not members or members[nick] ~= conn then
        return
    end
    members[nick] = nil
    if next(members) == nil then
        rooms[name] = nil
    end
    ws.publish(topic(name), cjson.encode({type = "leave", from = nick, text = nick .. " left"}),
               "text", conn)
end
