"""Zero-downtime releases: health-gated cutover, rejected release, rollback, deploy lock,
NGINX reload. Each cutover runs under a bounded client (one connection per request, fixed
rate: every failure counts) and a wrk run at 16 connections (its socket errors reported
apart: a reload closes idle keep-alive connections, which wrk counts as read errors though
no request was lost).

Variant app images are built on the target FROM the live one (a real code change: a field
added to the JSON of `/`, a new APP_VERSION; and a build whose /health answers 500).
Environment: RELEASES_RATE (default 20 req/s).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from plays import kill_play, start_play
from reslib import (
    APP,
    APP_THREADS,
    HOLD_DIR,
    NGINX,
    REPO,
    UIDS,
    Case,
    PlayResult,
    Response,
    Target,
    Traffic,
    converge,
    parse_time,
    summary,
    wait_for,
)

RATE = float(os.environ.get("RELEASES_RATE", "20"))
ROLLBACK = REPO / "playbooks" / "rollback.yml"
LOCK = "/var/lib/prodstack/lock"
V2 = "prodstack/app:releases-v2"
BROKEN = "prodstack/app:releases-broken"


@dataclass
class WrkResult:
    requests: int = 0
    non2xx: int = 0
    errors: str = "none"

    def text(self) -> str:
        return f"wrk -c16: {self.requests} requests, {self.non2xx} non-2xx, socket errors {self.errors}"


class Wrk:
    """wrk at 16 connections for as long as the block runs (stopped by SIGINT)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.result = WrkResult()

    def __enter__(self) -> Wrk:
        argv = ["wrk", "-t2", "-c16", "-d600s", "--timeout", "5s", self.url]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=30)
        found = re.search(r"(\d+) requests in", out)
        self.result.requests = int(found.group(1)) if found else 0
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        self.result.non2xx = int(non2xx.group(1)) if non2xx else 0
        errors = re.search(r"Socket errors: (.*)", out)
        # wrk reads an idle keep-alive connection NGINX closed on reload as a read error.
        self.result.errors = f"{errors.group(1)} (connections closed by the reload)" if errors else "none"


@dataclass
class Cutover:
    play: PlayResult
    responses: list[Response]
    wrk: WrkResult

    @property
    def failed(self) -> list[Response]:
        return [r for r in self.responses if not r.ok]

    def figures(self, target: Target, old: str) -> str:
        """Requests, failures, converge seconds and cutover seconds (new release started ->
        first answer from it through NGINX)."""
        new = target.inspect(APP)
        cut = ""
        if new and new.get("Name", "").lstrip("/") != old:
            host = new["Config"]["Hostname"]
            started = parse_time(new["State"]["StartedAt"])
            first = next((r.sent for r in self.responses if r.body and r.body.get("hostname") == host), None)
            cut = f", cutover {first - started:.1f} s" if first else ""
        return f"{summary(self.responses)}; play {self.play.seconds:.0f} s{cut}; {self.wrk.text()}"


def cutover(url: str, *extra: str, playbook: Path | None = None) -> Cutover:
    """A play under the bounded client and wrk; traffic continues until 5 s after it ends."""
    with Traffic(url + "/", rate=RATE) as t, Wrk(url + "/") as w:
        time.sleep(1)
        start = time.time()
        play = converge(*extra) if playbook is None else converge(*extra, playbook=playbook)
        time.sleep(5)
        window = t.between(start)
    return Cutover(play, window, w.result)


def build(target: Target, tag: str, *lines: str) -> None:
    """A variant of the live app image, built on the target (no context: FROM + RUN)."""
    image = target.inspect(APP)["Config"]["Image"]
    dockerfile = "\n".join([f"FROM {image}", "USER root", *lines, f"USER {UIDS['app']}", ""])
    argv = ["docker", "exec", "-i", target.name, "docker", "build", "-q", "-t", tag, "-"]
    subprocess.run(argv, input=dockerfile, capture_output=True, text=True, timeout=300, check=True)


def flat(output: str) -> str:
    """Play output with its line wrapping undone (the YAML callback wraps long messages)."""
    return " ".join(output.split())


def log_tail(target: Target) -> dict[str, str]:
    return json.loads(target.sh("tail", "-n", "1", "/var/lib/prodstack/releases.log"))


def release_of(target: Target) -> str:
    return target.live_release()


