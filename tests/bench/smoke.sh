#!/bin/bash
# bench_smoke: starts wsluad on a free port with the benchmark's Lua scripts and runs wsluad-bench
# for a small bounded count in echo and broadcast mode, over ws:// and over wss:// (a certificate
# made here with openssl). wsluad-bench exits non-zero when a message is missing, duplicated or
# altered, or when nothing progresses for 10 s. Never a timing check.
set -euo pipefail
bench=${1:?usage: smoke.sh WSLUAD_BENCH}
: "${WSLUAD_BIN:?WSLUAD_BIN must name the wsluad binary}"
here=$(cd "$(dirname "$0")" && pwd)
log=$(mktemp)
certs=$(mktemp -d)
server=
cleanup() {
    if [[ -n $server ]]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -f "$log"
    rm -rf "$certs"
}
trap cleanup EXIT

# Starts the server (SCRIPT [ARGS...]; default -l 127.0.0.1:0) and sets $port from its
# "listening on 127.0.0.1:PORT" line.
start_server() {
    local line script=$1
    shift
    (($#)) || set -- -l 127.0.0.1:0
    port=
    exec {out}< <(exec "$WSLUAD_BIN" "$@" --static none "$script" 2>&1)
    server=$!
    while IFS= read -r -t 10 -u "$out" line; do
        echo "$line" >>"$log"
        if [[ $line =~ listening\ on\ 127\.0\.0\.1:([0-9]+) ]]; then
            port=${BASH_REMATCH[1]}
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

stop_server() {
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=
}

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
stop_server

start_server "$here/broadcast.lua"
run --mode broadcast --connections 10 --messages 50 --size 20
run --mode broadcast --connections 4 --messages 10 --size 300 --binary
stop_server

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$certs/key.pem" \
    -out "$certs/cert.pem" -days 2 -subj /CN=127.0.0.1 2>/dev/null
tls=(--tls-listen 127.0.0.1:0 --tls-cert "$certs/cert.pem" --tls-key "$certs/key.pem")
start_server "$here/echo.lua" "${tls[@]}"
run --tls --mode echo --connections 10 --messages 2000 --size 20
run --tls --mode echo --connections 3 --messages 60 --size 70000 --binary
run --tls --mode connect-rate --connections 4 --messages 40
stop_server

start_server "$here/broadcast.lua" "${tls[@]}"
run --tls --mode broadcast --connections 10 --messages 50 --size 20
run --tls --mode broadcast --connections 4 --messages 10 --size 300 --binary
stop_server
echo "bench_smoke: passed"
