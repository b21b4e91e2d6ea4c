"""testinfra checks of a REAL deployment; they never run in the normal suite.

    IDIOS_DOMAIN=idios.example.net pytest tests/deploy/infra \\
      --hosts=ssh://deploy@203.0.113.10,ssh://deploy@203.0.113.11,ssh://deploy@203.0.113.21

or with the Ansible inventory: --hosts='ansible://all' --ansible-inventory=infra/ansible/inventory/production.yml.
Without --hosts every test here is skipped (testinfra would otherwise check this machine).
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        hosts = config.getoption("hosts")
    except ValueError:  # pytest-testinfra is not installed
        hosts = None
    if hosts:
        return
    skip = pytest.mark.skip(reason="checks a real deployment: pytest tests/deploy/infra --hosts=ssh://user@host,...")
    for item in items:
        if "tests/deploy/infra/" in item.nodeid:
            item.add_marker(skip)
