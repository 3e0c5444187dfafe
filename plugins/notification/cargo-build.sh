#!/bin/sh
# Runs cargo for plugins/notification from meson (plugins/notification/meson.build).
#   cargo-build.sh build SRC_DIR TARGET_DIR OUTPUT   build the cdylib, copy it to OUTPUT
#   cargo-build.sh test  SRC_DIR TARGET_DIR          cargo test (the logic's unit tests)
#   cargo-build.sh fmt   SRC_DIR TARGET_DIR          cargo fmt --check (77: no rustfmt here)
# cargo is taken from PATH, else from $HOME/.cargo/bin (rustup); scripts/install-deps
# installs Debian's cargo when neither has one. Always --offline --locked: the crate
# has no dependencies and Cargo.lock is checked in.
set -eu
mode=$1
src=$2
tgt=$3
CARGO=$(command -v cargo 2>/dev/null || true)
if [ -z "$CARGO" ] && [ -n "${HOME:-}" ] && [ -x "$HOME/.cargo/bin/cargo" ]; then
    CARGO=$HOME/.cargo/bin/cargo
fi
if [ -z "$CARGO" ]; then
    echo "cargo-build.sh: no cargo on PATH nor in \$HOME/.cargo/bin (run scripts/install-deps)" >&2
    exit 1
fi
# the ASan/UBSan settings of the C build are not for rustc
unset RUSTFLAGS CARGO_BUILD_RUSTFLAGS
case $mode in
build)
    out=$4
    "$CARGO" build --release --offline --locked --quiet --manifest-path "$src/Cargo.toml" --target-dir "$tgt"
    cp "$tgt/release/libnotification.so" "$out.tmp"
    mv "$out.tmp" "$out"
    ;;
test)
    exec "$CARGO" test --release --offline --locked --manifest-path "$src/Cargo.toml" --target-dir "$tgt"
    ;;
fmt)
    "$CARGO" fmt --version >/dev/null 2>&1 || { echo "cargo-build.sh: no rustfmt (skipped)" >&2; exit 77; }
    exec "$CARGO" fmt --check --manifest-path "$src/Cargo.toml"
    ;;
*)
    echo "usage: cargo-build.sh build|test|fmt SRC_DIR TARGET_DIR [OUTPUT]" >&2
    exit 2
    ;;
esac
