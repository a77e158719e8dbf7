"""The resilience cases of issue 4, in order. Each asserts its outcome and records figures.

Run by `molecule test -s resilience` on a converged target. Environment:
RESILIENCE_OUTAGE (s, default 30): how long Redis and PostgreSQL stay stopped;
RESILIENCE_SOAK_SECONDS (default 300): duration of the soak (case 13).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

from reslib import (
    APP,
    NGINX,
    POSTGRES,
    REDIS,
    STACK,
    Case,
    PlayResult,
    Response,
    Target,
    Traffic,
    converge,
    get,
    last_visits,
    parse_time,
    pct,
    run,
    summary,
    wait_for,
)

OUTAGE = float(os.environ.get("RESILIENCE_OUTAGE", "30"))
SOAK = float(os.environ.get("RESILIENCE_SOAK_SECONDS", "300"))
RATE = float(os.environ.get("RESILIENCE_RATE", "8"))
DEADLINE = 2.5  # the "within 2 s", with margin (ISSUE-NOTES 11)
MiB = 1024 * 1024


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


def test_01_app_process_killed(case: Case, target: Target, url: str) -> None:
    """1. App main process killed."""
    nginx = target.inspect(NGINX)["State"]
    app = target.inspect(APP)
    master = target.gunicorn_master()
    with Traffic(url + "/") as t:
        time.sleep(2)
        killed = time.time()
        target.docker("exec", APP, "sh", "-c", f"kill -9 {master}")
        wait_for(lambda: target.inspect(APP)["RestartCount"] > app["RestartCount"], 60)
        started = parse_time(target.inspect(APP)["State"]["StartedAt"])
        t.wait_ok(started, count=10, timeout=60)
    window = t.between(killed)
    failed = [r for r in window if not r.ok]
    # Requests that reach the restarted container while its workers still boot wait in the
    # listen backlog: timeouts there are reported, not hidden (see docs/RESILIENCE.md).
    booting = [r for r in failed if r.status == 0 and r.sent >= started - 1]
    wrong = [r for r in bad_answers(window, (502, 503)) if r not in booting]
    back = recovery(t, killed)
    nginx_after = target.inspect(NGINX)["State"]
    case.done = (
        f"`kill -9` of gunicorn's master (PID {master} in the container; PID 1 is "
        f"docker-init) with {RATE:.0f} req/s on `/`"
    )
    case.expected = "restart policy restarts the app; NGINX untouched; JSON 502/503 meanwhile"
    case.measured = (
        f"container restarted {started - killed:.1f} s and 200 again {back:.1f} s after the "
        f"kill; {len(failed)} failed: {len(failed) - len(booting) - len(wrong)} JSON 502/503 "
        f"before the restart, {len(booting)} timeouts (3 s) while the new workers booted, "
        f"{len(wrong)} other; NGINX PID {nginx['Pid']}→{nginx_after['Pid']}; app "
        f"RestartCount {app['RestartCount']}→{target.inspect(APP)['RestartCount']}"
    )
    assert target.inspect(APP)["RestartCount"] == app["RestartCount"] + 1
    assert (nginx_after["Pid"], nginx_after["StartedAt"]) == (
        nginx["Pid"],
        nginx["StartedAt"],
    )
    assert not wrong, wrong[:3]
    assert back < 30


def test_02_app_recreated_new_ip(case: Case, target: Target, url: str) -> None:
    """2. App removed and recreated by a converge (new IP)."""
    old_ip = target.ip(APP)
    nginx_pids = target.nginx_pids()
    holder_image = target.inspect(REDIS)["Config"]["Image"]
    with Traffic(url + "/") as t:
        target.docker("rm", "-f", APP)
        removed = time.time()
        # Containers that take the freed addresses until one holds the old IP, so the new
        # app cannot get it back (Docker may hand out a just-freed address again).
        holders = []
        for n in range(8):
            holders.append(f"res-ipholder-{n}")
            target.docker(
                "run", "-d", "--name", holders[-1], "--network", "prod-net",
                "--entrypoint", "sleep", holder_image, "900",
            )  # fmt: skip
            if target.ip(holders[-1]) == old_ip:
                break
        try:
            with ThreadPoolExecutor(max_workers=1) as pool:
                converging = pool.submit(converge)
                wait_for(target.app_ready, 600, interval=0.3)
                ready = time.time()
                play = converging.result()
            started = parse_time(target.inspect(APP)["State"]["StartedAt"])
            first = t.wait_ok(ready - 1, count=5, timeout=30)
        finally:
            target.docker("rm", "-f", *holders, check=False)
    new_ip = target.ip(APP)
    follow = max(0.0, first.sent - ready)
    case.done = "`docker rm -f prodstack-app`, old IP held by another container, converge"
    case.expected = "new IP; NGINX (no reload, no restart) routes to it within 10 s"
    case.measured = (
        f"IP {old_ip}→{new_ip}; new app started {started - removed:.0f} s after the removal, "
        f"its own /health answered {ready - started:.1f} s later, first 200 through NGINX "
        f"{follow:.1f} s after that; "
        f"NGINX processes {'unchanged' if target.nginx_pids() == nginx_pids else 'CHANGED'}; "
        f"converge {play.seconds:.0f} s"
    )
    assert play.rc == 0, play.output[-2000:]
    assert new_ip != old_ip
    assert follow < 10
    assert target.nginx_pids() == nginx_pids


def dependency_outage(target: Target, url: str, container: str) -> dict[str, Any]:
    """Stop `container` for OUTAGE s under traffic, start it; collect the figures."""
    dep = container.removeprefix("prodstack-")
    master, app_started = (
        target.gunicorn_master(),
        target.inspect(APP)["State"]["StartedAt"],
    )
    with Traffic(url + "/") as t:
        time.sleep(2)
        rows_before = target.sql("SELECT count(*) || ' ' || max(id) FROM visits").split()
        target.docker("stop", container)
        stopped = time.time()
        time.sleep(OUTAGE)
        starting = time.time()
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
            target.gunicorn_master(),
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
    time.sleep(40)  # the watchdog (every 15 s) sees the stalled checks and probes them itself
    journal = target.sh("journalctl", "-u", "prodstack-watchdog", "--since", "-1min")
    probed = sorted(c for c in stalled if f"{c}: Docker stopped running its health check" in journal)
    case.done = f"`systemctl restart docker` on the target under {RATE:.0f} req/s (live-restore on)"
    case.expected = "containers keep running (same IDs, same start time); failures reported"
    case.measured = (
        f"dockerd restart {took:.1f} s; {summary(window)}; containers kept: "
        f"{target.identity() == ids}; healthchecks stalled since the restart: "
        f"{', '.join(stalled) or 'none'}; probed by the watchdog instead: "
        f"{', '.join(probed) or 'none'}"
    )
    assert target.identity() == ids
    assert probed == stalled
    assert get(url + "/").ok


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


def test_09_unhealthy_container_watchdog(case: Case, target: Target, url: str) -> None:
    """9. A container that stays unhealthy (watchdog)."""
    assert target.sh("systemctl", "is-active", "prodstack-watchdog.timer").strip() == "active"
    others = {n: v for n, v in target.identity().items() if n != APP}
    started = target.inspect(APP)["State"]["StartedAt"]
    pids = target.gunicorn_pids()
    start = time.monotonic()
    seen_unhealthy: list[float] = []

    def restarted() -> bool:
        c = target.inspect(APP)
        if not seen_unhealthy and c["State"].get("Health", {}).get("Status") == "unhealthy":
            seen_unhealthy.append(time.monotonic() - start)
        return bool(c["State"]["StartedAt"] != started)

    # Every gunicorn process frozen: /health times out, nothing inside can heal itself. After
    # case 7 Docker may no longer run the app's healthcheck (its status stays "healthy"): then
    # the watchdog's own probe of the check must catch it.
    target.docker("exec", APP, "sh", "-c", "kill -STOP " + " ".join(map(str, pids)))
    wait_for(restarted, 180)
    restarted_at = time.monotonic() - start
    wait_for(lambda: target.health(APP) == "healthy", 120)
    healthy = time.monotonic() - start
    journal = target.sh("journalctl", "-u", "prodstack-watchdog", "--since", "-10min")
    lines = [line for line in journal.splitlines() if "prodstack-app" in line and "restarting" in line]
    logged = lines[-1].split(": ", 1)[-1] if lines else "nothing"
    untouched = {n: v for n, v in target.identity().items() if n != APP} == others
    case.done = (
        "SIGSTOP of every gunicorn process (liveness /health fails, container keeps running); "
        "host watchdog = systemd timer every 15 s (role stack_watchdog)"
    )
    case.expected = "watchdog restarts the unhealthy app; others untouched; healthy again"
    unhealthy = f"{seen_unhealthy[0]:.0f} s" if seen_unhealthy else "never (Docker's check stalled)"
    case.measured = (
        f"Docker status unhealthy after: {unhealthy}; restarted by the watchdog at "
        f"{restarted_at:.0f} s, healthy at {healthy:.0f} s; journal: {logged!r}; others "
        f"untouched: {untouched}"
    )
    assert lines and untouched
    assert get(url + "/").ok


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


def raw_http(port: int, payload: bytes, wait: float = 15.0, drip: float = 0.0) -> str:
    """Send `payload` (one byte per `drip` s when > 0); the status code, 'closed' or 'timeout'."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        deadline = time.monotonic() + wait
        try:
            if drip:
                for byte in payload:
                    s.sendall(bytes([byte]))
                    time.sleep(drip)
                    if time.monotonic() > deadline:
                        return "timeout"
            else:
                s.sendall(payload)
            data = s.recv(4096)
        except TimeoutError:
            return "timeout"
        except OSError:
            return "closed"
    if not data:
        return "closed"
    return data.split(b"\r\n", 1)[0].split(b" ")[1].decode()


