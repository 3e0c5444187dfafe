#!/usr/bin/env bash
# Does a cost grow with history? Issue 10's scale table, loopback, one backend
# per run:
#
#   BACKEND=sqlite|mysql|mongo bench/scale.sh [ROOM_SIZES]
#
# sections (SECTIONS="rooms booking dashboard", each with a host of its own):
#   rooms      GET /rooms?limit=20 and the availability search
#              (GET /rooms?city=Bern&guests=2&checkIn=..&checkOut=..&limit=20)
#              at ROOM_SIZES rooms (default "100 10000 100000"); one bearbnb
#              with the room plugin only; about one room in ten among the first
#              2,000 in list order is booked for the searched stay
#              (ReservationPlaced through POST /admin/events); one host per
#              size, all up at once; h2load on CLIENTS HTTP/1.1 connections,
#              DURATION s per case and size in REPS turns (the sizes take
#              turns, so that the neighbours' load falls on each alike),
#              GET /healthz the same way. The GETs are signed in (a guest):
#              the host's read cache answers anonymous GETs of an SQLite store
#              from memory without asking the store (ANON=1 measures that).
#   booking    POST /reservations (201 CONFIRMED: reservation + payment, one
#              process with room,reservation,payment) on rooms with BOOK_SIZES
#              past reservations (default "10 1000 10000"): BOOKINGS bookings
#              per room one at a time, the rooms interleaved round by round,
#              each a one-night stay of its own; GET /healthz timed in the same
#              rounds.
#   dashboard  the dashboard room view at DASH_SIZES reservations (default
#              "10 10000"): tests/e2e/dashboard/bench_dashboard (what
#              bench/dashboard-scale.sh runs), DASH_REQUESTS requests per size
#              and kind, sizes interleaved, GET /healthz in the same rounds.
# Seeding: rooms and past reservations are written straight into the
# plugin's store by bench/bnb_seed (the documents and claims the plugins
# write, one commit each, SEED_THREADS threads; no HTTP, no events); the
# dashboard's reservations are events (POST /admin/events), as the dashboard
# is fed. Every seeding prints how long it took.
#
# Each figure is printed with its ratio to /healthz of the same run, then a
# summary: per row the p50/p99 at each size and largest/smallest (target:
# at most 1.5). Figures from a sanitizer build mean nothing: the release tree
# $BNB_BENCH_BUILD (default build-release, `meson setup --buildtype=release`)
# is set up on first use.
#
# Backends: sqlite = the embedded default, its files under DATA_ROOT (default
# /dev/shm: tmpfs, so that what grows with the data is not hidden behind the
# disk's fsync; DATA_ROOT=/tmp for the disk). mysql / mongo = the shared
# MariaDB / FerretDB of `scripts/infra env` (never started or stopped here),
# every plugin on that backend, in fresh databases bnb_scale_<pid>_<section>
# dropped at exit. FerretDB commits take ~10-60 ms each on this machine: the
# defaults there take long (seeding 100,000 rooms ~ an hour), so e.g.
#   BACKEND=mongo ROOM_SIZES="100 10000" BOOK_SIZES="10 1000 10000" DASH_SIZES="10 1000" bench/scale.sh
# Knobs: DURATION (6), REPS (3), CLIENTS (8), BOOKINGS (200), DASH_REQUESTS (300),
# SEED_THREADS (4), ANON (0), SECTIONS, ROOM_SIZES, BOOK_SIZES, DASH_SIZES, DATA_ROOT.
# Everything it started is stopped and its temp dirs removed on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$ROOT"
BACKEND=${BACKEND:-sqlite}
ROOM_SIZES=${1:-${ROOM_SIZES:-"100 10000 100000"}}
BOOK_SIZES=${BOOK_SIZES:-"10 1000 10000"}
DASH_SIZES=${DASH_SIZES:-"10 10000"}
SECTIONS=${SECTIONS:-"rooms booking dashboard"}
BUILD=${BNB_BENCH_BUILD:-build-release}
DURATION=${DURATION:-6}
REPS=${REPS:-3}
CLIENTS=${CLIENTS:-8}
BOOKINGS=${BOOKINGS:-200}
DASH_REQUESTS=${DASH_REQUESTS:-300}
SEED_THREADS=${SEED_THREADS:-4}
ANON=${ANON:-0}
if [[ -z ${DATA_ROOT:-} ]]; then
    DATA_ROOT=/tmp
    [[ -d /dev/shm && -w /dev/shm ]] && DATA_ROOT=/dev/shm
