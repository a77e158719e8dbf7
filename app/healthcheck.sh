#!/bin/bash
# Container healthcheck: exit 0 if GET /health answers 200, else print why and exit 1.
#
# bash's /dev/tcp, not Python: Docker runs this every interval, and starting Python with
# urllib took 83 ms of the container's CPU per check against ~1 ms for the GET itself
# (measured in the app container on a slow 2-core machine), which is what saturates a
# small or emulated CPU. Docker keeps what this prints in the health log, so a failed check
# says what failed. The wait, APP_HEALTHCHECK_TIMEOUT seconds (default 8), stays under
# Docker's own healthcheck timeout (10 s by default) so the reason is printed first.
set -u
port=${APP_PORT:-5000}
wait=${APP_HEALTHCHECK_TIMEOUT:-8}
url="http://127.0.0.1:$port/health"
# The child bash opens the connection, so `timeout` bounds the connect and the answer.
# shellcheck disable=SC2016  # the child bash expands them
answer=$(timeout "$wait" bash -c '
  exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 3
  printf "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3
  IFS=" " read -r _ code _ <&3 || exit 4
  echo "$code"' healthcheck "$port" 2>&1)
rc=$?
case $rc in
  0) [ "$answer" = 200 ] && exit 0; echo "$url: HTTP ${answer:-(no status line)}" ;;
  124) echo "$url: no answer within $wait s" ;;
  3) echo "$url: ${answer##*: }" ;;  # bash says why: "Connection refused", a name error
  *) echo "$url: the connection closed before a status line (${answer:-exit $rc})" ;;
esac
exit 1
