"""Real Redis, PostgreSQL and the app (Granian) processes on loopback, on free ports.

PostgreSQL refuses to run as root, so initdb/pg_ctl run as the Debian ``postgres``
OS user through ``runuser``; its throwaway directory is chowned to that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

APP_DIR = Path(__file__).resolve().parent.parent
# The container's own entry point: checks the settings, then becomes Granian.
SERVE = [sys.executable, "-m", "prodstack_app.serve"]
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_PASSWORD = "redis-test-secret"
PG_PASSWORD = "pg-test-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {timeout}s")


class RedisServer:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.dir = tmp / "redis"
        self.dir.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
             "--appendonly", "yes", "--dir", str(self.dir), "--save", "",
             "--requirepass", REDIS_PASSWORD, "--daemonize", "no"],
            stdout=(self.dir / "redis.log").open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class PostgresServer:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.root = tmp / "pg"
        self.root.mkdir()
        self.data = self.root / "data"
        pw = pwd.getpwnam("postgres")
        os.chown(tmp, pw.pw_uid, pw.pw_gid)  # parent must be traversable
        os.chown(self.root, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def init(self) -> None:
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                  "--no-sync")  # fmt: skip
        self.start()
        with psycopg.connect(host=str(self.root), port=self.port, user="postgres",
                             dbname="postgres", autocommit=True) as conn:  # fmt: skip
            conn.execute(f"CREATE ROLE app LOGIN PASSWORD '{PG_PASSWORD}'")
            conn.execute("CREATE DATABASE app OWNER app")

    def start(self) -> None:
        opts = f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off"
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", opts,
                  "-l", str(self.root / "pg.log"), "-w", "-t", "30", "start")  # fmt: skip

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                      "-w", "stop")  # fmt: skip

    def count_rows(self) -> int:
        with psycopg.connect(host="127.0.0.1", port=self.port, user="app",
                             password=PG_PASSWORD, dbname="app") as conn:  # fmt: skip
            row = conn.execute("SELECT count(*) FROM visits").fetchone()
            assert row is not None
            return int(row[0])


class Blackhole:
    """Accepts TCP connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.conns: list[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            with contextlib.suppress(OSError):
                self.conns.append(self.sock.accept()[0])

    def close(self) -> None:
        self._stop = True
        for c in self.conns:
            c.close()
        self.sock.close()


class App:
    """The app under Granian as a subprocess; JSON log lines go to a file."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.out = tmp / f"app-{self.port}.out"
        self.err = tmp / f"app-{self.port}.err"
        self.env = {**os.environ, "APP_PORT": str(self.port), "APP_WORKERS": "2",
                    "APP_THREADS": "4", "APP_ACCESS_LOG": "1", "PYTHONUNBUFFERED": "1",
                    **env}  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            SERVE,
            cwd=APP_DIR, env=self.env,
            stdout=self.out.open("ab"), stderr=self.err.open("ab"),
            start_new_session=True,
        )  # fmt: skip
        end = time.monotonic() + 20
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited: {self.err.read_text()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("the app did not become healthy")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=10, **kw)


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="prodstack-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(tmp_root: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_root)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_server(tmp_root: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_root)
    try:
        server.init()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def secrets(tmp_root: Path) -> dict[str, str]:
    redis_pw = tmp_root / "redis_password"
    redis_pw.write_text(REDIS_PASSWORD + "\n")
    pg_pw = tmp_root / "pg_password"
    pg_pw.write_text(PG_PASSWORD + "\n")
    return {"APP_REDIS_PASSWORD_FILE": str(redis_pw), "APP_POSTGRES_PASSWORD_FILE": str(pg_pw)}


def app_env(secrets: dict[str, str], redis_port: int, pg_port: int) -> dict[str, str]:
    return {
        "APP_REDIS_HOST": "127.0.0.1",
        "APP_REDIS_PORT": str(redis_port),
        "APP_POSTGRES_HOST": "127.0.0.1",
        "APP_POSTGRES_PORT": str(pg_port),
        "APP_POSTGRES_DB": "app",
        "APP_POSTGRES_USER": "app",
        "APP_VERSION": "test-1.2.3",
        **secrets,
    }


@pytest.fixture(scope="session")
def app(
    tmp_root: Path, redis_server: RedisServer, pg_server: PostgresServer, secrets: dict[str, str]
) -> Iterator[App]:
    proc = App(tmp_root, app_env(secrets, redis_server.port, pg_server.port))
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def redis_down(redis_server: RedisServer) -> Iterator[RedisServer]:
    """Redis stopped for the test; always restarted afterwards."""
    redis_server.stop()
    try:
        yield redis_server
    finally:
        if redis_server.proc is None:
            redis_server.start()


@pytest.fixture
def pg_down(pg_server: PostgresServer) -> Iterator[PostgresServer]:
    """PostgreSQL stopped for the test; always restarted afterwards."""
    pg_server.stop()
    try:
        yield pg_server
    finally:
        if not (pg_server.data / "postmaster.pid").exists():
            pg_server.start()
