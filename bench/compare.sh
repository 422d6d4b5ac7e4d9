#!/usr/bin/env bash
# Benchmark wsgate against no proxy (direct), a minimal TCP relay (relay: bench/tcp_relay.cc, the
# floor of an epoll proxy), HAProxy, nginx and Caddy, all in front of the same four echo_backend
# processes, on loopback; see bench/README.md for the method.
#
#   scripts/build.sh build          # or: cmake --build build --target wsgate wsbench echo_backend tcp_relay
#   bench/compare.sh build          # or BUILD_DIR=build bench/compare.sh
#
# Prints one markdown table (each figure and its ratio to HAProxy), writes it with the method,
# versions and every round's figures to bench/results/latest.md and a chart to
# bench/results/latest.png. Knobs (environment): TARGETS, WORKERS, DURATION, REPEAT, HOLD,
# IDLE_COUNTS, METRICS_CMP, PROXY_CPU, CLIENT_CPU, PORT_BASE, INSTALL, OUT, KEEP, WSGATE,
# WSGATE_BASE (another wsgate binary, the target wsgate-base: before/after a change in one run),
# WSGATE_BASE_LABEL, WSGATE_LABEL. Exit status 1 if any run failed or counted an error, 2 on a setup problem.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
BUILD_DIR=${1:-${BUILD_DIR:-$repo/build}}
BUILD_DIR=$(cd "$BUILD_DIR" 2>/dev/null && pwd) || { echo "compare.sh: no build directory ${1:-${BUILD_DIR:-}}" >&2; exit 2; }
WSGATE=${WSGATE:-$BUILD_DIR/wsgate}
WSGATE_BASE=${WSGATE_BASE:-}          # the target wsgate-base: the same config, this binary
WSGATE_BASE_LABEL=${WSGATE_BASE_LABEL:-$WSGATE_BASE}  # what the base is, for the versions line
WSGATE_LABEL=${WSGATE_LABEL:-$WSGATE}  # what the new one is, for the before/after table
WSBENCH=$BUILD_DIR/bench/wsbench
BACKEND=$BUILD_DIR/bench/echo_backend
RELAY=$BUILD_DIR/bench/tcp_relay
TARGETS=${TARGETS:-"direct relay wsgate haproxy nginx caddy"}
WORKERS=${WORKERS:-"1 2"}             # passes: 1 = one thread/worker, proxy pinned; 2 = two, unpinned
DURATION=${DURATION:-5}               # measured seconds per timed run
REPEAT=${REPEAT:-3}                   # rounds; the median of each figure is reported
HOLD=${HOLD:-2}                       # idle: seconds the connections are held after RSS is read
IDLE_COUNTS=${IDLE_COUNTS:-"1000 5000 9000"}
METRICS_CMP=${METRICS_CMP:-1}         # 1: also run wsgate with metrics.enabled: false (128 B echo)
PROXY_CPU=${PROXY_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}           # wsbench and the echo backends
PORT_BASE=${PORT_BASE:-19200}
INSTALL=${INSTALL:-1}                 # 1: apt-get install missing proxies and gnuplot
OUT=${OUT:-$here/results/latest.md}
PNG=${PNG:-${OUT%.md}.png}
NBACKENDS=4

log() { printf '%s\n' "$*" >&2; }
die() { log "compare.sh: $*"; exit 2; }

# WSGATE_BASE adds wsgate-base, right before wsgate, unless TARGETS names it.
if [[ -n $WSGATE_BASE ]]; then
  [[ -x $WSGATE_BASE ]] || die "WSGATE_BASE=$WSGATE_BASE is not an executable"
  WSGATE_BASE=$(realpath "$WSGATE_BASE")
  if [[ " $TARGETS " != *" wsgate-base "* ]]; then
    if [[ " $TARGETS " == *" wsgate "* ]]; then TARGETS=$(sed 's/\(^\| \)wsgate\( \|$\)/\1wsgate-base wsgate\2/' <<<"$TARGETS")
    else TARGETS+=" wsgate-base"; fi
  fi
elif [[ " $TARGETS " == *" wsgate-base "* ]]; then
  die "the target wsgate-base needs WSGATE_BASE=/path/to/the/other/wsgate"
fi

for bin in "$WSGATE" "$WSBENCH" "$BACKEND"; do
  [[ -x $bin ]] || die "$bin is missing; build first: cmake --build $BUILD_DIR --target wsgate wsbench echo_backend tcp_relay"
done
(( $(nproc) >= 2 )) || die "needs at least 2 CPUs (proxy on one, load generator and backends on another)"
command -v taskset >/dev/null || die "taskset (util-linux) is missing"

# 9,000 proxied connections take ~18,000 descriptors in the proxy and 9,000 in wsbench.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
if (( $(ulimit -n) < 19000 )); then
  log "compare.sh: open-files limit is $(ulimit -n) (hard $(ulimit -Hn)); 9,000 idle connections need ~19,000 — raise the hard limit"
fi

# --- tools -------------------------------------------------------------------------------

