#!/usr/bin/env bash
# Soak test (issue 8): CONNS connection slots churn through a freshly started wsgate to two
# echo backends for MINUTES minutes (random message sizes, random closes and reconnects), one
# backend is restarted every RESTART_EVERY; wsgate's RSS is sampled every SAMPLE seconds.
# Not part of CI or ctest. Builds nothing:
#   scripts/build.sh build    # or: cmake --build build --target wsgate echo_backend soak
#   bench/soak.sh             # CONNS=10000 MINUTES=10 RESTART_EVERY=60s
#   CONNS=200 MINUTES=1 RESTART_EVERY=20s bench/soak.sh   # quick
# Exit status 1 if a message was lost on a cleanly closed connection, an echo did not match,
# or wsgate's RSS grew more than RSS_GROWTH_PCT from the second to the last minute; 2 on a setup
# problem.
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$repo/build}
CONNS=${CONNS:-10000}
MINUTES=${MINUTES:-10}
RESTART_EVERY=${RESTART_EVERY:-60s}
SAMPLE=${SAMPLE:-5}                 # seconds between RSS samples
THREADS=${THREADS:-2}               # load generator threads
WORKERS=${WORKERS:-1}               # wsgate workers
PORT_BASE=${PORT_BASE:-19300}       # backends +0, +1; wsgate +10
RSS_GROWTH_PCT=${RSS_GROWTH_PCT:-20}
SOAK_ARGS=${SOAK_ARGS:-}            # extra load generator options (see: soak --help)
WSGATE=${WSGATE:-$BUILD_DIR/wsgate}
KEEP=${KEEP:-0}

die() { echo "soak.sh: $*" >&2; exit 2; }
restart_s=${RESTART_EVERY%s}
[[ $restart_s =~ ^[0-9]+$ && $restart_s -gt 0 ]] || die "RESTART_EVERY wants seconds, e.g. 60s"
[[ $CONNS =~ ^[0-9]+$ && $MINUTES =~ ^[0-9]+$ && $MINUTES -gt 0 ]] || die "CONNS and MINUTES must be numbers"
echo_bin=$BUILD_DIR/bench/echo_backend
soak_bin=$BUILD_DIR/bench/soak
for bin in "$WSGATE" "$echo_bin" "$soak_bin"; do
  [[ -x $bin ]] || die "$bin is missing; build first: cmake --build $BUILD_DIR --target wsgate echo_backend soak"
done

ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
nofile=$(ulimit -n)
# Each proxied connection is two descriptors in wsgate; keep ~200 for listeners, checks, logs.
# Headroom over CONNS: a slot may reconnect while wsgate still finishes its last close.
fd_cap=$(( (nofile - 200) / 2 ))
max_conns=$(( CONNS + CONNS / 10 + 100 ))
if (( max_conns > fd_cap )); then
  max_conns=$fd_cap
  echo "note: open files are capped at $nofile, so wsgate takes at most $max_conns connections" \
       "(limits.max_connections); a slot over that gets 503 (counted) and retries"
fi

port_in_use() { [[ -n $(ss -Htln "sport = :$1" 2>/dev/null) ]]; }
backend_ports=("$PORT_BASE" "$((PORT_BASE + 1))")
gate_port=$((PORT_BASE + 10))
for p in "${backend_ports[@]}" "$gate_port"; do port_in_use "$p" && die "port $p is in use (set PORT_BASE)"; done

work=$(mktemp -d /tmp/wsgate-soak.XXXXXX)
declare -A backend_pid=()
gate_pid="" soak_pid=""
stop_pid() {
  local pid=$1 i
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null
  for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}
