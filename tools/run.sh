#!/bin/sh
# make run: REST and the broker in the foreground, logs interleaved on stderr.
# Ctrl-C (SIGINT) or SIGTERM stops both. Configuration comes from PARLEY_* variables.
set -u
mkdir -p var
pids=""
stop() {
	trap - INT TERM
	[ -n "$pids" ] && kill -TERM $pids 2>/dev/null
	wait
	exit 0
}
trap stop INT TERM
bin/parley-rest & pids="$pids $!"
if [ -x bin/parley-broker ]; then
	bin/parley-broker & pids="$pids $!"
fi
echo "parley: REST on http://127.0.0.1:${PARLEY_PORT:-8000}, demo at /demo; Ctrl-C stops" >&2
# Wait for either to exit; if one dies, stop the other too.
while :; do
	for p in $pids; do
		if ! kill -0 "$p" 2>/dev/null; then
			echo "parley: process $p exited; stopping the others" >&2
			stop
		fi
	done
	sleep 1
done
