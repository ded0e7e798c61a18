# Helpers for bench/run.sh: process control, CPU and memory readings, load
# runs and their statistics, and Markdown output. Sourced, not run.

# Processes started by start_proc, stopped by stop_proc or stop_all.
declare -a BENCH_PIDS=()

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ensure_packages installs the Debian packages the harness needs when any
# of their commands is missing.
ensure_packages() {
	local missing=()
	command -v nginx >/dev/null || missing+=(nginx-light)
	[[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || missing+=(libnginx-mod-stream)
	command -v haproxy >/dev/null || missing+=(haproxy)
	command -v wrk >/dev/null || missing+=(wrk)
	command -v h2load >/dev/null || missing+=(nghttp2-client)
	command -v curl >/dev/null || missing+=(curl)
	command -v openssl >/dev/null || missing+=(openssl)
	command -v taskset >/dev/null || missing+=(util-linux)
	((${#missing[@]} == 0)) && return 0
	[[ $(id -u) == 0 ]] || die "run as root to install: ${missing[*]}"
	log "installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# require_binaries BINARY... fails unless each is an executable file.
require_binaries() {
	local b
	for b in "$@"; do
		[[ -x $b ]] || die "$b is not an executable tidegate binary (run make build)"
	done
}

# require_free_ports VARIABLE PORT... fails when a PORT has a listener on
# this machine, naming VARIABLE as the setting that moves the ports.
require_free_ports() {
	local variable=$1 port
	shift
	for port in "$@"; do
		if ss -Htln "sport = :$port" | grep -q .; then
			die "port $port is in use: set $variable"
		fi
	done
}

# render TEMPLATE OUT replaces every @NAME@ in TEMPLATE with the value of
# the environment variable NAME and fails on a name that is not set.
render() {
	perl -pe 's/@([A-Z0-9_]+)@/exists $ENV{$1} ? $ENV{$1} : die "bench: $ARGV: \@$1\@ is not set\n"/ge' "$1" >"$2"
}

# start_proc NAME CPU CMD... starts CMD pinned to CPU with its output in
# $WORK/NAME.log and sets START_PID to its PID.
start_proc() {
	local name=$1 cpu=$2
	shift 2
	nice -n "$NICE" taskset -c "$cpu" "$@" >"$WORK/$name.log" 2>&1 &
	START_PID=$!
	BENCH_PIDS+=("$START_PID")
}

# stop_proc PID sends SIGTERM, waits up to 5 s, then sends SIGKILL.
stop_proc() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	local kept=() p
	for p in "${BENCH_PIDS[@]}"; do
		[[ $p == "$pid" ]] || kept+=("$p")
	done
	BENCH_PIDS=("${kept[@]}")
}

stop_all() {
	local p
	for p in "${BENCH_PIDS[@]}"; do
		stop_proc "$p"
	done
}

# wait_http URL [CURL_ARGS...] waits up to 15 s for URL to return 200.
wait_http() {
	local url=$1 i
	shift
	for ((i = 0; i < 150; i++)); do
		if [[ $(curl -sk -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url") == 200 ]]; then
			return 0
		fi
		sleep 0.1
	done
	die "no 200 from $url within 15 s (logs in $WORK)"
}

# descendants PID prints PID and the PIDs of all its descendants, which for
# nginx are the master and its worker.
descendants() {
	local pid=$1 child
	echo "$pid"
	for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
		descendants "$child"
	done
}

# cpu_ticks PID... prints user plus system CPU time, in clock ticks, of the
# PIDs and their descendants.
cpu_ticks() {
	local total=0 p stat rest pids=() top
	for top in "$@"; do
		pids+=($(descendants "$top"))
	done
	for p in "${pids[@]}"; do
		stat=$(cat /proc/"$p"/stat 2>/dev/null) || continue
		rest=${stat##*) }
		# Fields after "(comm) " start at field 3, so utime (14) and stime
		# (15) are the 12th and 13th words here.
		set -- $rest
		total=$((total + ${12} + ${13}))
	done
	echo "$total"
}

# rss_kib PID prints the resident memory (VmRSS), in KiB, of PID and its
# descendants.
rss_kib() {
	local total=0 p kb
	for p in $(descendants "$1"); do
		kb=$(awk '/^VmRSS:/ {print $2}' /proc/"$p"/status 2>/dev/null) || continue
		total=$((total + ${kb:-0}))
	done
	echo "$total"
}

# stats V... prints the median of the values and their spread, the range as
# a percentage of the median.
stats() {
	printf '%s\n' "$@" | sort -g | awk '
		{ v[NR] = $1 }
		END {
			if (NR == 0) { print "0 0"; exit }
			m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
			s = (m > 0) ? (v[NR] - v[1]) * 100 / m : 0
			printf "%g %.1f\n", m, s
		}'
}

# fmt_stat V... formats the median and spread of the values for a table cell.
fmt_stat() {
	local m s
	read -r m s < <(stats "$@")
	awk -v m="$m" -v s="$s" 'BEGIN {
		if (m >= 100) f = sprintf("%.0f", m); else if (m >= 10) f = sprintf("%.1f", m); else f = sprintf("%.2f", m)
		printf "%s ±%s%%", f, s
	}'
}

# to_ms converts a wrk latency such as 812.00us, 1.20ms or 1.01s to ms.
to_ms() {
	awk -v v="$1" 'BEGIN {
		if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 }
		else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 }
		else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 }
		else print v
	}'
}

# cpu1_busy prints the busy clock ticks of CPU 1 from /proc/stat: every
# state but idle and iowait, so other work on the proxy's CPU shows up.
cpu1_busy() { cpu_busy cpu1; }

# cpu_busy NAME prints the busy clock ticks of the CPU named NAME (cpu0,
# cpu1) in /proc/stat.
cpu_busy() {
	awk -v cpu="$1" '$1 == cpu { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# per_unit TICKS N prints TICKS clock ticks as microseconds per unit.
per_unit() {
	awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { printf "%.2f", (n > 0) ? t * 1e6 / hz / n : 0 }'
}

# run_once KIND PIDS TARGET ARGS... runs one load of KIND (wrk, handshake
# or h2load) on CPU 0 against TARGET and sets these results:
#   V_RATE   requests or connections per second
#   V_P50    p50 latency in ms (for h2load, the mean request time)
#   V_P99    p99 latency in ms (for h2load, its standard deviation)
#   V_CPU    CPU microseconds of PIDS and their descendants per request
#   V_OTHER  percent of CPU 1 busy with other processes
#   V_CPU0   percent of CPU 0 busy: the load generator and the backends
#   V_ERR    errors the load tool reported
#   V_INFO   other facts for the notes
run_once() {
	local kind=$1 pids=$2 target=$3
	shift 3
	local out before after busy0 busy1 load0 load1 n t0 t1 secs
	V_ERR="" V_INFO=""
	before=$(cpu_ticks $pids)
	busy0=$(cpu1_busy)
	load0=$(cpu_busy cpu0)
	t0=$(date +%s%N)

	case $kind in
	wrk)
		out=$(nice -n "$NICE" taskset -c 0 wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$@" "$target")
		V_RATE=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
		V_P50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
		V_P99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
		n=$(awk '/requests in/ {print $1}' <<<"$out")
		V_ERR=$(awk '/Non-2xx|Socket errors/ {gsub(/^ +/, ""); printf "%s; ", $0}' <<<"$out")
		;;
	handshake)
		out=$(nice -n "$NICE" taskset -c 0 "$LOADGEN" handshake -addr "$target" -ca "$WORK/cert.pem" -c "$HS_CONNS" -d "$DURATION" "$@" 2>>"$WORK/loadgen.log")
		V_RATE=$(kv rate "$out") V_P50=$(kv p50_ms "$out") V_P99=$(kv p99_ms "$out")
		n=$(kv connections "$out")
		V_ERR=""
		(($(kv errors "$out") > 0)) && V_ERR="errors: $(kv errors "$out"); "
		V_INFO="resumed $(kv resumed "$out") of $n; "
		;;
	h2load)
		out=$(nice -n "$NICE" taskset -c 0 h2load -t1 -c "$H2_CONNS" -m "$H2_STREAMS" -D "${DURATION%s}" "$@" "$target")
		V_RATE=$(awk '/^finished in/ {print $4}' <<<"$out")
		# "requests: N total, N started, N done, N succeeded, N failed, ..."
		n=$(awk '/^requests:/ {print $8}' <<<"$out")
		# "time for request: min max mean sd +/-sd"
		V_P50=$(to_ms "$(awk '/^time for request:/ {print $6}' <<<"$out")")
		V_P99=$(to_ms "$(awk '/^time for request:/ {print $7}' <<<"$out")")
		V_ERR=""
		[[ $(awk '/^requests:/ {print $10}' <<<"$out") == 0 ]] || V_ERR="failed: $(awk '/^requests:/ {print $10}' <<<"$out"); "
		grep -q "Application protocol: h2" <<<"$out" || V_ERR+="not h2; "
		;;
	*) die "run_once: unknown kind $kind" ;;
	esac

	after=$(cpu_ticks $pids)
	busy1=$(cpu1_busy)
	load1=$(cpu_busy cpu0)
	t1=$(date +%s%N)
	echo "$out" >>"$WORK/$kind.log"
	V_CPU=$(per_unit $((after - before)) "$n")
	secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print (b - a) / 1e9 }')
	V_OTHER=$(awk -v b=$((busy1 - busy0 - (after - before))) -v hz="$CLK_TCK" -v s="$secs" 'BEGIN { v = b * 100 / hz / s; printf "%.0f", (v < 0) ? 0 : v }')
	V_CPU0=$(awk -v b=$((load1 - load0)) -v hz="$CLK_TCK" -v s="$secs" 'BEGIN { printf "%.0f", b * 100 / hz / s }')
}

# Cases of the current table: each is one load against one proxy, run
# interleaved with the others so that changes in the machine's background
# load fall on every proxy alike.
declare -a CASE_LABEL=() CASE_KIND=() CASE_PIDS=() CASE_TARGET=() CASE_ARGS=() CASE_NOTE=() CASE_CONNS=()
declare -a ACC_RATE=() ACC_P50=() ACC_P99=() ACC_CPU=() ACC_OTHER=() ACC_CPU0=() ACC_ERR=() ACC_INFO=()

# add_case LABEL KIND PIDS TARGET [ARGS...] queues one case for run_cases.
# CASE_CONNS_NEXT, when set, overrides $CONNS for this case.
add_case() {
	local i=${#CASE_LABEL[@]}
	CASE_LABEL[i]=$1 CASE_KIND[i]=$2 CASE_PIDS[i]=$3 CASE_TARGET[i]=$4
	shift 4
	local IFS=$'\x1f'
	CASE_ARGS[i]="$*"
	CASE_NOTE[i]=""
	CASE_CONNS[i]=${CASE_CONNS_NEXT:-$CONNS}
}

# run_cases warms up every queued case once and runs $REPS rounds of all
# of them in turn. write_rows then turns the results into table rows.
run_cases() {
	local i r saved=$CONNS args=()
	ACC_RATE=() ACC_P50=() ACC_P99=() ACC_CPU=() ACC_OTHER=() ACC_CPU0=() ACC_ERR=() ACC_INFO=()
	for i in "${!CASE_LABEL[@]}"; do
		IFS=$'\x1f' read -ra args <<<"${CASE_ARGS[i]}"
		CONNS=${CASE_CONNS[i]}
		local d=$DURATION
		DURATION=$WARMUP
		run_once "${CASE_KIND[i]}" "${CASE_PIDS[i]}" "${CASE_TARGET[i]}" "${args[@]}"
		DURATION=$d
	done
	for ((r = 1; r <= REPS; r++)); do
		for i in "${!CASE_LABEL[@]}"; do
			IFS=$'\x1f' read -ra args <<<"${CASE_ARGS[i]}"
			CONNS=${CASE_CONNS[i]}
			run_once "${CASE_KIND[i]}" "${CASE_PIDS[i]}" "${CASE_TARGET[i]}" "${args[@]}"
			ACC_RATE[i]+=" $V_RATE" ACC_P50[i]+=" $V_P50" ACC_P99[i]+=" $V_P99" ACC_CPU[i]+=" $V_CPU" ACC_OTHER[i]+=" $V_OTHER" ACC_CPU0[i]+=" $V_CPU0"
			# Errors of every round go to the notes, other facts of the last.
			[[ -n $V_ERR ]] && ACC_ERR[i]+="round $r: $V_ERR"
			ACC_INFO[i]=$V_INFO
			log "round $r ${CASE_LABEL[i]}: $V_RATE/s, cpu $V_CPU us, other load on CPU 1 $V_OTHER%, CPU 0 busy $V_CPU0%"
		done
	done
	CONNS=$saved
}

# write_rows appends one row per case run by run_cases and clears the
# queue. A case's CASE_NOTE ends its notes cell.
write_rows() {
	local i
	for i in "${!CASE_LABEL[@]}"; do
		local other load
		other=$(stats ${ACC_OTHER[i]} | cut -d' ' -f1)
		load=$(stats ${ACC_CPU0[i]} | cut -d' ' -f1)
		row "${CASE_LABEL[i]}" "$(fmt_stat ${ACC_RATE[i]})" "$(fmt_stat ${ACC_P50[i]})" "$(fmt_stat ${ACC_P99[i]})" "$(fmt_stat ${ACC_CPU[i]})" \
			"${ACC_ERR[i]:-}${ACC_INFO[i]:-}other load on CPU 1: ${other}%; CPU 0 busy: ${load}%${CASE_NOTE[i]:+; ${CASE_NOTE[i]}}"
	done
	CASE_LABEL=() CASE_KIND=() CASE_PIDS=() CASE_TARGET=() CASE_ARGS=() CASE_NOTE=() CASE_CONNS=()
}

# kv KEY TEXT prints the value of KEY=value in TEXT.
kv() { tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k {print $2}'; }

# table TITLE HEADER... starts a Markdown table in the results file.
table() {
	local title=$1
	shift
	printf '\n### %s\n\n' "$title" >>"$RESULTS"
	row "$@"
	local separator="|" c
	for c in "$@"; do
		separator+=" --- |"
	done
	echo "$separator" >>"$RESULTS"
}

# row CELL... appends one table row to the results file.
row() {
	local out="|" c
	for c in "$@"; do
		out+=" ${c//|/\\|} |"
	done
	echo "$out" >>"$RESULTS"
}

# note TEXT appends a paragraph to the results file.
note() { printf '\n%s\n' "$*" >>"$RESULTS"; }
