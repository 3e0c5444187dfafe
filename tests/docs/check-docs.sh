#!/bin/sh
# The documentation cannot drift and stays inside the project:
#   - docs/configuration.md is exactly `bearbnb --help-config` (scripts/gen-docs);
#   - no tracked file points outside the repository (../shared/..., /work/..., DESIGN.md);
#   - every relative link in README.md and docs/*.md names a file that exists.
set -u
SRC=${BNB_SOURCE_ROOT:?}
BUILD=${BNB_BUILD_ROOT:?}
fail=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT
env -i PATH=/usr/bin:/bin ASAN_OPTIONS=detect_leaks=0 BEARBNB_PLUGIN_DIR="$BUILD/plugins" \
    "$BUILD/bearbnb" --help-config >"$out" || { echo "FAIL: bearbnb --help-config"; exit 1; }
if diff -u "$SRC/docs/configuration.md" "$out"; then
    echo "ok docs/configuration.md is bearbnb --help-config"
else
    echo "FAIL docs/configuration.md differs from bearbnb --help-config: run scripts/gen-docs"; fail=1
fi
if command -v git >/dev/null && git -C "$SRC" rev-parse >/dev/null 2>&1; then
    files=$(git -C "$SRC" ls-files)
    # this script names the patterns it looks for
    bad=$(cd "$SRC" && echo "$files" | grep -v '^tests/docs/check-docs.sh$' |
        xargs grep -nI -E '\.\./shared/|/work/(shared|main|wt)/|DESIGN\.md' 2>/dev/null || true)
    if [ -n "$bad" ]; then
        echo "FAIL files refer to paths outside the project:"; echo "$bad"; fail=1
    else
        echo "ok no tracked file refers outside the project"
    fi
fi
for md in "$SRC/README.md" "$SRC"/docs/*.md; do
    dir=$(dirname "$md")
    for link in $(grep -o '](\([^)#]*\))' "$md" | sed 's/^](//; s/)$//' | grep -v -E '^[a-z]+:' | sort -u); do
        [ -e "$dir/$link" ] || { echo "FAIL $md: link $link: no such file"; fail=1; }
    done
done
[ $fail = 0 ] && echo "ok links in README.md and docs/ resolve"
exit $fail
