-- publish-api.lua: topics that browsers follow over WebSocket and that a backend feeds with plain
-- HTTP requests, on the same port.
--
-- Run it (from the source tree), with the secret a backend must present:
--     PUBLISH_SECRET=change-me wsluad examples/publish-api.lua
-- Follow a topic (any number of clients; what one of them sends reaches the others):
--     websocat ws://127.0.0.1:8080/topic/news
-- Publish to it from a backend:
--     curl -H 'Authorization: Bearer change-me' --data-binary 'hello' \
--          'http://127.0.0.1:8080/publish?topic=news'
-- which answers 200 with the number of this node's subscribers it reached ("1"), 401 without
-- the secret, 400 without a valid topic, 405 for a method other than POST. A load balancer's
-- health check:
--     curl http://127.0.0.1:8080/health                    answers 200 "ok"
--
-- The secret comes from the environment, never from the script; without PUBLISH_SECRET every
-- publish is refused. A topic name is 1-64 of A-Z a-z 0-9 _ . -; a WebSocket connects to
-- /topic/NAME (other paths are refused with 404). A body that is valid UTF-8 goes out as a text
-- message, any other as a binary one; bodies are limited by --max-request-body (default 1M).
-- With --redis, ws.publish reaches the subscribers on every node.

local SECRET = os.getenv("PUBLISH_SECRET") or ""
if SECRET == "" then
    ws.log.warn("publish-api.lua: PUBLISH_SECRET is not set: every publish is refused")
end

local function valid_topic(name)
    return name ~= nil and #name >= 1 and #name <= 64 and name:find("^[%w_.-]+$") ~= nil
end

-- The same time whatever the token, so a caller cannot find the secret a byte at a time.
local function same(a, b)
    if #a ~= #b then
        return false
    end
    local diff = 0
    for i = 1, #a do
        diff = diff | (a:byte(i) ~ b:byte(i))
    end
    return diff == 0
end

local function authorized(req)
    local token = (req.headers["authorization"] or ""):match("^[Bb]earer%s+(%S+)$")
    return SECRET ~= "" and token ~= nil and same(token, SECRET)
end

local function query_param(query, key)
    for k, v in query:gmatch("([^&=]+)=?([^&]*)") do
        if k == key then
            return v
        end
    end
end

local function publish(req)
    if req.method ~= "POST" then
        return 405, "use POST\n", {["Allow"] = "POST"}
    end
    if not authorized(req) then
        return 401, "a valid 'Authorization: Bearer <secret>' is required\n",
            {["WWW-Authenticate"] = 'Bearer realm="publish"'}
    end
    local topic = query_param(req.query, "topic")
    if not valid_topic(topic) then
        return 400, "?topic=NAME is required (1-64 of A-Z a-z 0-9 _ . -)\n"
    end
    local kind = utf8.len(req.body) and "text" or "binary"
    local n = ws.publish(topic, req.body, kind)
    ws.log.debug("published", #req.body, "bytes to", topic, "for", req.remote, "reached", n)
    return 200, n .. "\n"
end

function on_request(req)
    if req.path == "/publish" then
        return publish(req)
    end
    if req.path == "/health" and (req.method == "GET" or req.method == "HEAD") then
        return 200, "ok\n"
    end
    -- anything else: the server answers (the bundled pages for GET, else 404)
end

function on_upgrade(req)
    local topic = req.path:match("^/topic/(.+)$")
    if not valid_topic(topic) then
        return false, 404, "connect to /topic/NAME"
    end
    req.data.topic = topic
end

function on_open(conn)
    conn:subscribe(conn.data.topic)
    ws.log(conn, "follows", conn.data.topic)
end

function on_message(conn, data, kind)
    ws.publish(conn.data.topic, data, kind, conn)
end