fi

for t in h2load curl python3 bc; do
    command -v "$t" >/dev/null || { echo "scale.sh: $t missing (h2load: apt-get install nghttp2-client)" >&2; exit 2; }
done
if [[ ! -f $BUILD/build.ninja ]]; then
    meson setup "$BUILD" --buildtype=release >/dev/null
fi
ninja -C "$BUILD" -j2 bearbnb plugins/room/room.so plugins/reservation/reservation.so plugins/payment/payment.so \
    plugins/dashboard/dashboard.so bench/bnb_seed tests/e2e/dashboard/bench_dashboard >/dev/null
BIN=$ROOT/$BUILD/bearbnb
SEED=$ROOT/$BUILD/bench/bnb_seed
export BEARBNB_PLUGIN_DIR=$ROOT/$BUILD/plugins

TMP=$(mktemp -d "$DATA_ROOT/bnb-bench-scale-XXXXXX")
DBS=()
drop_dbs() {
    local db
    for db in "${DBS[@]}"; do
        if [[ $BACKEND == mysql ]]; then
            python3 - "$BNB_TEST_MYSQL_URL" "$db" <<'EOF' || true
import subprocess, sys, urllib.parse as u
p = u.urlparse(sys.argv[1])
subprocess.run(["mariadb", "-h", p.hostname, "-P", str(p.port or 3306), "-u", p.username or "root"]
               + (["-p" + p.password] if p.password else []) + ["-e", f"DROP DATABASE IF EXISTS `{sys.argv[2]}`"],
               check=False)
EOF
        else
            python3 bench/scale.py drop-mongo "${BNB_TEST_MONGO_URL%/*}/$db" || true
        fi
    done
}
stop_host() { # every host started
    local p
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    PIDS=()
}
cleanup() {
    stop_host
    drop_dbs
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

case $BACKEND in
sqlite) ;;
mysql | mongo)
    eval "$(scripts/infra env)"
    if [[ $BACKEND == mysql ]]; then BASE_URL=${BNB_TEST_MYSQL_URL:-}; else BASE_URL=${BNB_TEST_MONGO_URL:-}; fi
    [[ -n $BASE_URL ]] || { echo "scale.sh: no $BACKEND URL from scripts/infra env" >&2; exit 2; }
    ;;
*)
    echo "scale.sh: BACKEND must be sqlite, mysql or mongo" >&2
    exit 2
    ;;
esac

# backend_env SECTION: sets STORE_ENV (host env) and store_target (for bnb_seed)
STORE_ENV=()
backend_env() {
    STORE_ENV=()
    if [[ $BACKEND != sqlite ]]; then
        local db=bnb_scale_$$_$1
        DBS+=("$db")
        URL="${BASE_URL%/*}/$db"
        STORE_ENV=(BEARBNB_STORAGE_BACKEND="$BACKEND" "BEARBNB_STORAGE_URL=$URL")
    fi
}
store_target() { # STORE -> what bnb_seed opens
    if [[ $BACKEND == sqlite ]]; then echo "$DATA/$1.db"; else echo "$URL"; fi
}

