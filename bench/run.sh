#!/usr/bin/env bash
# Benchmark wsgate against no proxy (direct), HAProxy and nginx, all in front of the same
# echo_backend, on loopback. Builds nothing: give it a build directory that already has
# wsgate, bench/wsbench and bench/echo_backend:
#
#   cmake --build build --target wsgate wsbench echo_backend
#   bench/run.sh build            # or BUILD_DIR=build bench/run.sh
#
# Prints a markdown table (absolute figures and ratios vs wsgate) and writes it to
# bench/results/latest.md (OUT=... to change). Knobs (environment): TARGETS, DURATION, HOLD,
# REPEAT, IDLE_CONNS, PORT_BASE, CLIENT_CPU, PROXY_CPU, BACKEND_CPU, PIN=0, KEEP=1 (keep the work dir).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
BUILD_DIR=${1:-${BUILD_DIR:-$repo/build}}
BUILD_DIR=$(cd "$BUILD_DIR" 2>/dev/null && pwd) || { echo "run.sh: no build directory ${1:-${BUILD_DIR:-}}" >&2; exit 2; }
WSGATE=${WSGATE:-$BUILD_DIR/wsgate}
WSBENCH=$BUILD_DIR/bench/wsbench
BACKEND=$BUILD_DIR/bench/echo_backend
TARGETS=${TARGETS:-"direct wsgate haproxy nginx"}
DURATION=${DURATION:-5}
HOLD=${HOLD:-5}
IDLE_CONNS=${IDLE_CONNS:-5000}
PORT_BASE=${PORT_BASE:-19100}
CLIENT_CPU=${CLIENT_CPU:-0}
BACKEND_CPU=${BACKEND_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
PIN=${PIN:-1}
REPEAT=${REPEAT:-3}
OUT=${OUT:-$here/results/latest.md}

for bin in "$WSGATE" "$WSBENCH" "$BACKEND"; do
  if [[ ! -x $bin ]]; then
    echo "run.sh: $bin is missing; build first: cmake --build $BUILD_DIR --target wsgate wsbench echo_backend" >&2
    exit 2
  fi
done

work=$(mktemp -d /tmp/wsbench-run.XXXXXX)
chmod 755 "$work"  # nginx workers run as nobody
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi
  done
  if [[ ${KEEP:-0} == 1 ]]; then echo "run.sh: logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*" >&2; }

# CPU pinning: the load generator and the backend share one core, the proxy gets the other.
if [[ $PIN == 1 ]] && command -v taskset >/dev/null && (( $(nproc) >= 2 )); then
  client_pin=(taskset -c "$CLIENT_CPU")
  backend_pin=(taskset -c "$BACKEND_CPU")
  proxy_pin=(taskset -c "$PROXY_CPU")
  if [[ $CLIENT_CPU == "$BACKEND_CPU" ]]; then
    pinning="wsbench and echo_backend pinned to CPU $CLIENT_CPU, the proxy to CPU $PROXY_CPU (taskset)"
  else
    pinning="wsbench pinned to CPU $CLIENT_CPU, echo_backend to CPU $BACKEND_CPU, the proxy to CPU $PROXY_CPU (taskset)"
  fi
else
  client_pin=()
  backend_pin=()
  proxy_pin=()
  pinning="no CPU pinning"
fi

