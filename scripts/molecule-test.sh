#!/usr/bin/env bash
# Runs `molecule test` for a scenario, once per Debian release, with a per-run target name
# so leftovers of an earlier or interrupted run, or a run beside it, can never collide.
# The tests read the published ports back with `docker port`.
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
# Fixed loopback ports, picked free for this run: Docker gives an ephemeral published port
# (127.0.0.1::8080) a new number at every start of the container, and the failure tests
# restart the target (a reboot) and must find the stack where it was.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
for release in "${releases[@]}"; do
  PRODSTACK_PUBLISH_HTTP=${PRODSTACK_PUBLISH_HTTP_FIXED:-127.0.0.1:$(free_port):8080/tcp}
  PRODSTACK_PUBLISH_HTTPS=${PRODSTACK_PUBLISH_HTTPS_FIXED:-127.0.0.1:$(free_port):8443/tcp}
  export PRODSTACK_PUBLISH_HTTP PRODSTACK_PUBLISH_HTTPS
  echo "molecule: scenario $scenario on $release, target $PRODSTACK_TARGET-$scenario-$release"
  start=$(date +%s)
  PRODSTACK_DEBIAN=$release molecule test -s "$scenario"
  echo "molecule: scenario $scenario on $release passed in $(($(date +%s) - start))s"
done
