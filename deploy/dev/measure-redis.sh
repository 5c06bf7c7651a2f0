#!/usr/bin/env bash
# Usage: deploy/dev/test-redis.sh deploy/dev/measure-redis.sh [N_DEVICES] [N_QR_LOGINS] [N_HISTORY]
#
# Measures the Redis memory that ecpsd's data take, for docs/operations.md
# ("Sizing Redis"): starts ecpsd (dev config, push provider log) on the
# throw-away Redis that test-redis.sh gives (ECPS_TEST_REDIS_URL), then
#   1. enrols N_DEVICES phones (default 300), one per practitioner, through
#      desk activations and bin/ecps-device, each with a 163-character push
#      token, as a real FCM token;
#   2. creates one push login per practitioner (pending: nobody answers) and
#      N_QR_LOGINS QR logins (default 300),
#   3. gives the first practitioner a history: N_HISTORY (default 250) push
#      logins created then cancelled by the IdP (two audit entries each),
# and after each phase sums MEMORY USAGE (SAMPLES 0: every element counted)
# of every key by kind of key, and reads INFO's used_memory.
set -euo pipefail
cd "$(dirname "$0")/../.."

n_dev=${1:-300}
n_qr=${2:-300}
n_hist=${3:-250}
: "${ECPS_TEST_REDIS_URL:?run it through deploy/dev/test-redis.sh}"
redis_port=$(sed -E 's|.*:([0-9]+)/.*|\1|' <<<"$ECPS_TEST_REDIS_URL")
rcli() { redis-cli -p "$redis_port" "$@"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/ecps-measure.XXXXXX")
server_pid=
cleanup() {
	if [ -n "$server_pid" ]; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/" ./cmd/ecpsd ./cmd/ecps-device
port=$((30000 + RANDOM % 10000))
base="http://127.0.0.1:$port"
"$work/ecpsd" dev-config -out "$work/dev.yaml" -listen "127.0.0.1:$port" -redis-url "$ECPS_TEST_REDIS_URL" >/dev/null
# shellcheck disable=SC1091
. "$work/dev-credentials.env"
ECPS_LIMITS_CLIENT_RPS=100000 ECPS_LIMITS_PUSHES_PER_SUBJECT=100000 "$work/ecpsd" -config "$work/dev.yaml" 2>"$work/ecpsd.log" &
server_pid=$!
for _ in $(seq 1 100); do
	curl -fs "$base/readyz" >/dev/null 2>&1 && break
	sleep 0.1
done
curl -fs "$base/readyz" >/dev/null

# rpps I: a valid RPPS idNat, "8" + 10 digits + a Luhn check digit.
rpps() {
	local body sum=0 i d
	body=$(printf '1%09d' "$1")
	for ((i = 0; i < 10; i++)); do
		d=${body:9-i:1}
		if ((i % 2 == 0)); then
			d=$((d * 2))
			((d > 9)) && d=$((d - 9))
		fi
		sum=$((sum + d))
	done
	printf '8%s%d' "$body" $(((10 - sum % 10) % 10))
}

# snapshot NAME: memory by kind of key, and used_memory.
snapshot() {
	local name=$1
	rcli --scan --pattern 'ecps:*' >"$work/keys"
	sed 's/.*/MEMORY USAGE "&" SAMPLES 0/' "$work/keys" | rcli >"$work/sizes"
	paste "$work/keys" "$work/sizes" | awk -F'\t' -v name="$name" '
		{
			k = $1
			if (k ~ /^ecps:\{sub:[0-9]+\}:devices$/) c = "devices hash ({sub}:devices)"
			else if (k ~ /^ecps:\{dev:/) c = "device record ({dev:id})"
			else if (k ~ /^ecps:\{key:/) c = "key claim ({key:thumbprint})"
			else if (k ~ /^ecps:\{act:/) c = "activation ({act:id}, 24 h)"
			else if (k ~ /:act:/) c = "activation state ({sub}:act:id, 24 h)"
			else if (k ~ /^ecps:\{sub:[0-9]+\}:audit$/) c = "audit stream per practitioner"
			else if (k ~ /^ecps:\{audit\}:all$/) c = "global audit stream"
			else if (k ~ /auditop:|\{audit\}:op:/) c = "audit op ids (1 h)"
			else if (k ~ /:jti:/) c = "seen proof jti (2 min)"
			else if (k ~ /^ecps:\{a:[^}]*\}$/) c = "login ({a:tag})"
			else if (k ~ /^ecps:\{a:[^}]*\}:qr$/) c = "login QR tokens ({a:tag}:qr)"
			else if (k ~ /:pending$/) c = "pending set ({sub}:pending)"
			else if (k ~ /:pushes$/) c = "push window ({sub}:pushes)"
			else if (k ~ /^ecps:\{rl:/) c = "client rate (5 s)"
			else c = "other"
			bytes[c] += $2; keys[c]++
		}
		END { for (c in bytes) printf "%s\t%s\t%d\t%d\n", name, c, keys[c], bytes[c] }' | sort -t$'\t' -k2 >"$work/$name.tsv"
	rcli info memory | tr -d '\r' | sed -n 's/^used_memory:/used_memory\t/p' >>"$work/$name.tsv"
}

snapshot empty

# 1. Enrolments.
token=$(head -c 200 /dev/zero | tr '\0' 'x' | head -c 163)
for i in $(seq 1 "$n_dev"); do
	sub=$(rpps "$i")
	uri=$(curl -fs -H "Authorization: Bearer $ECPS_DEMO_DESK_KEY" -H 'Content-Type: application/json' \
		-d "{\"subject\":\"$sub\"}" "$base/api/v1/desk/activations" | sed -E 's/.*"enrol_uri":"([^"]*)".*/\1/; s/\\u0026/\&/g')
	"$work/ecps-device" -state "$work/dev-$i.json" enrol -push-token "$token-$i" "$uri" >/dev/null
done
snapshot enrolled
n_entries_sub=$(rcli xlen "ecps:{sub:$(rpps 1)}:audit")
n_entries_all=$(rcli xlen 'ecps:{audit}:all')

# 2. Pending logins: one push login per practitioner, and QR logins.
for i in $(seq 1 "$n_dev"); do
	curl -fs -u "$ECPS_DEMO_CLIENT_ID:$ECPS_DEMO_CLIENT_SECRET" -H 'Content-Type: application/json' \
		-d "{\"login_hint\":\"$(rpps "$i")\",\"binding_message\":\"Connexion à Ameli Pro\"}" \
		"$base/api/v1/authentications" >/dev/null
done
for _ in $(seq 1 "$n_qr"); do
	curl -fs -u "$ECPS_DEMO_CLIENT_ID:$ECPS_DEMO_CLIENT_SECRET" -H 'Content-Type: application/json' \
		-d '{"binding_message":"Connexion à Ameli Pro"}' "$base/api/v1/authentications" >/dev/null
done
snapshot pending
n_all_pending=$(rcli xlen 'ecps:{audit}:all')

# 3. A practitioner's history: logins created, then cancelled by the IdP.
sub1=$(rpps 1)
for _ in $(seq 1 "$n_hist"); do
	id=$(curl -fs -u "$ECPS_DEMO_CLIENT_ID:$ECPS_DEMO_CLIENT_SECRET" -H 'Content-Type: application/json' \
		-d "{\"login_hint\":\"$sub1\",\"binding_message\":\"Connexion à Ameli Pro\"}" \
		"$base/api/v1/authentications" | sed -E 's/.*"auth_req_id":"([^"]*)".*/\1/')
	curl -fs -X DELETE -u "$ECPS_DEMO_CLIENT_ID:$ECPS_DEMO_CLIENT_SECRET" "$base/api/v1/authentications/$id" >/dev/null
done
hist_len=$(rcli xlen "ecps:{sub:$sub1}:audit")
hist_bytes=$(rcli memory usage "ecps:{sub:$sub1}:audit" samples 0)
n_all_hist=$(rcli xlen 'ecps:{audit}:all')
all_bytes=$(rcli memory usage 'ecps:{audit}:all' samples 0)

echo "== $n_dev devices (one per practitioner, each with a push token), then $n_dev push logins and $n_qr QR logins pending"
echo "== redis $(rcli info server | tr -d '\r' | sed -n 's/^redis_version://p'), $(rcli info memory | tr -d '\r' | sed -n 's/^mem_allocator://p')"
echo "== audit entries: $n_entries_sub per practitioner stream after enrolment, $n_entries_all in the global stream; $n_all_pending after the logins"
echo "== history: practitioner 1's audit stream: $hist_len entries, $hist_bytes bytes ($((hist_bytes / hist_len)) per entry);" \
	"global stream: $n_all_hist entries, $all_bytes bytes ($((all_bytes / n_all_hist)) per entry)"
printf '%-8s  %-42s %6s %10s %10s\n' phase kind keys bytes bytes/key
for p in empty enrolled pending; do
	awk -F'\t' -v p="$p" 'NF == 4 { printf "%-8s  %-42s %6d %10d %10.0f\n", p, $2, $3, $4, $4 / $3 } NF == 2 { printf "%-8s  %-42s %6s %10d\n", p, $1, "", $2 }' "$work/$p.tsv"
done
