#!/usr/bin/env bash
# Installs the Debian packages the tests and builds use on the controller, when missing:
# debootstrap (offline base image), rsync, real redis-server and PostgreSQL for the app's
# tests (started by the tests themselves on loopback), wrk for load, shellcheck for
# `make lint`, pebble (the ACME test CA the certificate cases run on the machine),
# docker-registry (a TLS registry with htpasswd auth, for the app's registry pull test).
# With arguments, those packages instead (scripts/vm uses it for QEMU and the disk tools).
set -euo pipefail
want=(debootstrap rsync redis-server postgresql wrk curl shellcheck pebble docker-registry)
(($#)) && want=("$@")
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "ensure-packages: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null
fi
