"""The end-to-end layer: whole stacks (`idios serve`, `idios api` with workers) as processes, the
hostile corpus, faults, network partitions, the browser, schemathesis and the fuzz targets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.layers import mark_layer
from tests.support.stacks import Stack, start_serve


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mark_layer(items, Path(__file__).parent, "e2e")


@pytest.fixture(scope="session", autouse=True)
def _exported_graphs(onnx_graphs: None) -> None:
    """Export the ONNX graphs before the first stack starts, rather than inside its wait for workers."""


@pytest.fixture(scope="module")
def serve(request: pytest.FixtureRequest, milvus_uri: str, artifacts: Path) -> Iterator[Stack]:
    """`idios serve` with vit_b32 and phash, one for the test module, its logs under its name."""
    log_dir = artifacts / f"{request.module.__name__.rpartition('.')[2]}-serve"
    log_dir.mkdir(exist_ok=True)
    stack = start_serve(milvus_uri, log_dir)
    yield stack
    stack.stop()
