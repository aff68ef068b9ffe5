#!/usr/bin/env bash
# generate.sh regenerates the Go code of the event payloads from the .proto
# sources in schemas/ into events/gyrev1/ (package gyrev1), and the Open
# Inference Protocol's gRPC service (KServe's grpc_predict_v2.proto, kept
# verbatim in services/deployer/oipgrpc/) into services/deployer/oipgrpc/.
#
#   bash scripts/generate.sh          # writes events/gyrev1/*.pb.go, events/proto/gyre/v1/*.proto,
#                                     # libs/pipeline/schema.json and services/deployer/oipgrpc/*.pb.go
#   bash scripts/generate.sh DIR      # writes DIR/*.pb.go, DIR/proto/gyre/v1/*.proto,
#                                     # DIR/schema.json and DIR/oipgrpc/*.pb.go instead (check-generated.sh)
#
# The pipeline spec's JSON Schema (schemas/pipeline/v1.schema.json, the source
# of truth) and the payloads' .proto files are copied next to the Go packages
# that embed them (libs/pipeline; events, whose schema handler serves them),
# since go:embed cannot reach outside its module. The copies are verbatim,
# file by file, with mode 0644, so they are the same on every machine.
#
# Tools: protoc from Debian's protobuf-compiler package (installed with apt-get
# when missing) and protoc-gen-go at the version pinned by the `tool` directive
# of events/go.mod, run through `go tool` with the events module alone
# (GOWORK=off) so that no other module of the workspace can change its version.
# The OIP service's code is made the same way with the plugins the deployer's
# module pins (services/deployer/go.mod: `tool` protoc-gen-go and
# protoc-gen-go-grpc), the module that owns it.
#
# The output is deterministic: files are generated into a scratch directory and
# then replace the destination's *.pb.go (stale ones removed). The one line
# that depends on the local protoc build, the "// protoc vX.Y.Z" version in
# each file's header, is normalised to "(unknown)" (what protoc-gen-go writes
# when protoc reports no version) so that machines with different protoc
# releases agree byte for byte (protoc-gen-go-grpc's "// - protoc vX.Y.Z" line
# likewise); the generated code itself does not depend on the protoc release
# for proto3 sources.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$root/events/gyrev1}"
schema_dest="${1:-$root/libs/pipeline}"
proto_dest="${1:-$root/events}/proto"
module="github.com/gyrehq/gyre/events"

if ! command -v protoc >/dev/null 2>&1; then
	echo "generate: protoc missing; installing Debian's protobuf-compiler" >&2
	sudo=""
	if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
	$sudo apt-get update -qq
	$sudo apt-get install -y -qq protobuf-compiler libprotobuf-dev >/dev/null
fi

# Well-known types (google/protobuf/struct.proto): next to protoc's prefix
# (Debian's libprotobuf-dev puts them in /usr/include).
wkt=""
for dir in "$(dirname "$(dirname "$(command -v protoc)")")/include" /usr/include /usr/local/include; do
	if [ -f "$dir/google/protobuf/struct.proto" ]; then
		wkt="$dir"
		break
	fi
done
if [ -z "$wkt" ]; then
	echo "generate: google/protobuf/struct.proto not found; install libprotobuf-dev" >&2
	exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# protoc-gen-go at the version of events/go.mod's tool directive: `go tool -n`
# builds it into the build cache (once) and prints its path; fall back to an
# explicit build where that path is not runnable.
plugin="$(cd "$root/events" && GOWORK=off GOFLAGS=-mod=readonly go tool -n protoc-gen-go)"
if [ ! -x "$plugin" ]; then
	plugin="$work/bin/protoc-gen-go"
	(cd "$root/events" && GOWORK=off GOFLAGS=-mod=readonly go build -o "$plugin" google.golang.org/protobuf/cmd/protoc-gen-go)
fi

mkdir -p "$work/out"
# Sorted, relative paths: the generated descriptors name files as
# "gyre/v1/<file>.proto", whatever the checkout's location.
mapfile -t protos < <(cd "$root/schemas" && LC_ALL=C find gyre -name '*.proto' | LC_ALL=C sort)
if [ "${#protos[@]}" -eq 0 ]; then
	echo "generate: no .proto files under schemas/" >&2
	exit 1
