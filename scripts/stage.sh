#!/usr/bin/env bash
# Runs one stage of `make test` under a time budget and prints what it used:
#
#   scripts/stage.sh NAME BUDGET_SECONDS COMMAND...
#
# The stage's output is also kept in out/stage-NAME.log. When a stage fails, its failed
# tests (pytest's short summary lines) are printed again at the end, so the last lines of
# a long CI log name them.
set -uo pipefail
name=$1 budget=$2
shift 2
mkdir -p out
log=out/stage-$name.log
echo "==> stage $name (budget ${budget}s)"
start=$(date +%s)
timeout --kill-after=30 "$budget" "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
used=$(($(date +%s) - start))
if [ "$rc" -ne 0 ]; then
  echo "--- failed tests of stage $name (from $log):"
  # pytest's short summary, without colours and Molecule's box margin, at most 80 lines.
  sed 's/\x1b\[[0-9;]*m//g; s/^ *│ \{0,1\}//' "$log" |
    awk '/short test summary info/ {on = 1} on {print} on && / [0-9]+ (passed|failed)/ {on = 0}' |
    cut -c1-300 | tail -80
  # And the last failed Ansible task in the log (a failed converge has no pytest summary).
  echo "--- last failed Ansible task in $log:"
  sed 's/\x1b\[[0-9;]*m//g; s/^ *│ \{0,1\}//' "$log" | grep -A8 '^fatal: \[' | cut -c1-300 | tail -24
fi
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  echo "<== stage $name: OVER BUDGET after ${used}s of ${budget}s"
elif [ "$rc" -ne 0 ]; then
  echo "<== stage $name: FAILED (exit $rc) after ${used}s of ${budget}s"
else
  echo "<== stage $name: ok in ${used}s of ${budget}s"
fi
exit "$rc"
