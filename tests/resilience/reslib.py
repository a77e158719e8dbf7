"""Helpers for the resilience cases: the target, faults, converges, traffic, the report.

Faults are injected from the machine with ``docker exec TARGET docker ...`` (the target's
own engine). Traffic goes only to the target's port published on the machine's loopback.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "molecule" / "resilience"
# The values the roles share, read where the roles read them (roles/stack_common).
COMMON: dict[str, Any] = yaml.safe_load((REPO / "roles/stack_common/defaults/main.yml").read_text())
# The app role's default threads per worker: what a release has unless a case says otherwise.
APP_THREADS: int = yaml.safe_load((REPO / "roles/app/defaults/main.yml").read_text())["app_threads"]
UIDS: dict[str, int] = COMMON["stack_common_uids"]
BACKEND_NET: str = COMMON["stack_common_network"]
HOLD_DIR: str = COMMON["stack_common_hold_dir"]
NGINX, APP, REDIS, POSTGRES = (
    "prodstack-nginx",
    "prodstack-app",
    "prodstack-redis",
    "prodstack-postgres",
)
# APP stands for the live app release: each release runs as its own container
# (prodstack-app-RELEASEID), so Target resolves APP to the live one on every call.
STACK = [POSTGRES, REDIS, APP, NGINX]
RELEASE_FILE = "/etc/prodstack/nginx/conf.d/app-release.inc"
# The host watchdog's command: a test that stops a stack container on purpose holds it first.
WATCHDOG = "/usr/local/sbin/prodstack-watchdog"

# Knobs, from the environment. RESILIENCE_OUTAGE: seconds Redis and PostgreSQL stay stopped
# (cases 3, 4); RESILIENCE_SOAK_SECONDS: length of the soak (case 13); RESILIENCE_RATE:
# requests per second of the background traffic.
OUTAGE = float(os.environ.get("RESILIENCE_OUTAGE", "30"))
SOAK = float(os.environ.get("RESILIENCE_SOAK_SECONDS", "300"))
RATE = float(os.environ.get("RESILIENCE_RATE", "8"))
# The app answers within 2 s (one deadline per request across both dependencies); 0.5 s
# of margin for the client and NGINX on a loaded 2-core machine.
DEADLINE = 2.5


# --- the target ---------------------------------------------------------------------------


def target_name() -> str:
    """The one host of the Molecule inventory (prodstack-RUNID-resilience-bookworm)."""
    inventory = yaml.safe_load(Path(os.environ["MOLECULE_INVENTORY_FILE"]).read_text())
    hosts = inventory["all"]["hosts"]
    (name,) = hosts
    return str(name)


def run(argv: list[str], timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check)


class Target:
    """The Molecule target and its inner Docker engine."""

    def __init__(self, name: str) -> None:
        self.name = name

    def sh(self, *argv: str, timeout: float = 180, check: bool = True) -> str:
        if APP in argv:
            argv = tuple(self.app() if a == APP else a for a in argv)
        return run(["docker", "exec", self.name, *argv], timeout, check).stdout

    def live_release(self) -> str:
        """The release ID NGINX serves (from the file the release switch writes), or ""."""
        out = run(["docker", "exec", self.name, "cat", RELEASE_FILE], 30, False).stdout
        found = re.search(r"prodstack_release (\S+);", out)
        return found.group(1) if found else ""

    def app(self) -> str:
        """The live app container: the release NGINX serves, else the running app container
        found by its label."""
        release = self.live_release()
        if release:
            return f"{APP}-{release}"
        out = run(
            [
                "docker",
                "exec",
                self.name,
                "docker",
                "ps",
                "--filter",
                "label=prodstack.role=app",
                "--format",
                "{{.Names}}",
            ],
            30,
            False,
        ).stdout.split()
        return out[0] if out else APP

    def releases(self) -> dict[str, str]:
        """Every app release container on the target: name -> state."""
        out = self.docker(
            "ps", "-a", "--filter", "label=prodstack.release", "--format", "{{.Names}} {{.State}}"
        )
        return dict(line.split(" ", 1) for line in out.splitlines() if line)

    def docker(self, *argv: str, timeout: float = 180, check: bool = True) -> str:
        return self.sh("docker", *argv, timeout=timeout, check=check)

    def inspect(self, container: str) -> dict[str, Any]:
        out = self.docker("inspect", self.app() if container == APP else container, check=False)
        items = json.loads(out or "[]")
        return items[0] if items else {}

    def ip(self, container: str, network: str = BACKEND_NET) -> str:
        networks = self.inspect(container)["NetworkSettings"]["Networks"]
        return str(networks[network]["IPAddress"])

    def health(self, container: str) -> str:
        state = self.inspect(container).get("State", {})
        return str(state.get("Health", {}).get("Status", "missing"))

    def identity(self) -> dict[str, tuple[str, str]]:
        """Container ID and StartedAt of each stack container: unchanged means untouched."""
        out: dict[str, tuple[str, str]] = {}
        for name in STACK:
            c = self.inspect(name)
            out[name] = (
                c.get("Id", "missing"),
                c.get("State", {}).get("StartedAt", ""),
            )
        return out

    def wait_healthy(self, timeout: float = 180) -> float:
        return wait_for(lambda: all(self.health(c) == "healthy" for c in STACK), timeout)

    def watchdog_status(self) -> dict[str, dict[str, Any]]:
        """The host watchdog's view of each stack container (state, health, hold, restarts)."""
        rows = json.loads(self.sh(WATCHDOG, "status", "--json"))
        return {str(row["name"]): row for row in rows}

    def serving(self) -> bool:
        """Every stack container that should run (not held on purpose) runs healthy, one per role at least."""
        rows = [r for r in self.watchdog_status().values() if r["held"] is None]
        roles = {r["role"] for r in rows}
        return roles >= {"postgres", "redis", "app", "nginx"} and all(
            r["state"] == "running" and r["health"] == "healthy" for r in rows
        )

    def reboot(self, url: str) -> tuple[float, float]:
        """`docker restart` of the target; seconds until the stack is serving, and until `/` is 200."""
        start = time.monotonic()
        run(["docker", "restart", self.name], timeout=180)
        wait_for(self.serving, 300, 1.0)
        healthy = time.monotonic() - start
        wait_for(lambda: get(url + "/").ok, 120)
        return healthy, time.monotonic() - start

    def server_processes(self) -> dict[int, int]:
        """PID -> parent PID (in the app container) of the app server's (Granian's) main
        process and workers, found by process name: not docker-init, nor this probe."""
        script = (
            "import os\n"
            "for p in filter(str.isdigit, os.listdir('/proc')):\n"
            "    try:\n"
            "        stat = open(f'/proc/{p}/stat').read()\n"
            "    except OSError:\n"
            "        continue\n"
            "    name, fields = stat[stat.index('(') + 1:].rsplit(')', 1)\n"
            "    if name == 'granian':\n"
            "        print(p, fields.split()[1])\n"
        )
        out = self.docker("exec", APP, "python3", "-c", script).split()
        return {int(pid): int(ppid) for pid, ppid in zip(out[::2], out[1::2], strict=True)}

    def server_master(self) -> int:
        """Granian's main process: the child of docker-init (PID 1)."""
        (master,) = [pid for pid, ppid in self.server_processes().items() if ppid == 1]
        return master

    def server_master_outside(self) -> int:
        """Granian's main process as the target sees it (`docker top`): the child of the
        container's docker-init. Killed from there, not by a `docker exec` in the container:
        its death stops the container, and with it an exec still running there (rc 137)."""
        init = int(self.inspect(APP)["State"]["Pid"])
        rows = [line.split() for line in self.docker("top", APP, "-o", "pid,ppid,comm").splitlines()[1:]]
        (master,) = [int(pid) for pid, ppid, comm in rows if int(ppid) == init and comm == "granian"]
        return master

    def server_pids(self) -> list[int]:
        return sorted(self.server_processes())

    def app_ready(self) -> bool:
        """The app's own /health answers (inside its container, not through NGINX)."""
        argv = ["docker", "exec", self.name, "docker", "exec", self.app()]
        return run([*argv, "/opt/app/healthcheck.sh"], 10, False).returncode == 0

    def nginx_pids(self) -> list[str]:
        """Host PIDs of NGINX's master and workers: a reload replaces the workers."""
        out = self.docker("top", NGINX, "-o", "pid,args")
        return sorted(line.split()[0] for line in out.splitlines()[1:] if "nginx" in line)

    def sql(self, query: str) -> str:
        return self.docker("exec", POSTGRES, "psql", "-h", "/tmp", "-d", "app", "-tAc", query).strip()

    def mapping(self, port: str = "8080/tcp") -> str:
        """ADDRESS:PORT on this machine's loopback where the target publishes its `port`."""
        return run(["docker", "port", self.name, port]).stdout.split()[0]

    def published(self, port: str) -> int:
        return int(self.mapping(port).rpartition(":")[2])

    def url(self) -> str:
        """The target's port 8080 as published on this machine's loopback."""
        return f"http://{self.mapping()}"


