#!/bin/sh
# pg_bench: PostgreSQL beside SQLite as the store, in one run (issue 13).
#
# Builds nothing (make does). Starts one throwaway PostgreSQL 15 cluster of its own
# (bench/pg_cluster.py over tests/lib/pgcluster.py: initdb and pg_ctl as the `postgres`
# user when run as root, a Unix socket in this run's temporary directory, no TCP;
# durability as PostgreSQL's defaults: fsync, full_page_writes and synchronous_commit
# on; BENCH_PG_FSYNC=off turns fsync and full_page_writes off), then measures each
# figure BENCH_PG_RUNS times on each backend, SQLite then PostgreSQL, run by run (so
# that a busy moment of the shared machine falls on both):
#   (b) fan-out: one session of 1,000 members, 4 senders, as fast as acknowledged
#       (broker_bench's (b)): deliveries/s
#   (c) latency: a session of 10 at 1,000 msg/s (broker_bench's (c)): p50 and p99; also
#       on SQLite with --db-sync full (an fsync per commit, as PostgreSQL's default
#       durability), so that PostgreSQL is compared with both kinds of commit
#   (s) stored: 10 senders, each in a session of its own, each with 8 chats unacknowledged
#       at most, as fast as acknowledged: own message_added back per second (loadgen's
#       acknowledged/s: stored, committed and answered)
#   (t) stored, one room: the same 10 senders in one session of 10 (every message is also
#       delivered to the 9 others, and every store takes the same session row)
#   (r) REST: GET /sessions/{id} of a session of 50 messages (stored through POST), wrk
#       -t1 -cBENCH_WRK_CONNS -dBENCH_WRK_DURATION --latency: requests/s and latency p50
# Every broker run gets a fresh database (an SQLite file, or a database of the cluster,
# dropped after the run), --llm none and the rate limit off. Pinned with taskset when
# there are 2 cores: parley-broker and parley-rest on core 0, loadgen and wrk on core 1,
# and the PostgreSQL server (postmaster and every backend it forks inherit the affinity
# of pg_ctl) on core BENCH_PG_CPU (0: the broker's core, so that the store's work costs
# the broker's core as SQLite's, done inside the broker, does; "0,1" or 1 to let it
# elsewhere). Each figure is the median of the runs, printed with the runs and the
# command, and the ratio PostgreSQL / SQLite. Targets from the issue, printed, not
# asserted: PostgreSQL's latency p50 in (c) within 2 x SQLite's, and at least 5,000 stored
# messages/s with 10 senders.
#
# A benchmark, not a test: it exits non-zero only when something could not run (a missing
# program, a server that does not start or dies, a cluster that cannot be made).
# Environment: BENCH_PG_RUNS (3), BENCH_DURATION (10, seconds of each loadgen run),
# BENCH_PG_SCENARIOS (bcstr), BENCH_PG_CPU (0), BENCH_PG_FSYNC (on), BENCH_WRK_DURATION
# (10s), BENCH_WRK_CONNS (64), BROKER_BIN (bin/parley-broker), REST_BIN (bin/parley-rest),
# BENCH_BIN (build/bench), PG_BIN (/usr/lib/postgresql/15/bin).
set -u

BROKER_BIN=${BROKER_BIN:-bin/parley-broker}
REST_BIN=${REST_BIN:-bin/parley-rest}
BENCH_BIN=${BENCH_BIN:-build/bench}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
RUNS=${BENCH_PG_RUNS:-3}
DURATION=${BENCH_DURATION:-10}
SCENARIOS=${BENCH_PG_SCENARIOS:-bcstr}
PG_CPU=${BENCH_PG_CPU:-0}
PG_FSYNC=${BENCH_PG_FSYNC:-on}
WRK_DURATION=${BENCH_WRK_DURATION:-10s}
WRK_CONNS=${BENCH_WRK_CONNS:-64}
LOADGEN=$BENCH_BIN/loadgen
MESSAGES=50
# limits far above the load, so that they measure the store rather than the broker's policy
BROKER_FLAGS="--llm none --log-level warn --max-conns-per-ip 1000000 --rate-limit 1000000 --rate-burst 1000000"

say() { printf '%s\n' "pg_bench: $*"; }
die() { say "cannot run: $*" >&2; exit 1; }
# alive, free_port, median, seed_session
. "$(dirname "$0")/lib.sh"

for tool in curl wrk taskset /usr/bin/python3; do
	command -v "$tool" >/dev/null 2>&1 || die "'$tool' is missing (make deps installs it)"
