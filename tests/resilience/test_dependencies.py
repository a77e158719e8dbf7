"""Resilience cases where a dependency of the app fails: Redis (3) or PostgreSQL (4) stopped
for RESILIENCE_OUTAGE s under traffic, a dependency removed and recreated (5).

Run by `molecule test -s resilience` on a converged target; knobs, helpers and the report
are in reslib.py.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from reslib import (
    APP,
    DEADLINE,
    OUTAGE,
    POSTGRES,
    RATE,
    REDIS,
    WATCHDOG,
    Case,
    Target,
    Traffic,
    converge,
    last_visits,
    recovery,
)


def dependency_outage(target: Target, url: str, container: str) -> dict[str, Any]:
    """Stop `container` for OUTAGE s under traffic, start it; collect the figures."""
    dep = container.removeprefix("prodstack-")
    master, app_started = (
        target.server_master(),
        target.inspect(APP)["State"]["StartedAt"],
    )
    with Traffic(url + "/") as t:
        time.sleep(2)
        rows_before = target.sql("SELECT count(*) || ' ' || max(id) FROM visits").split()
        # Stopped on purpose, as an operator would: held, or the host watchdog starts it again.
        target.sh(WATCHDOG, "hold", container, "--reason", "resilience: dependency outage")
        target.docker("stop", container)
        stopped = time.time()
        time.sleep(OUTAGE)
        starting = time.time()
        target.sh(WATCHDOG, "unhold", container)
        target.docker("start", container)
        t.wait_ok(starting, count=10, timeout=90)
    # Answered while it was down (not merely sent before the start and answered after).
    during = [r for r in t.between(stopped, starting) if r.sent + r.latency < starting]
    wrong = [
        r
        for r in during
        if not (r.status == 503 and r.body and dep in r.body["failed"] and r.latency < DEADLINE)
    ]
    ok_after = [r for r in t.between(starting) if r.ok and r.body]
    return {
        "during": during,
        "wrong": wrong,
        "kinds": Counter((r.status, ",".join(r.body["failed"]) if r.body else "-") for r in during),
        "max_latency": max((r.latency for r in during), default=0.0),
        "back": recovery(t, starting),
        "visits_before": last_visits(t.between(0, starting)),
        "visits_after": min(int(r.body["visits"]) for r in ok_after if r.body),
        "rows_before": (int(rows_before[0]), int(rows_before[1])),
        "same_process": (
            target.server_master(),
            target.inspect(APP)["State"]["StartedAt"],
        )
        == (master, app_started),
    }


def test_03_redis_stopped(case: Case, target: Target, url: str) -> None:
    """3. Redis stopped, then started."""
    f = dependency_outage(target, url, REDIS)
    case.done = f"`docker stop prodstack-redis` for {OUTAGE:.0f} s under {RATE:.0f} req/s, then start"
    case.expected = "every `/` a 503 JSON naming redis within 2 s; counter resumes; same app"
    case.measured = (
        f"{len(f['during'])} answers while down {dict(f['kinds'])}, "
        f"{len(f['wrong'])} not 503/redis/<2.5 s, "
        f"max {f['max_latency'] * 1000:.0f} ms; 200 {f['back']:.1f} s after start; "
        f"visits {f['visits_before']}→{f['visits_after']}; same app process: "
        f"{f['same_process']}"
    )
    assert f["during"] and not f["wrong"], f["wrong"][:3]
    assert f["visits_after"] > f["visits_before"]
    assert f["same_process"]


def test_04_postgres_stopped(case: Case, target: Target, url: str) -> None:
    """4. PostgreSQL stopped, then started."""
    f = dependency_outage(target, url, POSTGRES)
    count, max_id = f["rows_before"]
    kept = int(target.sql(f"SELECT count(*) FROM visits WHERE id <= {max_id}"))
    case.done = f"`docker stop prodstack-postgres` for {OUTAGE:.0f} s under {RATE:.0f} req/s, then start"
    case.expected = "every `/` a 503 JSON naming postgres within 2 s; all rows kept; same app"
    case.measured = (
        f"{len(f['during'])} answers while down {dict(f['kinds'])}, "
        f"{len(f['wrong'])} not 503/postgres/<2.5 s, "
        f"max {f['max_latency'] * 1000:.0f} ms; 200 {f['back']:.1f} s after start; rows "
        f"with id ≤ {max_id}: {count} before, {kept} after; same app process: "
        f"{f['same_process']}"
    )
    assert f["during"] and not f["wrong"], f["wrong"][:3]
    assert kept >= count
    assert f["same_process"]


def test_05_dependency_removed(case: Case, target: Target, url: str) -> None:
    """5. A dependency container removed outright, restored by a converge."""
    with Traffic(url + "/") as t:
        time.sleep(2)
        target.docker("rm", "-f", REDIS)
        removed = time.time()
        time.sleep(10)
        play = converge()
        restored = time.time()
        t.wait_ok(removed, count=10, timeout=60)
    window = t.between(removed, restored)
    slow = [r for r in window if r.status not in (200, 503) or r.latency >= DEADLINE]
    before, after = last_visits(t.between(0, removed)), last_visits(t.between(removed))
    case.done = "`docker rm -f prodstack-redis` (container gone), converge 10 s later"
    case.expected = "the app answers (503 JSON, then 200) within 2 s throughout; counter kept"
    case.measured = (
        f"{len(window)} answers until restored, {len(slow)} slower than 2.5 s or not "
        f"200/503, max {max(r.latency for r in window) * 1000:.0f} ms; converge "
        f"{play.seconds:.0f} s; visits {before}→{after}"
    )
    assert play.rc == 0, play.output[-2000:]
    assert not slow, slow[:3]
    assert after > before
