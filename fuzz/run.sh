#!/usr/bin/env bash
# Run every wsgate libFuzzer target for a fixed time on a copy of its seed corpus.
#
#   fuzz/run.sh BUILD_DIR SECONDS [TARGET...]
#
# BUILD_DIR is a build configured with clang, -DWSGATE_FUZZ=ON and
# -DWSGATE_SANITIZE="address;undefined". Each target runs with -max_total_time=SECONDS on a
# scratch copy of fuzz/corpus/<target> (the checked-in seeds are never modified). Any crash,
# failed check, sanitizer report, leak, timeout or OOM fails the run; its reproducer is kept in
# the work directory printed at the end. Per target, the number of executions is taken from
# libFuzzer's final "stat::number_of_executed_units" (-print_final_stats=1).
#
# Environment: FUZZ_WORKDIR (default: a new mktemp directory), FUZZ_TIMEOUT (seconds per input
# before libFuzzer calls it a timeout, default 10), FUZZ_RSS_MB (default 2048), FUZZ_ARGS (extra
# libFuzzer flags).
set -u -o pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 BUILD_DIR SECONDS [TARGET...]" >&2
  exit 2
fi
build_dir=$(cd "$1" && pwd) || { echo "no build directory: $1" >&2; exit 2; }
seconds=$2
shift 2
if ! [[ $seconds =~ ^[0-9]+$ ]] || [[ $seconds -eq 0 ]]; then
  echo "SECONDS must be a positive integer, got: $seconds" >&2
  exit 2
fi

fuzz_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=(head_parser_fuzz body_framer_fuzz ws_frame_fuzz frame_splicer_fuzz config_loader_fuzz units_fuzz
           request_target_fuzz admin_guard_fuzz process_stat_fuzz deflate_fuzz fleet_message_fuzz)
fi
workdir=${FUZZ_WORKDIR:-$(mktemp -d "${TMPDIR:-/tmp}/wsgate-fuzz.XXXXXX")}
mkdir -p "$workdir"

# Sanitizer reports must end the run with an error (libFuzzer then saves the input).
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

declare -A execs status
failed=0
for target in "${targets[@]}"; do
  bin=$build_dir/fuzz/$target
  if [[ ! -x $bin ]]; then
    echo "== $target: binary $bin not found (configure with clang and -DWSGATE_FUZZ=ON)" >&2
    execs[$target]="-"
    status[$target]="MISSING"
    failed=1
    continue
  fi
  corpus=$workdir/$target/corpus
  artifacts=$workdir/$target/artifacts
  log=$workdir/$target/fuzz.log
  rm -rf "$corpus" "$artifacts"
  mkdir -p "$corpus" "$artifacts"
  if [[ -d $fuzz_dir/corpus/$target ]]; then
    cp -R "$fuzz_dir/corpus/$target/." "$corpus/"
  fi
  dict=()
  if [[ -f $fuzz_dir/dict/$target.dict ]]; then
    dict=("-dict=$fuzz_dir/dict/$target.dict")
  fi

  echo "== $target: ${seconds}s, corpus $corpus"
  # shellcheck disable=SC2086  # FUZZ_ARGS is a list of flags
  "$bin" -max_total_time="$seconds" -print_final_stats=1 \
    -timeout="${FUZZ_TIMEOUT:-10}" -rss_limit_mb="${FUZZ_RSS_MB:-2048}" \
    -artifact_prefix="$artifacts/" "${dict[@]}" ${FUZZ_ARGS:-} \
    "$corpus" >"$log" 2>&1
  rc=$?

  n=$(sed -n 's/^stat::number_of_executed_units: *\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
  execs[$target]=${n:-?}
  found=$(find "$artifacts" -type f | head -n 5)
  if [[ $rc -ne 0 || -n $found ]]; then
    failed=1
    status[$target]="FAIL (exit $rc)"
    echo "-- $target FAILED (exit $rc); log: $log" >&2
    grep -E 'ERROR: |FUZZ_CHECK failed|runtime error:|SUMMARY: |Test unit written to' "$log" \
      | head -n 20 >&2
    for f in $found; do echo "   reproducer: $f" >&2; done
  else
    status[$target]="ok"
  fi
done

echo
printf '%-22s %14s  %s\n' target executions result
for target in "${targets[@]}"; do
  printf '%-22s %14s  %s\n' "$target" "${execs[$target]}" "${status[$target]}"
done
echo "work directory: $workdir"
exit "$failed"
