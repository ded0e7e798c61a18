#!/usr/bin/env bash
# Measures 1 MiB transfers through an L4 and shows where the CPU goes. For
# each round it prints the L4's CPU per MiB, CPU 0's busy time per MiB (the
# load generator and the real run there) and voluntary context switches per
# MiB of the L4 and of nginx. HAProxy "mode tcp" with send-proxy-v2 is the
# anchor, and each tidegate binary given runs as a userspace L4, in
# alternating rounds.
#
#   bash bench/l4bulk.sh                     bin/tidegate against HAProxy
#   bash bench/l4bulk.sh OLD_BINARY NEW_BINARY
#
# Environment: L4BULK_ROUNDS (5), L4BULK_DURATION (4s), L4BULK_PORT_BASE
# (28190: the real, the HAProxy L4, the tidegate L4 and its admin port).
# Every listener is on 127.0.0.1, and every process it starts is stopped by
# PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source bench/lib.sh

ROUNDS=${L4BULK_ROUNDS:-5}
DURATION=${L4BULK_DURATION:-4s}
BASE=${L4BULK_PORT_BASE:-28190}
REAL_PORT=$BASE HAPROXY_PORT=$((BASE + 1)) TIDEGATE_PORT=$((BASE + 2)) ADMIN_PORT=$((BASE + 3))
NICE=0
BINARIES=("$@")
((${#BINARIES[@]} > 0)) || BINARIES=(bin/tidegate)
require_binaries "${BINARIES[@]}"

ensure_packages
require_free_ports L4BULK_PORT_BASE "$REAL_PORT" "$HAPROXY_PORT" "$TIDEGATE_PORT" "$ADMIN_PORT"

WORK=$(mktemp -d /tmp/tidegate-l4bulk.XXXXXX)
chmod 755 "$WORK"
trap 'stop_all; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/www"
head -c 1048576 /dev/urandom >"$WORK/www/1m.bin"
chmod -R a+rX "$WORK/www"

cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
	access_log off;
	server {
		listen 127.0.0.1:$REAL_PORT proxy_protocol;
		keepalive_requests 1000000;
		location = /1m { alias $WORK/www/1m.bin; }
	}
}
EOF
cat >"$WORK/haproxy.cfg" <<EOF
global
	nbthread 1
defaults
	mode tcp
	timeout connect 2s
	timeout client 120s
	timeout server 120s
frontend l4
	bind 127.0.0.1:$HAPROXY_PORT
	default_backend reals
backend reals
	server r1 127.0.0.1:$REAL_PORT send-proxy-v2
EOF
cat >"$WORK/tidegate.yaml" <<EOF
admin: {address: "127.0.0.1:$ADMIN_PORT"}
log: {level: warn}
l4:
  dataplane: {mode: userspace}
  vips:
    - name: bulk
      address: "127.0.0.1:$TIDEGATE_PORT"
      proxy_protocol: v2
      idle_timeout: 120s
      reals:
        - {address: "127.0.0.1:$REAL_PORT"}
EOF

start_proc nginx 0 nginx -c "$WORK/nginx.conf"
NGINX_PID=$START_PID
sleep 0.5
NGINX_WORKER=$(cat /proc/"$NGINX_PID"/task/*/children | awk '{print $1}')
[[ -n $NGINX_WORKER ]] || die "nginx started no worker (see $WORK/nginx-error.log)"

# switches PID prints the voluntary context switches of all of PID's threads.
switches() { awk '/^voluntary_ctxt_switches/ {s += $2} END {print s}' /proc/"$1"/task/*/status; }

# measure LABEL PORT PID runs one round against the L4 with PID on PORT and
# prints its figures on one line.
measure() {
	local label=$1 port=$2 pid=$3 out mib t0 t1 c0 c1 n0 n1 b0 b1 secs s0 s1
	taskset -c 0 wrk -t1 -c4 -d1s "http://127.0.0.1:$port/1m" >/dev/null
	t0=$(cpu_ticks "$pid") c0=$(switches "$pid") n0=$(switches "$NGINX_WORKER") b0=$(cpu_busy cpu0)
	s0=$(date +%s%N)
	out=$(taskset -c 0 wrk -t1 -c4 -d"$DURATION" "http://127.0.0.1:$port/1m")
	s1=$(date +%s%N)
	t1=$(cpu_ticks "$pid") c1=$(switches "$pid") n1=$(switches "$NGINX_WORKER") b1=$(cpu_busy cpu0)
	mib=$(awk '/requests in/ {print $1}' <<<"$out")
	secs=$(awk -v a="$s0" -v b="$s1" 'BEGIN { print (b - a) / 1e9 }')
	awk -v l="$label" -v mib="$mib" -v s="$secs" -v hz="$(getconf CLK_TCK)" \
		-v t=$((t1 - t0)) -v b=$((b1 - b0)) -v c=$((c1 - c0)) -v n=$((n1 - n0)) 'BEGIN {
		printf "%s MiB/s=%.0f l4_us_per_mib=%.0f cpu0_us_per_mib=%.0f cpu0_busy=%.0f%% l4_switches_per_mib=%.2f nginx_switches_per_mib=%.2f\n",
			l, mib / s, t * 1e6 / hz / mib, b * 1e6 / hz / mib, b * 100 / hz / s, c / mib, n / mib
	}'
}

RESULTS=$WORK/rounds.txt
for ((r = 1; r <= ROUNDS; r++)); do
	start_proc haproxy 1 haproxy -db -f "$WORK/haproxy.cfg"
	pid=$START_PID
	sleep 0.5
	measure haproxy "$HAPROXY_PORT" "$pid" | tee -a "$RESULTS"
	stop_proc "$pid"
	for b in "${BINARIES[@]}"; do
		GOMAXPROCS=1 start_proc tidegate 1 "$b" l4 --config "$WORK/tidegate.yaml"
		pid=$START_PID
		wait_http "http://127.0.0.1:$TIDEGATE_PORT/1m"
		measure "$b" "$TIDEGATE_PORT" "$pid" | tee -a "$RESULTS"
		stop_proc "$pid"
	done
done

echo
echo "Medians of $ROUNDS rounds (spread: max - min as a percentage of the median):"
for label in haproxy "${BINARIES[@]}"; do
	line=$label
	for key in MiB/s l4_us_per_mib cpu0_us_per_mib cpu0_busy l4_switches_per_mib nginx_switches_per_mib; do
		values=$(awk -v l="$label" -v k="$key" '$1 == l { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) { sub(/%$/, "", kv[2]); print kv[2] } } }' "$RESULTS")
		line+=" $key=$(fmt_stat $values)"
	done
	echo "$line"
done
