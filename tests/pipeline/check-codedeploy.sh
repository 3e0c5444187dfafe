#!/bin/sh
# Runs the CodeDeploy hooks for real against a temporary root on loopback, the
# way the CodeDeploy agent drives them (tests/pipeline/codedeploy_agent.py):
#   1. first install of release v1;
#   2. upgrade to v2 under a steady request stream: zero failed requests, and
#      the serving process is v2's program;
#   3. v3, whose configuration leaves the room plugin out (it starts, is live
#      and ready, but GET /rooms is 404): ValidateService fails, the automatic
#      rollback redeploys v2, which serves again;
#   4. v4, whose token keys come from a JWKS URL that does not answer (it
#      starts but never gets ready; a Kafka broker that does not answer would
#      not do: a service stays ready without it, issue 17): ApplicationStart waits for "ready", gives
#      up after BEARBNB_START_TIMEOUT while v2 keeps serving; rolled back.
#   During 3 and 4 a /healthz stream must see no failure (the socket is held).
# Needs: a built bearbnb (BNB_BUILD_ROOT), supervisor, curl (scripts/deploy-deps).
set -u
SRC=${BNB_SOURCE_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${BNB_BUILD_ROOT:-$SRC/build}
PY=$SRC/.deps/venv/bin/python
BAD_VALIDATE=${BAD_VALIDATE:-BEARBNB_PLUGINS=payment,reservation,dashboard}
BAD_START=${BAD_START:-BEARBNB_AUTH_JWKS_URL=http://127.0.0.1:9/certs}
# how long ApplicationStart waits for a new release to be ready (hook default 60 s)
export BEARBNB_START_TIMEOUT=${BEARBNB_START_TIMEOUT:-15}
for t in supervisord supervisorctl curl; do
    command -v $t >/dev/null || { echo "check-codedeploy: $t missing: run scripts/deploy-deps" >&2; exit 77; }
done
[ -x "$PY" ] || { echo "check-codedeploy: $PY missing: run scripts/deploy-deps" >&2; exit 77; }
[ -x "$BUILD/bearbnb" ] || { echo "check-codedeploy: no $BUILD/bearbnb" >&2; exit 77; }

W=$(mktemp -d /tmp/bearbnb-codedeploy.XXXXXX)
ROOT=$W/root
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
LOOP_PID=""
cleanup() {
    [ -n "$LOOP_PID" ] && kill "$LOOP_PID" 2>/dev/null
    if [ -S "$ROOT/run/bearbnb/supervisor.sock" ]; then
        supervisorctl -c "$ROOT/etc/bearbnb/supervisord.conf" shutdown >/dev/null 2>&1
        i=0; while [ -S "$ROOT/run/bearbnb/supervisor.sock" ] && [ $i -lt 100 ]; do sleep 0.2; i=$((i+1)); done
    fi
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT INT TERM
fail=0
ok() { echo "ok $*"; }
bad() { echo "FAIL $*"; fail=1; }
agent() { "$PY" "$SRC/tests/pipeline/codedeploy_agent.py" --root "$ROOT" --auto-rollback \
            --env BEARBNB_PORT="$PORT" --env BEARBNB_VALIDATE_TIMEOUT=10 "$@" 2>>"$W/agent.log"; }
served_exe() { # program of the process in the active slot
    slot=$(cat "$ROOT/opt/bearbnb/active-slot")
    pid=$(supervisorctl -c "$ROOT/etc/bearbnb/supervisord.conf" pid "bearbnb:bearbnb-$slot")
    readlink -f "/proc/$pid/exe"
}
code() { curl -s -o /dev/null -m 5 -w '%{http_code}' "http://127.0.0.1:$PORT$1"; }

B=$SRC/pipeline/codedeploy/make-bundle
"$B" -b "$BUILD" -o "$W/v1" -l v1 >/dev/null && "$B" -b "$BUILD" -o "$W/v2" -l v2 >/dev/null &&
    "$B" -b "$BUILD" -o "$W/v3" -l v3-no-rooms -e "$BAD_VALIDATE" >/dev/null &&
    "$B" -b "$BUILD" -o "$W/v4" -l v4-no-keys -e "$BAD_START" >/dev/null || { echo "FAIL make-bundle"; exit 1; }
echo "bundles v1..v4 in $W, root $ROOT, port $PORT"

# 1. first install
agent --bundle "$W/v1" --deployment-id d-1; rc=$?
[ $rc = 0 ] && ok "first install (d-1)" || bad "first install: agent exit $rc"
[ "$(code /healthz)" = 200 ] && [ "$(code /rooms)" = 200 ] && ok "v1 serves /healthz and /rooms" || bad "v1 does not serve"

# 2. upgrade under load
rm -f "$W/stop"
"$PY" "$SRC/tests/pipeline/request_loop.py" --port "$PORT" --path /rooms --path /healthz \
    --stop-file "$W/stop" --workers 2 --max-seconds 120 --out "$W/loop2.json" >/dev/null &
LOOP_PID=$!
sleep 1
agent --bundle "$W/v2" --deployment-id d-2; rc=$?
sleep 1
touch "$W/stop"; wait "$LOOP_PID"; LOOP_PID=""
[ $rc = 0 ] && ok "upgrade v1 -> v2 (d-2)" || bad "upgrade: agent exit $rc"
echo "upgrade request stream: $(cat "$W/loop2.json")"
"$PY" - "$W/loop2.json" <<'PYEOF' && ok "zero failed requests during the upgrade" || bad "requests failed during the upgrade"
import json, sys
r = json.load(open(sys.argv[1]))
sys.exit(0 if r["failed"] == 0 and r["ok"] >= 20 else 1)
PYEOF
exe=$(served_exe)
[ "$exe" = "$(readlink -f "$ROOT/opt/bearbnb/releases/d-2/bin/bearbnb")" ] && ok "the active slot runs d-2's program" || bad "active slot runs $exe"
[ "$(readlink -f "$ROOT/opt/bearbnb/previous")" = "$ROOT/opt/bearbnb/releases/d-1" ] && ok "previous -> d-1" || bad "previous is $(readlink "$ROOT/opt/bearbnb/previous")"

# 3. and 4. bad releases, each rolled back to v2, under a /healthz stream
rm -f "$W/stop"
"$PY" "$SRC/tests/pipeline/request_loop.py" --port "$PORT" --path /healthz \
    --stop-file "$W/stop" --workers 1 --max-seconds 150 --out "$W/loop3.json" >/dev/null &
LOOP_PID=$!
check_rollback() { # deployment-id failing-event
    agent --bundle "$W/$3" --deployment-id "$1"; rc=$?
    [ $rc = 3 ] && ok "$1 ($3) failed and was rolled back" || bad "$1: agent exit $rc (want 3: failed, rolled back)"
    grep -q "\] $1 $2 hooks/[a-z-]*.sh: 1 " "$W/agent.log" && ok "$1 failed in $2" || bad "$1 did not fail in $2"
    exe=$(served_exe)
    [ "$(cat "$(dirname "$(dirname "$exe")")/VERSION")" = v2 ] && ok "rolled back: the active slot runs v2 (${exe#$ROOT})" ||
        bad "after rollback the active slot runs $exe"
    [ "$(code /readyz)" = 200 ] && [ "$(code /rooms)" = 200 ] && ok "v2 serves again (/readyz, /rooms 200)" || bad "not serving after rollback"
}
check_rollback d-3 ValidateService v3
check_rollback d-4 ApplicationStart v4
touch "$W/stop"; wait "$LOOP_PID"; LOOP_PID=""
echo "bad releases request stream (/healthz): $(cat "$W/loop3.json")"
"$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if r["failed"]==0 and r["ok"]>=20 else 1)' "$W/loop3.json" &&
    ok "no /healthz request failed during the bad releases and rollbacks" || bad "/healthz requests failed"
echo "--- agent log"; grep -v '"msg":"access"' "$W/agent.log"
[ $fail = 0 ] || { echo "--- logs"; tail -n 30 "$ROOT"/var/log/bearbnb/*.log; }
exit $fail
