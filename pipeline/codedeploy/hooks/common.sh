# shellcheck shell=sh
# Shared by the CodeDeploy hooks. Sourced, not run.
#
# Layout (under $BEARBNB_ROOT, "" = / on a real host; CI points it at a temp dir):
#   opt/bearbnb/staging/            what CodeDeploy's Install step copied (appspec files)
#   opt/bearbnb/releases/<id>/      one directory per deployment: bin/, plugins/, bearbnb.env, VERSION
#   opt/bearbnb/current, previous   symlinks to releases
#   opt/bearbnb/slots/{0,1}         the release each supervisor slot runs
#   opt/bearbnb/bin/run-slot        starts a slot: env files + `bearbnb --listen fd:0`
#   etc/bearbnb/bearbnb.env         this host's settings (kept across releases)
#   etc/bearbnb/supervisord.conf    the supervisor of bearbnb (from support/supervisord.conf.in)
#   var/lib/bearbnb/                data directory (SQLite files, dev key), kept across releases
#   var/log/bearbnb/, run/bearbnb/  logs; supervisor socket and pid
#
# Zero-downtime upgrade: supervisord's [fcgi-program] owns the listening socket
# and passes it as fd 0 to two slots (bearbnb-0, bearbnb-1). supervisord keeps
# the socket open while at least one slot runs, so ApplicationStart starts the
# new release in the idle slot (both accept on the same socket), then stops the
# old slot: SIGTERM makes it answer 503 on /readyz, stop accepting, finish its
# in-flight requests and exit; connections queued meanwhile go to the new slot.
# With systemd as PID 1 (real hosts), the same shape with support/systemd/:
# bearbnb.socket holds the socket, bearbnb@0/bearbnb@1.service are the slots
# (LISTEN_FDS, fd 3). The supervisord path is what CI runs for real
# (tests/pipeline/check-codedeploy.sh); the systemd path cannot run there.
set -eu

BEARBNB_ROOT=${BEARBNB_ROOT:-}
BEARBNB_PORT=${BEARBNB_PORT:-8088}
# Real hosts listen on every address (behind a load balancer); a test root on loopback.
if [ -z "${BEARBNB_ROOT:-}" ]; then BEARBNB_BIND=${BEARBNB_BIND:-0.0.0.0}; else BEARBNB_BIND=${BEARBNB_BIND:-127.0.0.1}; fi
R=$BEARBNB_ROOT
APP=$R/opt/bearbnb
ETC=$R/etc/bearbnb
DATA=$R/var/lib/bearbnb
LOGDIR=$R/var/log/bearbnb
RUNDIR=$R/run/bearbnb
CONF=$ETC/supervisord.conf
HOOK_DIR=$(cd "$(dirname "$0")" && pwd)
DEPLOYMENT_ID=${DEPLOYMENT_ID:-manual}
LIFECYCLE_EVENT=${LIFECYCLE_EVENT:-$(basename "$0" .sh)}

log() {
    printf '{"hook":"%s","deployment":"%s","msg":"%s"}\n' "$LIFECYCLE_EVENT" "$DEPLOYMENT_ID" "$*" >&2
}
die() {
    log "FAILED: $*"
    exit 1
}

# Which process manager holds the socket: systemd where it is PID 1 on a real
# host (support/systemd: bearbnb.socket + bearbnb@N.service), supervisord
# otherwise (and always under a BEARBNB_ROOT). BEARBNB_SUPERVISOR overrides.
if [ -z "${BEARBNB_SUPERVISOR:-}" ]; then
    if [ -z "$BEARBNB_ROOT" ] && [ -d /run/systemd/system ]; then
        BEARBNB_SUPERVISOR=systemd
    else
        BEARBNB_SUPERVISOR=supervisord
    fi
fi

