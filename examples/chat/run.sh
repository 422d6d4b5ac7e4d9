#!/usr/bin/env bash
# Browser demo: two chat backends behind wsgate, sharing the room in one SQLite file, with
# session migration on. Open http://127.0.0.1:8080/ (the page comes through wsgate) in two tabs,
# or two browsers, and chat. Drain the backend a tab shows and watch it move to the other one
# while it stays connected ("moved to backend-2 (drain), still connected"):
#   curl -X POST http://127.0.0.1:9901/admin/backends/chat/127.0.0.1:9101/drain
# (and POST .../undrain to take it back). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x build/wsgate ] || scripts/build.sh build >/dev/null

store_dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$store_dir"
}
trap cleanup EXIT INT TERM
store="$store_dir/chat.sqlite3"
/usr/bin/python3 examples/chat/chat_backend.py --port 9101 --name backend-1 --store "$store" &
pids+=($!)
/usr/bin/python3 examples/chat/chat_backend.py --port 9102 --name backend-2 --store "$store" &
pids+=($!)
sleep 0.5
echo "open http://127.0.0.1:8080/ in two browser tabs"
build/wsgate -c examples/chat/wsgate.yaml & pids+=($!)
wait "${pids[-1]}"
