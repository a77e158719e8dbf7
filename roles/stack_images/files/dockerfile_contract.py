#!/usr/bin/env python3
"""Print what a Dockerfile's final stage declares of the app contract, as JSON:

    {"user": "10050" | null, "healthcheck": "declared" | "none" | "absent"}

`user` is the last USER of the final stage with ${ARG} defaults substituted (null: no USER,
so the image runs as its base's user, root for a Debian base); `healthcheck` is whether the
final stage declares a HEALTHCHECK, turns one off (HEALTHCHECK NONE), or says nothing. The
preflight reads it before anything is built, so a Dockerfile that breaks the contract is
refused before anything changes on a host.

    dockerfile_contract.py DOCKERFILE
"""

import json
import re
import sys


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


def contract(text: str) -> dict[str, str | None]:
    args: dict[str, str] = {}
    user: str | None = None
    healthcheck = "absent"
    for word, rest in instructions(text):
        if word == "FROM":
            user, healthcheck = None, "absent"
        elif word == "ARG":
            name, _, default = rest.partition("=")
            if default or name not in args:
                args[name.strip()] = default.strip().strip("\"'")
        elif word == "USER":
            user = substitute(rest, args)
        elif word == "HEALTHCHECK":
            healthcheck = "none" if rest.upper() == "NONE" else "declared"
    return {"user": user, "healthcheck": healthcheck}


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as fh:
        print(json.dumps(contract(fh.read())))
