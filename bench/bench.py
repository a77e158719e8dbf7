#!/usr/bin/env python3
"""`make bench` (issue 5): deploy to a throwaway local target and measure, in ONE run:

  * converge: cold (fresh target -> all healthy) and warm (second run) wall time, the warm
    run's changed count, image build/load tasks that changed, tasks over 2 s and the
    slowest ten tasks (ansible.posix.profile_tasks, enabled in ansible.cfg);
  * the request path with wrk on 127.0.0.1 through the published NGINX port, at 16 and 64
    connections: NGINX's own /health (the proxy's ceiling), the app's /health through NGINX
    (/app-health, see below) and / (Redis INCR + PostgreSQL write and read);
  * the same NGINX image alone in the same target (no backend), same port and path;
  * recovery: the app container removed and recreated by a converge -> first 200 on /;
  * the baseline, the seed's way (bench/baseline/: Flask's dev server, one process, a new
    Redis and PostgreSQL connection per request), deployed the same way (site.yml on the
    same target, the app image swapped), and every / figure as a ratio to it.

It prints a markdown table and writes out/PERFORMANCE.md (`make docs` copies it to docs/).
Everything it creates on this machine is named bench-* and removed at the end, except the
bench/baseline:<hash> image (kept so later runs skip its build). Logs of every converge and wrk run: bench/out/<run>/.

NGINX answers `location = /health` itself, so the app's /health is not reachable through
the role's server blocks. After the converges it measures, the benchmark adds one location
to the deployed file on its throwaway target, `location = /app-health` (proxied to the
app's /health like `location /`), and reloads NGINX (Target.patch_nginx); when the role's
template has that location already, nothing is added. The HTTPS port, when the stack
publishes one, gets a `/` row too.

Environment: BENCH_DURATION (s per wrk run, default 15), BENCH_WARMUP (s, default 3),
BENCH_CONNECTIONS (default "16 64"), BENCH_THREADS (wrk threads, default 2),
BENCH_KEEP=1 (keep the target for `bench.py levers`), BENCH_DOC (output path).

Subcommand `levers TARGET PORT RUN_DIR` measures the tuning levers in bench/levers.json on
a target kept by BENCH_KEEP=1 and writes bench/levers.md, which docs/PERFORMANCE.md quotes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DURATION = int(os.environ.get("BENCH_DURATION", "15"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "3"))
CONNECTIONS = [int(c) for c in os.environ.get("BENCH_CONNECTIONS", "16 64").split()]
WRK_THREADS = int(os.environ.get("BENCH_THREADS", "2"))
BASE_IMAGE = os.environ.get("BENCH_BASE_IMAGE", "prodstack/debian:bookworm")
DOC = Path(os.environ.get("BENCH_DOC", str(ROOT / "out" / "PERFORMANCE.md")))
TARGET_IMAGE = "prodstack/molecule-target:bookworm"
APP_HEALTH_PATH = "/app-health"
APP_HEALTH_LOCATION = """
    # Added by bench/bench.py: the app's own /health through NGINX (benchmark only).
    location = /app-health {
        set $app_upstream http://app:5000;
        rewrite ^ /health break;
        proxy_pass $app_upstream;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Request-ID $prodstack_request_id;
        proxy_hide_header X-Request-ID;
        add_header X-Request-ID $prodstack_request_id always;
        proxy_connect_timeout 2s;
        proxy_read_timeout 10s;
        error_page 502 503 504 = @app_unavailable;
    }
