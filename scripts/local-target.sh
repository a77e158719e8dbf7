#!/usr/bin/env bash
# The throwaway local "VM" for `make up`: Molecule's `local` scenario creates and prepares
# it from the one platform definition the tests use (.config/molecule/config.yml), with
# its ports 8080 and 8443 published on fixed loopback ports.
#
#   scripts/local-target.sh up|down|name
#
# PRODSTACK_LOCAL_TARGET (name prefix, default prodstack), PRODSTACK_LOCAL_PORT (8080) and
# PRODSTACK_LOCAL_TLS_PORT (8443) let another caller (the bench) make its own target; the
# container is named PREFIX-local-bookworm and Molecule keeps its state in
# .cache/molecule/<that name>.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
export PRODSTACK_TARGET=${PRODSTACK_LOCAL_TARGET:-prodstack}
export PRODSTACK_DEBIAN=bookworm
port=${PRODSTACK_LOCAL_PORT:-8080}
tls_port=${PRODSTACK_LOCAL_TLS_PORT:-8443}
export PRODSTACK_PUBLISH_HTTP=127.0.0.1:$port:8080/tcp PRODSTACK_PUBLISH_HTTPS=127.0.0.1:$tls_port:8443/tcp
name=$PRODSTACK_TARGET-local-$PRODSTACK_DEBIAN
export MOLECULE_EPHEMERAL_DIRECTORY=$here/.cache/molecule/$name
export PATH=$here/.venv/bin:$PATH
cd "$here"

case ${1:-} in
  up)
    if [ "$(docker inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" = true ]; then
      exit 0
    fi
    molecule destroy -s local >/dev/null 2>&1 || true  # a stopped leftover or stale state
    for p in "$port" "$tls_port"; do
      if ss -Htln "sport = :$p" | grep -q .; then
        echo "local-target: 127.0.0.1:$p is in use; set PRODSTACK_LOCAL_PORT / PRODSTACK_LOCAL_TLS_PORT" >&2
        exit 1
      fi
    done
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    if ! molecule create -s local >"$log" 2>&1; then
      cat "$log" >&2
      echo "local-target: creating $name failed" >&2
      exit 1
    fi
    ;;
  down)
    molecule destroy -s local >/dev/null 2>&1 || true
    docker rm -fv "$name" >/dev/null 2>&1 || true
    ;;
  name)
    echo "$name"
    ;;
  *)
    echo "usage: $0 up|down|name" >&2
    exit 2
    ;;
esac
