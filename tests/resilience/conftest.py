"""Fixtures of the resilience cases; run by `molecule verify -s resilience` (testinfra).

Each case fills a reslib.Case; at the end of the session the cases are written to
out/RESILIENCE.md (ignored by git) with the outcome pytest saw (a failed assertion marks the
row FAIL); `make docs` copies it into docs/.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import Any

import pytest
from reslib import REPO, Case, Report, Target, get, target_name, wait_for

if "MOLECULE_INVENTORY_FILE" not in os.environ:
    pytest.skip(
        "resilience cases run inside `molecule verify -s resilience`",
        allow_module_level=True,
    )

REPORT = Report()


def case_number(item: pytest.Item) -> float:
    """The case's number, the start of its docstring ("3. Redis stopped."); inf if none."""
    doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
    number = doc.strip().partition(".")[0]
    return float(number) if number.isdigit() else float("inf")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "full_only: a case `make test` leaves out (RESILIENCE_FULL=0)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the cases in the order of their numbers, whatever file holds them (one file per
    kind of fault): each case starts from the state the earlier ones leave, and the report
    lists them in that order. Cases without a number run after, in file order.

    Cases marked full_only (a figure the long tier keeps current, not a guarantee another
    case does not already prove) are left out with RESILIENCE_FULL=0, which `make test` sets
    to stay inside its hour."""
    items.sort(key=case_number)
    if os.environ.get("RESILIENCE_FULL", "1") == "0":
        left = [item for item in items if item.get_closest_marker("full_only")]
        if left:
            config.hook.pytest_deselected(items=left)
            items[:] = [item for item in items if item not in left]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture(scope="session")
def target() -> Iterator[Target]:
    t = Target(target_name())
    yield t
    REPORT.write(REPO / "out" / "RESILIENCE.md", t.name)


@pytest.fixture(scope="session")
def url(target: Target) -> str:
    return target.url()


@pytest.fixture
def case(request: pytest.FixtureRequest, target: Target, url: str) -> Iterator[Case]:
    """The case's row; the stack is healthy and answering before the case starts."""
    number, _, title = (request.node.function.__doc__ or "").strip().partition(". ")
    row = Case(number, title.split("\n")[0].rstrip("."))
    REPORT.cases.append(row)
    target.wait_healthy(timeout=180)
    wait_for(lambda: get(url + "/").ok, 120)  # an earlier failed case may still be healing
    yield row
    rep = getattr(request.node, "rep_call", None)
    row.passed = bool(rep and rep.passed)
