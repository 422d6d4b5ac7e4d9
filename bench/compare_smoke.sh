#!/usr/bin/env bash
# bench_compare_smoke: compare.sh end to end in its before/after mode, on tiny knobs (~1 min).
# WSGATE_BASE is the same wsgate binary, so both sides must run, every round, without errors,
# and the output must carry the before/after table and the wsgate ÷ wsgate-base column. Then
# the plain mode (no WSGATE_BASE) must show neither, and TARGETS naming wsgate-base without
# WSGATE_BASE must be refused as a setup problem (exit 2).
# Usage: compare_smoke.sh BUILD_DIR
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
failed=0
# compare.sh pins the proxy and the load generator to two different CPUs.
if (( $(nproc) < 2 )) || ! command -v taskset >/dev/null || ! command -v ss >/dev/null; then
  echo "compare_smoke: SKIP (needs 2 CPUs, taskset and ss)"
  exit 77
fi
fail() { echo "FAIL: $*"; failed=1; }
# compare.sh takes PORT_BASE..+16 and refuses taken ports: pick a free block (below the
# ephemeral range) so that a benchmark or another checkout's ctest running alongside does not
# collide with this one.
ports_free() {
  local p
  for p in $(seq "$1" $(($1 + 16))); do [[ -z $(ss -Htln "sport = :$p") ]] || return 1; done
}
if [[ -z ${PORT_BASE:-} ]]; then
  for _ in $(seq 50); do
    PORT_BASE=$((20000 + RANDOM % 500 * 20))
    ports_free "$PORT_BASE" && break
  done
fi
export PORT_BASE WORKERS=1 DURATION=1 REPEAT=2 IDLE_COUNTS=200 HOLD=0
export METRICS_CMP=0 INSTALL=0

# before/after
WSGATE_BASE="$build/wsgate" WSGATE_BASE_LABEL="same binary" TARGETS="wsgate" \
  OUT="$dir/ba.md" PNG="$dir/ba.png" bash "$here/compare.sh" "$build" >"$dir/ba.out" 2>&1
rc=$?
cat "$dir/ba.out"
(( rc == 0 )) || fail "compare.sh with WSGATE_BASE exited $rc"
grep -q '^### Before/after: wsgate ÷ wsgate-base' "$dir/ba.md" || fail "no before/after table"
for figure in "echo 64 conns × 128 B: msgs/s" "echo 1000 conns × 1 KiB: msgs/s" \
              "echo 16 conns × 64 KiB: MB/s" "handshake 50 loops: handshakes/s" \
              "handshake 50 loops: proxy-core µs/op" "idle 200 conns: KiB per connection"; do
  # | figure | base | new | new ÷ base (a number) | spread | verdict |
  grep -Eq "^\| w1 $figure [^|]* \| [0-9.]+ \| [0-9.]+ \| [0-9]+\.[0-9]{3} \|" "$dir/ba.md" ||
    fail "before/after row missing or without a ratio: $figure"
done
spread_and_verdict='\| [0-9.]+ / [0-9.]+ \| [^|]*(noise)'
grep -Eq "^\\| w1 echo 64 conns × 128 B: msgs/s [^|]*\\|.*$spread_and_verdict" "$dir/ba.md" ||
  fail "no spread or verdict in the 128 B row"
grep -q '^| figure | wsgate-base | wsgate | wsgate ÷ wsgate-base |$' "$dir/ba.md" ||
  fail "main table header without wsgate-base and the ratio column"
# Both sides ran in every round, next to each other.
for r in 1 2; do
  for t in wsgate-base wsgate; do
    grep -q "\[w1 $t handshake 50 loops r$r\] handshakes_per_s=[0-9]" "$dir/ba.out" ||
      fail "$t missing in round $r"
  done
done
grep -q '^- w1 wsgate-base: e128: ' "$dir/ba.md" || fail "every-round listing without wsgate-base"
grep -q 'wsgate-base .*same binary' "$dir/ba.md" || fail "versions line without wsgate-base"

# plain mode: unchanged
TARGETS="wsgate" REPEAT=1 OUT="$dir/plain.md" PNG="$dir/plain.png" \
  bash "$here/compare.sh" "$build" >"$dir/plain.out" 2>&1
rc=$?
(( rc == 0 )) || { cat "$dir/plain.out"; fail "plain compare.sh exited $rc"; }
grep -q '^| figure | wsgate |$' "$dir/plain.md" || fail "plain mode: table header changed"
grep -q 'wsgate-base\|Before/after' "$dir/plain.md" && fail "plain mode mentions wsgate-base"

# wsgate-base without a binary: a setup problem
TARGETS="wsgate-base wsgate" OUT="$dir/bad.md" bash "$here/compare.sh" "$build" >"$dir/bad.out" 2>&1
rc=$?
(( rc == 2 )) && grep -q 'needs WSGATE_BASE' "$dir/bad.out" ||
  fail "TARGETS=wsgate-base without WSGATE_BASE: exit $rc, $(cat "$dir/bad.out")"

(( failed == 0 )) && echo "compare_smoke: PASS"
exit "$failed"
