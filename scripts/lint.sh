#!/usr/bin/env bash
# Style and lint over the project's own C++ (config/ metrics/ proxy/ tests/unit/ fuzz/ bench/):
#   1. clang-format --dry-run --Werror on every tracked .cc/.h (.clang-format);
#   2. clang-tidy on every translation unit in BUILD_DIR/compile_commands.json (.clang-tidy),
#      WSGATE_LINT_JOBS at a time (default: nproc).
# Prints each finding as `file:line: message` and a summary; exits 1 on any finding.
# Usage: scripts/lint.sh [BUILD_DIR]   (default build; configure it first, e.g. scripts/build.sh)
# WSGATE_LINT_BASE=<rev>: clang-tidy only the .cc files changed since <rev> (and those whose
# header changed), for a quick local run; CI checks the whole tree.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build_dir="${1:-build}"
clang_format="${CLANG_FORMAT:-clang-format-14}"
clang_tidy="${CLANG_TIDY:-clang-tidy-14}"
jobs="${WSGATE_LINT_JOBS:-$(nproc)}"

# Files clang-tidy skips (a regular expression over paths; none today).
tidy_skip='^$'

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. clang-format.
mapfile -t sources < <(git ls-files -- config metrics proxy tests/unit fuzz bench |
  grep -E '\.(cc|h)$')
format_bad=0
for f in "${sources[@]}"; do
  # One line per file is enough to find it; scripts/format.sh fixes them all.
  if ! "$clang_format" --dry-run --Werror "$f" 2>"$tmp/format.err"; then
    sed -n 's|^\([^:]*\):\([0-9]*\):[0-9]*: error: \(.*\)|\1:\2: clang-format: \3|p;T;q' \
      "$tmp/format.err"
    format_bad=$((format_bad + 1))
  fi
done

# 2. clang-tidy.
if [ ! -f "$build_dir/compile_commands.json" ]; then
  echo "lint: no $build_dir/compile_commands.json (configure first: scripts/build.sh $build_dir)"
  exit 2
fi
/usr/bin/python3 - "$build_dir/compile_commands.json" "$root" >"$tmp/units" <<'EOF'
import json, os, sys
root = sys.argv[2]
seen = set()
for entry in json.load(open(sys.argv[1])):
    path = os.path.relpath(os.path.join(entry["directory"], entry["file"]), root)
    if path not in seen and path.split("/")[0] in ("config", "metrics", "proxy", "tests", "fuzz",
                                                   "bench") and not path.startswith(".."):
        seen.add(path)
        print(path)
EOF
grep -vxE "$tidy_skip" "$tmp/units" >"$tmp/units.kept" || true
if [ -n "${WSGATE_LINT_BASE:-}" ]; then
  changed=$(git diff --name-only "$WSGATE_LINT_BASE" -- config metrics proxy tests/unit fuzz bench)
  : >"$tmp/units.changed"
  while read -r unit; do
    stem=${unit%.cc}
    if grep -qxF -e "$unit" -e "$stem.h" <<<"$changed"; then echo "$unit" >>"$tmp/units.changed"; fi
  done <"$tmp/units.kept"
  mv "$tmp/units.changed" "$tmp/units.kept"
fi
units=$(wc -l <"$tmp/units.kept")
start=$SECONDS
mkdir "$tmp/tidy"
# Each unit's output to its own file, so parallel runs never interleave.
xargs -a "$tmp/units.kept" -P "$jobs" -I{} sh -c \
  '"$1" -p "$2" --quiet "$3" >"$4/$(echo "$3" | tr / _).log" 2>&1 || true' \
  _ "$clang_tidy" "$build_dir" {} "$tmp/tidy"
tidy_seconds=$((SECONDS - start))
# A header's finding is reported once however many units include it; skipped files stay
# skipped when they are headers, too.
cat "$tmp"/tidy/*.log 2>/dev/null |
  sed -nE "s#^$root/([^:]*):([0-9]*):[0-9]*: (warning|error): (.*)#\1:\2: \4#p" |
  sed 's/,-warnings-as-errors\]$/]/' | grep -vE "^$tidy_skip:" | sort -u |
  sort -t: -k1,1 -k2,2n >"$tmp/findings" || true
# A unit that does not compile for clang-tidy is a finding too (its lines name no project file).
grep -h -E '^(Error while processing|error: )' "$tmp"/tidy/*.log 2>/dev/null >>"$tmp/findings" ||
  true
cat "$tmp/findings"
tidy_bad=$(wc -l <"$tmp/findings")

echo "lint: clang-format: $format_bad of ${#sources[@]} files need formatting" \
  "(scripts/format.sh); clang-tidy: $tidy_bad findings in $units units (${tidy_seconds}s," \
  "$jobs jobs)"
if [ "$format_bad" -ne 0 ] || [ "$tidy_bad" -ne 0 ]; then
  echo "lint: FAILED"
  exit 1
fi
echo "lint: ok"
