"""The app role run for real against this machine's Docker engine, for test_your_app.py.

`ansible-playbook` runs the role on localhost (connection local) with every host path it
writes (secret files, NGINX's conf.d, hold files, release log, Docker's login config) in a
temporary directory of this run, and every container named after the run: nothing else on
the machine or the engine changes. A second NGINX of the stack's image (nginx_extra) is the
proxy the release gate probes from and the switch reloads.

The registry is Debian's `docker-registry` (scripts/ensure-packages.sh installs it) on a free
port of the test network's gateway address, with TLS from a CA made here and htpasswd auth
(the registry requires TLS for htpasswd).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from conftest import BASE_IMAGE, REPO, Stack, docker


def build(tag: str, context: Path | None = None, dockerfile: str | None = None) -> None:
    """docker build of a folder, or of a Dockerfile given as text (no context)."""
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    argv = ["docker", "build", "-q", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", tag]
    argv.append(str(context) if context else "-")
    proc = subprocess.run(argv, input=dockerfile, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, f"build {tag} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"


@dataclass
class Play:
    rc: int
    output: str

    def recap_changed(self) -> int:
        found = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", self.output)
        assert found, self.output[-3000:]
        return int(found.group(1))


@dataclass
class RoleRun:
    """Runs the app role (or one of its task files) with this run's paths and names."""

    stack: Stack
    proxy: str
    conf_dir: Path
    base_url: str  # the proxy's published address, http://127.0.0.1:PORT
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pst-yourapp-")))

    def __post_init__(self) -> None:
        self.secrets_dir = self.root / "secrets"
        self.secrets_dir.mkdir(mode=0o700)
        self.home = self.root / "home"  # HOME of the play: docker_login's ~/.docker/config.json
        self.home.mkdir()
        self.container_prefix = f"{self.stack.prefix}-yourapp-app"
        self.images: list[str] = []  # removed by cleanup(), after the releases that use them

    def base_vars(self) -> dict[str, Any]:
        return {
            "ansible_python_interpreter": sys.executable,
            "app_container_name": self.container_prefix,
            "app_network": self.stack.net,
            "app_subnet": str(self.stack.subnet),
            "app_workers": 2,
            "app_redis_password": self.stack.redis_password,
            "app_postgres_password": self.stack.postgres_password,
            "app_secrets_dir": str(self.secrets_dir),
            "app_hold_dir": str(self.root / "hold"),
            "app_release_log": str(self.root / "releases.log"),
            "app_releases_retained": 5,
            "app_proxy_container": self.proxy,
            "nginx_container_name": self.proxy,
            "nginx_config_dir": str(self.conf_dir),
        }

    def run(self, tasks: list[dict[str, Any]], extra: dict[str, Any]) -> Play:
        play = [{"name": "yourapp", "hosts": "localhost", "gather_facts": False, "tasks": tasks}]
        (self.root / "play.yml").write_text(json.dumps(play))
        (self.root / "vars.json").write_text(json.dumps({**self.base_vars(), **extra}))
        env = {
            **os.environ,
            "HOME": str(self.home),
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
            "ANSIBLE_NOCOLOR": "1",
        }
        argv = [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i", "localhost,", "-c", "local",
            "-e", f"@{self.root / 'vars.json'}", str(self.root / "play.yml"),
        ]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
        return Play(proc.returncode, proc.stdout + proc.stderr)

    def deploy(self, **extra: Any) -> Play:
        return self.run([{"ansible.builtin.import_role": {"name": "app"}}], extra)

    def preflight(self, role: str = "app", tasks_from: str = "preflight", **extra: Any) -> Play:
        step = {"ansible.builtin.include_role": {"name": role, "tasks_from": tasks_from}}
        return self.run([step], extra)

    def releases(self) -> list[dict[str, Any]]:
        out = docker(
            "ps", "-a", "--filter", f"name=^{self.container_prefix}-", "--format", "{{json .}}"
        ).stdout.split("\n")
        return [json.loads(line) for line in out if line.strip()]

    def live_release(self) -> str:
        text = (self.conf_dir / "app-release.inc").read_text()
        found = re.search(r"prodstack_release ([^;]+);", text)
        assert found, text
        return found.group(1)

    def cleanup(self) -> None:
        for rel in self.releases():
            docker("rm", "-fv", rel["Names"], check=False)
        for image in self.images:
            docker("rmi", "--no-prune", image, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def registry(workdir: Path, user: str, password: str, address: str) -> Iterator[tuple[str, str]]:
    """Debian's docker-registry on address:<free port>, TLS with a CA made here, htpasswd auth.
    Not on loopback: Docker trusts any certificate of a registry on 127.0.0.0/8, so there the
    CA would prove nothing; `address` is the gateway of the test's own network. Yields
    (host:port, the CA's PEM); stopped afterwards."""
    if shutil.which("docker-registry") is None:
        raise RuntimeError("docker-registry is not installed (scripts/ensure-packages.sh installs it)")
    workdir.mkdir()
    port = free_port(address)
    host = f"{address}:{port}"
    ossl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    subprocess.run(
        [*ossl, "-keyout", str(workdir / "ca.key"), "-out", str(workdir / "ca.crt"),
         "-subj", "/CN=yourapp test CA"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(workdir / "tls.key"),
         "-out", str(workdir / "tls.csr"), "-subj", f"/CN={address}"],
        check=True, capture_output=True,
    )  # fmt: skip
    (workdir / "san.ext").write_text(f"subjectAltName=IP:{address}\n")
    subprocess.run(
        ["openssl", "x509", "-req", "-in", str(workdir / "tls.csr"), "-CA", str(workdir / "ca.crt"),
         "-CAkey", str(workdir / "ca.key"), "-CAcreateserial", "-days", "2",
         "-extfile", str(workdir / "san.ext"), "-out", str(workdir / "tls.crt")],
        check=True, capture_output=True,
    )  # fmt: skip
    with warnings.catch_warnings():  # crypt: the stdlib's bcrypt ($2b$) through libxcrypt
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))
    (workdir / "htpasswd").write_text(f"{user}:{hashed}\n")
    config = {
        "version": 0.1,
        "log": {"level": "info"},
        "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}},
        "http": {
            "addr": host,
            "tls": {"certificate": str(workdir / "tls.crt"), "key": str(workdir / "tls.key")},
        },
        "auth": {"htpasswd": {"realm": "yourapp", "path": str(workdir / "htpasswd")}},
    }
    (workdir / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    log = (workdir / "registry.log").open("w")
    proc = subprocess.Popen(["docker-registry", "serve", str(workdir / "config.yml")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                resp = requests.get(f"https://{host}/v2/", verify=str(workdir / "ca.crt"), timeout=2)
                assert resp.status_code == 401, resp.status_code  # auth on, TLS trusted
                break
            except requests.ConnectionError:
                assert proc.poll() is None, (workdir / "registry.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "docker-registry did not answer"
                time.sleep(0.3)
        yield host, (workdir / "ca.crt").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def push(image: str, host: str, repo: str, user: str, password: str, config_dir: Path) -> str:
    """Push image as host/repo:1 with a login kept in config_dir; return host/repo@sha256:..."""
    ref = f"{host}/{repo}:1"
    cfg = ["--config", str(config_dir)]
    docker("tag", image, ref)
    docker(*cfg, "login", "-u", user, "--password-stdin", host, input=password)
    out = docker(*cfg, "push", ref, timeout=300).stdout
    found = re.search(r"digest: (sha256:[0-9a-f]{64})", out)
    assert found, out
    return f"{host}/{repo}@{found.group(1)}"
