"""The host watchdog (roles/stack_watchdog/files/prodstack-watchdog.py) against real containers:
it restarts a running container whose healthcheck fails, leaves a healthy one alone, and
when Docker has stopped running a check (the Docker 20.10 live-restore freeze, simulated
by an old last check) it runs the container's own check and restarts only on failure."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from conftest import BASE_IMAGE, PREFIX, REPO, Stack, docker, load_script

pytestmark = pytest.mark.containers
SCRIPT = REPO / "roles" / "stack_watchdog" / "files" / "prodstack-watchdog.py"


@pytest.fixture
def probe_container() -> Iterator[str]:
    """A running container whose healthcheck passes while /tmp/ok exists."""
    name = f"{PREFIX}-watchdog"
    docker(
        "run", "-d", "--name", name, "--init",
        "--health-cmd", "test -e /tmp/ok", "--health-interval", "1s", "--health-retries", "2",
        "--health-timeout", "2s", "--entrypoint", "sh", BASE_IMAGE, "-c", "touch /tmp/ok; exec sleep 600",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while Stack.inspect(name)["State"]["Health"]["Status"] != "healthy":
            assert time.monotonic() < deadline, "the probe container never became healthy"
            time.sleep(0.5)
        yield name
    finally:
        docker("rm", "-f", name, check=False)


def run_watchdog(*names: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(SCRIPT), "--stop-timeout", "1", *names]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_healthy_and_missing_containers_are_left_alone(probe_container: str) -> None:
    started = Stack.inspect(probe_container)["State"]["StartedAt"]
    proc = run_watchdog(probe_container, f"{PREFIX}-no-such-container")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert Stack.inspect(probe_container)["State"]["StartedAt"] == started


def test_unhealthy_running_container_is_restarted(probe_container: str) -> None:
    started = Stack.inspect(probe_container)["State"]["StartedAt"]
    docker("exec", probe_container, "rm", "/tmp/ok")
    deadline = time.monotonic() + 30
    while Stack.inspect(probe_container)["State"]["Health"]["Status"] != "unhealthy":
        assert time.monotonic() < deadline, "the probe container never became unhealthy"
        time.sleep(0.5)
    proc = run_watchdog(probe_container)
    assert proc.returncode == 0, proc.stderr
    assert f"{probe_container} is unhealthy: restarting it" in proc.stdout
    assert Stack.inspect(probe_container)["State"]["StartedAt"] != started


def test_stalled_healthcheck_is_probed_by_the_watchdog(probe_container: str) -> None:
    """Docker's last check made to look 10 minutes old: the watchdog's own probe decides."""
    wd = load_script(SCRIPT)
    container = Stack.inspect(probe_container)
    for entry in container["State"]["Health"]["Log"]:
        entry["End"] = "2000-01-01T00:00:00.000000000Z"
    assert wd.verdict(probe_container, container, time.time()) is None  # its check passes
    docker("exec", probe_container, "rm", "/tmp/ok")
    reason = wd.verdict(probe_container, container, time.time())
    assert reason is not None and "fails its own health check" in reason
