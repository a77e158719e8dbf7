#!/usr/bin/python3
"""Back up and restore the stack's PostgreSQL and Redis data; run by a systemd timer.

    prodstack-backup run                       take a backup now, then prune (and push)
    prodstack-backup list | status [--json]    the backups on this host; the last run
    prodstack-backup verify NAME [--identity F]
    prodstack-backup restore NAME [--identity F]   (refused while an app container runs)
    prodstack-backup prune

A backup is a directory NAME (prodstack-YYYYmmddTHHMMSSZ) with postgres.dump (pg_dump -Fc),
globals.sql (roles, without passwords), redis.rdb and manifest.json (sizes, sha256, versions,
the app's release, and per table the row count and a digest taken in the dump's snapshot).
PostgreSQL and Redis are captured at different moments: Redis's BGSAVE follows the dump.
Every dump is streamed out through `docker exec`; nothing is written inside the containers
(read-only roots, small tmpfs) except Redis's own dump.rdb in its volume, removed once
copied. Containers are found by their `prodstack.role` label. Errors go to stderr (the
journal) and exit 1, so a failed run is a failed unit.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The library sits next to this file in the repository and in /usr/local/lib on a host.
sys.path[:0] = [str(Path(__file__).resolve().parent), "/usr/local/lib/prodstack-backup"]
from prodstack_backup_lib import (  # noqa: E402
    PG_SOCKET,
    REDIS_LOAD,
    STAMP,
    TABLES_SQL,
    Fail,
    Snapshot,
    backups,
    containers,
    digest_sql,
    docker,
    globals_for_restore,
    inspect,
    now,
    one,
    parse_digests,
    pg_exec,
    psql,
    redis_bgsave,
    redis_info,
    retained,
    sha256,
    stream_out,
    table_digests,
    when,
    write_json,
)

# --- commands -------------------------------------------------------------------------------


def take(cfg: dict[str, Any], root: Path) -> dict[str, Any]:
    start = now()
    name = "prodstack-" + datetime.fromtimestamp(start, UTC).strftime(STAMP)
    work = root / f".partial-{name}"
    work.mkdir(mode=0o700)
    db, timeout = cfg["database"], float(cfg["timeout"])
    pg, redis = one("postgres"), one("redis")
    manifest: dict[str, Any] = {"format": 1, "name": name, "host": socket.gethostname()}
    snap = Snapshot(pg, db)
    try:
        tables = snap.ask(TABLES_SQL).split()
        digests = parse_digests(snap.ask(digest_sql(tables)))
        dump = pg_exec(pg, "pg_dump", "-h", PG_SOCKET, "-Fc", f"--snapshot={snap.id}", "-d", db)
        stream_out(dump, work / "postgres.dump", timeout)
    finally:
        snap.close()
    stream_out(
        pg_exec(pg, "pg_dumpall", "-h", PG_SOCKET, "-l", "postgres", "--globals-only", "--no-role-passwords"),
        work / "globals.sql",
        timeout,
    )
    pg_version = psql(pg, "postgres", "SHOW server_version;").strip()
    saved = redis_bgsave(redis, timeout)
    stream_out(["exec", redis, "cat", "/data/dump.rdb"], work / "redis.rdb", timeout)
    docker("exec", redis, "rm", "-f", "/data/dump.rdb")
    apps = containers("app")
    app = inspect(apps[0]) if apps else {}
    labels = (app.get("Config") or {}).get("Labels") or {}
    manifest.update(
        created=datetime.fromtimestamp(start, UTC).isoformat(),
        created_epoch=start,
        postgres={
            "container": pg,
            "version": pg_version,
            "database": db,
            "snapshot": snap.id,
            "tables": digests,
        },
        redis={"container": redis, "version": redis_info(redis, "server")["redis_version"], **saved},
        app={
            "containers": apps,
            "release": labels.get("prodstack.release") or (app.get("Config") or {}).get("Image"),
            "image_id": app.get("Image"),
        },
        note="PostgreSQL and Redis are captured at different moments: Redis's BGSAVE follows the dump.",
        files={},
    )
    for plain in ("postgres.dump", "globals.sql", "redis.rdb"):
        path = work / plain
        entry = {"size": path.stat().st_size, "sha256": sha256(path)}
        if cfg.get("recipient"):
            enc = work / f"{plain}.age"
            proc = subprocess.run(
                ["age", "-r", cfg["recipient"], "-o", str(enc), str(path)], capture_output=True, check=False
            )
            if proc.returncode != 0:
                raise Fail(f"age could not encrypt {plain}: {proc.stderr.decode().strip()}")
            path.unlink()
            entry = {"size": enc.stat().st_size, "sha256": sha256(enc), "plain": entry}
            plain = enc.name
        manifest["files"][plain] = entry
    manifest["encrypted"] = bool(cfg.get("recipient"))
    manifest["duration_s"] = round(now() - start, 3)
    manifest["size"] = sum(f["size"] for f in manifest["files"].values())
    write_json(work / "manifest.json", manifest)
    (work / "manifest.json.sha256").write_text(f"{sha256(work / 'manifest.json')}  manifest.json\n")
    os.replace(work, root / name)
    return manifest


def verify(
    root: Path, name: str, identity: str | None, stage: Path | None
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Check every file of backup NAME against its manifest (and decrypt into stage):
    returns the manifest and the plaintext path of each part. Changes nothing."""
    base = root / name
    when(name)
    if not (base / "manifest.json").is_file():
        raise Fail(f"no backup {name} in {root}")
    mtext = (base / "manifest.json").read_bytes()
    recorded = (base / "manifest.json.sha256").read_text().split()[:1]
    if recorded != [hashlib.sha256(mtext).hexdigest()]:
        raise Fail(f"{base}/manifest.json: checksum mismatch (corrupt); refusing this backup")
    manifest = json.loads(mtext)
    parts: dict[str, Path] = {}
    for fname, entry in sorted(manifest["files"].items()):
        path = base / fname
        size = path.stat().st_size if path.exists() else -1
        if size < 0:
            raise Fail(f"{path}: missing; refusing this backup")
        if size != entry["size"]:
            raise Fail(
                f"{path}: truncated or altered ({size} bytes, manifest says {entry['size']}); refusing"
            )
        if sha256(path) != entry["sha256"]:
            raise Fail(f"{path}: sha256 mismatch (corrupt); refusing this backup")
        plain_name, plain = fname.removesuffix(".age"), path
        if "plain" in entry:
            if not identity:
                raise Fail(f"{path} is encrypted: give the age identity (--identity FILE)")
            if stage is None:
                raise Fail("internal: decryption needs a staging directory")
            plain = stage / plain_name
            proc = subprocess.run(
                ["age", "-d", "-i", identity, "-o", str(plain), str(path)], capture_output=True
            )
            if proc.returncode != 0:
                reason = (proc.stderr.decode().strip().splitlines() or ["?"])[0]
                raise Fail(f"{path}: cannot decrypt with {identity}: {reason}; refusing this backup")
            if sha256(plain) != entry["plain"]["sha256"]:
                raise Fail(f"{path}: decrypted content does not match its checksum; refusing")
        parts[plain_name] = plain
    magic = {"postgres.dump": b"PGDMP", "redis.rdb": b"REDIS"}
    for part, prefix in magic.items():
        with parts[part].open("rb") as f:
            if f.read(len(prefix)) != prefix:
                raise Fail(f"{parts[part]}: not a {part} file; refusing this backup")
    return manifest, parts


