#!/usr/bin/python3
"""The stack's host watchdog: start what should run, restart only what is really broken.

    prodstack-watchdog [--config FILE] run             one pass (the systemd timer runs it)
    prodstack-watchdog [--config FILE] status [--json] per container: state, health, watchdog
                                                       restarts in the last hour, held or not
    prodstack-watchdog [--config FILE] hold NAME --reason TEXT [--by WHO] [--until-reboot]
    prodstack-watchdog [--config FILE] unhold NAME

Docker's restart policy acts only on containers that exit, and `unless-stopped` does not
start at boot a container whose stop was asked for (the stop half of a `docker restart` cut
by a reboot leaves it down for good). Each pass, for every container labelled
`prodstack.role`:

- not running and not held: started (a hold file records a stop made on purpose by an
  operator, a release or a restore);
- running and Docker calls it unhealthy, or Docker stopped running its check (Docker 20.10
  after a daemon restart with live-restore, or a check log from before a reboot): the
  watchdog runs the container's own check with a generous timeout. If that passes, the
  service is slow, not broken, and nothing happens. A restart needs the check to fail on
  consecutive passes over a window (longer for the data services, so a slow PostgreSQL or
  Redis is never restarted for timeouts alone), waits while the host is overloaded, backs
  off after each restart, and stops at a restart budget per container per hour, saying so
  on every pass until an operator acts.

A reboot gives every container a fresh budget: the boot itself restarted everything, and a
budget spent before it would leave a service down that only needs starting. The boot is
told by a marker under /run (a tmpfs emptied at boot, on a VM and on a systemd container).

Settings come from a JSON file (the role writes it); state (failures seen, actions taken)
is kept in a JSON file beside the holds so it survives a reboot. One log line per decision
(journalctl -u prodstack-watchdog). Exit 1 when an action failed or a budget is spent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

NS = 1e9
HOUR = 3600.0
DEFAULTS: dict[str, Any] = {
    "label": "prodstack.role",
    "roles": ["postgres", "redis", "app", "nginx"],
    "data_roles": ["postgres", "redis"],
    "window": 60,  # s of sustained failure before a stateless service is restarted
    "data_window": 300,  # the same for a data service: it must not answer at all this long
    "min_failed_passes": 2,  # consecutive passes whose own check failed
    "probe_timeout": 20,  # s the watchdog's own run of a container's check may take
    "budget": 3,  # restarts (and starts) per container per hour since the host booted
    "backoff": 60,  # s after a restart before the next; doubled each time within the hour
    "max_load": 2.0,  # 1-minute load average per CPU above which restarts wait
    "max_cpu_pressure": 60.0,  # % of time tasks waited for a CPU (PSI some avg10) above which they wait
    "overload_max_wait": 300,  # s a restart may wait for the load to fall before it goes ahead
    "stop_timeout": None,  # s for `docker restart`; None: the container's own stop timeout
    "state_file": "/var/lib/prodstack/watchdog/state.json",
    "hold_dir": "/var/lib/prodstack/hold",  # holds that outlive a reboot (an operator's, a retired release)
    "volatile_hold_dir": "/run/prodstack/hold",  # holds for one operation (a restore): gone at boot
    "boot_marker": "/run/prodstack/watchdog/boot",  # this boot's id; gone at boot, so a new one starts
}


# --- logging: one line per decision, with the journal priority when systemd reads it ------

ERR, WARNING, INFO = 3, 4, 6


def log(priority: int, message: str) -> None:
    prefix = f"<{priority}>" if os.environ.get("JOURNAL_STREAM") else ""
    print(prefix + message, flush=True)


# --- Docker --------------------------------------------------------------------------------


def docker(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout, check=False)


def stack_containers(label: str, roles: list[str]) -> list[dict[str, Any]]:
    """`docker inspect` of every container carrying `label` with one of `roles`."""
    listing = docker("ps", "-aq", "--filter", f"label={label}")
    if listing.returncode:
        log(WARNING, f"Docker does not answer ({listing.stderr.strip()}): nothing to do this pass")
        return []
    ids = listing.stdout.split()
    if not ids:
        return []
    proc = docker("inspect", *ids)
    items: list[dict[str, Any]] = json.loads(proc.stdout or "[]")  # a container removed meanwhile is left out
    return [c for c in items if (c["Config"].get("Labels") or {}).get(label) in roles]


def epoch(stamp: str) -> float:
    """Docker's RFC 3339 timestamp (nanoseconds, Z or an offset) as epoch seconds."""
    main, _, rest = stamp.partition(".")
    frac = "".join(ch for ch in rest if ch.isdigit())
    tz = rest[len(frac) :] or "Z"
    base = datetime.fromisoformat(main + ("+00:00" if tz == "Z" else tz))
    return base.replace(tzinfo=base.tzinfo or UTC).timestamp() + float(f"0.{frac or 0}")


