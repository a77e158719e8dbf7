"""The deploy lock on the host: python3 -c SCRIPT ACTION DIR [TTL] HOLDER_JSON.

ACTION acquire: mkdir DIR (atomic) and write DIR/holder.json; when DIR exists, report the
holder (busy), or take it over when its heartbeat is older than TTL seconds (a killed run)
or it was taken before the host's last boot.
heartbeat: refresh our heartbeat. release: remove DIR if we hold it. Prints one JSON line.
"""

import json
import os
import shutil
import sys
import time


def read(path: str) -> dict:
    try:
        with open(os.path.join(path, "holder.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def write(path: str, holder: dict) -> None:
    tmp = os.path.join(path, "holder.json.tmp")
    with open(tmp, "w") as f:
        json.dump(holder, f)
    os.replace(tmp, os.path.join(path, "holder.json"))


def age(path: str, holder: dict) -> float:
    try:
        beat = float(holder.get("heartbeat") or os.stat(path).st_mtime)
    except OSError:
        beat = time.time()
    return time.time() - beat


def booted() -> float:
    """When this host (its PID 1) started, as epoch seconds: the kernel's boot time plus
    PID 1's start, so a container standing in for a host counts its own restarts too."""
    try:
        with open("/proc/stat") as f:
            btime = next(float(line.split()[1]) for line in f if line.startswith("btime "))
        with open("/proc/1/stat") as f:
            ticks = float(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, StopIteration, IndexError, ValueError):
        return 0.0
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def acquire(path: str, ttl: int, me: dict) -> dict:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        holder = read(path)
        if holder.get("token") == me["token"]:
            return {"state": "held"}
        old = age(path, holder)
        # A lock whose holder last showed life before the host's last boot is stale whatever
        # its age: that run lost the host in the reboot (a reboot in the middle of a release
        # must not block the next run for the whole TTL).
        rebooted = time.time() - old < booted()
        if old <= ttl and not rebooted:
            return {"state": "busy", "holder": holder, "age": int(old)}
        # Stale: move it aside (atomic), check it is still the one judged stale, then retake.
        aside = f"{path}.stale.{os.getpid()}"
        try:
            os.rename(path, aside)
        except OSError:
            return {"state": "busy", "holder": holder, "age": int(old)}
        if read(aside).get("token") != holder.get("token"):
            os.rename(aside, path)  # another run took it over in between: it is theirs
            return {"state": "busy", "holder": read(path), "age": 0}
        shutil.rmtree(aside, ignore_errors=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            return {"state": "busy", "holder": read(path), "age": 0}
        write(path, me)
        return {"state": "taken over", "stale": holder, "age": int(old)}
    write(path, me)
    return {"state": "acquired"}


def main() -> int:
    action, path = sys.argv[1], sys.argv[2]
    if action == "acquire":
        out = acquire(path, int(sys.argv[3]), json.loads(sys.argv[4]))
    else:
        token = json.loads(sys.argv[-1])["token"]
        holder = read(path)
        if holder.get("token") != token:
            out = {"state": "not ours", "holder": holder}
        elif action == "heartbeat":
            holder["heartbeat"] = int(time.time())
            write(path, holder)
            out = {"state": "held"}
        else:
            shutil.rmtree(path, ignore_errors=True)
            out = {"state": "released"}
    print(json.dumps(out))
    return 0


sys.exit(main())