# supervisord/supervisorctl with our private config; never leak the hooks'
# own BEARBNB_* variables into the supervised program (the host refuses
# unknown settings).
clean_env() {
    env -u BEARBNB_ROOT -u BEARBNB_PORT -u BEARBNB_BIND -u BEARBNB_VALIDATE_TIMEOUT \
        -u BEARBNB_START_TIMEOUT -u BEARBNB_KEEP_RELEASES -u BEARBNB_SUPERVISOR "$@"
}
ctl() {
    clean_env supervisorctl -c "$CONF" "$@"
}
supervisor_running() {
    if [ "$BEARBNB_SUPERVISOR" = systemd ]; then
        systemctl is-active --quiet bearbnb.socket
    else
        [ -S "$RUNDIR/supervisor.sock" ] && ctl pid >/dev/null 2>&1
    fi
}
ensure_supervisor() {
    if [ "$BEARBNB_SUPERVISOR" = systemd ]; then
        systemctl enable --now bearbnb.socket >/dev/null || die "bearbnb.socket does not start"
        return 0
    fi
    [ -f "$CONF" ] || die "no $CONF (AfterInstall did not run?)"
    if ! supervisor_running; then
        log "starting supervisord ($CONF)"
        clean_env supervisord -c "$CONF"
        i=0
        until supervisor_running; do
            i=$((i + 1))
            [ $i -le 50 ] || die "supervisord did not come up"
            sleep 0.2
        done
    fi
}
# Slot operations. State: RUNNING, STOPPED, or the manager's word for anything else.
slot_state() {
    if [ "$BEARBNB_SUPERVISOR" = systemd ]; then
        case $(systemctl is-active "bearbnb@$1.service" 2>/dev/null) in
        active) echo RUNNING ;; inactive) echo STOPPED ;; *) systemctl is-active "bearbnb@$1.service" 2>/dev/null || true ;;
        esac
    else
        ctl status "bearbnb:bearbnb-$1" 2>/dev/null | awk '{print $2}'
    fi
}
slot_pid() {
    if [ "$BEARBNB_SUPERVISOR" = systemd ]; then
        systemctl show -p MainPID --value "bearbnb@$1.service"
    else
        ctl pid "bearbnb:bearbnb-$1" 2>/dev/null
    fi
}
slot_start() {
    if [ "$BEARBNB_SUPERVISOR" = systemd ]; then
        systemctl start "bearbnb@$1.service" && sleep 2 && [ "$(slot_state "$1")" = RUNNING ]
    else
        ctl start "bearbnb:bearbnb-$1"
    fi
}
# Stop = SIGTERM and wait for the drain (stopwaitsecs / TimeoutStopSec 30 s).
slot_stop() {
    if [ "$BEARBNB_SUPERVISOR" = systemd ]; then
        systemctl stop "bearbnb@$1.service"
    else
        ctl stop "bearbnb:bearbnb-$1"
    fi
}
# Log lines of a slot since a mark (slot_log_mark prints one).
slot_log_mark() {
    if [ "$BEARBNB_SUPERVISOR" = systemd ]; then
        date +%s
    else
        ( (wc -l <"$LOGDIR/bearbnb-$1.log") 2>/dev/null || echo 0) | tr -d ' '
    fi
}
slot_log_since() {
    if [ "$BEARBNB_SUPERVISOR" = systemd ]; then
        journalctl -q -o cat -u "bearbnb@$1.service" --since "@$2" 2>/dev/null
    else
        tail -n +$(($2 + 1)) "$LOGDIR/bearbnb-$1.log" 2>/dev/null
    fi
}
active_slot() {
    cat "$APP/active-slot" 2>/dev/null || true
}

http_code() { # path [timeout]
    curl -s -o /dev/null -m "${2:-3}" -w '%{http_code}' "http://127.0.0.1:$BEARBNB_PORT$1" 2>/dev/null || true
}
# Wait until $1 answers 200 $2 times in a row, for at most $3 seconds.
wait_200() {
    path=$1 want=$2 limit=$3 ok=0 start=$(date +%s)
    while [ $ok -lt "$want" ]; do
        if [ "$(http_code "$path")" = 200 ]; then ok=$((ok + 1)); else ok=0; fi
        [ $(($(date +%s) - start)) -lt "$limit" ] || return 1
        [ $ok -ge "$want" ] || sleep 0.2
    done
}
