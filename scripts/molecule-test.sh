#!/usr/bin/env bash
# Runs `molecule test` for a scenario with per-run target names and free loopback ports
# so leftovers of an earlier or interrupted run, or a run beside it, can never collide.
#
#   scripts/molecule-test.sh [SCENARIO]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
scenario=${1:-default}
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PRODSTACK_RUN_ID=${PRODSTACK_RUN_ID:-m$(date +%s)$$}
PRODSTACK_PORT_BOOKWORM=${PRODSTACK_PORT_BOOKWORM:-$(free_port)}
PRODSTACK_PORT_TRIXIE=${PRODSTACK_PORT_TRIXIE:-$(free_port)}
PRODSTACK_TLS_PORT_BOOKWORM=${PRODSTACK_TLS_PORT_BOOKWORM:-$(free_port)}
PRODSTACK_TLS_PORT_TRIXIE=${PRODSTACK_TLS_PORT_TRIXIE:-$(free_port)}
PRODSTACK_PORT_RES=${PRODSTACK_PORT_RES:-$(free_port)}
PRODSTACK_TLS_PORT_RES=${PRODSTACK_TLS_PORT_RES:-$(free_port)}
export PRODSTACK_RUN_ID PRODSTACK_PORT_BOOKWORM PRODSTACK_PORT_TRIXIE PRODSTACK_TLS_PORT_BOOKWORM \
  PRODSTACK_TLS_PORT_TRIXIE PRODSTACK_PORT_RES PRODSTACK_TLS_PORT_RES
export PATH=$here/.venv/bin:$PATH
cd "$here"
echo "molecule: scenario $scenario, run $PRODSTACK_RUN_ID, ports bookworm=$PRODSTACK_PORT_BOOKWORM trixie=$PRODSTACK_PORT_TRIXIE"
exec molecule test -s "$scenario"