done
[ -x "$BROKER_BIN" ] && [ -x "$REST_BIN" ] || die "$BROKER_BIN or $REST_BIN is not built (run make)"
[ -x "$LOADGEN" ] || die "$LOADGEN is not built (run make bench)"
[ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] ||
	die "PostgreSQL 15 is not installed in $PG_BIN (make deps installs postgresql)"
case $PG_FSYNC in on | off) ;; *) die "BENCH_PG_FSYNC is on or off, not '$PG_FSYNC'" ;; esac
case $RUNS in '' | *[!0-9]* | 0) die "BENCH_PG_RUNS must be a positive number, not '$RUNS'" ;; esac
if [ "$(nproc)" -ge 2 ]; then
	PIN_SERVER="taskset -c 0"
	PIN_LOAD="taskset -c 1"
	PIN_PG="taskset -c $PG_CPU"
else
	PIN_SERVER=""
	PIN_LOAD=""
	PIN_PG=""
	say "a second core is missing: nothing is pinned"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/parley-pg-bench.XXXXXX") || die "mktemp failed"
# the cluster's directory is the postgres user's when we are root: it must reach it
chmod 711 "$TMP"
PGDIR=$TMP/pg
PG_STARTED=0
BPID=""
RPIDS=""
RUN=0
FAILED=0
FIGS=$TMP/figures
: >"$FIGS"

cluster() { /usr/bin/python3 bench/pg_cluster.py "$@"; }


cleanup() {
	[ -n "$BPID" ] && stop_pid "$BPID" parley-broker
	for p in $RPIDS; do stop_pid "$p" parley-rest; done
	if [ "$PG_STARTED" = 1 ]; then
		cluster stop "$PGDIR" || say "the PostgreSQL cluster in $PGDIR did not stop (see above)"
	fi
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# new_db BACKEND NAME: a fresh database for one server: sets DB (a path or a URI) and
# DB_FLAGS. Backends: sqlite, sqlfull (SQLite with --db-sync full), pg.
new_db() {
	DB_FLAGS=""
	case $1 in
	sqlite) DB=$TMP/$2.db ;;
	sqlfull) DB=$TMP/$2.db DB_FLAGS="--db-sync full" ;;
	*) DB=$(cluster create "$PGDIR" "$2") || die "CREATE DATABASE $2 failed" ;;
	esac
}
drop_db() { # drop_db BACKEND NAME
	[ "$1" = pg ] && { cluster drop "$PGDIR" "$2" || say "  DROP DATABASE $2 failed"; }
	return 0
}

# wait_up PID LOG WHAT CHECK...: waits up to 10 s for the command CHECK to succeed while
# process PID (a server we started, logging to LOG) lives; else shows the log and dies.
wait_up() {
	wpid=$1 wlog=$2 what=$3
	shift 3
	i=0
	until "$@" 2>/dev/null; do
		i=$((i + 1))
		if [ $i -ge 100 ] || ! alive "$wpid"; then
			cat "$wlog" >&2
			die "$what within 10 s"
		fi
		sleep 0.1
	done
}

# start_broker: a fresh broker on a free port with database DB; sets PORT, BPID and LOG.
start_broker() {
	RUN=$((RUN + 1))
	PORT=$(free_port) || die "no free port"
	LOG=$TMP/broker-$RUN.log
	# shellcheck disable=SC2086
	$PIN_SERVER "$BROKER_BIN" --port "$PORT" --db "$DB" --notify-socket "$TMP/broker-$RUN.sock" \
		$BROKER_FLAGS $DB_FLAGS >"$LOG" 2>&1 &
	BPID=$!
	wait_up "$BPID" "$LOG" "parley-broker did not listen on port $PORT" /usr/bin/python3 -c \
		"import socket; socket.create_connection(('127.0.0.1', $PORT), 0.2)"
}

# stop_broker: reports a crash or what the broker logged, then stops it.
stop_broker() {
	if ! alive "$BPID"; then
		wait "$BPID" 2>/dev/null
		say "  BROKER CRASHED during the run (exit status $?); the end of its log:"
		tail -20 "$LOG" | sed 's/^/pg_bench:     /'
		FAILED=1
	else
		nwarn=$(grep -c . "$LOG")
		if [ "$nwarn" -gt 0 ]; then
			say "  broker logged $nwarn warning/error lines, e.g.:"
			sed -E 's/^[^ ]+ //; s/[0-9a-f]{12}/<id>/g; s/[0-9]+/<n>/g' "$LOG" | sort | uniq -c |
				sort -rn | head -5 | sed 's/^/pg_bench:     /'
		fi
		stop_pid "$BPID" parley-broker
	fi
	BPID=""
}

