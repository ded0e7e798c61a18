#!/usr/bin/env bash
# Compares tidegate L7 binaries in alternating rounds on two cases of the
# bench: HTTP/1.1 keep-alive requests for a 128-byte response (/) and
# fresh cache hits (/cached), each with wrk -t1 -c64. For each round it
# prints requests per second and the L7's CPU microseconds per request.
# The L7 runs with GOMAXPROCS=1 on CPU 1, and wrk and an nginx backend run
# on CPU 0, as in bench/run.sh.
#
#   bash bench/l7ab.sh OLD_BINARY NEW_BINARY
#
# Environment: L7AB_ROUNDS (5), L7AB_DURATION (3s), L7AB_PORT_BASE (28290:
# the backend, the L7 and its admin port). Every listener is on 127.0.0.1,
# and every process it starts is stopped by PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source bench/lib.sh

ROUNDS=${L7AB_ROUNDS:-5}
DURATION=${L7AB_DURATION:-3s}
BASE=${L7AB_PORT_BASE:-28290}
BACKEND_PORT=$BASE L7_PORT=$((BASE + 1)) ADMIN_PORT=$((BASE + 2))
NICE=0
BINARIES=("$@")
((${#BINARIES[@]} > 0)) || die "usage: bash bench/l7ab.sh BINARY..."
require_binaries "${BINARIES[@]}"

ensure_packages
require_free_ports L7AB_PORT_BASE "$BACKEND_PORT" "$L7_PORT" "$ADMIN_PORT"

WORK=$(mktemp -d /tmp/tidegate-l7ab.XXXXXX)
trap 'stop_all; rm -rf "$WORK"' EXIT

BODY=$(head -c 127 /dev/zero | tr '\0' 'x')
cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
	access_log off;
	server {
		listen 127.0.0.1:$BACKEND_PORT;
		keepalive_requests 1000000;
		default_type text/plain;
		location = /cached { add_header Cache-Control "public, max-age=3600"; return 200 "$BODY\n"; }
		location / { return 200 "$BODY\n"; }
	}
}
EOF
# The listener and routes are those of bench/templates/tidegate-l7.yaml.
cat >"$WORK/tidegate.yaml" <<EOF
admin: {address: "127.0.0.1:$ADMIN_PORT"}
log: {level: warn}
l7:
  access_log: {path: "off"}
  cache: {max_size: 64MiB}
  listeners:
    - name: http
      address: "127.0.0.1:$L7_PORT"
      idle_timeout: 120s
      policy:
        compress: {encodings: [gzip], gzip_level: 1, min_size: 1KiB, content_types: [text/plain]}
  routes:
    - name: cached
      match: {path: /cached}
      upstream: backend
      cache: {enabled: true}
    - name: everything
      match: {path_prefix: /}
      upstream: backend
  upstreams:
    - name: backend
      max_idle_per_backend: 128
      backends:
        - address: "127.0.0.1:$BACKEND_PORT"
EOF

start_proc nginx 0 nginx -c "$WORK/nginx.conf"
wait_http "http://127.0.0.1:$BACKEND_PORT/"

# measure LABEL PATH PID runs one round against the L7 with PID and prints
# its figures on one line.
measure() {
	local label=$1 path=$2 pid=$3 out requests rate t0 t1
	taskset -c 0 wrk -t1 -c64 -d1s "http://127.0.0.1:$L7_PORT$path" >/dev/null
	t0=$(cpu_ticks "$pid")
	out=$(taskset -c 0 wrk -t1 -c64 -d"$DURATION" "http://127.0.0.1:$L7_PORT$path")
	t1=$(cpu_ticks "$pid")
	requests=$(awk '/requests in/ {print $1}' <<<"$out")
	rate=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
	awk -v l="$label" -v p="$path" -v n="$requests" -v r="$rate" -v hz="$(getconf CLK_TCK)" -v t=$((t1 - t0)) 'BEGIN {
		printf "%s %s req/s=%.0f cpu_us_per_req=%.2f\n", l, p, r, t * 1e6 / hz / n
	}'
}

RESULTS=$WORK/rounds.txt
for ((r = 1; r <= ROUNDS; r++)); do
	for b in "${BINARIES[@]}"; do
		GOMAXPROCS=1 start_proc tidegate 1 "$b" l7 --config "$WORK/tidegate.yaml"
		pid=$START_PID
		wait_http "http://127.0.0.1:$L7_PORT/"
		for path in / /cached; do
			measure "$b" "$path" "$pid" | tee -a "$RESULTS"
		done
		stop_proc "$pid"
	done
done

echo
echo "Medians of $ROUNDS rounds (spread: max - min as a percentage of the median):"
for b in "${BINARIES[@]}"; do
	for path in / /cached; do
		line="$b $path"
		for key in req/s cpu_us_per_req; do
			values=$(awk -v l="$b" -v p="$path" -v k="$key" '$1 == l && $2 == p { for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] } }' "$RESULTS")
			line+=" $key=$(fmt_stat $values)"
		done
		echo "$line"
	done
done
