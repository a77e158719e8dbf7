#!/usr/bin/env bash
# Fills APP_DIR/wheels/ with the wheels pinned in APP_DIR/requirements.txt for the Python
# inside the base image, downloaded on the controller: pip inside a container cannot reach
# PyPI here (TLS interception). Part of the stack_images role, which runs it before a build.
#
#   download-wheels.sh APP_DIR PYTHON_VERSION STAMP
#   STAMP: the file that holds the sha256 of the requirements.txt the wheels match (the role
#   names it and reads it to skip this script); nothing is downloaded while it matches.
#   PYTHON: the interpreter whose pip downloads (default python3)
set -euo pipefail
usage="usage: download-wheels.sh APP_DIR PYTHON_VERSION STAMP"
app=${1:?$usage}
py=${2:?$usage}
stamp=${3:?$usage}
python=${PYTHON:-python3}
dest=$app/wheels
want=$(sha256sum "$app/requirements.txt" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
rm -rf "$dest" && mkdir -p "$dest"
"$python" -m pip download --quiet --dest "$dest" --only-binary=:all: --implementation cp \
  --python-version "$py" --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 --platform any -r "$app/requirements.txt"
echo "$want" >"$stamp"
wheels=("$dest"/*.whl)
echo "wheels: ${#wheels[@]} in $dest" >&2
