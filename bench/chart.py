"""The report's chart (out/performance.png, beside PERFORMANCE.md, which links it):
(a) req/s and p99 per configuration of the request-path table, one bar per connection count;
(b) the release timeline: the converge's phases as a Gantt chart, every poll of `/` through
NGINX (old version, new version, failed), and the moment the new version first answered.
matplotlib's Agg canvas through Figure (no pyplot, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib.axes import Axes  # noqa: E402 (after the backend is chosen)
from matplotlib.figure import Figure  # noqa: E402

CHART_NAME = "performance.png"

CONFIGS = (
    ("NGINX /health\n(its own)", "nginx-health"),
    ("app /health\n(/app-health)", "app-health"),
    ("/", "root"),
    ("/ over TLS", "root-tls"),
    ("baseline /\n(seed's way)", "baseline-root"),
)
COLORS = ("#4c72b0", "#dd8452", "#55a868", "#8172b3")
PHASE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def _bars(ax: Axes, res: dict[str, Any], metric: str, title: str, unit: str) -> None:
    wrk = res.get("wrk", {})
    configs = [(label, key) for label, key in CONFIGS if wrk.get(key)]
    conns = sorted({int(c) for _, key in configs for c in wrk[key]})
    width = 0.8 / max(1, len(conns))
    for i, c in enumerate(conns):
        xs = [k + (i - (len(conns) - 1) / 2) * width for k in range(len(configs))]
        ys = [float(wrk[key].get(c, {}).get(metric, 0.0)) for _, key in configs]
        bars = ax.bar(xs, ys, width, label=f"{c} connections", color=COLORS[i % len(COLORS)])
        ax.bar_label(bars, labels=[f"{y:.0f}" if y >= 10 else f"{y:.1f}" for y in ys], fontsize=7, padding=1)
    ax.set_xticks(range(len(configs)), [label for label, _ in configs], fontsize=8)
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(unit)
    ax.grid(axis="y", alpha=0.3)


def _request_path(ax_rps: Axes, ax_p99: Axes, res: dict[str, Any]) -> None:
    _bars(ax_rps, res, "rps", "(a) throughput per configuration (wrk)", "req/s (log scale)")
    ax_rps.axhline(2500, color="#55a868", ls="--", lw=0.8, label="target: / >= 2500 req/s at 16")
    ax_rps.axhline(5000, color="#dd8452", ls=":", lw=0.8, label="target: app /health >= 5000 req/s at 16")
    ax_rps.legend(fontsize=7, loc="upper right")
    _bars(ax_p99, res, "p99", "(a) p99 latency per configuration (wrk)", "p99 ms (log scale)")
    ax_p99.axhline(20, color="#4c72b0", ls="--", lw=0.8, label="target: / p99 <= 20 ms at 16")
    ax_p99.axhline(100, color="#dd8452", ls=":", lw=0.8, label="target: / p99 < 100 ms at 64")
    ax_p99.legend(fontsize=7, loc="upper left")


def _release(ax: Axes, rel: dict[str, Any]) -> None:
    phases = rel.get("phases", [])
    rows = ["the command (wall)", *[p["name"] for p in phases], "GET / through NGINX"]
    y = {name: len(rows) - 1 - i for i, name in enumerate(rows)}
    ax.broken_barh([(0.0, rel["wall"])], (y[rows[0]] - 0.35, 0.7), color="#cccccc")
    for i, ph in enumerate(phases):
        spans = [(float(s[0]), max(float(s[1]), 0.05)) for s in ph["spans"]]
        ax.broken_barh(spans, (y[ph["name"]] - 0.35, 0.7), color=PHASE_COLORS[i % len(PHASE_COLORS)])
        end = max(s[0] + s[1] for s in spans)
        ax.text(end + 0.2, y[ph["name"]], f"{ph['seconds']:.1f} s", va="center", fontsize=7)
    ax.text(rel["wall"] + 0.2, y[rows[0]], f"{rel['wall']:.1f} s", va="center", fontsize=7)
    polls = rel.get("polls_detail") or []
    if polls:
        for what, color, marker, pick in (
            ("old version", "#999999", "|", lambda s: s["version"] == rel["old_version"]),
            ("new version", "#55a868", "|", lambda s: s["version"] == rel["new_version"]),
            ("failed", "#c44e52", "x", lambda s: not 200 <= s["status"] < 300),
        ):
            xs = [s["answered"] for s in polls if pick(s)]
            if xs:
                ax.scatter(
                    xs, [y[rows[-1]]] * len(xs), s=30, c=color, marker=marker, label=f"/ answered: {what}"
                )
    else:
        xs = [f["answered"] for f in rel.get("failures", [])]
        if xs:
            ax.scatter(xs, [y[rows[-1]]] * len(xs), s=30, c="#c44e52", marker="x", label="/ failed")
    first = rel.get("first_new")
    if first is not None:
        ax.axvline(first, color="#55a868", lw=1.5, label=f"new version first answered: {first:.1f} s")
    ax.axvline(30, color="#c44e52", ls="--", lw=0.8, label="target: live within 30 s")
    ax.set_yticks([y[r] for r in rows], rows, fontsize=8)
    ax.set_xlabel("seconds from the command's start")
    ax.set_xlim(left=min(0.0, float(rel.get("polled_from") or 0.0)))
    ax.set_title(
        f"(b) release timeline: one-line app change ({rel['new_version']}), "
        f"{rel['failed']} of {rel['polls']} requests failed",
        fontsize=10,
    )
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=5)


def write_chart(res: dict[str, Any], path: Path) -> None:
    rel = res.get("release")
    fig = Figure(figsize=(13, 10 if rel else 5), dpi=100, layout="constrained")
    grid = fig.add_gridspec(2 if rel else 1, 2, height_ratios=[1, 1.1] if rel else [1])
    _request_path(fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), res)
    if rel:
        _release(fig.add_subplot(grid[1, :]), rel)
    fig.suptitle(f"prodstack bench, {res.get('machine', {}).get('date', '')}", fontsize=11)
    fig.savefig(path)