# start_host NAME PLUGINS: one more bearbnb on a free port, data in $DATA,
# storage in database bnb_scale_<pid>_NAME; sets PORT, DATA (and URL)
PIDS=()
start_host() {
    DATA=$TMP/data-$1
    mkdir -p "$DATA"
    backend_env "$1"
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    env BEARBNB_PLUGINS="$2" BEARBNB_ADMIN=1 BEARBNB_LIMITS_USER_RATE=0 BEARBNB_LIMITS_IP_RATE=0 \
        BEARBNB_LOG_LEVEL=warn "${STORE_ENV[@]}" \
        "$BIN" --listen "127.0.0.1:$PORT" --data "$DATA" >"$TMP/host-$1.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 600); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/readyz") == 200 ]] && return 0
        sleep 0.1
    done
    echo "scale.sh: the host did not get ready:" >&2
    tail -20 "$TMP/host-$1.log" >&2
    exit 1
}

seed() { # STORE ARGS... -> runs bnb_seed, says how long it took
    local store=$1
    shift
    local out
    out=$("$SEED" "$BACKEND" "$(store_target "$store")" "$store" "$@" "$SEED_THREADS") ||
        { echo "scale.sh: bnb_seed $store $*: failed" >&2; exit 1; }
    echo "# seeded $store $1: $out" >&2
}

ROWS=$TMP/rows.tsv
: >"$ROWS"
row() { # SECTION CASE SIZE P50 P99 HZ50 HZ99 N [ANSWER_BYTES [HOST_CPU_MS_PER_REQUEST]]
    if [[ $4 == nan ]]; then
        printf "%-9s %-34s %7s   no answer within a turn\n" "$1" "$2" "$3"
        return 0
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "${9:-}" "${10:-}" \
        >>"$ROWS"
    printf "%-9s %-34s %7s %9.2f %9.2f %7.1f %7.1f %7s %s\n" "$1" "$2" "$3" "$4" "$5" \
        "$(echo "$4 / $6" | bc -l)" "$(echo "$5 / $7" | bc -l)" "$8" "${10:+cpu ${10} ms/req}"
}

# cpu_ticks PID: user+system clock ticks the process has used
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# load PORT PATH LOG [PID [TOKEN]]: DURATION/REPS of h2load (signed in with
# TOKEN when given), its per-request log appended to LOG, and the host's CPU
# ticks meanwhile added to LOG.cpu
load() {
    local out t0=0 auth=()
    [[ -n ${4:-} ]] && t0=$(cpu_ticks "$4")
    [[ -n ${5:-} ]] && auth=(-H "Authorization: Bearer $5")
    rm -f "$TMP/h2load.tsv"
    out=$(h2load --h1 -D "$((DURATION * 1000 / REPS))ms" -c "$CLIENTS" -m 1 --log-file="$TMP/h2load.tsv" \
        "${auth[@]}" "http://127.0.0.1:$1$2" 2>&1) || true
    if ! grep -q "status codes: [0-9]* 2xx" <<<"$out"; then
        echo "scale.sh: h2load $2 failed: $out" >&2
        exit 1
    fi
    if grep -q "status codes: 0 2xx" <<<"$out"; then # nothing answered within the turn (FerretDB)
        echo "# $2: no answer within $((DURATION * 1000 / REPS)) ms" >&2
        touch "$3"
        return 0
    fi
    cat "$TMP/h2load.tsv" >>"$3"
    [[ -n ${4:-} ]] && echo $(($(cpu_ticks "$4") - t0)) >>"$3.cpu"
    return 0
}

# cpu_per_req LOG -> host CPU ms per request over the runs of LOG
cpu_per_req() {
    [[ -s $1.cpu ]] || { echo 0; return 0; } # nothing answered within a turn
    awk -v hz="$(getconf CLK_TCK)" -v n="$(wc -l <"$1")" '{ t += $1 } END { printf "%.3f\n", n ? t * 1000 / hz / n : 0 }' "$1.cpu"
}

# percentiles LOG -> "p50 p99 n" in ms ("nan nan 0" when nothing answered)
percentiles() {
    [[ -s $1 ]] || { echo "nan nan 0"; return 0; }
    sort -t$'\t' -k3,3n "$1" | awk -F'\t' '
        { d[NR] = $3; if ($2 < 200 || $2 >= 300) bad++ }
        END { if (bad) { print "non-2xx answers: " bad > "/dev/stderr"; exit 1 }
              printf "%.3f %.3f %d\n", d[int((NR - 1) * 0.50) + 1] / 1000, d[int((NR - 1) * 0.99) + 1] / 1000, NR }'
}

