#!/usr/bin/env bash
# Every figure of issue 12 in one run, each as a ratio to GET /healthz measured
# in the same run (the machine is shared: absolute numbers mean little).
#
#   bench/all.sh [BUILD_DIR]     (default build-rel: a release build, e.g.
#       meson setup build-rel --buildtype=release -Dc_args=-fno-omit-frame-pointer)
#
# Embedded default (all-in-one, SQLite, in-process events) on loopback:
#   - GET /healthz (the host's ceiling: answered on the event loop), h1 and h2;
#   - GET /rooms?limit=20 and GET /rooms/{id}, straight to the all-in-one host
#     and through a gateway edge (a second bearbnb, no plugin,
#     gateway.routes=/rooms=http://host), over HTTP/1.1 and HTTP/2 (h2c);
#   - bookings/s with POST p50/p99, read-model lag during the load, how long
#     the dashboard and the room counters need after it, RSS after it
#     (tests/e2e/distributed/bench_book.c).
# DISTRIBUTED=1 adds the distributed topology (MariaDB + FerretDB + Kafka from
# `scripts/infra env`, own database names and topic namespace: the e2e
# harness) through bench_saga: bookings/s, POST p99, saga p50/p99, dashboard
# catch-up.
#
# Knobs: DURATION (s per h2load case, 3), CLIENTS (h1 connections, 32),
# H2_CLIENTS (8) x STREAMS (10), BOOK_SECONDS (10), BOOK_WORKERS (16), ROOMS (20);
# GETS=0 skips the GET cases but /healthz, BOOK=0 the bookings.
# h2load comes from Debian's nghttp2-client.
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$ROOT"
BUILD=${1:-build-rel}
BIN=$BUILD/bearbnb
DURATION=${DURATION:-3}
CLIENTS=${CLIENTS:-32}
H2_CLIENTS=${H2_CLIENTS:-8}
STREAMS=${STREAMS:-10}
BOOK_SECONDS=${BOOK_SECONDS:-10}
BOOK_WORKERS=${BOOK_WORKERS:-16}
ROOMS=${ROOMS:-20}

