-- cluster-chat.lua: examples/rooms.lua for a cluster of wsluad nodes sharing one Redis. Rooms
-- span the nodes, each room keeps its last 50 messages in Redis for whoever joins, and the
-- member lists live in Redis too, so everyone sees everyone whichever node serves them.
--
-- Run it (from the source tree; needs Debian's lua-cjson and a Redis):
--     redis-server --port 6379 --save '' &
--     wsluad -l 127.0.0.1:8080 --redis redis://127.0.0.1:6379 examples/cluster-chat.lua &
--     wsluad -l 127.0.0.1:8081 --redis redis://127.0.0.1:6379 examples/cluster-chat.lua &
-- (or one command: wsluad --workers 2 --redis redis://127.0.0.1:6379 examples/cluster-chat.lua)
-- Try it: open http://127.0.0.1:8080/rooms.html in one tab and http://127.0.0.1:8081/rooms.html
-- in another, join the same room: one room. A backend can talk into it:
--     redis-cli PUBLISH wsluad:topic:room:lobby '{"type":"message","from":"backend","text":"hi"}'
--
-- Protocol: exactly that of examples/rooms.lua (read its header), so rooms.html works unchanged:
-- /room/NAME?nick=NICK; 4404/4400 for a bad NAME or NICK; JSON {type, from, text} messages;
-- "members" first, to you; "join", "leave" and "message" to the others; "error" to you. Added:
--   * after "members" (whose text then ends "; the last N messages follow"), the room's last
--     messages, at most 50, oldest first, each a "message" with "history": true (a page that
--     reconnects gets them again);
--   * a join that cannot be completed because Redis is unreachable is closed with 1013 "try
--     again later" (not 4xxx: the page retries it, with back-off); so is every join when wsluad
--     runs without --redis, and the log says why.
--
-- What lives in Redis (the keys are this script's own; wsluad's channels are in the README).
-- Like wsluad's own, every key starts with --redis-prefix (ws.options.redis_prefix, "wsluad" by
-- default), so clusters with different prefixes can share one Redis without seeing each other's
-- members and history:
--   wsluad:chat:history:NAME
--                       a list, the newest message first: LPUSH + LTRIM keep 50, and it expires
--                       HISTORY_TTL after the last message.
--   wsluad:chat:members:NAME
--                       a sorted set: nickname -> deadline (Redis clock, in seconds). Every node
--                       pushes the deadlines of its own members MEMBER_TTL ahead every
--                       MEMBER_TTL / 3 seconds. A node that dies stops doing so: past their
--                       deadline its members are dropped by the next node that looks (each node
--                       looks at the rooms it has members in at every refresh, and at a room
--                       someone joins), which tells the room they left. So a dead node's members
--                       vanish within MEMBER_TTL + MEMBER_TTL / 3; a node that stops cleanly
--                       removes them at once. MEMBER_TTL comes from the environment variable
--                       CHAT_MEMBER_TTL (seconds, default 30; the tests use 1).
--   room:NAME           the topic of the room, whose Redis channel is wsluad:topic:room:NAME
--                       (the first word follows --redis-prefix, as in the two keys above):
--                       ws.publish reaches its subscribers on every node, with one PUBLISH.
--
-- Nicknames are unique per room across the cluster: a join claims its nickname with ZADD NX
-- into wsluad:chat:members:NAME, which only one claimant can win, and a taken name is renamed
-- as in rooms.lua (ann, ann2, ann3, ...). The one exception: a node cut off from Redis for
-- longer than MEMBER_TTL has its members dropped (the others see them leave); when it is back,
-- it puts them in again, even if somebody took one of their names meanwhile. Likewise, when
-- Redis restarts without its data, until each node's next refresh the member lists lack the
-- other nodes' members and a join can take one of their names (never one of its own node's).
--
-- Joining waits for Redis (the nickname, the member list, the history), so it runs in ws.spawn,
-- where ws.redis(command) without a callback waits and returns reply, err; the code reads
-- straight on. Everything else (sending, leaving) sends its Redis commands without waiting.

