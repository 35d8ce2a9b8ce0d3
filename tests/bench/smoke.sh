#!/bin/bash
# bench_smoke: starts wsluad on a free port with the benchmark's Lua scripts and runs wsluad-bench
# for a small bounded count in echo and broadcast mode; then two wsluad nodes sharing a real
# redis-server (started here on a free port in a temporary directory, always stopped) with the
# clients split between them, in chat and latency mode, and checks that each message was one
# Redis PUBLISH; then echo and broadcast again over wss:// (a certificate made here with openssl),
# and with permessage-deflate (plain and over wss://), checking that compressed frames came back.
# wsluad-bench exits non-zero when a message is missing, duplicated, reordered or altered, or when
# nothing progresses for 10 s. Never a timing check.
set -euo pipefail
bench=${1:?usage: smoke.sh WSLUAD_BENCH}
: "${WSLUAD_BIN:?WSLUAD_BIN must name the wsluad binary}"
here=$(cd "$(dirname "$0")" && pwd)
log=$(mktemp)
certs=$(mktemp -d)
servers=()
redis=
redis_dir=
cleanup() {
    local pid
    for pid in "${servers[@]}" $redis; do kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    [[ -z $redis_dir ]] || rm -rf "$redis_dir"
    rm -f "$log"
    rm -rf "$certs"
}
trap cleanup EXIT

