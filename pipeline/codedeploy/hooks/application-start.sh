#!/bin/sh
# ApplicationStart: the new release starts in the idle slot, on the same
# listening socket as the running one; once it runs and answers, the old slot
# is stopped (SIGTERM: readiness 503, stop accepting, finish in-flight, exit).
. "$(dirname "$0")/common.sh"
REL=$APP/releases/$DEPLOYMENT_ID
[ -d "$REL" ] || die "no release $REL"
ensure_supervisor

old=$(active_slot)
if [ -n "$old" ] && [ "$(slot_state "$old")" != RUNNING ]; then
    log "active slot $old is $(slot_state "$old"): treating as a first start"
    old=""
fi
if [ "$old" = 0 ]; then new=1; else new=0; fi
[ "$(slot_state "$new")" = STOPPED ] || slot_stop "$new" >/dev/null 2>&1 || true

ln -sfn "$REL" "$APP/slots/$new"
mark=$(slot_log_mark "$new")
log "starting $(cat "$REL/VERSION" 2>/dev/null) in slot $new (old slot: ${old:-none})"
# `start` returns once the slot has run startsecs without exiting.
if ! out=$(slot_start "$new" 2>&1) || [ "$(slot_state "$new")" != RUNNING ]; then
    slot_stop "$new" >/dev/null 2>&1 || true
    slot_log_since "$new" "$mark" | grep -v '"msg":"access"' | tail -n 5 >&2 || true
    die "slot $new did not start: $out"
fi
# The new process logs "ready" once its plugins, storage and event channel are
# all up (the same condition as /readyz); until then the old slot keeps
# serving, and a release that never gets ready is never given the traffic.
limit=${BEARBNB_START_TIMEOUT:-60} start=$(date +%s)
until slot_log_since "$new" "$mark" | grep '"msg":"ready"' >/dev/null; do
    st=$(slot_state "$new")
    if [ "$st" != RUNNING ] || [ $(($(date +%s) - start)) -ge "$limit" ]; then
        slot_stop "$new" >/dev/null 2>&1 || true
        slot_log_since "$new" "$mark" | grep -v '"msg":"access"' | tail -n 5 >&2 || true
        die "slot $new ($st) did not get ready within ${limit}s; slot ${old:-none} keeps serving"
    fi
    sleep 0.2
done
wait_200 /healthz 3 "$limit" || die "no /healthz answer on :$BEARBNB_PORT"

if [ -n "$old" ]; then
    log "draining slot $old"
    slot_stop "$old" >/dev/null || die "slot $old did not stop"
fi
[ -L "$APP/current" ] && [ "$(readlink -f "$APP/current")" != "$(readlink -f "$REL")" ] &&
    ln -sfn "$(readlink -f "$APP/current")" "$APP/previous"
ln -sfn "$REL" "$APP/current"
echo "$new" >"$APP/active-slot.new" && mv "$APP/active-slot.new" "$APP/active-slot"
log "slot $new (pid $(slot_pid "$new")) serves $(cat "$REL/VERSION" 2>/dev/null)"
