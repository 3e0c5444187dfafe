#!/usr/bin/env bash
# Room list and availability search at 100 / 10,000 / 100,000 rooms, loopback.
#
#   bench/scale.sh [SIZES="100 10000 100000"]
#
# Builds a release (no sanitizer) tree in $BNB_BENCH_BUILD (default
# build-bench) on first use, starts one bearbnb with the room plugin only
# (embedded SQLite, rate limits off, admin on), and for each size:
#   1. seeds rooms through the API up to that size (POST /rooms with h2load);
#   2. books about one room in ten among the first 2,000 in list order (a
#      ReservationPlaced event per room through POST /admin/events: the
#      availability read model is fed as by the reservation service);
#   3. measures with h2load (DURATION s each, CLIENTS HTTP/1.1 connections):
#      GET /healthz, GET /rooms?limit=20, and the availability search
#      GET /rooms?city=Bern&guests=2&checkIn=..&checkOut=..&limit=20;
# and prints p50 / p99 (ms) of each, and each as a ratio to /healthz of the
# same run (so a slower machine does not read as a regression).
# BACKEND=mysql runs the same against MariaDB (BNB_TEST_MYSQL_URL from
# scripts/infra env; a fresh database, dropped at exit).
# Everything it started is stopped and its temp dir removed on exit.
# Knobs: DURATION (5), CLIENTS (8), SEED_CLIENTS (8), BACKEND (sqlite).
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$ROOT"
SIZES=${1:-"100 10000 100000"}
BUILD=${BNB_BENCH_BUILD:-build-bench}
DURATION=${DURATION:-5}
CLIENTS=${CLIENTS:-8}
SEED_CLIENTS=${SEED_CLIENTS:-8}
BACKEND=${BACKEND:-sqlite}

command -v h2load >/dev/null || { echo "scale.sh: h2load missing (apt-get install nghttp2-client)" >&2; exit 2; }
command -v curl >/dev/null || { echo "scale.sh: curl missing" >&2; exit 2; }
command -v python3 >/dev/null || { echo "scale.sh: python3 missing" >&2; exit 2; }
if [[ ! -f $BUILD/build.ninja ]]; then
    meson setup "$BUILD" -Dbuildtype=release >/dev/null
fi
ninja -C "$BUILD" -j2 bearbnb plugins/room/room.so >/dev/null
BIN=$ROOT/$BUILD/bearbnb
export BEARBNB_PLUGIN_DIR=$ROOT/$BUILD/plugins

