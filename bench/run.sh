#!/usr/bin/env bash
# Runs tidegate beside nginx and HAProxy on the same scenarios and writes
# the tables to bench/out/results.md.
#
#   bash bench/run.sh                 every scenario
#   bash bench/run.sh l7-http l4      the named scenarios
#
# The proxy under test runs on CPU 1 with one worker or thread. The load
# generator and the backend run on CPU 0. All of them run at nice -20, so
# other work on the machine takes less of their CPU. Every target is on
# 127.0.0.0/8. Tunables (environment): BENCH_DURATION (5s), BENCH_WARMUP
# (2s), BENCH_REPS (3), BENCH_CONNS (64), BENCH_NICE (-20), BENCH_PROXIES
# ("nginx haproxy tidegate").
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source bench/lib.sh
source bench/scenarios.sh

ALL_SCENARIOS=(l7-http l7-tls l7-h2 l7-gzip l7-cache l4 two-tier memory xdp)

DURATION=${BENCH_DURATION:-5s}
WARMUP=${BENCH_WARMUP:-2s}
REPS=${BENCH_REPS:-3}
CONNS=${BENCH_CONNS:-64}
HS_CONNS=${BENCH_HANDSHAKE_CONNS:-16}
H2_CONNS=${BENCH_H2_CONNS:-16}
H2_STREAMS=${BENCH_H2_STREAMS:-10}
PROXIES=(${BENCH_PROXIES:-nginx haproxy tidegate})
GZIP_LEVEL=${BENCH_GZIP_LEVEL:-1}
NICE=${BENCH_NICE:--20}
CLK_TCK=$(getconf CLK_TCK)
OUT=${BENCH_OUT:-$ROOT/bench/out}

scenarios=("$@")
SCENARIO_ARG="$*"
((${#scenarios[@]} > 0)) || scenarios=("${ALL_SCENARIOS[@]}")
for s in "${scenarios[@]}"; do
	[[ " ${ALL_SCENARIOS[*]} " == *" $s "* ]] || die "unknown scenario $s (known: ${ALL_SCENARIOS[*]})"
done

ensure_packages
[[ -x bin/tidegate ]] || die "bin/tidegate is missing: run make build"
check_ports_free

# With autogroup scheduling, nice values only weigh processes of one session
# against each other, so the session's group gets the same nice value for
# the run and its old value back at exit (sched(7), "The autogroup feature").
AUTOGROUP_NICE=""
if [[ -w /proc/self/autogroup ]] && [[ $(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null) == 1 ]]; then
	AUTOGROUP_NICE=$(awk '{print $3}' /proc/self/autogroup)
	echo "$NICE" >/proc/self/autogroup || AUTOGROUP_NICE=""
fi

WORK=$(mktemp -d /tmp/tidegate-bench.XXXXXX)
# nginx workers run as an unprivileged user and read files under $WORK.
chmod 755 "$WORK"
cleanup() {
	stop_all
	rm -rf "$WORK"
	[[ -z $AUTOGROUP_NICE ]] || echo "$AUTOGROUP_NICE" >/proc/self/autogroup
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$OUT"
RESULTS=$OUT/results.md
: >"$RESULTS"
export WORK

log "building loadgen"
LOADGEN=$WORK/loadgen
CGO_ENABLED=0 go build -o "$LOADGEN" ./bench/loadgen

prepare_files
write_header
start_backend

for s in "${scenarios[@]}"; do
	log "scenario $s"
	"scenario_${s//-/_}"
done

log "results in $RESULTS"
cat "$RESULTS"
