# e-CPS backend: build, run and check.
#   make run     local dev server on 127.0.0.1:8080 with a local Redis
#   make demo    a scripted end-to-end login (desk, phone, IdP) against the server of `make run`
#   make demo-keycloak  the same through Keycloak's CIBA channel: the demo plays a Keycloak realm
#   make test    the build and all tests (race detector) against a throw-away Redis
#   make bench   benchmarks against a throw-away Redis
#   make screenshots  the README's screenshots of the web pages (docs/screenshots)
#   make fuzz    each fuzz target for FUZZTIME
#   make lint    gofmt, go vet, staticcheck
#   make build   bin/ecpsd, bin/ecps-device, bin/ecps-demo
# run, test, bench and screenshots install the system packages they need
# (redis-server, chromium, gcc) with apt-get when run as root, and otherwise
# say what to install: deploy/dev/install-deps.sh. Assumed: Go 1.26, make, git.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

GO          ?= go
REDIS_PORT  ?= 6379
LISTEN      ?= 127.0.0.1:8080
FUZZTIME    ?= 15s
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
TEST_REDIS  := ./deploy/dev/test-redis.sh
# Installs (as root, with apt-get) or names what a target needs: see the script.
DEPS        := GO=$(GO) ./deploy/dev/install-deps.sh

# Go installed from go.dev's tarball lives in /usr/local/go/bin, not always on PATH yet.
ifeq ($(shell command -v $(GO)),)
ifneq ($(wildcard /usr/local/go/bin/go),)
export PATH := $(PATH):/usr/local/go/bin
endif
endif

VAR_DIR   := $(CURDIR)/var
REDIS_DIR := $(VAR_DIR)/redis
# make run's practitioner directory (a small extract in the published format,
# with the walk-through's practitioners), imported only when none is loaded;
# DEV_DIRECTORY= runs without one.
DEV_DIRECTORY ?= deploy/dev/PS_LibreAcces_Personne_activite_demo.txt

.PHONY: build run demo demo-keycloak test bench screenshots fuzz lint clean

build:
	@$(DEPS) go
	mkdir -p bin
	$(GO) build -o bin/ ./cmd/...

# Dev server. With ECPS_REDIS_URL set, that Redis is used as is; otherwise a
# local redis-server (AOF on, data in var/redis) is started on REDIS_PORT,
# unless one already answers there. A fresh var/dev.yaml (demo client and desk
# key printed once) is written on every run, and the demo directory
# (DEV_DIRECTORY) imported if that Redis has none.
run: build
	mkdir -p "$(REDIS_DIR)"
	@if [ -n "$${ECPS_REDIS_URL:-}" ]; then \
		redis_url="$$ECPS_REDIS_URL"; \
	else \
		$(DEPS) redis || { echo "       (or point ECPS_REDIS_URL at a running Redis)" >&2; exit 1; }; \
		if redis-cli -p $(REDIS_PORT) ping 2>/dev/null | grep -q PONG; then \
			echo ">> using the redis-server already answering on port $(REDIS_PORT)"; \
		else \
			echo ">> starting redis-server on 127.0.0.1:$(REDIS_PORT) (data in $(REDIS_DIR))"; \
			redis-server --port $(REDIS_PORT) --bind 127.0.0.1 --daemonize yes \
				--dir "$(REDIS_DIR)" --appendonly yes --appendfsync everysec \
				--pidfile "$(REDIS_DIR)/redis.pid" --logfile "$(REDIS_DIR)/redis.log"; \
			ok=; \
			for i in $$(seq 1 100); do \
				if redis-cli -p $(REDIS_PORT) ping 2>/dev/null | grep -q PONG; then ok=1; break; fi; \
				sleep 0.1; \
			done; \
			if [ -z "$$ok" ]; then \
				echo "error: redis-server did not answer on port $(REDIS_PORT); see $(REDIS_DIR)/redis.log" >&2; \
				tail -n 20 "$(REDIS_DIR)/redis.log" >&2 || true; \
				exit 1; \
			fi; \
		fi; \
		redis_url="redis://127.0.0.1:$(REDIS_PORT)/0"; \
	fi; \
	bin/ecpsd dev-config -out "$(VAR_DIR)/dev.yaml" -listen "$(LISTEN)" -redis-url "$$redis_url"; \
	if [ -n "$(DEV_DIRECTORY)" ]; then \
		echo ">> demo practitioner directory $(DEV_DIRECTORY), unless one is loaded (make run DEV_DIRECTORY= for none)"; \
		bin/ecpsd directory import -if-none -config "$(VAR_DIR)/dev.yaml" "$(DEV_DIRECTORY)"; \
	fi; \
	exec bin/ecpsd -config "$(VAR_DIR)/dev.yaml"

# Scripted login against the server that `make run` started (in another
# terminal): desk activation, enrolment by bin/ecps-device (throw-away state
# in var/demo/), IdP login and long-poll, approval on the "phone". It reads
# the demo credentials that `make run` wrote in clear to var/dev-credentials.env
# (dev only) and stops with a clear message if that server does not answer
# GET /readyz.
demo: build
	@if [ ! -f var/dev-credentials.env ]; then \
		echo "error: var/dev-credentials.env not found: start the dev server first with 'make run'" >&2; \
		echo "       (in another terminal; it writes that file), then run 'make demo' again." >&2; \
		exit 1; \
	fi
	bin/ecps-demo -credentials var/dev-credentials.env