echo "bench/scale.sh: backend $BACKEND, build $BUILD, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
[[ $BACKEND == sqlite ]] && echo "sqlite files under $DATA_ROOT"
printf "%-9s %-34s %7s %9s %9s %7s %7s %7s\n" section case size "p50 ms" "p99 ms" p50/hz p99/hz n

section_rooms() {
    local in out search size booked ports=() hpids=() toks=() k rep c tok
    in=$(date -u -d '+60 days' +%F)
    out=$(date -u -d '+63 days' +%F)
    search="/rooms?city=Bern&guests=2&checkIn=$in&checkOut=$out&limit=20"
    local -a sizes=($ROOM_SIZES)
    # one host (room plugin only) per size, all up at once: the sizes are
    # measured in turns, so that the neighbours' load falls on each alike
    for size in "${sizes[@]}"; do
        start_host "rooms$size" room
        ports+=("$PORT")
        hpids+=("${PIDS[-1]}")
        toks+=("$("$BIN" token --data "$DATA" --sub bench-guest --role guest)")
        seed room rooms "$size" bench-host
        booked=$(python3 bench/scale.py book-search "$PORT" "$in" "$out")
        echo "# $size rooms: $booked booked for the searched stay" >&2
    done
    sleep 1 # the relay delivers the injected events
    echo "# rooms: h2load, $CLIENTS connections, $REPS turns of $((DURATION * 1000 / REPS)) ms per case and size;" \
        "search = GET $search" >&2
    local -a cases=(/healthz "/rooms?limit=20" "$search")
    for c in 0 1 2; do
        for rep in $(seq 1 "$REPS"); do
            for k in "${!sizes[@]}"; do
                tok=
                [[ $c != 0 && $ANON != 1 ]] && tok=${toks[$k]}
                load "${ports[$k]}" "${cases[$c]}" "$TMP/h2-$c-$k.tsv" "${hpids[$k]}" "$tok"
            done
        done
    done
    for k in "${!sizes[@]}"; do
        read -r hz50 hz99 hzn < <(percentiles "$TMP/h2-0-$k.tsv")
        read -r l50 l99 ln < <(percentiles "$TMP/h2-1-$k.tsv")
        read -r s50 s99 sn < <(percentiles "$TMP/h2-2-$k.tsv")
        row rooms "GET /healthz (h2load)" "${sizes[$k]}" "$hz50" "$hz99" "$hz50" "$hz99" "$hzn" "" \
            "$(cpu_per_req "$TMP/h2-0-$k.tsv")"
        row rooms "GET /rooms?limit=20" "${sizes[$k]}" "$l50" "$l99" "$hz50" "$hz99" "$ln" "" \
            "$(cpu_per_req "$TMP/h2-1-$k.tsv")"
        row rooms "availability search" "${sizes[$k]}" "$s50" "$s99" "$hz50" "$hz99" "$sn" "" \
            "$(cpu_per_req "$TMP/h2-2-$k.tsv")"
    done
    stop_host
}

