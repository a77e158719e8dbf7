"""The real-VM path: Ansible reaches the target over SSH as a sudo user (so SSH and
become are tested as on a real VM, not only `docker exec`).

The target image runs sshd with `deploy`, a user with passwordless sudo and no password
(molecule/resources/target). This test gives that user a fresh key, writes an inventory
shaped like inventory/example (SSH, `become`), and converges site.yml through it. The
docker-exec converge already brought the host to this state, so over SSH it must succeed
and change nothing: SSH, sudo and every role's idempotence on the real-VM path at once.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml
from test_stack import run_site

# A throwaway target with a fresh host key each run: nothing to pin.
SSH_OPTS = ("-o StrictHostKeyChecking=no", "-o UserKnownHostsFile=/dev/null")


def test_site_converges_over_ssh_with_become(host: Any, tmp_path: Path) -> None:
    name = host.backend.get_hostname()
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    public = key.with_suffix(".pub").read_text().strip()
    keys = "/home/deploy/.ssh/authorized_keys"
    host.check_output(
        "sh -c %s", f"printf '%s\\n' '{public}' > {keys} && chown deploy:deploy {keys} && chmod 0600 {keys}"
    )
    address = subprocess.run(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", name],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[0]
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "prodstack": {
                    "hosts": {
                        name: {
                            "ansible_host": address,
                            "ansible_user": "deploy",
                            "ansible_become": True,
                            "ansible_ssh_private_key_file": str(key),
                            "ansible_ssh_common_args": " ".join(SSH_OPTS),
                            # the same for Mitogen, which reads only this variable
                            "ansible_host_key_checking": False,
                            "ansible_python_interpreter": "/usr/bin/python3",
                            # as in molecule.yml's inventory
                            "nginx_published_port": 8080,
                            "stack_images_base_image": "prodstack/debian:bookworm",
                        }
                    }
                }
            }
        )
    )
    _, recap = run_site(str(inventory))
    assert name in recap and "changed=0" in recap and "unreachable=0" in recap, recap
    # The play really went over SSH as deploy, with sudo: the connection user is visible.
    whoami = subprocess.run(
        ["ssh", "-i", str(key), *" ".join(SSH_OPTS).split(), f"deploy@{address}", "id -un; sudo -n id -un"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert whoami.stdout.split() == ["deploy", "root"], whoami.stderr
