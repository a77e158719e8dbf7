"""The stack end to end: NGINX -> app -> Redis + PostgreSQL, as containers.

The tests run in file order on one shared stack; the ones that stop or replace a container
bring it back before they finish (also on failure) so the next test starts from a full stack.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from conftest import docker, wait_until

pytestmark = pytest.mark.containers

Report = Callable[[str], None]
Stack = Any  # conftest.Stack, handed over by the session fixture


def _json(resp: requests.Response) -> dict:
    assert resp.headers.get("Content-Type", "").startswith("application/json"), (
        resp.status_code,
        resp.headers,
        resp.text[:300],
    )
    body = resp.json()
    assert isinstance(body, dict), body
    return body


def _degraded_naming(dep: str) -> Callable[[requests.Response], bool]:
    def pred(resp: requests.Response) -> bool:
        if resp.status_code != 503:
            return False
        try:
            return dep in resp.json().get("failed", [])
        except ValueError:
            return False

    return pred


def _ok(resp: requests.Response) -> bool:
    return resp.status_code == 200


# ------------------------------------------------------------------------------------ 1
def test_stack_healthy_only_nginx_published_and_serving(stack: Stack) -> None:
    for svc in stack.services:
        st = stack.state(svc)
        assert st["Running"], (svc, st)
        assert st["Health"]["Status"] == "healthy", stack.health_log(stack.names[svc])

    # NGINX answers /health itself; /app-health is the app's own liveness through the proxy.
    app_health = stack.get("/app-health")
    assert app_health.status_code == 200 and app_health.json() == {"status": "ok"}, app_health.text

    # Only NGINX has host port bindings, and only on loopback.
    for svc in stack.services:
        info = stack.inspect(stack.names[svc])
        bindings = info["HostConfig"]["PortBindings"] or {}
        published = {p: b for p, b in (info["NetworkSettings"]["Ports"] or {}).items() if b}
        if svc == "nginx":
            assert set(bindings) == {"8080/tcp"}, bindings
            assert set(published) == {"8080/tcp"}, published
            assert all(b["HostIp"] == "127.0.0.1" for b in published["8080/tcp"]), published
            assert int(published["8080/tcp"][0]["HostPort"]) == stack.port
        else:
            assert not bindings, (svc, bindings)
            assert not published, (svc, published)

    # NGINX's own liveness.
    r = stack.get("/health")
    assert r.status_code == 200
    assert r.text.strip() == "OK"

    # The full path, counter growing across calls.
    visits = []
    row_ids = []
    for _ in range(3):
        r = stack.get("/")
        assert r.status_code == 200, r.text
        body = _json(r)
        assert body["status"] == "ok", body
        assert body["failed"] == [], body
        assert body["checks"]["redis"]["status"] == "ok", body
        assert body["checks"]["postgres"]["status"] == "ok", body
        visits.append(body["visits"])
        row_ids.append(body["row_id"])
    assert visits == sorted(visits) and len(set(visits)) == 3, visits
    assert row_ids == sorted(row_ids) and len(set(row_ids)) == 3, row_ids

    # A client's X-Request-ID comes back (header and body), through NGINX and the app.
    rid = f"{stack.prefix}-rid-{time.monotonic_ns()}"
    r = stack.get("/", headers={"X-Request-ID": rid})
    assert r.status_code == 200
    assert _json(r)["request_id"] == rid
    echoed = r.raw.headers.getlist("X-Request-ID")
    assert echoed and all(v == rid for v in echoed), echoed
    # Without one, NGINX mints an ID and app + response agree on it.
    r = stack.get("/")
    minted = r.raw.headers.getlist("X-Request-ID")
    assert minted and len(set(minted)) == 1 and minted[0] == _json(r)["request_id"], minted


def test_request_id_header_sent_once(stack: Stack) -> None:
    r = stack.get("/", headers={"X-Request-ID": f"{stack.prefix}-once"})
    assert r.status_code == 200
    assert len(r.raw.headers.getlist("X-Request-ID")) == 1, r.raw.headers.getlist("X-Request-ID")


def test_access_log_whole_json_lines_soon(stack: Stack) -> None:
    """NGINX buffers its access log (a write per 4 KiB, flushed each second): every request
    still gets one whole JSON line with its request id in `docker logs` within seconds, and
    lines written by several workers at once never tear (each write fits a pipe's atomic size)."""
    stamp = f"{stack.prefix}-log-{time.monotonic_ns()}"
    ids = [f"{stamp}-{i}" for i in range(300)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda rid: stack.get("/app-health", headers={"X-Request-ID": rid}), ids))
    statuses = [r.status_code for r in answers]
    assert statuses == [200] * len(ids), statuses

    def lines() -> list[str]:
        return [line for line in docker("logs", stack.names["nginx"]).stdout.splitlines() if stamp in line]

    wait_until(lambda: len(lines()) >= len(ids), 5, f"{len(ids)} access log lines in `docker logs`")
    logged = [json.loads(line) for line in lines()]
    logged_ids = sorted(entry["request_id"] for entry in logged)
    assert logged_ids == sorted(ids), f"{len(logged)} of {len(ids)} requests logged"
    assert all(entry["service"] == "nginx" and entry["status"] == 200 for entry in logged), logged[:3]


