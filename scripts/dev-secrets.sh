#!/usr/bin/env bash
# dev-secrets.sh makes, once, what the Kubernetes manifests mount and an
# operator would create by hand (docs/deploy.md, "Secrets"), for the dev
# overlay on a local cluster; the Tiltfile runs it before the services:
#
#   gyre-signing-key   (Secret)     the registry's signing key
#   gyre-verify-keys   (ConfigMap)  its public key, for the deployers
#   gyre-http-tokens   (Secret)     the HTTP token file
#   gyre-nats-auth     (Secret)     auth.conf: NATS's nkey users and their
#                                   permissions, which nats.conf includes
#   gyre-nats-seeds    (Secret)     <service>.nk: each service's nkey seed;
#                                   a Deployment mounts its own key only
#
# The files stay in .gyre/dev (git-ignored): admin.token there is the
# admin bearer token for curl and the CLI (GYRE_TOKEN=$(cat .gyre/dev/admin.token)),
# and nats/admin.nk the admin's NATS seed, for the CLI through Tilt's port
# forward (nats://127.0.0.1:4222). The admin's and the reader's seeds are for
# people and tools outside the cluster: no pod runs as either, so they stay
# out of gyre-nats-seeds.
#
# Run it again at will: existing keys, tokens and seeds are kept (`gyre auth
# config` reuses the seeds in its directory), and the objects are updated in
# place. After a new auth.conf, restart NATS (kubectl -n gyre rollout restart
# statefulset nats) for it to take the users.
set -euo pipefail
cd "$(dirname "$0")/.."
ns="${GYRE_NAMESPACE:-gyre}"
dir=.gyre/dev
mkdir -p "$dir"
chmod 700 "$dir"
gyre() { go run ./cmd/gyre "$@"; }
[ -f "$dir/signing.key" ] || gyre auth signing-key --dir "$dir"
if [ ! -s "$dir/admin.token" ]; then
	gyre auth token create --file "$dir/tokens.json" --name dev-admin --scopes admin >"$dir/admin.token"
	chmod 600 "$dir/admin.token"
fi
kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns"
apply() { kubectl -n "$ns" "$@" --dry-run=client -o yaml | kubectl -n "$ns" apply -f -; }
apply create secret generic gyre-signing-key --from-file=signing.key="$dir/signing.key"
apply create configmap gyre-verify-keys --from-file=signing.pub="$dir/signing.pub"
apply create secret generic gyre-http-tokens --from-file=tokens.json="$dir/tokens.json"

# NATS: one seed per identity (made once, then reused) and the server's users.
mkdir -p "$dir/nats"
chmod 700 "$dir/nats"
gyre auth config --dir "$dir/nats" --out "$dir/nats/auth.conf"
apply create secret generic gyre-nats-auth --from-file=auth.conf="$dir/nats/auth.conf"
seeds=()
shopt -s nullglob
for seed in "$dir"/nats/*.nk; do
	id="$(basename "$seed" .nk)"
	case "$id" in
	admin | reader | producer*) continue ;; # no pod runs as these (above)
	esac
	seeds+=(--from-file="$id.nk=$seed")
done
if [ "${#seeds[@]}" -eq 0 ]; then
	echo "dev-secrets: gyre auth config wrote no seed to $dir/nats" >&2
	exit 1
fi
apply create secret generic gyre-nats-seeds "${seeds[@]}"
echo "dev secrets in namespace $ns; admin token in $dir/admin.token, admin NATS seed in $dir/nats/admin.nk"
