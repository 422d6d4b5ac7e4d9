#!/usr/bin/env bash
# Before/after a change, in one run: builds the release wsgate of git ref BASE_REF and of the
# working tree the same way, then runs compare.sh with both (targets wsgate-base, wsgate and
# haproxy as the anchor) on short knobs, and writes bench/results/before-after.md.
#
#   bench/before_after.sh BASE_REF [BUILD_DIR]     # e.g. bench/before_after.sh main build
#
# BUILD_DIR (default build) provides wsbench and echo_backend. The two wsgate binaries are built
# in BA_DIR (default build-before-after): the working tree in BA_DIR/new, BASE_REF exported with
# `git archive` into BA_DIR/base-src and built at the same relative path under it, so that ccache
# (CCACHE_BASEDIR) reuses the objects of unchanged files. Both: CMAKE_BUILD_TYPE=Release with
# -O2 -DNDEBUG as scripts/build-release.sh, no tests, no bench tools.
# compare.sh knobs default to a quick check (WORKERS=1 DURATION=3 REPEAT=3 IDLE_COUNTS="1000
# 5000" HOLD=1 METRICS_CMP=0 INSTALL=0) and can be overridden from the environment.
# Exit status: compare.sh's (1 if a run failed), 2 on a setup or build problem.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
log() { printf '%s\n' "$*" >&2; }
die() { log "before_after.sh: $*"; exit 2; }

(( $# >= 1 && $# <= 2 )) || die "usage: bench/before_after.sh BASE_REF [BUILD_DIR]"
base_ref=$1
BUILD_DIR=$(realpath -m "${2:-$repo/build}")
BA_DIR=$(realpath -m "${BA_DIR:-$repo/build-before-after}")
base_sha=$(git -C "$repo" rev-parse --verify --quiet "$base_ref^{commit}") ||
  die "not a commit: $base_ref"
new_sha=$(git -C "$repo" rev-parse --short HEAD)
dirty=""
git -C "$repo" diff --quiet HEAD -- 2>/dev/null || dirty=" with uncommitted changes"

started=$(date +%s)
jobs=${WSGATE_JOBS:-$(nproc)}
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
  export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$repo}
fi
build_release() {  # $1 source, $2 build dir
  cmake -S "$1" -B "$2" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O2 -DNDEBUG" \
    -DBUILD_TESTING=OFF -DWSGATE_BENCH=OFF -DWSGATE_WERROR=OFF "${launcher[@]}" \
    >"$2.configure.log" 2>&1 ||
    { tail -n 20 "$2.configure.log" >&2; die "configuring $1 failed (log: $2.configure.log)"; }
  cmake --build "$2" -j"$jobs" --target wsgate >"$2.build.log" 2>&1 ||
    { tail -n 20 "$2.build.log" >&2; die "building $1 failed (log: $2.build.log)"; }
}

mkdir -p "$BA_DIR"
new_build=$BA_DIR/new
base_src=$BA_DIR/base-src
# The base builds at the same path relative to its source as the new one: ccache's basedir
# rewriting then gives unchanged files the same command line, hence cache hits.
case $new_build in
  "$repo"/*) base_build=$base_src/${new_build#"$repo"/} ;;
  *) base_build=$base_src/build ;;
esac

log "== building the working tree ($new_sha$dirty) in $new_build"
build_release "$repo" "$new_build"
if [[ $(cat "$base_src/.before-after-ref" 2>/dev/null) != "$base_sha" ]]; then
  log "== exporting $base_ref ($base_sha) into $base_src"
  rm -rf "$base_src"
  mkdir -p "$base_src"
  git -C "$repo" archive "$base_sha" | tar -x -C "$base_src"
  echo "$base_sha" >"$base_src/.before-after-ref"
fi
log "== building $base_ref in $base_build"
mkdir -p "$(dirname "$base_build")"
build_release "$base_src" "$base_build"
# The load generator and the backend come from BUILD_DIR (built if it is configured).
if [[ -f $BUILD_DIR/CMakeCache.txt ]]; then
  tools_log=$BA_DIR/tools.build.log
  cmake --build "$BUILD_DIR" -j"$jobs" --target wsbench echo_backend >"$tools_log" 2>&1 ||
    { tail -n 20 "$tools_log" >&2; die "building wsbench and echo_backend in $BUILD_DIR failed"; }
fi
built=$(date +%s)
log "== builds took $((built - started)) s"

export WSGATE=$new_build/wsgate
export WSGATE_BASE=$base_build/wsgate
base_short=$(git -C "$repo" rev-parse --short "$base_sha")
export WSGATE_BASE_LABEL="$base_ref = $base_short"
export WSGATE_LABEL="the working tree at $new_sha$dirty"
export TARGETS=${TARGETS:-"wsgate-base wsgate haproxy"}
export WORKERS=${WORKERS:-1}
export DURATION=${DURATION:-3}
export REPEAT=${REPEAT:-3}
export IDLE_COUNTS=${IDLE_COUNTS:-"1000 5000"}
export HOLD=${HOLD:-1}
export METRICS_CMP=${METRICS_CMP:-0}
export INSTALL=${INSTALL:-0}
export OUT=${OUT:-$here/results/before-after.md}
export PNG=${PNG:-${OUT%.md}.png}
rc=0
"$here/compare.sh" "$BUILD_DIR" || rc=$?
finished=$(date +%s)
log "== before/after: builds $((built - started)) s, benchmark $((finished - built)) s," \
  "$((finished - started)) s in all (wall)"
exit "$rc"
