#!/usr/bin/env bash
# check-generated.sh fails when the checked-in Go code of the event payloads
# (events/gyrev1/*.pb.go), the embedded copies of their .proto sources
# (events/proto/gyre/v1/*.proto), the embedded pipeline JSON Schema
# (libs/pipeline/schema.json) or the Open Inference Protocol's gRPC code
# (services/deployer/oipgrpc/*.pb.go) is not what scripts/generate.sh makes
# from schemas/ and services/deployer/oipgrpc/grpc_predict_v2.proto. It generates into a scratch directory and compares; the tree is
# not touched, and untracked files are compared like tracked ones.
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
if [ -d "$root/events/proto" ]; then cp -R "$root/events/proto" "$work/have/proto"; fi
oip="$root/services/deployer/oipgrpc"
oip_have=("$oip"/*.pb.go)
if [ "${#oip_have[@]}" -gt 0 ]; then
	mkdir -p "$work/have/oipgrpc"
	cp "${oip_have[@]}" "$work/have/oipgrpc/"
fi

# where maps a path of the scratch layout to the tree's.
where() {
	case "$1" in
	schema.json) echo "libs/pipeline/schema.json" ;;
	proto/*) echo "events/$1" ;;
	oipgrpc/*) echo "services/deployer/$1" ;;
	*) echo "events/gyrev1/$1" ;;
	esac
}

if diff -r "$work/have" "$work/want" >"$work/diff"; then
	echo "check-generated: events/gyrev1, events/proto, libs/pipeline/schema.json and services/deployer/oipgrpc are up to date with their sources"
	exit 0
fi

echo "check-generated: generated code is stale; run 'make generate' (bash scripts/generate.sh) and commit:" >&2
stale=()
while IFS= read -r name; do
	if [ ! -f "$work/have/$name" ]; then
		stale+=("$(where "$name") (missing)")
	elif ! cmp -s "$work/want/$name" "$work/have/$name"; then
		stale+=("$(where "$name") (differs)")
	fi
done < <(cd "$work/want" && find . -type f | sed 's|^\./||' | LC_ALL=C sort)
while IFS= read -r name; do
	if [ ! -f "$work/want/$name" ]; then
		stale+=("$(where "$name") (no longer generated: delete it)")
	fi
done < <(cd "$work/have" && find . -type f | sed 's|^\./||' | LC_ALL=C sort)
printf '  %s\n' "${stale[@]}" >&2
head -n 40 "$work/diff" >&2
exit 1
