#!/bin/sh
# relay_bench: many brokers through Redis (issue 14, SPEC 8): cross-broker delivery beside
# delivery on one broker, and the takeover of an orphaned reply.
#
# Builds nothing (make does). Starts a throwaway PostgreSQL cluster (bench/relay_pg.py:
# tests/lib/pgcluster.py, Unix socket in a temporary directory, as the postgres user when
# run as root) and a redis-server (--save '' --appendonly no) on a free loopback port;
# then, for each round, a fresh database and two brokers over it, both with --redis and
# their own --node-id (b1, b2) and --notify-socket, --llm none, the rate limit off: b1
# pinned to core 0, b2 to core 1. build/bench/loadgen runs pinned to core 1 (beside b2,
# which writes nothing to the database: the less loaded broker); with 3 cores or more it
# gets core 2, and PostgreSQL and Redis the cores after it. On 2 cores everything shares
# the two cores (PostgreSQL and Redis unpinned), which the output says. Every command line
# is printed with its figures; every figure is the median of BENCH_RELAY_RUNS runs (3).
# Deliveries are messages/s x members (the sender's own acknowledgement is one of them, as
# in broker_bench.sh). Scenarios:
#   (a) latency: one session of BENCH_RELAY_MEMBERS (20) with BENCH_RELAY_SENDERS (2)
#       senders, at 1,000 and 10,000 deliveries/s, each round on a fresh pair of brokers:
#       the whole room on b1 (single broker; b2 idle), then the same room split (loadgen
#       --port2: the last half of the members on b2, the senders on b1): p50/p99 of the
#       receivers on b2 (cross-broker) and of those on b1 in the same run.
#   (b) the most deliveries/s sustained, split and on one broker: BENCH_RELAY_STEPS
#       (deliveries/s), BENCH_RELAY_RAMP_DURATION s (5) a run, fresh brokers at each step.
#       A run passes when every delivery expected arrived, no chat was refused (error
#       events), the senders kept the rate (none late) and the p99 (cross-broker receivers'
#       when split) is at most BENCH_RELAY_P99_MS (10) ms; a step passes when most of its
#       runs do. The figure: the deliveries/s measured at the highest step that passed
#       (median of its runs); the ramp stops at the first step that fails.
#   (c) takeover: b1 and b2 with --llm echo (20 ms a word), a member on each, a chat of 600
#       words; the broker generating the reply (the reply lease: reply_queue.owner) is
#       killed with SIGKILL after 1 s of streaming; the time until the member on the other
#       broker gets response_complete with interrupted: true (bench/relay_takeover.py;
#       target 5 s). Without reply_queue.owner in the schema: "not measured".
#
# A benchmark, not a test: figures are printed, never asserted. It exits non-zero only when
# a scenario could not run (missing binary, a broker or server that does not start, dies).
# Environment: BENCH_RELAY_SCENARIOS (abc), BENCH_RELAY_RUNS (3), BENCH_RELAY_DURATION (10),
# BENCH_RELAY_RAMP_DURATION (5), BENCH_RELAY_MEMBERS (20), BENCH_RELAY_SENDERS (2),
# BENCH_RELAY_STEPS, BENCH_RELAY_P99_MS (10), BROKER_BIN (bin/parley-broker), BENCH_BIN
# (build/bench), REDIS_SERVER (/usr/bin/redis-server).
set -u

BROKER_BIN=${BROKER_BIN:-bin/parley-broker}
BENCH_BIN=${BENCH_BIN:-build/bench}
REDIS_SERVER=${REDIS_SERVER:-/usr/bin/redis-server}
SCENARIOS=${BENCH_RELAY_SCENARIOS:-abc}
RUNS=${BENCH_RELAY_RUNS:-3}
DURATION=${BENCH_RELAY_DURATION:-10}
RAMP_DURATION=${BENCH_RELAY_RAMP_DURATION:-5}
MEMBERS=${BENCH_RELAY_MEMBERS:-20}
SENDERS=${BENCH_RELAY_SENDERS:-2}
STEPS=${BENCH_RELAY_STEPS:-20000 40000 60000 80000 100000 120000 160000 200000}
BOUND_MS=${BENCH_RELAY_P99_MS:-10}
WARMUP=2
LOADGEN=$BENCH_BIN/loadgen
PY=/usr/bin/python3
DBNAME=parley_relay

