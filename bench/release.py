"""Release timeline (issue 14): a one-line app change going live the way a user ships one.

app/ is copied into the run's workdir and one line changed (a suffix on
prodstack_app.__version__, which `/` reports); then the converge builds the app from that
folder (stack_images_app_build_dir), ships it and cuts a new release over, while a poller
asks GET / through NGINX every POLL_INTERVAL s. Recorded: the command's wall time, when the
new version first answered (s from the command's start), the requests that failed (non-2xx
or no answer) and the time of each phase from profile_tasks (Target.converge(timeline=True)).
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import POLL_INTERVAL, ROOT, log, role_default
from bench.target import Target

# The phases of a release converge, in the order they run: (name, spans), each span the
# tasks from one matching the first pattern to one matching the second (profile_tasks names,
# "role : task"). Spans are searched in order, each after the previous one found.
PHASES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("image build", ((r"stack_images : Build the images", r"stack_images : Build the images"),)),
    (
        "export (docker save)",
        ((r"stack_images : Create the archive directory", r"stack_images : Export each image"),),
    ),
    (
        "copy to target",
        ((r"stack_images : Create the target's archive dir", r"stack_images : Copy the missing images"),),
    ),
    ("load on target", ((r"stack_images : Load the missing", r"stack_images : Remove the loaded archives"),)),
    (
        "release start + health gate",
        ((r"app : Run the release$", r"Wait for the release to pass its health gate"),),
    ),
    (
        "NGINX switch",
        ((r"Switch NGINX to the release|nginx : Create the NGINX config", r"Wait until NGINX answers"),),
    ),
    (
        "drain (old NGINX workers, old release stops)",
        (
            (r"Wait for NGINX's old workers", r"Wait for NGINX's old workers"),
            (r"app : Stop the old releases", r"app : Stop the old releases"),
        ),
    ),
)


def stack_uid(service: str) -> str:
    """stack_common_uids[service] from stack_common's defaults."""
    uids = role_default("stack_common", "stack_common_uids")
    if service not in uids:
        raise RuntimeError(f"stack_common_uids.{service} not found in roles/stack_common/defaults/main.yml")
    return str(uids[service])


def app_copy(workdir: Path, tag: str) -> tuple[Path, str, str]:
    """app/ copied to WORKDIR/app-release with __version__ given the suffix +TAG: (folder, old, new).

    The role builds a folder of your own with BASE_IMAGE as its only build argument (your
    Dockerfile sets its USER), while app/Dockerfile takes APP_UID from the role: the copy's
    `ARG APP_UID` gets the role's value (stack_common_uids.app) as its default.
    """
    dst = workdir / "app-release"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(
        ROOT / "app",
        dst,
        ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", "tests"),
    )
    init = dst / "prodstack_app" / "__init__.py"
    text = init.read_text()
    m = re.search(r'^__version__ = "([^"]*)"$', text, re.M)
    if not m:
        raise RuntimeError(f'{init}: no line `__version__ = "..."` to change')
    old, new = m.group(1), f"{m.group(1)}+{tag}"
    init.write_text(text[: m.start()] + f'__version__ = "{new}"' + text[m.end() :])
    dockerfile = dst / "Dockerfile"
    dockerfile.write_text(
        re.sub(r"^ARG APP_UID[ \t]*$", f"ARG APP_UID={stack_uid('app')}", dockerfile.read_text(), flags=re.M)
    )
    return dst, old, new


