#!/usr/bin/env bash
# Browser demo: two chat backends behind wsgate with sticky routing by cookie.
# Open http://127.0.0.1:8080/ (the page comes through wsgate) in two tabs and chat; both tabs show
# the same backend. Drain it and watch both tabs move to the other one:
#   curl -X POST http://127.0.0.1:9901/admin/backends/chat/127.0.0.1:9101/drain
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x build/wsgate ] || scripts/build.sh build >/dev/null

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM
/usr/bin/python3 examples/chat/chat_backend.py --port 9101 --name backend-1 & pids+=($!)
/usr/bin/python3 examples/chat/chat_backend.py --port 9102 --name backend-2 & pids+=($!)
sleep 0.5
echo "open http://127.0.0.1:8080/ in two browser tabs"
build/wsgate -c examples/chat/wsgate.yaml & pids+=($!)
wait "${pids[-1]}"