port_in_use() { [[ -n $(ss -Htln "sport = :$1" 2>/dev/null) ]]; }
wait_port() {  # wait until something listens on port $1 (process $2 must stay alive)
  local i
  for i in $(seq 200); do
    port_in_use "$1" && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
wait_file() {
  local i
  for i in $(seq 200); do
    [[ -s $1 ]] && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }

backend_port=$PORT_BASE
declare -A proxy_port=([direct]=$PORT_BASE [wsgate]=$((PORT_BASE + 1)) [haproxy]=$((PORT_BASE + 2)) [nginx]=$((PORT_BASE + 3)))
for p in $backend_port "${proxy_port[wsgate]}" "${proxy_port[haproxy]}" "${proxy_port[nginx]}"; do
  if port_in_use "$p"; then echo "run.sh: port $p is in use (set PORT_BASE)" >&2; exit 2; fi
done

# --- proxies ------------------------------------------------------------------------------

write_configs() {
  cat >"$work/wsgate.yaml" <<EOF
workers: 1
listeners:
  - name: bench
    address: 127.0.0.1:${proxy_port[wsgate]}
routes:
  - pool: echo
pools:
  - name: echo
    backends:
      - address: 127.0.0.1:$backend_port
limits: {max_connections: 20000}
log: {access: off}
EOF
  # maxconn 9000: HAProxy sizes its fd table as ~2 x maxconn and open files are capped at 20000.
  cat >"$work/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout http-request 10s
  timeout tunnel 1h
frontend bench
  bind 127.0.0.1:${proxy_port[haproxy]}
  default_backend echo
backend echo
  server echo1 127.0.0.1:$backend_port
EOF
  mkdir -p "$work/nginx"
  chmod 755 "$work/nginx"
  cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile 20000;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events {
  worker_connections 20000;
}
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  upstream echo {
    server 127.0.0.1:$backend_port;
  }
  server {
    listen 127.0.0.1:${proxy_port[nginx]};
    location / {
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;
    }
  }
}
EOF
}

declare -A main_pid proxy_pid  # per target: the process to stop / the one to measure
# Starts target $1 in front of the backend.
start_proxy() {
  local t=$1 pid
  case $t in
    direct)
      return 0 ;;
    wsgate)
      rm -f "$work/wsgate.ready"
      "${proxy_pin[@]}" "$WSGATE" -c "$work/wsgate.yaml" --ready-file "$work/wsgate.ready" \
        --log-level warn >>"$work/wsgate.log" 2>&1 &
      pid=$!
      pids+=("$pid")
      main_pid[$t]=$pid
      wait_file "$work/wsgate.ready" "$pid" || return 1
      proxy_pid[$t]=$pid ;;
    haproxy)
      "${proxy_pin[@]}" haproxy -db -f "$work/haproxy.cfg" >>"$work/haproxy.log" 2>&1 &
      pid=$!
      pids+=("$pid")
      main_pid[$t]=$pid
      wait_port "${proxy_port[haproxy]}" "$pid" || return 1
      proxy_pid[$t]=$pid ;;
    nginx)
      "${proxy_pin[@]}" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" \
        -g 'daemon off;' >>"$work/nginx.log" 2>&1 &
      pid=$!
      pids+=("$pid")
      main_pid[$t]=$pid
      wait_port "${proxy_port[nginx]}" "$pid" || return 1
      local i worker=
      for i in $(seq 100); do  # the worker, a child of the master, holds the connections
        worker=$(pgrep -P "$pid" | head -n1)
        [[ -n $worker ]] && break
        sleep 0.05
      done
      [[ -n $worker ]] || return 1
      proxy_pid[$t]=$worker ;;
  esac
}

stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null
  for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}

# --- runs ---------------------------------------------------------------------------------

declare -A R  # R[target,test,key]=value (R[target,test#round,key] for single rounds)
result_into() {  # $1 target, $2 test key, $3 output file
  local line kv
  line=$(grep '^RESULT ' "$3" | tail -n1)
  if [[ -z $line ]]; then
    R[$1,$2,errors]=failed
    return
  fi
  for kv in ${line#RESULT }; do R[$1,$2,${kv%%=*}]=${kv#*=}; done
}

show() { sed -n '/^RESULT /!s/^/    /p' "$1" >&2; }
clk_tck=$(getconf CLK_TCK)
ticks() {  # utime+stime of the given pids, in clock ticks
  local pid sum=0 v
  for pid in "$@"; do
    v=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null) || v=0
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}
now_ms() { date +%s%3N; }

