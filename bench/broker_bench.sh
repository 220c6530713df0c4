#!/bin/sh
# broker_bench: fan-out, latency, idle connections and handshakes of parley-broker.
#
# Builds nothing (make does). For each scenario it starts a fresh bin/parley-broker
# pinned to core 0 on a free loopback port with a temporary database and --llm none (no
# assistant replies), runs build/bench/loadgen pinned to core 1, prints each figure with
# its command line, and stops the broker it started (by pid). Scenarios:
#   (a) ceiling: build/bench/ceiling, one send() per delivery over 1,000 loopback pairs
#   (b) fan-out: one session of 1,000 members, 4 senders, as fast as acknowledged
#   (c) latency: a session of 10 at 1,000 msg/s; before it, the machine's floor for that
#       traffic (build/bench/ceiling --rate: a bare relay, then one with a thread hand-off)
#   (d) latency: a session of 1,000 at 20 msg/s
#   (e) idle: BENCH_IDLE connections (5,000; 19000 for the full run) held BENCH_HOLD s
#       (20; the issue's full target is 600): drops and broker RSS per connection
#   (f) handshakes/s: connect, upgrade, close, as fast as possible for 5 s
#   (g) latency in a crowd: (c) again while BENCH_IDLE idle connections are held, to show
#       what idle connections cost the active ones
#   (h) a stalled member: a session of 10 at 1,000 msg/s of 1,000-byte messages (after 5 s
#       of the same traffic, uncounted, so that the broker's caches are full before its RSS
#       is read), then the same with one receiver that stops reading (--stalled 1): the others' p99 and its
#       ratio, the broker's VmRSS growth (sampled every 100 ms), and whether the broker
#       closed the stalled member (slow-consumer policy: 256 KiB or 4,096 frames queued)
#   (j) a join burst: a session of 1,000 at 20 msg/s measured for 2 s right after its 1,000
#       members joined (--no-settle: amid whatever presence frames the joins cost), beside
#       the same room measured after it settled; BENCH_BURST_RUNS (3) pairs, medians and
#       their ratio (the issue's target: within 2x)
#   (i) a stalled writer: chats flood in while a sqlite3 shell holds the database's write
#       lock for BENCH_LOCK_HOLD s (10): one client as fast as it can, four at 2,000/s each
#       (both with the rate limit off, so that the database queue's bound answers), and one
#       client as fast as it can under the default rate limit (20/s, burst 40): how the
#       flood is answered (stored / unavailable / rate_limited), connections closed, broker
#       VmRSS growth (bench/db_stall.py; the issue's target: under 20 MB)
#
# A benchmark, not a test: figures are printed, never asserted. It exits non-zero only when
# a scenario could not run (missing binary, broker that does not start, or dies).
# Environment: BENCH_DURATION (10), BENCH_IDLE (5000), BENCH_HOLD (20), BENCH_SCENARIOS
# (abcdefghij), BENCH_STALL_RUNS (3, pairs of runs in (h)), BENCH_LOCK_HOLD (10, in (i)),
# BENCH_BURST_RUNS (3, pairs of runs in (j)),
# BROKER_BIN (bin/parley-broker), BENCH_BIN (build/bench).
set -u

BROKER_BIN=${BROKER_BIN:-bin/parley-broker}
BENCH_BIN=${BENCH_BIN:-build/bench}
DURATION=${BENCH_DURATION:-10}
IDLE=${BENCH_IDLE:-5000}
HOLD=${BENCH_HOLD:-20}
SCENARIOS=${BENCH_SCENARIOS:-abcdefghij}
BURST_RUNS=${BENCH_BURST_RUNS:-3}
LOCK_HOLD=${BENCH_LOCK_HOLD:-10}
STALL_RUNS=${BENCH_STALL_RUNS:-3}
LOADGEN=$BENCH_BIN/loadgen
CEILING=$BENCH_BIN/ceiling