# ------------------------------------------------------------------------------------ 2
def test_nginx_started_before_app_then_follows_it(stack: Stack, report: Report) -> None:
    pre = stack.facts["pre_app"]
    # Before any "app" existed: NGINX's own 502 JSON, not an HTML error page.
    assert pre["status"] == 502, pre
    assert pre["content_type"].startswith("application/json"), pre
    body = json.loads(pre["text"])
    assert body["status"] == "error" and body["service"] == "nginx", body
    assert body["request_id"] == pre["request_id"], body
    assert pre["request_ids"] == [pre["request_id"]], pre

    # After the app started: 200 from the very same NGINX process tree.
    assert stack.facts["app_first_200_s"] is not None, "no 200 through NGINX after app start"
    r = stack.get("/")
    assert r.status_code == 200, r.text
    (started_before, restarts_before), (master_before, workers_before) = stack.facts["nginx_before_app"]
    started_now, restarts_now = stack.start_info("nginx")
    master_now, workers_now = stack.nginx_processes()
    assert started_now == started_before
    assert restarts_before == restarts_now == 0
    assert master_now == master_before
    assert workers_now == workers_before, "NGINX workers changed: reloaded?"
    report(
        f"nginx-before-app: 502 JSON before app; first 200 {stack.facts['app_first_200_s']:.1f} s "
        f"after `docker run` app; NGINX master PID {master_now} unchanged"
    )


# ------------------------------------------------------------------------------------ 3
def test_app_recreated_with_new_ip_nginx_follows(stack: Stack, report: Report) -> None:
    nginx_before = stack.start_info("nginx")
    procs_before = stack.nginx_processes()
    old_ip = stack.ip("app")
    assert stack.get("/").status_code == 200

    t_rm = time.monotonic()
    stack.docker("rm", "-fv", stack.names["app"])
    placeholder = None
    try:
        # Occupy the old address so the new app cannot get it back.
        placeholder = stack.run_placeholder(old_ip)
        r = stack.get("/")
        assert r.status_code == 502 and _json(r)["service"] == "nginx", r.text
        stack.run_app()
        new_ip = stack.ip("app")
        assert new_ip != old_ip
        resp, waited = stack.poll(_ok, timeout=10)
        since_rm = time.monotonic() - t_rm
        report(
            f"app recreate: IP {old_ip} -> {new_ip}; / 200 again {waited:.2f} s after "
            f"`docker run` of the new app ({since_rm:.2f} s after rm)"
        )
        assert resp is not None, f"/ not 200 within 10 s of the new app\n{stack.diagnostics()}"
        assert _json(resp)["hostname"] != "", resp.text
    finally:
        if placeholder:
            stack.docker("rm", "-fv", placeholder, check=False)
        if not stack.all_containers().count(stack.names["app"]):
            stack.run_app()

    nginx_now = stack.start_info("nginx")
    assert nginx_now == nginx_before and nginx_now[1] == 0, (nginx_before, nginx_now)
    assert stack.nginx_processes() == procs_before, "NGINX master or workers changed"
    stack.wait_healthy(("app",))


# ------------------------------------------------------------------------------------ 4/5
def _outage(stack: Stack, report: Report, dep: str, other: str) -> None:
    r = stack.get("/")
    assert r.status_code == 200, r.text
    before = _json(r)
    app_before = stack.start_info("app")

    stack.docker("stop", stack.names[dep], timeout=60)
    try:
        resp, waited = stack.poll(_degraded_naming(dep), timeout=5, interval=0.05)
        assert resp is not None, f"no 503 naming {dep} within 5 s"
        latency = resp.elapsed.total_seconds()
        body = _json(resp)
        report(
            f"{dep} stopped: 503 naming {dep} {waited:.2f} s after `docker stop` returned "
            f"(that request took {latency:.2f} s)"
        )
        assert waited < 2.5 and latency < 2.5, (waited, latency)
        assert body["status"] == "degraded" and body["failed"] == [dep], body
        assert body["checks"][dep]["status"] == "error" and body["checks"][dep]["error"], body
        assert body["checks"][other]["status"] == "ok", body
        h = stack.get("/health")
        assert h.status_code == 200 and h.text.strip() == "OK"
    finally:
        stack.docker("start", stack.names[dep])
    t_start = time.monotonic()
    resp, waited = stack.poll(_ok, timeout=15, interval=0.25)
    assert resp is not None, f"/ not 200 within 15 s of `docker start {dep}`\n{stack.diagnostics()}"
    report(f"{dep} started again: / 200 after {time.monotonic() - t_start:.2f} s")
    after = _json(resp)
    if dep == "redis":
        # Append-only file: the counter continues instead of restarting at 1.
        assert after["visits"] > before["visits"], (before["visits"], after["visits"])
    else:
        assert after["row_id"] > before["row_id"], (before["row_id"], after["row_id"])
    app_now = stack.start_info("app")
    assert app_now == app_before and app_now[1] == 0, (app_before, app_now)


