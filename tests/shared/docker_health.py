"""What the suites print when a container is not healthy: Docker's own health record.

Shared by tests/containers and the Molecule verifiers (molecule/default/tests, reused by
molecule/vm), which put this folder on their import path.
"""

from __future__ import annotations

from typing import Any


def health_log(container: dict[str, Any]) -> str:
    """A container's state and its last checks (Docker keeps five) from `docker inspect`:
    when each ran, how it ended and the end of what it printed, so a failed health
    assertion says why."""
    state = container["State"]
    health = state.get("Health") or {}
    lines = [
        f"== {container['Name'].lstrip('/')}: {state.get('Status')}, health {health.get('Status')}, "
        f"{health.get('FailingStreak')} failed in a row"
    ]
    for check in health.get("Log") or []:
        span = f"{check.get('Start', '')[11:23]}-{check.get('End', '')[11:23]}"
        output = (check.get("Output") or "").strip()[-300:]
        lines.append(f"   {span} exit {check.get('ExitCode')}: {output}")
    return "\n".join(lines)
