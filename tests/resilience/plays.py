"""Background ansible-playbook runs for the resilience cases that kill a play on purpose
(a controller lost mid-run): started in a session of their own, killed with every process
they started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path


def start_play(playbook: Path, *extra: str, output: bool = False) -> subprocess.Popen[str]:
    """ansible-playbook in the background, in a session of its own, so that kill_play() can
    stop it with every process it started (killing the main process alone leaves its
    workers and Mitogen's connection process running). With output, read it with
    communicate(); without, it is dropped."""
    argv = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(playbook), *extra]
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    sink = subprocess.PIPE if output else subprocess.DEVNULL
    return subprocess.Popen(
        argv, stdout=sink, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, by parent links in /proc (a session leader of its own
    included: Mitogen's connection process leaves the play's process group)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def kill_play(proc: subprocess.Popen[str]) -> None:
    """SIGKILL to the play and every process it started, as a lost controller would be."""
    for pid in [proc.pid, *descendants(proc.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