"""
IMAGE_TASK_RE = re.compile(r"build the images|load the missing|copy the missing|base image", re.I)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(
    cmd: list[str],
    *,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    input_bytes: bytes | None = None,
) -> str:
    proc = subprocess.run(cmd, capture_output=True, env=env, timeout=timeout, input=input_bytes)
    out = proc.stdout.decode(errors="replace")
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n{out[-2000:]}"
            f"{proc.stderr.decode(errors='replace')[-2000:]}"
        )
    return out


def free_port() -> int:
    for _ in range(200):
        port = 20000 + int.from_bytes(os.urandom(2), "big") % 20000
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if not run(["ss", "-Htln", f"sport = :{port}"], check=False).strip():
            return port
    raise RuntimeError("no free port found")


def http_status(url: str, timeout: float = 1.0) -> int:
    try:
        ctx = ssl._create_unverified_context()  # the stack's self-signed certificate
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except Exception:
        return 0


def wait_status(url: str, want: int = 200, timeout: float = 120.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if http_status(url) == want:
            return time.monotonic() - start
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer {want} within {timeout:.0f} s")


# ---------------------------------------------------------------------------- targets


class Target:
    """A throwaway systemd "VM" container made by scripts/local-target.sh (the same Molecule
    platform as `make up` and the tests), and its inventory. `prefix` starts its name."""

    def __init__(self, prefix: str, port: int, tls_port: int, workdir: Path) -> None:
        self.prefix, self.port, self.tls_port, self.workdir = prefix, port, tls_port, workdir
        self.name = run([str(ROOT / "scripts" / "local-target.sh"), "name"], env=self._env()).strip()
        name = self.name
        self.inventory = workdir / "hosts.yml"
        self.inventory.write_text(
            "# Generated by bench/bench.py (shape of inventory/local/hosts.yml).\n"
            "prodstack:\n  hosts:\n"
            f"    {name}:\n"
            "      ansible_connection: community.docker.docker\n"
            "      ansible_python_interpreter: /usr/bin/python3\n"
        )
        # Ansible runs with HOME in the run's temp dir: the passwords and the certificate the
        # roles generate under ~/.prodstack/credentials/HOST/ stay there and go with it.
        self.home = workdir / "home"
        self.home.mkdir(exist_ok=True)
        self.base_vars: dict[str, Any] = {}
        self.url = f"http://127.0.0.1:{port}"
        self.tls_url = f"https://127.0.0.1:{tls_port}"

    def patch_nginx(self, directives: str = "") -> None:
        """Add /app-health (and optional server directives) to the deployed server blocks.

        Benchmark only, on the throwaway target: the role's template has no location that
        proxies to the app's /health (NGINX answers /health itself). A converge puts the
        role's file back; call this again before measuring through it.
        """
        path = "/etc/prodstack/nginx/conf.d/default.conf"
        conf = self.sh("cat", path)
        if "location = /app-health" in conf and not directives:
            return
        marker = "    location / {"
        if marker not in conf:
            raise RuntimeError(f"{path} on {self.name}: no 'location / {{' to add /app-health before")
        add = "" if "location = /app-health" in conf else APP_HEALTH_LOCATION.lstrip("\n")
        conf = conf.replace(marker, add + directives + "\n" + marker)
        self.sh("sh", "-c", f"cat >{path}.bench && mv {path}.bench {path}", input_bytes=conf.encode())
        self.sh("docker", "exec", "prodstack-nginx", "nginx", "-s", "reload")
        time.sleep(1)
        wait_status(self.url + APP_HEALTH_PATH, timeout=60)

    def _env(self) -> dict[str, str]:
        return dict(
            os.environ,
            PRODSTACK_LOCAL_TARGET=self.prefix,
            PRODSTACK_LOCAL_PORT=str(self.port),
            PRODSTACK_LOCAL_TLS_PORT=str(self.tls_port),
        )

    def up(self) -> None:
        run([str(ROOT / "scripts" / "local-target.sh"), "up"], env=self._env(), timeout=600)

    def down(self) -> None:
        run([str(ROOT / "scripts" / "local-target.sh"), "down"], env=self._env(), check=False, timeout=180)

    def sh(
        self, *args: str, check: bool = True, timeout: float = 120, input_bytes: bytes | None = None
    ) -> str:
        return run(
            ["docker", "exec", "-i", self.name, *args], check=check, timeout=timeout, input_bytes=input_bytes
        )

    def converge(self, label: str, logdir: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        varfile = self.workdir / f"vars-{label}.json"
        varfile.write_text(json.dumps({**self.base_vars, **(extra or {})}))
        env = dict(
            os.environ,
            ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            PROFILE_TASKS_TASK_OUTPUT_LIMIT="all",
            COLUMNS="200",
            HOME=str(self.home),
            PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
        )
        cmd = ["ansible-playbook", "-i", str(self.inventory), str(ROOT / "site.yml"), "-e", f"@{varfile}"]
        log(f"converge {label}: {' '.join(cmd)}")
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=1800)
        wall = time.monotonic() - start
        out = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
        (logdir / f"converge-{label}.log").write_text(out)
        res = parse_ansible(out)
        res.update(label=label, wall=wall, rc=proc.returncode)
        if proc.returncode != 0:
            raise RuntimeError(
                f"converge {label} failed (rc {proc.returncode}); log: {logdir}/converge-{label}.log\n"
                + out[-3000:]
            )
        log(f"converge {label}: {wall:.1f} s, changed={res['changed']}")
        return res

    def psql(self, database: str, sql: str, check: bool = True) -> None:
        """Run SQL as PostgreSQL's superuser over the container's local socket."""
        self.sh("docker", "exec", "prodstack-postgres", "psql", "-h", "/tmp", "-U", "postgres",
                "-d", database, "-qc", sql, check=check)  # fmt: skip

    def truncate_visits(self) -> None:
        """Every / measurement starts from an empty visits table (the app counts its rows)."""
        self.psql("app", "TRUNCATE visits", check=False)


def parse_ansible(out: str) -> dict[str, Any]:
    changed_tasks: list[str] = []
    current = ""
    for line in out.splitlines():
        m = re.match(r"^(?:TASK|RUNNING HANDLER) \[(.*)\]", line)
        if m:
            current = m.group(1)
            continue
        if line.startswith("changed: [") and current and current not in changed_tasks:
            changed_tasks.append(current)
    changed = sum(int(c) for c in re.findall(r"^\S+\s+:\s+ok=\d+\s+changed=(\d+)", out, re.M))
    timings: list[tuple[str, float]] = []
    recap = out.split("TASKS RECAP", 1)[-1] if "TASKS RECAP" in out else ""
    for line in recap.splitlines():
        m = re.match(r"^(.*?\S)\s[-\s]*?\s?(\d+\.\d\d)s$", line.rstrip())
        if m and not line.startswith("="):
            timings.append((m.group(1).rstrip(" -"), float(m.group(2))))
    timings.sort(key=lambda t: -t[1])
    return {
        "changed": changed,
        "changed_tasks": changed_tasks,
        "image_tasks_changed": [t for t in changed_tasks if IMAGE_TASK_RE.search(t)],
        "slowest": timings[:10],
        "over_2s": [t for t in timings if t[1] > 2.0],
    }


# ---------------------------------------------------------------------------- wrk

UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text.strip())
    if not m:
        return float("nan")
    return float(m.group(1)) * UNITS_MS[m.group(2)]


def wrk(url: str, conns: int, duration: int, logdir: Path | None = None, label: str = "") -> dict[str, Any]:
    threads = max(1, min(WRK_THREADS, conns))
    cmd = ["wrk", "--latency", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--timeout", "5s", url]
    out = run(cmd, timeout=duration + 60)
    if logdir is not None and label:
        (logdir / f"wrk-{label}-c{conns}.txt").write_text(out)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {p: _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
    total = re.search(r"(\d+) requests in", out)
    return {
        "rps": rps,
        "p50": lat.get("50", float("nan")),
        "p99": lat.get("99", float("nan")),
        "errors": errors,
        "requests": int(total.group(1)) if total else 0,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
    }


def measure(
    target: Target, path: str, logdir: Path, label: str, before=None, base: str | None = None
) -> dict[int, dict[str, Any]]:
    url = (base or target.url) + path
    out: dict[int, dict[str, Any]] = {}
    for conns in CONNECTIONS:
        if WARMUP > 0:
            wrk(url, conns, WARMUP)
        if before is not None:
            before()
        out[conns] = wrk(url, conns, DURATION, logdir, label)
        r = out[conns]
        log(
            f"  {label} c={conns}: {r['rps']:.0f} req/s p50 {r['p50']:.2f} ms p99 {r['p99']:.2f} ms errors {r['errors']}"
        )
    return out


# ---------------------------------------------------------------------------- images


def context_hash(files: list[tuple[str, Path]], extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for name, path in sorted(files):
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def build_image(name: str, files: list[tuple[str, Path]], workdir: Path) -> str:
    """Build a benchmark image from a temp context (relative name -> source file), tagged by content."""
    base_id = run(["docker", "image", "inspect", "-f", "{{.Id}}", BASE_IMAGE]).strip()
    ref = f"{name}:{context_hash(files, base_id)}"
    if run(["docker", "image", "inspect", ref], check=False).strip() not in ("", "[]"):
        log(f"image {ref} present, not rebuilt")
        return ref
    ctx = Path(tempfile.mkdtemp(prefix="bench-ctx-", dir=workdir))
    for rel, src in files:
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, ctx / rel)
    log(f"building {ref}")
    run(
        [
            "docker",
            "build",
            "-q",
            "--pull=false",
            "--build-arg",
            f"BASE_IMAGE={BASE_IMAGE}",
            "-t",
            ref,
            str(ctx),
        ],
        timeout=900,
    )
    shutil.rmtree(ctx, ignore_errors=True)
    return ref


def baseline_files() -> list[tuple[str, Path]]:
    files = [(p.name, p) for p in sorted((BENCH / "baseline").iterdir()) if p.is_file()]
    files.append(("requirements.txt", ROOT / "app" / "requirements.txt"))
    files += [(f"wheels/{p.name}", p) for p in sorted((ROOT / "app" / "wheels").glob("*.whl"))]
    return files


def app_variant_files(gunicorn_conf: Path) -> list[tuple[str, Path]]:
    """app/ as the app image's context, with another gunicorn.conf.py (levers only)."""
    files = []
    for p in sorted((ROOT / "app").rglob("*")):
        rel = p.relative_to(ROOT / "app").as_posix()
        if (
            not p.is_file()
            or rel.startswith(("tests/", "."))
            or "__pycache__" in rel
            or rel == "pyproject.toml"
        ):
            continue
        files.append((rel, gunicorn_conf if rel == "gunicorn.conf.py" else p))
    return files


