# Scenarios for bench/run.sh: one scenario_NAME function each, plus the
# set-up they share. Sourced, not run.

# Ports are offsets from BENCH_PORT_BASE, below the kernel's ephemeral
# range so outgoing connections never hold them. Each proxy has its own
# ports so a process that lingers cannot take another proxy's traffic.
PORT_BASE=${BENCH_PORT_BASE:-27000}
BACKEND_PORT=$((PORT_BASE + 80))
TERMINAL_PORT=$((PORT_BASE + 300))
L7_ADMIN_PORT=$((PORT_BASE + 193))
L4_ADMIN_PORT=$((PORT_BASE + 293))
declare -A HTTP_PORTS=([nginx]=$((PORT_BASE + 101)) [haproxy]=$((PORT_BASE + 102)) [tidegate]=$((PORT_BASE + 103)))
declare -A TLS_PORTS=([nginx]=$((PORT_BASE + 111)) [haproxy]=$((PORT_BASE + 112)) [tidegate]=$((PORT_BASE + 113)))
declare -A TLS_PP_PORTS=([nginx]=$((PORT_BASE + 121)) [haproxy]=$((PORT_BASE + 122)) [tidegate]=$((PORT_BASE + 123)))
declare -A L4_PORTS=([nginx]=$((PORT_BASE + 201)) [haproxy]=$((PORT_BASE + 202)) [tidegate]=$((PORT_BASE + 203)))

# check_ports_free fails when another process already listens on one of
# the harness's ports, which would send the load to that process instead.
check_ports_free() {
	local ports=("$BACKEND_PORT" "$TERMINAL_PORT" "$L7_ADMIN_PORT" "$L4_ADMIN_PORT"
		"${HTTP_PORTS[@]}" "${TLS_PORTS[@]}" "${TLS_PP_PORTS[@]}" "${L4_PORTS[@]}") p busy
	for p in "${ports[@]}"; do
		busy=$(ss -Hltn "sport = :$p" | head -n 1)
		[[ -z $busy ]] || die "port $p is already in use ($busy); set BENCH_PORT_BASE to move the harness's ports"
	done
}

# The terminal L7 listens on these addresses so the L4 memory scenario can
# open more flows than one destination address has ephemeral ports.
TERMINAL_ADDRS=(127.0.0.1 127.0.0.2 127.0.0.3 127.0.0.4 127.0.0.5)

# Idle connections for the memory scenario. Both counts are bounded by the
# open-file hard limit of 20000 on the machine the figures come from:
# HAProxy reserves two descriptors per connection, and each L4 flow takes
# two descriptors in the L4 process.
MEM_L7_CONNS=${BENCH_MEM_L7_CONNS:-9000}
MEM_L4_FLOWS=${BENCH_MEM_L4_FLOWS:-8000}

prepare_files() {
	log "writing certificates and bodies to $WORK"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
		-keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
	cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/combined.pem"
	mkdir -p "$WORK/www"
	# Real text with a typical compression ratio: the first 16 KiB of a Go
	# standard library source file, the same for a given Go release.
	head -c 16384 "$(go env GOROOT)/src/net/http/server.go" >"$WORK/www/text16k.txt"
	head -c 1048576 /dev/urandom >"$WORK/www/1m.bin"
	chmod -R a+rX "$WORK/www"
	SMALL_BODY=$(printf '%0128d' 0)
	export SMALL_BODY BACKEND_PORT TERMINAL_PORT GZIP_LEVEL
}