class Poller(threading.Thread):
    """GET URL every POLL_INTERVAL s (a new connection each, as a browser's first visit);
    each sample: sent and answered (s from t0), HTTP status (0: no answer), version, error."""

    def __init__(self, url: str, t0: float) -> None:
        super().__init__(daemon=True)
        self.url, self.t0 = url, t0
        self.samples: list[dict[str, Any]] = []
        self.halt = threading.Event()

    def one(self) -> dict[str, Any]:
        sent = time.monotonic()
        status, version, error = 0, None, ""
        try:
            with urllib.request.urlopen(self.url, timeout=2.0) as resp:
                status = int(resp.status)
                version = json.loads(resp.read() or b"{}").get("version")
        except urllib.error.HTTPError as exc:
            status, error = int(exc.code), f"HTTP {exc.code}"
        except Exception as exc:  # no answer: refused, reset, timed out
            error = f"{type(exc).__name__}: {exc}"[:200]
        return {
            "sent": round(sent - self.t0, 3),
            "answered": round(time.monotonic() - self.t0, 3),
            "status": status,
            "version": version,
            "error": error,
        }

    def run(self) -> None:
        while not self.halt.is_set():
            sample = self.one()
            self.samples.append(sample)
            self.halt.wait(max(0.0, POLL_INTERVAL - (sample["answered"] - sample["sent"])))


def phases(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """PHASES found in a converge's task timeline: name, spans [[start, length]], total s."""
    out: list[dict[str, Any]] = []
    cursor = 0
    for name, spans in PHASES:
        found: list[list[float]] = []
        for first, last in spans:
            i = next((k for k in range(cursor, len(tasks)) if re.search(first, tasks[k]["name"])), None)
            if i is None:
                continue
            j = next((k for k in range(i, len(tasks)) if re.search(last, tasks[k]["name"])), i)
            start = tasks[i]["start"]
            end = tasks[j]["start"] + tasks[j]["length"]
            found.append([round(start, 3), round(end - start, 3)])
            cursor = j + 1
        if found:
            out.append({"name": name, "spans": found, "seconds": round(sum(s[1] for s in found), 3)})
    return out


def release_timeline(target: Target, logdir: Path, workdir: Path, tag: str) -> dict[str, Any]:
    folder, old, new = app_copy(workdir, tag)
    log(f"release timeline: app/ copied to {folder}, __version__ {old!r} -> {new!r}")
    extra = {
        "stack_images_app_build_dir": str(folder),
        # The archive of this one-off image stays in the run's workdir, not the repo's .cache.
        "stack_images_archive_dir": str(workdir / "images"),
    }
    before = target.app_container()
    t0 = time.monotonic()
    poller = Poller(target.url + "/", t0)
    poller.start()
    time.sleep(1.0)  # the poller's first answers come from the live release
    result: dict[str, Any] = {}
    try:
        result = target.converge("release", logdir, extra, timeline=True)
    finally:
        # Until the new version answered and at least 2 s past the command (old workers drain).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(s["version"] == new for s in poller.samples):
            time.sleep(0.2)
        time.sleep(2.0)
        poller.halt.set()
        poller.join(timeout=10)
        (logdir / "release-polls.json").write_text(json.dumps(poller.samples))
    start = target.converge_started - t0  # the command's start on the poller's clock
    samples = [{**s, "sent": round(s["sent"] - start, 3), "answered": round(s["answered"] - start, 3)}
               for s in poller.samples]  # fmt: skip
    failed = [s for s in samples if not 200 <= s["status"] < 300]
    first_new = next((s["answered"] for s in samples if s["version"] == new), None)
    after = target.app_container()
    image = target.sh("docker", "inspect", "-f", "{{.Config.Image}}", after).strip()
    res = {
        "old_version": old,
        "new_version": new,
        "old_container": before,
        "new_container": after,
        "image": image,
        "wall": result["wall"],
        "changed": result["changed"],
        "first_new": first_new,
        "last_old": max((s["answered"] for s in samples if s["version"] == old), default=None),
        "polls": len(samples),
        "polled_from": samples[0]["sent"] if samples else None,
        "polled_to": samples[-1]["answered"] if samples else None,
        "failed": len(failed),
        "failures": failed[:20],
        "polls_detail": [{k: s[k] for k in ("sent", "answered", "status", "version")} for s in samples],
        "phases": phases(result["tasks"]),
        "tasks": result["tasks"],
    }
    fn = f"{first_new:.1f} s" if first_new is not None else "never"
    log(f"  release: wall {res['wall']:.1f} s, new version first answered at {fn}, "
        f"{res['failed']} of {res['polls']} polls failed")  # fmt: skip
    return res
