#!/usr/bin/env bash
# Saga benchmark, all-in-one vs distributed, loopback only, < 2 minutes:
# bookings per second and end-to-end saga latency (POST /reservations ->
# reservation CONFIRMED visible on GET /dashboard/rooms/{id}/reservations as
# the room's host), p50/p99.
#   bench/saga.sh [SECONDS=10] [WORKERS=4]
# Builds a release (no sanitizer) build in $BNB_BENCH_BUILD (default
# build-bench) on first use. The distributed run needs MariaDB, Kafka and
# FerretDB: started with scripts/infra when down, and stopped again after.
# Both runs switch the host's rate limits off (BEARBNB_LIMITS_USER_RATE=0,
# BEARBNB_LIMITS_IP_RATE=0) and the per-guest cap of active reservations
# (BEARBNB_RESERVATION_MAX_ACTIVE_PER_GUEST=0): see tests/e2e/distributed/bench_saga.c.
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$ROOT"
SECONDS_RUN=${1:-10}
WORKERS=${2:-4}
BUILD=${BNB_BENCH_BUILD:-build-bench}

if [[ ! -f $BUILD/build.ninja ]]; then
    meson setup "$BUILD" -Dbuildtype=release >/dev/null
fi
ninja -C "$BUILD" -j2 bearbnb tests/e2e/distributed/bench_saga \
    plugins/room/room.so plugins/reservation/reservation.so plugins/payment/payment.so \
    plugins/dashboard/dashboard.so plugins/notification/notification.so >/dev/null

export BEARBNB_BIN=$ROOT/$BUILD/bearbnb BEARBNB_PLUGIN_DIR=$ROOT/$BUILD/plugins
BENCH=$ROOT/$BUILD/tests/e2e/distributed/bench_saga

echo "bench: $SECONDS_RUN s of load, then sagas one at a time, per mode; $WORKERS workers; build $BUILD"
BNB_E2E_TOPOLOGY=all-in-one "$BENCH" "$SECONDS_RUN" "$WORKERS"

started=()
status=$(scripts/infra status 2>/dev/null || true)
for s in mariadb kafka ferretdb; do
    if ! grep -q "^$s: up" <<<"$status"; then
        scripts/infra up "$s" >&2
        started+=("$s")
    fi
done
cleanup() { ((${#started[@]} == 0)) || scripts/infra down "${started[@]}" >&2 || true; }
trap cleanup EXIT
eval "$(scripts/infra env)"
BNB_E2E_TOPOLOGY=distributed "$BENCH" "$SECONDS_RUN" "$WORKERS"