BAD_REQUESTS: dict[str, bytes] = {
    "oversized header (16 KiB)": b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 16384 + b"\r\n\r\n",
    "oversized URI (64 KiB)": b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "oversized body (2 MB declared)": b"POST / HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: 2000000\r\n\r\n" + b"a" * 1024,
    "unknown method": b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n",
    "invalid method": b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
    "TRACE": b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n",
    "path traversal": b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    "encoded traversal": b"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    "garbage request line": b"GARBAGE\r\n\r\n",
    "HTTP/1.1 without Host": b"GET / HTTP/1.1\r\n\r\n",
    "invalid header line": b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    "bad chunked body": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
}


def health_latencies(url: str, n: int = 20) -> list[float]:
    out = []
    for _ in range(n):
        r = get(url + "/health")
        assert r.status == 200
        out.append(r.latency * 1000)
        time.sleep(0.2)
    return out


def test_11_bad_http(case: Case, target: Target, url: str) -> None:
    """11. Bad HTTP at NGINX."""
    port = int(urlparse(url).port or 80)
    baseline = health_latencies(url)
    slow_results: list[str] = []
    slow_payload = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40
    body_payload = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"a" * 5

    def slow(payload: bytes, drip: float) -> None:
        slow_results.append(raw_http(port, payload, wait=20, drip=drip))

    threads = [threading.Thread(target=slow, args=(slow_payload, 0.5)) for _ in range(10)]
    threads += [threading.Thread(target=slow, args=(body_payload, 0.0)) for _ in range(10)]
    for th in threads:
        th.start()
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = dict(
            zip(
                BAD_REQUESTS,
                pool.map(lambda p: raw_http(port, p), BAD_REQUESTS.values()),
            )
        )
    during = health_latencies(url)
    for th in threads:
        th.join(timeout=30)
    after = get(url + "/health")
    accepted = {a for a in answers.values() if not (a.startswith("4") or a in ("closed", "timeout"))}
    slow_ok = all(r.startswith("4") or r in ("closed", "timeout") for r in slow_results)
    case.done = (
        f"{len(BAD_REQUESTS)} bad requests ({', '.join(BAD_REQUESTS)}) and 20 slow clients "
        "(10 dripping headers, 10 stalled bodies)"
    )
    case.expected = "each a 4xx or a timeout; /health OK with unchanged latency"
    case.measured = (
        "; ".join(f"{k}: {v}" for k, v in answers.items())
        + f"; slow clients: {sorted(set(slow_results))}; /health p50 "
        f"{pct(baseline, 50):.1f}→{pct(during, 50):.1f} ms, max {max(baseline):.1f}→"
        f"{max(during):.1f} ms"
    )
    assert not accepted, answers
    assert len(slow_results) == 20 and slow_ok, slow_results
    assert after.status == 200
    assert pct(during, 50) < pct(baseline, 50) + 50


BAD_INVENTORY: list[tuple[str, str, list[str], str]] = [
    # (role, what is wrong, extra args, what the failure must name)
    ("docker_engine", "string for a dict", ["-e", "docker_engine_daemon_config=oops"],
     "docker_engine_daemon_config"),
    ("stack_images", "unknown image in the build list", ["-e", '{"stack_images_build": ["app", "mysql"]}'],
     "stack_images_build"),
    ("stack_resources", "volume map without redis", ["-e", '{"stack_resources_volumes": {"postgres": "x"}}'],
     "stack_resources_volumes"),
    ("postgres", "missing password", ["-e", '{"postgres_password": ""}'], "postgres_password"),
    ("redis", "missing password", ["-e", '{"redis_password": ""}'], "redis_password"),
    ("app", "string for an int", ["-e", "app_workers=many"], "app_workers"),
    ("app", "unknown image", ["-e", "app_image=prodstack/app:does-not-exist"], "app_image"),
    ("nginx", "string for a port", ["-e", "nginx_published_port=http"], "nginx_published_port"),
    ("nginx", "port in use on the host", ["-e", "nginx_published_port=18999"], "18999"),
    ("stack_health", "timeout too short", ["-e", "stack_health_timeout=1"], "stack_health_timeout"),
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
