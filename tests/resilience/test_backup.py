"""Backups with proven restores (roles/stack_backup) on the shared resilience target.

The case that removes the data volumes runs last: the file's other cases and any later
file see a stack that was restored, not an empty one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from plays import kill_play, start_play
from reslib import (
    APP,
    POSTGRES,
    REDIS,
    REPO,
    Case,
    PlayResult,
    Target,
    Traffic,
    converge,
    get,
    summary,
    wait_for,
)

BACKUPS = "/var/backups/prodstack"
CONFIG = "/etc/prodstack/backup.json"
REDIS_CLI = (
    'REDISCLI_AUTH=$(cat "$REDIS_PASSWORD_FILE"); export REDISCLI_AUTH; '
    'exec redis-cli --no-auth-warning -h 127.0.0.1 "$@"'
)


def load_lib() -> ModuleType:
    path = REPO / "roles" / "stack_backup" / "files" / "prodstack_backup_lib.py"
    spec = importlib.util.spec_from_file_location("prodstack_backup_lib", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The controller's backup directory for this run (not ~/.prodstack of the machine)."""
    return tmp_path_factory.mktemp("backups")


def playbook(name: str, controller: Path, *extra: str) -> PlayResult:
    return converge(
        "-e", f"stack_backup_controller_dir={controller}", *extra, playbook=REPO / "playbooks" / name
    )


def backup_now(target: Target) -> dict[str, Any]:
    """One run of the scheduled unit; its result as recorded on the host."""
    target.sh("systemctl", "start", "prodstack-backup.service", timeout=600)
    return dict(json.loads(target.sh("cat", f"{BACKUPS}/last-run.json")))


def backup_config(target: Target) -> dict[str, Any]:
    """The backup unit's settings on the host (written by the role from its variables)."""
    return dict(json.loads(target.sh("cat", CONFIG)))


def write_backup_config(target: Target, text: str) -> None:
    """Replace the backup unit's settings file (a case changes one setting, then puts it back)."""
    target.sh("sh", "-c", f"cat > {CONFIG} <<'EOF'\n{text}\nEOF")


def manifest(target: Target, name: str) -> dict[str, Any]:
    return dict(json.loads(target.sh("cat", f"{BACKUPS}/{name}/manifest.json")))


def row_ids(target: Target) -> list[int]:
    return [int(i) for i in target.sql("SELECT id FROM visits ORDER BY id").split()]


def counter(target: Target) -> int:
    return int(
        target.docker("exec", REDIS, "sh", "-c", REDIS_CLI, "sh", "GET", "prodstack:visits").strip() or 0
    )