# record KEY BACKEND VALUE: one run's figure (an empty value is not recorded).
record() {
	[ -n "$3" ] && printf '%s %s %s\n' "$1" "$2" "$3" >>"$FIGS"
	return 0
}
figure() { # figure FILE PATTERN FIELD: a number from a loadgen output line
	awk -v pat="$2" -v f="$3" 'index($0, pat) { sub(/,$/, "", $f); print $f; exit }' "$1" 2>/dev/null
}

# load_run KEY BACKEND LOADGEN-ARGS...: one loadgen run on a fresh broker and database;
# keeps loadgen's output in $TMP/KEY-BACKEND.out. Returns loadgen's status.
load_run() {
	key=$1 be=$2
	shift 2
	name=${key}_${be}_$r
	new_db "$be" "$name"
	start_broker
	out=$TMP/$key-$be.out
	say "  run $r, $be: \$ $PIN_LOAD $LOADGEN --port $PORT $* --broker-pid $BPID"
	$PIN_LOAD "$LOADGEN" --port "$PORT" "$@" --broker-pid "$BPID" >"$out" 2>"$out.err"
	st=$?
	sed 's/^/pg_bench:     /' "$out"
	[ -s "$out.err" ] && sed 's/^/pg_bench:     (stderr) /' "$out.err" | head -8
	if [ $st -ne 0 ]; then
		say "  loadgen exited with status $st: no figures for this run"
		FAILED=1
	fi
	stop_broker
	drop_db "$be" "$name"
	return $st
}

# scenario KEY TITLE LOADGEN-ARGS...: BENCH_PG_RUNS runs on each backend of BACKENDS,
# alternating; collect KEY BACKEND records the figures of each run from
# $TMP/KEY-BACKEND.out.
BACKENDS="sqlite pg"
scenario() {
	key=$1 title=$2
	shift 2
	say "($key) $title, ${DURATION} s, $RUNS runs on each backend"
	printf '%s\t%s\n' "$key" "$PIN_LOAD $LOADGEN --port PORT $* --broker-pid PID" >>"$TMP/commands"
	r=1
	while [ $r -le "$RUNS" ]; do
		for be in $BACKENDS; do
			load_run "$key" "$be" "$@" && collect "$key" "$be"
		done
		r=$((r + 1))
	done
}

collect() {
	f=$TMP/$1-$2.out
	case $1 in
	b) record b.deliveries "$2" "$(figure "$f" "deliveries/s" 3)" ;;
	c)
		record c.p50 "$2" "$(figure "$f" "latency us" 5)"
		record c.p99 "$2" "$(figure "$f" "latency us" 9)"
		;;
	s | t) record "$1.stored" "$2" "$(figure "$f" "acknowledged/s" 3)" ;;
	esac
	errs=$(awk '/error events/ { print $NF }' "$f")
	[ "${errs:-0}" = 0 ] || say "  $2: $errs error events (chats answered with an error): see above"
}

# ---- the cluster
say "starting a PostgreSQL 15 cluster in $PGDIR (server pinned: ${PIN_PG:-no})"
# shellcheck disable=SC2086
PG_PID=$($PIN_PG /usr/bin/python3 bench/pg_cluster.py start "$PGDIR" "$PG_FSYNC") || {
	PG_STARTED=1
	die "the PostgreSQL cluster did not start"
}
PG_STARTED=1
PG_SETTINGS=$("$PG_BIN/psql" -X -At -d "postgresql:///postgres?host=$PGDIR/sock&user=postgres" \
	-c "SELECT string_agg(name || '=' || current_setting(name), ' ' ORDER BY name)
	FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes',
	'shared_buffers', 'wal_sync_method', 'server_version')" 2>&1)
say "  postmaster pid $PG_PID, $(taskset -pc "$PG_PID" 2>/dev/null | sed 's/.*: /CPU affinity /'); $PG_SETTINGS"
say "SQLite: a temporary file per run (--db-sync normal, the default: no fsync per commit; in (c) also --db-sync full)"
say "pinned: parley-broker and parley-rest ${PIN_SERVER:-no}, loadgen and wrk ${PIN_LOAD:-no}, PostgreSQL ${PIN_PG:-no}"