fi
(cd "$root/schemas" && protoc \
	--plugin=protoc-gen-go="$plugin" \
	-I . -I "$wkt" \
	--go_out="$work/out" --go_opt=module="$module" \
	"${protos[@]}")

gen="$work/out/gyrev1"
shopt -s nullglob
files=("$gen"/*.pb.go)
if [ "${#files[@]}" -eq 0 ]; then
	echo "generate: protoc wrote nothing to $gen (check go_package)" >&2
	exit 1
fi
for f in "${files[@]}"; do
	sed -i -E 's|^// \tprotoc +v?[0-9][^ ]*$|// \tprotoc        (unknown)|' "$f"
done

mkdir -p "$dest"
rm -f "$dest"/*.pb.go
cp "${files[@]}" "$dest"/
echo "generate: wrote ${#files[@]} files to ${dest#"$root"/}"

mkdir -p "$schema_dest"
cp "$root/schemas/pipeline/v1.schema.json" "$schema_dest/schema.json"
echo "generate: wrote ${schema_dest#"$root"/}/schema.json"

# The .proto sources, for events.SchemaHandler: stale copies are removed
# first, so a deleted or renamed source does not linger.
rm -rf "$proto_dest/gyre"
for f in "${protos[@]}"; do
	mkdir -p "$proto_dest/$(dirname "$f")"
	install -m 0644 "$root/schemas/$f" "$proto_dest/$f"
done
echo "generate: wrote ${#protos[@]} .proto files to ${proto_dest#"$root"/}/gyre"

# The Open Inference Protocol v2 gRPC service: KServe's grpc_predict_v2.proto,
# verbatim (it names no go_package: the import path is given with M), into
# package oipgrpc, with the plugins of the deployer's module.
oip_src="$root/services/deployer/oipgrpc"
oip_dest="$oip_src"
if [ -n "${1:-}" ]; then oip_dest="$1/oipgrpc"; fi
oip_pkg="github.com/gyrehq/gyre/services/deployer/oipgrpc;oipgrpc"
plugin_tool() {
	local p
	p="$(cd "$root/services/deployer" && GOWORK=off GOFLAGS=-mod=readonly go tool -n "$1")"
	if [ ! -x "$p" ]; then
		p="$work/bin/$1"
		(cd "$root/services/deployer" && GOWORK=off GOFLAGS=-mod=readonly go build -o "$p" "$2")
	fi
	echo "$p"
}
oip_go="$(plugin_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go)"
oip_grpc="$(plugin_tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc)"
mkdir -p "$work/oip"
(cd "$oip_src" && protoc \
	--plugin=protoc-gen-go="$oip_go" --plugin=protoc-gen-go-grpc="$oip_grpc" \
	-I . \
	--go_out="$work/oip" --go_opt=paths=source_relative --go_opt=Mgrpc_predict_v2.proto="$oip_pkg" \
	--go-grpc_out="$work/oip" --go-grpc_opt=paths=source_relative --go-grpc_opt=Mgrpc_predict_v2.proto="$oip_pkg" \
	grpc_predict_v2.proto)
oip_files=("$work/oip"/*.pb.go)
if [ "${#oip_files[@]}" -ne 2 ]; then
	echo "generate: protoc wrote ${#oip_files[@]} files for grpc_predict_v2.proto, want 2" >&2
	exit 1
fi
for f in "${oip_files[@]}"; do
	sed -i -E -e 's|^// \tprotoc +v?[0-9][^ ]*$|// \tprotoc        (unknown)|' \
		-e 's|^// - protoc +v?[0-9][^ ]*$|// - protoc             (unknown)|' "$f"
done
mkdir -p "$oip_dest"
rm -f "$oip_dest"/*.pb.go
cp "${oip_files[@]}" "$oip_dest"/
echo "generate: wrote ${#oip_files[@]} files to ${oip_dest#"$root"/}"