say() { printf '%s\n' "broker_bench: $*"; }
die() { say "cannot run: $*" >&2; exit 1; }
# alive, free_port, median, seed_session
. "$(dirname "$0")/lib.sh"

[ -x "$BROKER_BIN" ] || die "$BROKER_BIN is not built (run make)"
[ -x "$LOADGEN" ] && [ -x "$CEILING" ] || die "$LOADGEN or $CEILING is not built (run make bench)"
[ -x /usr/bin/python3 ] || die "/usr/bin/python3 is missing"
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
	PIN_BROKER="taskset -c 0"
	PIN_LOAD="taskset -c 1"
	CEIL_CPUS="--send-cpu 0 --recv-cpu 1"
else
	PIN_BROKER=""
	PIN_LOAD=""
	CEIL_CPUS="--send-cpu -1 --recv-cpu -1"
	say "taskset or a second core is missing: nothing is pinned"
fi

FD_LIMIT=$(ulimit -n)
case $FD_LIMIT in unlimited) FD_LIMIT=1048576 ;; esac
# each process has its own limit: leave headroom for the broker's own files
MAX_IDLE=$((FD_LIMIT - 200))
[ "$MAX_IDLE" -gt 19990 ] && MAX_IDLE=19990
if [ "$IDLE" -gt "$MAX_IDLE" ]; then
	say "BENCH_IDLE=$IDLE is above the fd limit ($FD_LIMIT) minus headroom: using $MAX_IDLE"
	IDLE=$MAX_IDLE
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/parley-broker-bench.XXXXXX") || die "mktemp failed"
BPID=""
LPID=""
RUN=0
FAILED=0