case $SCENARIOS in *b*)
	scenario b "fan-out: one session of 1,000 members, 4 senders, as fast as acknowledged" \
		--conns 1000 --session-size 1000 --senders 4 --window 8 --duration "$DURATION" \
		--concurrency 256
	;;
esac
case $SCENARIOS in *c*)
	BACKENDS="sqlite pg sqlfull"
	scenario c "latency: a session of 10 at 1,000 msg/s (also on SQLite with --db-sync full)" \
		--conns 10 --session-size 10 --senders 1 --rate 1000 --duration "$DURATION"
	BACKENDS="sqlite pg"
	;;
esac
case $SCENARIOS in *s*)
	scenario s "stored: 10 senders, each in a session of its own, 8 unacknowledged each at most" \
		--conns 10 --session-size 1 --senders 1 --window 8 --duration "$DURATION"
	;;
esac
case $SCENARIOS in *t*)
	scenario t "stored, one room: 10 senders in one session of 10, 8 unacknowledged each at most" \
		--conns 10 --session-size 10 --senders 10 --window 8 --duration "$DURATION"
	;;
esac

# ---- REST: one parley-rest per backend, both up, wrk runs alternating
# rest_start BACKEND: parley-rest on a fresh database with a session of 50 messages; sets
# the backend's URL (REST_URL_sqlite, REST_URL_pg).
rest_start() {
	be=$1
	new_db "$be" "rest_$be"
	port=$(free_port) || die "no free port"
	base="http://127.0.0.1:$port"
	$PIN_SERVER "$REST_BIN" --port "$port" --db "$DB" --notify-socket "$TMP/rest-$be.sock" \
		--log-level warn >"$TMP/rest-$be.log" 2>&1 &
	pid=$!
	RPIDS="$RPIDS $pid"
	wait_up "$pid" "$TMP/rest-$be.log" "parley-rest on $be did not answer on $base" \
		curl -fs -o /dev/null "$base/health"
	seed_session "$base" $MESSAGES
	say "  $be: parley-rest pid $pid on $base, session $SID with $MESSAGES messages ($BYTES-byte answer)"
	eval "REST_URL_$be=\$base/sessions/\$SID REST_PID_$be=\$pid"
}

# usecs VALUE: wrk's latency (123.45us, 1.23ms, 1.02s) in microseconds
usecs() {
	printf '%s\n' "$1" | awk '{ v = $1 + 0; if ($1 ~ /us$/) m = 1; else if ($1 ~ /ms$/) m = 1000;
		else if ($1 ~ /s$/) m = 1000000; else m = 0; if (m) printf "%.0f\n", v * m }'
}

case $SCENARIOS in *r*)
	say "(r) REST: GET /sessions/{id} of a session of $MESSAGES messages, $RUNS wrk runs on each backend"
	rest_start sqlite
	rest_start pg
	printf '%s\t%s\n' r "$PIN_LOAD wrk -t1 -c$WRK_CONNS -d$WRK_DURATION --latency http://127.0.0.1:PORT/sessions/ID" >>"$TMP/commands"
	r=1
	while [ $r -le "$RUNS" ]; do
		for be in sqlite pg; do
			eval "url=\$REST_URL_$be pid=\$REST_PID_$be"
			cmd="$PIN_LOAD wrk -t1 -c$WRK_CONNS -d$WRK_DURATION --latency $url"
			say "  run $r, $be: \$ $cmd"
			# shellcheck disable=SC2086
			if ! wout=$($cmd 2>&1); then
				printf '%s\n' "$wout" | sed 's/^/pg_bench:     /'
				say "  wrk failed: no figures for this run"
				FAILED=1
				continue
			fi
			rps=$(printf '%s\n' "$wout" | awk '/^Requests\/sec:/ { print $2 }')
			p50=$(printf '%s\n' "$wout" | awk '$1 == "50%" { print $2 }')
			p99=$(printf '%s\n' "$wout" | awk '$1 == "99%" { print $2 }')
			bad=$(printf '%s\n' "$wout" | awk '/Non-2xx or 3xx responses:/ { print $NF }')
			errs=$(printf '%s\n' "$wout" | awk '/Socket errors:/ { sub(/^ *Socket errors: */, ""); print }')
			say "     requests/s $rps, latency p50 $p50, p99 $p99${bad:+, non-2xx $bad}${errs:+, socket errors: $errs}"
			record r.rps "$be" "$rps"
			record r.p50 "$be" "$(usecs "$p50")"
			if ! alive "$pid"; then
				say "  parley-rest on $be (pid $pid) died; its log:"
				sed 's/^/pg_bench:     /' "$TMP/rest-$be.log" | tail -20
				FAILED=1
			fi
		done
		r=$((r + 1))
	done
	for be in sqlite pg; do
		nwarn=$(grep -c . "$TMP/rest-$be.log")
		[ "$nwarn" -gt 0 ] && say "  parley-rest on $be logged $nwarn lines, e.g.: $(head -1 "$TMP/rest-$be.log")"
	done
	;;