def load_into(target: Target, ref: str) -> None:
    if target.sh("docker", "image", "inspect", ref, check=False).strip() not in ("", "[]"):
        return
    log(f"loading {ref} into {target.name}")
    save = subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE)
    load = subprocess.run(
        ["docker", "exec", "-i", target.name, "docker", "load", "-q"],
        stdin=save.stdout,
        capture_output=True,
        timeout=600,
    )
    save.wait()
    if save.returncode or load.returncode:
        raise RuntimeError(f"loading {ref} failed: {load.stderr.decode()[-500:]}")


# ---------------------------------------------------------------------------- phases


def nginx_alone(target: Target, logdir: Path) -> dict[int, dict[str, Any]]:
    """The stack's NGINX image alone (its baked-in config, no backend), same target and port."""
    image = target.sh("docker", "inspect", "-f", "{{.Config.Image}}", "prodstack-nginx").strip()
    target.sh("docker", "stop", "prodstack-nginx")
    try:
        target.sh("docker", "run", "-d", "--name", "bench-nginx-alone", "--init", "-p", "8080:8080", image)
        wait_status(target.url + "/health", timeout=60)
        return measure(target, "/health", logdir, "nginx-alone-health")
    finally:
        target.sh("docker", "rm", "-f", "bench-nginx-alone", check=False)
        target.sh("docker", "start", "prodstack-nginx")
        wait_status(target.url + "/health", timeout=60)


