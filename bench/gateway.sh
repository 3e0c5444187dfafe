#!/usr/bin/env bash
# GET /rooms through the gateway edge vs. straight to the service, over
# HTTP/1.1 and HTTP/2 (h2c), with h2load (Debian: nghttp2-client).
#
#   bench/gateway.sh [BUILD_DIR]        (default: build; use a release build)
#
# Starts on loopback: an all-in-one bearbnb (the room service) and an edge
# (no plugin, gateway.routes=/rooms=<scheme>://service), both with the rate
# limits off; seeds a few rooms; then runs h2load for DURATION seconds per
# case and prints req/s, p50 and p99 latency and the share of 2xx answers.
# Everything it started is stopped and its temp dir removed on exit.
#
# Environment: DURATION (5), CLIENTS (16 connections), STREAMS (10 concurrent
# streams per h2 connection; h1 has one), ROOMS (20 seeded), UPSTREAM (http
# or h2c: how the edge talks to the service; default http).
set -euo pipefail

BUILD=${1:-build}
BIN=$BUILD/bearbnb
DURATION=${DURATION:-5}
CLIENTS=${CLIENTS:-16}
STREAMS=${STREAMS:-10}
ROOMS=${ROOMS:-20}
UPSTREAM=${UPSTREAM:-http}

[ -x "$BIN" ] || { echo "gateway.sh: $BIN not found (build first, or pass the build dir)" >&2; exit 2; }
command -v h2load >/dev/null || { echo "gateway.sh: h2load missing (apt-get install nghttp2-client)" >&2; exit 2; }
command -v curl >/dev/null || { echo "gateway.sh: curl missing" >&2; exit 2; }
export BEARBNB_PLUGIN_DIR=${BEARBNB_PLUGIN_DIR:-$BUILD/plugins}

TMP=$(mktemp -d /tmp/bnb-bench-gw-XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_ready() { # port
    for _ in $(seq 1 150); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/readyz")" = 200 ] && return 0
        sleep 0.1
    done
    echo "gateway.sh: nothing ready on :$1; log:" >&2
    tail -20 "$TMP"/*.log >&2
    exit 1
}

SVC=$(free_port)
EDGE=$(free_port)
# the service: all-in-one, limits off (behind the edge every request comes from one address)
BEARBNB_LIMITS_USER_RATE=0 BEARBNB_LIMITS_IP_RATE=0 \
    "$BIN" --listen "127.0.0.1:$SVC" --data "$TMP/svc" >"$TMP/svc.log" 2>&1 &
PIDS+=($!)
# the edge: no plugin, one route
BEARBNB_PLUGINS= BEARBNB_GATEWAY_ROUTES="/rooms=$UPSTREAM://127.0.0.1:$SVC" \
    BEARBNB_LIMITS_USER_RATE=0 BEARBNB_LIMITS_IP_RATE=0 \
    "$BIN" --listen "127.0.0.1:$EDGE" --data "$TMP/edge" >"$TMP/edge.log" 2>&1 &
PIDS+=($!)
wait_ready "$SVC"
wait_ready "$EDGE"

TOKEN=$("$BIN" token --data "$TMP/svc" --sub bench-host --role host)
for i in $(seq 1 "$ROOMS"); do
    curl -sf -o /dev/null -X POST "http://127.0.0.1:$SVC/rooms" -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' \
        -d "{\"name\":\"Room $i\",\"description\":\"bench\",\"city\":\"Bern\",\"pricePerNight\":$((80 + i)),\"capacity\":2}"
done
BYTES=$(curl -s "http://127.0.0.1:$EDGE/rooms" | wc -c)

# run NAME PORT PROTO -> one result line
run() {
    local name=$1 port=$2 proto=$3 log="$TMP/h2load-$1-$3.tsv" out
    local args=(-D "$DURATION" -c "$CLIENTS" --log-file="$log")
    if [ "$proto" = h1 ]; then args+=(--h1 -m 1); else args+=(-m "$STREAMS"); fi
    out=$(h2load "${args[@]}" "http://127.0.0.1:$port/rooms" 2>&1) || true
    local rps
    rps=$(printf '%s\n' "$out" | sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p')
    # per-request log: start_us status duration_us
    sort -t$'\t' -k3,3n "$log" | awk -F'\t' -v name="$name" -v proto="$proto" -v rps="${rps:-0}" '
        { d[NR] = $3; if ($2 >= 200 && $2 < 300) ok++ }
        END {
            if (NR == 0) { printf "%-8s %-4s %10s %10s %10s %8s\n", name, proto, "-", "-", "-", "0"; exit }
            p50 = d[int((NR - 1) * 0.50) + 1] / 1000; p99 = d[int((NR - 1) * 0.99) + 1] / 1000
            printf "%-8s %-4s %10.0f %10.2f %10.2f %7.1f%%\n", name, proto, rps, p50, p99, 100.0 * ok / NR
        }'
}

echo "GET /rooms ($ROOMS rooms, $BYTES bytes), ${DURATION}s per case, $CLIENTS connections," \
    "h2: $STREAMS streams each; edge -> service over $UPSTREAM"
printf "%-8s %-4s %10s %10s %10s %8s\n" path proto "req/s" "p50 ms" "p99 ms" "2xx"
run direct "$SVC" h1
run edge "$EDGE" h1
run direct "$SVC" h2
run edge "$EDGE" h2
