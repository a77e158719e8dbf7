"""Paths, knobs (environment) and the small helpers every part of the bench uses."""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


BENCH = ROOT / "bench"


DURATION = int(os.environ.get("BENCH_DURATION", "15"))


WARMUP = int(os.environ.get("BENCH_WARMUP", "3"))


CONNECTIONS = [int(c) for c in os.environ.get("BENCH_CONNECTIONS", "16 64").split()]


WRK_THREADS = int(os.environ.get("BENCH_THREADS", "2"))


BASE_IMAGE = os.environ.get("BENCH_BASE_IMAGE", "prodstack/debian:bookworm")


DOC = Path(os.environ.get("BENCH_DOC", str(ROOT / "out" / "PERFORMANCE.md")))


TARGET_IMAGE = "prodstack/molecule-target:bookworm"


def role_default(role: str, name: str) -> Any:
    """A variable's value in roles/ROLE/defaults/main.yml (a literal one: nothing templated)."""
    path = ROOT / "roles" / role / "defaults" / "main.yml"
    defaults = yaml.safe_load(path.read_text())
    if name not in defaults:
        raise RuntimeError(f"{name} not found in {path.relative_to(ROOT)}")
    return defaults[name]


APP_HEALTH_PATH = "/app-health"


# The file the app role's release switch writes: `set $prodstack_release <release id>;`.
RELEASE_FILE = "/etc/prodstack/nginx/conf.d/app-release.inc"


# Poll interval of the release timeline (GET / through NGINX), seconds.
POLL_INTERVAL = 0.1


APP_HEALTH_LOCATION = """
    # Added by the bench (bench/target.py): the app's own /health through NGINX (benchmark only),
    # to the live release ($app_upstream, set by the release file).
    location = /app-health {
        rewrite ^ /health break;
        proxy_pass $app_upstream;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Request-ID $prodstack_request_id;
        proxy_hide_header X-Request-ID;
        add_header X-Request-ID $prodstack_request_id always;
        proxy_connect_timeout 2s;
        proxy_read_timeout 10s;
        error_page 502 503 504 = @app_unavailable;
    }
"""


IMAGE_TASK_RE = re.compile(r"build the images|load the missing|copy the missing|base image", re.I)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(
    cmd: list[str],
    *,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    input_bytes: bytes | None = None,
) -> str:
    proc = subprocess.run(cmd, capture_output=True, env=env, timeout=timeout, input=input_bytes)
    out = proc.stdout.decode(errors="replace")
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n{out[-2000:]}"
            f"{proc.stderr.decode(errors='replace')[-2000:]}"
        )
    return out


def free_port() -> int:
    for _ in range(200):
        port = 20000 + int.from_bytes(os.urandom(2), "big") % 20000
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if not run(["ss", "-Htln", f"sport = :{port}"], check=False).strip():
            return port
    raise RuntimeError("no free port found")


def http_status(url: str, timeout: float = 1.0) -> int:
    try:
        ctx = ssl._create_unverified_context()  # the stack's self-signed certificate
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except Exception:
        return 0


# A warm converge measures Ansible, not the previous run's aftermath: right after a cold
# converge the stack's containers are still starting and one run took 10.2-11.6 s against
# 9.6-10.0 s once the machine was quiet (measured by hand, same target). Linux's CPU
# pressure (the share of the last 10 s some task waited for a CPU) says when it is quiet.
CPU_PRESSURE = Path("/proc/pressure/cpu")
QUIET_PRESSURE = float(os.environ.get("BENCH_QUIET_PRESSURE", "5"))
QUIET_TIMEOUT = 90.0


def cpu_pressure() -> float | None:
    """/proc/pressure/cpu's `some avg10` (percent), None where the kernel has no PSI."""
    try:
        first = CPU_PRESSURE.read_text().splitlines()[0]
    except OSError:
        return None
    return float(dict(f.split("=") for f in first.split()[1:])["avg10"])


def settle() -> dict[str, Any]:
    """Wait until the CPU pressure is at most QUIET_PRESSURE (or QUIET_TIMEOUT passed); say
    how long that took, the pressure when the wait ended (None: the kernel has no PSI) and
    the two limits the wait had, for the report."""
    start = time.monotonic()
    while (
        (p := cpu_pressure()) is not None and p > QUIET_PRESSURE and time.monotonic() - start < QUIET_TIMEOUT
    ):
        time.sleep(1)
    return {
        "waited": time.monotonic() - start,
        "pressure": p,
        "limit": QUIET_PRESSURE,
        "timeout": QUIET_TIMEOUT,
    }


def wait_status(url: str, want: int = 200, timeout: float = 120.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if http_status(url) == want:
            return time.monotonic() - start
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer {want} within {timeout:.0f} s")