cleanup() {
  stop_pid "$soak_pid"
  stop_pid "$gate_pid"
  for p in "${!backend_pid[@]}"; do stop_pid "${backend_pid[$p]}"; done
  if [[ $KEEP == 1 ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 2' INT TERM

start_backend() {  # $1 port: start and wait until it listens
  local p=$1 i
  "$echo_bin" -a 127.0.0.1 -p "$p" -t 1 >>"$work/backend-$p.log" 2>&1 &
  backend_pid[$p]=$!
  for i in $(seq 200); do
    port_in_use "$p" && return 0
    kill -0 "${backend_pid[$p]}" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

for p in "${backend_ports[@]}"; do start_backend "$p" || die "echo_backend on $p did not start"; done

cat >"$work/wsgate.yaml" <<EOF
workers: $WORKERS
listeners:
  - name: soak
    address: 127.0.0.1:$gate_port
routes:
  - pool: echo
pools:
  - name: echo
    balance: least_conn
    health_check: {interval: 1s, timeout: 500ms, type: websocket, path: /, healthy_threshold: 1, unhealthy_threshold: 1}
    outlier: {consecutive_failures: 1, ejection_time: 5s}
    backends:
      - address: 127.0.0.1:${backend_ports[0]}
      - address: 127.0.0.1:${backend_ports[1]}
retries: 2
limits: {max_connections: $max_conns}
log: {access: off}
EOF
"$WSGATE" -c "$work/wsgate.yaml" --ready-file "$work/wsgate.ready" --log-level warn >"$work/wsgate.log" 2>&1 &
gate_pid=$!
for i in $(seq 200); do [[ -s $work/wsgate.ready ]] && break; kill -0 "$gate_pid" 2>/dev/null || break; sleep 0.05; done
[[ -s $work/wsgate.ready ]] || { cat "$work/wsgate.log" >&2; die "wsgate did not start"; }

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$gate_pid/status" 2>/dev/null || echo 0; }
fds() { ls "/proc/$gate_pid/fd" 2>/dev/null | wc -l; }

duration=$((MINUTES * 60))
echo "soak: $CONNS slots, $MINUTES min, a backend restarted every ${restart_s}s, RSS every ${SAMPLE}s;" \
     "wsgate $gate_pid on 127.0.0.1:$gate_port, backends ${backend_ports[*]}, files $work"
echo "wsgate RSS at start: $(rss_kib) KiB"
# shellcheck disable=SC2086
"$soak_bin" -p "$gate_port" -c "$CONNS" -d "$duration" -t "$THREADS" --report "$SAMPLE" $SOAK_ARGS \
  >"$work/soak.out" 2>"$work/soak.err" &
soak_pid=$!

start=$(date +%s)
next_sample=$SAMPLE next_restart=$restart_s restarts=0
printf '%6s %10s %8s %8s %s\n' "t_s" "rss_kib" "fds" "open" "event" | tee "$work/rss.tsv"
while kill -0 "$soak_pid" 2>/dev/null; do
  sleep 0.5
  now=$(( $(date +%s) - start ))
  event=""
  if (( now >= next_restart && now < duration )); then
    p=${backend_ports[$((restarts % 2))]}
    stop_pid "${backend_pid[$p]}"
    start_backend "$p" || echo "soak.sh: echo_backend on $p did not come back" >&2
    restarts=$((restarts + 1))
    next_restart=$((next_restart + restart_s))
    event="restarted backend :$p"
  fi
  if (( now >= next_sample )) || [[ -n $event ]]; then
    open=$(grep '^PROGRESS' "$work/soak.out" | tail -n1 | sed -n 's/.* open=\([0-9]*\).*/\1/p')
    printf '%6d %10d %8d %8s %s\n' "$now" "$(rss_kib)" "$(fds)" "${open:--}" "$event" | tee -a "$work/rss.tsv"
    (( now >= next_sample )) && next_sample=$((next_sample + SAMPLE))
  fi
done
wait "$soak_pid"
soak_rc=$?
soak_pid=""
kill -0 "$gate_pid" 2>/dev/null || { echo "soak.sh: wsgate died" >&2; soak_rc=1; }
echo "wsgate RSS after the run: $(rss_kib) KiB, $(fds) open files"

result=$(grep '^SOAK_RESULT' "$work/soak.out" | tail -n1)
[[ -n $result ]] || { cat "$work/soak.err" >&2; die "the load generator printed no result"; }
get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$result"; }

# RSS phases over the run (samples before the end, without an event): first, second, last minute.
read -r first second last max <<<"$(awk -v d="$duration" 'NR > 1 && $5 == "" {
    if ($1 >= d) next
    if ($1 < 60) { f += $2; fn++ } else if ($1 < 120) { s += $2; sn++ }
    if ($1 >= d - 60) { l += $2; ln++ }
    if ($2 > m) m = $2 }
  END { printf "%s %s %s %d\n", fn ? int(f / fn) : "-", sn ? int(s / sn) : "-", ln ? int(l / ln) : "-", m }' "$work/rss.tsv")"

echo
echo "## summary"
echo "wsgate RSS KiB: first minute avg $first, second minute avg $second, last minute avg $last, max $max"
echo "connections opened $(get opened): clean $(get clean), cut by backend restart (1014/1001) $(get restart_cut)" \
     "with $(get inflight_at_cut) messages in flight, closed without a close frame $(get abrupt)" \
     "with $(get inflight_at_abrupt) in flight"
echo "close codes received (not clean): $(get close_codes)"
echo "errors: connect failed $(get connect_failed), handshake non-101 $(get handshake_status)" \
     "(status:count $(get statuses); 503 = limits.max_connections or no backend), bad handshake $(get handshake_bad), unexpected close codes" \
     "$(get unexpected_close), echo mismatch $(get mismatch), timeouts $(get timeouts)"
echo "messages sent $(get sent), echoed $(get echoed) ($(get echoed_mib) MiB); lost on clean connections: $(get lost_clean)"
echo "backend restarts: $restarts"
echo "$result"
head -n 10 "$work/soak.err" | sed 's/^/  /'

status=0
[[ $(get lost_clean) == 0 ]] || { echo "FAIL: messages lost on cleanly closed connections"; status=1; }
[[ $(get mismatch) == 0 ]] || { echo "FAIL: echo mismatch"; status=1; }
(( soak_rc == 0 || soak_rc == 1 )) || { echo "FAIL: load generator exit status $soak_rc"; status=1; }
if (( MINUTES >= 3 )) && [[ $second != - && $last != - ]]; then
  if (( last * 100 > second * (100 + RSS_GROWTH_PCT) )); then
    echo "FAIL: RSS grew more than $RSS_GROWTH_PCT % from the second minute to the last"
    status=1
  fi
else
  echo "note: RSS growth is judged from MINUTES=3 on (second vs last minute)"
fi
(( status == 0 )) && echo "PASS"
exit "$status"
