"""What only a real VM can show: its kernel's AppArmor and cgroup v2, the host firewall seen
from the VM itself, a steady state with no watchdog restart, and a real reboot after which
the stack comes back healthy on its own (no Ansible run) with its data.

Containers are found by their `prodstack.role` label. Figures measured here (reboot to
healthy) are appended to .cache/vm/timings.log for docs/VM.md.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from test_stack import BACKEND_NET, ansible_env, inspect

# How long the stack must stay up with no restart; the VM is slow, the watchdog's passes
# are minutes apart, so the window is long enough to see at least one of them.
STEADY_SECONDS = int(os.environ.get("PRODSTACK_VM_STEADY_SECONDS", "150"))
REBOOT_TIMEOUT = int(os.environ.get("PRODSTACK_VM_REBOOT_TIMEOUT", "900"))
BACKEND_PORTS = {"app": 5000, "redis": 6379, "postgres": 5432}
PROBE = (
    "import socket, sys\n"
    "s = socket.socket(); s.settimeout(3)\n"
    "sys.exit(0 if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0 else 1)\n"
)


def connects(host: Any, ip: str, port: int) -> bool:
    """Whether a TCP connection from the VM itself to ip:port opens."""
    return bool(host.run("python3 -c %s %s %s", PROBE, ip, str(port)).rc == 0)


def stack(host: Any) -> dict[str, dict[str, Any]]:
    """Every running labelled stack container by its role label, inspected (a release that was
    replaced stays as a stopped container, held: not part of the serving stack)."""
    names = host.check_output("docker ps --filter label=prodstack.role --format '{{.Names}}'").split()
    found = [inspect(host, "container", n) for n in names]
    return {c["Config"]["Labels"]["prodstack.role"]: c for c in found}


def record(metric: str, seconds: float) -> None:
    project, _ = ansible_env()
    log = project / ".cache" / "vm" / "timings.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} test_vm {metric} {seconds:.0f}\n")


def get_json(address: str, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as r:
        body: dict[str, Any] = json.load(r)
        return body


def healthy(host: Any, address: str) -> bool:
    """All four containers running and healthy, and / answering through the machine's port."""
    try:
        containers = stack(host)
        if set(containers) != {"nginx", "app", "redis", "postgres"}:
            return False
        if any(c["State"].get("Health", {}).get("Status") != "healthy" for c in containers.values()):
            return False
        return bool(get_json(address, "/")["status"] == "ok")
    except Exception:  # noqa: BLE001 - the VM is still booting: any failure means "not yet"
        return False


def watchdog_restarts(host: Any, since: str = "-b") -> list[str]:
    """The watchdog's journal lines, this boot, that report restarting a container."""
    journal = host.run(f"journalctl -u prodstack-watchdog {since} --no-pager -o cat").stdout
    return [line for line in journal.splitlines() if re.search(r"\brestart(ing|ed)\b", line, re.I)]


def assert_steady(host: Any, seconds: int) -> None:
    before = {role: c["State"]["StartedAt"] for role, c in stack(host).items()}
    time.sleep(seconds)
    after = stack(host)
    assert {role: c["State"]["StartedAt"] for role, c in after.items()} == before, "a container restarted"
    counts = {role: c["RestartCount"] for role, c in after.items()}
    assert set(counts.values()) == {0}, counts
    assert all(c["State"]["Health"]["Status"] == "healthy" for c in after.values())
    assert watchdog_restarts(host) == []


def test_apparmor_confines_every_container_with_docker_default(host: Any) -> None:
    assert host.file("/sys/module/apparmor/parameters/enabled").content_string.strip() == "Y"
    assert host.exists("apparmor_parser"), "Docker refuses AppArmor-confined containers without it"
    info = json.loads(host.check_output("docker info --format '{{json .SecurityOptions}}'"))
    assert "name=apparmor" in info
    profiles = host.file("/sys/kernel/security/apparmor/profiles").content_string
    assert "docker-default (enforce)" in profiles
    containers = stack(host)
    assert len(containers) == 4
    for role, c in containers.items():
        assert c["AppArmorProfile"] == "docker-default", role
        confined = host.file(f"/proc/{c['State']['Pid']}/attr/current").content_string.strip()
        assert confined == "docker-default (enforce)", role


def test_real_kernel_with_cgroup_v2(host: Any) -> None:
    assert host.run("systemd-detect-virt --container").rc != 0, "a container, not a VM"
    assert host.check_output("stat -fc %T /sys/fs/cgroup") == "cgroup2fs"
    assert host.check_output("docker info --format '{{.CgroupVersion}}'") == "2"


def test_vm_exposes_only_sshd_and_nginx_ports(host: Any) -> None:
    """From the VM's own address: NGINX's two ports answer, the backend's do not, and beyond
    loopback only sshd listens, and dockerd on NGINX's two published ports. Those are served
    by iptables rules (`userland-proxy: false`, no docker-proxy process); dockerd still binds
    each published port itself, to reserve it so no other process can take it."""
    address = host.check_output("ip -4 -o route get 1.1.1.1 | sed -n 's/.* src \\([0-9.]*\\).*/\\1/p'")
    for port in (8080, 8443):
        assert connects(host, address, port), port
    for port in BACKEND_PORTS.values():
        assert not connects(host, address, port), port
    listening = host.check_output("ss -Htlnp").splitlines()
    outside = [line for line in listening if not re.search(r"\s(127\.[0-9.]+|\[::1\]):\d+\s", line)]
    assert any('"sshd"' in line for line in outside), outside
    allowed = {("sshd", "22"), ("dockerd", "8080"), ("dockerd", "8443")}
    for line in outside:
        port = re.search(r"\s\S+:(\d+)\s", line)
        process = re.search(r'users:\(\("([^"]+)"', line)
        assert port and process and (process[1], port[1]) in allowed, line


