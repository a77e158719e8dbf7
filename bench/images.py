"""Images the bench builds itself (the baseline app, app variants) and loads into a target."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.common import BASE_IMAGE, BENCH, ROOT, log, run
from bench.target import Target


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
