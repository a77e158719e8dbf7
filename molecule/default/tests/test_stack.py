"""testinfra checks of a converged target: the stack is up, healthy and wired as designed.

Each test reads the real state of the target (docker inspect, files, HTTP through the
published port); none of them can pass on a host where the deployment did not happen.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

# The health-record printer the container tests use too.
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "shared"))
from docker_health import health_log  # noqa: E402

CONTAINERS = [
    "prodstack-nginx",
    "prodstack-app",
    "prodstack-redis",
    "prodstack-postgres",
]
# The values the roles share, read where the roles read them (roles/stack_common).
COMMON: dict[str, Any] = yaml.safe_load(
    (Path(__file__).resolve().parents[3] / "roles/stack_common/defaults/main.yml").read_text()
)
UIDS: dict[str, int] = COMMON["stack_common_uids"]
BACKEND_NET: str = COMMON["stack_common_network"]
EDGE_NET: str = COMMON["stack_common_edge_network"]
SECRETS_DIR: str = COMMON["stack_common_secrets_dir"]
SECRET_READERS = {
    "postgres_password.postgres": UIDS["postgres"],
    "postgres_password.app": UIDS["app"],
    "redis_password.redis": UIDS["redis"],
    "redis_password.app": UIDS["app"],
}
NGINX_PORT = 8080


def ansible_env() -> tuple[Path, dict[str, str]]:
    """The repo and an environment that runs its ansible-playbook as `make` does."""
    project = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
    env = dict(os.environ, ANSIBLE_CONFIG=str(project / "ansible.cfg"))
    env["ANSIBLE_ROLES_PATH"] = str(project / "roles")
    # Plain text: the tests read task names and the recap from the output.
    env.update(ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    return project, env


def run_site(
    inventory: str, *args: str, timeout: int = 900, playbook: str | Path = "site.yml", fails: bool = False
) -> tuple[str, str]:
    """Run a playbook (the repo's site.yml unless named; a relative path is the repo's)
    against an inventory; it must succeed, or fail when `fails`. Returns (output, recap)."""
    project, env = ansible_env()
    run = subprocess.run(
        ["ansible-playbook", "-i", inventory, str(project / playbook), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
        cwd=project,
    )
    output = run.stdout + run.stderr
    assert (run.returncode != 0) == fails, f"rc {run.returncode}: " + output[-3000:]
    return output, output.split("PLAY RECAP")[-1]


def container_name(host: Any, name: str) -> str:
    """`name`, except "prodstack-app", which stands for the live app release: its own
    container (prodstack-app-RELEASEID), named in the release file NGINX includes."""
    if name != "prodstack-app":
        return name
    release = host.run(
        "sed -n 's/^set \\$prodstack_release \\(.*\\);$/\\1/p' /etc/prodstack/nginx/conf.d/app-release.inc"
    )
    return f"prodstack-app-{release.stdout.strip()}" if release.stdout.strip() else name


def inspect(host: Any, kind: str, name: str) -> dict[str, Any]:
    if kind == "container":
        name = container_name(host, name)
    out = host.check_output(f"docker {kind} inspect {name}")
    return json.loads(out)[0]


def http_on_target(host: Any, path: str) -> tuple[int, str]:
    """GET through the target's published NGINX port, from inside the target (10 s: NGINX's
    own wait for the app, longer than the VM scenario's request deadline)."""
    script = (
        "import sys, urllib.request, urllib.error\n"
        f"url = 'http://127.0.0.1:{NGINX_PORT}{path}'\n"
        "try:\n"
        "    r = urllib.request.urlopen(url, timeout=10)\n"
        "    print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code); print(e.read().decode())\n"
    )
    out = host.check_output("python3 -c %s", script)
    status, _, body = out.partition("\n")
    return int(status), body


def machine_address(host: Any, container_port: str) -> str:
    """host:port on this machine's loopback that reaches the target's `container_port`.

    A container target publishes it through Docker; a VM (molecule/vm) through QEMU's
    port forwards, which scripts/vm/vm.sh reports. Tests take it from the `published`
    fixture (conftest.py), so the same test runs on both.
    """
    name = host.backend.get_hostname()
    if host.ansible.get_variables().get("prodstack_test_target") == "vm":
        project, _ = ansible_env()
        argv = [str(project / "scripts" / "vm" / "vm.sh"), "port", name, container_port]
    else:
        argv = ["docker", "port", name, container_port]
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.split()[0]


def test_docker_engine_active_and_enabled(host: Any) -> None:
    docker = host.service("docker")
    assert docker.is_running
    assert docker.is_enabled


def test_daemon_json_sets_log_rotation_and_live_restore(host: Any) -> None:
    config = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert config["live-restore"] is True
    assert config["log-driver"] == "json-file"
    assert config["log-opts"]["max-size"] and config["log-opts"]["max-file"]


def test_private_network_is_a_bridge(host: Any) -> None:
    net = inspect(host, "network", BACKEND_NET)
    assert net["Driver"] == "bridge" and net["Internal"] is True
    members = {c["Name"] for c in net["Containers"].values()}
    assert members == {container_name(host, c) for c in CONTAINERS}


@pytest.mark.parametrize("volume", ["prodstack-postgres-data", "prodstack-redis-data"])
def test_data_volumes_exist(host: Any, volume: str) -> None:
    assert inspect(host, "volume", volume)["Name"] == volume


