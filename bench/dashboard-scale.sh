#!/usr/bin/env bash
# Dashboard scale benchmark, loopback only: p50/p99 of the dashboard room view
# (GET /dashboard/rooms/{id}, and the first/second page of
# GET /dashboard/rooms/{id}/reservations as the room's host and as one guest)
# for a room with 10 and with 10,000 reservations, plus the per-event cost of
# applying more events to that room. The reservations are injected as events
# (POST /admin/events), so the dashboard is measured alone.
#   bench/dashboard-scale.sh [REQUESTS=500] [SIZES...=10 10000]
# Builds a release (no sanitizer) build in $BNB_BENCH_BUILD (default
# build-bench) on first use. Embedded default (SQLite, all-in-one) unless
# BNB_E2E_TOPOLOGY=distributed (the dashboard then on MongoDB/FerretDB behind
# Kafka: needs `eval "$(scripts/infra env)"`; this script never starts or
# stops servers). bench/scale.sh may call it as one of its sections.
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$ROOT"
REQUESTS=${1:-500}
shift || true
BUILD=${BNB_BENCH_BUILD:-build-bench}

if [[ ! -f $BUILD/build.ninja ]]; then
    meson setup "$BUILD" -Dbuildtype=release >/dev/null
fi
ninja -C "$BUILD" -j2 bearbnb tests/e2e/dashboard/bench_dashboard plugins/dashboard/dashboard.so \
    plugins/room/room.so plugins/reservation/reservation.so plugins/payment/payment.so \
    plugins/notification/notification.so >/dev/null

export BEARBNB_BIN=$ROOT/$BUILD/bearbnb BEARBNB_PLUGIN_DIR=$ROOT/$BUILD/plugins
export BNB_E2E_TOPOLOGY=${BNB_E2E_TOPOLOGY:-all-in-one}
exec "$ROOT/$BUILD/tests/e2e/dashboard/bench_dashboard" "$REQUESTS" "$@"