say() { printf '%s\n' "relay_bench: $*"; }
die() { say "cannot run: $*" >&2; exit 1; }
. "$(dirname "$0")/lib.sh"

[ -x "$BROKER_BIN" ] || die "$BROKER_BIN is not built (run make)"
[ -x "$LOADGEN" ] || die "$LOADGEN is not built (run make bench)"
[ -x "$PY" ] || die "$PY is missing"
[ -x "$REDIS_SERVER" ] || die "$REDIS_SERVER is missing (make deps installs redis-server)"
[ -x /usr/lib/postgresql/15/bin/initdb ] || die "PostgreSQL 15 is missing (make deps)"
NCPU=$(nproc)
if command -v taskset >/dev/null 2>&1 && [ "$NCPU" -ge 2 ]; then
	PIN_B1="taskset -c 0"
	PIN_B2="taskset -c 1"
	if [ "$NCPU" -ge 4 ]; then
		PIN_LOAD="taskset -c 2"
		PIN_SERVERS="taskset -c 3-$((NCPU - 1))"
		PLACES="b1 on core 0, b2 on core 1, loadgen on core 2, PostgreSQL and Redis on cores 3-$((NCPU - 1))"
	elif [ "$NCPU" -ge 3 ]; then
		PIN_LOAD="taskset -c 2"
		PIN_SERVERS=""
		PLACES="b1 on core 0, b2 on core 1, loadgen on core 2, PostgreSQL and Redis not pinned"
	else
		PIN_LOAD="taskset -c 1"
		PIN_SERVERS=""
		PLACES="2 cores, everything shares them: b1 on core 0; b2 and loadgen on core 1 (b2 writes nothing to the database: the less loaded broker); PostgreSQL and Redis not pinned"
	fi
else
	PIN_B1=""
	PIN_B2=""
	PIN_LOAD=""
	PIN_SERVERS=""
	PLACES="taskset or a second core is missing: nothing is pinned"
fi
say "placement: $PLACES"
HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/parley-relay-bench.XXXXXX") || die "mktemp failed"
PGDIR=""
PGPID=""
RPID=""
B1PID=""
B2PID=""
FAILED=0
RUN=0

stop_pair() {
	stop_pid "$B1PID" b1
	stop_pid "$B2PID" b2
	B1PID=""
	B2PID=""
}