def started_at(target: Target, container: str) -> float:
    raw = target.sh("docker", "inspect", "-f", "{{.State.StartedAt}}", container).strip()
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z", raw)
    assert m, raw
    base = dt.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC)
    return base.timestamp() + float("0." + (m.group(2) or "0"))


def recovery(target: Target, logdir: Path) -> dict[str, float]:
    """Remove the app container, converge (which recreates it), time the first 200 on /."""
    target.sh("docker", "rm", "-f", "prodstack-app")
    t0_wall, t0 = time.time(), time.monotonic()
    first_200 = None
    import threading

    result: dict[str, Any] = {}

    def _converge() -> None:
        try:
            result["converge"] = target.converge("recovery", logdir)
        except Exception as exc:  # reported below
            result["error"] = exc

    th = threading.Thread(target=_converge)
    th.start()
    while time.monotonic() - t0 < 300:
        if http_status(target.url + "/", timeout=2.0) == 200:
            first_200 = time.time()
            break
        time.sleep(0.1)
    th.join()
    if "error" in result:
        raise result["error"]
    if first_200 is None:
        raise RuntimeError("no 200 on / within 300 s of recreating the app")
    start = started_at(target, "prodstack-app")
    return {
        "removed_to_200": first_200 - t0_wall,
        "started_to_200": first_200 - start,
        "converge_wall": result["converge"]["wall"],
    }


