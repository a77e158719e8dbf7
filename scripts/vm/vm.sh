#!/usr/bin/env bash
# Boots, reaches and removes throwaway Debian VMs under QEMU (TCG: KVM hangs on these
# machines). Each VM runs on a copy-on-write qcow2 overlay of a cached disk
# (scripts/vm/build-disk.sh), so the cached disk stays clean; its state (overlay, pid file,
# serial log, forwarded ports) lives in .cache/vm/run/NAME and `down` removes all of it.
#
#   scripts/vm/vm.sh up NAME         build the disk if needed, boot, wait for SSH
#   scripts/vm/vm.sh down NAME       stop QEMU, remove the overlay (safe to repeat)
#   scripts/vm/vm.sh port NAME 8080  the machine's address of the VM's port (like docker port)
#   scripts/vm/vm.sh ssh NAME [CMD]  ssh as deploy
#   scripts/vm/vm.sh inventory NAME DIR   write an inventory shaped like inventory/example
#   scripts/vm/vm.sh info NAME       the VM's facts (key, ports, disk) as JSON
# VM_SUITE, VM_DOCKER pick the disk (see build-disk.sh); VM_MEMORY, VM_CPUS size the VM.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
runs=$here/.cache/vm/run
ssh_opts=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
  -o ConnectTimeout=10 -o BatchMode=yes)