def test_backup_under_writes(case: Case, target: Target, url: str, controller: Path) -> None:
    """24. A backup taken while a client writes restores exactly the rows of its snapshot."""
    target.sql("INSERT INTO visits (hostname) SELECT 'bulk' FROM generate_series(1, 10000)")
    with Traffic(url, rate=20) as traffic:
        time.sleep(2)
        t0 = time.time()
        run = backup_now(target)
        t1 = time.time()
        time.sleep(2)
    name = str(run["name"])
    m = manifest(target, name)
    table: dict[str, Any] = m["postgres"]["tables"]["public.visits"]
    answered = [r for r in traffic.snapshot() if r.ok and r.body]
    done_before = {int(r.body["row_id"]) for r in answered if r.body and r.sent + r.latency < t0}
    sent_after = {int(r.body["row_id"]) for r in answered if r.body and r.sent > t1}
    visits_before = max(
        (int(r.body["visits"]) for r in answered if r.body and r.sent + r.latency < t0), default=0
    )
    visits_after = min((int(r.body["visits"]) for r in answered if r.body and r.sent > t1), default=1 << 62)
    case.done = (
        f"10,000 rows inserted, then a client at 20 req/s through `/` ({len(answered)} answered); "
        f"backup {name} taken meanwhile by the systemd unit, then restored with playbooks/restore.yml"
    )
    case.expected = (
        "restored rows = the rows in the dump's snapshot (count and digest recorded in that snapshot); every "
        "row answered before the backup began is there, none sent after it ended; counter between the two"
    )

    res = playbook("restore.yml", controller, "-e", f"backup={name}")
    assert res.rc == 0, res.output[-3000:]
    restore_s = re.search(r"in\s+([0-9.]+)\s+s:", res.output).group(1)  # type: ignore[union-attr]
    # The restore checked every table against the manifest (rows and digest read in the dump's
    # snapshot) before the app came back; its result stays on the host.
    checked = json.loads(target.sh("cat", f"{BACKUPS}/last-restore.json"))["postgres"]["tables"]
    assert checked["public.visits"] == table
    restored = set(row_ids(target))
    assert len(restored) == table["rows"]
    assert done_before <= restored, sorted(done_before - restored)[:10]
    assert not sent_after & restored, sorted(sent_after & restored)[:10]
    visits = counter(target)
    assert visits_before <= visits <= visits_after
    assert get(url + "/").ok
    rows, size, seconds = int(table["rows"]), int(m["size"]), float(m["duration_s"])
    case.measured = (
        f"{rows} rows restored (= snapshot), {len(done_before)} acknowledged-before all present, "
        f"0 of {len(sent_after)} later rows; counter {visits} in [{visits_before}, {visits_after}]. "
        f"Backup: {seconds:.1f} s and {size} bytes for {rows} rows "
        f"({size * 10000 / rows / 1024:.0f} KiB per 10,000 rows; the time is mostly fixed cost); "
        f"restore (RTO) {res.seconds:.0f} s for the whole playbook, {restore_s} s of it the data restore "
        f"(machine load average {os.getloadavg()[0]:.0f} on {os.cpu_count()} cores). "
        f"Worst-case RPO with the default schedule: 24 h + {seconds:.0f} s (one backup a day)"
    )


def test_corrupt_and_truncated_refused(case: Case, target: Target, controller: Path) -> None:
    """25. A backup with one byte flipped, or truncated, is refused before anything changes."""
    (good,) = json.loads(target.sh("prodstack-backup", "list", "--json"))[-1:]
    flip = (
        "import sys; p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); "
        "b[len(b) // 2] ^= 1; open(p, 'wb').write(b)"
    )
    faults = [
        ("prodstack-20000101T000001Z", "redis.rdb", ["python3", "-c", flip]),
        ("prodstack-20000101T000002Z", "postgres.dump", ["truncate", "-s", "-100"]),
    ]
    seen = []
    try:
        for bad, part, mutate in faults:
            target.sh("cp", "-a", f"{BACKUPS}/{good}", f"{BACKUPS}/{bad}")
            target.sh(*mutate, f"{BACKUPS}/{bad}/{part}")
            before, rows, visits = target.identity(), row_ids(target), counter(target)
            res = playbook("restore.yml", controller, "-e", f"backup={bad}")
            assert res.rc != 0
            assert f"{BACKUPS}/{bad}/{part}" in res.output and "nothing was changed" in res.output
            assert target.identity() == before  # no container stopped or restarted
            assert (row_ids(target), counter(target)) == (rows, visits)
            seen.append(re.findall(r"prodstack-backup verify: error: [^\n]*", res.output)[0])
    finally:
        target.sh("rm", "-rf", *(f"{BACKUPS}/{bad}" for bad, _, _ in faults))
    case.done = (
        f"copies of {good}: a byte of redis.rdb flipped; 100 bytes cut off postgres.dump; restore.yml on each"
    )
    case.expected = "the playbook fails naming the file; no container stopped; rows and counter unchanged"
    case.measured = " / ".join(seen)


