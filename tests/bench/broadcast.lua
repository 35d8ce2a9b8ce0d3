-- Benchmark broadcast: every message goes to every connection, the sender included.
function on_message(conn, data, kind)
    ws.broadcast(data, kind)
end