esac

# ---- summary: medians of the runs, the ratio, the targets
runs_of() { # runs_of KEY BACKEND: every run's value, in order
	awk -v k="$1" -v b="$2" '$1 == k && $2 == b { printf " %s", $3 }' "$FIGS"
}
# line KEY LABEL TARGET-KIND [REFERENCE]: one row, PostgreSQL beside REFERENCE (sqlite, or
# sqlfull); TARGET-KIND: ratio<=N, pg>=N or none
line() {
	s_runs=$(runs_of "$1" "${4:-sqlite}")
	p_runs=$(runs_of "$1" pg)
	# shellcheck disable=SC2086
	s=$(median $s_runs)
	# shellcheck disable=SC2086
	p=$(median $p_runs)
	ratio=$(awk -v a="${p:-0}" -v b="${s:-0}" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "?" }')
	case $3 in
	ratio\<=*)
		t=${3#ratio<=}
		met=$(awk -v x="$ratio" -v t="$t" 'BEGIN { print (x != "?" && x + 0 <= t + 0) ? "met" : "not met" }')
		target="PG/SQLite <= $t: $met"
		;;
	pg\>=*)
		t=${3#pg>=}
		met=$(awk -v x="${p:-0}" -v t="$t" 'BEGIN { print (x + 0 >= t + 0) ? "met" : "not met" }')
		target="PG >= $t: $met"
		;;
	*) target="" ;;
	esac
	printf 'pg_bench:   %-34s %10s %10s %6s  %s\n' "$2" "${s:-?}" "${p:-?}" "$ratio" "$target"
	printf 'pg_bench:   %-34s runs: %s%s; PostgreSQL%s\n' "" \
		"$([ "${4:-sqlite}" = sqlfull ] && echo 'SQLite full sync' || echo SQLite)" "$s_runs" "$p_runs"
}

say "summary: medians of $RUNS runs (server on core 0, load on core 1, PostgreSQL ${PIN_PG:-not pinned}; figures, not assertions):"
printf 'pg_bench:   %-34s %10s %10s %6s  %s\n' figure SQLite PostgreSQL PG/SQL target
case $SCENARIOS in *b*) line b.deliveries "(b) fan-out, deliveries/s" none ;; esac
case $SCENARIOS in *c*)
	line c.p50 "(c) session of 10, p50 us" "ratio<=2"
	line c.p99 "(c) session of 10, p99 us" none
	line c.p50 "(c) p50 us, SQLite --db-sync full" "ratio<=2" sqlfull
	line c.p99 "(c) p99 us, SQLite --db-sync full" none sqlfull
	;;
esac
case $SCENARIOS in *s*) line s.stored "(s) stored/s, 10 senders" "pg>=5000" ;; esac
case $SCENARIOS in *t*) line t.stored "(t) stored/s, 10 senders, 1 room" none ;; esac
case $SCENARIOS in *r*)
	line r.rps "(r) GET /sessions/{id}, req/s" none
	line r.p50 "(r) GET /sessions/{id}, p50 us" none
	;;
esac
say "commands (PORT, PID, ID: each run's own; SQLite --db FILE, PostgreSQL --db postgresql:///NAME?host=SOCKDIR&user=postgres):"
say "  servers: $PIN_SERVER $BROKER_BIN --port PORT --db DB --notify-socket SOCK $BROKER_FLAGS"
say "           $PIN_SERVER $REST_BIN --port PORT --db DB --notify-socket SOCK --log-level warn"
[ -s "$TMP/commands" ] && awk -F '\t' '{ printf "pg_bench:   (%s) %s\n", $1, $2 }' "$TMP/commands"
if [ "$FAILED" -ne 0 ]; then
	say "some runs could not run or a server misbehaved (see above)"
	exit 1
fi
exit 0
