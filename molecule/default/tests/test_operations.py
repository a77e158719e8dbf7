"""The operator's side on a deployed host: what `make status` shows, a release switch
that NGINX refuses (the switch puts both files back and NGINX serves on as before), and
`--check` ahead of an app change."""

from __future__ import annotations

import json
import os
import re
import subprocess
from typing import Any

from test_stack import CONTAINERS, container_name, http_on_target, run_site

CONF = "/etc/prodstack/nginx/conf.d"
SWITCH_FILES = ["app-release.inc", "app-upstream.inc"]


def test_status_playbook_shows_each_container_running(host: Any) -> None:
    name = host.backend.get_hostname()
    output, recap = run_site(
        os.environ["MOLECULE_INVENTORY_FILE"], "--limit", name, playbook="playbooks/status.yml"
    )
    assert "failed=0" in recap, recap
    for container in map(lambda c: container_name(host, c), CONTAINERS):
        rows = [line.split() for line in output.splitlines() if f"- {container} " in line]
        assert rows and rows[0][2] == "running", (container, rows)


def test_a_switch_nginx_rejects_puts_both_files_back(host: Any, tmp_path: Any) -> None:
    """A release name NGINX cannot parse stands for any config it rejects: the play fails
    with NGINX's complaint, both files are as they were, and the live release serves on."""
    before = {f: host.file(f"{CONF}/{f}").content_string for f in SWITCH_FILES}
    # Copies to put back, whatever the switch leaves: the next tests need these files.
    host.check_output(" && ".join(f"cp -p {CONF}/{f} /root/{f}.before" for f in SWITCH_FILES))
    live = container_name(host, "prodstack-app")
    address = host.check_output("docker inspect -f '{{index .Config.Labels \"prodstack.address\"}}' %s", live)
    play = tmp_path / "switch.yml"
    play.write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.import_role:\n        name: nginx\n        tasks_from: switch\n"
        f"      vars:\n        nginx_switch_release: 'broken; no_such_directive'\n"
        f"        nginx_switch_upstream: '{address}'\n"
    )
    name = host.backend.get_hostname()
    try:
        output, _ = run_site(
            os.environ["MOLECULE_INVENTORY_FILE"], "--limit", name, timeout=300, playbook=play, fails=True
        )
        output = " ".join(output.split())
        assert "NGINX rejects the config for release broken; no_such_directive" in output, output[-2000:]
        assert "unknown directive" in output, output[-2000:]  # NGINX's own words
        assert {f: host.file(f"{CONF}/{f}").content_string for f in SWITCH_FILES} == before
        status, _ = http_on_target(host, "/")
        assert status == 200
        assert container_name(host, "prodstack-app") == live
    finally:
        host.check_output(" && ".join(f"mv -f /root/{f}.before {CONF}/{f}" for f in SWITCH_FILES))


def test_check_mode_reports_a_pending_app_change_and_changes_nothing(host: Any) -> None:
    """`site.yml --check` while the app's build has changed (its version label here, so its
    content-hash tag is new): the run reports the build, the shipping and the new release as
    changes, builds and ships nothing, and the live release serves on."""
    name = host.backend.get_hostname()
    live = container_name(host, "prodstack-app")
    images = host.check_output("docker images --quiet --no-trunc | sort")
    changed = {"stack_images_build_labels": {"app": {"org.opencontainers.image.version": "0.0.0-check"}}}
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    output, recap = run_site(inventory, "--check", "--limit", name, "-e", json.dumps(changed), timeout=600)
    assert "failed=0" in recap and not re.search(r"changed=0\b", recap), recap
    would = re.search(r"would build, ship and load: (\S*?/app:[0-9a-f]+)", output)
    assert would, output[-3000:]
    # Not built on the controller, not loaded on the host, no release started.
    inspect = subprocess.run(["docker", "image", "inspect", would.group(1)], capture_output=True, check=False)
    assert inspect.returncode != 0, f"{would.group(1)} was built on the controller"
    assert host.check_output("docker images --quiet --no-trunc | sort") == images
    assert container_name(host, "prodstack-app") == live