# Installs the Debian packages of missing tools without letting them start as services.
install_missing() {
  local want=() pkg
  for pkg in "$@"; do
    case $pkg in
      gnuplot-nox) command -v gnuplot >/dev/null || want+=("$pkg") ;;
      *) command -v "$pkg" >/dev/null || want+=("$pkg") ;;
    esac
  done
  (( ${#want[@]} > 0 )) || return 0
  if [[ $INSTALL != 1 ]]; then log "== not installed (INSTALL=0): ${want[*]}"; return 0; fi
  if (( $(id -u) != 0 )); then log "== not root, cannot install: ${want[*]}"; return 0; fi
  log "== installing ${want[*]} (apt-get; services kept from starting)"
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [[ ! -e $policy ]]; then  # invoke-rc.d asks this; 101 = "action not allowed"
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${want[@]}" >&2 ||
    { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${want[@]}" >&2; }
  (( own_policy )) && rm -f "$policy"
  # Should a service have started anyway, stop it so its ports (80, ...) are free.
  for pkg in "${want[@]}"; do
    case $pkg in haproxy|nginx|caddy) service "$pkg" stop >/dev/null 2>&1 || true ;; esac
    for pidfile in "/run/$pkg.pid" "/var/run/$pkg.pid"; do
      [[ -s $pidfile ]] && kill "$(cat "$pidfile")" 2>/dev/null
    done
  done
}
want_tools=()
for t in $TARGETS; do case $t in haproxy|nginx|caddy) want_tools+=("$t") ;; esac; done
want_tools+=(gnuplot-nox)
[[ $METRICS_CMP == 1 ]] && want_tools+=(valgrind)  # metrics_cost.sh: metrics on/off in instructions
install_missing "${want_tools[@]}"

work=$(mktemp -d /tmp/wsbench-compare.XXXXXX)
chmod 755 "$work"  # nginx workers run as nobody
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi
  done
  if [[ ${KEEP:-0} == 1 ]]; then log "compare.sh: work files kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_in_use() { [[ -n $(ss -Htln "sport = :$1" 2>/dev/null) ]]; }
wait_until() {  # wait_until PID COMMAND...: until COMMAND succeeds while PID lives (10 s)
  local pid=$1 i
  shift
  for i in $(seq 200); do
    "$@" && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
file_ready() { [[ -s $1 ]]; }
stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null
  for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}
rss_kib() {  # summed VmRSS of the given pids
  local pid sum=0 v
  for pid in "$@"; do
    v=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}

backend_ports=()
for i in $(seq 0 $((NBACKENDS - 1))); do backend_ports+=($((PORT_BASE + i))); done
declare -A port=([direct]=${backend_ports[0]} [wsgate]=$((PORT_BASE + 10)) [wsgate_nometrics]=$((PORT_BASE + 11))
                 [haproxy]=$((PORT_BASE + 12)) [nginx]=$((PORT_BASE + 13)) [caddy]=$((PORT_BASE + 14))
                 [relay]=$((PORT_BASE + 15)) [wsgate-base]=$((PORT_BASE + 16)))
for p in "${backend_ports[@]}" "${port[wsgate]}" "${port[wsgate_nometrics]}" "${port[haproxy]}" "${port[nginx]}" "${port[caddy]}" "${port[relay]}" "${port[wsgate-base]}"; do
  port_in_use "$p" && die "port $p is in use (set PORT_BASE)"
done

# --- proxy configs -------------------------------------------------------------------------

write_configs() {  # $1 workers
  local n=$1 p
  for name in wsgate wsgate_nometrics wsgate-base; do
    local metrics=true; [[ $name == wsgate_nometrics ]] && metrics=false
    {
      echo "workers: $n"
      echo "listeners:"
      echo "  - name: bench"
      echo "    address: 127.0.0.1:${port[$name]}"
      echo "routes:"
      echo "  - pool: echo"
      echo "pools:"
      echo "  - name: echo"
      echo "    balance: least_conn"
      echo "    backends:"
      for p in "${backend_ports[@]}"; do echo "      - address: 127.0.0.1:$p"; done
      echo "limits: {max_connections: 20000}"
      echo "log: {access: off}"
      echo "metrics: {enabled: $metrics}"
    } >"$work/$name.yaml"
  done
  # maxconn 9500: HAProxy sizes its fd table at ~2 x maxconn and open files are capped at 20000.
  {
    echo "global"
    echo "  nbthread $n"
    echo "  maxconn 9500"
    echo "defaults"
    echo "  mode http"
    echo "  timeout connect 5s"
    echo "  timeout client 30s"
    echo "  timeout server 30s"
    echo "  timeout http-request 10s"
    echo "  timeout tunnel 1h"
    echo "frontend bench"
    echo "  bind 127.0.0.1:${port[haproxy]}"
    echo "  default_backend echo"
    echo "backend echo"
    echo "  balance leastconn"
    for i in "${!backend_ports[@]}"; do echo "  server echo$i 127.0.0.1:${backend_ports[$i]}"; done
  } >"$work/haproxy.cfg"
  mkdir -p "$work/nginx" "$work/caddy"
  chmod 755 "$work/nginx"
  {
    echo "worker_processes $n;"
    echo "worker_rlimit_nofile 20000;"
    echo "pid $work/nginx/nginx.pid;"
    echo "error_log $work/nginx/error.log warn;"
    echo "events { worker_connections 19500; }"
    echo "http {"
    echo "  access_log off;"
    for d in client_body proxy fastcgi uwsgi scgi; do echo "  ${d}_temp_path $work/nginx/$d;"; done
    echo "  upstream echo {"
    echo "    least_conn;"
    for p in "${backend_ports[@]}"; do echo "    server 127.0.0.1:$p;"; done
    echo "  }"
    echo "  server {"
    echo "    listen 127.0.0.1:${port[nginx]};"
    echo "    location / {"
    echo "      proxy_pass http://echo;"
    echo "      proxy_http_version 1.1;"
    echo "      proxy_set_header Upgrade \$http_upgrade;"
    echo "      proxy_set_header Connection \"upgrade\";"
    echo "      proxy_read_timeout 1h;"
    echo "      proxy_send_timeout 1h;"
    echo "    }"
    echo "  }"
    echo "}"
  } >"$work/nginx/nginx.conf"
  local upstreams=""
  for p in "${backend_ports[@]}"; do upstreams+=" 127.0.0.1:$p"; done
  cat >"$work/caddy/Caddyfile" <<EOF
{
	admin off
	auto_https off
	log {
		level ERROR
	}
}
http://127.0.0.1:${port[caddy]} {
	reverse_proxy$upstreams {
		lb_policy least_conn
	}
}
EOF
}