def name_of(container: dict[str, Any]) -> str:
    return str(container["Name"]).lstrip("/")


def own_probe(name: str, check: dict[str, Any], timeout: float) -> tuple[bool, str]:
    """Run the container's healthcheck command as Docker would, with a generous timeout."""
    test = check.get("Test") or []
    argv = ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
    started = time.monotonic()
    try:
        proc = docker("exec", name, *argv, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"no answer within {timeout:.0f} s"
    took = time.monotonic() - started
    if proc.returncode == 0:
        return True, f"passed in {took:.1f} s"
    output = (proc.stdout + proc.stderr).strip().splitlines()
    return False, f"failed in {took:.1f} s (exit {proc.returncode}: {output[-1] if output else 'no output'})"


# --- the host's load ---------------------------------------------------------------------


def overload(max_load: float, max_pressure: float) -> str | None:
    """Why the host counts as overloaded now, or None."""
    load1 = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    if load1 / cpus >= max_load:
        return f"load {load1:.1f} on {cpus} CPUs"
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        pressure = float(dict(kv.split("=") for kv in some.split()[1:])["avg10"])
    except (OSError, KeyError, ValueError, IndexError):
        return None
    return f"CPU pressure {pressure:.0f}% (tasks waiting for a CPU)" if pressure >= max_pressure else None


# --- state that survives a pass and a reboot ---------------------------------------------


@dataclass
class Memory:
    failing_since: float | None = None
    failed_passes: int = 0
    actions: list[dict[str, Any]] = field(default_factory=list)  # {"t": epoch, "what", "why", "boot"}

    def recent(self, now: float) -> list[dict[str, Any]]:
        return [a for a in self.actions if now - a["t"] < HOUR]

    def counted(self, now: float, boot: str) -> list[dict[str, Any]]:
        """The actions that count against the budget: the last hour's, since this boot."""
        return [a for a in self.recent(now) if a.get("boot", boot) == boot]

    def forget_failure(self) -> None:
        self.failing_since, self.failed_passes = None, 0


class State:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            raw = {}
        self.memory = {name: Memory(**m) for name, m in raw.get("containers", {}).items()}

    def of(self, name: str) -> Memory:
        return self.memory.setdefault(name, Memory())

    def save(self, now: float, keep: set[str]) -> None:
        """Write atomically; forget containers that are gone and actions older than a day."""
        data = {
            name: {**m.__dict__, "actions": [a for a in m.actions if now - a["t"] < 24 * HOUR]}
            for name, m in self.memory.items()
            if name in keep
        }
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"containers": data}, indent=1))
        tmp.replace(self.path)


