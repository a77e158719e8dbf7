#!/usr/bin/env bash
# The throwaway local "VM" for `make up`: a systemd container from the Molecule target
# image, with the same flags Molecule uses (molecule/default/molecule.yml), its ports 8080
# and 8443 published on the machine's loopback.
#
#   scripts/local-target.sh up|down
set -euo pipefail
name=${PRODSTACK_LOCAL_TARGET:-prodstack-local}
port=${PRODSTACK_LOCAL_PORT:-8080}
tls_port=${PRODSTACK_LOCAL_TLS_PORT:-8443}
image=prodstack/molecule-target:bookworm

case ${1:-} in
  up)
    if [ "$(docker inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" = true ]; then
      exit 0
    fi
    docker rm -fv "$name" >/dev/null 2>&1 || true
    for p in "$port" "$tls_port"; do
      if ss -Htln "sport = :$p" | grep -q .; then
        echo "local-target: 127.0.0.1:$p is in use; set PRODSTACK_LOCAL_PORT / PRODSTACK_LOCAL_TLS_PORT" >&2
        exit 1
      fi
    done
    docker run -d --name "$name" --hostname "$name" \
      --cap-add SYS_ADMIN --cap-add NET_ADMIN --cap-add SYS_PTRACE \
      --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
      --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw -v /var/lib/docker \
      --tmpfs /run --tmpfs /run/lock --stop-signal SIGRTMIN+3 \
      -p "127.0.0.1:$port:8080" -p "127.0.0.1:$tls_port:8443" "$image" /lib/systemd/systemd >/dev/null
    # A fresh target has empty apt lists, as the Molecule prepare step knows too.
    for _ in $(seq 1 30); do
      docker exec "$name" systemctl is-system-running 2>/dev/null | grep -Eq 'running|degraded' && break
      sleep 1
    done
    docker exec "$name" apt-get update -qq
    ;;
  down)
    docker rm -fv "$name" >/dev/null 2>&1 || true
    ;;
  *)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
