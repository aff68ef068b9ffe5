#!/usr/bin/env bash
# check-breaking.sh fails when a change to the event payload schemas would
# break a consumer of the last release: a message or field removed, a field
# renumbered, renamed, re-typed or given another cardinality, a JSON name
# changed (the full list is in events/internal/schemacompat). It compares the
# descriptors compiled into events/gyrev1 with schemas/baseline/gyre-v1.json,
# the schemas of the last release; additions pass.
#
#   bash scripts/check-breaking.sh            # check (CI; make check-breaking)
#   bash scripts/check-breaking.sh --update   # move the baseline to the current schemas
#                                             # (on a release; make schema-baseline)
#
# The compiled descriptors are what schemas/ generates: scripts/check-generated.sh,
# which CI runs first, fails when they are stale. `buf breaking` would do the
# same job; this needs no binary and runs offline, in `make test` too.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
baseline="$root/schemas/baseline/gyre-v1.json"

case "${1:-}" in
--update)
	(cd "$root/events" && go run ./internal/cmd/schemabaseline -o "$baseline")
	echo "check-breaking: review the diff of ${baseline#"$root"/} and commit it with the release"
	;;
"")
	(cd "$root/events" && go test -count=1 -run '^TestSchemasKeepTheBaseline$' ./internal/schemacompat/)
	echo "check-breaking: no breaking change to the payloads since ${baseline#"$root"/}"
	;;
*)
	echo "usage: $0 [--update]" >&2
	exit 2
	;;
esac
