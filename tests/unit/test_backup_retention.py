"""Retention and backup-name rules of prodstack-backup, on made-up timestamps (no Docker)."""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

FILES = Path(__file__).resolve().parents[2] / "roles" / "stack_backup" / "files"


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


lib = load(FILES / "prodstack_backup_lib.py")
cli = load(FILES / "prodstack-backup.py")


def at(day: int, hour: int = 3) -> datetime:
    return datetime(2026, 11, 1, hour, 15, tzinfo=UTC) + timedelta(days=day - 1)


def test_daily_keeps_newest_of_each_of_the_last_days() -> None:
    stamps = [at(d, h) for d in range(1, 11) for h in (3, 15)]  # twice a day, Nov 1..10
    kept = lib.retained(stamps, daily=7, weekly=0)
    assert kept == {at(d, 15) for d in range(4, 11)}


def test_weekly_keeps_newest_of_each_iso_week() -> None:
    stamps = [at(d) for d in range(1, 31)]  # Nov 2026: Sun 1, weeks start Mon 2, 9, 16, 23, 30
    kept = lib.retained(stamps, daily=0, weekly=4)
    # The newest of ISO weeks 49 (Nov 30), 48 (Sun Nov 29), 47 (Nov 22), 46 (Nov 15).
    assert kept == {at(30), at(29), at(22), at(15)}


def test_daily_and_weekly_together_default_policy() -> None:
    stamps = [at(d) for d in range(1, 31)]
    kept = lib.retained(stamps, daily=7, weekly=4)
    assert kept == {at(d) for d in range(24, 31)} | {at(22), at(15)}
    assert len(kept) == 9


def test_newest_is_always_kept_and_gaps_do_not_widen_the_window() -> None:
    stamps = [at(1), at(2), at(20)]
    assert lib.retained(stamps, daily=0, weekly=0) == {at(20)}
    # Days without a backup are not counted: the 2 most recent days that have one.
    assert lib.retained(stamps, daily=2, weekly=0) == {at(20), at(2)}


def test_duplicates_and_empty_input() -> None:
    assert lib.retained([], daily=7, weekly=4) == set()
    assert lib.retained([at(5), at(5)], daily=7, weekly=4) == {at(5)}


def test_prune_removes_only_what_the_policy_drops(tmp_path: Path) -> None:
    for d in range(1, 31):
        base = tmp_path / f"prodstack-{at(d):%Y%m%dT%H%M%SZ}"
        base.mkdir()
        (base / "manifest.json").write_text("{}")
    (tmp_path / "prodstack-20261101T000000Z-no-manifest").mkdir()
    gone = cli.prune({"keep_daily": 7, "keep_weekly": 4}, tmp_path)
    assert len(gone) == 21
    left = lib.backups(tmp_path)
    assert [lib.when(n) for n in left] == sorted({at(d) for d in range(24, 31)} | {at(22), at(15)})


def test_names_round_trip_and_bad_names_are_refused() -> None:
    assert lib.when("prodstack-20261126T131900Z") == datetime(2026, 11, 26, 13, 19, tzinfo=UTC)
    try:
        lib.when("../etc")
    except lib.Fail:
        return
    raise AssertionError("a bad name was accepted")


def test_globals_keep_existing_roles_and_drop_passwords() -> None:
    sql = "CREATE ROLE app;\nALTER ROLE app WITH NOSUPERUSER LOGIN PASSWORD 'SCRAM-SHA-256$x''y';\n"
    out = lib.globals_for_restore(sql)
    assert "EXCEPTION WHEN duplicate_object" in out
    assert "PASSWORD" not in out
    assert "ALTER ROLE app WITH NOSUPERUSER LOGIN;" in out


def test_status_is_stale_after_twice_the_period(tmp_path: Path) -> None:
    assert cli.status({"period_hours": 24}, tmp_path)["stale"]  # no backup at all
    base = tmp_path / "prodstack-20261101T031500Z"
    base.mkdir()
    for age_h, stale in ((47, False), (49, True)):
        created = cli.now() - age_h * 3600
        manifest = {"created_epoch": created, "created": "-", "size": 1}
        (base / "manifest.json").write_text(json.dumps(manifest))
        assert cli.status({"period_hours": 24}, tmp_path)["stale"] is stale
