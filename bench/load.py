"""Load and timing measurements: wrk rows, NGINX alone, recovery after a recreate."""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import CONNECTIONS, DURATION, WARMUP, WRK_THREADS, http_status, log, run, wait_status
from bench.target import Target

NGINX = "prodstack-nginx"
# The stack_watchdog role's CLI on the target (hold/unhold: a container stopped on purpose).
WATCHDOG = "/usr/local/sbin/prodstack-watchdog"
UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text.strip())
    if not m:
        return float("nan")
    return float(m.group(1)) * UNITS_MS[m.group(2)]


def wrk(
    url: str,
    conns: int,
    duration: int,
    logdir: Path | None = None,
    label: str = "",
    prefix: list[str] | None = None,
) -> dict[str, Any]:
    threads = max(1, min(WRK_THREADS, conns))
    cmd = [
        *(prefix or []),
        "wrk",
        "--latency",
        f"-t{threads}",
        f"-c{conns}",
        f"-d{duration}s",
        "--timeout",
        "5s",
        url,
    ]
    out = run(cmd, timeout=duration + 60)
    if logdir is not None and label:
        (logdir / f"wrk-{label}-c{conns}.txt").write_text(out)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {p: _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
    total = re.search(r"(\d+) requests in", out)
    return {
        "rps": rps,
        "p50": lat.get("50", float("nan")),
        "p99": lat.get("99", float("nan")),
        "errors": errors,
        "requests": int(total.group(1)) if total else 0,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
    }


def measure(
    target: Target,
    path: str,
    logdir: Path,
    label: str,
    before: Callable[[], None] | None = None,
    base: str | None = None,
    on_target: bool = True,
) -> dict[int, dict[str, Any]]:
    """wrk at each connection count; on the target's loopback unless on_target is false
    (then from this machine, through `base`)."""
    url = (base or target.load_url) + path
    netns = target.in_netns() if on_target else []
    out: dict[int, dict[str, Any]] = {}
    for conns in CONNECTIONS:
        if WARMUP > 0:
            wrk(url, conns, WARMUP, prefix=netns)
        if before is not None:
            before()
        out[conns] = wrk(url, conns, DURATION, logdir, label, prefix=netns)
        r = out[conns]
        log(
            f"  {label} c={conns}: {r['rps']:.0f} req/s p50 {r['p50']:.2f} ms p99 {r['p99']:.2f} ms errors {r['errors']}"
        )
    return out


def nginx_alone(target: Target, logdir: Path) -> dict[int, dict[str, Any]]:
    """The stack's NGINX image alone (its baked-in config, no backend), same target and port.
    The stack's NGINX is held meanwhile, so the watchdog does not start it again."""
    image = target.sh("docker", "inspect", "-f", "{{.Config.Image}}", NGINX).strip()
    target.sh(WATCHDOG, "hold", NGINX, "--reason", "bench: NGINX image alone", "--by", "bench",
              "--until-reboot", check=False)  # fmt: skip
    target.sh("docker", "stop", NGINX)
    try:
        target.sh("docker", "run", "-d", "--name", "bench-nginx-alone", "--init", "-p", "8080:8080", image)
        wait_status(target.url + "/health", timeout=60)
        return measure(target, "/health", logdir, "nginx-alone-health")
    finally:
        target.sh("docker", "rm", "-f", "bench-nginx-alone", check=False)
        target.sh("docker", "start", NGINX)
        target.sh(WATCHDOG, "unhold", NGINX, check=False)
        wait_status(target.url + "/health", timeout=60)


def started_at(target: Target, container: str) -> float:
    raw = target.sh("docker", "inspect", "-f", "{{.State.StartedAt}}", container).strip()
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z", raw)
    assert m, raw
    base = dt.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC)
    return base.timestamp() + float("0." + (m.group(2) or "0"))


def recovery(target: Target, logdir: Path) -> dict[str, float]:
    """Remove the live app release's container, converge (which starts a new release and
    switches NGINX to it), time the first 200 on /."""
    removed = target.app_container()
    target.sh("docker", "rm", "-f", removed)
    t0_wall, t0 = time.time(), time.monotonic()
    first_200 = None
    result: dict[str, Any] = {}

    def _converge() -> None:
        try:
            result["converge"] = target.converge("recovery", logdir)
        except Exception as exc:  # reported below
            result["error"] = exc

    th = threading.Thread(target=_converge)
    th.start()
    while time.monotonic() - t0 < 300:
        if http_status(target.url + "/", timeout=2.0) == 200:
            first_200 = time.time()
            break
        time.sleep(0.1)
    th.join()
    if "error" in result:
        raise result["error"]
    if first_200 is None:
        raise RuntimeError("no 200 on / within 300 s of recreating the app")
    start = started_at(target, target.app_container())
    return {
        "removed_to_200": first_200 - t0_wall,
        "started_to_200": first_200 - start,
        "converge_wall": result["converge"]["wall"],
    }
