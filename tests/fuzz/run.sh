#!/usr/bin/env bash
# Build one libFuzzer target with clang (ASan + UBSan) and run it for a
# bounded time on a copy of its checked-in corpus, after replaying every
# saved crash (tests/fuzz/regressions/<target>/*) once.
#   tests/fuzz/run.sh TARGET [SECONDS]    (default BNB_FUZZ_SECONDS or 20)
#   BNB_FUZZ_SECONDS=600 tests/fuzz/run.sh jwt     a longer run on demand
# Output goes to $BNB_FUZZ_BUILD (default build-fuzz/ at the top, or
# <meson build dir>/fuzz when meson runs it). A crash leaves its input in
# <out>/crash-<target>-*; copy it into tests/fuzz/regressions/<target>/ with a
# test that fails on it (see tests/fuzz/README.md). Exit 0 = no finding.
set -uo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)
T=${1:?usage: run.sh TARGET [SECONDS]}
SECS=${2:-${BNB_FUZZ_SECONDS:-20}}
OUT=${BNB_FUZZ_BUILD:-${MESON_BUILD_ROOT:+$MESON_BUILD_ROOT/fuzz}}
OUT=${OUT:-$ROOT/build-fuzz}
CC=${BNB_FUZZ_CC:-clang}
mkdir -p "$OUT"
if ! command -v "$CC" >/dev/null; then
    echo "fuzz: $CC not found (scripts/install-deps installs clang and libclang-rt-14-dev)"
    exit 1
fi
# a source file by name, wherever the layout puts it
src() {
    local f
    f=$(cd "$ROOT" && find host plugins -name "$1" -not -path '*/build*' | head -n1)
    [[ -n $f ]] || { echo "fuzz: source $1 not found" >&2; exit 1; }
    echo "$ROOT/$f"
}
case $T in
json_body) SRCS="reqcheck.c room_logic.c resv_logic.c bnb_plugin_util.c"; LIBS="-ljansson" ;;
jwt) SRCS="auth.c jwks.c b64.c log.c clock.c"; LIBS="-ljwt -lcrypto -lcurl -ljansson -lpthread" ;;
jwks) SRCS="jwks.c b64.c log.c clock.c"; LIBS="-lcrypto -lcurl -ljansson -lpthread" ;;
router) SRCS="router.c reqcheck.c"; LIBS="" ;;
config) SRCS="config.c log.c"; LIBS="-lyaml -ljansson" ;;
envelope) SRCS="dash_merge.c room_logic.c reqcheck.c"; LIBS="-ljansson" ;;
*) echo "fuzz: unknown target $T"; exit 2 ;;
esac
files=("$ROOT/tests/fuzz/fuzz_$T.c")
for s in $SRCS; do files+=("$(src "$s")") || exit 1; done
incs=(-I"$ROOT/plugin-api" -I"$ROOT/storage" -I"$OUT")
for d in "$ROOT"/host/*/ "$ROOT"/plugins/*/; do incs+=(-I"$d"); done
[[ -f $OUT/bnb_build_config.h ]] || printf '#pragma once\n#define BNB_VERSION "fuzz"\n' >"$OUT/bnb_build_config.h"
BIN=$OUT/fuzz_$T
if ! "$CC" -g -O1 -std=gnu11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -fno-omit-frame-pointer -Wno-unused-command-line-argument "${incs[@]}" "${files[@]}" $LIBS -o "$BIN" \
    2>"$OUT/build-$T.log"; then
    cat "$OUT/build-$T.log"
    echo "fuzz: building $T failed"
    exit 1
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# saved crashes first: each must pass now
reg=$ROOT/tests/fuzz/regressions/$T
if [[ -d $reg ]] && compgen -G "$reg/*" >/dev/null; then
    "$BIN" -runs=1 "$reg"/* >"$OUT/regressions-$T.log" 2>&1 || {
        tail -n 40 "$OUT/regressions-$T.log"
        echo "fuzz: $T fails on a saved regression input"
        exit 1
    }
fi
work=$(mktemp -d "$OUT/corpus-$T.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp "$ROOT/tests/fuzz/corpus/$T"/* "$work"/ 2>/dev/null || true
"$BIN" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="$OUT/crash-$T-" "$work" "$ROOT/tests/fuzz/corpus/$T" >"$OUT/run-$T.log" 2>&1
rc=$?
grep -E "^stat::number_of_executed_runs|^Done|ERROR|SUMMARY" "$OUT/run-$T.log" | head -n 5
if ((rc != 0)); then
    tail -n 60 "$OUT/run-$T.log"
    echo "fuzz: $T found a crash (input saved as $OUT/crash-$T-*)"
    exit 1
fi
echo "fuzz: $T ok (${SECS}s)"
