"""kill_play() stops a background play with every process it started, a process that left
for a session of its own included (as Mitogen's connection process does)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from plays import descendants, kill_play


def running(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_kill_play_stops_the_whole_tree() -> None:
    proc = subprocess.Popen(
        ["sh", "-c", "setsid sleep 300 & sleep 300 & wait"], start_new_session=True, text=True
    )
    deadline = time.monotonic() + 10
    while len(descendants(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = descendants(proc.pid)
    assert len(tree) == 2, tree
    kill_play(proc)
    assert proc.returncode == -9
    deadline = time.monotonic() + 10
    while any(running(pid) for pid in tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(running(pid) for pid in tree), [pid for pid in tree if running(pid)]
