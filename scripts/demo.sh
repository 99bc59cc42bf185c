#!/usr/bin/env bash
# The one-command demo (`make demo`, which builds the collector first):
#
#   1. builds the CloudZero emulator, the example app and the results printer into _build/demo/bin;
#   2. starts the emulator on a free 127.0.0.1 port;
#   3. starts the otelcol-cloudzero collector with demo/collector.yaml
#      (OTLP on 127.0.0.1:4317/4318, its own metrics on 127.0.0.1:8888);
#   4. runs examples/usage-app for DEMO_DURATION, printing progress every 10s;
#   5. waits until the collector has sent everything, then stops it (SIGTERM drains the queue);
#   6. prints what CloudZero (the emulator) received per stream, bucket and element,
#      checks the totals against what the app recorded, and prints the exporter's own metrics.
#
# Environment:
#   DEMO_DURATION   how long the app runs (Go duration: 60s, 2m, 1m30s; default 60s)
#   DEMO_CUSTOMERS  customers in the app (default 5)       DEMO_SEED  workload seed (default 1)
#   DEMO_KEEP=1     keep the emulator (and its page) running afterwards, until Ctrl-C (at most 30m)
#   CLOUDZERO_ENDPOINT, CLOUDZERO_API_KEY
#                   default to the emulator and its key. Set both to send to the real API
#                   instead (then no emulator is started and nothing can be read back).
#   COLLECTOR_BIN   the collector (default _build/otelcol-cloudzero/otelcol-cloudzero)
#
# Logs: _build/demo/{emulator,collector,app}.log. Every wait is bounded; everything
# started here is stopped on exit or Ctrl-C.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
dir=$root/_build/demo
bin=$dir/bin
collector=${COLLECTOR_BIN:-$root/_build/otelcol-cloudzero/otelcol-cloudzero}
duration=${DEMO_DURATION:-60s}
customers=${DEMO_CUSTOMERS:-5}
seed=${DEMO_SEED:-1}
metrics_url=http://127.0.0.1:8888/metrics

say() { printf '\n==> %s\n' "$*"; }
die() {
	echo "demo: $*" >&2
	exit 1
}

# seconds DURATION: whole seconds of a Go-style duration (Ns, Nm, NmMs, N).
seconds() {
	if [[ $1 =~ ^([0-9]+)$ ]]; then
		echo "${BASH_REMATCH[1]}"
	elif [[ $1 =~ ^(([0-9]+)m)?(([0-9]+)s)?$ ]] && [ -n "$1" ]; then
		echo $((${BASH_REMATCH[2]:-0} * 60 + ${BASH_REMATCH[4]:-0}))
	else
		die "DEMO_DURATION=$1: use a duration such as 60s, 2m or 1m30s"
	fi
}
duration_s=$(seconds "$duration")
[ "$duration_s" -gt 0 ] || die "DEMO_DURATION must be positive"

[ -x "$collector" ] || die "no collector at $collector: run 'make demo' (or 'make build' first)"

# listening HOST PORT: true when something accepts connections there.
listening() { (: <"/dev/tcp/$1/$2") 2>/dev/null; }
for port in 4317 4318 8888; do
	if listening 127.0.0.1 $port; then
		die "127.0.0.1:$port is already in use (another collector?); the demo's collector needs 4317, 4318 and 8888"
	fi
done

# ---- processes and cleanup ------------------------------------------------

emulator_pid="" collector_pid="" app_pid="" phase=run

# stop PID NAME: SIGTERM, wait up to 30s, then SIGKILL. Returns 1 if it had to kill.
stop() {
	local pid=$1 name=$2
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 300); do
		kill -0 "$pid" 2>/dev/null || {
			wait "$pid" 2>/dev/null || true
			return 0
		}
		sleep 0.1
	done
	echo "demo: $name (pid $pid) did not stop within 30s, killing it" >&2
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	return 1
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop "$app_pid" usage-app || true
	stop "$collector_pid" collector || true
	stop "$emulator_pid" emulator || true
	exit "$rc"
}
trap cleanup EXIT
trap 'if [ $phase = keep ]; then exit 0; fi; echo; echo "demo: interrupted" >&2; exit 130' INT TERM