def hold(cfg: dict[str, Any], name: str, reason: str) -> Path:
    path = Path(cfg["hold_dir"]) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"by": "prodstack-backup", "reason": reason, "since": int(now())}) + "\n")
    return path


def wait_healthy(name: str, timeout: float) -> None:
    """Until the container's own healthcheck command passes (Docker's status would lag by
    up to one healthcheck interval)."""
    test = (inspect(name)["Config"].get("Healthcheck") or {}).get("Test") or ["NONE"]
    argv = ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
    deadline = now() + timeout
    while now() < deadline:
        if test[0] == "NONE" and inspect(name)["State"].get("Running"):
            return
        probe = subprocess.run(["docker", "exec", name, *argv], capture_output=True, timeout=30, check=False)
        if test[0] != "NONE" and probe.returncode == 0:
            return
        time.sleep(0.5)
    raise Fail(f"{name} is not healthy {timeout:.0f} s after the restore")


def restore(cfg: dict[str, Any], root: Path, name: str, identity: str | None) -> dict[str, Any]:
    stage = root / f".restore-{name}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(mode=0o700)
    try:
        manifest, parts = verify(root, name, identity, stage)
        if containers("app"):
            raise Fail(
                f"the app is running ({containers('app')}): take it out of service first "
                "(playbooks/restore.yml does)"
            )
        start, db, timeout = now(), manifest["postgres"]["database"], float(cfg["timeout"])
        pg = one("postgres")
        psql(pg, "postgres", globals_for_restore(parts["globals.sql"].read_text()))
        with parts["postgres.dump"].open("rb") as f:
            argv = ["pg_restore", "-h", PG_SOCKET, "-d", db, "--clean", "--if-exists"]
            docker(*pg_exec(pg, *argv, "--single-transaction", "--exit-on-error"), stdin=f, timeout=timeout)
        tables = table_digests(pg, db)
        redis = one("redis", running=False)
        info = inspect(redis)
        volume = next(m["Name"] for m in info["Mounts"] if m["Destination"] == "/data")
        held = hold(cfg, redis, f"restore of {name}")
        try:
            docker("stop", redis)
            if parts["redis.rdb"] != stage / "redis.rdb":
                shutil.copyfile(parts["redis.rdb"], stage / "redis.rdb")
            os.chmod(stage, 0o755)  # the one-off runs as Redis's user; the file is readable
            os.chmod(stage / "redis.rdb", 0o644)
            out = docker(
                "run", "--rm", "--name", f"{redis}-restore", "--label", "prodstack.backup=restore",
                "--network", "none", "--read-only", "--tmpfs", "/tmp:size=16m", "--cap-drop", "ALL",
                "--security-opt", "no-new-privileges:true", "-v", f"{volume}:/data",
                "-v", f"{stage}:/restore:ro", "--entrypoint", "sh", info["Config"]["Image"], "-c", REDIS_LOAD,
                timeout=timeout,
            )  # fmt: skip
        finally:
            os.chmod(stage, 0o700)
            held.unlink(missing_ok=True)
            docker("start", redis)
        wait_healthy(redis, 120)
        keys = int(out.split()[-1]) if out.split() else 0
        result = {
            "restored": name,
            "created": manifest["created"],
            "seconds": round(now() - start, 3),
            "postgres": {"database": db, "tables": tables},
            "redis": {"keys": keys},
            "app_release": manifest["app"]["release"],
        }
        mismatch = [t for t, v in manifest["postgres"]["tables"].items() if tables.get(t) != v]
        if mismatch:
            raise Fail(f"restored tables differ from the backup's snapshot: {mismatch}")
        if keys != manifest["redis"]["keys"]:
            raise Fail(f"Redis loaded {keys} keys, the backup recorded {manifest['redis']['keys']}")
        write_json(root / "last-restore.json", result)
        return result
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def prune(cfg: dict[str, Any], root: Path) -> list[str]:
    names = backups(root)
    keep = retained((when(n) for n in names), int(cfg["keep_daily"]), int(cfg["keep_weekly"]))
    gone = [n for n in names if when(n) not in keep]
    stale = [p for p in root.glob(".partial-*") if now() - p.stat().st_mtime > 3600]
    for path in [root / n for n in gone] + stale:
        shutil.rmtree(path)
    return gone


