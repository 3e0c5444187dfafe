#!/usr/bin/env bash
# Idle cost with many stored payments (issue 17): CPU of one bearbnb (room,
# reservation, payment; in-process events) and of its database server while
# nothing happens, with STORED payments in the store, for MariaDB and
# MongoDB (FerretDB), at the outbox relay's default poll interval (a safety
# net: commits wake the relay) and at the old 200 ms.
#   bench/idle.sh [STORED=100000] [SECONDS=30]
# One payment is made through the API, then copied STORED times straight
# into the store (SQL INSERT ... SELECT; bench/seed_copies.c for MongoDB):
# minutes instead of hours of sagas. Needs the servers of `scripts/infra env`
# (MariaDB, FerretDB) up. The database servers may be shared: their CPU is
# also measured over the same time with no bearbnb running (baseline).
# Release build in $BNB_BENCH_BUILD (default build-bench).
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$ROOT"
STORED=${1:-100000}
SECS=${2:-30}
BUILD=${BNB_BENCH_BUILD:-build-bench}
if [[ ! -f $BUILD/build.ninja ]]; then
    meson setup "$BUILD" -Dbuildtype=release >/dev/null
fi
ninja -C "$BUILD" -j2 bearbnb plugins/room/room.so plugins/reservation/reservation.so \
    plugins/payment/payment.so >/dev/null
BIN=$ROOT/$BUILD/bearbnb
eval "$(scripts/infra env)"
W=$(mktemp -d /tmp/bnb-idle.XXXXXX)
PID=""
cleanup() {
    [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT
cc -O2 -o "$W/seed_copies" bench/seed_copies.c $(pkg-config --cflags --libs libmongoc-1.0)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

ticks() { # pid -> utime+stime in clock ticks
    awk '{print $14 + $15}' "/proc/$1/stat"
}
server_pid() { # port -> pid of the listening process
    ss -ltnpH "sport = :$1" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -n 1
}
HZ=$(getconf CLK_TCK)
pct() { # ticks seconds -> % of one core
    awk -v t="$1" -v s="$2" -v hz="$HZ" 'BEGIN { printf "%.2f", 100 * t / hz / s }'
}

start_host() { # backend url interval
    BEARBNB_PLUGINS=room,reservation,payment BEARBNB_STORAGE_BACKEND=$1 BEARBNB_STORAGE_URL=$2 \
        BEARBNB_EVENTS_RELAY_INTERVAL_MS=$3 BEARBNB_LIMITS_USER_RATE=0 BEARBNB_LIMITS_IP_RATE=0 \
        BEARBNB_PLUGIN_DIR=$ROOT/$BUILD/plugins \
        "$BIN" --listen "127.0.0.1:$PORT" --data "$W/data" >>"$W/host.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 300); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/readyz") == 200 ]] && return 0
        sleep 0.1
    done
    echo "idle: bearbnb did not get ready (log $W/host.log)" >&2
    tail -n 20 "$W/host.log" >&2
    exit 1
}
stop_host() {
    kill "$PID" && wait "$PID" 2>/dev/null || true
    PID=""
}

measure() { # label db_port (bearbnb: $PID, none when empty)
    local db b0=0 d0 b1=0 d1 bp=-
    db=$(server_pid "$2")
    [[ -n $PID ]] && b0=$(ticks "$PID")
    d0=$(ticks "$db")
    sleep "$SECS"
    [[ -n $PID ]] && b1=$(ticks "$PID") && bp=$(pct $((b1 - b0)) "$SECS")
    d1=$(ticks "$db")
    printf '%-40s bearbnb %6s %%   database server %6s %%\n' "$1" "$bp" "$(pct $((d1 - d0)) "$SECS")"
}

one_payment() {
    local tok gtok room day
    tok=$("$BIN" token --sub idle-host --role host --data "$W/data")
    gtok=$("$BIN" token --sub idle-guest --role guest --data "$W/data")
    room=$(curl -sf -H "Authorization: Bearer $tok" -H 'Content-Type: application/json' \
        -d '{"name":"Idle","description":"bench","city":"Bern","pricePerNight":5000,"capacity":2}' \
        "http://127.0.0.1:$PORT/rooms" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    day=$(date -u -d '+30 days' +%F)
    for _ in $(seq 1 100); do # the reservation service learns the room from its event
        code=$(curl -s -o "$W/booking" -w '%{http_code}' -H "Authorization: Bearer $gtok" \
            -H 'Content-Type: application/json' \
            -d "{\"roomId\":\"$room\",\"checkIn\":\"$day\",\"checkOut\":\"$(date -u -d '+31 days' +%F)\",\"guests\":1,\"card\":{\"number\":\"4111111111111111\"}}" \
            "http://127.0.0.1:$PORT/reservations")
        [[ $code == 201 ]] && return 0
        sleep 0.1
    done
    echo "idle: booking failed ($code: $(cat "$W/booking"))" >&2
    exit 1
}

seed() { # backend db
    local t0=$SECONDS
    if [[ $1 == mongo ]]; then
        "$W/seed_copies" "${BNB_TEST_MONGO_URL%/*}" "$2" payments "$STORED" >/dev/null
    else
        local my=(mariadb --protocol=TCP -h127.0.0.1 -P3306 -uroot "$2")
        local t cols sel
        t=$("${my[@]}" -N -e "SHOW TABLES LIKE '%payments'" | head -n 1)
        cols=$("${my[@]}" -N -e "SELECT GROUP_CONCAT(CONCAT('\`',column_name,'\`') ORDER BY ordinal_position)
            FROM information_schema.columns WHERE table_schema=DATABASE() AND table_name='$t'")
        sel=$("${my[@]}" -N -e "SELECT GROUP_CONCAT(IF(data_type IN ('varchar','varbinary','text','longtext'),
            CONCAT('CONCAT(\`',column_name,'\`,''-s'',seq)'), CONCAT('\`',column_name,'\`')) ORDER BY ordinal_position)
            FROM information_schema.columns WHERE table_schema=DATABASE() AND table_name='$t'")
        "${my[@]}" -e "INSERT INTO \`$t\` ($cols) SELECT $sel FROM \`$t\` JOIN seq_1_to_$STORED LIMIT $STORED"
    fi
    echo "  seeded $STORED payments in $((SECONDS - t0)) s" >&2
}

echo "idle: $SECS s per line, $STORED stored payments, release build $BUILD"
for backend in mysql mongo; do
    db=bnb_idle_$$_$backend
    if [[ $backend == mongo ]]; then
        url=${BNB_TEST_MONGO_URL%/*}/$db dbport=27017
    else
        url=${BNB_TEST_MYSQL_URL%/*}/$db dbport=3306
    fi
    rm -rf "$W/data"
    mkdir -p "$W/data"
    measure "$backend: no bearbnb (baseline)" "$dbport"
    start_host "$backend" "$url" 10000
    one_payment
    seed "$backend" "$db"
    for interval in 10000 200; do
        [[ -n $PID ]] || start_host "$backend" "$url" "$interval"
        sleep 2 # start-up work done
        measure "$backend: relay poll every $interval ms" "$dbport"
        stop_host
    done
    if [[ $backend == mongo ]]; then
        "$W/seed_copies" "${BNB_TEST_MONGO_URL%/*}" "$db" --drop 0 || true
    else
        mariadb --protocol=TCP -h127.0.0.1 -P3306 -uroot -e "DROP DATABASE \`$db\`" || true
    fi
done
