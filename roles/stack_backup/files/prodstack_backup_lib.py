"""Library of prodstack-backup: Docker, PostgreSQL, Redis, files and the retention rule."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

NAME_RE = re.compile(r"^prodstack-(\d{8}T\d{6}Z)$")
STAMP = "%Y%m%dT%H%M%SZ"
PG_SOCKET = "/tmp"
REDIS_CLI = (
    'if [ -n "${REDIS_PASSWORD_FILE:-}" ]; then REDISCLI_AUTH=$(cat "$REDIS_PASSWORD_FILE"); '
    'export REDISCLI_AUTH; fi; exec redis-cli --no-auth-warning -h 127.0.0.1 -p 6379 "$@"'
)
# Loads the RDB into a Redis that nothing else can reach, turns AOF on (a rewrite writes a
# fresh AOF from the loaded data) and shuts down. The old AOF is set aside and put back if
# anything fails. A dump.rdb next to an AOF would be ignored by the stack's Redis.
REDIS_LOAD = r"""set -eu
cd /data
rm -rf .pre-restore dump.rdb temp-*
mkdir .pre-restore
for f in appendonlydir appendonly.aof; do [ ! -e "$f" ] || mv "$f" .pre-restore/; done
undo() { rm -rf appendonlydir appendonly.aof dump.rdb; mv .pre-restore/* . 2>/dev/null || true; }
trap 'undo; rmdir .pre-restore' EXIT
cp /restore/redis.rdb dump.rdb
redis-server --port 0 --unixsocket /tmp/r.sock --dir /data --dbfilename dump.rdb \
  --appendonly no --save "" --daemonize no --logfile /tmp/redis.log &
c() { redis-cli -s /tmp/r.sock "$@"; }
i=0; until [ "$(c ping 2>/dev/null)" = PONG ]; do
  i=$((i+1)); [ $i -lt 600 ] || { cat /tmp/redis.log >&2; exit 1; }; sleep 0.2; done
[ "$(c config set appendonly yes)" = OK ]
i=0; until c info persistence | tr -d '\r' | grep -q '^aof_rewrite_in_progress:0' \
  && c info persistence | tr -d '\r' | grep -q '^aof_rewrite_scheduled:0'; do
  i=$((i+1)); [ $i -lt 3000 ] || exit 1; sleep 0.2; done
c info persistence | tr -d '\r' | grep -q '^aof_last_bgrewrite_status:ok'
c dbsize
c shutdown >/dev/null 2>&1 || true
wait || true
test -s appendonlydir/appendonly.aof.manifest
rm -f dump.rdb
trap - EXIT
rm -rf .pre-restore
"""


class Fail(Exception):
    """An error for the operator: printed as one line, exit 1."""


def now() -> float:
    return time.time()


# --- docker ---------------------------------------------------------------------------------


def docker(*argv: str, timeout: float = 120, stdin: BinaryIO | None = None) -> str:
    proc = subprocess.run(["docker", *argv], capture_output=True, timeout=timeout, stdin=stdin, check=False)
    if proc.returncode != 0:
        raise Fail(f"docker {argv[0]} {argv[1] if len(argv) > 1 else ''}: {proc.stderr.decode().strip()}")
    return proc.stdout.decode()


def containers(role: str, running: bool = True) -> list[str]:
    flags = ["ps", "--filter", f"label=prodstack.role={role}", "--format", "{{.Names}}"]
    return sorted(docker(*flags, *([] if running else ["-a"])).split())


def one(role: str, running: bool = True) -> str:
    found = containers(role, running)
    if len(found) != 1:
        state = "running " if running else ""
        raise Fail(f"expected one {state}container labelled prodstack.role={role}, found {found or 'none'}")
    return found[0]


def inspect(name: str) -> dict[str, Any]:
    return dict(json.loads(docker("inspect", name))[0])


def stream_out(argv: list[str], dest: Path, timeout: float) -> None:
    """Run `docker ARGV` with stdout into dest; Fail with its stderr."""
    with dest.open("wb") as out:
        proc = subprocess.run(
            ["docker", *argv], stdout=out, stderr=subprocess.PIPE, timeout=timeout, check=False
        )
    if proc.returncode != 0:
        raise Fail(f"{' '.join(argv[4:7])} failed: {proc.stderr.decode().strip()}")


# --- PostgreSQL -----------------------------------------------------------------------------


def pg_exec(pg: str, *argv: str) -> list[str]:
    return ["exec", "-i", "-u", "postgres", pg, *argv]


def psql(pg: str, db: str, sql: str, timeout: float = 600) -> str:
    argv = pg_exec(pg, "psql", "-h", PG_SOCKET, "-d", db, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1")
    proc = subprocess.run(
        ["docker", *argv], input=sql.encode(), capture_output=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise Fail(f"psql on {db}: {proc.stderr.decode().strip()}")
    return proc.stdout.decode()


TABLES_SQL = (
    "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
    "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1;"
)


def digest_sql(tables: list[str]) -> str:
    """Per table: name, row count and an md5 over its rows' md5s (order-independent input)."""
    parts = [
        f"SELECT '{t}', count(*), coalesce(md5(string_agg(md5(x::text), '' ORDER BY md5(x::text))), '') "
        f"FROM {t} x"
        for t in tables
    ]
    return " UNION ALL ".join(parts) + ";" if parts else "SELECT 1 WHERE false;"


def parse_digests(out: str) -> dict[str, dict[str, Any]]:
    rows = (line.split("|") for line in out.splitlines() if line.strip())
    return {name: {"rows": int(count), "digest": digest} for name, count, digest in rows}


def table_digests(pg: str, db: str) -> dict[str, dict[str, Any]]:
    tables = psql(pg, db, TABLES_SQL).split()
    return parse_digests(psql(pg, db, digest_sql(tables)))


class Snapshot:
    """A REPEATABLE READ transaction held open in psql: its snapshot is exported for pg_dump
    and the row counts and digests are read in it, so they describe exactly the dump."""

    def __init__(self, pg: str, db: str) -> None:
        argv = pg_exec(pg, "stdbuf", "-oL", "psql", "-h", PG_SOCKET, "-d", db, "-X", "-q", "-A", "-t")
        self.proc = subprocess.Popen(
            ["docker", *argv, "-v", "ON_ERROR_STOP=1"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.id = self.ask(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_export_snapshot();"
        ).strip()
        if not self.id:
            raise Fail("could not export a PostgreSQL snapshot")

    def ask(self, sql: str) -> str:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(sql + "\n\\echo __prodstack_end__\n")
        self.proc.stdin.flush()
        lines: list[str] = []
        for line in self.proc.stdout:
            if line.strip() == "__prodstack_end__":
                return "".join(lines)
            lines.append(line)
        err = self.proc.stderr.read() if self.proc.stderr else ""
        raise Fail(f"psql (snapshot session) ended: {err.strip()}")

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.proc.communicate("COMMIT;\n", timeout=30)
        if self.proc.poll() is None:
            self.proc.kill()


def globals_for_restore(sql: str) -> str:
    """pg_dumpall's globals made safe to replay on a running cluster: an existing role is
    kept (CREATE ROLE becomes conditional) and no password is set (the dump has none, and
    any is dropped: the deployment owns every password)."""
    out = []
    for line in sql.splitlines():
        m = re.fullmatch(r'CREATE ROLE ("?[^;]+"?);', line)
        if m:
            line = f"DO $$ BEGIN CREATE ROLE {m.group(1)}; EXCEPTION WHEN duplicate_object THEN NULL; END $$;"
        out.append(re.sub(r" PASSWORD '(?:[^']|'')*'", "", line))
    return "\n".join(out) + "\n"


# --- Redis ----------------------------------------------------------------------------------


def redis_info(redis: str, section: str) -> dict[str, str]:
    out = docker("exec", redis, "sh", "-c", REDIS_CLI, "sh", "INFO", section)
    pairs = (line.strip().split(":", 1) for line in out.splitlines() if ":" in line)
    return {k: v for k, v in pairs}


def redis_bgsave(redis: str, timeout: float) -> dict[str, Any]:
    before = int(redis_info(redis, "persistence")["rdb_last_save_time"])
    if int(now()) <= before:  # LASTSAVE has one-second resolution
        time.sleep(1.1)
    reply = docker("exec", redis, "sh", "-c", REDIS_CLI, "sh", "BGSAVE", "SCHEDULE").strip()
    if not reply.startswith("Background saving"):
        raise Fail(f"Redis refused BGSAVE: {reply}")
    deadline = now() + timeout
    while now() < deadline:
        info = redis_info(redis, "persistence")
        if info["rdb_bgsave_in_progress"] == "0" and int(info["rdb_last_save_time"]) > before:
            if info["rdb_last_bgsave_status"] != "ok":
                raise Fail("Redis BGSAVE failed (rdb_last_bgsave_status is not ok; see its log)")
            keyspace = redis_info(redis, "keyspace")
            keys = sum(int(v.split(",")[0].split("=")[1]) for v in keyspace.values())
            return {"saved_at": int(info["rdb_last_save_time"]), "keys": keys}
        time.sleep(0.2)
    raise Fail(f"Redis BGSAVE did not finish within {timeout:.0f} s")


# --- files ----------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def backups(root: Path) -> list[str]:
    """Complete backups (a manifest exists), oldest first."""
    names = [p.name for p in root.iterdir() if NAME_RE.match(p.name) and (p / "manifest.json").exists()]
    return sorted(names)


def when(name: str) -> datetime:
    m = NAME_RE.match(name)
    if not m:
        raise Fail(f"{name} is not a backup name (prodstack-YYYYmmddTHHMMSSZ)")
    return datetime.strptime(m.group(1), STAMP).replace(tzinfo=UTC)


def retained(stamps: Iterable[datetime], daily: int, weekly: int) -> set[datetime]:
    """The newest backup, plus the newest of each of the `daily` most recent days and of
    each of the `weekly` most recent ISO weeks that have a backup."""
    ordered = sorted(set(stamps), reverse=True)
    days: dict[Any, datetime] = {}
    weeks: dict[Any, datetime] = {}
    for t in ordered:
        if t.date() not in days and len(days) < daily:
            days[t.date()] = t
        week = t.isocalendar()[:2]
        if week not in weeks and len(weeks) < weekly:
            weeks[week] = t
    return set(ordered[:1]) | set(days.values()) | set(weeks.values())
