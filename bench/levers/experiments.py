"""Tuning levers, measured one at a time on a target kept by `BENCH_KEEP=1 bench/run.sh`.

    python3 -m bench levers WORKDIR [LEVER ...]

WORKDIR is the kept run's temp dir (printed at its end; kept.json, the inventory and the
generated passwords). Each lever (levers.json here) is the app role re-applied with other
variables (app-role.yml; a new spec makes a new release, whose switch rewrites NGINX's
upstream), NGINX server directives added to the deployed file, or a PostgreSQL setting;
then `/` (and /app-health) at
each connection count. The reference (current defaults) is measured first and last to show
drift. Results: levers.md here (quoted by the bench's report) and bench/out/levers-*.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import APP_HEALTH_PATH, BENCH, CONNECTIONS, DURATION, ROOT, log, wait_status
from bench.load import measure
from bench.target import Target

LEVERS_DIR = Path(__file__).resolve().parent


def _levers() -> dict[str, dict[str, Any]]:
    levers: dict[str, dict[str, Any]] = json.loads((LEVERS_DIR / "levers.json").read_text())
    return levers


CONF = "/etc/prodstack/nginx/conf.d/default.conf"


def app_role(target: Target, extra: dict[str, Any], logdir: Path, label: str) -> None:
    varfile = target.workdir / f"lever-{label}.json"
    varfile.write_text(json.dumps(extra))
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        HOME=str(target.home),
        ANSIBLE_NOCOLOR="1",
        PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
    )
    proc = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            str(target.inventory),
            str(LEVERS_DIR / "app-role.yml"),
            "-e",
            f"@{varfile}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=600,
    )
    (logdir / f"app-role-{label}.log").write_bytes(proc.stdout + proc.stderr)
    if proc.returncode:
        raise RuntimeError(f"app role for lever {label} failed: see {logdir}/app-role-{label}.log")


def apply(
    target: Target, lever: dict[str, Any], app_image: str, workdir: Path, logdir: Path, label: str
) -> float:
    extra: dict[str, Any] = {"app_image": app_image, **lever.get("vars", {})}
    # NGINX: back to the file as deployed (with /app-health), plus this lever's directives.
    target.sh("sh", "-c", f"cp {CONF}.bench-orig {CONF}")
    target.sh("docker", "exec", "prodstack-nginx", "nginx", "-s", "reload")
    if lever.get("nginx_directives"):
        target.patch_nginx(lever["nginx_directives"])
    target.psql("postgres", lever.get("postgres_sql") or "ALTER DATABASE app RESET ALL")
    app_role(target, extra, logdir, label)
    # Per-database settings reach new connections only: start the app's pools afresh (the live
    # release's container, prodstack-app-<release id>; a lever with other variables is a new release).
    target.sh("docker", "restart", "-t", "5", target.app_container())
    boot = wait_status(target.url + "/", timeout=90)  # app (re)started -> first 200 on / through NGINX
    wait_status(target.url + APP_HEALTH_PATH, timeout=30)
    time.sleep(2)
    return boot


def main(argv: list[str]) -> int:
    if len(argv) < 1:
        print(__doc__, file=sys.stderr)
        return 2
    workdir = Path(argv[0])
    kept = json.loads((workdir / "kept.json").read_text())
    levers = _levers()
    chosen = argv[1:] or [k for k in levers if k != "reference"]
    order = ["reference", *chosen, "reference"]
    logdir = BENCH / "out" / f"levers-{time.strftime('%Y%m%d-%H%M%S')}"
    logdir.mkdir(parents=True, exist_ok=True)
    target = Target(kept["name"], kept["port"], kept["tls_port"], workdir)
    target.patch_nginx()
    target.sh("sh", "-c", f"cp {CONF} {CONF}.bench-orig")
    results: list[dict[str, Any]] = []
    for i, key in enumerate(order):
        lever = levers[key]
        label = f"{i:02d}-{key}"
        log(f"lever {label}: {lever['what']}")
        boot = apply(target, lever, kept["app_image"], workdir, logdir, label)
        row = {
            "key": key,
            "what": lever["what"],
            "where": lever.get("where", ""),
            "boot": boot,
            "root": measure(target, "/", logdir, f"{label}-root", before=target.truncate_visits),
        }
        if lever.get("app_health", False):
            row["app_health"] = measure(target, APP_HEALTH_PATH, logdir, f"{label}-app-health")
        results.append(row)
        (logdir / "levers.json").write_text(json.dumps(results, indent=1))
    apply(target, levers["reference"], kept["app_image"], workdir, logdir, "restore")

    ref_runs = [r for r in results if r["key"] == "reference"]
    ref = {c: sum(r["root"][c]["rps"] for r in ref_runs) / len(ref_runs) for c in CONNECTIONS}
    lines = [
        "## Levers (measured one at a time)\n",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `python3 -m bench levers` on a "
        f"kept benchmark target ({DURATION} s per row). `/` req/s relative to the reference (the mean of the "
        "reference runs measured first and last; their spread is the noise floor).\n",
        "| lever | where | "
        + " | ".join(f"`/` c={c} req/s (p99 ms)" for c in CONNECTIONS)
        + " | vs ref (c="
        + str(CONNECTIONS[0])
        + ") | app `/health` c="
        + str(CONNECTIONS[0])
        + " req/s | app restart -> first 200 s |",
        "|---|---|" + "---:|" * len(CONNECTIONS) + "---:|---:|---:|",
    ]
    for r in results:
        cells = " | ".join(
            f"{r['root'][c]['rps']:.0f} ({r['root'][c]['p99']:.1f})"
            + (f", {r['root'][c]['errors']} err" if r["root"][c]["errors"] else "")
            for c in CONNECTIONS
        )
        c0 = CONNECTIONS[0]
        ah = f"{r['app_health'][c0]['rps']:.0f}" if "app_health" in r else ""
        lines.append(
            f"| {r['what']} | {r['where']} | {cells} | {r['root'][c0]['rps'] / ref[c0]:.2f} | {ah} | {r['boot']:.1f} |"
        )
    md = "\n".join(lines) + "\n"
    (LEVERS_DIR / "levers.md").write_text(md)
    print(md)
    return 0


def ansible_main(argv: list[str]) -> int:
    """`python3 -m bench ansible-levers WORKDIR`: warm converges as configured and with Ansible levers set by
    environment (pipelining for the docker connection), alternated, on a kept target."""
    workdir = Path(argv[0])
    kept = json.loads((workdir / "kept.json").read_text())
    target = Target(kept["name"], kept["port"], kept["tls_port"], workdir)
    logdir = BENCH / "out" / f"ansible-levers-{time.strftime('%Y%m%d-%H%M%S')}"
    logdir.mkdir(parents=True, exist_ok=True)
    variants = [
        ("as configured (ansible.cfg)", {}),
        ("ANSIBLE_PIPELINING=True", {"ANSIBLE_PIPELINING": "True"}),
    ]
    target.converge("restore", logdir)  # puts the real app back (the full run ends on the baseline)
    rows = []
    for rnd in range(int(os.environ.get("BENCH_ROUNDS", "1"))):
        for i, (what, env) in enumerate(variants):
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                r = target.converge(f"warm-{rnd}-{i}", logdir)
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            rows.append((what, r))
    lines = [
        "## Ansible levers (warm converge, same kept target, alternated)\n",
        "| lever | wall s | changed | tasks over 2 s | slowest task |",
        "|---|---:|---:|---:|---|",
    ]
    for what, r in rows:
        top = f"{r['slowest'][0][0]} ({r['slowest'][0][1]:.1f} s)" if r["slowest"] else ""
        lines.append(f"| {what} | {r['wall']:.1f} | {r['changed']} | {len(r['over_2s'])} | {top} |")
    md = "\n".join(lines) + "\n"
    (LEVERS_DIR / "ansible-levers.md").write_text(md)
    print(md)
    return 0