def machine() -> dict[str, str]:
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu.group(1).strip() if cpu else "?",
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": os.uname().release,
        "os": (re.search(r'PRETTY_NAME="(.*)"', Path("/etc/os-release").read_text()) or [None, "?"])[1],
        "docker": run(["docker", "version", "-f", "{{.Server.Version}}"], check=False).strip(),
        "wrk": (run(["wrk", "-v"], check=False).splitlines() or ["?"])[0].split(" [")[0],
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


# ---------------------------------------------------------------------------- report


def fmt(x: float, nd: int = 1) -> str:
    return "n/a" if x != x else f"{x:.{nd}f}"


def render(m: dict[str, str], res: dict[str, Any], levers_md: str) -> str:
    L: list[str] = []
    L.append("# Performance\n")
    L.append(
        "Generated by `make bench` (`bench/run.sh` -> `bench/bench.py`); every run rewrites this file. "
        "Absolute figures depend on the machine and on whatever else runs on it: read the **ratios**, "
        "which are measured against a baseline deployed in the same run.\n"
    )
    L.append(f"- Date: {m['date']}; load average at start: {m['load']}")
    L.append(f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, kernel {m['kernel']}, {m['os']}")
    L.append(
        f"- Docker {m['docker']}; {m['wrk']}; target: `{TARGET_IMAGE}` (systemd container standing in for a VM)"
    )
    L.append(
        f"- wrk on 127.0.0.1 through the target's published NGINX port, {WRK_THREADS} threads, "
        f"{DURATION} s per row after a {WARMUP} s warm-up; `/` rows start from an empty `visits` table"
    )
    L.append(f"- Stack: app `{res['app_image']}` ({res['app_sizing']}); baseline `{res['baseline_image']}`\n")

    L.append("## Request path\n")
    L.append("| endpoint | conns | req/s | p50 ms | p99 ms | errors | / vs baseline | of NGINX ceiling |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    ceiling = res["wrk"]["nginx-health"]
    base = res["wrk"]["baseline-root"]
    rows = [
        ("NGINX `/health` (ceiling), deployed stack", "nginx-health"),
        ("same NGINX image alone, no backend", "nginx-alone-health"),
        ("app `/health` through NGINX (`/app-health`)", "app-health"),
        ("`/` (Redis INCR + PostgreSQL write, read)", "root"),
        ("`/` over HTTPS (published TLS port)", "root-tls"),
        ("baseline (seed's way) `/`", "baseline-root"),
        ("baseline (seed's way) app `/health`", "baseline-app-health"),
    ]
    for title, key in rows:
        data = res["wrk"].get(key)
        if not data:
            continue
        for c, r in data.items():
            vs = of = ""
            if key in ("root", "root-tls", "baseline-root", "app-health", "baseline-app-health"):
                of = f"{r['rps'] / ceiling[c]['rps']:.1%}" if ceiling.get(c) else ""
            if key in ("root", "root-tls", "baseline-root"):
                vs = "1.0x" if key == "baseline-root" else f"**{r['rps'] / base[c]['rps']:.1f}x**"
            if key == "nginx-health":
                alone = res["wrk"]["nginx-alone-health"].get(c)
                of = f"{r['rps'] / alone['rps']:.0%} of alone" if alone else ""
            L.append(
                f"| {title} | {c} | {r['rps']:.0f} | {fmt(r['p50'], 2)} | {fmt(r['p99'], 2)} | {r['errors']} "
                f"| {vs} | {of} |"
            )
    L.append("")
    L.append(
        "p99 of `/` in the baseline row vs ours: "
        + ", ".join(
            f"c={c}: {base[c]['p99']:.1f} ms -> {res['wrk']['root'][c]['p99']:.1f} ms"
            for c in res["wrk"]["root"]
            if c in base
        )
        + ".\n"
    )

    L.append("## Converge (`ansible-playbook -i INV site.yml`)\n")
    L.append("| run | wall s | changed | image build/load tasks changed | tasks over 2 s |")
    L.append("|---|---:|---:|---|---|")
    for key, title in (
        ("cold", "cold: fresh target -> all healthy"),
        ("warm", "warm: second run, nothing to do"),
        ("baseline", "baseline app swapped in (same site.yml)"),
    ):
        c = res["converge"].get(key)
        if not c:
            continue
        over = ", ".join(f"{n} ({s:.1f})" for n, s in c["over_2s"]) or "none"
        img = ", ".join(c["image_tasks_changed"]) or "none"
        L.append(f"| {title} | {c['wall']:.1f} | {c['changed']} | {img} | {over} |")
    L.append("")
    warm = res["converge"]["warm"]
    L.append("Warm converge, slowest ten tasks (profile_tasks):\n")
    L.append("| task | s |")
    L.append("|---|---:|")
    for n, s in warm["slowest"]:
        L.append(f"| {n} | {s:.2f} |")
    if warm["changed_tasks"]:
        L.append(f"\nTasks that reported changed on the warm run: {', '.join(warm['changed_tasks'])}")
    L.append("")

    rec = res["recovery"]
    L.append("## Recovery\n")
    L.append("| event | seconds |")
    L.append("|---|---:|")
    L.append(
        f"| app container removed -> converge recreates it -> first 200 on `/` through NGINX | "
        f"{rec['removed_to_200']:.1f} |"
    )
    L.append(f"| of which: new app container started -> first 200 on `/` | {rec['started_to_200']:.1f} |")
    L.append(f"| that converge's wall time | {rec['converge_wall']:.1f} |\n")

    L.append("## Targets (issue 5)\n")
    L.append("| target | measured | met |")
    L.append("|---|---|---|")
    for name, measured, ok in res["targets"]:
        L.append(f"| {name} | {measured} | {'yes' if ok else '**no**'} |")
    L.append("")
    if levers_md:
        L.append(levers_md.rstrip() + "\n")
    return "\n".join(L) + "\n"


def targets(res: dict[str, Any]) -> list[tuple[str, str, bool]]:
    out = []
    c = 16 if 16 in res["wrk"]["root"] else CONNECTIONS[0]
    r, b = res["wrk"]["root"][c], res["wrk"]["baseline-root"][c]
    ratio = r["rps"] / b["rps"]
    out.append(
        (
            f"`/` at {c} connections >= 10x baseline req/s",
            f"{ratio:.1f}x ({r['rps']:.0f} vs {b['rps']:.0f})",
            ratio >= 10,
        )
    )
    out.append((f"`/` at {c} connections p99 <= 20 ms", f"{r['p99']:.1f} ms", r["p99"] <= 20))
    out.append((f"`/` at {c} connections zero errors", str(r["errors"]), r["errors"] == 0))
    for conns in res["wrk"]["nginx-health"]:
        d, a = res["wrk"]["nginx-health"][conns], res["wrk"]["nginx-alone-health"][conns]
        f = d["rps"] / a["rps"]
        out.append(
            (
                f"NGINX /health deployed >= 90% of the image alone ({conns} conns)",
                f"{f:.0%} ({d['rps']:.0f} vs {a['rps']:.0f})",
                f >= 0.9,
            )
        )
    w = res["converge"]["warm"]
    out.append(("warm converge changed=0", str(w["changed"]), w["changed"] == 0))
    out.append(
        (
            "warm converge: no image build or load",
            ", ".join(w["image_tasks_changed"]) or "none",
            not w["image_tasks_changed"],
        )
    )
    out.append(
        (
            "warm converge: no task over 2 s",
            ", ".join(f"{n} {s:.1f} s" for n, s in w["over_2s"]) or "none",
            not w["over_2s"],
        )
    )
    return out


# ---------------------------------------------------------------------------- main


def full_run() -> int:
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    logdir = BENCH / "out" / run_id
    logdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    m = machine()
    log(f"run {run_id}; logs in {logdir}; machine: {m}")
    prefix = f"bench-{os.getpid()}-{int(time.time()) % 100000}"
    port = free_port()
    target = Target(prefix, port, free_port(), workdir)
    name = target.name
    res: dict[str, Any] = {"wrk": {}, "converge": {}, "machine": m}
    keep = os.environ.get("BENCH_KEEP") == "1"
    try:
        baseline_ref = build_image("bench/baseline", baseline_files(), workdir)
        res["baseline_image"] = baseline_ref
        log(f"target {name} on 127.0.0.1:{target.port}")
        target.up()

        res["converge"]["cold"] = target.converge("cold", logdir)
        res["converge"]["warm"] = target.converge("warm", logdir)
        res["app_image"] = target.sh("docker", "inspect", "-f", "{{.Config.Image}}", "prodstack-app").strip()
        envs = target.sh(
            "docker", "inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", "prodstack-app"
        )
        sizing = dict(re.findall(r"^APP_(WORKERS|THREADS)=(\d+)$", envs, re.M))
        res["app_sizing"] = f"gunicorn {sizing.get('WORKERS')} workers x {sizing.get('THREADS')} threads"

        wait_status(target.url + "/", timeout=60)
        log("request path: deployed stack")
        res["wrk"]["nginx-health"] = measure(target, "/health", logdir, "nginx-health")
        target.patch_nginx()
        res["wrk"]["app-health"] = measure(target, APP_HEALTH_PATH, logdir, "app-health")
        res["wrk"]["root"] = measure(target, "/", logdir, "root", before=target.truncate_visits)
        if http_status(target.tls_url + "/health") == 200:
            res["wrk"]["root-tls"] = measure(
                target, "/", logdir, "root-tls", before=target.truncate_visits, base=target.tls_url
            )
        log("request path: the same NGINX image alone")
        res["wrk"]["nginx-alone-health"] = nginx_alone(target, logdir)

        log("recovery")
        res["recovery"] = recovery(target, logdir)
        log(f"  recovery: {res['recovery']}")

        log("baseline: the seed's way, deployed the same way")
        load_into(target, baseline_ref)
        res["converge"]["baseline"] = target.converge(
            "baseline",
            logdir,
            {"app_image": baseline_ref, "stack_images_build": ["nginx", "redis", "postgres"]},
        )
        wait_status(target.url + "/", timeout=60)
        res["wrk"]["baseline-root"] = measure(
            target, "/", logdir, "baseline-root", before=target.truncate_visits
        )
        target.patch_nginx()
        res["wrk"]["baseline-app-health"] = measure(target, APP_HEALTH_PATH, logdir, "baseline-app-health")
    finally:
        if keep:
            (workdir / "kept.json").write_text(
                json.dumps(
                    {
                        "name": prefix,
                        "port": target.port,
                        "tls_port": target.tls_port,
                        "app_image": res.get("app_image"),
                    }
                )
            )
            log(
                f"BENCH_KEEP=1: target {name} kept on port {target.port}, workdir {workdir}; levers: "
                f"python3 bench/bench.py levers {workdir} ; remove: scripts/local-target.sh down with PRODSTACK_LOCAL_TARGET={prefix}"
            )
        else:
            log(f"removing {name}")
            target.down()
        shutil.rmtree(workdir, ignore_errors=True) if not keep else None
        (logdir / "results.json").write_text(json.dumps(res, indent=1, default=str))

    return write_report(res)


def write_report(res: dict[str, Any]) -> int:
    res["targets"] = targets(res)
    extra = "\n".join(
        p.read_text()
        for p in (BENCH / "levers.md", BENCH / "ansible-levers.md", BENCH / "levers" / "NOTES.md")
        if p.exists()
    )
    md = render(res["machine"], res, extra)
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(md)
    print(md)
    log(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "render":  # re-render a run's results.json (e.g. after levers)
        raw = json.loads(Path(sys.argv[2]).read_text())
        raw["wrk"] = {k: {int(c): r for c, r in v.items()} for k, v in raw["wrk"].items()}
        sys.exit(write_report(raw))
    if len(sys.argv) > 2 and sys.argv[1] == "ansible-levers":
        from levers import ansible_main  # type: ignore[import-not-found]

        sys.exit(ansible_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "levers":
        from levers import main as levers_main  # type: ignore[import-not-found]

        sys.exit(levers_main(sys.argv[2:]))
    sys.exit(full_run())
