"""Tuning levers, measured one at a time on a target kept by `BENCH_KEEP=1 bench/run.sh`.

    python3 bench/bench.py levers WORKDIR [LEVER ...]

WORKDIR is the kept run's temp dir (printed at its end; kept.json, the inventory and the
generated passwords). Each lever (bench/levers.json) is the app role re-applied with other
variables (bench/levers-app.yml) and/or another gunicorn.conf.py (bench/levers/, built into a
bench/app-lever image), NGINX server directives added to the deployed file, or a
PostgreSQL setting; then `/` (and /app-health) at
each connection count. The reference (current defaults) is measured first and last to show
drift. Results: bench/levers.md (quoted by docs/PERFORMANCE.md) and bench/out/levers-*.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import bench as b

LEVERS_DIR = b.BENCH / "levers"


def _levers() -> dict[str, dict[str, Any]]:
    return json.loads((b.BENCH / "levers.json").read_text())


CONF = "/etc/prodstack/nginx/conf.d/default.conf"


def app_role(target: b.Target, extra: dict[str, Any], logdir: Path, label: str) -> None:
    varfile = target.workdir / f"lever-{label}.json"
    varfile.write_text(json.dumps(extra))
    env = dict(
        b.os.environ,
        ANSIBLE_CONFIG=str(b.ROOT / "ansible.cfg"),
        HOME=str(target.home),
        ANSIBLE_NOCOLOR="1",
        PATH=f"{b.ROOT / '.venv' / 'bin'}:{b.os.environ.get('PATH', '')}",
    )
    proc = b.subprocess.run(
        [
            "ansible-playbook",
            "-i",
            str(target.inventory),
            str(b.BENCH / "levers-app.yml"),
            "-e",
            f"@{varfile}",
        ],
        cwd=b.ROOT,
        env=env,
        capture_output=True,
        timeout=600,
    )
    (logdir / f"app-role-{label}.log").write_bytes(proc.stdout + proc.stderr)
    if proc.returncode:
        raise RuntimeError(f"app role for lever {label} failed: see {logdir}/app-role-{label}.log")


def apply(
    target: b.Target, lever: dict[str, Any], app_image: str, workdir: Path, logdir: Path, label: str
) -> float:
    extra: dict[str, Any] = {"app_image": app_image, **lever.get("vars", {})}
    if "gunicorn_conf" in lever:
        ref = b.build_image(
            "bench/app-lever", b.app_variant_files(LEVERS_DIR / lever["gunicorn_conf"]), workdir
        )
        b.load_into(target, ref)
        extra["app_image"] = ref
    # NGINX: back to the file as deployed (with /app-health), plus this lever's directives.
    target.sh("sh", "-c", f"cp {CONF}.bench-orig {CONF}")
    target.sh("docker", "exec", "prodstack-nginx", "nginx", "-s", "reload")
    if lever.get("nginx_directives"):
        target.patch_nginx(lever["nginx_directives"])
    target.psql("postgres", lever.get("postgres_sql") or "ALTER DATABASE app RESET ALL")
    app_role(target, extra, logdir, label)
    # Per-database settings reach new connections only: start the app's pools afresh.
    target.sh("docker", "restart", "-t", "5", "prodstack-app")
    boot = b.wait_status(target.url + "/", timeout=90)  # app (re)started -> first 200 on / through NGINX
    b.wait_status(target.url + b.APP_HEALTH_PATH, timeout=30)
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
    logdir = b.BENCH / "out" / f"levers-{time.strftime('%Y%m%d-%H%M%S')}"
    logdir.mkdir(parents=True, exist_ok=True)
    target = b.Target(kept["name"], kept["port"], kept["tls_port"], workdir)
    target.patch_nginx()
    target.sh("sh", "-c", f"cp {CONF} {CONF}.bench-orig")
    results: list[dict[str, Any]] = []
    for i, key in enumerate(order):
        lever = levers[key]
        label = f"{i:02d}-{key}"
        b.log(f"lever {label}: {lever['what']}")
        boot = apply(target, lever, kept["app_image"], workdir, logdir, label)
        row = {
            "key": key,
            "what": lever["what"],
            "where": lever.get("where", ""),
            "boot": boot,
            "root": b.measure(target, "/", logdir, f"{label}-root", before=target.truncate_visits),
        }
        if lever.get("app_health", False):
            row["app_health"] = b.measure(target, b.APP_HEALTH_PATH, logdir, f"{label}-app-health")
        results.append(row)
        (logdir / "levers.json").write_text(json.dumps(results, indent=1))
    apply(target, levers["reference"], kept["app_image"], workdir, logdir, "restore")

    ref_runs = [r for r in results if r["key"] == "reference"]
    ref = {c: sum(r["root"][c]["rps"] for r in ref_runs) / len(ref_runs) for c in b.CONNECTIONS}
    lines = [
        "## Levers (measured one at a time)\n",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `python3 bench/bench.py levers` on a "
        f"kept benchmark target ({b.DURATION} s per row). `/` req/s relative to the reference (the mean of the "
        "reference runs measured first and last; their spread is the noise floor).\n",
        "| lever | where | "
        + " | ".join(f"`/` c={c} req/s (p99 ms)" for c in b.CONNECTIONS)
        + " | vs ref (c="
        + str(b.CONNECTIONS[0])
        + ") | app `/health` c="
        + str(b.CONNECTIONS[0])
        + " req/s | app restart -> first 200 s |",
        "|---|---|" + "---:|" * len(b.CONNECTIONS) + "---:|---:|---:|",
    ]
    for r in results:
        cells = " | ".join(
            f"{r['root'][c]['rps']:.0f} ({r['root'][c]['p99']:.1f})"
            + (f", {r['root'][c]['errors']} err" if r["root"][c]["errors"] else "")
            for c in b.CONNECTIONS
        )
        c0 = b.CONNECTIONS[0]
        ah = f"{r['app_health'][c0]['rps']:.0f}" if "app_health" in r else ""
        lines.append(
            f"| {r['what']} | {r['where']} | {cells} | {r['root'][c0]['rps'] / ref[c0]:.2f} | {ah} | {r['boot']:.1f} |"
        )
    md = "\n".join(lines) + "\n"
    (b.BENCH / "levers.md").write_text(md)
    print(md)
    return 0


def ansible_main(argv: list[str]) -> int:
    """`bench.py ansible-levers WORKDIR`: warm converges as configured and with Ansible levers set by
    environment (pipelining for the docker connection), alternated, on a kept target."""
    workdir = Path(argv[0])
    kept = json.loads((workdir / "kept.json").read_text())
    target = b.Target(kept["name"], kept["port"], kept["tls_port"], workdir)
    logdir = b.BENCH / "out" / f"ansible-levers-{time.strftime('%Y%m%d-%H%M%S')}"
    logdir.mkdir(parents=True, exist_ok=True)
    variants = [
        ("as configured (ansible.cfg)", {}),
        ("ANSIBLE_PIPELINING=True", {"ANSIBLE_PIPELINING": "True"}),
    ]
    target.converge("restore", logdir)  # puts the real app back (the full run ends on the baseline)
    rows = []
    for rnd in range(int(b.os.environ.get("BENCH_ROUNDS", "1"))):
        for i, (what, env) in enumerate(variants):
            saved = {k: b.os.environ.get(k) for k in env}
            b.os.environ.update(env)
            try:
                r = target.converge(f"warm-{rnd}-{i}", logdir)
            finally:
                for k, v in saved.items():
                    if v is None:
                        b.os.environ.pop(k, None)
                    else:
                        b.os.environ[k] = v
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
    (b.BENCH / "ansible-levers.md").write_text(md)
    print(md)
    return 0