def test_encrypted_backup_wrong_key_refused(case: Case, target: Target, controller: Path) -> None:
    """26. An age-encrypted backup: the host holds only the public key; a wrong identity is refused."""
    target.sh("sh", "-c", "DEBIAN_FRONTEND=noninteractive apt-get install -y -q age >/dev/null", timeout=300)
    keys = {}
    for key in ("right", "wrong"):
        target.sh("sh", "-c", f"umask 077; rm -f /root/{key}.age; age-keygen -o /root/{key}.age 2>/dev/null")
        keys[key] = target.sh("grep", "AGE-SECRET-KEY", f"/root/{key}.age").strip()
    recipient = target.sh("age-keygen", "-y", "/root/right.age").strip()
    config = backup_config(target)
    write_backup_config(target, json.dumps(dict(config, recipient=recipient)))
    try:
        name = str(backup_now(target)["name"])
    finally:
        write_backup_config(target, json.dumps(config))
    files = sorted(manifest(target, name)["files"])
    assert files == ["globals.sql.age", "postgres.dump.age", "redis.rdb.age"]
    assert not target.sh("sh", "-c", f"ls {BACKUPS}/{name} | grep -v -e '.age$' -e '^manifest'", check=False)
    before, rows = target.identity(), row_ids(target)
    res = playbook(
        "restore.yml", controller, "-e", f"backup={name}", "-e", f"stack_backup_age_identity={keys['wrong']}"
    )
    assert res.rc != 0 and "cannot decrypt" in res.output and "nothing was changed" in res.output
    assert target.identity() == before and row_ids(target) == rows
    assert target.sh("ls", "/run/prodstack-backup.identity", check=False) == ""
    target.sh("sh", "-c", "rm -f /root/wrong.age; cp /root/right.age /run/right.age")
    try:
        ok = json.loads(
            target.sh("prodstack-backup", "verify", name, "--identity", "/run/right.age", "--json")
        )
    finally:
        target.sh("rm", "-f", "/run/right.age", "/root/right.age")
    assert ok["verified"] == name and ok["encrypted"]
    refusal = re.findall(r"prodstack-backup verify: error: [^\n]*", res.output)[0]
    case.done = (
        f"backup {name} encrypted to an age key; restore.yml with another identity; verify with the right one"
    )
    case.expected = "only .age files and the manifest on the host; the wrong key is refused before any change"
    case.measured = f"{', '.join(files)}; {refusal}; the right key verifies"


def test_retention_and_failed_run(case: Case, target: Target) -> None:
    """27. Retention keeps only what the rule keeps; a failed run is a failed unit with its reason."""
    lib = load_lib()
    (newest,) = json.loads(target.sh("prodstack-backup", "list", "--json"))[-1:]
    old = [f"prodstack-202610{day:02d}T031500Z" for day in range(1, 31)]
    for name in old:
        target.sh("cp", "-a", f"{BACKUPS}/{newest}", f"{BACKUPS}/{name}")
    runs = [str(backup_now(target)["name"]) for _ in range(2)]
    left = json.loads(target.sh("prodstack-backup", "list", "--json"))
    everything = [*old, newest, *runs]
    kept = lib.retained([lib.when(n) for n in everything], 7, 4)
    assert {lib.when(n) for n in left} == kept and left[-1] == runs[-1]

    config = backup_config(target)
    write_backup_config(target, json.dumps(dict(config, database="nosuchdb")))
    try:
        rc = target.sh("sh", "-c", "systemctl start prodstack-backup.service; echo $?", check=False).strip()
        state = target.sh("systemctl", "is-failed", "prodstack-backup.service", check=False).strip()
        journal = target.sh(
            "journalctl", "-u", "prodstack-backup.service", "-n", "20", "-o", "cat", "--no-pager"
        )
    finally:
        write_backup_config(target, json.dumps(config))
        target.sh("systemctl", "reset-failed", "prodstack-backup.service", check=False)
    reason = next(line for line in reversed(journal.splitlines()) if "error:" in line)
    assert rc != "0" and state == "failed" and "nosuchdb" in reason
    case.done = (
        "30 backups dated 2026-10-01..30 added next to today's, two more runs; one run with a wrong database"
    )
    case.expected = (
        "7 daily + 4 weekly kept (+ the newest); the wrong run fails the unit and names why in the journal"
    )
    case.measured = (
        f"{len(left)} kept: {', '.join(n[10:18] for n in left)}; failed unit: {reason.strip()[-120:]}"
    )


