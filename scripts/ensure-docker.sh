#!/usr/bin/env bash
# Makes sure a Docker engine answers on this machine. Installs Debian's docker.io when the
# daemon binary is missing and starts dockerd in the background when nothing answers: these
# machines have no systemd as PID 1, so nothing else would start it.
set -euo pipefail

log=/var/log/prodstack-dockerd.log

if docker info >/dev/null 2>&1; then
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  echo "ensure-docker: installing docker.io" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl start docker
  else
    # A machine that restarted without a clean stop leaves dockerd's pid file behind, and
    # dockerd refuses to start while it exists ("pid file found"): remove it when the pid
    # in it is not a running dockerd.
    pidfile=/var/run/docker.pid
    if [ -f "$pidfile" ]; then
      pid=$(cat "$pidfile")
      if ! grep -qx dockerd "/proc/$pid/comm" 2>/dev/null; then
        echo "ensure-docker: removing the stale $pidfile (pid $pid is not dockerd)" >&2
        rm -f "$pidfile"
      fi
    fi
    echo "ensure-docker: starting dockerd (log: $log)" >&2
    # setsid: the daemon must outlive the make or CI step that started it.
    setsid dockerd >"$log" 2>&1 </dev/null &
  fi
fi

for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "ensure-docker: the Docker daemon did not answer within 60 s; see $log" >&2
exit 1
