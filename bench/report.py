"""The report: machine facts, the markdown tables, the targets met, out/PERFORMANCE.md and its chart."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Any

from bench.chart import CHART_NAME, write_chart
from bench.common import (
    BENCH,
    DOC,
    DURATION,
    POLL_INTERVAL,
    TARGET_IMAGE,
    WARMUP,
    WRK_THREADS,
    log,
    run,
)


def machine() -> dict[str, str]:
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu.group(1).strip() if cpu else "?",
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": os.uname().release,
        "os": str((re.search(r'PRETTY_NAME="(.*)"', Path("/etc/os-release").read_text()) or [None, "?"])[1]),
        "docker": run(["docker", "version", "-f", "{{.Server.Version}}"], check=False).strip(),
        "wrk": (run(["wrk", "-v"], check=False).splitlines() or ["?"])[0].split(" [")[0],
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def fmt(x: float, nd: int = 1) -> str:
    return "n/a" if x != x else f"{x:.{nd}f}"


# The `/` rows (compared with the baseline's) and every row compared with NGINX's own ceiling.
ROOT_KEYS = ("root", "root-tls", "root-machine", "baseline-root")
CEILING_KEYS = (*ROOT_KEYS, "app-health", "baseline-app-health")
ROWS = (
    ("NGINX `/health` (ceiling), deployed stack", "nginx-health"),
    ("same NGINX image alone, no backend", "nginx-alone-health"),
    ("app `/health` through NGINX (`/app-health`)", "app-health"),
    ("`/` (Redis INCR + PostgreSQL write, read)", "root"),
    ("`/` over HTTPS (published TLS port)", "root-tls"),
    ("`/` from this machine (+ the test container's Docker proxy)", "root-machine"),
    ("baseline (seed's way) `/`", "baseline-root"),
    ("baseline (seed's way) app `/health`", "baseline-app-health"),
)


def request_path(res: dict[str, Any]) -> list[str]:
    wrk = res.get("wrk", {})
    ceiling, base, alone = (
        wrk.get("nginx-health", {}),
        wrk.get("baseline-root", {}),
        wrk.get("nginx-alone-health", {}),
    )
    L = ["## Request path\n"]
    L.append("| endpoint | conns | req/s | p50 ms | p99 ms | errors | / vs baseline | of NGINX ceiling |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for title, key in ROWS:
        for c, r in (wrk.get(key) or {}).items():
            vs = of = ""
            if key in CEILING_KEYS and c in ceiling:
                of = f"{r['rps'] / ceiling[c]['rps']:.1%}"
            if key in ROOT_KEYS and c in base:
                vs = "1.0x" if key == "baseline-root" else f"**{r['rps'] / base[c]['rps']:.1f}x**"
            if key == "nginx-health" and c in alone:
                of = f"{r['rps'] / alone[c]['rps']:.0%} of alone"
            L.append(
                f"| {title} | {c} | {r['rps']:.0f} | {fmt(r['p50'], 2)} | {fmt(r['p99'], 2)} | {r['errors']} "
                f"| {vs} | {of} |"
            )
    L.append("")
    root = wrk.get("root", {})
    if base and root:
        pairs = [f"c={c}: {base[c]['p99']:.1f} ms -> {root[c]['p99']:.1f} ms" for c in root if c in base]
        L.append("p99 of `/` in the baseline row vs ours: " + ", ".join(pairs) + ".\n")
    return L


def release_section(rel: dict[str, Any]) -> list[str]:
    L = ["## Release timeline\n"]
    L.append(
        f"A one-line app change going live the way a user ships one: app/ copied, `__version__` "
        f"`{rel['old_version']}` -> `{rel['new_version']}` in `prodstack_app/__init__.py`, then "
        "`ansible-playbook -i INV site.yml -e stack_images_app_build_dir=COPY` (the whole converge: "
        "build on the controller, export, copy, load, new release, health gate, NGINX switch, drain), "
        f"while `GET /` went through NGINX every {POLL_INTERVAL} s (a new connection each). "
        "Times in s from the command's start; phases from `ansible.posix.profile_tasks`.\n"
    )
    L.append("| step | starts at s | takes s |")
    L.append("|---|---:|---:|")
    L.append(f"| the command (wall time), changed={rel['changed']} | 0.0 | {rel['wall']:.1f} |")
    phase_total = 0.0
    for ph in rel["phases"]:
        phase_total += ph["seconds"]
        L.append(f"| {ph['name']} | {ph['spans'][0][0]:.1f} | {ph['seconds']:.1f} |")
    if rel["phases"]:
        first = rel["phases"][0]["spans"][0][0]
        last = max(s[0] + s[1] for ph in rel["phases"] for s in ph["spans"])
        L.append(
            f"| before the first phase (Ansible's start-up, preflight, image references) | 0.0 | {first:.1f} |"
        )
        L.append(
            f"| between the phases (the other roles' checks, the release's address) | | "
            f"{last - first - phase_total:.1f} |"
        )
        L.append(f"| after the drain (release record, prune, health wait, the roles after the app) | {last:.1f} | "
                 f"{rel['wall'] - last:.1f} |")  # fmt: skip
    fn = rel.get("first_new")
    L.append(
        f"| **new version first answered `/` through NGINX** | **{fmt(fn if fn is not None else float('nan'))}** | |"
    )
    L.append("")
    L.append(
        f"Polled from {fmt(rel['polled_from'])} s to {fmt(rel['polled_to'])} s: {rel['polls']} requests, "
        f"**{rel['failed']} failed** (non-2xx or no answer); the old version last answered at "
        f"{fmt(rel['last_old'] if rel.get('last_old') is not None else float('nan'))} s. "
        f"Release `{rel['old_container']}` -> `{rel['new_container']}`."
    )
    for f in rel.get("failures", [])[:5]:
        L.append(f"- failed at {f['sent']:.1f} s: status {f['status']} {f.get('error', '')}")
    L.append("")
    return L


def _quiet(settled: dict[str, Any] | None) -> str:
    """How long a run waited for a quiet machine (common.settle), or "no"."""
    if not settled:
        return "no"
    pressure = "unknown, no PSI" if settled["pressure"] is None else f"{settled['pressure']}%"
    return f"{settled['waited']:.0f} s (CPU pressure {pressure})"


def converge_section(res: dict[str, Any]) -> list[str]:
    L = ["## Converge (`ansible-playbook -i INV site.yml`)\n"]
    L.append("| run | wall s | changed | image build/load tasks changed | tasks over 2 s | quiet wait |")
    L.append("|---|---:|---:|---|---|---|")
    for key, title in (
        ("cold", "cold: fresh target -> all healthy"),
        ("warm", "warm: second run, nothing to do"),
        ("warm2", "warm: third run"),
        ("warm3", "warm: fourth run"),
        ("baseline", "baseline app swapped in (same site.yml)"),
    ):
        c = res["converge"].get(key)
        if not c:
            continue
        over = ", ".join(f"{n} ({s:.1f})" for n, s in c["over_2s"]) or "none"
        img = ", ".join(c["image_tasks_changed"]) or "none"
        L.append(
            f"| {title} | {c['wall']:.1f} | {c['changed']} | {img} | {over} | {_quiet(c.get('settle'))} |"
        )
    # The limits the run's waits had (a run from before the wait has none).
    waits = [c["settle"] for c in res["converge"].values() if "settle" in c]
    L.append(
        f"\nQuiet wait: each warm run started once the CPU pressure (`/proc/pressure/cpu`, some avg10) was at most "
        f"{waits[0]['limit']:g}% or {waits[0]['timeout']:g} s had passed; right after the cold run the "
        "stack is still starting.\n"
        if waits
        else ""
    )
    warm = res["converge"].get("warm")
    if warm:
        L.append("Warm converge, slowest ten tasks (profile_tasks):\n")
        L.append("| task | s |")
        L.append("|---|---:|")
        for n, s in warm["slowest"]:
            L.append(f"| {n} | {s:.2f} |")
        if warm["changed_tasks"]:
            L.append(f"\nTasks that reported changed on the warm run: {', '.join(warm['changed_tasks'])}")
        L.append("")
    return L


def render(m: dict[str, str], res: dict[str, Any], levers_md: str, chart: str | None) -> str:
    L: list[str] = []
    L.append("# Performance\n")
    L.append(
        "Generated by `make bench` (`bench/run.sh` -> `python3 -m bench`); every run rewrites this file. "
        "Absolute figures depend on the machine and on whatever else runs on it: read the **ratios**, "
        "which are measured against a baseline deployed in the same run.\n"
    )
    L.append(f"- Date: {m['date']}; load average at start: {m['load']}")
    L.append(f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, kernel {m['kernel']}, {m['os']}")
    L.append(
        f"- Docker {m['docker']}; {m['wrk']}; target: `{TARGET_IMAGE}` (systemd container standing in for a VM)"
    )
    # The run's own settings (a results.json re-rendered later keeps them).
    st = {"duration": DURATION, "warmup": WARMUP, "threads": WRK_THREADS, **res.get("settings", {})}
    L.append(
        f"- wrk on the target's loopback (run in its network namespace, as on a VM) through NGINX's "
        f"published port, {st['threads']} threads, "
        f"{st['duration']} s per row after a {st['warmup']} s warm-up; `/` rows start from an empty `visits` table"
    )
    base_sizing = f" ({res['baseline_sizing']})" if res.get("baseline_sizing") else ""
    L.append(
        f"- Stack: app `{res.get('app_image', '?')}` ({res.get('app_sizing', '?')}); "
        f"baseline `{res.get('baseline_image', '?')}`{base_sizing}\n"
    )
    if chart:
        L.append(f"![req/s and p99 per configuration; the release timeline]({chart})\n")
    L += request_path(res)
    if res.get("release"):
        L += release_section(res["release"])
    L += converge_section(res)

    rec = res.get("recovery")
    if rec:
        L.append("## Recovery\n")
        L.append("| event | seconds |")
        L.append("|---|---:|")
        L.append(
            f"| live app release's container removed -> converge starts a new release -> first 200 on `/` "
            f"through NGINX | {rec['removed_to_200']:.1f} |"
        )
        L.append(
            f"| of which: new release's container started -> first 200 on `/` | {rec['started_to_200']:.1f} |"
        )
        L.append(f"| that converge's wall time | {rec['converge_wall']:.1f} |\n")

    L.append("## Targets (issue 14)\n")
    L.append("| target | measured | met |")
    L.append("|---|---|---|")
    for name, measured, ok in res["targets"]:
        met = "n/a" if ok is None else "yes" if ok else "**no**"
        L.append(f"| {name} | {measured} | {met} |")
    L.append("")
    if levers_md:
        L.append(levers_md.rstrip() + "\n")
    return "\n".join(L) + "\n"


def targets(res: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """Issue 14's targets: (what, measured, met; None when the run did not measure it)."""
    out: list[tuple[str, str, bool | None]] = []
    wrk = res.get("wrk", {})
    r16, b16, r64 = (
        wrk.get("root", {}).get(16),
        wrk.get("baseline-root", {}).get(16),
        wrk.get("root", {}).get(64),
    )
    nm = "not measured"
    out.append(("`/` at 16 connections >= 2500 req/s", f"{r16['rps']:.0f} req/s" if r16 else nm,
                r16["rps"] >= 2500 if r16 else None))  # fmt: skip
    out.append(("`/` at 16 connections p99 <= 20 ms", f"{r16['p99']:.1f} ms" if r16 else nm,
                r16["p99"] <= 20 if r16 else None))  # fmt: skip
    out.append(("`/` at 16 connections 0 errors", str(r16["errors"]) if r16 else nm,
                r16["errors"] == 0 if r16 else None))  # fmt: skip
    if r16 and b16:
        ratio = r16["rps"] / b16["rps"]
        out.append(("`/` at 16 connections >= 8x the baseline (same run)",
                    f"{ratio:.1f}x ({r16['rps']:.0f} vs {b16['rps']:.0f})", ratio >= 8))  # fmt: skip
    else:
        out.append(("`/` at 16 connections >= 8x the baseline (same run)", nm, None))
    out.append(("`/` at 64 connections: no error, p99 < 100 ms",
                f"{r64['errors']} errors, p99 {r64['p99']:.1f} ms" if r64 else nm,
                r64["errors"] == 0 and r64["p99"] < 100 if r64 else None))  # fmt: skip
    a16 = wrk.get("app-health", {}).get(16)
    out.append(("app `/health` through NGINX >= 5000 req/s at 16 connections",
                f"{a16['rps']:.0f} req/s" if a16 else nm, a16["rps"] >= 5000 if a16 else None))  # fmt: skip
    runs = [c for k in ("warm", "warm2", "warm3") if (c := res.get("converge", {}).get(k))]
    walls = sorted(c["wall"] for c in runs)
    median = walls[len(walls) // 2] if walls else None
    changed = [c["changed"] for c in runs]
    each = " / ".join(f"{c['wall']:.1f}" for c in runs)
    out.append(("warm converge (a run with nothing to change) <= 10 s with changed=0, median of the warm runs",
                f"{median:.1f} s (runs: {each} s), changed={changed}" if runs else nm,
                median is not None and median <= 10 and not any(changed)))  # fmt: skip
    rel = res.get("release")
    if rel:
        fn = rel.get("first_new")
        live = f"live at {fn:.1f} s" if fn is not None else "never answered"
        out.append(("one-line app change live within 30 s, zero failed requests",
                    f"{live} (command {rel['wall']:.1f} s), {rel['failed']} of {rel['polls']} requests failed",
                    fn is not None and fn <= 30 and rel["failed"] == 0))  # fmt: skip
    else:
        out.append(("one-line app change live within 30 s, zero failed requests", nm, None))
    return out


def write_report(res: dict[str, Any]) -> int:
    res["targets"] = targets(res)
    extra = "\n".join(
        p.read_text()
        for p in (
            BENCH / "levers" / "levers.md",
            BENCH / "levers" / "ansible-levers.md",
            BENCH / "levers" / "NOTES.md",
        )
        if p.exists()
    )
    DOC.parent.mkdir(parents=True, exist_ok=True)
    chart = DOC.parent / CHART_NAME
    try:
        write_chart(res, chart)
        log(f"wrote {chart}")
        chart_link: str | None = CHART_NAME
    except Exception as exc:  # the tables still matter without the chart: written, then fail
        log(f"no chart ({type(exc).__name__}: {exc})")
        chart_link = None
    md = render(res["machine"], res, extra, chart_link)
    DOC.write_text(md)
    print(md)
    log(f"wrote {DOC}")
    return 0 if chart_link else 1
