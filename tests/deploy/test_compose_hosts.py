"""The compose stacks name the hosts their API answers (the API listens on 0.0.0.0 in its container)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("stack", "names"),
    [("dev", ["localhost", "api"]), ("minimal", ["idios.example.net"]), ("frontend", ["idios.example.net", "api"])],
)
def test_compose_stacks_name_the_hosts_their_api_answers(
    stack: str, names: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API listens on 0.0.0.0 in its container, where an empty list would accept any Host."""
    from idios.api.guard import host_patterns

    from tests.deploy.test_compose import container_env, settings_from

    settings = settings_from(container_env(stack, "api"), monkeypatch)
    assert settings.host == "0.0.0.0"
    assert host_patterns(settings) == ["localhost", "127.0.0.1", "[::1]", *names]