declare -A main_pid proc_pids  # per target: the process to stop / all its processes, comma-separated
proxy_pin=()
children_of() { pgrep -P "$1" | paste -sd, -; }
start_proxy() {  # $1 target, $2 workers
  local t=$1 n=$2 pid
  case $t in
    direct) return 0 ;;
    relay)  # single-threaded whatever the pass's workers
      local backends=() p
      for p in "${backend_ports[@]}"; do backends+=(-b "127.0.0.1:$p"); done
      rm -f "$work/$t.ready"
      "${proxy_pin[@]}" "$RELAY" -l "${port[$t]}" -r "$work/$t.ready" "${backends[@]}" >>"$work/$t.log" 2>&1 &
      pid=$!
      wait_until "$pid" file_ready "$work/$t.ready" || { pids+=("$pid"); main_pid[$t]=$pid; return 1; }
      proc_pids[$t]=$pid ;;
    wsgate|wsgate_nometrics|wsgate-base)
      local bin=$WSGATE
      [[ $t == wsgate-base ]] && bin=$WSGATE_BASE
      rm -f "$work/$t.ready"
      "${proxy_pin[@]}" "$bin" -c "$work/$t.yaml" --ready-file "$work/$t.ready" --log-level warn >>"$work/$t.log" 2>&1 &
      pid=$!
      wait_until "$pid" file_ready "$work/$t.ready" || { pids+=("$pid"); main_pid[$t]=$pid; return 1; }
      proc_pids[$t]=$pid ;;
    haproxy)
      "${proxy_pin[@]}" haproxy -db -f "$work/haproxy.cfg" >>"$work/$t.log" 2>&1 &
      pid=$!
      wait_until "$pid" port_in_use "${port[$t]}" || { pids+=("$pid"); main_pid[$t]=$pid; return 1; }
      proc_pids[$t]=$pid ;;
    nginx)
      "${proxy_pin[@]}" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" \
        -g 'daemon off;' >>"$work/$t.log" 2>&1 &
      pid=$!
      wait_until "$pid" port_in_use "${port[$t]}" || { pids+=("$pid"); main_pid[$t]=$pid; return 1; }
      nginx_workers_up() { [[ $(pgrep -c -P "$1") -ge $2 ]]; }
      wait_until "$pid" nginx_workers_up "$pid" "$n" || { pids+=("$pid"); main_pid[$t]=$pid; return 1; }
      proc_pids[$t]=$pid,$(children_of "$pid") ;;
    caddy)
      env GOMAXPROCS="$n" HOME="$work/caddy" XDG_DATA_HOME="$work/caddy" XDG_CONFIG_HOME="$work/caddy" \
        "${proxy_pin[@]}" caddy run --adapter caddyfile --config "$work/caddy/Caddyfile" >>"$work/$t.log" 2>&1 &
      pid=$!
      wait_until "$pid" port_in_use "${port[$t]}" || { pids+=("$pid"); main_pid[$t]=$pid; return 1; }
      proc_pids[$t]=$pid ;;
  esac
  pids+=("$pid")
  main_pid[$t]=$pid
}
stop_proxy() {
  [[ -n ${main_pid[$1]:-} ]] && stop_pid "${main_pid[$1]}"
  main_pid[$1]=""
  proc_pids[$1]=""
}
installed() {
  case $1 in direct|wsgate|wsgate_nometrics) return 0 ;; wsgate-base) [[ -x $WSGATE_BASE ]] ;; relay) [[ -x $RELAY ]] ;; *) command -v "$1" >/dev/null ;; esac
}

backend_pids=()
start_backends() {
  local p pid
  for p in "${backend_ports[@]}"; do
    rm -f "$work/backend-$p.ready"
    "${client_pin[@]}" "$BACKEND" -p "$p" -t 1 -r "$work/backend-$p.ready" >"$work/backend-$p.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    backend_pids+=("$pid")
    wait_until "$pid" file_ready "$work/backend-$p.ready" || die "echo_backend on port $p did not start: $(cat "$work/backend-$p.log")"
  done
}
stop_backends() {
  local pid
  for pid in "${backend_pids[@]}"; do stop_pid "$pid"; done
  backend_pids=()
}

# --- runs ----------------------------------------------------------------------------------

# Scenarios: key, label, wsbench arguments, main figure.
scenarios=(e128 e1k e64k hs)
declare -A scen_label=([e128]="echo 64 conns × 128 B" [e1k]="echo 1000 conns × 1 KiB"
                       [e64k]="echo 16 conns × 64 KiB" [hs]="handshake 50 loops")
declare -A scen_args=([e128]="echo -c 64 -s 128" [e1k]="echo -c 1000 -s 1024"
                      [e64k]="echo -c 16 -s 65536" [hs]="handshake -c 50 -s 64")
declare -A scen_short=([e128]="128 B" [e1k]="1 KiB" [e64k]="64 KiB" [hs]="handshake")
declare -A scen_main=([e128]=msgs_per_s [e1k]=msgs_per_s [e64k]=mb_per_s [hs]=handshakes_per_s)

declare -A R  # R[pass,target,scenario#round,key] for one round, R[pass,target,scenario,key] the median
failures=()
status=0