run_bench() {  # $1 target, $2 test, $3 round, then wsbench arguments
  local t=$1 name=$2 round=$3
  shift 3
  local key="$name#$round" out="$work/$t-$name-$round.out"
  log "  [$t, round $round] wsbench $* -p ${proxy_port[$t]}"
  "${client_pin[@]}" "$WSBENCH" "$@" -p "${proxy_port[$t]}" >"$out" 2>&1 &
  local bench=$!
  pids+=("$bench")
  # CPU use inside the measured window: the proxy, and the client core (wsbench + backend).
  sleep 1
  local p=${proxy_pid[$t]:-} t0 p0 c0 t1 p1 c1
  t0=$(now_ms); p0=$([[ -n $p ]] && ticks "$p"); c0=$(ticks "$bench" "$backend_pid")
  sleep "$(awk -v d="$DURATION" 'BEGIN {print (d > 2.5 ? d - 2 : d / 2)}')"
  t1=$(now_ms); p1=$([[ -n $p ]] && ticks "$p"); c1=$(ticks "$bench" "$backend_pid")
  wait "$bench"
  local rc=$?
  show "$out"
  result_into "$t" "$key" "$out"
  if (( rc != 0 )) && [[ ${R[$t,$key,errors]:-} == 0 ]]; then R[$t,$key,errors]="exit$rc"; fi
  local ms=$((t1 - t0))
  if (( ms > 0 )); then
    # (a process that ended inside the window reads as 0 ticks: no figure then)
    [[ -n $p ]] && (( p1 >= p0 )) && R[$t,$key,cpu_proxy]=$(( (p1 - p0) * 100000 / clk_tck / ms ))
    (( c1 >= c0 )) && R[$t,$key,cpu_client]=$(( (c1 - c0) * 100000 / clk_tck / ms ))
    log "    CPU: proxy ${R[$t,$key,cpu_proxy]:-—}%, wsbench+echo_backend ${R[$t,$key,cpu_client]:-—}%"
  fi
}

run_idle() {  # $1 target: open IDLE_CONNS, hold them, RSS of the proxy before/while held
  local t=$1 out="$work/$1-idle.out"
  local p=${proxy_pid[$t]:-} before= after=
  [[ -n $p ]] && before=$(rss_kib "$p")
  log "  [$t] wsbench idle -c $IDLE_CONNS -H $HOLD -p ${proxy_port[$t]}"
  "${client_pin[@]}" "$WSBENCH" idle -c "$IDLE_CONNS" -H "$HOLD" -p "${proxy_port[$t]}" >"$out" 2>&1 &
  local bench=$!
  pids+=("$bench")
  local i
  for i in $(seq 600); do
    grep -q '^IDLE_READY' "$out" 2>/dev/null && break
    kill -0 "$bench" 2>/dev/null || break
    sleep 0.1
  done
  if grep -q '^IDLE_READY' "$out"; then
    sleep 1  # let the proxy settle
    [[ -n $p ]] && after=$(rss_kib "$p")
  fi
  wait "$bench"
  local rc=$?
  show "$out"
  result_into "$t" idle "$out"
  if (( rc != 0 )) && [[ ${R[$t,idle,errors]:-} == 0 ]]; then R[$t,idle,errors]="exit$rc"; fi
  R[$t,idle,rss_before]=$before
  R[$t,idle,rss_after]=$after
  local open=${R[$t,idle,opened]:-0}
  if [[ -n $before && -n $after ]] && (( open > 0 )); then
    R[$t,idle,kib_per_conn]=$(awk -v a="$after" -v b="$before" -v n="$open" 'BEGIN {printf "%.1f", (a - b) / n}')
    log "    proxy RSS ${before} KiB -> ${after} KiB with $open connections: ${R[$t,idle,kib_per_conn]} KiB/connection"
  fi
}