TMP=$(mktemp -d /tmp/bnb-bench-scale-XXXXXX)
PID=
DB=
cleanup() {
    if [[ -n $PID ]]; then
        kill -TERM "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    if [[ -n $DB ]]; then
        python3 "$TMP/drop.py" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ENV=(BEARBNB_PLUGINS=room BEARBNB_ADMIN=1 BEARBNB_LIMITS_USER_RATE=0 BEARBNB_LIMITS_IP_RATE=0 BEARBNB_LOG_LEVEL=warn)
if [[ $BACKEND == mysql ]]; then
    eval "$(scripts/infra env)"
    [[ -n ${BNB_TEST_MYSQL_URL:-} ]] || { echo "scale.sh: BNB_TEST_MYSQL_URL unset (scripts/infra env)" >&2; exit 2; }
    DB=bnb_scale_$$
    URL="${BNB_TEST_MYSQL_URL%/*}/$DB"
    cat >"$TMP/drop.py" <<EOF
import subprocess, urllib.parse as u
p = u.urlparse("$BNB_TEST_MYSQL_URL")
subprocess.run(["mariadb", "-h", p.hostname, "-P", str(p.port or 3306), "-u", p.username or "root"]
               + (["-p" + p.password] if p.password else []) + ["-e", "DROP DATABASE IF EXISTS $DB"], check=False)
EOF
    ENV+=(BEARBNB_STORAGE_BACKEND=mysql "BEARBNB_STORAGE_URL=$URL")
elif [[ $BACKEND != sqlite ]]; then
    echo "scale.sh: BACKEND must be sqlite or mysql" >&2
    exit 2
fi
env "${ENV[@]}" "$BIN" --listen "127.0.0.1:$PORT" --data "$TMP/data" >"$TMP/host.log" 2>&1 &
PID=$!
for _ in $(seq 1 300); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/readyz") == 200 ]] && break
    sleep 0.1
done
[[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/readyz") == 200 ]] ||
    { echo "scale.sh: the host did not get ready:" >&2; tail -20 "$TMP/host.log" >&2; exit 1; }
TOKEN=$("$BIN" token --data "$TMP/data" --sub bench-host --role host)
printf '{"name":"Bench room","description":"seeded by bench/scale.sh","city":"Bern","pricePerNight":9000,"capacity":2}' \
    >"$TMP/room.json"

# stay searched and booked: 60 .. 63 days from now
IN=$(date -u -d '+60 days' +%F)
OUT=$(date -u -d '+63 days' +%F)
SEARCH="/rooms?city=Bern&guests=2&checkIn=$IN&checkOut=$OUT&limit=20"

# book.py PORT IN OUT: a ReservationPlaced for every 10th of the first 2,000 rooms in list order
cat >"$TMP/book.py" <<'EOF'
import http.client, json, sys, urllib.parse
port, cin, cout = int(sys.argv[1]), sys.argv[2], sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port)
def req(method, path, body=None):
    c.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
    r = c.getresponse()
    data = r.read()
    if r.status >= 300:
        sys.exit(f"{method} {path}: {r.status} {data[:200]!r}")
    return json.loads(data) if data else None
ids, cursor = [], None
while len(ids) < 2000:
    page = req("GET", "/rooms?limit=100" + ("&cursor=" + urllib.parse.quote(cursor, safe="") if cursor else ""))
    ids += [r["id"] for r in page["items"]]
    cursor = page["next"]
    if not cursor:
        break
for n, rid in enumerate(ids[:2000]):
    if n % 10:
        continue
    ev = {"id": f"bench-placed-{rid}", "type": "ReservationPlaced", "source": "reservation", "subject": f"bench-{rid}",
          "correlationId": f"bench-{rid}", "time": "2026-01-01T00:00:00Z",
          "data": {"id": f"bench-{rid}", "roomId": rid, "hostId": "bench-host", "guestId": "bench-guest",
                   "checkIn": cin, "checkOut": cout, "guests": 2, "amount": 27000, "status": "PENDING", "version": 1}}
    req("POST", "/admin/events?topic=bearbnb.reservation", json.dumps(ev))
print(len(ids[:2000:10]))
EOF

# measure NAME PATH -> "p50 p99" in ms (h2load per-request log)
measure() {
    local log="$TMP/h2load-$1.tsv" out
    rm -f "$log"
    out=$(h2load --h1 -D "$DURATION" -c "$CLIENTS" -m 1 --log-file="$log" "http://127.0.0.1:$PORT$2" 2>&1) || true
    if ! grep -q "status codes: [0-9]* 2xx" <<<"$out" || grep -q "status codes: 0 2xx" <<<"$out"; then
        echo "scale.sh: h2load $2 failed: $out" >&2
        exit 1
    fi
    sort -t$'\t' -k3,3n "$log" | awk -F'\t' '
        { d[NR] = $3; if ($2 < 200 || $2 >= 300) bad++ }
        END { if (bad) { print "non-2xx answers: " bad > "/dev/stderr"; exit 1 }
              printf "%.3f %.3f %d\n", d[int((NR - 1) * 0.50) + 1] / 1000, d[int((NR - 1) * 0.99) + 1] / 1000, NR }'
}

echo "bench/scale.sh: backend $BACKEND, build $BUILD, ${DURATION}s per case, $CLIENTS HTTP/1.1 connections;"
echo "search = GET $SEARCH (about 1 in 10 of the first rooms booked for it)"
printf "%8s  %-12s %9s %9s %9s %9s %9s\n" rooms case "p50 ms" "p99 ms" "p50/hz" "p99/hz" requests
have=0
for size in $SIZES; do
    need=$((size - have))
    if ((need > 0)); then
        t0=$(date +%s.%N)
        out=$(h2load --h1 -n "$need" -c "$SEED_CLIENTS" -m 1 -d "$TMP/room.json" \
            -H 'Content-Type: application/json' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/rooms" 2>&1)
        ok=$(sed -n 's/.*status codes: \([0-9]*\) 2xx.*/\1/p' <<<"$out")
        [[ $ok == "$need" ]] || { echo "scale.sh: seeding: $out" >&2; exit 1; }
        t1=$(date +%s.%N)
        have=$size
        echo "# seeded $need rooms in $(printf '%.1f' "$(echo "$t1 - $t0" | bc)") s" >&2
    fi
    booked=$(python3 "$TMP/book.py" "$PORT" "$IN" "$OUT")
    sleep 1 # the relay delivers the injected events
    read -r hz50 hz99 hzn < <(measure healthz /healthz)
    read -r l50 l99 ln < <(measure list "/rooms?limit=20")
    read -r s50 s99 sn < <(measure search "$SEARCH")
    printf "%8d  %-12s %9.2f %9.2f %9s %9s %9d\n" "$size" healthz "$hz50" "$hz99" 1.0 1.0 "$hzn"
    printf "%8d  %-12s %9.2f %9.2f %9.1f %9.1f %9d\n" "$size" "rooms?limit" "$l50" "$l99" \
        "$(echo "$l50 / $hz50" | bc -l)" "$(echo "$l99 / $hz99" | bc -l)" "$ln"
    printf "%8d  %-12s %9.2f %9.2f %9.1f %9.1f %9d\n" "$size" search "$s50" "$s99" \
        "$(echo "$s50 / $hz50" | bc -l)" "$(echo "$s99 / $hz99" | bc -l)" "$sn"
    echo "# $size rooms: $booked booked for the searched stay" >&2
done