section_booking() {
    start_host booking room,reservation,payment
    local host_tok rooms=() size id ntok
    host_tok=$("$BIN" token --data "$DATA" --sub bench-host --role host)
    for size in $BOOK_SIZES; do
        id=$(curl -sf -H "Authorization: Bearer $host_tok" -H 'Content-Type: application/json' \
            -d '{"name":"Bench room","description":"bench/scale.sh booking","city":"Bern","pricePerNight":9000,"capacity":2}' \
            "http://127.0.0.1:$PORT/rooms" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
        seed reservation reservations "$id" bench-host "$size"
        rooms+=("$size=$id")
    done
    # guests hold at most 9 active reservations each (the default cap is 10)
    ntok=$(((BOOKINGS + 10) * ${#rooms[@]} / 9 + 1))
    for i in $(seq 1 "$ntok"); do
        "$BIN" token --data "$DATA" --sub "bench-g$i" --role guest
    done >"$TMP/tokens"
    echo "# booking: $BOOKINGS bookings per room, one at a time, rooms interleaved" >&2
    python3 bench/scale.py bookings "$PORT" "$BOOKINGS" "$TMP/tokens" "${rooms[@]}" >"$TMP/book.out"
    local hz50 hz99
    while read -r size what p50 p99 n; do
        if [[ $what == healthz ]]; then
            hz50=$p50 hz99=$p99
            [[ $size == "${rooms[0]%%=*}" ]] && row booking "GET /healthz (same rounds)" "$size" "$p50" "$p99" "$p50" "$p99" "$n"
        else
            row booking "POST /reservations" "$size" "$p50" "$p99" "$hz50" "$hz99" "$n"
        fi
    done <"$TMP/book.out"
    stop_host
}

section_dashboard() {
    backend_env dashboard
    local out
    # shellcheck disable=SC2086
    out=$(env TMPDIR="$TMP" "${STORE_ENV[@]}" BEARBNB_BIN="$BIN" BNB_E2E_TOPOLOGY=all-in-one \
        "$ROOT/$BUILD/tests/e2e/dashboard/bench_dashboard" "$DASH_REQUESTS" $DASH_SIZES) ||
        { echo "scale.sh: bench_dashboard failed: $out" >&2; exit 1; }
    grep -F 'loading' <<<"$out" | sed 's/^/# /' >&2 || true
    declare -A hz50 hz99
    while IFS= read -r line; do
        # "<label>  size p50 p99 bytes"
        read -r size p50 p99 bytes < <(awk '{print $(NF-3), $(NF-2), $(NF-1), $NF}' <<<"$line")
        label=$(awk '{NF-=4; print}' <<<"$line")
        [[ $size =~ ^[0-9]+$ && $p50 =~ ^[0-9.]+$ ]] || continue
        if [[ $label == "GET /healthz" ]]; then
            hz50[$size]=$p50 hz99[$size]=$p99
        fi
        row dashboard "${label#GET }" "$size" "$p50" "$p99" "${hz50[$size]}" "${hz99[$size]}" "$DASH_REQUESTS" "$bytes"
    done < <(grep '^GET ' <<<"$out")
}

for s in $SECTIONS; do
    case $s in
    rooms) section_rooms ;;
    booking) section_booking ;;
    dashboard) section_dashboard ;;
    *) echo "scale.sh: unknown section $s" >&2; exit 2 ;;
    esac
done

echo
echo "summary ($BACKEND): p50 / p99 ms per size; largest/smallest size (target <= 1.5)"
python3 - "$ROWS" <<'EOF'
import sys
rows = {}
for line in open(sys.argv[1]):
    sec, case, size, p50, p99, hz50, hz99, n, nb, cpu = line.rstrip("\n").split("\t")
    rows.setdefault((sec, case), []).append((int(size), float(p50), float(p99), float(hz50), float(hz99),
                                             int(nb) if nb else 0, float(cpu) if cpu else 0))
for (sec, case), v in rows.items():
    v.sort()
    cells = "  ".join(f"{s}: {a:.2f}/{b:.2f}" for s, a, b, _, _, _, _ in v)
    r50, r99 = v[-1][1] / v[0][1], v[-1][2] / v[0][2]
    hz = "" if "healthz" in case else f"  (per healthz: {v[0][1] / v[0][3]:.1f} -> {v[-1][1] / v[-1][3]:.1f})"
    ok = "ok" if r50 <= 1.5 else "MISS"
    if v[0][5] and v[-1][5] > 1.5 * v[0][5]:
        ok = f"n/a (answers of {v[0][5]} vs {v[-1][5]} bytes)"
    if v[0][6]:
        hz += f"  (host CPU/request: {v[0][6]:.2f} -> {v[-1][6]:.2f} ms, x{v[-1][6] / v[0][6]:.2f})"
    print(f"{sec:9} {case:34} {cells}  x{r50:.2f} p50, x{r99:.2f} p99 {ok}{hz}")
EOF