local cjson = require "cjson"

local MAX_NICK = 24
local MAX_TEXT = 4000
local HISTORY = 50              -- messages kept per room
local HISTORY_TTL = 24 * 3600   -- seconds: a room's history goes a day after its last message
local MEMBER_TTL = tonumber(os.getenv("CHAT_MEMBER_TTL") or "30")
if not MEMBER_TTL or MEMBER_TTL <= 0 then
    error("CHAT_MEMBER_TTL must be a number of seconds above 0")
end
local REFRESH = MEMBER_TTL / 3
local KEYS = ws.options.redis_prefix .. ":chat:" -- "wsluad:chat:" unless --redis-prefix says

-- This node's members: rooms[name][nick] = conn. "or {}" keeps them across a live reload.
rooms = rooms or {}

local function topic(name)
    return "room:" .. name
end

local function members_key(name)
    return KEYS .. "members:" .. name
end

local function history_key(name)
    return KEYS .. "history:" .. name
end

local function send_json(conn, t)
    conn:send(cjson.encode(t))
end

-- To everyone in the room on every node, but `except`.
local function announce(name, kind, nick, except)
    local text = nick .. (kind == "join" and " joined" or " left")
    ws.publish(topic(name), cjson.encode({type = kind, from = nick, text = text}), "text", except)
end

-- A Redis command that waits for its reply (inside ws.spawn only); an error reply or a lost
-- connection becomes a Lua error.
local function redis(command)
    local reply, err = ws.redis(command)
    if err then
        error("redis " .. command[1] .. ": " .. err, 2)
    end
    return reply
end

-- Redis's clock, in seconds: every node measures the deadlines with the same one.
local function redis_now()
    local t = redis({"TIME"})
    return tonumber(t[1]) + tonumber(t[2]) / 1e6
end

-- The room's members on every node, as a set (nick -> true). An entry past its deadline is a
-- member of a node that died: whoever removes it first (ZREM answers 1 to one node only) tells
-- the room. An overdue entry of this node's own is kept: the next refresh renews it.
local function live_members(name, now)
    local key = members_key(name)
    local entries = redis({"ZRANGE", key, 0, -1, "WITHSCORES"})
    local here = rooms[name] or {}
    local live = {}
    for i = 1, #entries, 2 do
        local nick, deadline = entries[i], tonumber(entries[i + 1])
        if deadline > now or here[nick] then
            live[nick] = true
        elseif redis({"ZREM", key, nick}) == 1 then
            announce(name, "leave", nick)
        end
    end
    return live
end