@pytest.fixture(scope="module")
def variants(target: Target) -> Iterator[None]:
    """The code change and the broken build; afterwards the stack goes back to its own
    image and settings (the first release, still retained, comes back)."""
    web = "/opt/app/prodstack_app/web.py"
    build(
        target,
        V2,
        f'RUN sed -i \'s/"hostname": hostname,/"hostname": hostname, "served_by": "v2",/\' {web}',
        "ENV APP_VERSION=0.2.0",
    )
    build(
        target,
        BROKEN,
        f'RUN sed -i \'s/return jsonify(status="ok")/return jsonify(status="broken"), 500/\' {web}',
    )
    yield
    converge()


def test_r1_code_change(case: Case, target: Target, url: str, variants: None) -> None:
    """16. A code change released under traffic."""
    old = target.app()
    c = cutover(url, "-e", f"app_image={V2}")
    new = target.app()
    tail = [r for r in c.responses if r.ok and r.body][-5:]
    case.done = "converge with `-e app_image=` an image whose `/` answers a new field (APP_VERSION 0.2.0)"
    case.expected = "a new release goes live through the gate and an NGINX reload: 0 failed requests"
    case.measured = c.figures(target, old) + f"; {old} -> {new}"
    assert c.play.rc == 0, c.play.output[-3000:]
    assert new != old and all(r.body and r.body.get("served_by") == "v2" for r in tail)
    assert target.releases()[old] == "exited"
    assert target.sh("sh", "-c", f"test -f {HOLD_DIR}/{old} && echo held", check=False) == "held\n"
    assert log_tail(target)["result"] == "live" and log_tail(target)["version"] == "0.2.0"
    assert not c.failed


def test_r2_env_change(case: Case, target: Target, url: str, variants: None) -> None:
    """17. The app's environment changed (app_threads)."""
    old = target.app()
    # The README's short way to ship (the images and the app only), under the same traffic.
    c = cutover(url, "--tags", "release", "-e", f"app_image={V2}", "-e", "app_threads=5")
    env = target.inspect(APP)["Config"]["Env"]
    case.done = "`site.yml --tags release -e app_threads=5`"
    case.expected = "a new release with APP_THREADS=5: 0 failed requests"
    case.measured = c.figures(target, old)
    assert c.play.rc == 0, c.play.output[-3000:]
    assert "APP_THREADS=5" in env and target.app() != old
    assert len(target.releases()) <= 3
    assert not c.failed


def test_r3_broken_release(case: Case, target: Target, url: str, variants: None) -> None:
    """18. A release that fails its health gate."""
    old, old_id = target.app(), target.inspect(APP)["Id"]
    before = set(target.releases())
    extra = ["-e", f"app_image={BROKEN}", "-e", "app_threads=5", "-e", "app_gate_timeout=20"]
    c = cutover(url, "--tags", "release", *extra)
    case.done = "`site.yml --tags release -e app_image=` a build whose /health answers 500 (gate 20 s)"
    case.expected = "the play fails naming the release; it is removed; the old one serves on: 0 failed"
    case.measured = c.figures(target, old) + f"; play rc {c.play.rc}"
    assert c.play.rc != 0
    assert "failed its health gate" in flat(c.play.output)
    # It timed out: the message names the variables a slow host would raise.
    assert "raise app_gate_timeout (20 s)" in flat(c.play.output), c.play.output[-3000:]
    assert target.app() == old and target.inspect(APP)["Id"] == old_id
    assert set(target.releases()) == before
    assert log_tail(target)["result"] == "failed gate"
    assert not c.failed


def test_r4_rollback(case: Case, target: Target, url: str, variants: None) -> None:
    """19. rollback.yml back to the previous release."""
    old = target.app()
    c = cutover(url, playbook=ROLLBACK)
    env = target.inspect(APP)["Config"]["Env"]
    case.done = "`ansible-playbook playbooks/rollback.yml` (no release named: the previous one)"
    case.expected = f"the previous release (APP_THREADS={APP_THREADS}) is live again: 0 failed requests"
    case.measured = c.figures(target, old)
    assert c.play.rc == 0, c.play.output[-3000:]
    assert target.app() != old and f"APP_THREADS={APP_THREADS}" in env
    assert log_tail(target)["result"] == "rolled back"
    # The cutover leaves the hold directory as the watchdog role makes it (root only), so
    # the next converge has nothing to change there (it was 0755 after a rollback).
    assert target.sh("stat", "-c", "%a", HOLD_DIR).strip() == "700"
    assert not c.failed