usage() { sed -n '7,13p' "$0" >&2; exit 2; }
state_of() {
  [[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || { echo "vm: bad name '$1'" >&2; exit 2; }
  echo "$runs/$1"
}
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
load() {
  local dir=$1
  [[ -f $dir/vm.env ]] || { echo "vm: no VM '$(basename "$dir")' (run: $0 up NAME)" >&2; exit 1; }
  # shellcheck source=/dev/null
  source "$dir/vm.env"
}
# The pid in the pid file is QEMU only if its command line names this VM's overlay: a stale
# pid file never kills an unrelated process.
qemu_pid() {
  local dir=$1 pid
  [[ -f $dir/qemu.pid ]] || return 1
  pid=$(cat "$dir/qemu.pid")
  [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$dir/overlay.qcow2" \
    && echo "$pid"
}

down() {
  local dir pid i
  dir=$(state_of "$1")
  if pid=$(qemu_pid "$dir"); then
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}

wait_ssh() {
  local dir=$1 deadline=$2
  load "$dir"
  until ssh "${ssh_opts[@]}" -i "$VM_KEY" -p "$VM_SSH_PORT" deploy@127.0.0.1 true 2>/dev/null; do
    qemu_pid "$dir" >/dev/null || { echo "vm: QEMU exited; serial log:" >&2; tail -30 "$dir/serial.log" >&2; return 1; }
    (($(date +%s) < deadline)) || { echo "vm: no SSH before the deadline; serial log:" >&2; tail -30 "$dir/serial.log" >&2; return 1; }
    sleep 3
  done
}

up() {
  local name=$1 dir disk start ssh_port http_port https_port
  dir=$(state_of "$name")
  "$here/scripts/ensure-packages.sh" qemu-system-x86 qemu-utils openssh-client
  disk=$("$here/scripts/vm/build-disk.sh")
  if qemu_pid "$dir" >/dev/null; then
    echo "vm: $name is already running" >&2
    return 0
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  # Any failure or interruption from here on removes the half-started VM.
  trap 'down "$name"' EXIT
  trap 'exit 1' INT TERM
  start=$(date +%s)
  qemu-img create -q -f qcow2 -b "$disk/disk.raw" -F raw "$dir/overlay.qcow2"
  ssh_port=$(free_port)
  http_port=$(free_port)
  https_port=$(free_port)
  cat >"$dir/vm.env" <<VARS
VM_NAME=$name
VM_SUITE=${VM_SUITE:-bookworm}
VM_DISK=$disk
VM_KEY=$disk/id_ed25519
VM_SSH_PORT=$ssh_port
VM_HTTP_PORT=$http_port
VM_HTTPS_PORT=$https_port
VARS
  qemu-system-x86_64 -name "prodstack-$name" \
    -machine q35,accel=tcg -cpu max -smp "${VM_CPUS:-2}" -m "${VM_MEMORY:-4096}" \
    -kernel "$disk/vmlinuz" -initrd "$disk/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 net.ifnames=0" \
    -drive "file=$dir/overlay.qcow2,if=virtio,format=qcow2,discard=unmap" \
    -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$ssh_port-:22,hostfwd=tcp:127.0.0.1:$http_port-:8080,hostfwd=tcp:127.0.0.1:$https_port-:8443" \
    -device virtio-net-pci,netdev=net0 \
    -display none -serial "file:$dir/serial.log" -monitor none \
    -daemonize -pidfile "$dir/qemu.pid"
  wait_ssh "$dir" $((start + ${VM_BOOT_TIMEOUT:-600}))
  trap - EXIT INT TERM
  echo "VM_BOOT_SECONDS=$(($(date +%s) - start))" >>"$dir/vm.env"
  echo "vm: $name answers SSH on 127.0.0.1:$ssh_port after $(($(date +%s) - start)) s" >&2
}

inventory() {
  local name=$1 out=$2 dir
  # Before anything is written: the group_vars below need the project's venv (PyYAML comes
  # with ansible-core there; `make vm` makes it first).
  if [[ ! -x $here/.venv/bin/python3 ]]; then
    echo "vm: writing the inventory needs the project's venv ($here/.venv/bin/python3 is missing): run make venv-deploy" >&2
    exit 1
  fi
  dir=$(state_of "$name")
  load "$dir"
  mkdir -p "$out"
  cat >"$out/hosts.yml" <<YAML
---
# Written by scripts/vm/vm.sh for the VM $name (shaped like inventory/example).
prodstack:
  hosts:
    $name:
      ansible_host: 127.0.0.1
      ansible_port: $VM_SSH_PORT
      ansible_ssh_private_key_file: $VM_KEY
      # A throwaway VM with a fresh overlay each boot: no host key to pin (the variable
      # for Mitogen, which does not read ssh's own options for this).
      ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
      ansible_host_key_checking: false
  vars:
    ansible_user: deploy
    ansible_become: true
    ansible_python_interpreter: /usr/bin/python3
    # QEMU forwards the VM's 8080 and 8443 to the machine's loopback.
    nginx_published_port: 8080
YAML
  # The VM runs on an emulated CPU (TCG), where the roles' defaults, sized for real CPUs,
  # fail the first release's health gate (the checks themselves take the CPU). The settings
  # for it have one home, the VM scenario's group_vars (molecule/vm/molecule.yml, where each
  # is measured); the stack's ones (role-prefixed, not the connection or test variables)
  # are copied from there.
  mkdir -p "$out/group_vars"
  "$here/.venv/bin/python3" - "$here/molecule/vm/molecule.yml" >"$out/group_vars/prodstack.yml" <<'PY'
import re
import sys

import yaml

scenario = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
group = scenario["provisioner"]["inventory"]["group_vars"]["prodstack"]
stack = re.compile(r"^(app|nginx|redis|postgres|stack_watchdog)_")
chosen = {k: v for k, v in group.items() if stack.match(k) and k != "nginx_published_port"}
if not chosen:
    sys.exit(f"vm: no emulated-CPU settings found in {sys.argv[1]}")
print("---\n# Written by scripts/vm/vm.sh: the VM scenario's settings for an emulated CPU")
print("# (molecule/vm/molecule.yml says why each is needed).")
print(yaml.safe_dump(chosen, sort_keys=False), end="")
PY
}

cmd=${1:-}
[[ -n $cmd && -n ${2:-} ]] || usage
name=$2
case $cmd in
  up) up "$name" ;;
  down) down "$name" ;;
  port)
    load "$(state_of "$name")"
    case ${3%/tcp} in
      22) echo "127.0.0.1:$VM_SSH_PORT" ;;
      8080) echo "127.0.0.1:$VM_HTTP_PORT" ;;
      8443) echo "127.0.0.1:$VM_HTTPS_PORT" ;;
      *) echo "vm: port ${3:-} is not forwarded" >&2; exit 1 ;;
    esac
    ;;
  ssh)
    load "$(state_of "$name")"
    shift 2
    exec ssh "${ssh_opts[@]}" -i "$VM_KEY" -p "$VM_SSH_PORT" deploy@127.0.0.1 "$@"
    ;;
  inventory) [[ -n ${3:-} ]] || usage; inventory "$name" "$3" ;;
  info)
    load "$(state_of "$name")"
    python3 -c 'import json, sys; print(json.dumps(dict(l.split("=", 1) for l in sys.stdin.read().split())))' \
      <"$(state_of "$name")/vm.env"
    ;;
  *) usage ;;
esac