cleanup() {
	stop_pair
	stop_pid "$RPID" redis-server
	[ -n "$PGDIR" ] && "$PY" bench/relay_pg.py stop "$PGDIR" >/dev/null 2>&1
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# wait_port PORT PID LOG WHAT: until PORT accepts connections (10 s), or PID dies.
wait_port() {
	i=0
	until "$PY" -c "import socket; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null; do
		i=$((i + 1))
		if [ $i -ge 50 ] || ! alive "$2"; then
			tail -20 "$3" >&2
			die "$4 did not listen on port $1 within 10 s"
		fi
		sleep 0.2
	done
}

# ticks PID...: CPU ticks (user + system) used so far by these processes, summed
ticks() {
	for p in "$@"; do sed 's/.*) //' "/proc/$p/stat" 2>/dev/null; done |
		awk '{ t += $12 + $13 } END { print t + 0 }'
}
pg_pids() { echo "$PGPID $(ps -o pid= --ppid "$PGPID" 2>/dev/null)"; }

say "\$ $PIN_SERVERS $PY bench/relay_pg.py start"
PGDIR=$($PIN_SERVERS "$PY" bench/relay_pg.py start) || die "the PostgreSQL cluster did not start"
PGPID=$("$PY" bench/relay_pg.py pid "$PGDIR") || die "no postmaster pid in $PGDIR"
RPORT=$(free_port) || die "no free port"
REDIS_URL=redis://127.0.0.1:$RPORT/0
say "\$ $PIN_SERVERS $REDIS_SERVER --port $RPORT --bind 127.0.0.1 --save '' --appendonly no --dir $TMP"
$PIN_SERVERS "$REDIS_SERVER" --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no \
	--dir "$TMP" >"$TMP/redis.log" 2>&1 &
RPID=$!
wait_port "$RPORT" "$RPID" "$TMP/redis.log" redis-server

# start_one NAME PIN LLM: a broker over the round's database; sets SPORT, SPID, SLOG.
start_one() {
	SPORT=$(free_port) || die "no free port"
	SLOG=$TMP/$1-$RUN.log
	# limits far above the load, so that they measure the brokers rather than their policy
	$2 "$BROKER_BIN" --port "$SPORT" --db "$DBURI" --redis "$REDIS_URL" --node-id "$1" \
		--notify-socket "$TMP/$1.sock" --llm "$3" --log-level warn \
		--max-conns-per-ip 1000000 --rate-limit 1000000 --rate-burst 1000000 >"$SLOG" 2>&1 &
	SPID=$!
	wait_port "$SPORT" "$SPID" "$SLOG" "parley-broker $1"
}

# fresh_pair LLM: stops the brokers, makes a fresh database, starts b1 (which migrates the
# schema) then b2.
fresh_pair() {
	stop_pair
	RUN=$((RUN + 1))
	DBURI=$("$PY" bench/relay_pg.py db "$PGDIR" "$DBNAME") || die "CREATE DATABASE $DBNAME failed"
	start_one b1 "$PIN_B1" "$1"
	B1PID=$SPID B1PORT=$SPORT B1LOG=$SLOG
	start_one b2 "$PIN_B2" "$1"
	B2PID=$SPID B2PORT=$SPORT B2LOG=$SLOG
	say "  brokers: b1 pid $B1PID port $B1PORT, b2 pid $B2PID port $B2PORT (--llm $1; database $DBNAME fresh)"
	say "  \$ $PIN_B1 $BROKER_BIN --port $B1PORT --db '$DBURI' --redis $REDIS_URL --node-id b1 --notify-socket $TMP/b1.sock --llm $1 --log-level warn --max-conns-per-ip 1000000 --rate-limit 1000000 --rate-burst 1000000 (b2 the same on core 1, its own port and socket)"
}

# check_pair: are both brokers alive? Reports their warnings (once per log).
check_pair() {
	for b in "b1 $B1PID $B1LOG" "b2 $B2PID $B2LOG"; do
		set -- $b
		if ! alive "$2"; then
			wait "$2" 2>/dev/null
			say "  BROKER $1 CRASHED (exit status $?); the end of its log:"
			tail -20 "$3" | sed 's/^/relay_bench:     /'
			FAILED=1
			die "broker $1 died"
		fi
		n=$(grep -c . "$3")
		if [ "$n" -gt 0 ]; then
			say "  $1 logged $n warning/error lines so far, e.g.:"
			sed -E 's/^[^ ]+ //; s/[0-9a-f]{12}/<id>/g; s/[0-9]+/<n>/g' "$3" | sort | uniq -c |
				sort -rn | head -3 | sed 's/^/relay_bench:     /'
		fi
	done
}

# pick FILE PATTERN WORD: the number after WORD on the first line of FILE containing PATTERN
pick() {
	awk -v pat="$2" -v w="$3" 'index($0, pat) { for (i = 1; i < NF; i++) if ($i == w) { v = $(i + 1); sub(/[,;)]$/, "", v); print v; exit } }' "$1" 2>/dev/null
}
ms() { awk -v v="${1:-}" 'BEGIN { if (v == "") print "?"; else printf "%.2f", v / 1000 }'; }

# run_load LABEL KIND DELIVERIES SECONDS: one loadgen run (KIND single or split) on the
# current pair; keeps its output in $TMP/LABEL.out and sets P50, P99 (the receivers on b1
# for single, on b2 for split), SP50, SP99 (split: the receivers on b1), DPS (deliveries/s
# in the send window), LOST, ERRS, LATE, SENT, OK (1 when the run passes (b)'s criteria).
run_load() {
	label=$1 kind=$2 d=$3 secs=$4
	rate=$(awk -v d="$d" -v m="$MEMBERS" 'BEGIN { printf "%g", d / m }')
	extra=""
	[ "$kind" = split ] && extra="--port2 $B2PORT"
	out=$TMP/$label.out
	say "  $kind, $d deliveries/s ($rate msg/s x $MEMBERS members), $secs s:"
	say "  \$ $PIN_LOAD $LOADGEN --port $B1PORT $extra --conns $MEMBERS --session-size $MEMBERS --senders $SENDERS --rate $rate --warmup $WARMUP --duration $secs --broker-pid $B1PID"
	c0=$(ticks "$B1PID") c1=$(ticks "$B2PID") c2=$(ticks $(pg_pids)) c3=$(ticks "$RPID")
	t0=$(date +%s.%N)
	# shellcheck disable=SC2086
	$PIN_LOAD "$LOADGEN" --port "$B1PORT" $extra --conns "$MEMBERS" --session-size "$MEMBERS" \
		--senders "$SENDERS" --rate "$rate" --warmup "$WARMUP" --duration "$secs" \
		--broker-pid "$B1PID" >"$out" 2>"$TMP/$label.err"
	st=$?
	t1=$(date +%s.%N)
	grep -v 'VmRSS' "$out" | sed 's/^/relay_bench:     /'
	[ -s "$TMP/$label.err" ] && sed 's/^/relay_bench:     (stderr) /' "$TMP/$label.err" | head -3
	awk -v a="$(($(ticks "$B1PID") - c0))" -v b="$(($(ticks "$B2PID") - c1))" \
		-v c="$(($(ticks $(pg_pids)) - c2))" -v r="$(($(ticks "$RPID") - c3))" \
		-v hz="$HZ" -v t0="$t0" -v t1="$t1" 'BEGIN { w = (t1 - t0) * hz;
		printf "relay_bench:     cpu over the whole loadgen run (%.1f s, setup and warm-up included): b1 %.0f%%, b2 %.0f%%, PostgreSQL %.0f%%, Redis %.0f%% of a core\n",
		t1 - t0, 100 * a / w, 100 * b / w, 100 * c / w, 100 * r / w }'
	if [ $st -ne 0 ]; then
		say "  loadgen exited with status $st: no figures for this run"
		FAILED=1
		OK=0 P50="" P99="" SP50="" SP99="" DPS=""
		return 1
	fi
	if [ "$kind" = split ]; then
		P50=$(pick "$out" "cross-broker:" p50) P99=$(pick "$out" "cross-broker:" p99)
		SP50=$(pick "$out" "same broker:" p50) SP99=$(pick "$out" "same broker:" p99)
	else
		P50=$(pick "$out" "latency us  p50" p50) P99=$(pick "$out" "latency us  p50" p99)
		SP50="" SP99=""
	fi
	DPS=$(pick "$out" "deliveries/s" deliveries/s)
	got=$(awk '/delivered of/ { for (i = 1; i < NF; i++) if ($i == "delivered") { print $(i - 1) " " $(i + 2); exit } }' "$out")
	LOST=$(echo "$got" | awk '{ print $2 - $1 }')
	ERRS=$(pick "$out" "error events" events)
	LATE=$(awk '/ late\)/ { for (i = 2; i <= NF; i++) if ($i == "late)") { print $(i - 1); exit } }' "$out")
	SENT=$(pick "$out" "loadgen: sent" sent)
	OK=$(awk -v p="${P99:-1e18}" -v b="$BOUND_MS" -v l="${LOST:-1}" -v e="${ERRS:-1}" \
		-v late="${LATE:-1}" -v s="${SENT:-0}" -v r="$rate" -v t="$secs" \
		'BEGIN { print (p <= b * 1000 && l == 0 && e == 0 && late == 0 && s >= 0.98 * r * t) ? 1 : 0 }')
	return 0
}

