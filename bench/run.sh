#!/usr/bin/env bash
# `make bench`: the issue-5 benchmark in one run (see bench/__init__.py for what it measures).
# Prints the table and writes out/PERFORMANCE.md (`make docs` copies it to docs/). Takes about 10 minutes.
#   BENCH_DURATION=15  seconds per wrk row        BENCH_KEEP=1  keep the target afterwards
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export ANSIBLE_CONFIG=$here/ansible.cfg
[ -x .venv/bin/ansible-playbook ] || make --no-print-directory venv
export PATH=$here/.venv/bin:$PATH
scripts/ensure-docker.sh
scripts/ensure-packages.sh            # wrk, curl among them
scripts/build-target-image.sh bookworm >/dev/null
PYTHON=$here/.venv/bin/python roles/stack_images/files/download-wheels.sh app   # the baseline image uses the same wheels
exec python3 -m bench "$@"
