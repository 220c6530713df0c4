#!/bin/sh
# rest_bench: requests per second of parley-rest, measured with wrk.
#
# Starts bin/parley-rest on a free loopback port with a temporary database, creates one
# session holding 50 messages through the API, then runs wrk BENCH_RUNS times (default 3)
# against GET /health and GET /sessions/{id} and prints the median requests/s of each.
# The server is pinned to core 0 and wrk to core 1 when taskset exists.
# Targets from the issue (printed, not asserted): /health >= 20,000 req/s and
# /sessions/{id} >= 10,000 req/s on 2 cores.
#
# A benchmark, not a test: it exits non-zero only when it could not run.
# Environment: BENCH_RUNS (3), BENCH_WRK_DURATION (10s), BENCH_WRK_CONNS (64),
# REST_BIN (bin/parley-rest).
set -u

REST_BIN=${REST_BIN:-bin/parley-rest}
RUNS=${BENCH_RUNS:-3}
DURATION=${BENCH_WRK_DURATION:-10s}
CONNS=${BENCH_WRK_CONNS:-64}
MESSAGES=50

say() { printf '%s\n' "rest_bench: $*"; }
die() { say "cannot run: $*" >&2; exit 1; }
# alive, free_port, median, seed_session
. "$(dirname "$0")/lib.sh"

for tool in curl wrk /usr/bin/python3; do
	command -v "$tool" >/dev/null 2>&1 || die "'$tool' is missing (make deps installs it)"
done
[ -x "$REST_BIN" ] || die "$REST_BIN is not built (run make)"
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
	PIN_SERVER="taskset -c 0"
	PIN_CLIENT="taskset -c 1"
else
	PIN_SERVER=""
	PIN_CLIENT=""
	say "taskset or a second core is missing: server and wrk are not pinned"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/parley-rest-bench.XXXXXX") || die "mktemp failed"
PID=""
cleanup() {
	if [ -n "$PID" ] && alive "$PID"; then
		kill -TERM "$PID" 2>/dev/null
		i=0
		while alive "$PID" && [ $i -lt 50 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		if alive "$PID"; then
			say "parley-rest (pid $PID) did not stop within 5 s of SIGTERM: killing it"
			kill -KILL "$PID" 2>/dev/null
		fi
		wait "$PID" 2>/dev/null
	fi
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# A loopback port that is free now, never 8000 or 8001.
PORT=$(free_port) || die "no free port"
BASE="http://127.0.0.1:$PORT"

$PIN_SERVER "$REST_BIN" --port "$PORT" --db "$TMP/rest.db" \
	--notify-socket "$TMP/broker.sock" --log-level warn >"$TMP/rest.log" 2>&1 &
PID=$!

i=0
until curl -fs -o /dev/null "$BASE/health"; do
	i=$((i + 1))
	if [ $i -ge 100 ] || ! alive "$PID"; then
		cat "$TMP/rest.log" >&2
		die "parley-rest did not answer on $BASE within 10 s"
	fi
	sleep 0.1
done

seed_session "$BASE" $MESSAGES
say "parley-rest pid $PID on $BASE (pinned: ${PIN_SERVER:-no}), session $SID with $MESSAGES messages ($BYTES-byte answer)"

# bench_url NAME URL TARGET: BENCH_RUNS wrk runs; prints each and the median.
bench_url() {
	name=$1 url=$2 target=$3 rates="" r=1
	while [ $r -le "$RUNS" ]; do
		cmd="$PIN_CLIENT wrk -t1 -c$CONNS -d$DURATION --latency $url"
		out=$($cmd 2>&1) || {
			printf '%s\n' "$out" >&2
			die "wrk failed: $cmd"
		}
		rps=$(printf '%s\n' "$out" | awk '/^Requests\/sec:/ {print $2}')
		p99=$(printf '%s\n' "$out" | awk '$1 == "99%" {print $2}')
		bad=$(printf '%s\n' "$out" | awk '/Non-2xx or 3xx responses:/ {print $NF}')
		errs=$(printf '%s\n' "$out" | awk '/Socket errors:/ {sub(/^ *Socket errors: */, ""); print}')
		[ -n "$rps" ] || die "could not read wrk's output: $out"
		say "  run $r: \$ $cmd"
		say "         requests/s $rps, latency p99 $p99${bad:+, non-2xx $bad}${errs:+, socket errors: $errs}"
		rates="$rates $rps"
		r=$((r + 1))
	done
	median=$(printf '%s\n' $rates | sort -n | awk '{v[NR] = $1} END {
		if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
	say "$name: median requests/s $median over $RUNS runs (target >= $target, not asserted)"
	printf '%s\t%s\t%s\n' "$name" "$median" "$target" >>"$TMP/summary"
}

say "GET /health"
bench_url "GET /health" "$BASE/health" 20000
say "GET /sessions/{id} (50 messages)"
bench_url "GET /sessions/{id}" "$BASE/sessions/$SID" 10000

alive "$PID" || die "parley-rest (pid $PID) died during the benchmark; its log: $(cat "$TMP/rest.log")"
say "summary (wrk -t1 -c$CONNS -d$DURATION, median of $RUNS):"
awk -F '\t' '{ printf "rest_bench:   %-20s %8.0f req/s  (target %s: %s)\n", $1, $2, $3,
	($2 + 0 >= $3 + 0) ? "met" : "not met" }' "$TMP/summary"
exit 0
