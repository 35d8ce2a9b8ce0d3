-- auth.lua: an upgrade hook that lets in only clients with a known token, from allowed origins.
--
-- Run it (from the source tree):
--     wsluad examples/auth.lua
-- Try it:
--     websocat 'ws://127.0.0.1:8080/'                     refused: 401 (no token)
--     websocat 'ws://127.0.0.1:8080/?token=wrong'         refused: 401 (unknown token)
--     websocat 'ws://127.0.0.1:8080/?token=alice-secret'  accepted: "welcome, alice"
--     websocat -H 'Cookie: token=bob-secret' ws://127.0.0.1:8080/      accepted as bob
--     websocat -H 'Origin: https://evil.example' 'ws://127.0.0.1:8080/?token=alice-secret'
--                                                        refused: 403 (origin not allowed)
-- Once in, every line you send goes to the other signed-in users as "NAME: text".
--
-- The token comes from the query (?token=...) or from a cookie named "token" (what a page on an
-- allowed origin would set). Browsers always send Origin, and a page on another site must not be
-- able to ride on a user's cookie, so a present Origin has to be on the allow-list. Clients
-- that send no Origin at all are not browsers (they could claim any origin anyway) and are let
-- through on their token alone. The tokens below are examples: keep real ones out of the script.

local TOKENS = {
    ["alice-secret"] = "alice",
    ["bob-secret"] = "bob",
}

local ALLOWED_ORIGINS = {
    ["http://127.0.0.1:8080"] = true,
    ["http://localhost:8080"] = true,
}

local function unescape(s)
    return (s:gsub("%%(%x%x)", function(h)
        return string.char(tonumber(h, 16))
    end))
end

local function token_from_query(query)
    for k, v in (query or ""):gmatch("([^&=]+)=?([^&]*)") do
        if k == "token" then
            return unescape(v)
        end
    end
end

local function token_from_cookie(cookie)
    -- Cookie: a=1; token=abc; b=2
    for k, v in (cookie or ""):gmatch("([^;=%s]+)=([^;]*)") do
        if k == "token" then
            return (v:match("^%s*(.-)%s*$"))
        end
    end
end

function on_upgrade(req)
    if req.origin and req.origin ~= "" and not ALLOWED_ORIGINS[req.origin] then
        ws.log.warn("refused " .. tostring(req.remote) .. ": origin " .. req.origin .. " is not allowed")
        return false, 403, "origin not allowed"
    end
    local token = token_from_query(req.query) or token_from_cookie(req.headers["cookie"])
    local user = token and TOKENS[token]
    if not user then
        return false, 401, "a valid token is required (?token=... or a 'token' cookie)"
    end
    req.data.user = user -- becomes conn.data.user
end

function on_open(conn)
    ws.log("signed in: " .. conn.data.user .. " from " .. conn.remote)
    conn:send("welcome, " .. conn.data.user)
end

function on_message(conn, data, kind)
    if kind == "text" then
        ws.broadcast(conn.data.user .. ": " .. data, "text", conn)
    end
end