# stop_broker: SIGTERM to the broker we started, wait up to 5 s, then SIGKILL (reported).
stop_broker() {
	[ -n "$BPID" ] || return 0
	if alive "$BPID"; then
		t0=$(date +%s.%N)
		kill -TERM "$BPID" 2>/dev/null
		i=0
		while alive "$BPID" && [ $i -lt 50 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		if alive "$BPID"; then
			say "  BROKER HANG: pid $BPID did not exit within 5 s of SIGTERM; killing it"
			kill -KILL "$BPID" 2>/dev/null
			FAILED=1
		fi
		wait "$BPID" 2>/dev/null
		st=$?
		t1=$(date +%s.%N)
		[ "$st" -eq 0 ] || say "  broker exited with status $st after SIGTERM"
		say "  broker stopped in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s"
	fi
	BPID=""
}

cleanup() {
	if [ -n "$LPID" ] && alive "$LPID"; then
		kill -TERM "$LPID" 2>/dev/null
		wait "$LPID" 2>/dev/null
	fi
	stop_broker >/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# start_broker [FLAG...]: a fresh broker on a free port with its own database (FLAGs after
# the defaults: the last of a flag wins); sets PORT and BPID.
start_broker() {
	RUN=$((RUN + 1))
	PORT=$(free_port) || die "no free port"
	LOG=$TMP/broker-$RUN.log
	# limits far above the load, so that they measure the broker rather than its policy
	$PIN_BROKER "$BROKER_BIN" --port "$PORT" --db "$TMP/broker-$RUN.db" \
		--notify-socket "$TMP/broker-$RUN.sock" --llm none --log-level warn \
		--max-conns-per-ip 1000000 --rate-limit 1000000 --rate-burst 1000000 "$@" >"$LOG" 2>&1 &
	BPID=$!
	i=0
	until /usr/bin/python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null; do
		i=$((i + 1))
		if [ $i -ge 50 ] || ! alive "$BPID"; then
			cat "$LOG" >&2
			die "parley-broker did not listen on port $PORT within 10 s"
		fi
		sleep 0.2
	done
}

# check_broker: after a scenario, is the broker still alive? Reports its warnings.
check_broker() {
	if ! alive "$BPID"; then
		wait "$BPID" 2>/dev/null
		say "  BROKER CRASHED during the scenario (exit status $?); the end of its log:"
		tail -20 "$LOG" | sed 's/^/broker_bench:     /'
		BPID=""
		FAILED=1
		return 1
	fi
	nwarn=$(grep -c . "$LOG")
	if [ "$nwarn" -gt 0 ]; then
		say "  broker logged $nwarn warning/error lines, e.g.:"
		sed -E 's/^[^ ]+ //; s/[0-9a-f]{12}/<id>/g; s/[0-9]+/<n>/g' "$LOG" | sort | uniq -c |
			sort -rn | head -5 |
			sed 's/^/broker_bench:     /'
	fi
	return 0
}

# run_load LABEL ARGS...: runs the load generator pinned to core 1 and keeps its output.
run_load() {
	label=$1
	shift
	say "  \$ $PIN_LOAD $LOADGEN $*"
	$PIN_LOAD "$LOADGEN" "$@" >"$TMP/$label.out" 2>"$TMP/$label.err"
	st=$?
	sed 's/^/broker_bench:     /' "$TMP/$label.out"
	[ -s "$TMP/$label.err" ] && sed 's/^/broker_bench:     (stderr) /' "$TMP/$label.err" | head -8
	if [ $st -ne 0 ]; then
		say "  loadgen exited with status $st: no figures for this scenario"
		FAILED=1
	fi
	return $st
}

rss_growth() { # rss_growth LABEL WORD: the number after WORD on loadgen's VmRSS line
	awk -v w="$2" '/broker VmRSS kB:/ { for (i = 1; i < NF; i++) if ($i == w) { print $(i + 1); exit } }' "$TMP/$1.out"
}

figure() { # figure LABEL PATTERN FIELD: a number from a loadgen output line
	awk -v pat="$2" -v f="$3" 'index($0, pat) { sub(/,$/, "", $f); print $f; exit }' "$TMP/$1.out" 2>/dev/null
}

CEIL=""
SUMMARY=$TMP/summary
: >"$SUMMARY"
note() { printf '%s\n' "$*" >>"$SUMMARY"; }

case $SCENARIOS in *a*)
	say "(a) ceiling: one send() per delivery, 1,000 loopback TCP pairs"
	say "  \$ $CEILING --pairs 1000 --size 100 --duration 5 $CEIL_CPUS"
	if "$CEILING" --pairs 1000 --size 100 --duration 5 $CEIL_CPUS >"$TMP/ceiling.out" 2>&1; then
		sed 's/^/broker_bench:     /' "$TMP/ceiling.out"
		CEIL=$(awk '/deliveries\/s/ { for (i = 1; i < NF; i++) if ($i == "deliveries/s") print $(i + 1) }' "$TMP/ceiling.out")
		note "(a) ceiling                         $CEIL deliveries/s"
	else
		cat "$TMP/ceiling.out" >&2
		say "  the ceiling probe failed"
		FAILED=1
	fi
	;;
esac

case $SCENARIOS in *b*)
	say "(b) fan-out: one session of 1,000 members, 4 senders, as fast as acknowledged, ${DURATION} s"
	start_broker
	if run_load fanout --port "$PORT" --conns 1000 --session-size 1000 --senders 4 --window 8 \
		--duration "$DURATION" --concurrency 256 --broker-pid "$BPID"; then
		d=$(figure fanout "deliveries/s" 3)
		p99=$(figure fanout "latency us" 9)
		if [ -n "$CEIL" ] && [ -n "$d" ]; then
			r=$(awk -v d="$d" -v c="$CEIL" 'BEGIN { printf "%.2f", d / c }')
			say "  fan-out: $d deliveries/s = $r x the ceiling ($CEIL/s)"
			note "(b) fan-out 1x1000, 4 senders       $d deliveries/s ($r x ceiling), p99 $p99 us"
		else
			note "(b) fan-out 1x1000, 4 senders       $d deliveries/s, p99 $p99 us"
		fi
	fi
	check_broker
	stop_broker
	;;
esac

