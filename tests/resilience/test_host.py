"""Resilience cases on the host under the stack: the target reboots (6), dockerd restarts
(7), container logs grow past their rotation size (10).

Run by `molecule test -s resilience` on a converged target; knobs, helpers and the report
are in reslib.py.
"""

from __future__ import annotations

import time

import pytest
from reslib import (
    APP,
    NGINX,
    RATE,
    STACK,
    Case,
    Target,
    Traffic,
    converge,
    get,
    parse_time,
    run,
    summary,
    wait_for,
)

MiB = 1024 * 1024


# In `make test-full`: `make test` reboots a real VM at rest (the VM stage) and this
# target in cases 15 and 29, each then checked healthy with its data.
@pytest.mark.full_only
def test_06_target_reboot(case: Case, target: Target, url: str) -> None:
    """6. Target reboot (restart of the target container)."""
    visits = int(get(url + "/").body["visits"])  # type: ignore[index]
    rows = int(target.sql("SELECT count(*) FROM visits"))
    ids = {name: cid for name, (cid, _) in target.identity().items()}
    start = time.monotonic()
    run(["docker", "restart", target.name], timeout=180)
    healthy = start + target.wait_healthy(timeout=180)
    wait_for(lambda: get(url + "/").ok, 60)
    answered = time.monotonic() - start
    healthy -= start
    after = get(url + "/").body or {}
    rows_after = int(target.sql("SELECT count(*) FROM visits"))
    same = {name: cid for name, (cid, _) in target.identity().items()} == ids
    play = converge()
    case.done = "`docker restart` of the target (systemd, dockerd, containers), no Ansible"
    case.expected = "all healthy again, data intact, then a converge reports changed=0"
    case.measured = (
        f"all healthy {healthy:.0f} s, `/` 200 {answered:.0f} s after the restart; visits "
        f"{visits}→{after.get('visits')}, rows {rows}→{rows_after}; same containers: {same}; "
        f"converge changed={play.changed} ({play.seconds:.0f} s)"
    )
    assert int(after["visits"]) > visits and rows_after >= rows
    assert same
    assert play.rc == 0 and play.changed == 0, play.output[-3000:]


def test_07_dockerd_restart(case: Case, target: Target, url: str) -> None:
    """7. Docker daemon restarted on the target (live-restore)."""
    ids = target.identity()
    with Traffic(url + "/") as t:
        time.sleep(3)
        start = time.time()
        target.sh("systemctl", "restart", "docker")
        took = time.time() - start
        time.sleep(10)
    window = t.between(start)
    # Docker 20.10 with live-restore may stop running healthchecks of restored containers.
    time.sleep(15)
    checked = {c: target.inspect(c)["State"]["Health"]["Log"][-1]["End"] for c in STACK}
    stalled = sorted(c for c, end in checked.items() if parse_time(end[:26] + "Z") < start)
    # A check counts as stalled after 3 intervals + its timeout (40 s); the watchdog (every
    # 15 s) then runs the check itself, and a passing one leaves the container alone.
    since = f"@{int(start)}"

    def probed_now() -> list[str]:
        journal = target.sh("journalctl", "-u", "prodstack-watchdog", "-o", "cat", "--since", since)
        # The live app release runs under its own name (prodstack-app-RELEASE).
        named = {c: target.app() if c == APP else c for c in stalled}
        return sorted(c for c in stalled if f"{named[c]} has had no health check run by Docker" in journal)

    wait_for(lambda: probed_now() == stalled, 120, 5)
    probed = probed_now()
    # What failed, and why: refused connections (the published port's rules, rebuilt by the
    # restarting dockerd) or NGINX's 502 (its per-request lookup of the release's name goes to
    # Docker's embedded DNS, which is down with dockerd).
    failed = [r for r in window if not r.ok]
    refused = sum(1 for r in failed if r.status == 0)
    nginx_log = target.docker("logs", "--since", str(int(start)), NGINX, check=False)
    unresolved = nginx_log.count("could not be resolved")
    why = (
        f"failed: {refused} refused or timed out, {sum(1 for r in failed if r.status == 502)} NGINX 502 "
        f"({unresolved} NGINX lookups failed with the embedded DNS down), "
        f"{len(failed) - refused - sum(1 for r in failed if r.status == 502)} other"
    )
    case.done = f"`systemctl restart docker` on the target under {RATE:.0f} req/s (live-restore on)"
    case.expected = "containers keep running (same IDs, same start time); failures reported"
    case.measured = (
        f"dockerd restart {took:.1f} s; {summary(window)}; {why}; containers kept: "
        f"{target.identity() == ids}; healthchecks stalled since the restart: "
        f"{', '.join(stalled) or 'none'}; probed by the watchdog instead: "
        f"{', '.join(probed) or 'none'}"
    )
    assert target.identity() == ids
    assert probed == stalled
    assert get(url + "/").ok


# In `make test-full`: the default scenario checks every container's rotation settings;
# this case shows Docker applying them (about 30 s of writing logs).
@pytest.mark.full_only
def test_10_log_rotation(case: Case, target: Target, url: str) -> None:
    """10. Log growth bounded by rotation."""
    image = target.inspect(APP)["Config"]["Image"]
    script = "import sys\nline = 'x' * 1000 + '\\n'\nfor _ in range(40000): sys.stdout.write(line)"
    cid = target.docker(
        "run", "-d", "--name", "res-logger", "--network", "none",
        "--entrypoint", "python3", image, "-c", script,
    ).strip()  # fmt: skip
    try:
        target.docker("wait", cid, timeout=300)
        listing = target.sh("sh", "-c", f"stat -c '%n %s' /var/lib/docker/containers/{cid}/*-json.log*")
    finally:
        target.docker("rm", "-f", "res-logger", check=False)
    sizes = [int(line.split()[1]) for line in listing.splitlines()]
    configs = {name: target.inspect(name)["HostConfig"]["LogConfig"] for name in STACK}
    bounded = all(
        c["Type"] == "json-file" and c["Config"] == {"max-size": "10m", "max-file": "3"}
        for c in configs.values()
    )
    case.done = "a container wrote ~42 MB of log lines (40 000 × 1 KB); stack containers inspected"
    case.expected = "at most 3 files of at most 10 MiB (json-file max-size 10m, max-file 3)"
    case.measured = (
        f"{len(sizes)} files kept: {', '.join(f'{s / MiB:.1f}' for s in sizes)} MiB; the four "
        f"stack containers use the same rotation: {bounded}"
    )
    assert 1 <= len(sizes) <= 3 and max(sizes) <= 10.5 * MiB
    assert bounded, configs