def parse_time(stamp: str) -> float:
    """Docker's RFC 3339 nanosecond timestamps as epoch seconds."""
    main, _, frac = stamp.rstrip("Z").partition(".")
    base = datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return base.timestamp() + float(f"0.{frac or 0}")


def wait_for(pred: Callable[[], bool], timeout: float, interval: float = 0.5) -> float:
    """Seconds until pred() holds; AssertionError after timeout."""
    start = time.monotonic()
    while True:
        try:
            if pred():
                return time.monotonic() - start
        except (subprocess.SubprocessError, KeyError, ValueError, OSError):
            pass
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout:.0f} s")
        time.sleep(interval)


# --- converges ----------------------------------------------------------------------------


@dataclass
class PlayResult:
    rc: int
    seconds: float
    changed: int
    failed: int
    output: str


RECAP = re.compile(r"^\S+\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def converge(*extra: str, playbook: Path = REPO / "site.yml") -> PlayResult:
    """ansible-playbook against the Molecule inventory, with Molecule's ansible.cfg."""
    argv = [
        "ansible-playbook",
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        str(playbook),
    ]
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    start = time.monotonic()
    proc = subprocess.run(
        [*argv, *extra],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        check=False,
    )
    seconds = time.monotonic() - start
    out = proc.stdout + proc.stderr
    recaps = RECAP.findall(out)
    changed = sum(int(r[1]) for r in recaps)
    failed = sum(int(r[3]) + int(r[2]) for r in recaps)
    return PlayResult(proc.returncode, seconds, changed, failed, out)


# --- traffic ------------------------------------------------------------------------------


@dataclass
class Response:
    sent: float  # epoch seconds
    latency: float  # seconds; the timeout when status is 0
    status: int  # 0: timeout or connection error
    body: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def get(url: str, timeout: float = 3.0) -> Response:
    sent = time.time()
    start = time.monotonic()
    status, raw = 0, b""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (OSError, ValueError):
        status = 0
    latency = time.monotonic() - start
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return Response(sent, latency, status, body if isinstance(body, dict) else None)


class Traffic:
    """GET at a fixed rate in the background, bounded in count and time; keeps every answer."""

    def __init__(
        self,
        url: str,
        rate: float = RATE,
        timeout: float = 3.0,
        max_seconds: float = 900.0,
    ) -> None:
        self.url, self.rate, self.timeout = url, rate, timeout
        self.max_count = int(rate * max_seconds)
        self.responses: list[Response] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=int(rate * timeout) + 4)
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _one(self) -> None:
        r = get(self.url, self.timeout)
        with self._lock:
            self.responses.append(r)

    def _loop(self) -> None:
        start = time.monotonic()
        for i in range(self.max_count):
            delay = start + i / self.rate - time.monotonic()
            if self._stop.wait(max(0.0, delay)):
                break
            self._pool.submit(self._one)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)

    def snapshot(self) -> list[Response]:
        with self._lock:
            return sorted(self.responses, key=lambda r: r.sent)

    def between(self, t0: float, t1: float = float("inf")) -> list[Response]:
        return [r for r in self.snapshot() if t0 <= r.sent < t1]

    def wait_ok(self, after: float, count: int = 10, timeout: float = 120) -> Response:
        """First of `count` consecutive 2xx answers to requests sent after `after`."""
        found: list[Response] = []

        def streak() -> bool:
            run_: list[Response] = []
            for r in self.between(after):
                run_ = [*run_, r] if r.ok else []
                if len(run_) >= count:
                    found.append(run_[0])
                    return True
            return False

        wait_for(streak, timeout, 0.2)
        return found[0]


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def summary(responses: list[Response]) -> str:
    failed = [r for r in responses if not r.ok]
    timeouts = sum(1 for r in failed if r.status == 0)
    lat = [r.latency * 1000 for r in responses]
    return (
        f"{len(responses)} requests, {len(failed)} failed ({timeouts} timeouts), "
        f"p50 {pct(lat, 50):.0f} ms, p99 {pct(lat, 99):.0f} ms"
    )