case $SCENARIOS in *c*)
	# The floor first: the same traffic relayed by a bare C program (no WebSocket, JSON or
	# database), then through a worker thread and back like the broker's database thread.
	for h in 0 1; do
		say "(c$h) latency floor: 1,000 msg/s relayed to 10 receivers$([ $h = 1 ] && echo ', through a worker thread and back'), ${DURATION} s"
		say "  \$ $CEILING --rate 1000 --pairs 10 --size 100 --handoff $h --duration $DURATION $CEIL_CPUS"
		if "$CEILING" --rate 1000 --pairs 10 --size 100 --handoff $h --duration "$DURATION" \
			$CEIL_CPUS >"$TMP/floor$h.out" 2>&1; then
			sed 's/^/broker_bench:     /' "$TMP/floor$h.out"
			note "(c$h) floor$([ $h = 1 ] && echo ' with a hand-off' || echo '               ')          p50 $(figure floor$h "latency us" 5) us, p99 $(figure floor$h "latency us" 9) us, p99.9 $(figure floor$h "latency us" 11) us, max $(figure floor$h "latency us" 13) us"
		else
			cat "$TMP/floor$h.out" >&2
			say "  the latency floor probe failed"
			FAILED=1
		fi
	done
	say "(c) latency: a session of 10 at 1,000 msg/s, ${DURATION} s"
	start_broker
	if run_load lat10 --port "$PORT" --conns 10 --session-size 10 --senders 1 --rate 1000 \
		--duration "$DURATION" --broker-pid "$BPID"; then
		note "(c) session of 10 at 1,000 msg/s    p50 $(figure lat10 "latency us" 5) us, p99 $(figure lat10 "latency us" 9) us, p99.9 $(figure lat10 "latency us" 11) us, max $(figure lat10 "latency us" 13) us"
	fi
	check_broker
	stop_broker
	;;
esac

case $SCENARIOS in *d*)
	say "(d) latency: a session of 1,000 at 20 msg/s, ${DURATION} s"
	start_broker
	if run_load lat1000 --port "$PORT" --conns 1000 --session-size 1000 --senders 1 --rate 20 \
		--duration "$DURATION" --concurrency 256 --broker-pid "$BPID"; then
		note "(d) session of 1,000 at 20 msg/s    p50 $(figure lat1000 "latency us" 5) us, p99 $(figure lat1000 "latency us" 9) us, p99.9 $(figure lat1000 "latency us" 11) us, max $(figure lat1000 "latency us" 13) us"
	fi
	check_broker
	stop_broker
	;;
esac

case $SCENARIOS in *e*)
	say "(e) idle: $IDLE connections held $HOLD s (BENCH_IDLE, BENCH_HOLD; full run: 19000 and 600)"
	start_broker
	if run_load idle --port "$PORT" --idle "$IDLE" --hold "$HOLD" --concurrency 256 --sources 8 \
		--broker-pid "$BPID"; then
		held=$(figure idle "still open" 5)
		drops=$(figure idle "dropped by the broker" 8)
		per=$(awk '/bytes per connection/ { print $(NF - 3) }' "$TMP/idle.out")
		note "(e) idle $IDLE held ${HOLD} s           $held still open, $drops dropped, $per bytes of broker RSS per connection"
	fi
	check_broker
	stop_broker
	;;
esac

case $SCENARIOS in *f*)
	say "(f) handshakes: connect, upgrade, close 1000, 64 at a time, 5 s"
	start_broker
	if run_load handshakes --port "$PORT" --handshakes 5 --concurrency 64 --sources 8 \
		--broker-pid "$BPID"; then
		note "(f) handshakes                      $(figure handshakes "handshakes/s" 3) handshakes/s"
	fi
	check_broker
	stop_broker
	;;
esac

