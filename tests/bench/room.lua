-- Benchmark room: every client is in one room (a topic), and each message goes to everyone else
-- in it; with --redis on every node of the cluster, through one Redis PUBLISH per message.
function on_open(conn)
    conn:subscribe("room")
end

function on_message(conn, data, kind)
    ws.publish("room", data, kind, conn)
end