SUMMARY=$TMP/summary
: >"$SUMMARY"
note() { printf '%s\n' "$*" >>"$SUMMARY"; }

case $SCENARIOS in *a*)
	say "(a) latency: a session of $MEMBERS, $SENDERS senders, at 1,000 and 10,000 deliveries/s, ${DURATION} s a run (after a ${WARMUP} s warm-up), $RUNS rounds"
	for d in 1000 10000; do
		eval "s50_$d='' s99_$d='' x50_$d='' x99_$d='' n50_$d='' n99_$d=''"
	done
	r=0
	while [ $r -lt "$RUNS" ]; do
		r=$((r + 1))
		say "round $r of $RUNS"
		fresh_pair none
		for d in 1000 10000; do
			if run_load "single-$d-$r" single "$d" "$DURATION"; then
				eval "s50_$d=\"\$s50_$d $P50\" s99_$d=\"\$s99_$d $P99\""
			fi
			if run_load "split-$d-$r" split "$d" "$DURATION"; then
				eval "x50_$d=\"\$x50_$d $P50\" x99_$d=\"\$x99_$d $P99\" n50_$d=\"\$n50_$d $SP50\" n99_$d=\"\$n99_$d $SP99\""
			fi
		done
		check_pair
	done
	stop_pair
	for d in 1000 10000; do
		for q in 50 99; do
			eval "s=\$s${q}_$d x=\$x${q}_$d n=\$n${q}_$d"
			# shellcheck disable=SC2086,SC2154
			ms_s=$(ms "$(median $s)") ms_x=$(ms "$(median $x)") ms_n=$(ms "$(median $n)")
			diff=$(awk -v a="$ms_x" -v b="$ms_s" 'BEGIN { if (a == "?" || b == "?") print "?"; else printf "%+.2f", a - b }')
			target="" met=""
			if [ "$d" = 10000 ] && [ $q = 99 ]; then
				target="cross <= single + 2 ms"
				met=$(awk -v v="$diff" 'BEGIN { if (v == "?") print "?"; else print (v <= 2 ? "yes" : "no") }')
			fi
			say "  p$q at $d deliveries/s, ms: single broker $ms_s (runs, us:$s); cross-broker $ms_x (runs:$x); the split room's receivers on b1 $ms_n (runs:$n); cross - single $diff${target:+; target $target: $met}"
			note "p$q at $d deliveries/s|$ms_s ms|$ms_x ms (b1's receivers in the same runs: $ms_n ms)|$diff ms|$target|$met"
		done
	done
	;;