case $SCENARIOS in *g*)
	CROWD_HOLD=$((DURATION + 12))
	say "(g) latency in a crowd: a session of 10 at 1,000 msg/s while $IDLE idle connections are held"
	start_broker
	say "  \$ $PIN_LOAD $LOADGEN --port $PORT --idle $IDLE --hold $CROWD_HOLD --concurrency 256 --sources 8 --broker-pid $BPID &"
	$PIN_LOAD "$LOADGEN" --port "$PORT" --idle "$IDLE" --hold "$CROWD_HOLD" --concurrency 256 \
		--sources 8 --broker-pid "$BPID" >"$TMP/crowd.out" 2>"$TMP/crowd.err" &
	LPID=$!
	i=0
	while ! grep -q "idle connections in" "$TMP/crowd.out" && alive "$LPID" && [ $i -lt 600 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	if grep -q "idle connections in" "$TMP/crowd.out"; then
		sed 's/^/broker_bench:     /' "$TMP/crowd.out"
		shown=$(wc -l <"$TMP/crowd.out")
		if run_load crowd10 --port "$PORT" --conns 10 --session-size 10 --senders 1 --rate 1000 \
			--duration "$DURATION" --broker-pid "$BPID"; then
			note "(g) as (c), beside $IDLE idle        p50 $(figure crowd10 "latency us" 5) us, p99 $(figure crowd10 "latency us" 9) us, max $(figure crowd10 "latency us" 13) us, $(figure crowd10 "dropped connections" 4) of 10 dropped"
		fi
	else
		say "  the idle connections could not be opened"
		FAILED=1
	fi
	wait "$LPID"
	LPID=""
	tail -n +$((${shown:-0} + 1)) "$TMP/crowd.out" | sed 's/^/broker_bench:     /'
	check_broker
	stop_broker
	;;
esac

case $SCENARIOS in *h*)
	# One run is too noisy to compare p99s (a few slow milliseconds move it): STALL_RUNS pairs,
	# alternating, compared by their medians.
	say "(h) a stalled member: a session of 10 at 1,000 msg/s, 1,000-byte messages, ${DURATION} s; $STALL_RUNS pairs of runs, all reading then one stalled"
	base_all=""
	stall_all=""
	growth_max=0
	base_growth_max=0
	closed_all=0
	r=1
	while [ $r -le "$STALL_RUNS" ]; do
		say "  run $r of $STALL_RUNS: all reading"
		start_broker
		if run_load stall0 --port "$PORT" --conns 10 --session-size 10 --senders 1 --rate 1000 \
			--size 1000 --warmup 5 --duration "$DURATION" --broker-pid "$BPID"; then
			base_all="$base_all $(figure stall0 "latency us" 9)"
			g=$(rss_growth stall0 growth)
			[ "${g:-0}" -gt "$base_growth_max" ] && base_growth_max=$g
		fi
		check_broker
		stop_broker
		say "  run $r of $STALL_RUNS: one receiver stops reading when the send window opens"
		start_broker
		if run_load stall1 --port "$PORT" --conns 10 --session-size 10 --senders 1 --rate 1000 \
			--size 1000 --warmup 5 --duration "$DURATION" --stalled 1 --broker-pid "$BPID"; then
			stall_all="$stall_all $(figure stall1 "latency us" 9)"
			closed=$(awk '/closed by the broker/ { for (i = 2; i <= NF; i++) if ($i == "closed") { print $(i - 1); exit } }' "$TMP/stall1.out")
			closed_all=$((closed_all + ${closed:-0}))
			g=$(rss_growth stall1 growth)
			[ "${g:-0}" -gt "$growth_max" ] && growth_max=$g
			left=$(awk '/the broker.s socket left ESTABLISHED/ { for (i = 1; i < NF; i++) if ($i == "ESTABLISHED") { print $(i + 1); exit } }' "$TMP/stall1.out")
			say "  stalled member closed by the broker: ${closed:-?} of 1 (its socket left ESTABLISHED ${left:-never} s after the stall)"
			grep 'is not reading' "$LOG" | head -3 | sed 's/^/broker_bench:     (broker log) /'
		fi
		check_broker
		stop_broker
		r=$((r + 1))
	done
	base99=$(median $base_all)
	p99=$(median $stall_all)
	ratio=$(awk -v a="$p99" -v b="$base99" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }')
	say "  others' p99, us: all reading:$base_all (median $base99); beside the stalled member:$stall_all (median $p99); ratio of medians $ratio"
	say "  broker VmRSS growth after the warm-up, the most of any run: $growth_max kB with the stalled member, $base_growth_max kB all reading"
	note "(h) session of 10, 1,000-byte messages median p99 of $STALL_RUNS runs $base99 us; with 1 stalled: $p99 us (x $ratio), stalled closed: $closed_all of $STALL_RUNS, broker RSS +$growth_max kB at most (+$base_growth_max kB all reading)"
	;;
