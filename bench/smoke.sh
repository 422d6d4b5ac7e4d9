#!/usr/bin/env bash
# bench_smoke: start echo_backend on a free port, run `wsbench echo` against it for 1 s with
# 4 connections, pass if the RESULT line says errors=0 (and wsbench exited 0).
set -u
backend=$1
wsbench=$2
dir=$(mktemp -d)
backend_pid=
cleanup() {
  if [[ -n $backend_pid ]]; then kill "$backend_pid" 2>/dev/null; wait "$backend_pid" 2>/dev/null; fi
  rm -rf "$dir"
}
trap cleanup EXIT

"$backend" -p 0 -t 2 -r "$dir/ready" >"$dir/backend.log" 2>&1 &
backend_pid=$!
for _ in $(seq 100); do
  [[ -s $dir/ready ]] && break
  kill -0 "$backend_pid" 2>/dev/null || { echo "echo_backend died:"; cat "$dir/backend.log"; exit 1; }
  sleep 0.05
done
[[ -s $dir/ready ]] || { echo "echo_backend did not start"; exit 1; }
port=$(cut -d: -f2 "$dir/ready")

"$wsbench" echo -p "$port" -c 4 -s 1000 -d 1 -t 2 | tee "$dir/out"
rc=${PIPESTATUS[0]}
if [[ $rc -eq 0 ]] && grep -q '^RESULT mode=echo .*errors=0$' "$dir/out" &&
   ! grep -q 'msgs_per_s=0 ' "$dir/out"; then
  echo "bench_smoke: passed"
  exit 0
fi
echo "bench_smoke: FAILED (exit $rc)"
exit 1
