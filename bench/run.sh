#!/usr/bin/env bash
# `make bench`: the benchmark in one run (see bench/__init__.py for what it measures).
# Prints the tables and writes out/PERFORMANCE.md and its chart out/performance.png (`make docs`
# copies both to docs/). Takes 10 to 15 minutes.
#   BENCH_DURATION=15  seconds per wrk row        BENCH_KEEP=1  keep the target afterwards
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export ANSIBLE_CONFIG=$here/ansible.cfg
make --no-print-directory venv        # also when requirements-dev.txt changed (matplotlib for the chart)
export PATH=$here/.venv/bin:$PATH
scripts/ensure-docker.sh
scripts/ensure-packages.sh            # wrk, curl among them
scripts/build-target-image.sh bookworm >/dev/null
exec python3 -m bench "$@"
