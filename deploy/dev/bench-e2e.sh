#!/usr/bin/env bash
# Usage: deploy/dev/bench-e2e.sh [ecps-bench flags...]
#
# A load test of the whole service on this machine, as `make bench-e2e` runs
# it (CI does not): a throw-away redis-server (AOF every second, as
# deploy/redis.conf), REPLICAS ecpsd replicas (push provider fcm, pointed
# at the fake FCM server that ecps-bench plays, no credentials; pprof on
# their metrics listeners) with a bench config (high per-practitioner push
# and IdP request limits: the bench measures the service, not its abuse
# limits), then bin/ecps-bench for DURATION; it prints the report and
# writes it as JSON. Everything it started is stopped at the end.
#
# Env (defaults):
#   MODE=load     the load run; or waiters (ecps-bench waiters: WAITERS=10000
#                 long-polls on replica 1) or memory (ecps-bench memory: Redis
#                 memory per device and per pending login)
#   PUSH=fcm      phones learn their challenges from the fake FCM; poll: they
#                 poll their list (devices enrolled without a push token)
#   REPLICAS=2  DURATION=30s  DEVICES=4000  CONCURRENCY=32  RATE=   (logins/s: open loop)
#   JSON=var/bench/report.json  LABEL="commit <short sha>"  PROFILE= (file: CPU profile of replica 1 during the load)
# Extra arguments are passed to ecps-bench (e.g. -devices-per-subject 2).
set -euo pipefail
cd "$(dirname "$0")/../.."

REPLICAS=${REPLICAS:-2}
DURATION=${DURATION:-30s}
DEVICES=${DEVICES:-4000} # ~10 logins per practitioner in 30 s at ~1,300/s: their logins hash stays the size of a busy day
CONCURRENCY=${CONCURRENCY:-32}
RATE=${RATE:-}
JSON=${JSON:-var/bench/report.json}
PROFILE=${PROFILE:-}
MODE=${MODE:-load}
PUSH=${PUSH:-fcm}
WAITERS=${WAITERS:-10000}
GO=${GO:-go}
if [ -z "${LABEL:-}" ]; then
	LABEL="commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
	git diff --quiet HEAD 2>/dev/null || LABEL="$LABEL + uncommitted changes"
fi

for bin in redis-server redis-cli; do
	if ! command -v "$bin" >/dev/null 2>&1; then
		echo "bench-e2e: '$bin' not found; install Redis (Debian: apt-get install redis-server)" >&2
		exit 127
	fi
done
# Each replica and the bench hold a socket per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

