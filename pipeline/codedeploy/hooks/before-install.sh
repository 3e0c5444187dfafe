#!/bin/sh
# BeforeInstall: directories, the service user on a real host, the runtime
# packages the release needs (support/DEPENDS, Debian names), and an empty
# staging directory for CodeDeploy's Install step.
. "$(dirname "$0")/common.sh"
mkdir -p "$APP/releases" "$APP/slots" "$APP/bin" "$ETC" "$DATA" "$LOGDIR" "$RUNDIR"
chmod 0750 "$DATA"
rm -rf "$APP/staging"
mkdir -p "$APP/staging"
if [ -z "$BEARBNB_ROOT" ]; then
    getent passwd bearbnb >/dev/null || useradd --system --home-dir /var/lib/bearbnb --shell /usr/sbin/nologin bearbnb
    chown bearbnb:bearbnb "$DATA" "$LOGDIR"
    missing=""
    for p in $(cat "$HOOK_DIR/../release/support/DEPENDS" 2>/dev/null) supervisor curl; do
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        log "installing$missing"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >&2
    fi
else
    command -v supervisord >/dev/null || die "supervisord missing (apt-get install supervisor)"
fi
log "ready for install"