def test_restore_after_volumes_are_gone(case: Case, target: Target, url: str, controller: Path) -> None:
    """28. Data volumes and the host's backups destroyed; converge, restore from the controller's copy."""
    answers = [get(url + "/") for _ in range(200)]
    assert all(r.ok for r in answers)
    rows, visits = row_ids(target), counter(target)
    res = playbook("backup.yml", controller)
    assert res.rc == 0, res.output[-3000:]
    (fetched,) = sorted((controller / target.name).iterdir())[-1:]
    assert {p.name for p in fetched.iterdir()} >= {
        "manifest.json",
        "postgres.dump",
        "redis.rdb",
        "globals.sql",
    }

    volumes = [
        m["Name"] for c in (POSTGRES, REDIS) for m in target.inspect(c)["Mounts"] if m["Type"] == "volume"
    ]
    # One step, so the host watchdog never sees them stopped (it would start them again).
    target.docker("rm", "-f", POSTGRES, REDIS)
    target.docker("volume", "rm", *volumes)
    target.sh("sh", "-c", f"rm -rf {BACKUPS}/prodstack-*")
    conv = converge()
    assert conv.rc == 0, conv.output[-3000:]
    gone = target.sql("SELECT to_regclass('public.visits') IS NULL") == "t" or len(row_ids(target)) < len(
        rows
    )
    assert gone and counter(target) < visits  # the data really was lost

    res = playbook("restore.yml", controller)
    assert res.rc == 0, res.output[-3000:]
    assert row_ids(target) == rows
    assert counter(target) == visits
    after = get(url + "/")
    assert after.ok and after.body
    assert int(after.body["visits"]) == visits + 1 and int(after.body["row_id"]) > max(rows)
    assert target.health(APP) in ("healthy", "starting")
    case.done = (
        f"200 visits through `/`, playbooks/backup.yml (fetched {fetched.name}); PostgreSQL and Redis "
        "containers and both volumes removed, the host's backups deleted; converge; playbooks/restore.yml"
    )
    case.expected = (
        "same rows by id and same counter from the controller's copy; `/` works and continues both"
    )
    case.measured = (
        f"{len(rows)} rows and counter {visits} back; next `/` gave visit {after.body['visits']}, "
        f"row {after.body['row_id']}; converge {conv.seconds:.0f} s, restore playbook {res.seconds:.0f} s"
    )


def test_reboot_during_restore(case: Case, target: Target, url: str, controller: Path) -> None:
    """29. Reboot in the middle of a restore: after boot the stack serves, no Ansible run."""
    (name,) = json.loads(target.sh("prodstack-backup", "list", "--json"))[-1:]
    restore = REPO / "playbooks" / "restore.yml"
    play = start_play(restore, "-e", f"backup={name}", "-e", f"stack_backup_controller_dir={controller}")
    try:
        with Traffic(url, rate=5) as during:
            # The app is stopped and held, NGINX in maintenance: the restore's data phase.
            wait_for(lambda: get(url + "/").status == 503 and not target.app_ready(), 300, 0.5)
        # Until then clients got answers or NGINX's maintenance 503, nothing else.
        refused = [r for r in during.snapshot() if not r.ok]
        maintenance = [r for r in refused if r.status == 503 and (r.body or {}).get("error") == "maintenance"]
        assert maintenance and len(maintenance) == len(refused), summary(refused)
        kill_play(play)  # the controller loses the host with the reboot
        healthy, answered = target.reboot(url)
    finally:
        kill_play(play)
    after = get(url + "/")
    maintenance = target.sh("ls", "/etc/prodstack/nginx/conf.d/", check=False)
    again = playbook("restore.yml", controller, "-e", f"backup={name}")
    case.done = (
        f"`docker restart` of the target while playbooks/restore.yml restores {name} (app stopped, 503)"
    )
    case.expected = (
        "before the reboot only maintenance 503s fail; after boot every container that should run is "
        "healthy and `/` is 200 (no maintenance left), "
        "no Ansible; the restore run again succeeds"
    )
    case.measured = (
        f"{len(maintenance)} maintenance 503s before the reboot, no other failure; "
        f"serving {healthy:.0f} s, `/` 200 {answered:.0f} s after the reboot; restore again: rc={again.rc} "
        f"in {again.seconds:.0f} s"
    )
    assert after.ok, after
    assert ".maintenance" not in maintenance
    assert again.rc == 0, again.output[-3000:]