write_header() {
	local model mem
	model=$(lscpu | awk -F: '/^Model name/ {gsub(/^ +/, "", $2); print $2}')
	mem=$(awk '/^MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
	cat >>"$RESULTS" <<EOF
## Run of $(date -u '+%Y-%m-%d %H:%M UTC')

- Machine: $(nproc) CPUs, $model, $mem, kernel $(uname -r)
- Versions: $(bin/tidegate version), $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(haproxy -v | head -1 | awk '{print "HAProxy", $3}'), $(go version | awk '{print $3}'), $(wrk -v 2>&1 | head -1 | awk '{print "wrk", $2}'), $(h2load --version | awk '{print $2}'), $(openssl version | awk '{print "OpenSSL", $2}')
- Command: \`make bench${SCENARIO_ARG:+ SCENARIO=$SCENARIO_ARG}\`
- Parameters: ${REPS} runs of ${DURATION} after ${WARMUP} of warm-up; ${CONNS} connections for wrk; ${HS_CONNS} for handshakes; h2load ${H2_CONNS} connections × ${H2_STREAMS} streams; gzip level ${GZIP_LEVEL}
- Placement: proxy under test on CPU 1 (one worker, one thread, or GOMAXPROCS=1); load generator and backend on CPU 0; all at nice ${NICE}
- Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)
- Cells: median of the runs ± spread (max − min as a percentage of the median)
EOF
}

start_backend() {
	export WORK
	render bench/templates/backend-locations.conf "$WORK/backend-locations.conf"
	render bench/templates/backend-nginx.conf "$WORK/backend.conf"
	start_proc backend 0 nginx -p "$WORK" -e stderr -c "$WORK/backend.conf"
	wait_http "http://127.0.0.1:$BACKEND_PORT/"
}

# wait_up PID URL [CURL_ARGS...] waits up to 15 s for URL to return 200. When
# the process exits or the time runs out it stops the process, sets
# SKIP_REASON and returns 1.
wait_up() {
	local pid=$1 url=$2 i
	shift 2
	for ((i = 0; i < 150; i++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			SKIP_REASON="exited at start: $(tail -n 1 "$LAST_LOG" | cut -c1-160)"
			stop_proc "$pid"
			return 1
		fi
		if [[ $(curl -sk -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url") == 200 ]]; then
			return 0
		fi
		sleep 0.1
	done
	SKIP_REASON="no 200 from $url within 15 s"
	stop_proc "$pid"
	return 1
}

# start_l7 PROXY starts PROXY's L7 on CPU 1 and sets L7_PID, or sets
# SKIP_REASON and returns 1.
start_l7() {
	local p=$1
	export HTTP_PORT=${HTTP_PORTS[$p]} TLS_PORT=${TLS_PORTS[$p]} TLS_PP_PORT=${TLS_PP_PORTS[$p]} ADMIN_PORT=$L7_ADMIN_PORT
	case $p in
	nginx)
		render bench/templates/nginx-l7.conf "$WORK/nginx-l7.conf"
		start_proc nginx-l7 1 nginx -p "$WORK" -e stderr -c "$WORK/nginx-l7.conf"
		;;
	haproxy)
		render bench/templates/haproxy-l7.cfg "$WORK/haproxy-l7.cfg"
		start_proc haproxy-l7 1 haproxy -db -f "$WORK/haproxy-l7.cfg"
		;;
	tidegate)
		render bench/templates/tidegate-l7.yaml "$WORK/tidegate-l7.yaml"
		start_proc tidegate-l7 1 env GOMAXPROCS=1 bin/tidegate l7 --config "$WORK/tidegate-l7.yaml"
		;;
	esac
	L7_PID=$START_PID
	LAST_LOG=$WORK/$p-l7.log
	wait_up "$L7_PID" "http://127.0.0.1:$HTTP_PORT/"
}

# start_l4 PROXY REAL... starts PROXY's L4 on CPU 1 in front of the reals
# (host:port) and sets L4_PID, or sets SKIP_REASON and returns 1. The
# readiness check uses the scheme in L4_CHECK_SCHEME (default http).
start_l4() {
	local p=$1 r i=0
	shift
	NGINX_REALS="" HAPROXY_REALS="" TIDEGATE_REALS=""
	for r in "$@"; do
		i=$((i + 1))
		NGINX_REALS+="        server $r;"$'\n'
		HAPROXY_REALS+="    server r$i $r send-proxy-v2"$'\n'
		TIDEGATE_REALS+="        - {address: \"$r\"}"$'\n'
	done
	export NGINX_REALS HAPROXY_REALS TIDEGATE_REALS L4_PORT=${L4_PORTS[$p]} ADMIN_PORT=$L4_ADMIN_PORT
	case $p in
	nginx)
		render bench/templates/nginx-l4.conf "$WORK/nginx-l4.conf"
		start_proc nginx-l4 1 nginx -p "$WORK" -e stderr -c "$WORK/nginx-l4.conf"
		;;
	haproxy)
		render bench/templates/haproxy-l4.cfg "$WORK/haproxy-l4.cfg"
		start_proc haproxy-l4 1 haproxy -db -f "$WORK/haproxy-l4.cfg"
		;;
	tidegate)
		render bench/templates/tidegate-l4.yaml "$WORK/tidegate-l4.yaml"
		start_proc tidegate-l4 1 env GOMAXPROCS=1 bin/tidegate l4 --config "$WORK/tidegate-l4.yaml"
		;;
	esac
	L4_PID=$START_PID
	LAST_LOG=$WORK/$p-l4.log
	wait_up "$L4_PID" "${L4_CHECK_SCHEME:-http}://127.0.0.1:$L4_PORT/"
}

# start_l7_all starts the L7 of every proxy in $PROXIES. Those that came up
# go to RUNNING and L7_PIDS, the others to SKIPPED as "proxy: reason".
start_l7_all() {
	local p
	RUNNING=() SKIPPED=()
	declare -gA L7_PIDS=()
	for p in "${PROXIES[@]}"; do
		if start_l7 "$p"; then
			RUNNING+=("$p")
			L7_PIDS[$p]=$L7_PID
		else
			SKIPPED+=("$p: $SKIP_REASON")
			log "$p: not measured: $SKIP_REASON"
		fi
	done
}

stop_l7_all() {
	local p
	for p in "${RUNNING[@]}"; do
		stop_proc "${L7_PIDS[$p]}"
	done
}

# skipped_rows appends a row for every proxy in SKIPPED.
skipped_rows() {
	local s
	for s in "${SKIPPED[@]}"; do
		row "${s%%: *}" "not measured: ${s#*: }" "" "" "" ""
	done
}

terminal_reals() {
	local a
	for a in "${TERMINAL_ADDRS[@]}"; do
		printf '%s:%s\n' "$a" "$TERMINAL_PORT"
	done
}

scenario_l7_http() {
	table "L7: HTTP/1.1 keep-alive, 128-byte responses, $CONNS connections" \
		Proxy "req/s" "p50 ms" "p99 ms" "proxy CPU µs/req" Notes
	local p
	start_l7_all
	for p in "${RUNNING[@]}"; do
		add_case "$p" wrk "${L7_PIDS[$p]}" "http://127.0.0.1:${HTTP_PORTS[$p]}/"
	done
	run_cases
	write_rows
	skipped_rows
	stop_l7_all
}

scenario_l7_tls() {
	table "L7: TLS 1.3 (ECDSA P-256 certificate), 128-byte responses" \
		"Proxy, load" "req/s or conn/s" "p50 ms" "p99 ms" "proxy CPU µs per req or conn" Notes
	local p
	start_l7_all
	for p in "${RUNNING[@]}"; do
		add_case "$p, keep-alive ($CONNS conns), req/s" wrk "${L7_PIDS[$p]}" "https://127.0.0.1:${TLS_PORTS[$p]}/"
	done
	for p in "${RUNNING[@]}"; do
		add_case "$p, full handshake per request ($HS_CONNS at once), conn/s" handshake "${L7_PIDS[$p]}" "127.0.0.1:${TLS_PORTS[$p]}"
	done
	for p in "${RUNNING[@]}"; do
		add_case "$p, resumed handshake per request ($HS_CONNS at once), conn/s" handshake "${L7_PIDS[$p]}" "127.0.0.1:${TLS_PORTS[$p]}" -resume
	done
	run_cases
	write_rows
	skipped_rows
	stop_l7_all
}

scenario_l7_h2() {
	table "L7: HTTP/2 over TLS 1.3, $H2_CONNS connections × $H2_STREAMS streams, 128-byte responses" \
		Proxy "req/s" "mean request ms" "request ms std dev" "proxy CPU µs/req" Notes
	local p
	start_l7_all
	for p in "${RUNNING[@]}"; do
		add_case "$p" h2load "${L7_PIDS[$p]}" "https://127.0.0.1:${TLS_PORTS[$p]}/"
	done
	run_cases
	write_rows
	skipped_rows
	stop_l7_all
}

scenario_l7_gzip() {
	table "L7: gzip of a 16 KiB text/plain response (level $GZIP_LEVEL), $CONNS connections" \
		Proxy "req/s" "p50 ms" "p99 ms" "proxy CPU µs/req" Notes
	local p url size encoding i=0
	start_l7_all
	for p in "${RUNNING[@]}"; do
		url="http://127.0.0.1:${HTTP_PORTS[$p]}/text16k"
		add_case "$p" wrk "${L7_PIDS[$p]}" "$url" -H 'Accept-Encoding: gzip'
		size=$(curl -s -H 'Accept-Encoding: gzip' "$url" | wc -c)
		encoding=$(curl -s -o /dev/null -w '%header{content-encoding}' -H 'Accept-Encoding: gzip' "$url")
		CASE_NOTE[i]="${encoding:-identity}, $size body bytes (ratio $(awk -v s="$size" 'BEGIN { printf "%.2f", 16384 / s }'))"
		i=$((i + 1))
	done
	run_cases
	write_rows
	skipped_rows
	stop_l7_all
}

scenario_l7_cache() {
	table "L7: cache hits on a 128-byte cacheable response, $CONNS connections" \
		Proxy "req/s" "p50 ms" "p99 ms" "proxy CPU µs/req" Notes
	local p i=0 before=()
	start_l7_all
	# The query string names the proxy, so the backend's access log for the
	# cacheable path counts each proxy's misses apart.
	for p in "${RUNNING[@]}"; do
		add_case "$p" wrk "${L7_PIDS[$p]}" "http://127.0.0.1:${HTTP_PORTS[$p]}/cached?via=$p"
		curl -s -o /dev/null "http://127.0.0.1:${HTTP_PORTS[$p]}/cached?via=$p"
		before[i]=$(grep -c "via=$p " "$WORK/backend-cached.log" || true)
		i=$((i + 1))
	done
	run_cases
	i=0
	for p in "${RUNNING[@]}"; do
		CASE_NOTE[i]="requests that reached the backend in warm-up and runs: $(($(grep -c "via=$p " "$WORK/backend-cached.log" || true) - before[i]))"
		i=$((i + 1))
	done
	write_rows
	skipped_rows
	stop_l7_all
}

# start_l4_all REAL_FN starts the L4 of every proxy in RUNNING_IN (default
# $PROXIES) in front of the reals that the function REAL_FN prints for that
# proxy, and fills L4_PIDS, RUNNING and SKIPPED.
start_l4_all() {
	local fn=$1 p
	local in=("${RUNNING_IN[@]:-${PROXIES[@]}}")
	RUNNING=() SKIPPED=()
	declare -gA L4_PIDS=()
	for p in "${in[@]}"; do
		if start_l4 "$p" $("$fn" "$p"); then
			RUNNING+=("$p")
			L4_PIDS[$p]=$L4_PID
		else
			SKIPPED+=("$p: $SKIP_REASON")
			log "$p: not measured: $SKIP_REASON"
		fi
	done
}

stop_l4_all() {
	local p
	for p in "${RUNNING[@]}"; do
		stop_proc "${L4_PIDS[$p]}"
	done
}

scenario_l4() {
	table "L4 with PROXY protocol to an L7 (nginx on CPU 0 answering itself), 5 reals" \
		"Proxy, load" "req/s" "p50 ms" "p99 ms" "proxy CPU µs/req" Notes
	local p i
	RUNNING_IN=()
	start_l4_all terminal_reals
	for p in "${RUNNING[@]}"; do
		add_case "$p, keep-alive ($CONNS conns)" wrk "${L4_PIDS[$p]}" "http://127.0.0.1:${L4_PORTS[$p]}/"
	done
	for p in "${RUNNING[@]}"; do
		add_case "$p, new connection per request ($CONNS at once), conn/s" wrk "${L4_PIDS[$p]}" "http://127.0.0.1:${L4_PORTS[$p]}/" -H 'Connection: close'
	done
	CASE_CONNS_NEXT=4
	for p in "${RUNNING[@]}"; do
		add_case "$p, 1 MiB bodies (4 conns), MiB/s" wrk "${L4_PIDS[$p]}" "http://127.0.0.1:${L4_PORTS[$p]}/1m"
	done
	unset CASE_CONNS_NEXT
	for i in "${!CASE_LABEL[@]}"; do
		[[ ${CASE_LABEL[i]} == nginx* ]] && CASE_NOTE[i]="PROXY v1: nginx 1.22 stream cannot write v2"
	done
	run_cases
	write_rows
	skipped_rows
	stop_l4_all
}

# tls_pp_real PROXY prints the TLS listener with PROXY protocol of PROXY's L7.
tls_pp_real() { echo "127.0.0.1:${TLS_PP_PORTS[$1]}"; }

scenario_two_tier() {
	table "Both tiers: L4, then L7 with TLS 1.3, then backend; both proxies on CPU 1" \
		"Proxies, load" "req/s or conn/s" "p50 ms" "p99 ms" "CPU µs (L4 + L7) per req or conn" Notes
	local p l7_skipped
	start_l7_all
	l7_skipped=("${SKIPPED[@]}")
	local -A l7=()
	for p in "${RUNNING[@]}"; do l7[$p]=${L7_PIDS[$p]}; done
	local l7_running=("${RUNNING[@]}")
	RUNNING_IN=("${l7_running[@]}")
	((${#RUNNING_IN[@]} > 0)) && L4_CHECK_SCHEME=https start_l4_all tls_pp_real
	RUNNING_IN=()
	for p in "${RUNNING[@]}"; do
		add_case "$p, keep-alive ($CONNS conns), req/s" wrk "${L4_PIDS[$p]} ${l7[$p]}" "https://127.0.0.1:${L4_PORTS[$p]}/"
	done
	for p in "${RUNNING[@]}"; do
		add_case "$p, full handshake per request ($HS_CONNS at once), conn/s" handshake "${L4_PIDS[$p]} ${l7[$p]}" "127.0.0.1:${L4_PORTS[$p]}"
	done
	run_cases
	write_rows
	SKIPPED+=("${l7_skipped[@]}")
	skipped_rows
	stop_l4_all
	for p in "${l7_running[@]}"; do stop_proc "${l7[$p]}"; done
}

# hold_conns ADDR N SOURCES starts loadgen hold on CPU 0, waits until all
# its connections are open, and sets HOLD_PID and HELD ("held=N errors=N").
hold_conns() {
	local i
	start_proc hold 0 "$LOADGEN" hold -addr "$1" -n "$2" -sources "$3" -d 300s
	HOLD_PID=$START_PID
	for ((i = 0; i < 1200; i++)); do
		HELD=$(grep -m1 '^held=' "$WORK/hold.log" || true)
		[[ -n $HELD ]] && return 0
		kill -0 "$HOLD_PID" 2>/dev/null || break
		sleep 0.1
	done
	HELD="loadgen hold did not finish: $(tail -n 1 "$WORK/hold.log")"
}

# hold_note prints the first error loadgen hold reported, if any.
hold_note() {
	local first
	first=$(grep -m1 'first error' "$WORK/hold.log" | cut -c1-200 || true)
	[[ -z $first ]] || printf '; %s' "$first"
}

scenario_memory() {
	table "Resident memory (VmRSS of all the proxy's processes)" \
		"Proxy" "idle MiB" "MiB with connections" "KiB per connection" "connections held" Notes
	local p base loaded srcs
	for p in "${PROXIES[@]}"; do
		start_l7 "$p" || { row "$p L7" "not measured: $SKIP_REASON" "" "" "" ""; continue; }
		base=$(rss_kib "$L7_PID")
		hold_conns "127.0.0.1:$HTTP_PORT" "$MEM_L7_CONNS" 127.0.0.1
		sleep 1
		loaded=$(rss_kib "$L7_PID")
		row "$p L7" "$(mib "$base")" "$(mib "$loaded")" "$(per_conn "$base" "$loaded" "$HELD")" "$HELD" "idle HTTP/1.1 keep-alive client connections after one request each$(hold_note)"
		stop_proc "$HOLD_PID"
		stop_proc "$L7_PID"
	done
	# Sources other than 127.0.0.1, where the earlier scenarios left many
	# connections in TIME_WAIT.
	srcs=127.0.0.11,127.0.0.12,127.0.0.13,127.0.0.14,127.0.0.15
	for p in "${PROXIES[@]}"; do
		start_l4 "$p" $(terminal_reals) || { row "$p L4" "not measured: $SKIP_REASON" "" "" "" ""; continue; }
		base=$(rss_kib "$L4_PID")
		hold_conns "127.0.0.1:$L4_PORT" "$MEM_L4_FLOWS" "$srcs"
		sleep 1
		loaded=$(rss_kib "$L4_PID")
		row "$p L4" "$(mib "$base")" "$(mib "$loaded")" "$(per_conn "$base" "$loaded" "$HELD")" "$HELD" "idle flows through the L4, each a client and a real connection$(hold_note)"
		stop_proc "$HOLD_PID"
		stop_proc "$L4_PID"
	done
	note "The L4 figure is at $MEM_L4_FLOWS flows, not 100,000: the open-file hard limit here is $(ulimit -Hn) and cannot be raised without CAP_SYS_RESOURCE, and each flow takes two descriptors in the L4 process."
}

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# per_conn BASE_KIB LOADED_KIB HELD prints the memory growth per held
# connection in KiB.
per_conn() {
	local n
	n=$(sed -n 's/^held=\([0-9]*\).*/\1/p' <<<"$3")
	awk -v b="$1" -v l="$2" -v n="${n:-0}" 'BEGIN { if (n > 0) printf "%.1f", (l - b) / n; else print "-" }'
}

scenario_xdp() {
	table "XDP engine against the userspace engine" Measure Result Notes
	if [[ ! -d l4/xdp ]]; then
		row "new connections per second, CPU per connection, cost per packet" "not measured" "the XDP engine (l4/xdp) is not in this tree yet"
		return 0
	fi
	# Needs root: the test builds network namespaces (integration/topology)
	# and the benchmark loads the XDP program. Both leave nothing behind.
	if [[ $(id -u) != 0 ]]; then
		row "new connections per second, CPU per connection, cost per packet" "not measured" "needs root for network namespaces and BPF"
		return 0
	fi
	local conn_log=$WORK/xdp-connrate.log bench_log=$WORK/xdp-kernel.log
	log "xdp: connection rate, userspace and xdp engines"
	if ! XDPBENCH_DURATION=$DURATION XDPBENCH_WARMUP=$WARMUP XDPBENCH_ROUNDS=$REPS XDPBENCH_CONNS=$CONNS \
		go test -tags benchxdp -run TestConnRate -count 1 -v -timeout 15m ./bench/xdp/ >"$conn_log" 2>&1; then
		tail -n 40 "$conn_log" >&2
		row "new connections per second" "failed" "see go test -tags benchxdp ./bench/xdp/"
		return 0
	fi
	local mode
	for mode in userspace xdp; do
		row "$mode: new connections per second (median of $REPS)" "$(xdp_median "$conn_log" "$mode" conn_per_s)" "$CONNS client goroutines, 4-byte request and response"
		row "$mode: tidegate l4 process CPU per connection" "$(xdp_median "$conn_log" "$mode" l4_proc_us_per_conn) µs" "utime+stime from /proc/PID/stat"
		row "$mode: softirq CPU per connection, whole machine" "$(xdp_median "$conn_log" "$mode" softirq_us_per_conn) µs" "packet processing of every namespace, the XDP program in xdp mode"
		row "$mode: busy CPU per connection, whole machine" "$(xdp_median "$conn_log" "$mode" all_cpu_us_per_conn) µs" "client and stand-in L7 nodes included"
	done

	log "xdp: program cost per packet (BPF_PROG_TEST_RUN)"
	if ! go test -run '^$' -bench 'ProgramKernelTimed/(forward|empty)$' -benchtime 200000x -count "$REPS" ./l4/xdp/ >"$bench_log" 2>&1; then
		tail -n 20 "$bench_log" >&2
		row "program cost per packet" "failed" "see go test -bench ProgramKernelTimed ./l4/xdp/"
		return 0
	fi
	local forward empty
	forward=$(awk '/KernelTimed\/forward/ {print $(NF-1)}' "$bench_log" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
	empty=$(awk '/KernelTimed\/empty/ {print $(NF-1)}' "$bench_log" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
	row "XDP forward path, kernel-timed" "$forward ns" "established flow, 1400-byte payload, repeat=1 per call"
	row "empty XDP program (timer overhead)" "$empty ns" "subtract from the row above"
}

# xdp_median prints the median of key=value over the RESULT lines of mode in
# the log of TestConnRate.
xdp_median() {
	grep "RESULT mode=$2 " "$1" | tr ' ' '\n' | awk -F= -v k="$3" '$1 == k {print $2}' |
		sort -n | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]; else print "-"}'
}
