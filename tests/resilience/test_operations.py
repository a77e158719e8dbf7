"""Resilience cases on the operator's own actions: a converge under traffic (8), a converge
with bad inventory that must fail before changing anything (12), converges that must restart
NGINX, Redis or PostgreSQL, and what that costs clients (34).

Run by `molecule test -s resilience` on a converged target; knobs, helpers and the report
are in reslib.py.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from reslib import (
    APP,
    Case,
    PlayResult,
    Target,
    Traffic,
    converge,
    summary,
)


# The releases' cases (16-22) converge under traffic too, each with a change to apply.
@pytest.mark.full_only
def test_08_converge_under_traffic(case: Case, target: Target, url: str) -> None:
    """8. Converges while traffic flows."""
    with Traffic(url + "/") as t:
        time.sleep(2)
        start = time.time()
        noop = converge()
        noop_window = t.between(start, time.time())
    image = target.inspect(APP)["Config"]["Image"]
    new = f"prodstack/app:res-{int(time.time())}"
    target.sh(
        "sh",
        "-c",
        f"printf 'FROM {image}\\nLABEL prodstack.res={new}\\n' | docker build -q -t {new} -",
    )
    with Traffic(url + "/") as t:
        time.sleep(2)
        start = time.time()
        change = converge("-e", f"app_image={new}")
        end = time.time()
        t.wait_ok(end, count=10, timeout=30)
        change_window = t.between(start)
    failed = [r for r in change_window if not r.ok]
    span = failed[-1].sent - failed[0].sent if failed else 0.0
    case.done = "converge with nothing to change; converge with `-e app_image=` a new image"
    case.expected = "no change: 0 failed, changed=0; new app image: a gated release, 0 failed"
    case.measured = (
        f"no change: {summary(noop_window)}, changed={noop.changed}; new image: converge "
        f"{change.seconds:.0f} s, {len(failed)} failed requests over {span:.1f} s "
        f"({sorted({r.status for r in failed})})"
    )
    assert noop.rc == 0 and noop.changed == 0, noop.output[-3000:]
    assert not [r for r in noop_window if not r.ok]
    assert change.rc == 0, change.output[-3000:]
    assert target.inspect(APP)["Config"]["Image"] == new
    assert not failed


BAD_INVENTORY: list[tuple[str, str, list[str], str]] = [
    # (role, what is wrong, extra args, what the failure must name)
    ("docker_engine", "string for a dict", ["-e", "docker_engine_daemon_config=oops"],
     "docker_engine_daemon_config"),
    ("stack_images", "unknown image in the build list", ["-e", '{"stack_images_build": ["app", "mysql"]}'],
     "stack_images_build"),
    ("stack_common", "volume map without redis", ["-e", '{"stack_common_volumes": {"postgres": "x"}}'],
     "stack_common_volumes"),
    ("stack_common", "subnet not a /24", ["-e", "stack_common_subnet=10.9.0.0/16"],
     "stack_common_subnet"),
    ("stack_common", "UID map without nginx", ["-e", '{"stack_common_uids": {"app": 1, "redis": 2}}'],
     "stack_common_uids"),
    ("postgres", "missing password", ["-e", '{"postgres_password": ""}'], "postgres_password"),
    ("redis", "missing password", ["-e", '{"redis_password": ""}'], "redis_password"),
    ("app", "string for an int", ["-e", "app_workers=many"], "app_workers"),
    ("app", "unknown image", ["-e", "app_image=prodstack/app:does-not-exist"], "app_image"),
    ("app", "pools beyond PostgreSQL's limit", ["-e", "app_workers=8", "-e", "app_threads=16"],
     "stack_common_postgres_max_connections"),
    # 2 x 32 threads fit one host's cutover (2 x 64 + 10) but not a rolling update of 2 + 1 replicas.
    ("app", "swarm replicas' pools beyond the limit",
     ["-e", "stack_swarm_enabled=true", "-e", "stack_swarm_encrypted=false", "-e", "app_workers=2",
      "-e", "app_threads=32"], "stack_swarm_app_replicas"),
    ("nginx", "string for a port", ["-e", "nginx_published_port=http"], "nginx_published_port"),
    ("nginx", "port in use on the host", ["-e", "nginx_published_port=18999"], "18999"),
    # A string from -e against the inventory's number: the check compares them as numbers.
    ("nginx", "both ports the same", ["-e", "nginx_tls_published_port=8080"], "must be two different ports"),
    ("stack_health", "timeout too short", ["-e", "stack_health_timeout=1"], "stack_health_timeout"),
    ("stack_watchdog", "interval out of its range", ["-e", "stack_watchdog_interval=2"],
     "stack_watchdog_interval must be 5..3600"),
]  # fmt: skip


def test_12_bad_inventory(case: Case, target: Target, url: str) -> None:
    """12. Bad inventory: the play fails before changing anything."""
    ids = target.identity()
    # A program of ours holds the port of the "port in use" case.
    target.sh(
        "systemd-run", "--unit", "res-port-holder", "python3", "-m", "http.server", "18999",
    )  # fmt: skip
    results: list[str] = []
    problems: list[str] = []

    def one(item: tuple[str, str, list[str], str]) -> None:
        role, what, args, name = item
        play: PlayResult = converge(*args)
        named = name in play.output
        results.append(f"{role}/{what}: rc={play.rc}, changed={play.changed}, names `{name}`: {named}")
        if play.rc == 0 or play.changed or not named:
            problems.append(f"{role}: {what}: rc={play.rc} changed={play.changed} named={named}")

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(one, BAD_INVENTORY))
    finally:
        target.sh("systemctl", "stop", "res-port-holder", check=False)
    untouched = target.identity() == ids
    case.done = f"{len(BAD_INVENTORY)} plays, each with one wrong value (`-e`), see measured"
    case.expected = "each fails in the preflight naming the variable/conflict; changed=0; stack untouched"
    case.measured = "; ".join(sorted(results)) + f"; containers untouched: {untouched}"
    assert untouched
    assert not problems, problems


# A change each service's container cannot take in place (Docker cannot update a health check):
# the converge recreates that container, as a new image or config needing a restart would.
# The changes add up (each converge keeps the previous ones, so it recreates one container);
# the last case of the suite, so nothing needs putting back.
RESTARTS = ["redis", "postgres", "nginx"]


# A figure (the README quotes the last run of it), not a guarantee: in `make test-full`.
@pytest.mark.full_only
def test_34_restart_costs(case: Case, target: Target, url: str) -> None:
    """34. What a restart of NGINX, Redis or PostgreSQL costs clients (a converge recreates it)."""
    app = target.inspect(APP)["Id"]
    rows: list[str] = []
    problems: list[str] = []
    extra: list[str] = []
    for what in RESTARTS:
        extra += ["-e", f"{what}_healthcheck_interval=11s"]
        with Traffic(url + "/", rate=20) as t:
            time.sleep(2)
            start = time.time()
            play = converge(*extra)
            t.wait_ok(time.time(), count=10, timeout=60)
            window = t.between(start)
        failed = [r for r in window if not r.ok]
        kinds = {
            "app 503": sum(
                1 for r in failed if r.status == 503 and r.body and r.body.get("service") != "nginx"
            ),
            "nginx 502": sum(1 for r in failed if r.status == 502),
            "refused/timeout": sum(1 for r in failed if r.status == 0),
        }
        other = len(failed) - sum(kinds.values())
        span = failed[-1].sent + failed[-1].latency - failed[0].sent if failed else 0.0
        rows.append(
            f"{what}: converge {play.seconds:.0f} s, {len(failed)} of {len(window)} failed over {span:.1f} s "
            f"({', '.join(f'{k} {v}' for k, v in kinds.items() if v) or 'none'})"
        )
        if play.rc != 0:
            problems.append(f"{what}: converge rc={play.rc}: {play.output[-2000:]}")
        # A dependency's restart is the app's JSON 503, never a crash; NGINX's is refused connections.
        if other or (what in ("redis", "postgres") and kinds["refused/timeout"]):
            problems.append(f"{what}: unexpected failures {summary(failed)}")
    case.done = (
        "converges under 20 req/s that recreate Redis, then PostgreSQL, then NGINX (each one's "
        "health-check interval changed, which Docker cannot apply in place)"
    )
    case.expected = (
        "Redis/PostgreSQL: only the app's JSON 503 while they restart, the app never restarted; NGINX: "
        "refused connections for the seconds its container is replaced; `/` 200 after each"
    )
    case.measured = "; ".join(rows)
    assert target.inspect(APP)["Id"] == app, "the app was recreated"
    assert not problems, problems
