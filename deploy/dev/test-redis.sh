#!/usr/bin/env bash
# Usage: deploy/dev/test-redis.sh CMD [ARGS...]
#
# Starts a throw-away redis-server (no persistence) on a free port of
# 127.0.0.1, exports ECPS_TEST_REDIS_URL=redis://127.0.0.1:PORT/0, runs
# CMD ARGS..., stops the redis-server whatever happens and exits with CMD's
# exit status. Used by `make test` and `make bench`.
#
# Env: TEST_REDIS_PORT_MIN / TEST_REDIS_PORT_MAX (default 20000..29999), the
# range in which a free port is looked for.
set -uo pipefail

if [ "$#" -eq 0 ]; then
	echo "usage: $0 CMD [ARGS...]" >&2
	exit 2
fi
for bin in redis-server redis-cli; do
	if ! command -v "$bin" >/dev/null 2>&1; then
		echo "test-redis.sh: '$bin' not found in PATH; install Redis (Debian: apt-get install redis-server; make test does it when run as root)" >&2
		exit 127
	fi
done

port_min=${TEST_REDIS_PORT_MIN:-20000}
port_max=${TEST_REDIS_PORT_MAX:-29999}

tmpdir=$(mktemp -d "${TMPDIR:-/tmp}/ecps-test-redis.XXXXXX") || exit 1
redis_pid=
cmd_pid=

cleanup() {
	if [ -n "$redis_pid" ] && kill -0 "$redis_pid" 2>/dev/null; then
		kill "$redis_pid" 2>/dev/null
		# Give it a moment to exit, then make sure.
		for _ in $(seq 1 50); do
			kill -0 "$redis_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$redis_pid" 2>/dev/null
		wait "$redis_pid" 2>/dev/null
	fi
	rm -rf "$tmpdir"
}
# on_signal SIG STATUS: pass the signal on to the command, wait for it, exit.
on_signal() {
	trap - INT TERM HUP
	if [ -n "$cmd_pid" ]; then
		kill -"$1" "$cmd_pid" 2>/dev/null
		wait "$cmd_pid" 2>/dev/null
	fi
	exit "$2"
}
trap cleanup EXIT
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM
trap 'on_signal HUP 129' HUP

# port_in_use PORT: true when something accepts TCP connections on it.
port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Try random ports until our own redis-server is up and answering on one.
port=
for _ in $(seq 1 30); do
	p=$((port_min + RANDOM % (port_max - port_min + 1)))
	port_in_use "$p" && continue
	redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no \
		--daemonize no --dir "$tmpdir" --logfile "$tmpdir/redis-$p.log" &
	redis_pid=$!
	for _ in $(seq 1 100); do
		if ! kill -0 "$redis_pid" 2>/dev/null; then
			break # died (port taken meanwhile?): try another port
		fi
		# Make sure the server answering is ours, not someone else's.
		if [ "$(redis-cli -p "$p" info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p')" = "$redis_pid" ]; then
			port=$p
			break 2
		fi
		sleep 0.1
	done
	kill "$redis_pid" 2>/dev/null
	wait "$redis_pid" 2>/dev/null
	redis_pid=
done
if [ -z "$port" ]; then
	echo "test-redis.sh: could not start redis-server on a free port; last logs:" >&2
	tail -n 20 "$tmpdir"/redis-*.log >&2 2>/dev/null
	exit 1
fi

export ECPS_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
echo "test-redis.sh: redis-server pid $redis_pid on $ECPS_TEST_REDIS_URL" >&2

# In the background so that a signal reaches the trap at once; stdin is
# passed on explicitly (background jobs would otherwise get /dev/null).
"$@" <&0 &
cmd_pid=$!
wait "$cmd_pid"
status=$?
cmd_pid=
exit "$status"
