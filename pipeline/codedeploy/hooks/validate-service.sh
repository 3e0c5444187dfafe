#!/bin/sh
# ValidateService: the new release, now alone on the socket, must be live
# (/healthz), ready (/readyz: storage and channels up) and serve the API
# (GET /rooms through the gateway) within BEARBNB_VALIDATE_TIMEOUT seconds.
# A failure fails the deployment; CodeDeploy then rolls back to the previous
# revision (its ApplicationStart puts it back in a slot).
. "$(dirname "$0")/common.sh"
REL=$APP/releases/$DEPLOYMENT_ID
limit=${BEARBNB_VALIDATE_TIMEOUT:-30}
slot=$(active_slot)
[ -n "$slot" ] && [ "$(slot_state "$slot")" = RUNNING ] || die "active slot ${slot:-none} not running"
pid=$(slot_pid "$slot")
exe=$(readlink -f "/proc/$pid/exe" 2>/dev/null || true)
[ "$exe" = "$(readlink -f "$REL/bin/bearbnb")" ] || die "slot $slot runs $exe, not $REL"
wait_200 /healthz 3 "$limit" || die "/healthz not 200 (last $(http_code /healthz))"
wait_200 /readyz 3 "$limit" || die "/readyz not 200 within ${limit}s (last $(http_code /readyz))"
code=$(http_code /rooms 5)
[ "$code" = 200 ] || die "GET /rooms answered $code"
log "validated $(cat "$REL/VERSION" 2>/dev/null) (pid $pid)"
