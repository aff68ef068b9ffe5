# Gyre — developer entry points. Every target works from a fresh clone.
#
#   make test       component tests of every module (embedded JetStream), then
#                   integration tests against the real server at $(NATS_URL)
#   make test-chaos every chaos scenario, three runs each: the services as
#                   processes on the real server (and a 3-node cluster), one
#                   fault each, one invariant check; make test runs two, once
#   make test-outage  Redis (the online feature store) down 7 minutes under the
#                   feature service: nothing dead-lettered, every row written
#                   after; make test runs the same test with a 12 s outage
#   make bench      benchmarks: libs/bus vs raw nats.go jetstream; libs/ml vs scikit-learn
#                   and XGBoost (make bench-ml); /infer vs a bare handler (make
#                   bench-serving); each a table
#   make generate   regenerate events/gyrev1 from schemas/ (protoc + pinned protoc-gen-go)
#   make check-breaking  fail on a change to the payload schemas that breaks a
#                   consumer of the last release (schemas/baseline/gyre-v1.json)
#   make schema-baseline  on a release: move that baseline to the current schemas
#   make lint       gofmt, go vet, staticcheck, go mod tidy check

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# The real server for integration tests (CI starts one when none is running).
NATS_URL ?= nats://127.0.0.1:4222
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Per test binary. tests/ builds every service's image binary the way the
# Dockerfile does (tests/deploy_test.go): minutes on a cold build cache with
# two cores, beside its end-to-end tests; go test's default is 10m.
TEST_TIMEOUT ?= 30m

# Every module of the workspace, as import-path patterns and as directories.
PKGS = $(shell go list -m -f '{{.Path}}/...')
DIRS = $(shell go list -m -f '{{.Dir}}')

.PHONY: all test test-component test-integration test-chaos test-outage test-race bench bench-bus bench-ml bench-serving generate check-generated check-breaking schema-baseline lint tidy build

all: lint test

build:
	go build $(PKGS)

test: test-component test-integration

## Component and unit tests: each test gets an embedded, in-process JetStream
## server (libs/natstest); fuzz targets run their seed corpora.
test-component:
	env -u NATS_URL go test -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

## Integration tests: the same bus, interop and end-to-end tests against the
## server process at $(NATS_URL); they fail (never skip) when it is not there.
test-integration:
	NATS_URL=$(NATS_URL) go test -count=1 -timeout $(TEST_TIMEOUT) -p 1 ./libs/... ./tests/... ./cmd/gyre/...

## The chaos suite (tests/chaos_test.go): every scenario, CHAOS_RUNS runs
## each, against the real server at $(NATS_URL) and a cluster of three
## nats-server processes; the table of lost / duplicated / out-of-order /
## disagreeing counts and the stall each fault added goes to CHAOS_REPORT.
CHAOS_RUNS ?= 3
CHAOS_REPORT ?= chaos-report.md
test-chaos:
	GYRE_CHAOS=all GYRE_CHAOS_RUNS=$(CHAOS_RUNS) GYRE_CHAOS_REPORT=$(abspath $(CHAOS_REPORT)) NATS_URL=$(NATS_URL) \
		go test -count=1 -timeout 180m -run 'TestChaos$$' -v ./tests/ | grep -v '^\s*{'

## The online store's outage (issue #15): the feature service on a Redis of
## its own (Debian's redis-server) that is stopped for GYRE_OUTAGE while a
## batch a second comes, the service restarted and a second replica started
## halfway; then Redis returns. Every batch is materialised, none is
## dead-lettered, the lag (gyre_feature_online_lag_batches/_seconds) grows,
## and after Redis returns every row is in it and the lag is 0; the FIGURES
## line gives batches fed, keys and the time to catch up.
GYRE_OUTAGE ?= 7m
GYRE_OUTAGE_ROWS ?= 100
test-outage:
	GYRE_OUTAGE=$(GYRE_OUTAGE) GYRE_OUTAGE_ROWS=$(GYRE_OUTAGE_ROWS) \
		go test -count=1 -timeout 30m -run 'TestOnlineStoreOutage$$' -v ./services/feature/ | grep -v '^redis: .*connection refused'

test-race:
	env -u NATS_URL go test -race -count=1 ./libs/... ./events/...

bench: bench-bus bench-ml bench-serving

## libs/bus vs raw nats.go jetstream in the same run (see libs/cmd/busbench).
bench-bus:
	go run ./libs/cmd/busbench --events 50000 --runs 3

## libs/ml (GBDT, logreg) vs scikit-learn and XGBoost on three datasets, one
## table with ratios and the issue #4 acceptance verdicts (see docs/bench-ml.md).
## Installs Debian's python3-sklearn and python3-xgboost first when missing.
bench-ml:
	bash scripts/install-bench-deps.sh python3-sklearn python3-xgboost
	/usr/bin/python3 scripts/bench_ml.py --skip-deps

## The deployer's /v2/models/{name}/infer (adaptive batching on and off) vs a
## bare net/http handler calling the same GBDT, driven by wrk: single-row and
## 100-row requests at 1, 8 and 64 connections, the rate at half of the peak,
## one table with ratios (see services/deployer/cmd/servebench). Installs
## Debian's wrk first when missing.
bench-serving:
	bash scripts/bench-serving.sh

generate:
	bash scripts/generate.sh

check-generated:
	bash scripts/check-generated.sh

## A published payload may only grow: scripts/check-breaking.sh compares the
## schemas compiled into events/gyrev1 with schemas/baseline/gyre-v1.json, the
## schemas of the last release, and fails on a removed message or field, a
## renumbered, renamed or re-typed field, a changed cardinality or JSON name.
check-breaking:
	bash scripts/check-breaking.sh

## On a release (and only then): the current schemas become the baseline that
## later changes must not break. Review the diff and commit it with the tag.
schema-baseline:
	bash scripts/check-breaking.sh --update

lint:
	@unformatted="$$(gofmt -l $(DIRS))"; if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	go vet $(PKGS)
	go run $(STATICCHECK) $(PKGS)
	$(MAKE) --no-print-directory tidy

## Each module's go.mod and go.sum must be what `go mod tidy` makes of them.
tidy:
	@for d in $(DIRS); do (cd $$d && GOWORK=off go mod tidy -diff >/dev/null) || { echo "go mod tidy would change $$d"; exit 1; }; done
