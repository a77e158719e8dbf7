"""Swarm mode: the cluster, the services, and releases under traffic.

Tests run in file order and share one swarm: a good release, the rollback command (back to
the first spec), a bad release that Swarm rolls back by itself, then (with three nodes) a
worker stopped outright.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Node
from reslib import BACKEND_NET, REPO, Traffic, converge, get, run, summary, wait_for

SERVICES = ["prodstack-postgres", "prodstack-redis", "prodstack-app", "prodstack-nginx"]


def service(manager: Node, name: str) -> dict[str, Any]:
    return dict(json.loads(manager.docker("service", "inspect", name))[0])


def running_tasks(manager: Node, name: str) -> list[tuple[str, str]]:
    """(node, current state) of each task of `name` that should run."""
    out = manager.docker(
        "service", "ps", name, "--filter", "desired-state=running", "--format", "{{.Node}}|{{.CurrentState}}"
    )
    return [tuple(line.split("|", 1)) for line in out.splitlines() if line]  # type: ignore[misc]


def app_env(manager: Node) -> list[str]:
    return list(service(manager, "prodstack-app")["Spec"]["TaskTemplate"]["ContainerSpec"].get("Env", []))


def replicas(manager: Node) -> int:
    return int(service(manager, "prodstack-app")["Spec"]["Mode"]["Replicated"]["Replicas"])


def converged(manager: Node, name: str, count: int) -> bool:
    tasks = running_tasks(manager, name)
    return len(tasks) == count and all(state.startswith("Running") for _, state in tasks)


def test_nodes_ready(nodes: list[Node], manager: Node, report: list[str]) -> None:
    out = manager.docker("node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.Availability}}")
    rows = [line.split() for line in out.splitlines()]
    assert len(rows) == len(nodes), out
    assert all(r[1:] == ["Ready", "Active"] for r in rows), out
    report.append(f"{len(rows)} nodes Ready and Active")


def test_services_converged(nodes: list[Node], manager: Node, report: list[str]) -> None:
    for name, count in [("prodstack-postgres", 1), ("prodstack-redis", 1), ("prodstack-nginx", len(nodes))]:
        assert converged(manager, name, count), (name, running_tasks(manager, name))
    wanted = replicas(manager)
    tasks = running_tasks(manager, "prodstack-app")
    assert converged(manager, "prodstack-app", wanted), tasks
    spread = {node for node, _ in tasks}
    if len(nodes) > 1:
        assert len(spread) >= 2, f"app replicas all on {spread}"
    # The data services sit on the data node (the first host).
    data_tasks = running_tasks(manager, "prodstack-postgres") + running_tasks(manager, "prodstack-redis")
    data = {node for node, _ in data_tasks}
    assert len(data) == 1, data
    report.append(f"services converged; {wanted} app replicas on {len(spread)} node(s); data on {data.pop()}")


def test_check_mode_changes_nothing(manager: Node, report: list[str]) -> None:
    """`site.yml --check --diff` on the converged swarm: no change reported, no secret shown."""
    play = converge("--check", "--diff")
    assert play.rc == 0 and play.failed == 0, play.output[-3000:]
    assert play.changed == 0, play.output[-3000:]
    # The passwords the first manager's services got, generated on the controller.
    credentials = Path.home() / ".prodstack" / "credentials" / manager.name
    for secret in ("postgres_password", "redis_password"):
        value = (credentials / secret).read_text().split()[0]
        assert len(value) >= 16 and value not in play.output, secret
    report.append(f"--check --diff on the converged swarm: changed=0 in {play.seconds:.0f} s")


def test_status_playbook_shows_the_swarm(nodes: list[Node]) -> None:
    play = converge(playbook=REPO / "playbooks" / "status.yml")
    assert play.rc == 0 and play.changed == 0, play.output[-3000:]
    for name in SERVICES:
        assert name in play.output, name
    assert play.output.count("Ready") >= len(nodes), play.output[-3000:]


def test_backup_of_the_data_node(manager: Node, report: list[str]) -> None:
    """playbooks/backup.yml: the backup unit on the data node dumps the pinned PostgreSQL and
    Redis and the controller gets the files."""
    play = converge(playbook=REPO / "playbooks" / "backup.yml")
    assert play.rc == 0, play.output[-3000:]
    fetched = Path.home() / ".prodstack" / "backups" / manager.name
    names = sorted(p.name for p in fetched.glob("*/*"))
    for wanted in ("postgres.dump", "globals.sql", "redis.rdb", "manifest.json"):
        assert wanted in names, (wanted, names)
    report.append(f"playbooks/backup.yml on the data node in {play.seconds:.0f} s: {names}")


def test_only_nginx_publishes(manager: Node) -> None:
    for name in SERVICES:
        ports = service(manager, name)["Endpoint"].get("Ports", [])
        if name == "prodstack-nginx":
            assert ports and all(p["PublishMode"] == "host" for p in ports), ports
        else:
            assert not ports, (name, ports)
    backend = json.loads(manager.docker("network", "inspect", BACKEND_NET))[0]
    assert backend["Internal"] is True and backend["Driver"] == "overlay", backend


def test_hardening_of_every_task(nodes: list[Node]) -> None:
    for node in nodes:
        ids = node.docker("ps", "-q", "--filter", "label=prodstack.role").split()
        for cid in ids:
            c = json.loads(node.docker("inspect", cid))[0]
            name = c["Config"]["Labels"]["prodstack.role"]
            assert c["HostConfig"]["ReadonlyRootfs"] is True, name
            assert c["HostConfig"]["CapDrop"] == ["ALL"], (name, c["HostConfig"]["CapDrop"])
            assert c["Config"]["User"] not in ("", "0", "root"), name
            status = node.docker("exec", cid, "cat", "/proc/1/status")
            assert "NoNewPrivs:\t1" in status, name


def test_each_nginx_serves_one_counter(nodes: list[Node], report: list[str]) -> None:
    """`/` through each node's NGINX: one Redis counter and one table across all of them."""
    seen: list[tuple[int, int]] = []
    hosts: set[str] = set()
    for _ in range(3):
        for node in nodes:
            r = get(node.url() + "/")
            assert r.ok and r.body, (node.name, r.status, r.body)
            seen.append((int(r.body["visits"]), int(r.body["row_id"])))
            hosts.add(str(r.body["hostname"]))
    visits = [v for v, _ in seen]
    rows = [row for _, row in seen]
    assert visits == sorted(visits) and len(set(visits)) == len(visits), seen
    assert rows == sorted(rows) and len(set(rows)) == len(rows), seen
    report.append(
        f"/ through {len(nodes)} NGINX: one counter, row IDs increasing; {len(hosts)} replicas answered"
    )