# Starts a server with the options and script given (-l 127.0.0.1:0 unless a --tls-listen is
# among them) and sets $port from its "listening on 127.0.0.1:PORT" line.
start_server() {
    local line listen=(-l 127.0.0.1:0)
    [[ " $* " == *" --tls-listen "* ]] && listen=()
    port=
    exec {out}< <(exec "$WSLUAD_BIN" "${listen[@]}" --static none "$@" 2>&1)
    servers+=("$!")
    while IFS= read -r -t 10 -u "$out" line; do
        echo "$line" >>"$log"
        if [[ $line =~ listening\ on\ (wss://)?127\.0\.0\.1:([0-9]+) ]]; then
            port=${BASH_REMATCH[2]}
            break
        fi
    done
    if [[ -z $port ]]; then
        echo "bench_smoke: wsluad did not report its port; its output:" >&2
        cat "$log" >&2
        exit 1
    fi
    cat <&"$out" >>"$log" &   # keep draining its log so it never blocks on a full pipe
}

stop_servers() {
    local pid
    for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${servers[@]}"; do wait "$pid" 2>/dev/null || true; done
    servers=()
}

rcli() { redis-cli -h 127.0.0.1 -p "$redis_port" "$@"; }

start_redis() {
    local i attempt
    redis_dir=$(mktemp -d "${TMPDIR:-/tmp}/wsluad-smoke-redis.XXXXXX")
    for ((attempt = 0; attempt < 5; attempt++)); do # a free port can be taken before redis binds it
        redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
            --dir "$redis_dir" --daemonize no --logfile "$redis_dir/redis.log" </dev/null >/dev/null 2>&1 &
        redis=$!
        for ((i = 0; i < 500; i++)); do
            [[ $(rcli PING 2>/dev/null) == PONG ]] && return 0
            kill -0 "$redis" 2>/dev/null || break
            sleep 0.02 # polling for the condition, with a deadline
        done
        kill -KILL "$redis" 2>/dev/null || true
        wait "$redis" 2>/dev/null || true
        redis=
    done
    echo "bench_smoke: redis-server did not start:" >&2
    cat "$redis_dir/redis.log" >&2
    exit 1
}

# Waits until N nodes have their Redis link up (all three connections ready: a node's publishes
# reach the other nodes from then on).
wait_nodes() {
    local i
    for ((i = 0; i < 500; i++)); do
        (($(grep -c "redis: link up" "$log") >= $1)) && return 0
        sleep 0.02
    done
    echo "bench_smoke: the nodes' Redis links did not come up; log:" >&2
    cat "$log" >&2
    exit 1
}

publishes() { rcli INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_publish:calls=\([0-9]*\).*/\1/p'; }

run() {
    echo "+ wsluad-bench $*"
    if ! "$bench" --port "$port" --timeout 10 "$@"; then
        echo "bench_smoke: wsluad-bench $* failed; server log:" >&2
        cat "$log" >&2
        exit 1
    fi
}

start_server "$here/echo.lua"
run --mode echo --connections 10 --messages 2000 --size 20
run --mode echo --connections 3 --messages 60 --size 70000 --binary
run --mode connect-rate --connections 4 --messages 40
stop_servers

start_server "$here/broadcast.lua"
run --mode broadcast --connections 10 --messages 50 --size 20
run --mode broadcast --connections 4 --messages 10 --size 300 --binary
stop_servers

# A cluster of two nodes: half the clients on each.
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    echo "bench_smoke: redis-server is missing (scripts/setup --test installs it)" >&2
    exit 1
fi
start_redis
start_server --redis "redis://127.0.0.1:$redis_port" "$here/room.lua"
port_a=$port
start_server --redis "redis://127.0.0.1:$redis_port" "$here/room.lua"
port_b=$port
wait_nodes 2
before=$(publishes)
port=$port_a
out=$(run --mode chat --connections 10 --messages 20 --size 20 --port2 "$port_b")
echo "$out"
after=$(publishes)
# 20 rounds of 10 messages, each one ws.publish: one PUBLISH each, whatever the subscribers; and
# the probes by which wsluad-bench saw both nodes pass messages before the first round.
probes=$(sed -n 's/^ *\([0-9]*\) probes sent.*/\1/p' <<<"$out")
if ((${after:-0} - ${before:-0} != 200 + ${probes:-0})); then
    echo "bench_smoke: 200 messages and ${probes:-0} probes made $((${after:-0} - ${before:-0}))" \
        "Redis PUBLISH commands" >&2
    exit 1
fi
# Latency mode counts every delivery, on both nodes; anything missing at the end fails here.
out=$("$bench" --mode latency --connections 8 --senders 4 --rate 200 --duration 1 --json \
    --port "$port_a" --port2 "$port_b" --timeout 10) || { cat "$log" >&2; exit 1; }
echo "+ wsluad-bench --mode latency (2 nodes): $out"
[[ $out == *'"undelivered":0,'* && $out == *'"order_checked":true'* ]] ||
    { echo "bench_smoke: deliveries missing across the nodes" >&2; exit 1; }
stop_servers

# wss://
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$certs/key.pem" \
    -out "$certs/cert.pem" -days 2 -subj /CN=127.0.0.1 2>/dev/null
tls=(--tls-listen 127.0.0.1:0 --tls-cert "$certs/cert.pem" --tls-key "$certs/key.pem")
start_server "${tls[@]}" "$here/echo.lua"
run --tls --mode echo --connections 10 --messages 2000 --size 20
run --tls --mode echo --connections 3 --messages 60 --size 70000 --binary
run --tls --mode connect-rate --connections 4 --messages 40
stop_servers

start_server "${tls[@]}" "$here/broadcast.lua"
run --tls --mode broadcast --connections 10 --messages 50 --size 20
run --tls --mode broadcast --connections 4 --messages 10 --size 300 --binary
stop_servers

# permessage-deflate: the generator sends every message compressed and inflates what comes
# compressed; 1 KiB of chat text must all come back compressed, 20 bytes (under --deflate-min)
# plain.
deflate_run() { # EXPECT_COMPRESSED ARGS...
    local want=$1 out
    shift
    echo "+ wsluad-bench --deflate $*"
    out=$("$bench" --port "$port" --timeout 10 --deflate --json "$@") || { cat "$log" >&2; exit 1; }
    echo "$out"
    if [[ $want == yes && ! ($out =~ \"compressed_in\":[1-9] && $out == *'"plain_in":0,'*) ]] ||
        [[ $want == no && ! ($out == *'"compressed_in":0,'* && $out =~ \"plain_in\":[1-9]) ]]; then
        echo "bench_smoke: expected compressed frames back: $want" >&2
        exit 1
    fi
}
start_server --deflate "$here/echo.lua"
deflate_run yes --mode echo --connections 10 --messages 500 --size 1024 --payload chat
deflate_run no --mode echo --connections 4 --messages 100 --size 20
stop_servers

start_server --deflate "$here/broadcast.lua"
deflate_run yes --mode broadcast --connections 10 --messages 20 --size 1024 --payload chat
stop_servers

start_server --deflate "${tls[@]}" "$here/broadcast.lua"
deflate_run yes --tls --mode broadcast --connections 10 --messages 20 --size 1024 --payload chat
stop_servers
echo "bench_smoke: passed"