def test_offsite_push_over_ssh(case: Case, target: Target) -> None:
    """30. Off-host copy: each scheduled run pushes its backup with rsync over SSH; a remote it cannot
    reach fails the unit with rsync's reason and keeps the backup on the host."""
    install = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server rsync >/dev/null"
    target.sh("sh", "-c", install, timeout=300)
    # The remote: the target's own sshd on loopback (it refuses root, as a hardened host does),
    # a user `offsite` owning /srv/offsite with root's key authorized, its host key known.
    target.sh(
        "sh", "-c",
        "set -e; id offsite >/dev/null 2>&1 || useradd -m -s /bin/sh offsite; "
        "mkdir -p /root/.ssh /srv/offsite ~offsite/.ssh; chmod 700 /root/.ssh ~offsite/.ssh; "
        "[ -f /root/.ssh/id_ed25519 ] || ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519; "
        "cp /root/.ssh/id_ed25519.pub ~offsite/.ssh/authorized_keys; "
        "chown -R offsite: ~offsite/.ssh /srv/offsite; "
        "systemctl start ssh; ssh-keyscan -t ed25519 127.0.0.1 >> /root/.ssh/known_hosts 2>/dev/null",
    )  # fmt: skip
    original = target.sh("cat", CONFIG)
    res = converge("--tags", "stack_backup", "-e", "stack_backup_rsync_target=offsite@127.0.0.1:/srv/offsite")
    try:
        assert res.rc == 0, res.output[-3000:]
        run = backup_now(target)
        name, host = str(run["name"]), target.sh("hostname").strip()
        sums = "cd {}/{} && sha256sum * | sort"
        here = target.sh("sh", "-c", sums.format(BACKUPS, name))
        there = target.sh("sh", "-c", sums.format(f"/srv/offsite/{host}", name))
        assert here and here == there

        config = backup_config(target)
        unreachable = dict(
            config, rsync_target="offsite@127.0.0.1:/srv/offsite", rsync_ssh="ssh -p 1 -o BatchMode=yes"
        )
        write_backup_config(target, json.dumps(unreachable))
        try:
            target.sh("systemctl", "start", "prodstack-backup.service", check=False, timeout=600)
            state = target.sh("systemctl", "is-failed", "prodstack-backup.service", check=False).strip()
            journal = target.sh("journalctl", "-u", "prodstack-backup.service", "-n", "20", "-o", "cat")
        finally:
            write_backup_config(target, json.dumps(config))
            target.sh("systemctl", "reset-failed", "prodstack-backup.service", check=False)
        reason = next(line for line in reversed(journal.splitlines()) if "rsync of" in line)
        kept = json.loads(target.sh("prodstack-backup", "list", "--json"))[-1]
        assert state == "failed" and "stays on this host" in reason and kept != name
    finally:
        # The converged config without the remote (what site.yml writes by default).
        write_backup_config(target, original.strip())
        target.sh("sh", "-c", "systemctl stop ssh; rm -rf /srv/offsite", check=False)
    case.done = (
        "`site.yml --tags stack_backup` with stack_backup_rsync_target=offsite@127.0.0.1:/srv/offsite "
        "(the target's own sshd, root's key); one scheduled run; then one with the remote's port closed"
    )
    case.expected = (
        "the pushed copy has the same sha256 for every file; the unreachable remote fails the unit, "
        "names rsync's reason, and the new backup stays on the host"
    )
    files = len(here.splitlines())
    case.measured = f"{name} pushed to /srv/offsite/{host}/, {files} files identical; {reason.strip()[-160:]}"