def test_rolling_release_no_failed_request(nodes: list[Node], manager: Node, report: list[str]) -> None:
    before = app_env(manager)
    with Traffic(nodes[-1].url() + "/", rate=8, max_seconds=600) as t:
        time.sleep(3)
        play = converge("-e", "app_threads=5")
        time.sleep(3)
    assert play.rc == 0, play.output[-3000:]
    assert "APP_THREADS=5" in app_env(manager) and app_env(manager) != before
    responses = t.snapshot()
    failed = [r for r in responses if not r.ok]
    assert responses and not failed, summary(responses)
    report.append(f"rolling release (app_threads=5) in {play.seconds:.0f} s: {summary(responses)}")


def test_rollback_command(nodes: list[Node], manager: Node, report: list[str]) -> None:
    with Traffic(nodes[0].url() + "/", rate=8, max_seconds=600) as t:
        play = converge(playbook=REPO / "playbooks" / "rollback.yml")
        time.sleep(2)
    assert play.rc == 0, play.output[-3000:]
    assert "APP_THREADS=5" not in app_env(manager)
    responses = t.snapshot()
    assert responses and all(r.ok for r in responses), summary(responses)
    report.append(f"playbooks/rollback.yml in {play.seconds:.0f} s: {summary(responses)}")


def test_bad_release_rolled_back_by_swarm(nodes: list[Node], manager: Node, report: list[str]) -> None:
    before = app_env(manager)
    bad = json.dumps(
        {
            "app_healthcheck_command": ["CMD", "false"],
            "app_healthcheck_start_period": "5s",
            "app_healthcheck_interval": "2s",
        }
    )
    with Traffic(nodes[0].url() + "/", rate=8, max_seconds=900) as t:
        play = converge("-e", bad)
        time.sleep(2)
    assert play.rc != 0, "a release whose healthcheck fails was accepted"
    assert "Swarm rolled it back" in play.output, play.output[-3000:]
    spec = service(manager, "prodstack-app")["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert spec["Healthcheck"]["Test"] != ["CMD", "false"], spec["Healthcheck"]
    assert app_env(manager) == before
    assert wait_for(lambda: converged(manager, "prodstack-app", replicas(manager)), 120) >= 0
    responses = t.snapshot()
    assert responses and all(r.ok for r in responses), summary(responses)
    report.append(
        f"bad release (failing healthcheck) rolled back in {play.seconds:.0f} s: {summary(responses)}"
    )


def test_worker_stopped_outright(nodes: list[Node], manager: Node, report: list[str]) -> None:
    """The last node frozen outright (`docker pause`: no heartbeat, no shutdown, as a host that
    hangs or drops off the network): Swarm reschedules its replicas, and the first node's
    NGINX keeps serving. The figure is the failed requests until then."""
    if len(nodes) < 3:
        pytest.skip("needs three nodes (make test-full)")
    victim = nodes[-1]
    hostname = victim.sh("hostname").strip()

    def others_full() -> bool:
        tasks = running_tasks(manager, "prodstack-app")
        return sum(1 for n, st in tasks if n != hostname and st.startswith("Running")) >= replicas(manager)

    try:
        with Traffic(nodes[0].url() + "/", rate=8, max_seconds=600) as t:
            time.sleep(3)
            stopped = time.time()
            run(["docker", "pause", victim.name])
            rescheduled = wait_for(others_full, 240)
            time.sleep(5)
    finally:
        run(["docker", "unpause", victim.name], check=False)
    responses = t.between(stopped)
    failed = [r for r in responses if not r.ok]
    report.append(
        f"node {victim.name} frozen: its replicas running elsewhere after {rescheduled:.0f} s; "
        f"through the first node's NGINX {summary(responses)}"
    )
    # Aim 0; NGINX retries a refused or timed-out replica on the next address (GET only).
    assert len(failed) <= 0.05 * len(responses), summary(responses)
