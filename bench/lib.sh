# lib.sh: what the benchmark scripts share (sourced by rest_bench.sh, broker_bench.sh,
# pg_bench.sh and relay_bench.sh, after they define say and die). POSIX sh; defines functions only.

# alive PID: the process exists and is not a zombie (a dead child stays one until waited)
alive() {
	[ -n "$1" ] || return 1 # no pid: "/proc//stat" would read /proc/stat
	pst=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)
	[ -n "$pst" ] && [ "$pst" != Z ]
}

# free_port: a loopback port that is free now, never 8000 or 8001.
free_port() {
	/usr/bin/python3 -c '
import socket
for _ in range(50):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if p not in (8000, 8001):
        print(p); break'
}

# median N...: the middle value (the lower of the two middle ones)
median() {
	printf '%s\n' "$@" | grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'
}

# seed_session BASE N: through the REST API at BASE, a new session holding N messages,
# checked by reading it back; sets SID (its id) and BYTES (the size of GET
# /sessions/{id}'s answer). Dies (the caller's die) when a request fails.
seed_session() {
	SID=$(curl -fs -X POST -H 'Content-Type: application/json' -d '{"title":"bench"}' \
		"$1/sessions/new" |
		/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["session_id"])') ||
		die "POST $1/sessions/new failed"
	n=1
	while [ $n -le "$2" ]; do
		curl -fs -o /dev/null -X POST -H 'Content-Type: application/json' \
			-d "{\"content\":\"benchmark message $n: the quick brown fox jumps over the lazy dog\"}" \
			"$1/sessions/$SID/messages" || die "POST $1/sessions/$SID/messages failed"
		n=$((n + 1))
	done
	got=$(curl -fs "$1/sessions/$SID" |
		/usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)["messages"]))') ||
		die "GET $1/sessions/$SID failed"
	[ "$got" = "$2" ] || die "GET $1/sessions/$SID returned $got messages, not $2"
	BYTES=$(curl -fs "$1/sessions/$SID" | wc -c)
}

# stop_pid PID NAME: SIGTERM to a process we started, wait up to 5 s, then SIGKILL (said; sets FAILED).
stop_pid() {
	alive "$1" || {
		wait "$1" 2>/dev/null
		return 0
	}
	kill -TERM "$1" 2>/dev/null
	i=0
	while alive "$1" && [ $i -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	if alive "$1"; then
		say "  $2 (pid $1) did not exit within 5 s of SIGTERM: killing it"
		kill -KILL "$1" 2>/dev/null
		FAILED=1
	fi
	wait "$1" 2>/dev/null
}
