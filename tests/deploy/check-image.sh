#!/bin/sh
# Builds the image from the meson build dir (deploy/build-image), then checks
# that it really runs: `bearbnb --version` inside it, and an all-in-one start
# (every plugin, SQLite under /data, non-root user) answering /healthz,
# /readyz and GET /rooms on a loopback port. Prints the image size.
# Needs buildah (scripts/deploy-deps) and a built bearbnb.
set -u
SRC=${BNB_SOURCE_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${BNB_BUILD_ROOT:-$SRC/build}
B="buildah --storage-driver vfs"
command -v buildah >/dev/null || { echo "check-image: buildah missing: run scripts/deploy-deps" >&2; exit 77; }
[ -x "$BUILD/bearbnb" ] || { echo "check-image: no $BUILD/bearbnb" >&2; exit 77; }
TAG=localhost/bearbnb:check-$$
W=$(mktemp -d /tmp/bearbnb-imgcheck.XXXXXX)
CTR="" RUN_PID=""
cleanup() {
    [ -n "$RUN_PID" ] && kill "$RUN_PID" 2>/dev/null
    [ -n "$CTR" ] && $B rm "$CTR" >/dev/null 2>&1
    $B rmi "$TAG" >/dev/null 2>&1
    rm -rf "$W"
}
trap cleanup EXIT INT TERM
fail=0
"$SRC/deploy/build-image" -b "$BUILD" -t "$TAG" >"$W/build.log" 2>&1 || { cat "$W/build.log"; echo "FAIL build-image"; exit 1; }
grep '^build-image:' "$W/build.log"
echo "image size: $($B images --format '{{.Size}}' "$TAG")"
CTR=$($B from "$TAG") || { echo "FAIL buildah from"; exit 1; }
MNT=$($B mount "$CTR")
echo "image files: $(find "$MNT" -type f | wc -l), of which shared libraries: $(find "$MNT" -name '*.so*' -type f | wc -l)"
# Nothing but what the program needs: no shell, no package manager.
for f in /bin/sh /usr/bin/sh /bin/bash /usr/bin/apt-get; do
    [ -e "$MNT$f" ] && { echo "FAIL image contains $f"; fail=1; }
done
[ -n "$(find "$MNT/usr/lib/bearbnb/plugins" -name '*.so')" ] && echo "ok plugins: $(cd "$MNT/usr/lib/bearbnb/plugins" && ls | tr '\n' ' ')" || { echo "FAIL no plugins in image"; fail=1; }
$B umount "$CTR" >/dev/null

v=$($B run --isolation chroot "$CTR" -- /usr/bin/bearbnb --version 2>&1) && echo "ok --version in the image: $v" || { echo "FAIL --version: $v"; fail=1; }

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# all-in-one, as the image's user (10001), data in the image's /data
$B run --isolation chroot "$CTR" -- /usr/bin/bearbnb --listen "127.0.0.1:$PORT" >"$W/run.log" 2>&1 &
RUN_PID=$!
code() { curl -s -o "$W/body" -m 3 -w '%{http_code}' "http://127.0.0.1:$PORT$1" 2>/dev/null; }
i=0
until [ "$(code /healthz)" = 200 ]; do
    i=$((i + 1))
    if [ $i -gt 150 ] || ! kill -0 "$RUN_PID" 2>/dev/null; then
        echo "FAIL all-in-one in the image did not answer /healthz"; tail -n 20 "$W/run.log"; exit 1
    fi
    sleep 0.2
done
echo "ok /healthz from the image after $((i * 200)) ms: $(cat "$W/body")"
[ "$(code /readyz)" = 200 ] && echo "ok /readyz 200" || { echo "FAIL /readyz $(code /readyz)"; fail=1; }
[ "$(code /rooms)" = 200 ] && echo "ok GET /rooms 200 (all plugins loaded)" || { echo "FAIL GET /rooms $(code /rooms)"; fail=1; }
grep -q '"uid":\|listening on' "$W/run.log" && echo "ok started: $(grep -o 'listening on[^"]*' "$W/run.log" | head -1)"
# Stop it like the kubelet does: SIGTERM to the program (found among the
# descendants of `buildah run`), which drains and exits 0.
desc() { for c in $(pgrep -P "$1"); do echo "$c"; desc "$c"; done; }
PROG=""
for p in $(desc "$RUN_PID"); do
    case $(readlink "/proc/$p/exe" 2>/dev/null) in */usr/bin/bearbnb) PROG=$p ;; esac
done
[ -n "$PROG" ] || { echo "FAIL bearbnb process not found under buildah run"; exit 1; }
kill -TERM "$PROG"
i=0; while kill -0 "$RUN_PID" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.2; i=$((i + 1)); done
if kill -0 "$RUN_PID" 2>/dev/null; then
    echo "FAIL still running 20 s after SIGTERM"; fail=1
    kill -KILL "$RUN_PID"
else
    wait "$RUN_PID"; rc=$?
    [ $rc = 0 ] && echo "ok exit 0 after SIGTERM" || { echo "FAIL exit $rc after SIGTERM"; tail -n 5 "$W/run.log"; fail=1; }
fi
RUN_PID=""
exit $fail