# ---- build ----------------------------------------------------------------

mkdir -p "$bin"
rm -f "$dir"/*.log "$dir"/emulator.addr "$dir"/summary.json "$dir"/ledger.json "$dir"/collector-metrics.txt
say "Building the emulator, the example app and the results printer"
go build -o "$bin/" ./cmd/cloudzero-emulator ./cmd/cloudzero-ledger ./examples/usage-app
echo "collector: $collector"

# ---- emulator ---------------------------------------------------------------

if [ -z "${CLOUDZERO_ENDPOINT:-}" ]; then
	export CLOUDZERO_API_KEY=${CLOUDZERO_API_KEY:-demo-key}
	say "Starting the CloudZero emulator"
	"$bin/cloudzero-emulator" -listen 127.0.0.1:0 -addr-file "$dir/emulator.addr" \
		-api-key "$CLOUDZERO_API_KEY" -quiet >"$dir/emulator.log" 2>&1 &
	emulator_pid=$!
	for _ in $(seq 100); do
		[ -s "$dir/emulator.addr" ] && break
		kill -0 "$emulator_pid" 2>/dev/null || break
		sleep 0.1
	done
	[ -s "$dir/emulator.addr" ] || {
		cat "$dir/emulator.log" >&2
		die "the emulator did not start within 10s"
	}
	emulator_url=$(head -n1 "$dir/emulator.addr")
	export CLOUDZERO_ENDPOINT=$emulator_url
	echo "emulator: $emulator_url (page $emulator_url/), log $dir/emulator.log"
else
	[ -n "${CLOUDZERO_API_KEY:-}" ] || die "CLOUDZERO_ENDPOINT is set: set CLOUDZERO_API_KEY too"
	emulator_url=""
	say "Sending to $CLOUDZERO_ENDPOINT (no emulator)"
fi

# records_accepted: what the emulator accepted so far ("?" when unknown).
records_accepted() {
	local n
	n=$(curl -fsS --max-time 5 "$emulator_url/emulator/ledger" 2>/dev/null |
		grep -o '"records_accepted": *[0-9]*' | head -n1 | grep -o '[0-9]*$') || true
	echo "${n:-?}"
}

# self_metric NAME: the sum of the collector's own metric NAME (or NAME_total, as
# Prometheus may name a counter) over its series; 0 if absent.
self_metric() {
	{ curl -fsS --max-time 5 "$metrics_url" 2>/dev/null || true; } |
		awk -v m="$1" '{ n = $1; sub(/\{.*/, "", n) } n == m || n == m "_total" { s += $NF } END { printf "%d\n", s }'
}

# ---- collector ----------------------------------------------------------------

say "Starting the collector with demo/collector.yaml"
"$collector" --config="$root/demo/collector.yaml" >"$dir/collector.log" 2>&1 &
collector_pid=$!
ready=0
for _ in $(seq 300); do
	kill -0 "$collector_pid" 2>/dev/null || break
	if listening 127.0.0.1 4318 && curl -fsS --max-time 2 -o /dev/null "$metrics_url" 2>/dev/null; then
		ready=1
		break
	fi
	sleep 0.1
done
if [ $ready != 1 ]; then
	tail -n 30 "$dir/collector.log" >&2
	die "the collector did not become ready within 30s (log $dir/collector.log)"
fi
echo "collector: pid $collector_pid, OTLP 127.0.0.1:4317 (gRPC) and 127.0.0.1:4318 (HTTP), own metrics $metrics_url, log $dir/collector.log"

# ---- app --------------------------------------------------------------------

say "Running the example app for $duration ($customers customers, seed $seed)"
"$bin/usage-app" -endpoint 127.0.0.1:4318 -duration "$duration" -customers "$customers" -seed "$seed" \
	-summary-file "$dir/summary.json" 2>"$dir/app.log" &