def last_visits(responses: list[Response]) -> int:
    return max((int(r.body["visits"]) for r in responses if r.ok and r.body), default=0)


def bad_answers(responses: list[Response], codes: tuple[int, ...]) -> list[Response]:
    """Failures that are not a JSON error with one of `codes` (timeouts included)."""
    return [r for r in responses if not r.ok and (r.status not in codes or r.body is None)]


def recovery(t: Traffic, since: float) -> float:
    """Seconds from `since` to the first 2xx after the last failure (0 if none failed)."""
    after = t.between(since)
    failures = [r.sent for r in after if not r.ok]
    if not failures:
        return 0.0
    first_ok = next(r for r in after if r.ok and r.sent > failures[-1])
    return first_ok.sent - since


# --- the report ---------------------------------------------------------------------------


@dataclass
class Case:
    number: str
    title: str
    done: str = ""
    expected: str = ""
    measured: str = ""
    passed: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    cases: list[Case] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def write(self, path: Path, target: str) -> None:
        def cell(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ")

        mark = {True: "PASS", False: "**FAIL**", None: "not run"}
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        docker = run(["docker", "version", "-f", "{{.Server.Version}}"], check=False)
        lines = [
            "# Resilience: measured failure tests",
            "",
            "Generated by `molecule test -s resilience` (tests/resilience/); do not edit by hand.",
            "Traffic: a bounded client on the machine's loopback through the published NGINX",
            "port (fixed rate, 3 s timeout per request; every non-2xx and timeout counts as",
            "failed).",
            "",
            f"Machine: {platform.node()}, {os.cpu_count()} cores, Linux {platform.release()}, "
            f"Docker {docker.stdout.strip() or '?'}; target `{target}` (Debian 12). "
            f"Run: {now}, verify took {time.time() - self.started:.0f} s.",
            "",
            "| case | what was done | expected | measured | pass |",
            "|---|---|---|---|---|",
        ]
        for c in self.cases:
            lines.append(
                f"| {c.number}. {cell(c.title)} | {cell(c.done)} | {cell(c.expected)} | "
                f"{cell(c.measured)} | {mark[c.passed]} |"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")


@contextmanager
def timed() -> Iterator[Callable[[], float]]:
    start = time.monotonic()
    yield lambda: time.monotonic() - start