result_into() {  # $1 prefix, $2 output file; returns 1 if there is no RESULT line
  local line kv
  line=$(grep '^RESULT ' "$2" | tail -n1)
  [[ -n $line ]] || return 1
  for kv in ${line#RESULT }; do R[$1,${kv%%=*}]=${kv#*=}; done
}
note_failure() {  # $1 prefix, $2 output file, $3 exit status
  R[$1,failed]="exit $3, errors ${R[$1,errors]:-?}"
  failures+=("w${1//,/ }: ${R[$1,failed]}: $(grep -v '^RESULT' "$2" | grep -m3 -i 'error\|fail\|refused\|wsbench:' | tr '\n' ' ')")
  status=1
}

run_timed() {  # $1 pass, $2 target, $3 scenario, $4 round
  local w=$1 t=$2 s=$3 r=$4 out="$work/w$1-$2-$3-$4.out" cpu=() threads=1
  (( w > 1 )) && threads=2
  [[ $pinned == 1 ]] && cpu+=(--cpu-core "$PROXY_CPU")
  [[ -n ${proc_pids[$t]:-} ]] && cpu+=(--cpu-pid "${proc_pids[$t]}")
  # shellcheck disable=SC2086  # scen_args is a word list
  "${client_pin[@]}" "$WSBENCH" ${scen_args[$s]} -d "$DURATION" -t "$threads" -p "${port[$t]}" "${cpu[@]}" >"$out" 2>&1
  local rc=$? key="$w,$t,$s#$r"
  result_into "$key" "$out"
  if (( rc != 0 )) || [[ ${R[$key,errors]:-x} != 0 ]]; then note_failure "$key" "$out" "$rc"; fi
  log "  [w$w $t ${scen_label[$s]} r$r] ${scen_main[$s]}=${R[$key,${scen_main[$s]}]:-—} core_us/op=${R[$key,core_us_per_op]:-—} proc_us/op=${R[$key,proc_us_per_op]:-—} p99=${R[$key,p99_us]:-—}${R[$key,failed]:+ FAILED (${R[$key,failed]})}"
}

run_idle() {  # $1 pass, $2 target, $3 connections: against a freshly started proxy
  local w=$1 t=$2 n=$3 key="$1,$2,idle$3" out="$work/w$1-$2-idle$3.out"
  if ! start_proxy "$t" "$w"; then
    R[$key,failed]="did not start"; failures+=("w$w $t idle$n: did not start"); status=1; stop_proxy "$t"; return
  fi
  local ps=${proc_pids[$t]//,/ } before after=
  local threads=1
  (( w > 1 )) && threads=2
  # Warm-up: 64 connections opened and closed first, so code pages faulted in and one-time
  # allocations (every proxy has them) land in "before", not in the per-connection figure.
  "${client_pin[@]}" "$WSBENCH" idle -c 64 -H 0 -t "$threads" -p "${port[$t]}" >"$out.warm" 2>&1 || true
  sleep 0.5
  # shellcheck disable=SC2086
  before=$(rss_kib $ps)
  "${client_pin[@]}" "$WSBENCH" idle -c "$n" -H "$HOLD" -t "$threads" --connect-concurrency 512 -p "${port[$t]}" >"$out" 2>&1 &
  local bench=$!
  pids+=("$bench")
  local i
  for i in $(seq 1200); do
    grep -q '^IDLE_READY' "$out" 2>/dev/null && break
    kill -0 "$bench" 2>/dev/null || break
    sleep 0.05
  done
  if grep -q '^IDLE_READY' "$out"; then
    sleep 1  # let the proxy finish the upstream side and settle
    # shellcheck disable=SC2086
    after=$(rss_kib $ps)
  fi
  wait "$bench"
  local rc=$?
  stop_proxy "$t"
  result_into "$key" "$out"
  if (( rc != 0 )) || [[ ${R[$key,errors]:-x} != 0 ]] || [[ ${R[$key,open]:-0} != "$n" ]]; then
    note_failure "$key" "$out" "$rc"
  fi
  R[$key,rss_before]=$before
  R[$key,rss_after]=$after
  if [[ -n $after ]] && [[ -z ${R[$key,failed]:-} ]]; then
    R[$key,kib_per_conn]=$(awk -v a="$after" -v b="$before" -v n="$n" 'BEGIN {printf "%.2f", (a - b) / n}')
  fi
  log "  [w$w $t idle $n] RSS ${before} KiB -> ${after:-?} KiB: ${R[$key,kib_per_conn]:-—} KiB/connection${R[$key,failed]:+ FAILED (${R[$key,failed]})}"
}

median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
pick_medians() {  # $1 pass, $2 target, $3 scenario: the median of every figure over the rounds
  local w=$1 t=$2 s=$3 k r vals v
  for k in msgs_per_s mb_per_s handshakes_per_s p50_us p99_us p999_us core_us_per_op proc_us_per_op; do
    vals=()
    for r in $(seq "$REPEAT"); do
      v=${R[$w,$t,$s#$r,$k]:-}
      [[ -z ${R[$w,$t,$s#$r,failed]:-} && $v =~ ^[0-9.]+$ ]] && vals+=("$v")
    done
    (( ${#vals[@]} > 0 )) && R[$w,$t,$s,$k]=$(printf '%s\n' "${vals[@]}" | median)
    # Round-to-round spread, (max - min) / median in %: the noise a before/after difference is
    # judged against.
    (( ${#vals[@]} > 1 )) && R[$w,$t,$s,$k,spread]=$(printf '%s\n' "${vals[@]}" |
      awk -v m="${R[$w,$t,$s,$k]}" 'NR == 1 {lo = hi = $1} {if ($1 < lo) lo = $1; if ($1 > hi) hi = $1}
                                     END {if (m > 0) printf "%.1f", (hi - lo) / m * 100}')
    R[$w,$t,$s,$k,all]=$(for r in $(seq "$REPEAT"); do printf '%s ' "${R[$w,$t,$s#$r,$k]:-?}"; done)
  done
  for r in $(seq "$REPEAT"); do
    [[ -n ${R[$w,$t,$s#$r,failed]:-} ]] && R[$w,$t,$s,failed]=1
  done
}

# --- main ----------------------------------------------------------------------------------

ran=()
skipped=()
for t in $TARGETS; do
  case $t in direct|relay|wsgate|wsgate-base|haproxy|nginx|caddy) ;; *) die "unknown target $t" ;; esac
  why="not installed"
  [[ $t == relay ]] && why="not built: $RELAY"
  if installed "$t"; then ran+=("$t"); else skipped+=("$t ($why)"); log "== $t: $why: skipped"; fi
done
has() { local x; for x in "${ran[@]}"; do [[ $x == "$1" ]] && return 0; done; return 1; }
metrics_cmp=0
[[ $METRICS_CMP == 1 ]] && has wsgate && metrics_cmp=1

# Estimate: a timed run is D plus ~1 s of connecting and closing; an idle run ~1.5 s + HOLD + the
# connects (~5,000/s).
proxies=0
for t in "${ran[@]}"; do [[ $t != direct ]] && proxies=$((proxies + 1)); done
npass=$(wc -w <<<"$WORKERS")
idle_conns=0
for n in $IDLE_COUNTS; do idle_conns=$((idle_conns + n)); done
est=$(awk -v p="$npass" -v r="$REPEAT" -v n="${#ran[@]}" -v d="$DURATION" -v x="$proxies" \
          -v ic="$(wc -w <<<"$IDLE_COUNTS")" -v c="$idle_conns" -v h="$HOLD" -v m="$metrics_cmp" \
          'BEGIN {print int(p * (r * (4 * n + m) * (d + 1) + x * (ic * (1.5 + h) + c / 5000)) + 5)}')
log "== estimated duration: $((est / 60)) min $((est % 60)) s (passes workers=[$WORKERS], $REPEAT rounds, ${DURATION} s per run, targets: ${ran[*]})"

# Busy % of the proxy's core over 2 s with nothing of ours running on it: what other work on
# the machine adds to every proxy-core figure.
core_background() {
  local a b
  a=$(awk -v c="cpu$PROXY_CPU" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat)
  sleep 2
  b=$(awk -v c="cpu$PROXY_CPU" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN {split(a, x, " "); split(b, y, " "); t = (y[1] - x[1]) + (y[2] - x[2]);
                                  if (t > 0) printf "%.0f", (y[1] - x[1]) * 100 / t; else print "?"}'
}
started=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
background_before=$(core_background)
log "== CPU $PROXY_CPU is ${background_before} % busy with none of the benchmark on it"
for w in $WORKERS; do
  if (( w == 1 )); then
    pinned=1
    client_pin=(taskset -c "$CLIENT_CPU")
    proxy_pin=(taskset -c "$PROXY_CPU")
    log "== pass workers=$w: proxy pinned to CPU $PROXY_CPU, wsbench and the $NBACKENDS echo backends to CPU $CLIENT_CPU"
  else
    pinned=0
    client_pin=()
    proxy_pin=()
    log "== pass workers=$w: no pinning; wsbench (2 threads) and the backends compete with the proxy for the cores"
  fi
  write_configs "$w"
  start_backends
  log "== idle: ${IDLE_COUNTS} connections, each count against a freshly started proxy"
  for n in $IDLE_COUNTS; do
    for t in "${ran[@]}"; do [[ $t == direct ]] || run_idle "$w" "$t" "$n"; done
  done
  pass_targets=()
  for t in "${ran[@]}"; do
    if start_proxy "$t" "$w"; then
      pass_targets+=("$t")
    else
      log "== $t did not start: skipped in this pass"; tail -n 5 "$work/$t.log" >&2
      failures+=("w$w $t: did not start"); status=1; stop_proxy "$t"
    fi
  done
  extra=()
  if (( metrics_cmp && w == 1 )) && start_proxy wsgate_nometrics "$w"; then extra=(wsgate_nometrics); fi
  n=${#pass_targets[@]}
  # wsgate-base runs right next to wsgate (see below), not in the rotation.
  base_paired=0
  for t in "${pass_targets[@]}"; do [[ $t == wsgate ]] && base_paired=1; done
  for r in $(seq "$REPEAT"); do
    log "== workers=$w round $r of $REPEAT"
    for s in "${scenarios[@]}"; do
      list=()
      for t in "${pass_targets[@]}"; do (( base_paired )) && [[ $t == wsgate-base ]] || list+=("$t"); done
      m=${#list[@]}
      for i in $(seq 0 $((m - 1))); do  # who goes first rotates from round to round
        t=${list[$(( (i + r - 1) % m ))]}
        group=("$t")
        if [[ $t == wsgate ]]; then
          # Metrics on and off, and base and new, back to back, each in turn first, so none
          # always gets the same neighbour or slot: runs here drift by more than the few %
          # being measured.
          [[ $s == e128 && ${#extra[@]} -gt 0 ]] && group+=(wsgate_nometrics)
          (( base_paired )) && [[ ${main_pid[wsgate-base]:-} ]] && group+=(wsgate-base)
        fi
        g=${#group[@]}
        for j in $(seq 0 $((g - 1))); do run_timed "$w" "${group[$(( (j + r - 1) % g ))]}" "$s" "$r"; done
      done
    done
  done
  for t in "${pass_targets[@]}" "${extra[@]}"; do
    stop_proxy "$t"
    for s in "${scenarios[@]}"; do pick_medians "$w" "$t" "$s"; done
  done
  stop_backends
done
# Metrics on/off in instructions per message: deterministic where the timed runs are not.
metrics_instr=""
if (( metrics_cmp )) && command -v valgrind >/dev/null; then
  log "== metrics on/off under callgrind (bench/metrics_cost.sh, 3 rounds)"
  if bash "$here/metrics_cost.sh" "$BUILD_DIR" 3 >"$work/metrics_cost.out" 2>&1; then
    cat "$work/metrics_cost.out" >&2
    # The round with the median cost: its on, off and cost.
    read -r metrics_instr_on metrics_instr_off metrics_instr < <(
      sed -n 's/.*metrics on \([0-9]*\), off \([0-9]*\), cost \([-+0-9.]*\)%.*/\1 \2 \3/p' "$work/metrics_cost.out" |
        sort -g -k3 | awk '{v[NR] = $0} END {if (NR) print v[int((NR + 1) / 2)]}')
    [[ -n $metrics_instr ]] && metrics_instr="$metrics_instr %"
  else
    log "compare.sh: metrics_cost.sh failed: $(tail -n 3 "$work/metrics_cost.out")"
  fi
fi
background_after=$(core_background)
elapsed=$(( $(date +%s) - started ))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# --- table ---------------------------------------------------------------------------------

ref=haproxy
has haproxy || ref=wsgate
before_after=0
has wsgate && has wsgate-base && before_after=1
# cell PASS TARGET SCENARIO KEY [DECIMALS]: "value (ratio×)" against the reference target.
fmt() { awk -v v="$1" -v d="${2:-0}" 'BEGIN {printf "%.*f", d, v}'; }
cell() {
  local w=$1 t=$2 s=$3 k=$4 d=${5:-0} v b
  if [[ -n ${R[$w,$t,$s,failed]:-} ]]; then printf '**FAIL**'; return; fi
  v=${R[$w,$t,$s,$k]:-}
  [[ -z $v ]] && { printf '—'; return; }
  b=${R[$w,$ref,$s,$k]:-}
  if [[ $v =~ ^[0-9.]+$ && $b =~ ^[0-9.]+$ ]] && awk -v b="$b" 'BEGIN {exit !(b > 0)}'; then
    printf '%s (%s×)' "$(fmt "$v" "$d")" "$(awk -v v="$v" -v b="$b" 'BEGIN {printf "%.2f", v / b}')"
  else
    fmt "$v" "$d"
  fi
}
# new_over_base PASS SCENARIO KEY: wsgate ÷ wsgate-base, or — when either is missing or failed.
new_over_base() {
  local v=${R[$1,wsgate,$2,$3]:-} b=${R[$1,wsgate-base,$2,$3]:-}
  if [[ -z ${R[$1,wsgate,$2,failed]:-}${R[$1,wsgate-base,$2,failed]:-} && $v =~ ^[0-9.]+$ && $b =~ ^[0-9.]+$ ]] &&
     awk -v b="$b" 'BEGIN {exit !(b > 0)}'; then
    awk -v v="$v" -v b="$b" 'BEGIN {printf "%.3f", v / b}'
  else
    printf '—'
  fi
}
row() {  # $1 pass, $2 label, $3 scenario (or idleN), $4 key, $5 decimals
  local line="| $2 |" t
  for t in "${ran[@]}"; do line+=" $(cell "$1" "$t" "$3" "$4" "${5:-0}") |"; done
  (( before_after )) && line+=" $(new_over_base "$1" "$3" "$4") |"
  printf '%s\n' "$line"
}
# Marginal cost between the two largest idle counts: (RSS at b - RSS at a) / (b - a), which
# leaves out start-up allocations that the per-connection figure spreads over N.
read -r idle_a idle_b < <(tr ' ' '\n' <<<"$IDLE_COUNTS" | grep . | sort -n | tail -n2 | paste -sd' ' -)
for w in $WORKERS; do
  for n in $IDLE_COUNTS; do for t in "${ran[@]}"; do
    k="$w,$t,idle$n"
    [[ -n ${R[$k,rss_before]:-} ]] && R[$k,mib_before]=$(awk -v k="${R[$k,rss_before]}" 'BEGIN {print k / 1024}')
  done; done
  for t in "${ran[@]}"; do
    [[ -n ${idle_b:-} && -n ${R[$w,$t,idle$idle_a,kib_per_conn]:-} && -n ${R[$w,$t,idle$idle_b,kib_per_conn]:-} ]] || continue
    R[$w,$t,marginal,kib]=$(awk -v a="${R[$w,$t,idle$idle_a,rss_after]}" -v b="${R[$w,$t,idle$idle_b,rss_after]}" \
                                -v na="$idle_a" -v nb="$idle_b" 'BEGIN {printf "%.2f", (b - a) / (nb - na)}')
  done
done

table() {
  local header="| figure |" sep="|---|" t w s
  for t in "${ran[@]}"; do header+=" $t |"; sep+="---:|"; done
  (( before_after )) && { header+=" wsgate ÷ wsgate-base |"; sep+="---:|"; }
  echo "$header"
  echo "$sep"
  for w in $WORKERS; do
    local wl="w$w"
    for s in "${scenarios[@]}"; do
      local l="$wl ${scen_label[$s]}"
      if [[ $s == hs ]]; then
        row "$w" "$l: handshakes/s ↑" "$s" handshakes_per_s
        row "$w" "$l: upgrade p50 µs ↓" "$s" p50_us
        row "$w" "$l: upgrade p99 µs ↓" "$s" p99_us
        row "$w" "$l: upgrade p99.9 µs ↓" "$s" p999_us
      else
        row "$w" "$l: msgs/s ↑" "$s" msgs_per_s
        [[ $s == e64k ]] && row "$w" "$l: MB/s payload both ways ↑" "$s" mb_per_s 1
        row "$w" "$l: p50 µs ↓" "$s" p50_us
        row "$w" "$l: p99 µs ↓" "$s" p99_us
        row "$w" "$l: p99.9 µs ↓" "$s" p999_us
      fi
      (( w == 1 )) && row "$w" "$l: **proxy-core µs/op** ↓" "$s" core_us_per_op 2
      row "$w" "$l: proxy process CPU µs/op ↓" "$s" proc_us_per_op 2
    done
    for n in $IDLE_COUNTS; do
      row "$w" "$wl idle $n conns: proxy KiB per connection ↓" "idle$n" kib_per_conn 2
    done
    [[ -n ${idle_b:-} ]] && row "$w" "$wl idle: marginal KiB per connection, $idle_a → $idle_b ↓" marginal kib 2
    row "$w" "$wl idle: proxy RSS before, MiB" "idle${IDLE_COUNTS%% *}" mib_before 1
  done
}

# The before/after table: wsgate-base, wsgate, wsgate ÷ wsgate-base, the round-to-round spread
# of each, and whether the difference is larger than that spread.
plain() {  # PASS TARGET SCENARIO KEY DECIMALS: the figure, **FAIL** or —
  if [[ -n ${R[$1,$2,$3,failed]:-} ]]; then printf '**FAIL**'; return; fi
  local v=${R[$1,$2,$3,$4]:-}
  if [[ $v =~ ^[0-9.]+$ ]]; then fmt "$v" "$5"; else printf '—'; fi
}
ba_row() {  # $1 pass, $2 label, $3 scenario, $4 key, $5 decimals, $6 better: up or down
  local w=$1 s=$3 k=$4 d=$5 q sb sn verdict
  [[ -n ${R[$w,wsgate-base,$s,$k]:-}${R[$w,wsgate,$s,$k]:-}${R[$w,wsgate,$s,failed]:-} ]] || return 0
  q=$(new_over_base "$w" "$s" "$k")
  sb=${R[$w,wsgate-base,$s,$k,spread]:-}
  sn=${R[$w,wsgate,$s,$k,spread]:-}
  if [[ $q == — ]]; then
    verdict=—
  elif [[ -z $sb || -z $sn ]]; then
    verdict="$(awk -v q="$q" 'BEGIN {printf "%+.1f %%", (q - 1) * 100}'), one run: no spread to judge by"
  else
    verdict=$(awk -v q="$q" -v a="$sb" -v b="$sn" -v better="$6" 'BEGIN {
      diff = (q - 1) * 100; noise = a > b ? a : b; mag = diff < 0 ? -diff : diff
      if (mag <= noise) { printf "%+.1f %%, within noise", diff; exit }
      worse = (better == "up") ? diff < 0 : diff > 0
      if (worse) printf "**%+.1f %%, worse beyond noise**", diff
      else printf "%+.1f %%, better beyond noise", diff }')
  fi
  echo "| $2 | $(plain "$w" wsgate-base "$s" "$k" "$d") | $(plain "$w" wsgate "$s" "$k" "$d") | $q | ${sb:-—} / ${sn:-—} | $verdict |"
}
before_after_table() {
  (( before_after )) || return 0
  local w s n l
  echo "### Before/after: wsgate ÷ wsgate-base"
  echo
  echo "wsgate-base: ${WSGATE_BASE_LABEL}; wsgate: ${WSGATE_LABEL}. Same config, same rounds, run back"
  echo "to back in alternating order. Spread = (max − min) ÷ median of the rounds, in %; a difference no larger"
  echo "than the larger of the two spreads is called noise."
  echo
  echo "| figure | wsgate-base | wsgate | wsgate ÷ base | spread % base / new | difference |"
  echo "|---|---:|---:|---:|---:|---|"
  for w in $WORKERS; do
    for s in "${scenarios[@]}"; do
      l="w$w ${scen_label[$s]}"
      case $s in
        hs) ba_row "$w" "$l: handshakes/s ↑" "$s" handshakes_per_s 0 up ;;
        e64k) ba_row "$w" "$l: MB/s ↑" "$s" mb_per_s 1 up ;;
        *) ba_row "$w" "$l: msgs/s ↑" "$s" msgs_per_s 0 up ;;
      esac
      ba_row "$w" "$l: p99 µs ↓" "$s" p99_us 0 down
      (( w == 1 )) && ba_row "$w" "$l: proxy-core µs/op ↓" "$s" core_us_per_op 2 down
      ba_row "$w" "$l: proxy process CPU µs/op ↓" "$s" proc_us_per_op 2 down
    done
    for n in $IDLE_COUNTS; do
      ba_row "$w" "w$w idle $n conns: KiB per connection ↓" "idle$n" kib_per_conn 2 down
    done
  done
  echo
}

metrics_table() {
  (( metrics_cmp )) || return 0
  local on_c=${R[1,wsgate,e128,core_us_per_op]:-} off_c=${R[1,wsgate_nometrics,e128,core_us_per_op]:-}
  local on_p=${R[1,wsgate,e128,proc_us_per_op]:-} off_p=${R[1,wsgate_nometrics,e128,proc_us_per_op]:-}
  [[ -n $on_c$on_p ]] || return 0
  pct_diff() { [[ $1 =~ ^[0-9.]+$ && $2 =~ ^[0-9.]+$ ]] && awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%+.1f %%", (a - b) / b * 100}'; }
  echo "| wsgate, echo 64 × 128 B, workers: 1 | metrics on | metrics off | on vs off (target < 3 %) |"
  echo "|---|---:|---:|---:|"
  echo "| proxy-core µs/op | ${on_c:-—} | ${off_c:-—} | $(pct_diff "$on_c" "$off_c") |"
  echo "| proxy process CPU µs/op | ${on_p:-—} | ${off_p:-—} | $(pct_diff "$on_p" "$off_p") |"
  echo "| msgs/s | ${R[1,wsgate,e128,msgs_per_s]:-—} | ${R[1,wsgate_nometrics,e128,msgs_per_s]:-—} | $(pct_diff "${R[1,wsgate,e128,msgs_per_s]:-}" "${R[1,wsgate_nometrics,e128,msgs_per_s]:-}") |"
  if [[ -n ${metrics_instr:-} ]]; then
    echo "| instructions per message (callgrind, \`metrics_cost.sh\`) | ${metrics_instr_on} | ${metrics_instr_off} | ${metrics_instr} |"
  fi
  echo
  echo "Consecutive 5 s runs on this machine differ by up to ±15 %, more than the 3 % being measured, so"
  echo "the timed rows are indicative; the instruction count (valgrind's callgrind, which repeats exactly)"
  echo "is the figure to judge the target by."
}

versions() {
  local v=()
  v+=("wsgate $("$WSGATE" --version 2>/dev/null | head -n1 | awk '{print $NF}') (source $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?'), binary built $(date -u -r "$WSGATE" +'%Y-%m-%d %H:%M UTC'))")
  has wsgate-base && v+=("wsgate-base $("$WSGATE_BASE" --version 2>/dev/null | head -n1 | awk '{print $NF}') ($WSGATE_BASE_LABEL, binary built $(date -u -r "$WSGATE_BASE" +'%Y-%m-%d %H:%M UTC'))")
  has haproxy && v+=("HAProxy $(haproxy -v 2>/dev/null | head -n1 | awk '{print $3}')")
  has nginx && v+=("$(nginx -v 2>&1 | sed 's/^nginx version: //')")
  has caddy && v+=("Caddy $(caddy version 2>/dev/null | awk '{print $1}')")
  has relay && v+=("relay: bench/tcp_relay.cc, built $(date -u -r "$RELAY" +'%Y-%m-%d %H:%M UTC')")
  local joined
  printf -v joined '%s; ' "${v[@]}"
  echo "${joined%; }"
}

{
  echo "## wsgate vs HAProxy, nginx, Caddy — $(date -u +'%Y-%m-%d %H:%M UTC')"
  echo
  before_after_table
  table
  echo
  echo "Ratios are target ÷ $ref (↑ higher is better, ↓ lower is better); each figure is the median"
  echo "over $REPEAT rounds of ${DURATION} s. wN = the pass with N threads/workers per proxy. **FAIL** = a round"
  echo "of that cell failed or counted an error (listed below)."
  (( before_after )) && echo "The last column is wsgate ÷ wsgate-base ($WSGATE_BASE_LABEL), whatever the direction of the figure."
  if has relay; then
    echo "\`relay\` is the minimal TCP relay (bench/tcp_relay.cc), one thread in every pass (w2 too): its"
    echo "proxy-core µs/op is the floor any epoll proxy pays on this kernel; the distance to it is a proxy's own cost"
    echo "(with 64 KiB it copies, while wsgate splices payloads of 16 KiB and more, so it can be below it there)."
  fi
  echo
  metrics_table
  echo
  echo "### Method"
  echo
  echo "- Backends: $NBACKENDS echo_backend processes (1 thread each) on 127.0.0.1:${backend_ports[0]}–${backend_ports[$((NBACKENDS - 1))]};"
  echo "  every proxy balances them by least connections (wsgate \`balance: least_conn\`, HAProxy"
  echo "  \`balance leastconn\`, nginx \`least_conn\`, Caddy \`lb_policy least_conn\`). \`direct\` = wsbench"
  echo "  straight to one backend, the ceiling of the load-generator core."
  echo "- \`relay\`: bench/tcp_relay.cc, a minimal TCP relay on raw epoll (level-triggered; one read() and"
  echo "  one write() per chunk through a 256 KiB buffer, epoll_ctl only when backpressure starts or ends; no"
  echo "  HTTP or WebSocket work), least connections over the same backends, one thread in both passes."
  echo "  The floor of a user-space epoll proxy: what every proxy pays the kernel per operation."
  echo "- One thread per proxy in pass w1: wsgate \`workers: 1\`, HAProxy \`nbthread 1\`, nginx"
  echo "  \`worker_processes 1\`, Caddy \`GOMAXPROCS=1\`; in w2 the same with 2 (relay: 1). Logging off everywhere"
  echo "  (wsgate \`log: {access: off}\`, no HAProxy \`log\`, nginx \`access_log off\`, Caddy log level ERROR)."
  echo "- Pinning in w1: the proxy alone on CPU $PROXY_CPU (taskset), wsbench and the backends on CPU $CLIENT_CPU."
  echo "  In w2 nothing is pinned and wsbench runs 2 threads: the load generator and backends compete with"
  echo "  the proxy for both cores, so w2 figures are lower bounds and only process CPU µs/op is shown."
  echo "- **proxy-core µs/op** (w1): busy time of CPU $PROXY_CPU (/proc/stat \`cpu$PROXY_CPU\`: user+nice+system+irq+"
  echo "  softirq+steal, i.e. all but idle and iowait) over the measured window ÷ operations completed in that"
  echo "  window (echoed messages, or handshake cycles). It includes kernel and softirq work done on that core"
  echo "  for the proxy's sockets. **proxy process CPU µs/op**: utime+stime of all the proxy's processes"
  echo "  (/proc/PID/stat; nginx master + workers) over the same window ÷ the same count. wsbench samples both"
  echo "  itself at the exact edges of its measured window (--cpu-core, --cpu-pid), and counts only operations"
  echo "  completed inside it. In \`direct\` the core figure is what else ran on CPU $PROXY_CPU (noise)."
  echo "- Echo: closed loop, every byte verified; latency = message round trip. Handshake: connect, upgrade,"
  echo "  one 64 B echo, close 1000, server's TCP close; latency = connect → verified 101."
  echo "- Idle: for each count a freshly started proxy, warmed up by opening and closing 64 connections;"
  echo "  RSS = summed VmRSS of the proxy's processes before (after the warm-up)"
  echo "  and 1 s after all connections are open; KiB per connection = delta ÷ count (a client plus a backend"
  echo "  socket each); marginal = (RSS with the largest count − RSS with the next) ÷ their difference, the"
  echo "  slope to extrapolate with. Held ${HOLD} s more, then checked all still open."
  echo "- Rounds interleave the targets (who goes first rotates), so noise spreads over all of them."
  echo "- Versions: $(versions)."
  echo "- Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r),"
  echo "  $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM, loopback only; open files $(ulimit -n)."
  echo "- Load average (1/5/15 min) $load_before before, $load_after after; ${elapsed} s in all."
  echo "- Background: CPU $PROXY_CPU was ${background_before} % busy before and ${background_after} % after, with nothing"
  echo "  of the benchmark on it (2 s each); that work is inside every proxy-core figure."
  if [[ $background_before$background_after =~ ^[0-9]+$ ]] && (( background_before > 5 || background_after > 5 )); then
    echo "  **Warning: the machine is not quiet: other work inflates proxy-core µs/op and lowers throughput.**"
  fi
  (( ${#skipped[@]} > 0 )) && echo "- Skipped: ${skipped[*]}."
  echo
  echo "### Every round"
  echo
  echo "Main figure (msgs/s, MB/s for 64 KiB, handshakes/s) and proxy-core / process µs/op, in round order:"
  echo
  for w in $WORKERS; do
    for t in "${ran[@]}" wsgate_nometrics; do
      line=""
      for s in "${scenarios[@]}"; do
        [[ -n ${R[$w,$t,$s,${scen_main[$s]},all]:-} ]] || continue
        [[ ${R[$w,$t,$s,${scen_main[$s]},all]} =~ [0-9] ]] || continue
        line+=" ${s}: ${R[$w,$t,$s,${scen_main[$s]},all]}/ core ${R[$w,$t,$s,core_us_per_op,all]}/ proc ${R[$w,$t,$s,proc_us_per_op,all]}|"
      done
      [[ -n $line ]] && echo "- w$w $t:${line%|}"
    done
  done
  if (( ${#failures[@]} > 0 )); then
    echo
    echo "### Failures"
    echo
    for f in "${failures[@]}"; do echo "- $f"; done
  fi
} >"$work/table.md"

mkdir -p "$(dirname "$OUT")"
cp "$work/table.md" "$OUT"

# --- chart ---------------------------------------------------------------------------------

chart() {
  command -v gnuplot >/dev/null || { log "compare.sh: gnuplot missing: no chart"; return 0; }
  has "$ref" || return 0
  local dat="$work/chart" t s w k cols=() n
  for t in "${ran[@]}"; do [[ $t == "$ref" || $t == direct || $t == relay ]] || cols+=("$t"); done
  cols=("$ref" "${cols[@]}")
  has relay && cols+=(relay)  # the two references last: the floor, then no proxy
  has direct && cols+=(direct)
  # ratio W T S KEY: value ÷ reference's (blank when missing)
  ratio() { awk -v v="${R[$1,$2,$3,$4]:-}" -v b="${R[$1,$ref,$3,$4]:-}" 'BEGIN {if (v != "" && b + 0 > 0) printf "%.3f", v / b; else printf "-"}'; }
  for panel in thr cpu; do
    : >"$dat.$panel"
    for w in $WORKERS; do
      for s in "${scenarios[@]}"; do
        if [[ $panel == thr ]]; then k=${scen_main[$s]}; elif (( w == 1 )); then k=core_us_per_op; else k=proc_us_per_op; fi
        local line="\"w$w ${scen_short[$s]}\""
        for t in "${cols[@]}"; do line+=" $(ratio "$w" "$t" "$s" "$k")"; done
        echo "$line" >>"$dat.$panel"
      done
    done
  done
  : >"$dat.mem"
  for w in $WORKERS; do for n in $IDLE_COUNTS; do
    local line="\"w$w $n\""
    for t in "${cols[@]}"; do v=${R[$w,$t,idle$n,kib_per_conn]:-}; line+=" ${v:--}"; done
    echo "$line" >>"$dat.mem"
  done; done
  n=${#cols[@]}
  local plots_thr="" plots_cpu="" plots_mem="" i
  declare -A colour=([haproxy]='#8c8c8c' [wsgate]='#1a9850' [wsgate-base]='#a6d96a' [nginx]='#4575b4' [caddy]='#f46d43' [relay]='#9e9ac8'
                     [direct]='#d9d9d9')
  for i in $(seq 0 $((n - 1))); do
    local c=$((i + 2)) sep=${plots_thr:+, } style="lc rgb '${colour[${cols[$i]}]}' title '${cols[$i]}'"
    plots_thr+="$sep'$dat.thr' using $c:xtic(1) $style"
    [[ ${cols[$i]} == direct ]] && continue  # no proxy: no proxy CPU, no proxy memory
    plots_cpu+="${plots_cpu:+, }'$dat.cpu' using $c:xtic(1) $style"
    plots_mem+="${plots_mem:+, }'$dat.mem' using $c:xtic(1) $style"
  done
  gnuplot >"$work/gnuplot.log" 2>&1 <<EOF
set terminal pngcairo size 1400,1300 font 'sans,11' noenhanced
set output '$PNG'
set datafile missing '-'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set grid ytics
set key outside right top
set yrange [0:*]
set multiplot layout 3,1 title 'wsgate benchmark $(date -u +%Y-%m-%d) — ratios to $ref ($ref = 1); w1 = 1 thread, proxy pinned; w2 = 2 threads, unpinned'
set title 'Throughput ÷ $ref (msgs/s; MB/s for 64k; handshakes/s for hs) — higher is better'
set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 2 front
plot $plots_thr
set title 'CPU per operation ÷ $ref (w1: proxy-core µs/op; w2: proxy process CPU µs/op) — lower is better'
plot $plots_cpu
unset arrow 1
set title 'Proxy RSS per idle connection, KiB (absolute) — lower is better'
set logscale y
set yrange [0.05:*]  # the relay takes ~0.2 KiB
plot $plots_mem
unset multiplot
EOF
  if [[ -s $PNG ]]; then log "compare.sh: chart written to $PNG"; else log "compare.sh: gnuplot failed:"; cat "$work/gnuplot.log" >&2; fi
}
chart

echo
cat "$work/table.md"
echo
echo "(written to $OUT and $PNG)"
exit $status
