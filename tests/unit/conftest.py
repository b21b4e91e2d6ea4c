"""The unit layer: pure functions and in-process objects.

No broker, no Milvus, no started process, and no network: every test here runs with inet sockets
blocked (pytest-socket; unix sockets stay, asyncio's self-pipe is one), so a test that reaches for a
server fails instead of quietly depending on one. `make test-unit` runs this layer alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_socket

from tests.support.layers import mark_layer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mark_layer(items, Path(__file__).parent, "unit")


@pytest.fixture(autouse=True)
def _no_inet_sockets() -> Iterator[None]:
    """Blocks inet sockets for each unit test, in whichever run it is collected (`make test` too)."""
    pytest_socket.disable_socket(allow_unix_socket=True)
    try:
        yield
    finally:
        pytest_socket.enable_socket()
