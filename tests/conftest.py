"""The whole suite's configuration: light on purpose, it starts nothing.

The layers (unit, integration, e2e, deploy) each have a conftest of their own; the fixtures more than
one of them uses are in tests/support/fixtures.py and start only when a test asks for them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.support.fixtures"]

# Every model load of the suite, in-process or in a started worker, shares one set of exported
# ONNX graphs: the first load exports them (about 30 s), the others reuse them.
os.environ.setdefault("IDIOS_ONNX_DIR", str(Path(__file__).resolve().parent.parent / ".cache" / "onnx"))


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/infra checks a real deployment; it is collected only when hosts are named (--hosts=...)."""
    if collection_path.name == "infra" and collection_path.parent == Path(__file__).parent:
        try:
            return not config.getoption("hosts")
        except ValueError:  # pytest-testinfra is not installed
            return True
    return None
