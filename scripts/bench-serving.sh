#!/usr/bin/env bash
# make bench-serving: the deployer's Open Inference Protocol /infer route
# against a bare net/http handler calling the same GBDT (100 trees, depth
# 6), driven by wrk, in one run and one table (see
# services/deployer/cmd/servebench). Arguments go to servebench, e.g.
#   scripts/bench-serving.sh --duration 10s --connections 1,8,64,256
# Installs wrk (Debian) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
	sudo=()
	if [[ $(id -u) -ne 0 ]]; then
		sudo=(sudo)
	fi
	echo "bench-serving: installing wrk" >&2
	if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk; then
		"${sudo[@]}" apt-get update -q
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk
	fi
fi

# Many connections need many descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

go build -o "${TMPDIR:-/tmp}/servebench" ./services/deployer/cmd/servebench
exec "${TMPDIR:-/tmp}/servebench" "$@"