-- Every REFRESH seconds: push this node's members' deadlines ahead, and drop the members of
-- nodes that died from the rooms this node has members in. (A reload stops the timer and this
-- line starts a new one: there is always exactly one.)
ws.every(REFRESH, function()
    ws.spawn(function()
        local names = {}
        for name in pairs(rooms) do
            names[#names + 1] = name
        end
        if #names == 0 then
            return
        end
        local ok, err = pcall(function()
            local now = redis_now()
            -- rooms can change while a command waits: look each room up again.
            for _, name in ipairs(names) do
                local command = {"ZADD", members_key(name)}
                for nick in pairs(rooms[name] or {}) do
                    command[#command + 1] = now + MEMBER_TTL
                    command[#command + 1] = nick
                end
                if #command > 2 then
                    redis(command)
                    redis({"EXPIRE", members_key(name), math.ceil(MEMBER_TTL) + 1})
                    live_members(name, now)
                end
            end
        end)
        if not ok then
            ws.log.warn("cluster-chat: refreshing the members failed:", err)
        end
    end)
end)

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

-- The checks of rooms.lua, word for word (rooms.html applies the same ones before joining).
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

-- Runs in ws.spawn: every redis() call below waits for Redis, while the node goes on serving.
local function join(conn)
    local name, wanted = conn.data.room, conn.data.wanted
    local key = members_key(name)
    local now = redis_now()
    local members, nick
    repeat -- claim a free nickname; should another node claim it first, pick again
        members = live_members(name, now)
        -- This node's members are taken even when Redis lost them (restarted without its
        -- data): the next refresh puts them back.
        for other in pairs(rooms[name] or {}) do
            members[other] = true
        end
        nick = unique(members, wanted)
    until redis({"ZADD", key, "NX", now + MEMBER_TTL, nick}) == 1
    conn.data.claimed = nick
    redis({"EXPIRE", key, math.ceil(MEMBER_TTL) + 1})
    local history = redis({"LRANGE", history_key(name), 0, HISTORY - 1})
    if not conn:is_open() then -- gone while we waited: on_close found nothing to undo
        ws.redis({"ZREM", key, nick})
        return
    end

    -- From here on nothing waits: registered, subscribed and greeted in one go. (A message
    -- published at the very instant between the LRANGE above and the subscription can be
    -- missed by the newcomer; it is in the history of the next one.)
    local here = rooms[name] or {}
    rooms[name] = here
    here[nick] = conn
    conn.data.nick = nick
    conn:subscribe(topic(name))
    members[nick] = true
    local list = member_list(members)
    local text = "you joined " .. name .. " as " .. nick
    if nick ~= wanted then
        text = text .. " (" .. wanted .. " was taken)"
    end
    text = text .. "; here: " .. table.concat(list, ", ")
    if #history == 1 then
        text = text .. "; the last message follows"
    elseif #history > 1 then
        text = text .. "; the last " .. #history .. " messages follow"
    end
    send_json(conn, {
        type = "members",
        from = cjson.null,
        text = text,
        room = name,
        you = nick,
        members = list,
    })
    for i = #history, 1, -1 do -- the list holds the newest first
        -- Strings only in there: Debian's lua-cjson would turn any number into a float.
        local ok, msg = pcall(cjson.decode, history[i])
        if ok and type(msg) == "table" then
            msg.history = true
            send_json(conn, msg)
        end
    end
    announce(name, "join", nick, conn)
end

function on_open(conn)
    local refused = conn.data.refused
    if refused then
        -- on_close runs for it too, and finds no room to leave.
        conn:close(refused[1], refused[2])
        return
    end
    ws.spawn(function()
        local ok, err = pcall(join, conn)
        if not ok then
            ws.log.warn(conn, "cluster-chat: cannot join:", err)
            if conn.data.claimed and not conn.data.nick then
                ws.redis({"ZREM", members_key(conn.data.room), conn.data.claimed})
            end
            conn:close(1013, "the chat is unavailable, try again later")
        end
    end)
end

function on_message(conn, data, kind)
    local nick = conn.data.nick
    if not nick then
        return send_json(conn, {type = "error", from = cjson.null,
                                text = "still joining: wait for the members message"})
    end
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
    local name = conn.data.room
    local msg = cjson.encode({type = "message", from = nick, text = text})
    ws.publish(topic(name), msg, "text", conn)
    -- Into the history without waiting (no callback: an error reply is logged). One node's
    -- commands reach Redis in order, so the history keeps each sender's order.
    local key = history_key(name)
    ws.redis({"LPUSH", key, msg})
    ws.redis({"LTRIM", key, 0, HISTORY - 1})
    ws.redis({"EXPIRE", key, HISTORY_TTL})
end

function on_close(conn)
    local name, nick = conn.data.room, conn.data.nick
    local here = name and rooms[name]
    if not here or here[nick] ~= conn then
        return
    end
    here[nick] = nil
    if next(here) == nil then
        rooms[name] = nil
    end
    ws.redis({"ZREM", members_key(name), nick})
    announce(name, "leave", nick, conn)
end
