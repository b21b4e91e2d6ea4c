"""The end-to-end layer: whole stacks (`idios serve`, `idios api` with workers) as processes, the
hostile corpus, faults, network partitions, the browser, schemathesis and the fuzz targets."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.layers import mark_layer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mark_layer(items, Path(__file__).parent, "e2e")


@pytest.fixture(scope="session", autouse=True)
def _exported_graphs(onnx_graphs: None) -> None:
    """Export the ONNX graphs before the first stack starts, rather than inside its wait for workers."""