esac

case $SCENARIOS in *b*)
	say "(b) the most deliveries/s sustained: steps $STEPS; ${RAMP_DURATION} s a run, $RUNS runs a step and kind; a run passes with no delivery missing, no chat refused, no sender late and p99 <= $BOUND_MS ms"
	best_single="" best_split="" fail_single="" fail_split=""
	for d in $STEPS; do
		[ -n "$fail_single" ] && [ -n "$fail_split" ] && break
		fresh_pair none
		for kind in single split; do
			eval "f=\$fail_$kind"
			[ -n "$f" ] && continue
			passed=0 dps=""
			r=0
			while [ $r -lt "$RUNS" ]; do
				r=$((r + 1))
				run_load "ramp-$kind-$d-$r" "$kind" "$d" "$RAMP_DURATION"
				passed=$((passed + OK))
				dps="$dps ${DPS:-0}"
				say "    run $r: $( [ "$OK" = 1 ] && echo passed || echo "failed (p99 $(ms "$P99") ms, ${LOST:-?} deliveries missing, ${ERRS:-?} refused, ${LATE:-?} late)")"
				# an overloaded run leaves a backlog: the next one gets fresh brokers
				[ "$OK" = 1 ] || { check_pair; fresh_pair none; }
			done
			# shellcheck disable=SC2086
			m=$(median $dps)
			if [ $((passed * 2)) -gt "$RUNS" ]; then
				say "  $kind at $d deliveries/s: passed ($passed of $RUNS runs; measured$dps, median $m)"
				eval "best_$kind=$m"
			else
				say "  $kind at $d deliveries/s: failed ($passed of $RUNS runs passed): the ramp stops for $kind"
				eval "fail_$kind=$d"
			fi
		done
		check_pair
	done
	stop_pair
	say "  most sustained: single broker ${best_single:-none} deliveries/s (failed at ${fail_single:-no step}); split ${best_split:-none} (failed at ${fail_split:-no step}); steps of 20,000 or more apart: the limit is between the last step passed and the first failed"
	diff=$(awk -v a="${best_split:-}" -v b="${best_single:-}" 'BEGIN { if (a == "" || b == "") print "?"; else printf "%+.0f (%.2f x)", a - b, a / b }')
	why_single="no step failed: more than that" why_split=$why_single
	[ -n "$fail_single" ] && why_single="failed at $fail_single"
	[ -n "$fail_split" ] && why_split="failed at $fail_split"
	note "most deliveries/s sustained (p99 <= $BOUND_MS ms, nothing lost or refused)|${best_single:-none} ($why_single)|${best_split:-none} ($why_split)|$diff||"
	;;
