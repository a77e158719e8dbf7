"""testinfra checks of the hardening: containers, networks, daemon, TLS and secrets.

docs/SECURITY.md maps each check to its CIS Docker Benchmark item.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from test_stack import BACKEND_NET, CONTAINERS, EDGE_NET, SECRETS_DIR, UIDS, container_name, inspect, run_site

BACKEND = ["prodstack-app", "prodstack-redis", "prodstack-postgres"]
CONTAINER_UID = {f"prodstack-{svc}": str(uid) for svc, uid in UIDS.items()}


@pytest.mark.parametrize("name", CONTAINERS)
def test_container_is_hardened(host: Any, name: str) -> None:
    c = inspect(host, "container", name)
    hc = c["HostConfig"]
    assert c["Config"]["User"] in (str(UIDS["app"]), "proxy-nginx", "redis", "postgres")
    assert host.check_output(f"docker exec {container_name(host, name)} id -u") == CONTAINER_UID[name]
    assert hc["ReadonlyRootfs"] is True
    assert set(hc["Tmpfs"]) == {"/tmp"}
    assert hc["CapDrop"] == ["ALL"] and not hc["CapAdd"]
    assert "no-new-privileges:true" in hc["SecurityOpt"]
    assert hc["Privileged"] is False
    assert hc["NetworkMode"] not in ("host",) and hc["PidMode"] == "" and hc["IpcMode"] != "host"
    assert hc["Memory"] > 0 and hc["PidsLimit"] and hc["PidsLimit"] > 0 and hc["CpuShares"] > 0
    assert not any("docker.sock" in m["Source"] for m in c["Mounts"])
    assert all(not m["RW"] for m in c["Mounts"] if m["Type"] == "bind")


@pytest.mark.parametrize("name", CONTAINERS)
def test_root_filesystem_refuses_writes(host: Any, name: str) -> None:
    result = host.run(f"docker exec {container_name(host, name)} sh -c 'echo x > /etc/prodstack-write-test'")
    assert result.rc != 0 and "Read-only file system" in result.stderr


@pytest.mark.parametrize("name", CONTAINERS)
def test_image_carries_healthcheck_metadata(host: Any, name: str) -> None:
    image = inspect(host, "container", name)["Image"]
    assert inspect(host, "image", image)["Config"]["Healthcheck"]["Test"]


def test_backend_network_is_internal_and_nginx_alone_on_the_edge(host: Any) -> None:
    backend = inspect(host, "network", BACKEND_NET)
    edge = inspect(host, "network", EDGE_NET)
    assert backend["Internal"] is True
    assert edge["Internal"] is False
    assert {c["Name"] for c in edge["Containers"].values()} == {"prodstack-nginx"}
    assert {c["Name"] for c in backend["Containers"].values()} == {
        container_name(host, c) for c in CONTAINERS
    }


def connects(host: Any, container: str | None, ip: str, port: int) -> bool:
    """Whether a TCP connection to ip:port opens, from the target itself or a container."""
    if container == "prodstack-nginx":  # no python in the NGINX image; curl speaks raw TCP
        probe = host.run(
            f"docker exec {container} curl -s -o /dev/null -w '%{{time_connect}}' --max-time 2 telnet://{ip}:{port}"
        )
        return float(probe.stdout or 0) > 0  # curl reports 0 when no connection was made
    script = (
        "import socket, sys\n"
        "s = socket.socket(); s.settimeout(2)\n"
        f"sys.exit(0 if s.connect_ex(('{ip}', {port})) == 0 else 1)\n"
    )
    prefix = f"docker exec {container_name(host, container)} " if container else ""
    return host.run(prefix + "python3 -c %s", script).rc == 0


def target_address(host: Any) -> str:
    return host.check_output("ip -4 -o route get 1.1.1.1 | sed -n 's/.* src \\([0-9.]*\\).*/\\1/p'")


def test_backend_cannot_reach_out_but_the_edge_can(host: Any) -> None:
    # The target's own sshd is the "outside" here (no traffic leaves this machine).
    sshd = (target_address(host), 22)
    assert connects(host, "prodstack-nginx", *sshd), "control: NGINX on the edge network must reach it"
    assert not connects(host, "prodstack-app", *sshd)
    gateway = inspect(host, "network", BACKEND_NET)["IPAM"]["Config"][0]["Gateway"]
    assert not connects(host, "prodstack-app", gateway, 22)


@pytest.mark.parametrize("name", BACKEND)
def test_backend_container_unreachable_from_the_host(host: Any, name: str) -> None:
    ip = inspect(host, "container", name)["NetworkSettings"]["Networks"][BACKEND_NET]["IPAddress"]
    port = {"prodstack-app": 5000, "prodstack-redis": 6379, "prodstack-postgres": 5432}[name]
    assert not connects(host, None, ip, port), f"{name} at {ip}:{port} answers the host"


def test_nginx_reachable_on_the_edge_from_the_host(host: Any) -> None:
    """Control for the test above: the same probe does connect where it should."""
    ip = inspect(host, "container", "prodstack-nginx")["NetworkSettings"]["Networks"][EDGE_NET]["IPAddress"]
    assert connects(host, None, ip, 8080)


def test_daemon_configuration(host: Any) -> None:
    f = host.file("/etc/docker/daemon.json")
    assert (f.user, f.group, f.mode) == ("root", "root", 0o644)
    config = json.loads(f.content_string)
    assert config["live-restore"] is True
    assert config["userland-proxy"] is False
    assert config["no-new-privileges"] is True
    assert config["icc"] is False
    info = json.loads(host.check_output("docker info --format '{{json .}}'"))
    assert info["LiveRestoreEnabled"] is True
    sock = host.file("/var/run/docker.sock")
    assert sock.is_socket and (sock.user, sock.group, sock.mode) == (
        "root",
        "docker",
        0o660,
    )


def test_postgres_accepts_only_the_app_role_from_the_backend_network(host: Any) -> None:
    subnet = inspect(host, "network", BACKEND_NET)["IPAM"]["Config"][0]["Subnet"]
    rules = host.check_output(
        "docker exec prodstack-postgres sh -c \"grep -Ev '^(#|$)' /var/lib/postgresql/data/pg_hba.conf\""
    ).splitlines()
    assert [r.split() for r in rules] == [
        ["local", "all", "postgres", "peer"],
        ["host", "app", "app", subnet, "scram-sha-256"],
    ]


def test_redis_dangerous_commands_are_gone(host: Any) -> None:
    for command in ("CONFIG GET dir", "FLUSHALL", "DEBUG SLEEP 0"):
        out = host.check_output(
            "docker exec prodstack-redis sh -c "
            f"'REDISCLI_AUTH=$(cat /run/secrets/redis_password) redis-cli {command}'"
        )
        assert "unknown command" in out, (command, out)


def test_tls_serves_modern_protocols_only_with_hsts(published: Callable[[str], str]) -> None:
    address = published("8443/tcp")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(f"https://{address}/health", context=ctx, timeout=5) as r:
        assert r.read() == b"OK\n"
        assert r.headers["Strict-Transport-Security"].startswith("max-age=")
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionResetError)):
        urllib.request.urlopen(f"https://{address}/health", context=old, timeout=5)


def test_security_headers_on_http_without_hsts(published: Callable[[str], str]) -> None:
    with urllib.request.urlopen(f"http://{published('8080/tcp')}/", timeout=10) as r:
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["X-Frame-Options"] == "DENY"
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]
        assert r.headers["Strict-Transport-Security"] is None
        assert r.headers["Server"] == "nginx"  # server_tokens off: no version


def test_tls_key_readable_by_nginx_only(host: Any) -> None:
    key = host.file("/etc/prodstack/nginx/tls/tls.key")
    assert (key.uid, key.mode) == (UIDS["nginx"], 0o400)


def read_secrets(host: Any) -> list[str]:
    secrets = [
        host.file(f"{SECRETS_DIR}/postgres_password.postgres").content_string.strip(),
        host.file(f"{SECRETS_DIR}/redis_password.redis").content_string.strip(),
    ]
    assert all(len(s) >= 16 for s in secrets)
    return secrets


def test_secret_values_in_no_inspect_log_or_image(host: Any) -> None:
    secrets = read_secrets(host)
    for name in (container_name(host, n) for n in CONTAINERS):
        logs = host.run(f"docker logs {name}")
        image = inspect(host, "container", name)["Image"]
        texts = {
            "docker inspect": host.check_output(f"docker inspect {name}"),
            "docker logs": logs.stdout + logs.stderr,
            "image history": host.check_output(f"docker history --no-trunc {image}"),
        }
        for secret in secrets:
            for where, text in texts.items():
                assert secret not in text, f"a password appears in {where} of {name}"
            # Every byte of every layer of the image.
            in_layers = host.run("docker save %s | grep -a -c -F -e %s", image, secret)
            assert in_layers.stdout.strip() == "0", f"a password appears in the layers of {name}'s image"


def test_check_mode_changes_nothing_and_prints_no_secret(host: Any) -> None:
    """`ansible-playbook site.yml --check --diff -v` on the converged host: changed=0, no secret."""
    name = host.backend.get_hostname()
    output, recap = run_site(
        os.environ["MOLECULE_INVENTORY_FILE"], "--check", "--diff", "-v", "--limit", name, timeout=600
    )
    assert name in recap and "changed=0" in recap, recap
    for secret in read_secrets(host):
        assert secret not in output, "a password appears in Ansible's output"