esac

case $SCENARIOS in *i*)
	say "(i) a stalled writer: chats flood in while a sqlite3 shell holds the write lock ${LOCK_HOLD} s"
	# clients rate (chats/s each, 0: as fast as possible) broker flags
	for run in "1 0" "4 2000" "1 0 --rate-limit 20 --rate-burst 40"; do
		set -- $run
		n=$1
		rate=$2
		shift 2
		start_broker "$@"
		say "  broker flags: ${*:-the rate limit off}"
		say "  \$ $PIN_LOAD /usr/bin/python3 bench/db_stall.py --port $PORT --db $TMP/broker-$RUN.db --broker-pid $BPID --clients $n --rate $rate --hold $LOCK_HOLD"
		if $PIN_LOAD /usr/bin/python3 bench/db_stall.py --port "$PORT" --db "$TMP/broker-$RUN.db" \
			--broker-pid "$BPID" --clients "$n" --rate "$rate" --hold "$LOCK_HOLD" >"$TMP/stall-db.out" 2>&1; then
			sed 's/^/broker_bench:     /' "$TMP/stall-db.out"
			g=$(awk '/broker VmRSS kB:/ { print $NF; exit }' "$TMP/stall-db.out")
			ans=$(sed -n 's/^db_stall: answered: //p' "$TMP/stall-db.out")
			held=$(sed -n 's/.*write lock was held \([0-9.]*\) s$/\1/p' "$TMP/stall-db.out")
			note "(i) $n client(s) at ${rate}/s (0: flat out), ${*:-rate limit off}, write lock held ${held:-?} s (the flood stops when its connections close): $ans; broker RSS +${g:-?} kB"
		else
			sed 's/^/broker_bench:     /' "$TMP/stall-db.out"
			say "  db_stall.py could not run"
			FAILED=1
		fi
		check_broker
		stop_broker
	done
	;;
esac

case $SCENARIOS in *j*)
	say "(j) a join burst: a session of 1,000 at 20 msg/s for 2 s right after the joins, and settled ($BURST_RUNS pairs)"
	burst=""
	calm=""
	r=0
	while [ $r -lt "$BURST_RUNS" ]; do
		r=$((r + 1))
		for kind in burst calm; do
			start_broker
			extra=""
			[ $kind = burst ] && extra=--no-settle
			if run_load "join-$kind" --port "$PORT" --conns 1000 --session-size 1000 --senders 1 \
				--rate 20 --duration 2 --concurrency 256 $extra; then
				p99=$(figure "join-$kind" "latency us" 9)
				if [ $kind = burst ]; then burst="$burst $p99"; else calm="$calm $p99"; fi
			fi
			check_broker
			stop_broker
		done
	done
	# shellcheck disable=SC2086
	mb=$(median $burst)
	# shellcheck disable=SC2086
	mc=$(median $calm)
	ratio=$(awk -v a="${mb:-0}" -v b="${mc:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }')
	note "(j) join burst: chat p99 in the 2 s after 1,000 joins: median ${mb:-?} us (runs:$burst); settled room: median ${mc:-?} us (runs:$calm); ratio $ratio (target <= 2)"
	;;
esac

say "summary (broker on core 0, loadgen on core 1; figures, not assertions):"
sed 's/^/broker_bench:   /' "$SUMMARY"
if [ "$FAILED" -ne 0 ]; then
	say "some scenarios could not run or the broker misbehaved (see above)"
	exit 1
fi
exit 0
