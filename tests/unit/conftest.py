"""Fixtures the sandbox's unit tests share: one small world (and its hostile twin), served by
an in-process sandbox on a fake clock. A test file that needs another world defines its own."""

from __future__ import annotations

import pytest

from etl.sandbox import Graph, Sandbox
from tests.unit.sandbox_helpers import CONFIG, FakeClock


@pytest.fixture(scope="module")
def graph() -> Graph:
    """600 users, seed 3: built once per module (nothing mutates it but a test's own copy)."""
    return Graph(600, seed=3)


@pytest.fixture
def sandbox(graph: Graph) -> Sandbox:
    """The sandbox over ``graph``, on a fake clock, with the test credentials."""
    return Sandbox(graph, CONFIG, clock=FakeClock())


@pytest.fixture(scope="module")
def hostile() -> Graph:
    """The same world with 2% hostile users (hostile ids and profile values)."""
    return Graph(600, seed=3, hostile=0.02)
