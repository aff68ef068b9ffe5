#!/usr/bin/env bash
# check-generated.sh fails when the checked-in Go code of the event payloads
# (events/gyrev1/*.pb.go) or the embedded pipeline JSON Schema
# (libs/pipeline/schema.json) is not what scripts/generate.sh makes from schemas/.
# It generates into a scratch directory and compares; the tree is not touched,
# and untracked files are compared like tracked ones.
#
# Exit status: 0 when up to date, 1 when stale (the stale files are named; run
# `make generate` or `bash scripts/generate.sh` and commit the result).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tree="$root/events/gyrev1"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/want" "$work/have"

bash "$root/scripts/generate.sh" "$work/want" >/dev/null

# Compare only generated files: hand-written Go files may live beside them.
shopt -s nullglob
for f in "$tree"/*.pb.go; do cp "$f" "$work/have/"; done
schema="$root/libs/pipeline/schema.json"
[ -f "$schema" ] && cp "$schema" "$work/have/schema.json"

if diff -r "$work/have" "$work/want" >"$work/diff"; then
	echo "check-generated: events/gyrev1 and libs/pipeline/schema.json are up to date with schemas/"
	exit 0
fi

echo "check-generated: generated code is stale; run 'make generate' (bash scripts/generate.sh) and commit:" >&2
stale=()
for f in "$work/want"/*.pb.go "$work/want/schema.json"; do
	name="$(basename "$f")"
	where="events/gyrev1/$name"
	[ "$name" = schema.json ] && where="libs/pipeline/schema.json"
	if [ ! -f "$work/have/$name" ]; then
		stale+=("$where (missing)")
	elif ! cmp -s "$f" "$work/have/$name"; then
		stale+=("$where (differs)")
	fi
done
for f in "$work/have"/*.pb.go; do
	name="$(basename "$f")"
	if [ ! -f "$work/want/$name" ]; then
		stale+=("events/gyrev1/$name (no longer generated: delete it)")
	fi
done
printf '  %s\n' "${stale[@]}" >&2
head -n 40 "$work/diff" >&2
exit 1
