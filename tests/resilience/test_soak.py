"""Resilience case: a soak under steady traffic for RESILIENCE_SOAK_SECONDS with a Redis
restart at half time (13).

Run by `molecule test -s resilience` on a converged target; knobs, helpers and the report
are in reslib.py.
"""

from __future__ import annotations

import time

from reslib import (
    RATE,
    REDIS,
    SOAK,
    Case,
    Target,
    Traffic,
    get,
    summary,
)


def test_13_soak(case: Case, target: Target, url: str) -> None:
    """13. Soak with a Redis restart in the middle."""
    with Traffic(url + "/", max_seconds=SOAK + 60) as t:
        time.sleep(SOAK / 2)
        restart = time.time()
        target.docker("restart", REDIS)
        restarted = time.time()
        time.sleep(SOAK / 2)
    responses = t.snapshot()
    failed = [r for r in responses if not r.ok]
    stray = [r for r in failed if not restart - 1 <= r.sent <= restarted + 30]
    case.done = f"{SOAK:.0f} s at {RATE:.0f} req/s on `/`, `docker restart prodstack-redis` at half time"
    case.expected = "report total, errors, p50/p99; errors only around the restart"
    case.measured = (
        f"{summary(responses)}; Redis restart took {restarted - restart:.1f} s; errors "
        f"outside the restart window: {len(stray)}"
    )
    assert not stray, stray[:3]
    assert get(url + "/").ok
