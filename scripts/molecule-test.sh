#!/usr/bin/env bash
# Runs `molecule test` for a scenario, once per Debian release, with a per-run target name
# so leftovers of an earlier or interrupted run, or a run beside it, can never collide.
# Docker picks the published ports; the tests read them back.
#
#   scripts/molecule-test.sh [SCENARIO] [RELEASE...]     (default: default bookworm)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
scenario=${1:-default}
shift || true
releases=("${@:-bookworm}")
PRODSTACK_RUN_ID=${PRODSTACK_RUN_ID:-m$(date +%s)$$}
export PRODSTACK_RUN_ID PRODSTACK_TARGET=prodstack-$PRODSTACK_RUN_ID
export PATH=$here/.venv/bin:$PATH
cd "$here"
for release in "${releases[@]}"; do
  echo "molecule: scenario $scenario on $release, target $PRODSTACK_TARGET-$scenario-$release"
  start=$(date +%s)
  PRODSTACK_DEBIAN=$release molecule test -s "$scenario"
  echo "molecule: scenario $scenario on $release passed in $(($(date +%s) - start))s"
done