def test_redis_outage_and_recovery(stack: Stack, report: Report) -> None:
    _outage(stack, report, "redis", "postgres")


def test_postgres_outage_and_recovery(stack: Stack, report: Report) -> None:
    count = stack.exec(
        "postgres", "psql", "-h", "/tmp", "-U", "postgres", "-d", "app", "-tAc",
        "select count(*) from visits",
    )  # fmt: skip
    assert count.returncode == 0, count.stderr
    rows_before = int(count.stdout.strip())
    _outage(stack, report, "postgres", "redis")
    count = stack.exec(
        "postgres", "psql", "-h", "/tmp", "-U", "postgres", "-d", "app", "-tAc",
        "select count(*) from visits",
    )  # fmt: skip
    assert count.returncode == 0, count.stderr
    assert int(count.stdout.strip()) > rows_before
    # The restart reused the data volume: the cluster was initialised exactly once.
    logs = stack.docker("logs", stack.names["postgres"])
    assert (logs.stdout + logs.stderr).count("initialising a new cluster") == 1


# ------------------------------------------------------------------------------------ 6
def test_security_contract(stack: Stack) -> None:
    # Each image runs as its fixed UID.
    for svc, uid in stack.uids.items():
        r = stack.exec(svc, "id", "-u")
        assert r.stdout.strip() == str(uid), (svc, r.stdout, r.stderr)

    hc = "/usr/local/bin/redis-healthcheck"
    assert stack.exec("redis", hc).returncode == 0, "healthcheck with the right password"
    wrong = stack.exec(
        "redis", "sh", "-c",
        f'umask 077; f=$(mktemp); echo wrong-password >"$f"; '
        f'REDIS_PASSWORD_FILE="$f" {hc}; rc=$?; rm -f "$f"; exit $rc',
    )  # fmt: skip
    assert wrong.returncode != 0, (wrong.stdout, wrong.stderr)
    no_pw = stack.exec("redis", hc, env={"REDIS_PASSWORD_FILE": ""})
    assert no_pw.returncode != 0, (no_pw.stdout, no_pw.stderr)
    assert "NOAUTH" in no_pw.stderr, no_pw.stderr

    for cmd in (["ping"], ["get", "prodstack:visits"]):
        r = stack.exec("redis", "redis-cli", "-h", "127.0.0.1", *cmd)
        assert "NOAUTH" in r.stdout + r.stderr, (cmd, r.stdout, r.stderr)

    def authed(*cmd: str) -> str:
        r = stack.exec(
            "redis", "sh", "-c",
            'REDISCLI_AUTH=$(cat "$REDIS_PASSWORD_FILE") exec redis-cli -h 127.0.0.1 "$@"',
            "redis-cli", *cmd,
        )  # fmt: skip
        return r.stdout + r.stderr

    assert "aof_enabled:1" in authed("info", "persistence")
    assert "unknown command" in authed("config", "get", "appendonly").lower()

    r = stack.exec(
        "postgres", "psql", "-h", "/tmp", "-U", "postgres", "-tAc",
        "select rolsuper from pg_roles where rolname='app'",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "f"

    # No secret value in any container's configuration nor in any process's argv.
    for name in stack.all_containers():
        blob = stack.docker("inspect", name).stdout
        top = stack.docker("top", name, "-o", "pid,args", check=False).stdout
        for secret in (stack.redis_password, stack.postgres_password):
            assert secret not in blob, f"secret visible in docker inspect {name}"
            assert secret not in top, f"secret visible in the process list of {name}"


def test_postgres_refuses_a_connection_limit_that_is_not_a_number(stack: Stack) -> None:
    """The entrypoint names the variable before it touches any data."""
    r = stack.docker(
        "run", "--rm", "-e", "POSTGRES_MAX_CONNECTIONS=lots", stack.images["postgres"], check=False
    )  # fmt: skip
    assert r.returncode != 0
    assert "POSTGRES_MAX_CONNECTIONS must be a whole number, got 'lots'" in r.stderr, r.stderr


# ------------------------------------------------------------------------------------ 7
def test_image_sizes(stack: Stack, report: Report) -> None:
    rows = []
    for svc in stack.services:
        size = int(stack.docker("image", "inspect", "--format", "{{.Size}}", stack.images[svc]).stdout)
        rows.append((svc, stack.images[svc], size))
    assert all(size > 0 for *_, size in rows)
    report(f"{'service':<9} {'image':<28} {'size':>10}")
    for svc, image, size in rows:
        report(f"{svc:<9} {image:<28} {size / 1e6:>7.1f} MB")
