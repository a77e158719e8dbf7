#!/usr/bin/env bash
# The VM scenario (molecule/vm) in two sizes; every VM is destroyed on exit, failed or not.
#
#   scripts/vm/molecule-vm.sh smoke   (make molecule-vm, in make test) Debian 12 disk with
#       docker.io baked in: create, converge, the verify subset SMOKE below (one real reboot,
#       a 90 s steady-state window after it), destroy
#   scripts/vm/molecule-vm.sh full    (make molecule-vm-full, in make test-full) the whole
#       sequence with idempotence and every test on that disk (three reboots: at rest, right
#       after a cut watchdog restart, in the middle of a release); then a disk without
#       docker.io (the role installs it, as on a user's VM) and Debian 13, each converged and
#       verified with the subset SMOKE
# Phase durations are appended to .cache/vm/timings.log.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
export PATH=$here/.venv/bin:$PATH
cd "$here"
# The subset: the stack's own tests, the network isolation tests, the VM-only checks
# (AppArmor, cgroup v2, listeners, firewall) and one reboot at rest with its steady-state
# window after the boot. Left for the full run: the check-mode converge and the secret scan
# of every image layer (each several minutes under TCG), the steady-state window before the
# reboot (the one after it watches the same services on the same VM, just booted), and the
# two reboots in the middle of something (a cut watchdog restart, a release), which the
# container target's cases 15 and 23 prove in make test.
SMOKE='test_stack or backend or nginx_reachable or apparmor or cgroup or exposes_only or reboot_brings'
run=${PRODSTACK_RUN_ID:-v$(date +%s)$$}

timed() {
  local what=$1 start
  shift
  start=$(date +%s)
  "$@"
  echo "$(date -u +%FT%TZ) ${PRODSTACK_RUN_ID:-} ${VM_SUITE:-bookworm} docker=${VM_DOCKER:-1} $what $(($(date +%s) - start))" >>.cache/vm/timings.log
}

# One Molecule run of scenario vm on one disk: create, converge, verify with the subset,
# destroy (also when a step fails: the subshell's EXIT trap).
#   subset RUN_ID SUITE DOCKER
subset() (
  export PRODSTACK_RUN_ID=$1 VM_SUITE=$2 VM_DOCKER=$3
  trap 'molecule destroy -s vm >/dev/null 2>&1 || true' EXIT
  timed create molecule create -s vm
  timed converge molecule converge -s vm
  PRODSTACK_VM_VERIFY=$SMOKE timed verify molecule verify -s vm
)

mkdir -p .cache/vm
case ${1:-smoke} in
  smoke)
    export PRODSTACK_VM_STEADY_SECONDS=${PRODSTACK_VM_STEADY_SECONDS:-90}
    subset "$run" bookworm 1
    ;;
  full)
    export PRODSTACK_VM_STEADY_SECONDS=${PRODSTACK_VM_STEADY_SECONDS:-150}
    # molecule test destroys the VM itself, after a failure too.
    PRODSTACK_RUN_ID=${run}a VM_SUITE=bookworm VM_DOCKER=1 timed test molecule test -s vm
    subset "${run}b" bookworm 0
    subset "${run}c" trixie 1
    ;;
  *) sed -n '4,11p' "$0" >&2; exit 2 ;;
esac