# The median round of (target, test) by its main figure becomes R[target,test,*]; errors add up.
pick_median() {
  local t=$1 name=$2 metric=$3 r list=() errors=0 failed= k
  for r in $(seq "$REPEAT"); do
    local e=${R[$t,$name#$r,errors]:-failed}
    if [[ $e =~ ^[0-9]+$ ]]; then errors=$((errors + e)); else failed+="${failed:+,}$e"; fi
    list+=("${R[$t,$name#$r,$metric]:-0} $r")
  done
  local median
  median=$(printf '%s\n' "${list[@]}" | sort -g | awk -v n="$REPEAT" 'NR == int((n + 1) / 2) {print $2}')
  for k in msgs_per_s mb_per_s p50_us p99_us p999_us handshakes_per_s cycle_p50_us cycle_p99_us cpu_proxy cpu_client; do
    R[$t,$name,$k]=${R[$t,$name#$median,$k]:-}
  done
  R[$t,$name,all]=$(for r in $(seq "$REPEAT"); do printf '%s ' "${R[$t,$name#$r,$metric]:-?}"; done)
  R[$t,$name,errors]=${failed:-$errors}
}

# --- main ---------------------------------------------------------------------------------

write_configs
"${backend_pin[@]}" "$BACKEND" -p "$backend_port" -t 1 -r "$work/backend.ready" >"$work/backend.log" 2>&1 &
backend_pid=$!
pids+=("$backend_pid")
wait_file "$work/backend.ready" "$backend_pid" || { echo "run.sh: echo_backend did not start" >&2; cat "$work/backend.log" >&2; exit 1; }

started=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
log "wsbench run: $pinning; ${DURATION}s per run, $REPEAT rounds; backend on 127.0.0.1:$backend_port"
log "fairness: one worker everywhere (wsgate workers: 1, HAProxy nbthread 1, nginx worker_processes 1), access logs off"
ran=()
skipped=()
for t in $TARGETS; do
  case $t in
    direct|wsgate) ;;
    haproxy|nginx)
      if ! command -v "$t" >/dev/null; then
        log "== $t: not installed (apt-get install -y $t): skipped"
        skipped+=("$t (not installed)")
        continue
      fi ;;
    *) log "run.sh: unknown target $t"; exit 2 ;;
  esac
  if ! start_proxy "$t"; then
    log "== $t did not start: skipped"
    tail -n 20 "$work/$t.log" "$work/nginx/error.log" 2>/dev/null >&2
    [[ -n ${main_pid[$t]:-} ]] && stop_pid "${main_pid[$t]}"
    skipped+=("$t (did not start)")
    continue
  fi
  log "== $t listening on 127.0.0.1:${proxy_port[$t]}${proxy_pid[$t]:+ (pid ${proxy_pid[$t]})}"
  ran+=("$t")
done

# All proxies run side by side (an idle one costs nothing); each idle test runs first on its
# freshly started proxy so the RSS delta is the connections' alone.
log "== idle: $IDLE_CONNS connections held ${HOLD}s"
for t in "${ran[@]}"; do run_idle "$t"; done
# Rounds interleave the targets (rotating who goes first) so that noise from the rest of the
# machine spreads over all of them; the median round is reported.
n=${#ran[@]}
for r in $(seq "$REPEAT"); do
  log "== round $r of $REPEAT"
  for test in echo64 echo16k handshake; do
    for i in $(seq 0 $((n - 1))); do
      t=${ran[$(( (i + r - 1) % n ))]}
      case $test in
        echo64) run_bench "$t" echo64 "$r" echo -c 100 -s 64 -d "$DURATION" ;;
        echo16k) run_bench "$t" echo16k "$r" echo -c 50 -s 16384 -d "$DURATION" ;;
        handshake) run_bench "$t" handshake "$r" handshake -c 50 -s 64 -d "$DURATION" ;;
      esac
    done
  done
