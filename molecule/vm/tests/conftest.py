"""The VM scenario's own tests reuse the default scenario's helpers (one set of tests)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "default" / "tests"))

from test_stack import machine_address  # noqa: E402


@pytest.fixture
def published(host: Any) -> Callable[[str], str]:
    """As in molecule/default/tests/conftest.py: the machine's host:port for a VM port."""
    return lambda container_port: machine_address(host, container_port)