app_pid=$!
start=$SECONDS
limit=$((duration_s + 60)) # the app stops itself after $duration, then flushes (at most 30s)
next=10
while kill -0 "$app_pid" 2>/dev/null; do
	elapsed=$((SECONDS - start))
	if [ $elapsed -ge $limit ]; then
		die "the app is still running after ${limit}s (log $dir/app.log)"
	fi
	if ! kill -0 "$collector_pid" 2>/dev/null; then
		tail -n 30 "$dir/collector.log" >&2
		die "the collector exited while the app was running (log $dir/collector.log)"
	fi
	if [ $elapsed -ge $next ]; then
		line="[${elapsed}s] collector received $(self_metric otelcol_exporter_cloudzero_datapoints_received) data points"
		if [ -n "$emulator_url" ]; then
			line="$line; CloudZero (emulator) has accepted $(records_accepted) records so far"
		else
			line="$line; the exporter has sent $(self_metric otelcol_exporter_cloudzero_records_sent) records so far"
		fi
		echo "$line"
		next=$((next + 10))
	fi
	sleep 0.5
done
app_rc=0
wait "$app_pid" || app_rc=$?
app_pid=""
[ $app_rc = 0 ] || echo "demo: the app exited with status $app_rc (log $dir/app.log)" >&2
tail -n1 "$dir/app.log"
[ -s "$dir/summary.json" ] || die "the app wrote no summary (log $dir/app.log)"

# ---- drain --------------------------------------------------------------------

# The exporter sends a changed record at most every flush_interval (10s here),
# merging by key meanwhile. Wait until nothing is waiting and the emulator's count
# is stable, at most 40s, then capture the exporter's own metrics and stop the
# collector: its shutdown drains whatever is left.
say "Waiting for the collector to send what it holds (at most 40s)"
prev="" stable=0
for _ in $(seq 40); do
	sleep 1
	waiting=$(self_metric otelcol_exporter_cloudzero_ledger_unsent_keys)
	now="$(records_accepted 2>/dev/null || true)"
	if [ "$waiting" = 0 ] && [ "$now" = "$prev" ]; then
		stable=$((stable + 1))
		[ $stable -ge 2 ] && break
	else
		stable=0
	fi
	prev=$now
done
[ $stable -ge 2 ] || echo "demo: the collector still held records after 40s; stopping it drains them" >&2
curl -fsS --max-time 5 "$metrics_url" >"$dir/collector-metrics.txt" 2>/dev/null || true
echo "stopping the collector (SIGTERM)"
stop "$collector_pid" collector || echo "demo: the collector had to be killed: records it held may be lost" >&2
collector_pid=""

# ---- results ------------------------------------------------------------------

expected=$(grep -o '"total_requests": *[0-9]*' "$dir/summary.json" | grep -o '[0-9]*$')
if [ -n "$emulator_url" ]; then
	say "What CloudZero received (emulator ledger; share = the element's part of its hour)"
	curl -fsS --max-time 10 "$emulator_url/emulator/ledger" >"$dir/ledger.json"
	check_rc=0
	# Both request streams must hold exactly the requests the app recorded.
	"$bin/cloudzero-ledger" -expect "demo-requests=$expected" -expect "demo-request-count=$expected" \
		"$dir/ledger.json" || check_rc=$?
else
	say "Sent to $CLOUDZERO_ENDPOINT: data shows in CloudZero within hours"
	echo "The app recorded $expected requests (summary $dir/summary.json)."
	check_rc=0
fi

say "The exporter's own metrics (captured before shutdown)"
grep '^otelcol_exporter_cloudzero' "$dir/collector-metrics.txt" || echo "(none: see $dir/collector.log)"

say "Files"
echo "app summary:  $dir/summary.json"
echo "logs:         $dir/emulator.log $dir/collector.log $dir/app.log"
[ -n "$emulator_url" ] && echo "ledger:       $dir/ledger.json"

if [ -n "$emulator_url" ]; then
	echo
	echo "Emulator page: $emulator_url/"
	if [ "${DEMO_KEEP:-0}" = 1 ]; then
		echo "DEMO_KEEP=1: the emulator keeps running (pid $emulator_pid) until Ctrl-C, at most 30 minutes."
		phase=keep
		for _ in $(seq 1800); do
			kill -0 "$emulator_pid" 2>/dev/null || break
			sleep 1
		done
	else
		echo "(set DEMO_KEEP=1 to keep it running after the demo)"
	fi
fi

if [ $check_rc != 0 ]; then
	echo "demo: totals differ from what the app recorded (see above)" >&2
	exit 1
fi