[ -n "${BNB_BENCH_NO_BUILD:-}" ] || [ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" --buildtype=release -Dc_args=-fno-omit-frame-pointer >/dev/null
[ -n "${BNB_BENCH_NO_BUILD:-}" ] || ninja -C "$BUILD" -j2 bearbnb tests/e2e/distributed/bench_book tests/e2e/distributed/bench_saga \
    plugins/room/room.so plugins/reservation/reservation.so plugins/payment/payment.so \
    plugins/dashboard/dashboard.so plugins/notification/notification.so >/dev/null
command -v h2load >/dev/null || { echo "all.sh: h2load missing (apt-get install nghttp2-client)" >&2; exit 2; }
BUILD_ABS=$(cd "$BUILD" && pwd)
export BEARBNB_PLUGIN_DIR=$BUILD_ABS/plugins

TMP=$(mktemp -d /tmp/bnb-bench-all-XXXXXX)
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
    echo "all.sh: nothing ready on :$1; log:" >&2
    tail -20 "$TMP"/*.log >&2
    exit 1
}

SVC=$(free_port)
EDGE=$(free_port)
export BEARBNB_LIMITS_USER_RATE=0 BEARBNB_LIMITS_IP_RATE=0 BEARBNB_LOG_LEVEL=warn
BEARBNB_RESERVATION_MAX_ACTIVE_PER_GUEST=0 \
    "$BIN" --listen "127.0.0.1:$SVC" --data "$TMP/svc" >"$TMP/svc.log" 2>&1 &
SVC_PID=$!
PIDS+=("$SVC_PID")
BEARBNB_PLUGINS= BEARBNB_GATEWAY_ROUTES="/rooms=http://127.0.0.1:$SVC" \
    "$BIN" --listen "127.0.0.1:$EDGE" --data "$TMP/edge" >"$TMP/edge.log" 2>&1 &
PIDS+=($!)
wait_ready "$SVC"
wait_ready "$EDGE"
RSS_IDLE=$(awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$SVC_PID/status")

HOST_TOK=$("$BIN" token --data "$TMP/svc" --sub bench-host --role host)
GUEST_TOK=$("$BIN" token --data "$TMP/svc" --sub bench-guest --role guest)
ROOM_ID=
for i in $(seq 1 "$ROOMS"); do
    id=$(curl -sf -X POST "http://127.0.0.1:$SVC/rooms" -H "Authorization: Bearer $HOST_TOK" \
        -H 'Content-Type: application/json' \
        -d "{\"name\":\"Room $i\",\"description\":\"A bright room with a view of the old town, close to the station and the lake.\",\"city\":\"Bern\",\"pricePerNight\":$((80 + i)),\"capacity\":2}" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    ROOM_ID=${ROOM_ID:-$id}
done
LIST_BYTES=$(curl -s "http://127.0.0.1:$SVC/rooms?limit=20" | wc -c)
ONE_BYTES=$(curl -s "http://127.0.0.1:$SVC/rooms/$ROOM_ID" | wc -c)

# h2load PORT PATH PROTO -> "req/s p50 p99 ok%"
h2() {
    local port=$1 path=$2 proto=$3 log="$TMP/h2load.tsv" out args
    rm -f "$log"
    args=(-D "$DURATION" --log-file="$log")
    if [ "$proto" = h1 ]; then args+=(--h1 -c "$CLIENTS" -m 1); else args+=(-c "$H2_CLIENTS" -m "$STREAMS"); fi
    out=$(h2load "${args[@]}" "http://127.0.0.1:$port$path" 2>&1) || true
    local rps
    rps=$(printf '%s\n' "$out" | sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p')
    sort -t$'\t' -k3,3n "$log" | awk -F'\t' -v rps="${rps:-0}" '
        { d[NR] = $3; if ($2 >= 200 && $2 < 300) ok++ }
        END {
            if (NR == 0) { print 0, 0, 0, 0; exit }
            printf "%.0f %.2f %.2f %.1f\n", rps, d[int((NR - 1) * 0.50) + 1] / 1000, d[int((NR - 1) * 0.99) + 1] / 1000, 100.0 * ok / NR
        }'
}
declare -A R
measure() { # key port path proto
    R[$1]=$(h2 "$2" "$3" "$4")
}
rps() { echo "${R[$1]}" | cut -d' ' -f1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }

echo "bench/all.sh: build $BUILD, $(nproc) cores, ${DURATION}s per GET case, h1 $CLIENTS connections," \
    "h2 $H2_CLIENTS x $STREAMS streams; /rooms?limit=20 $LIST_BYTES bytes, /rooms/{id} $ONE_BYTES bytes"
# The machine is shared: /healthz (h1) is measured again between every two
# cases and each case is divided by the mean of the two around it.
HZN=0
declare -A HZB # key -> the healthz ceiling around it
measure_hz() {
    HZN=$((HZN + 1))
    measure "hz.$HZN" "$SVC" /healthz h1
}
measure_case() { # key port path proto
    local before=$HZN
    measure "$@"
    measure_hz
    HZB[$1]=$(awk -v a="$(rps "hz.$before")" -v b="$(rps "hz.$HZN")" 'BEGIN { printf "%.0f", (a + b) / 2 }')
}
measure_hz
measure_case hz2 "$SVC" /healthz h2
if [ "${GETS:-1}" = 1 ]; then
    measure_case list1 "$SVC" "/rooms?limit=20" h1
    measure_case elist1 "$EDGE" "/rooms?limit=20" h1
    measure_case one1 "$SVC" "/rooms/$ROOM_ID" h1
    measure_case eone1 "$EDGE" "/rooms/$ROOM_ID" h1
    measure_case list2 "$SVC" "/rooms?limit=20" h2
    measure_case elist2 "$EDGE" "/rooms?limit=20" h2
    measure_case one2 "$SVC" "/rooms/$ROOM_ID" h2
    measure_case eone2 "$EDGE" "/rooms/$ROOM_ID" h2
fi
HZ=$(for i in $(seq 1 "$HZN"); do rps "hz.$i"; done | awk '{ s += $1 } END { printf "%.0f", s / NR }')
R[hz1]=$(for i in $(seq 1 "$HZN"); do echo "${R[hz.$i]}"; done |
    awk '{ r += $1; a += $2; b += $3; c += $4 } END { printf "%.0f %.2f %.2f %.1f\n", r / NR, a / NR, b / NR, c / NR }')
HZB[hz1]=$HZ

printf "%-28s %-4s %9s %8s %8s %7s %9s %9s %7s\n" case proto "req/s" "p50 ms" "p99 ms" "2xx" "healthz" "x healthz" target
line() { # label key proto target
    read -r r p50 p99 ok <<<"${R[$2]}"
    printf "%-28s %-4s %9s %8s %8s %6s%% %9s %9s %7s\n" "$1" "$3" "$r" "$p50" "$p99" "$ok" "${HZB[$2]}" \
        "$(ratio "$r" "${HZB[$2]}")" "$4"
}
xhz() { ratio "$(rps "$1")" "${HZB[$1]}"; }
line "GET /healthz (ceiling, mean)" hz1 h1 ""
line "GET /healthz" hz2 h2 ""
if [ "${GETS:-1}" = 1 ]; then
    line "GET /rooms?limit=20" list1 h1 ">=0.5"
    line "GET /rooms?limit=20" list2 h2 ">=0.5"
    line "GET /rooms/{id}" one1 h1 ">=0.7"
    line "GET /rooms/{id}" one2 h2 ">=0.7"
    line "edge GET /rooms?limit=20" elist1 h1 ""
    line "edge GET /rooms?limit=20" elist2 h2 ""
    line "edge GET /rooms/{id}" eone1 h1 ""
    line "edge GET /rooms/{id}" eone2 h2 ""
    echo "edge / direct, each as x healthz (target >= 0.8): rooms h1 $(ratio "$(xhz elist1)" "$(xhz list1)")," \
        "rooms h2 $(ratio "$(xhz elist2)" "$(xhz list2)"), room h1 $(ratio "$(xhz eone1)" "$(xhz one1)")," \
        "room h2 $(ratio "$(xhz eone2)" "$(xhz one2)")"
fi

[ "${BOOK:-1}" = 1 ] || exit 0
PERF_PID=
if [ -n "${PERF_BOOK:-}" ]; then # profile the host during the booking load
    perf record ${PERF_ARGS:--F 999} -g -o "$PERF_BOOK" -p "$SVC_PID" -- sleep "$((BOOK_SECONDS + 5))" \
        >/dev/null 2>&1 &
    PERF_PID=$!
fi
declare -A B
while read -r k v rest; do B[$k]="$v${rest:+ $rest}"; done < <(
    "$BUILD/tests/e2e/distributed/bench_book" "$SVC" "$SVC_PID" "$HOST_TOK" "$GUEST_TOK" "$BOOK_SECONDS" "$BOOK_WORKERS" ||
        echo "failed 1")
[ -z "$PERF_PID" ] || wait "$PERF_PID" || true
[ -z "${B[failed]:-}" ] || echo "all.sh: bench_book reported failures (see above)" >&2
echo "bookings (${B[workers]} workers, ${B[seconds]} s, ${B[bookings]} answered, ${B[bookings_201]} 201," \
    "${B[bookings_failed]} failed):"
echo "  bookings/s ${B[bookings_per_s]} = $(ratio "${B[bookings_per_s]}" "$HZ") x healthz (target >= 0.05);" \
    "POST p50 ${B[post_p50_ms]} ms, p99 ${B[post_p99_ms]} ms (target p99 <= 20)"
echo "  read-model lag during the load (dashboard CONFIRMED after the 201): p50 ${B[lag_p50_ms]} ms," \
    "max ${B[lag_max_ms]} ms over ${B[lag_samples]} samples (target max <= 1000)"
echo "  host CPU per booking (bookings and read models, until caught up): ${B[cpu_ms_per_booking]} ms"
echo "  caught up after the load: dashboard ${B[dashboard_caught_up_s]} s, room counters ${B[rooms_caught_up_s]} s" \
    "(target <= 1)"
echo "  RSS: idle $RSS_IDLE MB, before bookings ${B[rss_before_mb]} MB, at the end ${B[rss_end_mb]} MB," \
    "2 s after ${B[rss_after_mb]} MB (target <= 32)"

if [ "${DISTRIBUTED:-0}" = 1 ]; then
    eval "$(scripts/infra env)"
    echo "distributed (bench_saga, ${BOOK_SECONDS}s, $BOOK_WORKERS workers; targets: >= 500/s = $(ratio 500 55000) x" \
        "a 55k healthz, POST p99 <= 50 ms, saga p99 <= 100 ms, caught up <= 2 s):"
    BEARBNB_BIN=$BUILD_ABS/bearbnb BNB_E2E_TOPOLOGY=distributed \
        "$BUILD/tests/e2e/distributed/bench_saga" "$BOOK_SECONDS" "$BOOK_WORKERS" || true
fi
