#!/usr/bin/env bash
# Fills app/wheels/ with the pinned wheels for the Python inside the base image, downloaded
# on the controller: pip inside a container cannot reach PyPI here (TLS interception).
#
#   scripts/download-wheels.sh [PYTHON_VERSION]     (default 3.11, Debian 12's python3)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
py=${1:-3.11}
python=${PYTHON:-$here/.venv/bin/python}
dest=$here/app/wheels
stamp=$dest/.requirements-$py.sha256
want=$(sha256sum "$here/app/requirements.txt" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
rm -rf "$dest" && mkdir -p "$dest"
"$python" -m pip download --quiet --dest "$dest" --only-binary=:all: --implementation cp \
  --python-version "$py" --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 --platform any -r "$here/app/requirements.txt"
echo "$want" >"$stamp"
wheels=("$dest"/*.whl)
echo "wheels: ${#wheels[@]} in $dest" >&2
