#!/usr/bin/env bash
# bench_smoke: start echo_backend on a free port, run `wsbench echo` against it for 1 s with
# 4 connections, pass if the RESULT line says errors=0 (and wsbench exited 0). Given a third
# argument (tcp_relay), also start the relay in front of the backend and run `wsbench echo`
# and `wsbench handshake` through it the same way, then check that it exits 0 on SIGTERM.
set -u
backend=$1
wsbench=$2
relay=${3:-}
dir=$(mktemp -d)
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  rm -rf "$dir"
}
trap cleanup EXIT

# start NAME COMMAND...: run COMMAND (which writes $dir/NAME.ready) and wait until it is ready.
start() {
  local name=$1
  shift
  "$@" >"$dir/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    [[ -s $dir/$name.ready ]] && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || { echo "$name died:"; cat "$dir/$name.log"; exit 1; }
    sleep 0.05
  done
  echo "$name did not start"
  exit 1
}
# bench MODE PORT ARGS...: wsbench MODE for 1 s; fails the smoke unless errors=0 and work was done.
bench() {
  local mode=$1 port=$2
  shift 2
  "$wsbench" "$mode" -p "$port" -d 1 -t 2 "$@" | tee "$dir/out"
  local rc=${PIPESTATUS[0]}
  if [[ $rc -eq 0 ]] && grep -q "^RESULT mode=$mode .*errors=0$" "$dir/out" &&
     ! grep -q '_per_s=0 ' "$dir/out"; then
    return 0
  fi
  echo "bench_smoke: FAILED: wsbench $mode -p $port $* (exit $rc)"
  exit 1
}

start backend "$backend" -p 0 -t 2 -r "$dir/backend.ready"
port=$(cut -d: -f2 "$dir/backend.ready")
bench echo "$port" -c 4 -s 1000

if [[ -n $relay ]]; then
  start relay "$relay" -l 0 -r "$dir/relay.ready" -b "127.0.0.1:$port"
  relay_port=$(cut -d: -f2 "$dir/relay.ready")
  bench echo "$relay_port" -c 4 -s 1000
  bench handshake "$relay_port" -c 4
  # SIGTERM must end it cleanly (exit 0; under ASan that includes the leak check).
  kill "${pids[-1]}"
  wait "${pids[-1]}"
  rc=$?
  unset 'pids[-1]'
  [[ $rc -eq 0 ]] || { echo "bench_smoke: FAILED: tcp_relay exited $rc on SIGTERM"; cat "$dir/relay.log"; exit 1; }
fi
echo "bench_smoke: passed"