def push(cfg: dict[str, Any], root: Path, name: str) -> None:
    target = f"{cfg['rsync_target'].rstrip('/')}/{socket.gethostname()}/"
    argv = [
        "rsync",
        "-a",
        "--mkpath",
        "-e",
        cfg.get("rsync_ssh") or "ssh -o BatchMode=yes",
        str(root / name),
        target,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=float(cfg["timeout"]), check=False)
    if proc.returncode != 0:
        raise Fail(
            f"rsync of {name} to {target} failed (the backup stays on this host): {proc.stderr.strip()}"
        )


def status(cfg: dict[str, Any], root: Path) -> dict[str, Any]:
    names = backups(root)
    last_run = json.loads((root / "last-run.json").read_text()) if (root / "last-run.json").exists() else {}
    out: dict[str, Any] = {"count": len(names), "last_run": last_run, "newest": None, "stale": True}
    if names:
        manifest = json.loads((root / names[-1] / "manifest.json").read_text())
        age = now() - manifest["created_epoch"]
        out["newest"] = {"name": names[-1], "created": manifest["created"], "size": manifest["size"]}
        out["age_s"] = round(age)
        out["stale"] = age > 2 * float(cfg["period_hours"]) * 3600
    return out


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    with (root / ".lock").open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Fail("another prodstack-backup run or restore is in progress") from None
        yield


