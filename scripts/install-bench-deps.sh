#!/usr/bin/env bash
# Installs the benchmark and test peers from Debian when they are missing:
#   python3-sklearn, python3-xgboost  (make bench-ml: scripts/bench_ml.py)
#   wrk                               (HTTP load for the serving benchmark)
#   python3-torch                     (examples/torch/train.py, tests/torch_test.go)
#   prometheus                        (its promtool checks infra/prometheus/:
#                                      tests/prometheus_test.go)
#   chromium                          (the browser tests/dashboard_test.go drives)
# and, not from Debian, which has no package of it:
#   grpcurl                           (the gRPC peer of services/deployer/grpcurl_test.go),
#                                     `go install`ed at the version pinned below into
#                                     $(go env GOPATH)/bin (or GOBIN), where the test looks
# With package names as arguments (install-bench-deps.sh python3-sklearn wrk)
# only those are checked, so a benchmark does not pull in the others.
# Idempotent: when everything is there it changes nothing and prints nothing.
# Runs apt-get as root, or through sudo when not root. The checks use
# /usr/bin/python3, the interpreter the Debian packages install into (a
# pyenv or venv python3 earlier on PATH would not see them).
set -euo pipefail

# grpcurl, a Go program: built from its module at a pinned version.
grpcurl_version="v1.9.4"
# wants NAME ARGS...: whether NAME is among ARGS.
wants() {
	local a
	for a in "${@:2}"; do [[ $a == "$1" ]] && return 0; done
	return 1
}
if [[ $# -eq 0 ]] || wants grpcurl "$@"; then
	gobin="$(go env GOBIN 2>/dev/null || true)"
	[[ -n $gobin ]] || gobin="$(go env GOPATH 2>/dev/null | cut -d: -f1)/bin"
	if ! command -v grpcurl >/dev/null 2>&1 && [[ ! -x $gobin/grpcurl ]]; then
		echo "install-bench-deps: installing grpcurl $grpcurl_version (go install) into $gobin" >&2
		GOWORK=off go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$grpcurl_version"
	fi
fi

missing=()
if [[ ! -x /usr/bin/python3 ]]; then
	missing+=(python3)
fi
/usr/bin/python3 -c 'import sklearn' 2>/dev/null || missing+=(python3-sklearn)
/usr/bin/python3 -c 'import xgboost' 2>/dev/null || missing+=(python3-xgboost)
/usr/bin/python3 -c 'import torch' 2>/dev/null || missing+=(python3-torch)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)

if [[ $# -gt 0 ]]; then
	wanted=()
	for m in "${missing[@]}"; do
		for a in python3 "$@"; do
			if [[ $m == "$a" ]]; then
				wanted+=("$m")
				break
			fi
		done
	done
	missing=("${wanted[@]}")
fi

if [[ ${#missing[@]} -eq 0 ]]; then
	exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
	if ! command -v sudo >/dev/null 2>&1; then
		echo "install-bench-deps: missing ${missing[*]}; run as root or install sudo" >&2
		exit 1
	fi
	sudo=(sudo)
fi

echo "install-bench-deps: installing ${missing[*]}" >&2
install() {
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}
# The package lists may be stale or absent (a fresh container): update
# them only when the first attempt fails.
if ! install; then
	"${sudo[@]}" apt-get update
	install
fi
