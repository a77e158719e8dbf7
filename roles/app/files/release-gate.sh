#!/bin/sh
# The health gate of a new app release (run on the host through `sh -c`):
#   release-gate.sh CONTAINER PROBE_CONTAINER PORT TIMEOUT SUCCESSES [HEALTHCHECK ARGV...]
# Passes when GET /health answers SUCCESSES times in a row, probed from inside PROBE_CONTAINER
# (NGINX: the host cannot reach the backend network) or, before NGINX exists, by running the
# release's own healthcheck (HEALTHCHECK ARGV) inside it. Fails at once when the release
# exits or Docker reports it unhealthy, and after TIMEOUT seconds otherwise.
# Exit 0 pass, 1 timeout, 2 exited or gone, 3 unhealthy.
set -u
c=$1 probe=$2 port=$3 timeout=$4 need=$5
shift 5
start=$(date +%s)
ok=0
while :; do
  state=$(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$c" 2>/dev/null) \
    || { echo "$c is gone"; exit 2; }
  case $state in
    "running unhealthy") echo "$c: Docker reports it unhealthy"; exit 3 ;;
    running*) ;;
    *) echo "$c: $state, exit code $(docker inspect -f '{{.State.ExitCode}}' "$c")"; exit 2 ;;
  esac
  if [ "$(docker inspect -f '{{.State.Running}}' "$probe" 2>/dev/null)" = true ]; then
    docker exec "$probe" curl -fsS -o /dev/null -m 2 "http://$c:$port/health" >/dev/null 2>&1
  else
    docker exec "$c" "$@" >/dev/null 2>&1
  fi && ok=$((ok + 1)) || ok=0
  now=$(date +%s)
  if [ "$ok" -ge "$need" ]; then
    echo "$c answered /health $need times in a row after $((now - start)) s"
    exit 0
  fi
  if [ $((now - start)) -ge "$timeout" ]; then
    echo "$c: /health did not answer $need times in a row within $timeout s"
    exit 1
  fi
  sleep 0.5
done
