#!/usr/bin/env bash
# Quick-start demo: install dependencies, build wsgate, start two demo echo backends on
# 127.0.0.1:9001 and :9002, and run wsgate with examples/wsgate.yaml on :8080 in the foreground.
# Connect with any WebSocket client, e.g.:  /usr/bin/python3 -m websockets ws://127.0.0.1:8080/chat
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh --runtime-only
# Only the wsgate binary (not the tests, fuzzers or benchmarks), with the build's progress shown.
echo "== building wsgate (a few minutes on a fresh 2-core machine; later runs only rebuild changes)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target wsgate

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

/usr/bin/python3 examples/demo_backend.py --port 9001 --name backend-1 & pids+=($!)
/usr/bin/python3 examples/demo_backend.py --port 9002 --name backend-2 & pids+=($!)
# Wait until both backends accept connections (wsgate would retry, but the first try looks better).
for port in 9001 9002; do
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
done

echo "wsgate on ws://127.0.0.1:8080/ -> backend-1 (:9001), backend-2 (:9002)"
echo "try:  /usr/bin/python3 -m websockets ws://127.0.0.1:8080/chat     (Ctrl-C to stop)"
build/wsgate -c examples/wsgate.yaml &
pids+=($!)
wait "${pids[-1]}"
