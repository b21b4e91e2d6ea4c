"""The deployment layer: compose files, Traefik, Ansible, Terraform, the machine setup script, and
(only with --hosts) the testinfra checks of a real deployment in infra/."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.layers import mark_layer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mark_layer(items, Path(__file__).parent, "deploy")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """infra/ checks a real deployment; it is collected only when hosts are named (--hosts=...)."""
    if collection_path.name == "infra" and collection_path.parent == Path(__file__).parent:
        try:
            return not config.getoption("hosts")
        except ValueError:  # pytest-testinfra is not installed
            return True
    return None