mkdir -p bin "$(dirname "$JSON")"
$GO build -o bin/ ./cmd/ecpsd ./cmd/ecps-bench

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ecps-bench-e2e.XXXXXX")
pids=()
cleanup() {
	local status=$?
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	if [ "$status" -ne 0 ]; then
		for f in "$tmp"/*.log; do
			[ -f "$f" ] || continue
			echo "--- last lines of $(basename "$f")" >&2
			tail -n 15 "$f" >&2
		done
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# free_port: a loopback port nothing listens on (20000..29999).
taken=" "
free_port() {
	local p
	for _ in $(seq 1 100); do
		p=$((20000 + RANDOM % 10000))
		case "$taken" in *" $p "*) continue ;; esac
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			taken="$taken$p "
			echo "$p"
			return 0
		fi
	done
	echo "bench-e2e: no free port" >&2
	return 1
}

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync everysec \
	--dir "$tmp" --logfile "$tmp/redis.log" --daemonize no &
pids+=($!)
for _ in $(seq 1 100); do
	redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break
	sleep 0.1
done
redis-cli -p "$redis_port" ping | grep -q PONG
redis_url="redis://127.0.0.1:$redis_port/0"

fcm_port=$(free_port)
secret=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
desk_key=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
secret_hash=$(printf '%s\n' "$secret" | bin/ecpsd hash-secret)
desk_hash=$(printf '%s\n' "$desk_key" | bin/ecpsd hash-secret)

# The bench config: the contract's defaults, but for the limits that a
# load of a few practitioners would hit (pushes per practitioner, IdP
# requests per second) and the push provider.
cat >"$tmp/bench.yaml" <<YAML
listen: "127.0.0.1:0"           # ECPS_LISTEN per replica
metrics_listen: "127.0.0.1:0"   # ECPS_METRICS_LISTEN per replica
pprof: true
public_url: "https://ecps-bench.example"   # only written into enrol_uri and login_url
dev: false
redis:
  url: "$redis_url"
clients:
  - id: "bench-idp"
    name: "ecps-bench"
    secret_sha256: "$secret_hash"
    scopes: ["authentication", "activation"]
    redirect_uris: ["https://ecps-bench.example/cb"]
desk_operators:
  - name: "bench-desk"
    key_sha256: "$desk_hash"
push:
  provider: "fcm"
  fcm:
    project_id: "ecps-bench"
    endpoint: "http://127.0.0.1:$fcm_port/v1"   # ecps-bench -fcm; no credentials_file: no OAuth
limits:
  pushes_per_subject: 1000000
  client_rps: 1000000
YAML

targets=() metrics=()
for i in $(seq 1 "$REPLICAS"); do
	port=$(free_port)
	mport=$(free_port)
	ECPS_LISTEN="127.0.0.1:$port" ECPS_METRICS_LISTEN="127.0.0.1:$mport" \
		bin/ecpsd -config "$tmp/bench.yaml" 2>"$tmp/ecpsd-$i.log" &
	pids+=($!)
	targets+=("http://127.0.0.1:$port")
	metrics+=("http://127.0.0.1:$mport/metrics")
done

cat >"$tmp/credentials.env" <<ENV
ECPS_DEMO_CLIENT_ID=bench-idp
ECPS_DEMO_CLIENT_SECRET=$secret
ECPS_DEMO_DESK_KEY=$desk_key
ENV

load=(-concurrency "$CONCURRENCY")
if [ -n "$RATE" ]; then
	load=(-rate "$RATE")
fi
fcm=(-fcm "127.0.0.1:$fcm_port")
if [ "$PUSH" = poll ]; then
	fcm=()
fi
profile=()
if [ -n "$PROFILE" ]; then
	profile=(-profile "$PROFILE")
fi
echo ">> uptime: $(uptime)"
echo ">> $REPLICAS replica(s) ${targets[*]}, Redis $redis_url, fake FCM on 127.0.0.1:$fcm_port"
join() { local IFS=,; echo "$*"; }
case "$MODE" in
load)
	bin/ecps-bench -targets "$(join "${targets[@]}")" -metrics "$(join "${metrics[@]}")" -credentials "$tmp/credentials.env" \
		"${fcm[@]}" -redis "$redis_url" -pushes-per-subject 0 \
		-devices "$DEVICES" -duration "$DURATION" "${load[@]}" -label "$LABEL" -json "$JSON" "${profile[@]}" "$@"
	;;
waiters)
	bin/ecps-bench waiters -targets "${targets[0]}" -metrics "${metrics[0]}" -credentials "$tmp/credentials.env" \
		-redis "$redis_url" -n "$WAITERS" -json "$JSON" "$@"
	;;
memory)
	bin/ecps-bench memory -targets "$(join "${targets[@]}")" -credentials "$tmp/credentials.env" \
		-fcm "127.0.0.1:$fcm_port" -redis "$redis_url" -json "$JSON" "$@"
	;;
*)
	echo "bench-e2e: MODE load, waiters or memory, not $MODE" >&2
	exit 2
	;;
esac
# Redis's own view of the run, beside the report: where its time went by
# command (usec_per_call counts a command's execution, not the reads and
# writes of its connection) and its CPU.
redis-cli -p "$redis_port" INFO commandstats >"${JSON%.json}.redis-info.txt"
redis-cli -p "$redis_port" INFO cpu >>"${JSON%.json}.redis-info.txt"
redis-cli -p "$redis_port" INFO stats >>"${JSON%.json}.redis-info.txt"
echo ">> report: $JSON (Redis: ${JSON%.json}.redis-info.txt)"
echo ">> uptime: $(uptime)"
