#!/bin/sh
# ApplicationStop (runs from the previously deployed revision). An upgrade does
# not stop the service here: the running release serves until the new one has
# taken over in ApplicationStart. What is stopped is a slot that is not the
# active one (a release left half-started by a failed deployment), so that the
# next ApplicationStart finds an idle slot.
. "$(dirname "$0")/common.sh"
if { [ "$BEARBNB_SUPERVISOR" = supervisord ] && [ ! -f "$CONF" ]; } || ! supervisor_running; then
    log "nothing running"
    exit 0
fi
active=$(active_slot)
for s in 0 1; do
    [ "$s" = "$active" ] && continue
    st=$(slot_state "$s")
    if [ "$st" != STOPPED ] && [ -n "$st" ]; then
        log "stopping stray slot $s ($st)"
        slot_stop "$s" >/dev/null || true
    fi
done
log "active slot ${active:-none} keeps serving"
