-- Benchmark echo: every message goes back to its sender unchanged (same kind).
function on_message(conn, data, kind)
    conn:send(data, kind)
end