@pytest.mark.parametrize("name", CONTAINERS)
def test_container_running_healthy_with_its_own_healthcheck(host: Any, name: str) -> None:
    c = inspect(host, "container", name)
    assert c["State"]["Running"] is True
    assert c["Config"]["Healthcheck"]["Test"][0] == "CMD"
    assert c["State"]["Health"]["Status"] == "healthy", health_log(c)
    assert c["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert c["HostConfig"]["Init"] is True
    assert c["Config"]["User"] not in ("", "0", "root")


def test_only_nginx_publishes_a_port(host: Any) -> None:
    published = {
        name: {
            p: b
            for p, b in (inspect(host, "container", name)["HostConfig"]["PortBindings"] or {}).items()
            if b
        }
        for name in CONTAINERS
    }
    assert published.pop("prodstack-nginx") == {
        "8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(NGINX_PORT)}],
        "8443/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8443"}],
    }
    assert all(not bindings for bindings in published.values()), published


def test_nginx_config_is_mounted_read_only(host: Any) -> None:
    mounts = inspect(host, "container", "prodstack-nginx")["Mounts"]
    conf = [m for m in mounts if m["Destination"] == "/etc/nginx/conf.d"]
    assert len(conf) == 1 and conf[0]["RW"] is False


def test_nginx_health_says_ok(host: Any) -> None:
    assert http_on_target(host, "/health") == (
        200,
        "OK",
    )  # check_output strips the newline


def test_root_reports_both_dependencies_and_a_growing_counter(host: Any) -> None:
    first_status, first_body = http_on_target(host, "/")
    second_status, second_body = http_on_target(host, "/")
    # The bodies name a failed dependency and its error: a 503 says which one and why.
    assert (first_status, second_status) == (200, 200), (first_body, second_body)
    first, second = json.loads(first_body), json.loads(second_body)
    assert first["checks"]["redis"]["status"] == "ok"
    assert first["checks"]["postgres"]["status"] == "ok"
    assert second["visits"] > first["visits"]
    assert second["row_id"] > first["row_id"]


def test_live_release_records_the_version_the_app_reports(host: Any) -> None:
    """The release's label (and so the release log and `make status`) names the version the
    app itself reports: prodstack_app.__version__, carried by the image's OCI label."""
    status, body = http_on_target(host, "/")
    labels = inspect(host, "container", "prodstack-app")["Config"]["Labels"]
    assert status == 200
    assert labels["prodstack.version"] == json.loads(body)["version"] != "unknown"


def test_stack_answers_from_the_machine_through_the_target(published: Callable[[str], str]) -> None:
    address = published("8080/tcp")
    with urllib.request.urlopen(f"http://{address}/health", timeout=5) as r:
        assert r.read() == b"OK\n"
    with urllib.request.urlopen(f"http://{address}/", timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "ok" and body["failed"] == []


def test_app_database_role_is_not_a_superuser(host: Any) -> None:
    out = host.check_output(
        "docker exec prodstack-postgres psql -h /tmp -U postgres -d postgres -tAc "
        "\"select rolsuper, rolcreaterole, rolcreatedb from pg_roles where rolname = 'app'\""
    )
    assert out.strip() == "f|f|f"


def test_postgres_takes_the_connections_the_app_role_checked(host: Any) -> None:
    """The server runs with stack_common_postgres_max_connections, the limit the app role's
    preflight sized two releases' pools against."""
    common = yaml.safe_load((ansible_env()[0] / "roles/stack_common/defaults/main.yml").read_text())
    out = host.check_output(
        "docker exec prodstack-postgres psql -h /tmp -U postgres -d postgres -tAc 'show max_connections'"
    )
    assert int(out.strip()) == common["stack_common_postgres_max_connections"]


def test_redis_persists_append_only(host: Any) -> None:
    out = host.check_output(
        "docker exec prodstack-redis sh -c "
        "'REDISCLI_AUTH=$(cat /run/secrets/redis_password) redis-cli info persistence'"
    )
    assert "aof_enabled:1" in out


def test_redis_refuses_clients_without_the_password(host: Any) -> None:
    out = host.run("docker exec prodstack-redis redis-cli ping")
    assert "NOAUTH" in out.stdout + out.stderr


def test_secret_files_are_readable_by_their_one_reader(host: Any) -> None:
    directory = host.file(SECRETS_DIR)
    assert directory.is_directory and directory.mode == 0o700 and directory.uid == 0
    for name, uid in SECRET_READERS.items():
        f = host.file(f"{SECRETS_DIR}/{name}")
        assert f.is_file, name
        assert (f.mode, f.uid, f.gid) == (0o400, uid, uid), name


def test_passwords_appear_in_no_container_config(host: Any) -> None:
    secrets = {
        host.file(f"{SECRETS_DIR}/postgres_password.postgres").content_string.strip(),
        host.file(f"{SECRETS_DIR}/redis_password.redis").content_string.strip(),
    }
    assert all(len(s) >= 16 for s in secrets)
    for name in (container_name(host, n) for n in CONTAINERS):
        config = host.check_output(f"docker inspect {name}")
        for secret in secrets:
            assert secret not in config, f"a password is visible in docker inspect {name}"


def test_watchdog_timer_active_and_enabled(host: Any) -> None:
    timer = host.service("prodstack-watchdog.timer")
    assert timer.is_running and timer.is_enabled
    assert host.file("/usr/local/sbin/prodstack-watchdog").mode == 0o755
