#!/usr/bin/env bash
# make run: REST and the broker in the foreground, logs interleaved on stderr.
# Ctrl-C (SIGINT) or SIGTERM stops both and exits 0; if one of them fails (exits non-zero),
# the other is stopped too and make run exits 1. Configuration: PARLEY_* variables.
set -u
mkdir -p var
pids=()
stop() {
	trap - INT TERM
	kill -TERM "${pids[@]}" 2>/dev/null
	wait
	exit "$1"
}
trap 'stop 0' INT TERM
bin/parley-rest & pids+=($!)
bin/parley-broker & pids+=($!)
echo "parley: REST on http://127.0.0.1:${PARLEY_PORT:-8000} (demo at /demo, API docs at /docs)," \
	"broker on ws://127.0.0.1:${PARLEY_WS_PORT:-8001}/ws; Ctrl-C stops both" >&2
wait -n # returns when one of them exits (both exit 0 when asked to stop)
status=$?
if [ "$status" -ne 0 ]; then
	echo "parley: a process failed with status $status (see its log above); stopping the other" >&2
	stop 1
fi
stop 0
