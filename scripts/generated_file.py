"""The write-or-check step shared by the scripts that generate a tracked file."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_or_check(target: Path, text: str, script: str) -> int:
    """Rewrite `target` with `text`; with --check, exit 1 when the file differs instead."""
    if "--check" in sys.argv[1:]:
        if not target.exists() or target.read_text() != text:
            print(f"{target.relative_to(ROOT)} is stale: run scripts/{script}")
            return 1
        return 0
    target.write_text(text)
    return 0
