"""Each role runs alone on a deployed host: `ansible-playbook site.yml --tags ROLE`.

The preflight, the deploy lock and the image references run whatever --tags says; the
role's own tasks run, no other role's do, and on a converged host nothing changes.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
from test_stack import run_site

# The roles of playbooks/deploy.yml in its order, each tagged with its name.
ROLES = [
    "docker_engine",
    "stack_images",
    "stack_resources",
    "postgres",
    "redis",
    "nginx",
    "app",
    "stack_health",
    "stack_watchdog",
    "stack_backup",
]
# The task that shows each service role (and the watchdog) did its main work.
MAIN_TASKS = {
    "postgres": "postgres : Run the PostgreSQL container",
    "redis": "redis : Run the Redis container",
    "nginx": "nginx : Run the NGINX container",
    "app": "app : Run the release",
    "stack_watchdog": "stack_watchdog : Install the watchdog script",
}
# What every run does whatever --tags says: take and release the deploy lock, and run each
# role's preflight (its checks, not only the argument validation Ansible always runs).
EVERY_RUN = [
    "stack_lock : Take the deploy lock (waits while another run holds it)",
    "stack_lock : Release the deploy lock (only when this run holds it)",
    "nginx : Check the ports, certificate and pool settings",
]
# "TASK [role : name]" headers, as the default callback prints them.
TASK = re.compile(r"^TASK \[(\w+) : ", re.M)


@pytest.mark.parametrize("role", ROLES)
def test_role_runs_alone_and_changes_nothing(host: Any, role: str) -> None:
    name = host.backend.get_hostname()
    output, recap = run_site(os.environ["MOLECULE_INVENTORY_FILE"], "--tags", role, "--limit", name)
    assert name in recap and "changed=0" in recap and "failed=0" in recap, recap
    ran = set(TASK.findall(output))
    # Besides the role: what runs in every run (the preflight of every role, the lock,
    # the image references) and what the role itself calls (the app's cutover reloads NGINX
    # through the nginx role's tasks; a release's gate is the app's).
    assert role in ran, sorted(ran)
    assert [task for task in EVERY_RUN if task not in output] == []
    for other, task in MAIN_TASKS.items():
        assert (task in output) == (other == role), f"--tags {role}: {task!r} ran: {other == role}"


def test_release_tag_runs_the_images_and_the_app_only(host: Any) -> None:
    """`--tags release`, the short way to ship a new app version: the images (a changed one
    is built and shipped) and the app's release, nothing else; nothing changes here."""
    name = host.backend.get_hostname()
    output, recap = run_site(os.environ["MOLECULE_INVENTORY_FILE"], "--tags", "release", "--limit", name)
    assert name in recap and "changed=0" in recap and "failed=0" in recap, recap
    assert {"stack_images", "app"} <= set(TASK.findall(output))
    assert [task for task in EVERY_RUN if task not in output] == []
    for other, task in MAIN_TASKS.items():
        assert (task in output) == (other == "app"), f"--tags release: {task!r} ran: {other == 'app'}"
