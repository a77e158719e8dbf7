"""Container-level integration tests: the four images built and run as one stack.

Every Docker object made here is named ``pst-<run id>-...`` and removed at the end of the
session, also when a test or the set-up fails. The images are the deploy's own (built by
playbooks/images.yml, tagged by content) and stay, as the build cache every stage shares. Nothing else on
the engine is touched: other engineers run their own containers on the same daemon.

Run:  .venv/bin/pytest -q tests/containers        (select with ``-m containers``)
Env:  PST_BASE_IMAGE  base image for every build (default prodstack/debian:bookworm)
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "shared"))
from docker_health import health_log  # noqa: E402

RUN_ID = secrets.token_hex(3)
PREFIX = f"pst-{RUN_ID}"
BASE_IMAGE = os.environ.get("PST_BASE_IMAGE", "prodstack/debian:bookworm")
SERVICES = ("app", "nginx", "redis", "postgres")
HEALTH_TIMEOUT = 90.0

# The UID each image runs as (stack_common, the roles' one place for it); each reader gets
# its own copy of a secret owned by it.
COMMON: dict[str, Any] = yaml.safe_load((REPO / "roles/stack_common/defaults/main.yml").read_text())
UIDS: dict[str, int] = COMMON["stack_common_uids"]

_REPORT: list[str] = []
_SESSION_START = time.monotonic()


# --------------------------------------------------------------------------- pytest hooks
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "containers: builds the Docker images and runs the whole stack (slow)",
    )


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _REPORT:
        return
    terminalreporter.section(f"container stack report (run {PREFIX})")
    for line in _REPORT:
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"total container-test runtime: {time.monotonic() - _SESSION_START:.1f} s")


@pytest.fixture(scope="session")
def report() -> Callable[[str], None]:
    """Lines shown in the terminal summary (visible with -q, unlike captured prints)."""

    def add(line: str) -> None:
        print(line)
        _REPORT.append(line)

    return add


def load_script(path: Path) -> ModuleType:
    """A project script (not a package module) imported by path, to test its functions."""
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- docker CLI
class DockerError(RuntimeError):
    pass


def docker(
    *args: str, check: bool = True, timeout: float = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            ["docker", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
    except subprocess.TimeoutExpired as exc:
        raise DockerError(f"docker {' '.join(args)}: timed out after {timeout} s") from exc
    if check and proc.returncode != 0:
        raise DockerError(
            f"docker {' '.join(args)} -> rc {proc.returncode}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return proc


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.3)


def docker_available() -> tuple[bool, str]:
    if shutil.which("docker") is None:
        return False, "docker CLI not found"
    try:
        proc = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"docker info failed: {exc}"
    if proc.returncode != 0:
        return False, f"docker info failed: {proc.stderr.strip()[:300]}"
    return True, proc.stdout.strip()


def _used_networks() -> list[ipaddress.IPv4Network]:
    used: list[ipaddress.IPv4Network] = []
    ids = docker("network", "ls", "-q").stdout.split()
    if ids:
        for line in docker(
            "network",
            "inspect",
            "--format",
            "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
            *ids,
        ).stdout.split():
            try:
                net = ipaddress.ip_network(line, strict=False)
            except ValueError:
                continue
            if isinstance(net, ipaddress.IPv4Network):
                used.append(net)
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        lines = []
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        dest = ipaddress.IPv4Address(int(fields[1], 16).to_bytes(4, "little"))
        mask = ipaddress.IPv4Address(int(fields[7], 16).to_bytes(4, "little"))
        net = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        if net.prefixlen > 0:
            used.append(net)
    return used


# --------------------------------------------------------------------------- the stack
class Stack:
    """The running stack plus helpers; one per session."""

    services = SERVICES
    uids = UIDS
    docker = staticmethod(docker)

    def __init__(self) -> None:
        self.prefix = PREFIX
        self.net = f"{PREFIX}-net"
        self.images: dict[str, str] = {}  # service -> REPOSITORY:TAG, set by build_images()
        self.names = {svc: f"{PREFIX}-{svc}" for svc in SERVICES}
        self.volumes = {
            "redis": f"{PREFIX}-redis-data",
            "postgres": f"{PREFIX}-pg-data",
        }
        self.subnet: ipaddress.IPv4Network | None = None
        self.secrets_dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-secrets-"))
        self.redis_password = secrets.token_urlsafe(24)
        self.postgres_password = secrets.token_urlsafe(24)
        self.port: int | None = None
        self.facts: dict[str, Any] = {}  # observations made during start-up (test 2)

    # ---- images
    def build_images(self) -> None:
        """The four images, built the way a deploy builds them (playbooks/images.yml runs
        stack_images): the same tags, so a later Molecule stage finds them built. They are
        that shared build cache, not this run's objects, and stay after the session."""
        suite = BASE_IMAGE.rsplit(":", 1)[-1]
        with tempfile.NamedTemporaryFile(prefix=f"{PREFIX}-refs-", suffix=".json") as refs:
            proc = subprocess.run(
                [
                    str(Path(sys.executable).parent / "ansible-playbook"), "playbooks/images.yml",
                    "-e", f"stack_images_base_image={BASE_IMAGE}", "-e", f"stack_images_base_suite={suite}",
                    "-e", f"prodstack_images_refs_file={refs.name}",
                ],
                capture_output=True, text=True, cwd=REPO, timeout=1800,
                env={**os.environ, "ANSIBLE_NOCOLOR": "1"},
            )  # fmt: skip
            if proc.returncode != 0:
                raise DockerError(f"playbooks/images.yml failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
            self.images = json.loads(Path(refs.name).read_text())

    # ---- secrets: one copy per reader, owned by its UID, 0400, mounted read-only
    def secret_file(self, reader: str, name: str, value: str) -> Path:
        d = self.secrets_dir / reader
        d.mkdir(mode=0o700, exist_ok=True)
        path = d / name
        path.write_text(value + "\n")
        os.chown(path, UIDS[reader], UIDS[reader])
        path.chmod(0o400)
        return path

    def _mount(self, reader: str, name: str, value: str) -> list[str]:
        path = self.secret_file(reader, name, value)
        return [
            "--mount",
            f"type=bind,source={path},target=/run/secrets/{name},readonly",
        ]

    # ---- network / volumes
    def create_network(self) -> None:
        used = _used_networks()
        last: Exception | None = None
        for _ in range(8):
            cand = ipaddress.IPv4Network(f"10.{random.randint(150, 250)}.{random.randint(0, 255)}.0/24")
            if any(cand.overlaps(n) for n in used):
                continue
            try:
                # An explicit subnet, so that a placeholder can take a given --ip (test 3).
                docker(
                    "network",
                    "create",
                    "--driver",
                    "bridge",
                    "--subnet",
                    str(cand),
                    self.net,
                )
            except DockerError as exc:
                last = exc
                used.append(cand)
                continue
            self.subnet = cand
            return
        raise DockerError(f"no free subnet for {self.net}: {last}")

    def create_volumes(self) -> None:
        for vol in self.volumes.values():
            docker("volume", "create", vol)

    # ---- containers
    def _run(self, svc: str, *args: str, alias: str | None = None, cmd: tuple[str, ...] = ()) -> None:
        docker(
            "run", "-d", "--init", "--name", self.names[svc], "--network", self.net,
            "--network-alias", alias or svc, *args, self.images[svc], *cmd,
        )  # fmt: skip

    def run_redis(self) -> None:
        self._run(
            "redis",
            "-e", "REDIS_PASSWORD_FILE=/run/secrets/redis_password",
            *self._mount("redis", "redis_password", self.redis_password),
            "-v", f"{self.volumes['redis']}:/data",
        )  # fmt: skip

    def run_postgres(self) -> None:
        self._run(
            "postgres",
            "-e", "POSTGRES_PASSWORD_FILE=/run/secrets/postgres_password",
            "-e", "POSTGRES_USER=app",
            "-e", "POSTGRES_DB=app",
            *self._mount("postgres", "postgres_password", self.postgres_password),
            "-v", f"{self.volumes['postgres']}:/var/lib/postgresql/data",
        )  # fmt: skip

    def run_nginx(self) -> None:
        # Only NGINX is published, on loopback; Docker picks a free host port at run time.
        self._run("nginx", "-p", "127.0.0.1::8080")
        out = docker("port", self.names["nginx"], "8080/tcp").stdout.split()
        host, _, port = out[0].rpartition(":")
        assert host == "127.0.0.1", out
        self.port = int(port)

    def run_app(self, *extra: str) -> None:
        self._run(
            "app",
            "-e", "APP_WORKERS=2",
            "-e", "APP_REDIS_PASSWORD_FILE=/run/secrets/redis_password",
            "-e", "APP_POSTGRES_PASSWORD_FILE=/run/secrets/postgres_password",
            *self._mount("app", "redis_password", self.redis_password),
            *self._mount("app", "postgres_password", self.postgres_password),
            *extra,
        )  # fmt: skip

    def run_placeholder(self, ip: str) -> str:
        name = f"{PREFIX}-placeholder"
        docker(
            "run", "-d", "--init", "--name", name, "--network", self.net, "--ip", ip,
            BASE_IMAGE, "sleep", "infinity",
        )  # fmt: skip
        return name

    def all_containers(self) -> list[str]:
        names = docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
        return [n for n in names if n.startswith(f"{PREFIX}-")]

    # ---- inspection
    @staticmethod
    def inspect(name: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(docker("inspect", name).stdout)
        return data[0]

    def state(self, svc: str) -> dict[str, Any]:
        st: dict[str, Any] = self.inspect(self.names[svc])["State"]
        return st

    def ip(self, svc: str) -> str:
        nets = self.inspect(self.names[svc])["NetworkSettings"]["Networks"]
        return str(nets[self.net]["IPAddress"])

    def start_info(self, svc: str) -> tuple[str, int]:
        info = self.inspect(self.names[svc])
        return info["State"]["StartedAt"], int(info["RestartCount"])

    def exec(
        self, svc: str, *cmd: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        env_args = [a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")]
        return docker("exec", *env_args, self.names[svc], *cmd, check=False, timeout=30)

    def nginx_processes(self) -> tuple[int, list[int]]:
        """(master PID from /tmp/nginx.pid, sorted PIDs of its children) inside the container."""
        master = int(self.exec("nginx", "cat", "/tmp/nginx.pid").stdout.strip())
        stats = self.exec("nginx", "sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null").stdout
        children = []
        for line in stats.splitlines():
            pid, _, rest = line.partition(" (")
            fields = rest.rpartition(") ")[2].split()
            if len(fields) >= 2 and int(fields[1]) == master:
                children.append(int(pid))
        return master, sorted(children)

    def health_log(self, name: str) -> str:
        return health_log(self.inspect(name))

    def diagnostics(self) -> str:
        out = []
        for name in self.all_containers():
            try:
                out.append(self.health_log(name))
            except DockerError as exc:
                out.append(f"== {name}: {exc}")
            logs = docker("logs", "--tail", "40", name, check=False, timeout=30)
            out.append(f"-- docker logs --tail 40 {name}:\n{logs.stdout}{logs.stderr}")
        return "\n".join(out)

    def wait_healthy(self, services: tuple[str, ...] = SERVICES, timeout: float = HEALTH_TIMEOUT) -> float:
        started = time.monotonic()
        deadline = started + timeout
        while True:
            status = {}
            for svc in services:
                st = self.state(svc)
                status[svc] = (st.get("Health") or {}).get("Status") or st.get("Status")
                if st.get("Status") in ("exited", "dead"):
                    status[svc] = f"container {st.get('Status')} (exit {st.get('ExitCode')})"
            if all(s == "healthy" for s in status.values()):
                return time.monotonic() - started
            if time.monotonic() > deadline or any(str(s).startswith("container ") for s in status.values()):
                diag = self.diagnostics()
                print(diag)
                raise AssertionError(
                    f"stack not healthy after {time.monotonic() - started:.0f} s: {status}\n{diag}"
                )
            time.sleep(1)

    # ---- HTTP through NGINX
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str = "/", **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 5)
        return requests.get(self.url + path, **kw)

    def poll(
        self,
        pred: Callable[[requests.Response], bool],
        timeout: float,
        interval: float = 0.2,
        **kw: Any,
    ) -> tuple[requests.Response | None, float]:
        """GET / until pred(response); returns (response or None, seconds waited)."""
        kw.setdefault("timeout", 3)
        started = time.monotonic()
        last = None
        while time.monotonic() - started < timeout:
            try:
                last = self.get("/", **kw)
                if pred(last):
                    return last, time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(interval)
        return None, time.monotonic() - started

    # ---- teardown
    def teardown(self) -> None:
        for name in self.all_containers():
            docker("rm", "-fv", name, check=False)
        docker("network", "rm", self.net, check=False)
        for vol in docker("volume", "ls", "-q").stdout.split():
            if vol.startswith(f"{PREFIX}-"):
                docker("volume", "rm", "-f", vol, check=False)
        shutil.rmtree(self.secrets_dir, ignore_errors=True)


def _wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise AssertionError(f"NGINX /health on 127.0.0.1:{port} not answering after {timeout} s")


@pytest.fixture(scope="session")
def stack(report: Callable[[str], None]) -> Iterator[Stack]:
    ok, info = docker_available()
    if not ok:
        pytest.skip(f"Docker engine not usable: {info}")
    st = Stack()
    try:
        t0 = time.monotonic()
        st.build_images()
        report(f"images built/verified in {time.monotonic() - t0:.1f} s (base {BASE_IMAGE})")
        st.create_network()
        st.create_volumes()
        st.run_redis()
        st.run_postgres()
        # NGINX first, while no "app" exists on the network (test 2 checks what it answered).
        st.run_nginx()
        assert st.port is not None
        _wait_port(st.port)
        rid = f"pst-preapp-{RUN_ID}"
        pre = st.get("/", headers={"X-Request-ID": rid})
        st.facts["pre_app"] = {
            "request_id": rid,
            "status": pre.status_code,
            "content_type": pre.headers.get("Content-Type", ""),
            "text": pre.text,
            "request_ids": pre.raw.headers.getlist("X-Request-ID"),
        }
        st.facts["nginx_before_app"] = (st.start_info("nginx"), st.nginx_processes())
        st.run_app()
        t_app = time.monotonic()
        resp, waited = st.poll(lambda r: r.status_code == 200, timeout=HEALTH_TIMEOUT)
        st.facts["app_first_200_s"] = waited if resp is not None else None
        st.facts["healthy_after_s"] = st.wait_healthy()
        report(
            f"stack healthy {time.monotonic() - t0:.1f} s after start of set-up; first 200 via "
            f"NGINX {waited:.1f} s after `docker run` app; all healthy "
            f"{time.monotonic() - t_app:.1f} s after it"
        )
        yield st
    finally:
        st.teardown()