done
for t in "${ran[@]}"; do
  [[ -n ${main_pid[$t]:-} ]] && stop_pid "${main_pid[$t]}"
  pick_median "$t" echo64 msgs_per_s
  pick_median "$t" echo16k msgs_per_s
  pick_median "$t" handshake handshakes_per_s
done
elapsed=$(( $(date +%s) - started ))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# --- table --------------------------------------------------------------------------------

val() { printf '%s' "${R[$1,$2,$3]:-}"; }
# cell value target: "value (ratio×)" with the ratio vs wsgate.
cell() {
  local v=$1 base=$2
  if [[ -z $v ]]; then printf '—'; return; fi
  if [[ -n $base && $base != 0 && $base != 0.0 && $v =~ ^[0-9.]+$ && $base =~ ^[0-9.]+$ ]]; then
    awk -v v="$v" -v b="$base" 'BEGIN {printf "%s (%.2f×)", v, v / b}'
  else
    printf '%s' "$v"
  fi
}
row() {  # $1 label, $2 test, $3 key
  local line="| $1 |" t base
  base=$(val wsgate "$2" "$3")
  for t in "${ran[@]}"; do line+=" $(cell "$(val "$t" "$2" "$3")" "$base") |"; done
  printf '%s\n' "$line"
}
row_plain() {  # like row, without ratios
  local line="| $1 |" t v
  for t in "${ran[@]}"; do v=$(val "$t" "$2" "$3"); line+=" ${v:-—} |"; done
  printf '%s\n' "$line"
}
cpu_row() {  # $1 label, $2 test: "proxy % / client core %"
  local line="| $1 |" t p c
  for t in "${ran[@]}"; do
    p=$(val "$t" "$2" cpu_proxy)
    c=$(val "$t" "$2" cpu_client)
    line+=" ${p:-—} / ${c:-—} |"
  done
  printf '%s\n' "$line"
}
mib() { [[ -n $1 ]] && awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

{
  echo "## wsgate benchmark — $(date -u +'%Y-%m-%d %H:%M UTC')"
  echo
  header="| metric |"
  sep="|---|"
  for t in "${ran[@]}"; do header+=" $t |"; sep+="---:|"; done
  echo "$header"
  echo "$sep"
  row "echo 100 conns × 64 B: msgs/s ↑" echo64 msgs_per_s
  row "echo 100 × 64 B: MB/s payload both ways ↑" echo64 mb_per_s
  row "echo 100 × 64 B: p50 µs ↓" echo64 p50_us
  row "echo 100 × 64 B: p99 µs ↓" echo64 p99_us
  row "echo 100 × 64 B: p99.9 µs ↓" echo64 p999_us
  cpu_row "echo 100 × 64 B: CPU % proxy / wsbench+backend" echo64
  row "echo 50 conns × 16 KiB: msgs/s ↑" echo16k msgs_per_s
  row "echo 50 × 16 KiB: MB/s payload both ways ↑" echo16k mb_per_s
  row "echo 50 × 16 KiB: p50 µs ↓" echo16k p50_us
  row "echo 50 × 16 KiB: p99 µs ↓" echo16k p99_us
  row "echo 50 × 16 KiB: p99.9 µs ↓" echo16k p999_us
  cpu_row "echo 50 × 16 KiB: CPU % proxy / wsbench+backend" echo16k
  row "handshake 50 loops: handshakes/s ↑" handshake handshakes_per_s
  row "handshake: upgrade p50 µs ↓" handshake p50_us
  row "handshake: upgrade p99 µs ↓" handshake p99_us
  row "handshake: whole cycle p50 µs ↓" handshake cycle_p50_us
  cpu_row "handshake: CPU % proxy / wsbench+backend" handshake
  row "idle $IDLE_CONNS conns: open at end of ${HOLD} s hold" idle open
  for t in "${ran[@]}"; do
    R[$t,idle,mib_before]=$(mib "$(val "$t" idle rss_before)")
    R[$t,idle,mib_after]=$(mib "$(val "$t" idle rss_after)")
  done
  row "idle: proxy RSS before, MiB" idle mib_before
  row "idle: proxy RSS with $IDLE_CONNS open, MiB" idle mib_after
  row "idle: proxy KiB per connection ↓" idle kib_per_conn
  line="| errors (all runs) |"
  for t in "${ran[@]}"; do
    e=""
    for test in idle echo64 echo16k handshake; do
      v=$(val "$t" "$test" errors)
      [[ -z $v ]] && v=failed
      if [[ $v == 0 ]]; then continue; fi
      e+="${e:+, }$test: $v"
    done
    line+=" ${e:-0} |"
  done
  echo "$line"
  echo
  echo "Ratios are target ÷ wsgate (↑ higher is better, ↓ lower is better). Figures are from the"
  echo "median of $REPEAT interleaved rounds (by msgs/s or handshakes/s), each ${DURATION} s measured after the"
  echo "connections are up. Latency is per message round trip (echo) or connect → verified 101"
  echo "(handshake), from wsbench's log-bucket histogram. CPU % is utime+stime over the middle of a run"
  echo "(100 = one core). Idle: ${IDLE_CONNS} connections held ${HOLD} s against a freshly started proxy; RSS is"
  echo "VmRSS from /proc/PID/status before opening and 1 s after all are open; KiB per connection ="
  echo "delta ÷ connections (each one is a client socket plus a backend socket in the proxy)."
  echo
  echo "- Setup: one echo_backend (1 thread) behind every target; \`direct\` = wsbench → echo_backend"
  echo "  with no proxy and the same pinning: it shows that the load generator and backend, sharing"
  echo "  one core, are far from the bottleneck the proxies hit on theirs."
  echo "- Pinning: $pinning. With 2 cores the client core (wsbench + echo_backend) is shared;"
  echo "  a proxy whose run shows that core near 100 % is partly held back by it, so its figure is a"
  echo "  lower bound. A proxy near 100 % with the client core well below is the bottleneck itself."
  echo "- Fairness: one worker everywhere — wsgate \`workers: 1\`, HAProxy \`nbthread 1\` (\`mode http\`,"
  echo "  \`timeout tunnel 1h\`, plain backend), nginx \`worker_processes 1\` (\`proxy_http_version 1.1\`,"
  echo "  Upgrade/Connection headers, \`proxy_read_timeout 1h\`); access logs off for all three."
  echo "- Versions: $("$WSGATE" --version 2>/dev/null | head -n1)$(command -v haproxy >/dev/null && printf ', %s' "$(haproxy -v 2>/dev/null | head -n1 | awk '{print "HAProxy " $3}')")$(command -v nginx >/dev/null && printf ', %s' "$(nginx -v 2>&1 | sed 's/^nginx version: //')")."
  echo "- wsgate binary: $WSGATE, built $(date -u -r "$WSGATE" +'%Y-%m-%d %H:%M UTC') (source tree at $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')); default \`metrics\` settings."
  echo "- Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r), loopback only;"
  echo "  load average $load_before before, $load_after after (other work on the machine skews results); ${elapsed} s in all."
  if (( ${#skipped[@]} > 0 )); then echo "- Skipped: ${skipped[*]}."; fi
  echo
  echo "Every round's main figure (msgs/s or handshakes/s), in round order:"
  echo
  for t in "${ran[@]}"; do
    echo "- $t: echo 64 B: $(val "$t" echo64 all)| echo 16 KiB: $(val "$t" echo16k all)| handshake: $(val "$t" handshake all)"
  done
} >"$work/table.md"

mkdir -p "$(dirname "$OUT")"
cp "$work/table.md" "$OUT"
echo
cat "$work/table.md"
echo
echo "(written to $OUT)"

status=0
for t in "${ran[@]}"; do
  for test in idle echo64 echo16k handshake; do
    [[ $(val "$t" "$test" errors) == 0 ]] || status=1
  done
done
exit $status
