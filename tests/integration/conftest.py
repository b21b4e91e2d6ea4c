"""The integration layer: one real component at a time (the store on Milvus, the AMQP transport and
worker on RabbitMQ, the image fetcher on a loopback HTTP server, the models with seeded weights)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.layers import mark_layer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mark_layer(items, Path(__file__).parent, "integration")


@pytest.fixture(scope="session", autouse=True)
def _exported_graphs(onnx_graphs: None) -> None:
    """The models load from exported ONNX graphs: export them once, before the first test here."""
