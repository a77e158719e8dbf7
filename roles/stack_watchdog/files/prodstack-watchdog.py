#!/usr/bin/python3
"""Restart the stack's running containers that are unhealthy; run by a systemd timer.

Docker's restart policy acts only on containers that exit. This restarts each named,
running container whose healthcheck says "unhealthy". It also covers a Docker bug: after a
daemon restart with live-restore, Docker 20.10 stops running the healthchecks of the
restored containers, so their status freezes. When a container's newest check is older
than three intervals, the watchdog runs that container's own check command itself,
`retries` times, and restarts the container only when every attempt fails.

    prodstack-watchdog [--stop-timeout S] NAME...

One log line per decision (journalctl -u prodstack-watchdog). Exit 1 when a restart failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

NS = 1e9


def docker(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout, check=False)


def inspect(name: str) -> dict[str, Any] | None:
    proc = docker("inspect", name)
    if proc.returncode != 0:
        return None
    items = json.loads(proc.stdout or "[]")
    return items[0] if items else None


def epoch(stamp: str) -> float:
    """Docker's RFC 3339 timestamp (nanoseconds, Z or an offset) as epoch seconds."""
    main, _, rest = stamp.partition(".")
    frac = "".join(ch for ch in rest if ch.isdigit())
    tz = rest[len(frac) :] or "Z"
    base = datetime.fromisoformat(main + ("+00:00" if tz == "Z" else tz))
    return base.replace(tzinfo=base.tzinfo or UTC).timestamp() + float(f"0.{frac or 0}")


def own_probe(name: str, check: dict[str, Any]) -> bool:
    """Run the container's healthcheck command like Docker would; True when one attempt passes."""
    test = check.get("Test") or []
    if not test or test[0] == "NONE":
        return True
    argv = ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
    timeout = (check.get("Timeout") or 30 * NS) / NS
    for attempt in range(max(1, int(check.get("Retries") or 3))):
        if attempt:
            time.sleep(2)
        try:
            if docker("exec", name, *argv, timeout=timeout + 5).returncode == 0:
                return True
        except subprocess.TimeoutExpired:
            pass
    return False


def verdict(name: str, container: dict[str, Any], now: float) -> str | None:
    """Why `name` must be restarted, or None."""
    state = container["State"]
    health = state.get("Health")
    if not state.get("Running") or state.get("Paused") or state.get("Restarting") or not health:
        return None
    if health["Status"] == "unhealthy":
        return "is unhealthy"
    check = container["Config"].get("Healthcheck") or {}
    interval = (check.get("Interval") or 30 * NS) / NS
    newest = max((epoch(entry["End"]) for entry in health.get("Log") or []), default=None)
    if newest is None:
        newest = epoch(state["StartedAt"]) + (check.get("StartPeriod") or 0) / NS
    if now - newest > 3 * interval + (check.get("Timeout") or 30 * NS) / NS:
        stalled = f"Docker stopped running its health check {now - newest:.0f} s ago"
        if not own_probe(name, check):
            return f"fails its own health check ({stalled})"
        print(f"{name}: {stalled}; its own check passes")
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stop-timeout", type=int, default=10)
    parser.add_argument("names", nargs="+")
    args = parser.parse_args()
    rc = 0
    for name in args.names:
        container = inspect(name)
        if container is None:
            continue
        reason = verdict(name, container, time.time())
        if reason is None:
            continue
        print(f"{name} {reason}: restarting it", flush=True)
        restart = docker("restart", "--time", str(args.stop_timeout), name, timeout=args.stop_timeout + 60)
        if restart.returncode:
            print(f"{name}: restart failed", file=sys.stderr)
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