# The same against Keycloak's CIBA channel: bin/ecps-demo plays the Keycloak
# realm that `make run` configured (issuer http://127.0.0.1:8180/realms/ecps-demo,
# throw-away keys in var/dev-keycloak-keys.json): its channel requests to
# /api/v1/keycloak/ciba, its JWKS and its callback endpoint (docs/keycloak.md).
demo-keycloak: build
	@if ! grep -qs '^ECPS_DEMO_KEYCLOAK_KEYS=' var/dev-credentials.env; then \
		echo "error: no demo Keycloak realm in var/dev-credentials.env: start (or restart) the dev server with" >&2; \
		echo "       'make run' in another terminal, then run 'make demo-keycloak' again." >&2; \
		exit 1; \
	fi
	bin/ecps-demo -keycloak -credentials var/dev-credentials.env

# The binaries are built too (after the C compiler is in place, as cgo
# changes every build): -race builds share nothing with them, and on a fresh
# machine `make run` after `make test` would otherwise compile everything again.
test:
	@$(DEPS) go redis chromium cc
	mkdir -p bin
	$(GO) build -o bin/ ./cmd/...
	$(TEST_REDIS) $(GO) test -race -count=1 -timeout 30m ./...

bench:
	@$(DEPS) go redis
	$(TEST_REDIS) $(GO) test -run '^$$' -bench . -benchmem ./...

# The README's screenshots (docs/screenshots/*.png), from a scenario made for
# them (api/screenshots_test.go) in headless Chromium. The tests never write them.
screenshots:
	@$(DEPS) go redis chromium
	ECPS_SCREENSHOTS_DIR="$(CURDIR)/docs/screenshots" \
		$(TEST_REDIS) $(GO) test -count=1 -run '^TestScreenshots$$' -v ./api/

fuzz:
	@pkgs=$$($(GO) list ./...); \
	n=0; \
	for pkg in $$pkgs; do \
		out=$$($(GO) test -list '^Fuzz' "$$pkg"); \
		names=$$(printf '%s\n' "$$out" | grep -E '^Fuzz' || true); \
		for name in $$names; do \
			echo ">> $$pkg $$name ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) "$$pkg"; \
			n=$$((n + 1)); \
		done; \
	done; \
	echo ">> $$n fuzz target(s) run"

lint:
	@echo ">> gofmt -l ."; \
	unformatted=$$(gofmt -l .); \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt: these files need formatting (run gofmt -w):" >&2; \
		echo "$$unformatted" >&2; \
		exit 1; \
	fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

clean:
	rm -rf bin cover.out
	find . -name '*.test' -type f -delete
	@echo "(var/ keeps the dev Redis data and var/dev.yaml: remove it by hand if wanted)"

# Load test of the whole service on this machine (CI does not run it): a
# throw-away Redis, REPLICAS (2) ecpsd replicas pushing to the fake FCM
# server that ecps-bench plays, DURATION (30s) of full push logins; prints
# the report and writes var/bench/report.json. See docs/performance.md.
.PHONY: bench-e2e
bench-e2e:
	./deploy/dev/bench-e2e.sh

# ---- Operations kit (docs/operations.md) ----
#   make image       bin/ecpsd-image.tar: the OCI image, built without a Docker engine (deploy/image)
#   make check-ops   promtool check and test of the alert rules, then the tests of the image,
#                    the Kubernetes manifests, the rules and the dashboard (go test ./deploy/...)
.PHONY: image promtool check-ops

image:
	$(GO) run ./deploy/image -out bin/ecpsd-image.tar

# promtool (Debian's prometheus package) checks the alert rules, here and in
# go test ./deploy/prometheus: installed with apt-get when run as root.
promtool:
	@if ! command -v promtool >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo ">> promtool not found: installing Debian's prometheus package (it ships promtool)"; \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus </dev/null; \
		else \
			echo "error: promtool not found. Install it (Debian: sudo apt-get install prometheus)" >&2; \
			exit 1; \
		fi; \
	fi

# go test ./... runs the rules' tests, which need promtool.
test: promtool

check-ops: promtool
	promtool check rules deploy/prometheus/ecpsd-rules.yml
	promtool test rules deploy/prometheus/ecpsd-rules_test.yml
	$(TEST_REDIS) $(GO) test -count=1 ./deploy/...

# The topology and fault tests (docs/reliability.md): real Redis Cluster and
# Sentinel sets, masters killed and failed over, network faults through a
# proxy, a replica of the service killed, AOF restarts, and the
# linearizability check (60 histories here instead of make test's 12:
# ECPS_TOPOLOGY_TESTS). They all run in `make test` too, in their short form.
.PHONY: test-topologies
test-topologies:
	@$(DEPS) go redis
	ECPS_TOPOLOGY_TESTS=1 $(TEST_REDIS) $(GO) test -race -count=1 -timeout 30m -v \
		-run 'Topolog|Cluster|Sentinel|Failover|Fault|Linear|ReplicaKilled|AOF|KeySpread|Durable|LongPoll' ./api/ ./durable/ ./redistest/ ./push/
