#!/bin/sh
# AfterInstall: the staged files become releases/$DEPLOYMENT_ID; the program
# must run (--version) and accept the release's configuration (--check-config);
# the supervisor configuration and the slot launcher are (re)installed; old
# releases are pruned.
. "$(dirname "$0")/common.sh"
[ -x "$APP/staging/bin/bearbnb" ] || die "staging has no bin/bearbnb"
REL=$APP/releases/$DEPLOYMENT_ID
rm -rf "$REL"
mv "$APP/staging" "$REL"
mkdir -p "$APP/staging"

version=$("$REL/bin/bearbnb" --version 2>&1) || die "bin/bearbnb --version failed: $version"
log "release $(cat "$REL/VERSION" 2>/dev/null) program: $version"

install -m 0755 "$REL/support/run-slot" "$APP/bin/run-slot"
[ -f "$ETC/bearbnb.env" ] || install -m 0640 "$REL/support/host.env" "$ETC/bearbnb.env"

# The release's settings must be valid for the host (unknown keys are errors).
if ! out=$(clean_env BEARBNB_SLOT_RELEASE="$REL" BEARBNB_SLOT_DATA="$DATA" \
        "$APP/bin/run-slot" check 2>&1); then
    die "configuration refused: $out"
fi

if [ "$BEARBNB_SUPERVISOR" = systemd ]; then
    # Units for this port; the slots' ExecStart follows opt/bearbnb/slots/N.
    sed "s|^ListenStream=.*|ListenStream=$BEARBNB_BIND:$BEARBNB_PORT|" "$REL/support/systemd/bearbnb.socket" \
        >/etc/systemd/system/bearbnb.socket
    install -m 0644 "$REL/support/systemd/bearbnb@.service" /etc/systemd/system/bearbnb@.service
    systemctl daemon-reload
fi
tmp=$CONF.new
sed -e "s|@ROOT@|$R|g" -e "s|@BIND@|$BEARBNB_BIND|g" -e "s|@PORT@|$BEARBNB_PORT|g" \
    -e "s|@USER@|$( [ -z "$BEARBNB_ROOT" ] && echo bearbnb || id -un)|g" \
    "$REL/support/supervisord.conf.in" >"$tmp"
if [ -f "$CONF" ] && cmp -s "$tmp" "$CONF"; then
    rm -f "$tmp"
else
    mv "$tmp" "$CONF"
    if [ "$BEARBNB_SUPERVISOR" = supervisord ] && supervisor_running; then
        log "supervisor configuration changed: reread/update"
        ctl reread >/dev/null && ctl update >/dev/null
    fi
fi

# Keep the newest releases plus whatever a slot, current or previous points at.
keep=${BEARBNB_KEEP_RELEASES:-5}
inuse=$(for l in current previous slots/0 slots/1; do readlink -f "$APP/$l" 2>/dev/null || true; done)
ls -1dt "$APP"/releases/* 2>/dev/null | tail -n +$((keep + 1)) | while read -r old; do
    case "$inuse" in *"$old"*) continue ;; esac
    rm -rf "$old"
done
log "installed $REL"