def test_backend_firewall_unit_is_active(host: Any) -> None:
    assert host.service("prodstack-backend-firewall").is_enabled
    bridge = inspect(host, "network", BACKEND_NET)["Options"]["com.docker.network.bridge.name"]
    rules = host.check_output("iptables -S")
    assert f"-A OUTPUT -o {bridge} -m conntrack --ctstate NEW -j REJECT" in rules
    assert f"-A INPUT -i {bridge} -m conntrack --ctstate NEW -j REJECT" in rules


def test_steady_state_with_no_watchdog_restart(host: Any) -> None:
    assert_steady(host, STEADY_SECONDS)


def test_reboot_brings_the_stack_back_healthy_with_its_data(
    host: Any, published: Callable[[str], str]
) -> None:
    address = published("8080/tcp")
    before = get_json(address, "/")
    boot_id = host.file("/proc/sys/kernel/random/boot_id").content_string
    start = time.monotonic()
    result = host.ansible(
        "ansible.builtin.reboot", f"reboot_timeout={REBOOT_TIMEOUT}", check=False, become=True
    )
    assert result.get("rebooted") is True, result
    record("reboot_to_ssh", time.monotonic() - start)
    assert host.file("/proc/sys/kernel/random/boot_id").content_string != boot_id
    while not healthy(host, address):
        assert time.monotonic() - start < REBOOT_TIMEOUT, f"not healthy {REBOOT_TIMEOUT} s after the reboot"
        time.sleep(5)
    record("reboot_to_healthy", time.monotonic() - start)
    after = get_json(address, "/")
    # The counter (Redis, AOF) and the table (PostgreSQL) went on from where they were.
    assert after["visits"] > before["visits"] and after["row_id"] > before["row_id"], (before, after)
    assert_steady(host, STEADY_SECONDS)


def reboot_and_wait(host: Any, address: str, metric: str) -> float:
    """Reboot the VM (Ansible's reboot module: waits for SSH), then until the stack serves."""
    start = time.monotonic()
    result = host.ansible(
        "ansible.builtin.reboot", f"reboot_timeout={REBOOT_TIMEOUT}", check=False, become=True
    )
    assert result.get("rebooted") is True, result
    while not healthy(host, address):
        assert time.monotonic() - start < REBOOT_TIMEOUT, f"not serving {REBOOT_TIMEOUT} s after the reboot"
        time.sleep(5)
    took = time.monotonic() - start
    record(metric, took)
    return took


def test_reboot_right_after_a_cut_watchdog_restart(host: Any, published: Callable[[str], str]) -> None:
    """What a reboot in the middle of the watchdog's `docker restart` leaves: the app stopped on
    request (so `unless-stopped` will not start it) and not held. After boot it must serve."""
    address = published("8080/tcp")
    app = stack(host)["app"]["Name"].lstrip("/")
    host.run_expect([0], f"docker stop -t 1 {app}")
    reboot_and_wait(host, address, "reboot_after_cut_restart_to_serving")
    journal = host.run("journalctl -u prodstack-watchdog -b --no-pager -o cat").stdout
    assert [line for line in journal.splitlines() if app in line and "starting it" in line], journal[-2000:]


def test_reboot_in_the_middle_of_a_release(host: Any, published: Callable[[str], str]) -> None:
    """site.yml releases a new app (app_threads changed); the VM reboots while the new release's
    gate runs, the controller's run lost with it. After boot the stack serves."""
    address = published("8080/tcp")
    live = stack(host)["app"]["Name"].lstrip("/")
    project, env = ansible_env()
    env = dict(env, ANSIBLE_TIMEOUT="120")  # as the scenario's provisioner: a TCG VM is slow over SSH
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    argv = ["ansible-playbook", "-i", inventory, str(project / "site.yml"), "-e", "app_threads=3"]
    play = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + REBOOT_TIMEOUT
        fmt = "{{.Names}}"
        while True:
            running = host.check_output(
                f"docker ps --filter label=prodstack.release --format '{fmt}'"
            ).split()
            if set(running) - {live}:
                break
            assert play.poll() is None, f"site.yml ended (rc {play.returncode}) before a new release started"
            assert time.monotonic() < deadline, "no new release started"
            time.sleep(3)
    finally:
        play.kill()
        play.wait(60)
    reboot_and_wait(host, address, "reboot_during_release_to_serving")


@pytest.mark.parametrize("role", sorted(BACKEND_PORTS))
def test_backend_port_unreachable_after_reboot(host: Any, role: str) -> None:
    """The firewall and the internal network are rebuilt at boot, not only at converge."""
    c = stack(host)[role]
    ip = c["NetworkSettings"]["Networks"][BACKEND_NET]["IPAddress"]
    assert not connects(host, ip, BACKEND_PORTS[role])