def cmd_run(cfg: dict[str, Any], root: Path) -> dict[str, Any]:
    start = now()
    try:
        manifest = take(cfg, root)
        pruned = prune(cfg, root)
        if cfg.get("rsync_target"):
            push(cfg, root, manifest["name"])
    except BaseException as exc:
        error = str(exc) if isinstance(exc, Fail) else f"{type(exc).__name__}: {exc}"
        write_json(root / "last-run.json", {"ok": False, "time": start, "error": error})
        for partial in root.glob(".partial-*"):  # ours: the lock excludes any other run
            shutil.rmtree(partial, ignore_errors=True)
        raise
    result = {"ok": True, "time": start, "name": manifest["name"], "size": manifest["size"], "pruned": pruned}
    write_json(root / "last-run.json", {**result, "duration_s": manifest["duration_s"]})
    return {**result, "duration_s": manifest["duration_s"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="prodstack-backup", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="/etc/prodstack/backup.json")
    p.add_argument("command", choices=["run", "list", "status", "verify", "restore", "prune"])
    p.add_argument("name", nargs="?", help="backup name (default: the newest)")
    p.add_argument("--identity", help="age identity file, for an encrypted backup")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    os.umask(0o077)  # backups hold every row: root only
    cfg = json.loads(Path(args.config).read_text())
    root = Path(cfg["dir"])
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        with locked(root):
            names = backups(root)
            name = args.name or (names[-1] if names else None)
            if args.command in ("verify", "restore") and not name:
                raise Fail(f"no backup in {root}")
            if args.command == "run":
                out: Any = cmd_run(cfg, root)
            elif args.command == "list":
                out = names
            elif args.command == "status":
                out = status(cfg, root)
            elif args.command == "prune":
                out = prune(cfg, root)
            elif args.command == "verify":
                stage = root / f".verify-{name}"
                shutil.rmtree(stage, ignore_errors=True)
                stage.mkdir(mode=0o700)
                try:
                    manifest, _ = verify(root, str(name), args.identity, stage)
                finally:
                    shutil.rmtree(stage, ignore_errors=True)
                out = {
                    "verified": name,
                    "files": sorted(manifest["files"]),
                    "encrypted": manifest["encrypted"],
                }
            else:
                out = restore(cfg, root, str(name), args.identity)
    except (Fail, subprocess.TimeoutExpired, OSError) as exc:
        print(f"prodstack-backup {args.command}: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=None if args.json else 2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
