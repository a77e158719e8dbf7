#!/usr/bin/env bash
# Installs the Ansible collections prodstack uses, and only those, into a venv's
# site-packages (where the `ansible` package would put them, so Ansible, Molecule and
# ansible-lint find them without any path setting).
#
# Why not `pip install ansible`: that community package bundles about 90 collections
# (473 MB). Installing it took a fresh venv 33 s, against 4 s for ansible-core alone, and
# Mitogen lists every installed collection each time a task runs a collection's module (a
# warm converge was 0.5 s slower with all of them). Ansible Galaxy is not reachable from
# these machines; PyPI is, so the collections come out of that package's pinned wheel.
#
# Usage: scripts/install-collections.sh VENV
set -euo pipefail

venv=${1:?usage: $0 VENV}
# The collections' versions are those this release of the package bundles.
bundle=ansible==12.3.0
# community.docker's modules and connection; community.crypto's self-signed certificate and
# x509 filter; ansible.posix's profile_tasks callback; community.docker declares a
# dependency on library_inventory_filtering_v1.
collections=(ansible/posix community/crypto community/docker community/library_inventory_filtering_v1)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --dest "$tmp" "$bundle"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

"$venv/bin/python" - "$site" "$tmp"/ansible-*.whl "${collections[@]}" <<'EOF'
import shutil
import sys
import zipfile
from pathlib import Path

site, wheel, *wanted = sys.argv[1:]
with zipfile.ZipFile(wheel) as bundle:
    names = bundle.namelist()
    for collection in wanted:
        prefix = f"ansible_collections/{collection}/"
        members = [name for name in names if name.startswith(prefix)]
        if not members:
            sys.exit(f"install-collections: {wheel} has no collection {collection}")
        # A version change must not leave the old version's files behind.
        shutil.rmtree(Path(site, prefix), ignore_errors=True)
        bundle.extractall(site, members)
        print(f"install-collections: {collection.replace('/', '.')} from {Path(wheel).name}")
EOF
