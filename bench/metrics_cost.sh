#!/usr/bin/env bash
# What the per-frame metrics cost, measured as instructions per relayed message (valgrind's
# callgrind counts instructions, so the figure repeats on a noisy machine where wall-clock
# throughput does not).
#
#   bench/metrics_cost.sh BUILD_DIR [ROUNDS]
#
# Each round runs wsgate under callgrind in front of bench's echo_backend and drives it with
# wsbench (10 connections, 256-byte echo) for 2 s and for 6 s, once with metrics.enabled true and
# once false. The difference between the long and the short run, in instructions and in echoed
# messages, leaves out start-up, handshakes and shutdown; it prints instructions per echoed
# message (one message each way) for both settings and the ratio.
set -euo pipefail
build=$(cd "${1:?usage: $0 BUILD_DIR [ROUNDS]}" && pwd)
rounds=${2:-2}
command -v valgrind >/dev/null || { echo "metrics_cost.sh: valgrind is not installed" >&2; exit 2; }

run() {  # $1 = true|false, $2 = seconds -> prints "instructions messages"
  local d backend_pid gate_pid port result ir msgs
  d=$(mktemp -d)
  "$build/bench/echo_backend" -p 0 -r "$d/backend.ready" >/dev/null 2>&1 &
  backend_pid=$!
  for _ in $(seq 100); do [[ -s $d/backend.ready ]] && break; sleep 0.05; done
  cat >"$d/wsgate.yaml" <<EOC
listeners: [{name: public, address: 127.0.0.1:0}]
routes: [{pool: p}]
pools: [{name: p, backends: [{address: $(cat "$d/backend.ready")}]}]
log: {access: "off"}
metrics: {enabled: $1}
EOC
  valgrind --tool=callgrind --callgrind-out-file="$d/cg.out" "$build/wsgate" -c "$d/wsgate.yaml" \
    --ready-file "$d/wsgate.ready" --log-level warn >/dev/null 2>&1 &
  gate_pid=$!
  for _ in $(seq 400); do [[ -s $d/wsgate.ready ]] && break; sleep 0.05; done
  port=$(head -1 "$d/wsgate.ready" | sed 's/.*://')
  result=$("$build/bench/wsbench" echo -p "$port" -c 10 -s 256 -d "$2")
  kill "$gate_pid"; wait "$gate_pid" 2>/dev/null || true
  kill "$backend_pid"; wait "$backend_pid" 2>/dev/null || true
  ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$d/cg.out")
  msgs=$(sed -n 's/^ *messages *\([0-9]*\) echoed.*/\1/p' <<<"$result")
  rm -rf "$d"
  echo "$ir $msgs"
}

per_message() {  # $1 = true|false -> instructions per message, from a 6 s minus a 2 s run
  local long short
  long=$(run "$1" 6)
  short=$(run "$1" 2)
  awk -v l="$long" -v s="$short" 'BEGIN {split(l, a, " "); split(s, b, " "); printf "%d", (a[1] - b[1]) / (a[2] - b[2])}'
}

for round in $(seq "$rounds"); do
  on=$(per_message true)
  off=$(per_message false)
  awk -v r="$round" -v on="$on" -v off="$off" \
    'BEGIN { printf "round %d: instructions per message: metrics on %d, off %d, cost %+.2f%%\n", r, on, off, (on - off) * 100.0 / off }'
done
