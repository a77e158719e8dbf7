#!/usr/bin/env bash
# Builds the throwaway "VM" image Molecule boots as its target:
#
#   scripts/build-target-image.sh SUITE [IMAGE]
#
# SUITE is a Debian suite (bookworm, trixie). The base prodstack/debian:SUITE is ensured
# first via the stack_images role's build-base-image.sh (made offline when absent), then
# molecule/resources/target/Dockerfile is built on top of it as IMAGE (default
# prodstack/molecule-target:SUITE). No registry is reachable: nothing is pulled.
# Idempotent: an unchanged Dockerfile and base are served from the build cache.
# With DEPLOY_AUTHORIZED_KEY set (one public key line) that key is baked into
# /home/deploy/.ssh/authorized_keys; without it the file is left empty for the SSH
# scenario to fill at create time (preferred: no key in a shared image).
set -euo pipefail

suite=${1:?usage: build-target-image.sh SUITE [IMAGE]}
image=${2:-prodstack/molecule-target:$suite}
here=$(cd "$(dirname "$0")/.." && pwd)
base=prodstack/debian:$suite
context=$here/molecule/resources/target
build_args=(--build-arg "BASE_IMAGE=$base")
if [ -n "${DEPLOY_AUTHORIZED_KEY:-}" ]; then
  build_args+=(--build-arg "DEPLOY_AUTHORIZED_KEY=$DEPLOY_AUTHORIZED_KEY")
fi

"$here/roles/stack_images/files/build-base-image.sh" "$suite" "$base" >/dev/null

# The legacy builder (Debian's engine 20.10 has no buildx); its deprecation notice is
# shown only when the build fails, together with the build log.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! DOCKER_BUILDKIT=0 docker build --quiet --pull=false \
  "${build_args[@]}" \
  --label "org.prodstack.base-image=$(docker image inspect --format '{{.Id}}' "$base")" \
  --tag "$image" \
  "$context" >"$log" 2>&1; then
  cat "$log" >&2
  echo "build-target-image: building $image from $base failed" >&2
  exit 1
fi
docker image inspect --format '{{.Id}}' "$image"