def hold_of(cfg: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The hold on `name`, if any. A hold for one operation lives under /run, so a reboot in
    the middle of that operation ends it and the container is started again."""
    path = next(
        (p for p in (Path(cfg[d]) / name for d in ("hold_dir", "volatile_hold_dir")) if p.exists()), None
    )
    if path is None:
        return None
    try:
        hold = json.loads(path.read_text() or "{}")
    except ValueError:
        hold = {}
    return hold if isinstance(hold, dict) else {}


def this_boot(marker: str) -> str:
    """An id for the current boot, kept in a file under /run that a reboot empties."""
    path = Path(marker)
    try:
        return path.read_text().strip() or "unknown"
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        boot = uuid.uuid4().hex
        path.write_text(boot + "\n")
        return boot


# --- one pass ------------------------------------------------------------------------------


class Watchdog:
    def __init__(self, cfg: dict[str, Any], now: float | None = None) -> None:
        self.cfg = cfg
        self.now = time.time() if now is None else now
        self.state = State(Path(cfg["state_file"]))
        self.boot = this_boot(cfg["boot_marker"])
        self.rc = 0

    def role(self, container: dict[str, Any]) -> str:
        return str(container["Config"]["Labels"][self.cfg["label"]])

    def run(self) -> int:
        containers = stack_containers(self.cfg["label"], self.cfg["roles"])
        for container in containers:
            name = name_of(container)
            if hold_of(self.cfg, name) is not None:
                self.state.of(name).forget_failure()
                continue
            state = container["State"]
            if state.get("Running"):
                self.check_running(name, container)
            elif state.get("Status") in ("exited", "created"):
                self.start_stopped(name, container)
        self.state.save(self.now, {name_of(c) for c in containers})
        return self.rc

    def allowed(self, name: str, memory: Memory) -> bool:
        """The restart budget and the backoff; logs why an action must wait."""
        recent = memory.counted(self.now, self.boot)
        if len(recent) >= self.cfg["budget"]:
            log(ERR, f"{name}: restart budget spent ({len(recent)} actions in the last hour, budget "
                     f"{self.cfg['budget']}): not acting again; an operator must look "
                     f"(docker logs {name}; prodstack-watchdog status)")  # fmt: skip
            self.rc = 1
            return False
        if recent:
            wait = self.cfg["backoff"] * 2 ** (len(recent) - 1)
            last = max(a["t"] for a in recent)
            if self.now - last < wait:
                since = self.now - last
                log(INFO, f"{name}: backing off ({since:.0f} s since the last action, waits {wait:.0f} s)")
                return False
        return True

    def act(self, name: str, memory: Memory, what: str, why: str, argv: list[str]) -> None:
        log(WARNING, f"{name} {why}: {what}ing it")
        memory.actions.append({"t": self.now, "what": what, "why": why, "boot": self.boot})
        memory.forget_failure()
        stop = self.cfg.get("stop_timeout")
        try:
            proc = docker(*argv, timeout=(stop or 60) + 120)
        except subprocess.TimeoutExpired:
            log(ERR, f"{name}: docker {argv[0]} did not return")
            self.rc = 1
            return
        if proc.returncode:
            log(ERR, f"{name}: docker {argv[0]} failed: {proc.stderr.strip()}")
            self.rc = 1

    def start_stopped(self, name: str, container: dict[str, Any]) -> None:
        """A stack container that is down and not held (a reboot cut a restart, say)."""
        memory = self.state.of(name)
        state = container["State"]
        why = f"is {state['Status']} (exit code {state.get('ExitCode')}) and not held"
        if self.allowed(name, memory):
            self.act(name, memory, "start", why, ["start", name])

    def suspect(self, container: dict[str, Any]) -> tuple[str | None, float | None]:
        """Why Docker's view says the container may be broken, and since when it has failed."""
        state = container["State"]
        health = state.get("Health") or {}
        check = container["Config"].get("Healthcheck") or {}
        started = epoch(state["StartedAt"])
        log_ = [e for e in health.get("Log") or [] if epoch(e["Start"]) >= started]
        failing: list[dict[str, Any]] = []
        for entry in reversed(log_):
            if entry["ExitCode"] == 0:
                break
            failing.append(entry)
        since = min((epoch(e["Start"]) for e in failing), default=None)
        if health.get("Status") == "unhealthy":
            return "is unhealthy", since
        interval = (check.get("Interval") or 30 * NS) / NS
        timeout = (check.get("Timeout") or 30 * NS) / NS
        newest = max([epoch(e["End"]) for e in log_] + [started + (check.get("StartPeriod") or 0) / NS])
        if self.now - newest > 3 * interval + timeout:
            return f"has had no health check run by Docker for {self.now - newest:.0f} s", None
        return None, None

    def check_running(self, name: str, container: dict[str, Any]) -> None:
        check = container["Config"].get("Healthcheck") or {}
        state = container["State"]
        if (
            not check.get("Test")
            or check["Test"][0] == "NONE"
            or state.get("Paused")
            or state.get("Restarting")
        ):
            return
        memory = self.state.of(name)
        why, since = self.suspect(container)
        if why is None:
            memory.forget_failure()
            return
        ok, detail = own_probe(name, check, self.cfg["probe_timeout"])
        if ok:
            log(INFO, f"{name} {why}, but its own check {detail}: slow, not broken; no restart")
            memory.forget_failure()
            return
        memory.failing_since = min(x for x in (memory.failing_since, since, self.now) if x is not None)
        memory.failed_passes += 1
        data = self.role(container) in self.cfg["data_roles"]
        window = self.cfg["data_window" if data else "window"]
        failing_for = self.now - memory.failing_since
        what = "has not answered its check" if data and "no answer" in detail else "has failed its check"
        reason = f"{what} for {failing_for:.0f} s ({memory.failed_passes} passes; last: {detail})"
        if failing_for < window or memory.failed_passes < self.cfg["min_failed_passes"]:
            log(INFO, f"{name} {why}; {reason}; restarts after {window} s and "
                      f"{self.cfg['min_failed_passes']} passes")  # fmt: skip
            return
        busy = overload(self.cfg["max_load"], self.cfg["max_cpu_pressure"])
        if busy and failing_for < window + self.cfg["overload_max_wait"]:
            log(WARNING, f"{name} {reason}, but the host is overloaded ({busy}): waiting, not restarting")
            return
        if self.allowed(name, memory):
            stop = self.cfg.get("stop_timeout")
            self.act(
                name, memory, "restart", reason, ["restart", *(["--time", str(stop)] if stop else []), name]
            )


# --- the other commands -------------------------------------------------------------------


def status(cfg: dict[str, Any], as_json: bool) -> int:
    now = time.time()
    state = State(Path(cfg["state_file"]))
    boot = this_boot(cfg["boot_marker"])
    rows = []
    for container in stack_containers(cfg["label"], cfg["roles"]):
        name = name_of(container)
        memory = state.of(name)
        recent = memory.recent(now)
        hold = hold_of(cfg, name)
        rows.append({
            "name": name,
            "role": container["Config"]["Labels"][cfg["label"]],
            "state": container["State"]["Status"],
            "health": (container["State"].get("Health") or {}).get("Status", "-"),
            "watchdog_actions_last_hour": len(recent),
            "budget_spent": len(memory.counted(now, boot)) >= cfg["budget"],
            "held": hold,
            "failing_since": memory.failing_since,
            "last_action": memory.actions[-1] if memory.actions else None,
        })  # fmt: skip
    if as_json:
        print(json.dumps(rows))
        return 0
    print(f"{'NAME':34} {'STATE':9} {'HEALTH':10} {'RESTARTS/1h':11} HELD")
    for r in rows:
        held = f"yes ({r['held'].get('reason', '?')})" if r["held"] is not None else "no"
        spent = " BUDGET SPENT" if r["budget_spent"] else ""
        actions = r["watchdog_actions_last_hour"]
        print(f"{r['name']:34} {r['state']:9} {r['health']:10} {actions:<11} {held}{spent}")
    return 0


def hold(cfg: dict[str, Any], name: str, reason: str, by: str, until_reboot: bool) -> int:
    path = Path(cfg["volatile_hold_dir" if until_reboot else "hold_dir"])
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    (path / name).write_text(json.dumps({"by": by, "reason": reason, "since": time.time()}) + "\n")
    log(INFO, f"{name}: held by {by} ({reason}); the watchdog leaves it as it is")
    return 0


def unhold(cfg: dict[str, Any], name: str) -> int:
    for d in ("hold_dir", "volatile_hold_dir"):
        (Path(cfg[d]) / name).unlink(missing_ok=True)
    log(INFO, f"{name}: no longer held")
    return 0


def load_config(path: str | None) -> dict[str, Any]:
    cfg = dict(DEFAULTS)
    if path:
        cfg.update(json.loads(Path(path).read_text()))
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise SystemExit(f"prodstack-watchdog: unknown settings in {path}: {sorted(unknown)}")
    return cfg


def main(argv: list[str] | None = None) -> int:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--config", default="/etc/prodstack/watchdog.json")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run")
    st = sub.add_parser("status")
    st.add_argument("--json", action="store_true")
    ho = sub.add_parser("hold")
    ho.add_argument("name")
    ho.add_argument("--reason", required=True)
    ho.add_argument("--by", default=os.environ.get("SUDO_USER") or os.environ.get("USER") or "root")
    ho.add_argument("--until-reboot", action="store_true", help="a hold for one operation: a reboot ends it")
    un = sub.add_parser("unhold")
    un.add_argument("name")
    args = parser.parse_args(argv)
    cfg = load_config(args.config if os.path.exists(args.config) else None)
    if args.command == "run":
        return Watchdog(cfg).run()
    if args.command == "status":
        return status(cfg, args.json)
    if args.command == "hold":
        return hold(cfg, args.name, args.reason, args.by, args.until_reboot)
    return unhold(cfg, args.name)


if __name__ == "__main__":
    sys.exit(main())