def holder_of(target: Target) -> dict[str, Any]:
    """The deploy lock's holder, {} while nobody holds it."""
    return dict(json.loads(target.sh("cat", f"{LOCK}/holder.json", check=False) or "{}"))


def play(*extra: str) -> subprocess.Popen[str]:
    return start_play(ROLLBACK, *extra, output=True)


def test_r5_concurrent_runs(case: Case, target: Target, url: str, variants: None) -> None:
    """20. Two runs at once serialized by the deploy lock."""
    live = release_of(target)
    other = sorted(n.removeprefix(APP + "-") for n in target.releases() if n != f"{APP}-{live}")[-1]
    with Traffic(url + "/", rate=RATE) as t:
        start = time.time()
        a = play("-e", f"release={other}")
        wait_for(lambda: holder_of(target).get("purpose") == "rollback" and a.poll() is None, 120, 0.2)
        b = play("-e", f"release={live}")
        out_a, _ = a.communicate(timeout=600)
        done_a = time.time()
        out_b, _ = b.communicate(timeout=600)
        time.sleep(3)
        window = t.between(start)
    failed = [r for r in window if not r.ok]
    waited = "RETRYING: [" in out_b and "Take the deploy lock (waits" in flat(out_b)
    case.done = "two rollback.yml runs started together (to two different releases)"
    case.expected = "the second waits for the first's lock, then runs; both succeed; 0 failed"
    case.measured = (
        f"first rc {a.returncode} done after {done_a - start:.0f} s; second rc {b.returncode}, waited "
        f"for the lock: {waited}, done after {time.time() - start - 3:.0f} s; {summary(window)}"
    )
    assert a.returncode == 0, out_a[-3000:]
    assert b.returncode == 0, out_b[-3000:]
    assert waited and release_of(target) == live
    assert not failed


def test_r6_stale_lock(case: Case, target: Target, url: str, variants: None) -> None:
    """21. A lock left by a killed run is taken over."""
    live = release_of(target)
    other = sorted(n.removeprefix(APP + "-") for n in target.releases() if n != f"{APP}-{live}")[-1]
    killed = play("-e", f"release={other}")
    wait_for(lambda: holder_of(target).get("purpose") == "rollback", 120, 0.2)
    kill_play(killed)
    holder = holder_of(target)
    assert holder, "the killed run's lock is gone"
    time.sleep(12)
    c = cutover(url, "-e", f"release={other}", "-e", "stack_lock_ttl=10", playbook=ROLLBACK)
    took = "took over a stale lock" in flat(c.play.output)
    case.done = "rollback.yml killed (SIGKILL) holding the lock; another run with stack_lock_ttl=10"
    case.expected = "the stale lock is taken over with a warning naming the dead run; 0 failed"
    case.measured = f"dead holder pid {holder.get('pid')}; taken over: {took}; " + c.figures(target, "")
    assert c.play.rc == 0, c.play.output[-3000:]
    assert took and release_of(target) == other
    assert not c.failed


def test_r7_nginx_reload(case: Case, target: Target, url: str, variants: None) -> None:
    """22. An NGINX config toggle (rate limits on) by reload."""
    nginx = target.inspect(NGINX)
    workers = target.nginx_pids()
    live = target.app()
    # The live release's own image and threads (no new release); limits the client never hits.
    config = target.inspect(APP)["Config"]
    threads = next(e for e in config["Env"] if e.startswith("APP_THREADS=")).split("=")[1]
    app_vars = ["-e", f"app_image={config['Image']}", "-e", f"app_threads={threads}"]
    c = cutover(
        url,
        *app_vars,
        "-e",
        "nginx_rate_limit_enabled=true",
        "-e",
        # wrk alone sends thousands of requests a second from the one loopback address.
        "nginx_rate_limit_per_second=100000",
        "-e",
        "nginx_rate_limit_burst=100000",
        "-e",
        "nginx_connection_limit=1000",
    )
    case.done = "converge with `-e nginx_rate_limit_enabled=true` (limits far above the test's rate)"
    case.expected = "NGINX reloads (same container, new workers), same app release: 0 failed"
    case.measured = c.figures(target, live)
    assert c.play.rc == 0, c.play.output[-3000:]
    assert target.inspect(NGINX)["Id"] == nginx["Id"] and target.nginx_pids() != workers
    assert target.app() == live
    assert not c.failed
