"""Fixtures shared by the default scenario's tests and the VM scenario that reuses them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from test_stack import machine_address


@pytest.fixture
def published(host: Any) -> Callable[[str], str]:
    """The machine's host:port for a port of the target ("8080/tcp"), container or VM."""
    return lambda container_port: machine_address(host, container_port)
