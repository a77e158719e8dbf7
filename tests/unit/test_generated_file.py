"""write_or_check(): the step that keeps generated, tracked files in step with their source."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from generated_file import write_or_check


@pytest.fixture
def target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # The message names the file relative to the repository, so the file must sit in it.
    monkeypatch.setattr("generated_file.ROOT", tmp_path)
    return tmp_path / "out.md"


def test_writes_without_check(target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["gen"])
    assert write_or_check(target, "new\n", "gen.py") == 0
    assert target.read_text() == "new\n"


@pytest.mark.parametrize("existing", [None, "old\n"])
def test_check_reports_missing_or_stale_and_writes_nothing(
    target: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], existing: str | None
) -> None:
    if existing is not None:
        target.write_text(existing)
    monkeypatch.setattr(sys, "argv", ["gen", "--check"])
    assert write_or_check(target, "new\n", "gen.py") == 1
    assert "out.md is stale: run scripts/gen.py" in capsys.readouterr().out
    assert (target.read_text() if target.exists() else None) == existing


def test_check_passes_when_current(target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target.write_text("same\n")
    monkeypatch.setattr(sys, "argv", ["gen", "--check"])
    assert write_or_check(target, "same\n", "gen.py") == 0
