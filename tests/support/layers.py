"""The suite's four layers: each directory's conftest marks its own tests with the layer's name."""

from __future__ import annotations

from pathlib import Path

import pytest


def mark_layer(items: list[pytest.Item], directory: Path, name: str) -> None:
    """Add the marker `name` to the collected items under `directory` (the hook sees the whole session's)."""
    marker = getattr(pytest.mark, name)
    for item in items:
        if item.path.is_relative_to(directory):
            item.add_marker(marker)
