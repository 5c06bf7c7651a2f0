#!/usr/bin/env bash
# Usage: deploy/dev/install-deps.sh NEED...
#
# Makes sure the system tools that a make target needs are there. NEED is one
# or more of:
#   go        the Go toolchain ($GO, default go): only checked, never
#             installed (Debian's golang is too old: install Go 1.26 from
#             https://go.dev/dl/)
#   redis     redis-server and redis-cli        (Debian: redis-server, redis-tools)
#   chromium  /usr/bin/chromium, for the browser tests and `make screenshots`
#                                               (Debian: chromium)
#   cc        a C compiler and the C library's development files, for
#             `go test -race` (cgo)             (Debian: gcc, libc6-dev)
# When everything is there it prints nothing. When something is missing and
# this runs as root on a machine with apt-get, it installs the missing
# packages with apt-get (no recommends); otherwise it prints the apt-get
# command to run and exits with status 1.
#
# Env: ECPS_NO_INSTALL=1 never installs, only checks (and says what to run).
# Used by `make build`, `make run`, `make test`, `make bench` and
# `make screenshots`.
set -euo pipefail

if [ "$#" -eq 0 ]; then
	echo "usage: $0 go|redis|chromium|cc..." >&2
	exit 2
fi

missing=()  # Debian packages to install
what=()     # what is missing, for the messages
add() {
	local p
	for p in "$@"; do
		case " ${missing[*]} " in *" $p "*) ;; *) missing+=("$p") ;; esac
	done
}

for need in "$@"; do
	case "$need" in
	go)
		if ! command -v "${GO:-go}" >/dev/null 2>&1; then
			echo "error: '${GO:-go}' not found in PATH: install Go 1.26 (https://go.dev/dl/, then add /usr/local/go/bin to PATH)." >&2
			exit 1
		fi
		;;
	redis)
		if ! command -v redis-server >/dev/null 2>&1; then
			what+=("redis-server")
			add redis-server # depends on redis-tools (redis-cli)
		fi
		if ! command -v redis-cli >/dev/null 2>&1; then
			what+=("redis-cli")
			add redis-tools
		fi
		;;
	chromium)
		# The browser tests start exactly this one (api/pages_browser_test.go).
		if [ ! -x /usr/bin/chromium ]; then
			what+=("/usr/bin/chromium")
			add chromium
		fi
		;;
	cc)
		# go test -race links with the C toolchain: try to build a C program.
		cc=$(command -v gcc || command -v cc || true)
		if [ -z "$cc" ]; then
			what+=("a C compiler (for go test -race)")
			add gcc libc6-dev
		elif ! printf 'int main(void) { return 0; }\n' | "$cc" -x c - -o /dev/null >/dev/null 2>&1; then
			what+=("the C library's development files (for go test -race)")
			add gcc libc6-dev
		fi
		;;
	*)
		echo "$0: unknown need '$need' (want go, redis, chromium or cc)" >&2
		exit 2
		;;
	esac
done

[ "${#missing[@]}" -eq 0 ] && exit 0
list=$(printf '%s, ' "${what[@]}")
list=${list%, }

cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" != 0 ] || [ "${ECPS_NO_INSTALL:-}" = 1 ] || ! command -v apt-get >/dev/null 2>&1; then
	{
		echo "error: missing: $list."
		if command -v apt-get >/dev/null 2>&1; then
			if [ "$(id -u)" != 0 ]; then
				echo "       Install them as root (make does it when run as root):"
				echo "           sudo apt-get update && sudo $cmd"
			else
				echo "       Install them (ECPS_NO_INSTALL=1 is set, so make does not):"
				echo "           apt-get update && $cmd"
			fi
		else
			echo "       No apt-get here: install the equivalent of the Debian packages ${missing[*]}."
		fi
	} >&2
	exit 1
fi

echo ">> missing: $list; installing with apt-get: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt run to finish rather than fail at once on its lock.
lock=(-o DPkg::Lock::Timeout=300)
apt-get "${lock[@]}" update -q
apt-get "${lock[@]}" install -y -q --no-install-recommends "${missing[@]}" </dev/null
