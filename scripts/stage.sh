#!/usr/bin/env bash
# Runs one stage of `make test` under a time budget and prints what it used:
#
#   scripts/stage.sh NAME BUDGET_SECONDS COMMAND...
set -uo pipefail
name=$1 budget=$2
shift 2
echo "==> stage $name (budget ${budget}s)"
start=$(date +%s)
timeout --kill-after=30 "$budget" "$@"
rc=$?
used=$(($(date +%s) - start))
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
  echo "<== stage $name: OVER BUDGET after ${used}s of ${budget}s"
elif [ $rc -ne 0 ]; then
  echo "<== stage $name: FAILED (exit $rc) after ${used}s of ${budget}s"
else
  echo "<== stage $name: ok in ${used}s of ${budget}s"
fi
exit $rc
