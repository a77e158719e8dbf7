"""The host watchdog (roles/stack_watchdog/files/prodstack-watchdog.py) against real containers.

Each test runs the watchdog's real `run` pass (a subprocess, as the systemd timer does) with
its own settings file, a label only this run's containers carry (so nothing else on the
engine is looked at), and short windows so a sustained failure takes seconds, not minutes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE_IMAGE, PREFIX, REPO, Stack, docker, load_script, wait_until

pytestmark = pytest.mark.containers
SCRIPT = REPO / "roles" / "stack_watchdog" / "files" / "prodstack-watchdog.py"
LABEL = f"{PREFIX}.role"


def health(name: str) -> str:
    return str(Stack.inspect(name)["State"].get("Health", {}).get("Status"))


def started_at(name: str) -> str:
    return str(Stack.inspect(name)["State"]["StartedAt"])


class Watchdog:
    """One settings file and state directory; `run()` is one pass of the real script."""

    def __init__(self, tmp: Path, **settings: Any) -> None:
        self.tmp = tmp
        self.config = tmp / "watchdog.json"
        self.settings = {
            "label": LABEL,
            "window": 1,
            "data_window": 1,
            "min_failed_passes": 2,
            "probe_timeout": 10,
            "budget": 3,
            "backoff": 0,
            "max_load": 1000.0,
            "max_cpu_pressure": 100.0,
            "overload_max_wait": 0,
            "state_file": str(tmp / "state" / "state.json"),
            "volatile_hold_dir": str(tmp / "run-hold"),
            "hold_dir": str(tmp / "hold"),
            "boot_marker": str(tmp / "run" / "boot"),
            **settings,
        }
        self.config.write_text(json.dumps(self.settings))

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, str(SCRIPT), "--config", str(self.config), *argv]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)

    def run(self) -> subprocess.CompletedProcess[str]:
        return self.cli("run")

    def status(self) -> dict[str, dict[str, Any]]:
        proc = self.cli("status", "--json")
        assert proc.returncode == 0, proc.stderr
        return {row["name"]: row for row in json.loads(proc.stdout)}


@pytest.fixture
def containers() -> Iterator[Callable[..., str]]:
    """Starts labelled containers whose healthcheck passes while /tmp/ok exists (or `check`)."""
    made: list[str] = []

    def make(suffix: str, role: str = "app", check: str = "test -e /tmp/ok", timeout: str = "2s") -> str:
        name = f"{PREFIX}-wd-{suffix}"
        made.append(name)
        docker(
            "run", "-d", "--name", name, "--init", "--label", f"{LABEL}={role}",
            "--health-cmd", check, "--health-interval", "1s", "--health-retries", "2",
            "--health-timeout", timeout, "--entrypoint", "sh", BASE_IMAGE, "-c",
            "touch /tmp/ok; exec sleep 600",
        )  # fmt: skip
        return name

    try:
        yield make
    finally:
        for name in made:
            docker("rm", "-f", name, check=False)


def test_healthy_container_is_left_alone(containers: Callable[..., str], tmp_path: Path) -> None:
    name = containers("healthy")
    wait_until(lambda: health(name) == "healthy", 30, "healthy")
    before = started_at(name)
    proc = Watchdog(tmp_path).run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert name not in proc.stdout
    assert started_at(name) == before


def test_stopped_container_is_started_unless_held(containers: Callable[..., str], tmp_path: Path) -> None:
    """A reboot that cut a restart leaves the container stopped: started, unless held on purpose."""
    name = containers("stopped")
    wd = Watchdog(tmp_path)
    docker("stop", "-t", "1", name)
    assert wd.cli("hold", name, "--reason", "test: stopped on purpose", "--by", "pytest").returncode == 0
    proc = wd.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not Stack.inspect(name)["State"]["Running"], "a held container was started"
    assert wd.status()[name]["held"]["reason"] == "test: stopped on purpose"
    assert wd.cli("unhold", name).returncode == 0
    proc = wd.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{name} is exited (exit code " in proc.stdout and "and not held: starting it" in proc.stdout
    assert Stack.inspect(name)["State"]["Running"]
    assert wd.status()[name]["watchdog_actions_last_hour"] == 1


def test_reboot_gives_a_fresh_budget(containers: Callable[..., str], tmp_path: Path) -> None:
    """A budget spent before a reboot does not keep a stopped service down after it.

    The boot marker lives under /run on a host; removing it here is what a reboot does to it.
    """
    name = containers("reboot")
    wd = Watchdog(tmp_path, budget=1)
    docker("stop", "-t", "1", name)
    assert wd.run().returncode == 0 and Stack.inspect(name)["State"]["Running"]
    docker("stop", "-t", "1", name)
    spent = wd.run()
    assert spent.returncode == 1 and "restart budget spent" in spent.stdout, spent.stdout
    assert not Stack.inspect(name)["State"]["Running"], "started beyond the budget"
    assert wd.status()[name]["budget_spent"] is True
    (tmp_path / "run" / "boot").unlink()
    proc = wd.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "and not held: starting it" in proc.stdout
    assert Stack.inspect(name)["State"]["Running"]
    row = wd.status()[name]
    assert row["watchdog_actions_last_hour"] == 2 and row["budget_spent"] is True


def test_operation_hold_lives_in_its_own_directory(containers: Callable[..., str], tmp_path: Path) -> None:
    """A hold for one operation (a restore) sits on a tmpfs: a reboot ends it; unhold ends either."""
    name = containers("operation")
    wd = Watchdog(tmp_path)
    docker("stop", "-t", "1", name)
    assert wd.cli("hold", name, "--reason", "restore", "--until-reboot").returncode == 0
    assert (tmp_path / "run-hold" / name).exists() and not (tmp_path / "hold" / name).exists()
    assert wd.run().returncode == 0
    assert not Stack.inspect(name)["State"]["Running"], "a container held for an operation was started"
    (tmp_path / "run-hold" / name).unlink()  # what a reboot does to /run
    proc = wd.run()
    assert "and not held: starting it" in proc.stdout, proc.stdout


def test_broken_container_is_restarted_after_sustained_failure(
    containers: Callable[..., str], tmp_path: Path
) -> None:
    name = containers("broken")
    wait_until(lambda: health(name) == "healthy", 30, "healthy")
    before = started_at(name)
    docker("exec", name, "rm", "/tmp/ok")
    wait_until(lambda: health(name) == "unhealthy", 30, "unhealthy")
    wd = Watchdog(tmp_path)
    first = wd.run()
    assert "restarts after 1 s and 2 passes" in first.stdout, first.stdout
    assert started_at(name) == before, "restarted on the first failed pass"
    time.sleep(1)
    second = wd.run()
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"{name} has failed its check for" in second.stdout and "restarting it" in second.stdout
    assert started_at(name) != before


def test_slow_but_working_check_is_not_restarted(containers: Callable[..., str], tmp_path: Path) -> None:
    """Docker's 1 s timeout calls it unhealthy; the watchdog's own run of the check passes late."""
    name = containers("slow", check="sleep 3", timeout="1s")
    wait_until(lambda: health(name) == "unhealthy", 60, "unhealthy by Docker's timeout")
    before = started_at(name)
    wd = Watchdog(tmp_path)
    for _ in range(3):
        proc = wd.run()
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "slow, not broken; no restart" in proc.stdout, proc.stdout
    assert started_at(name) == before


def test_data_service_is_not_restarted_for_timeouts(containers: Callable[..., str], tmp_path: Path) -> None:
    """A data service whose check times out everywhere waits for the (long) data window."""
    name = containers("data", role="postgres", check="sleep 30", timeout="1s")
    wait_until(lambda: health(name) == "unhealthy", 60, "unhealthy")
    before = started_at(name)
    wd = Watchdog(tmp_path, data_window=3600, probe_timeout=2)
    for _ in range(3):
        proc = wd.run()
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{name} is unhealthy; has not answered its check for" in proc.stdout, proc.stdout
    assert "restarts after 3600 s" in proc.stdout
    assert started_at(name) == before


def test_overloaded_host_waits(containers: Callable[..., str], tmp_path: Path) -> None:
    """Above the load threshold a due restart waits (here any load counts as overload)."""
    name = containers("overload")
    wait_until(lambda: health(name) == "healthy", 30, "healthy")
    before = started_at(name)
    docker("exec", name, "rm", "/tmp/ok")
    wait_until(lambda: health(name) == "unhealthy", 30, "unhealthy")
    wd = Watchdog(
        tmp_path, max_load=0.0001, max_cpu_pressure=0.0001, overload_max_wait=3600, min_failed_passes=1
    )
    time.sleep(1)
    proc = wd.run()
    assert "the host is overloaded" in proc.stdout and "waiting, not restarting" in proc.stdout, proc.stdout
    assert started_at(name) == before


def test_restart_budget_is_kept(containers: Callable[..., str], tmp_path: Path) -> None:
    """A container that fails its check forever is restarted `budget` times, then left, loudly."""
    name = containers("forever", check="false")
    wd = Watchdog(tmp_path, budget=2, min_failed_passes=1)
    restarts = 0
    spent = None
    deadline = time.monotonic() + 120
    while spent is None and time.monotonic() < deadline:
        wait_until(lambda: health(name) == "unhealthy", 30, "unhealthy")
        time.sleep(1.1)  # past the 1 s window
        proc = wd.run()
        restarts += proc.stdout.count("restarting it")
        if "restart budget spent" in proc.stdout:
            spent = proc
    assert spent is not None, "the budget was never reached"
    assert restarts == 2
    assert spent.returncode == 1, "a spent budget must fail the unit"
    assert "an operator must look" in spent.stdout
    assert wd.status()[name]["budget_spent"] is True


def test_stalled_docker_check_is_probed_by_the_watchdog(
    containers: Callable[..., str], tmp_path: Path
) -> None:
    """Docker's checks made to look 10 minutes old (the live-restore freeze): its own probe decides."""
    wd_module = load_script(SCRIPT)
    name = containers("stalled")
    wait_until(lambda: health(name) == "healthy", 30, "healthy")
    container = Stack.inspect(name)
    container["State"]["StartedAt"] = "2000-01-01T00:00:00.000000000Z"
    for entry in container["State"]["Health"]["Log"]:
        entry["Start"] = entry["End"] = "2000-01-01T00:00:10.000000000Z"
    cfg = wd_module.load_config(str(Watchdog(tmp_path).config))
    why, _ = wd_module.Watchdog(cfg).suspect(container)
    assert why is not None and "no health check run by Docker" in why
    check = container["Config"]["Healthcheck"]
    assert wd_module.own_probe(name, check, 10)[0] is True
    docker("exec", name, "rm", "/tmp/ok")
    assert wd_module.own_probe(name, check, 10)[0] is False