esac

case $SCENARIOS in *c*)
	say "(c) takeover of an orphaned reply: b1 and b2 with --llm echo, a member on each, a chat of 600 words, its generating broker killed after 1 s of streaming"
	fresh_pair echo
	has=$("$PY" bench/relay_pg.py sql "$PGDIR" "$DBNAME" "select count(*) from information_schema.columns where table_name = 'reply_queue' and column_name = 'owner'")
	if [ "$has" != 1 ]; then
		say "takeover: not measured (no reply lease in this build)"
		note "takeover of an orphaned reply|||| <= 5 s|not measured (no reply lease in this build)"
	else
		times=""
		r=0
		while [ $r -lt "$RUNS" ]; do
			r=$((r + 1))
			[ $r -gt 1 ] && fresh_pair echo
			say "  \$ $PIN_LOAD $PY bench/relay_takeover.py --port1 $B1PORT --pid1 $B1PID --port2 $B2PORT --pid2 $B2PID --pg-dir $PGDIR --db $DBNAME --words 600 --after 1"
			$PIN_LOAD "$PY" bench/relay_takeover.py --port1 "$B1PORT" --pid1 "$B1PID" \
				--port2 "$B2PORT" --pid2 "$B2PID" --pg-dir "$PGDIR" --db "$DBNAME" --words 600 \
				--after 1 >"$TMP/takeover-$r.out" 2>&1
			st=$?
			sed 's/^/relay_bench:     /' "$TMP/takeover-$r.out"
			[ $st -eq 0 ] || { say "  relay_takeover.py could not run (status $st)"; FAILED=1; }
			t=$(sed -n 's/^takeover-seconds: \([0-9.]*\)$/\1/p' "$TMP/takeover-$r.out")
			times="$times ${t:-none}"
			stop_pair # one of them was killed on purpose
		done
		# shellcheck disable=SC2086
		m=$(median $(printf '%s\n' $times | grep -v none))
		met=$(awk -v v="${m:-}" -v n="$times" 'BEGIN { if (v == "" || n ~ /none/) print "no"; else print (v <= 5 ? "yes" : "no") }')
		say "  takeover, s (runs:$times): median ${m:-none}"
		note "takeover of an orphaned reply (kill -9 to response_complete interrupted)||${m:-none} s (runs:$times)||<= 5 s|$met"
	fi
	stop_pair
	;;
esac

say "summary (figure | single broker | cross-broker | difference | target | met?), medians of $RUNS runs; $PLACES:"
sed 's/^/relay_bench:   /' "$SUMMARY"
if [ "$FAILED" -ne 0 ]; then
	say "some scenarios could not run or a broker misbehaved (see above)"
	exit 1
fi
exit 0
