"""The private-address guard through the system resolver: numeric and loopback host names."""

from __future__ import annotations

import pytest

from idios.errors import Invalid
from idios.netguard import (
    AddressGuard,
)

# ---------------------------------------------------------------- check_host


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.10",
        "169.254.169.254",
        "::1",
        "[::1]",
        "::ffff:127.0.0.1",
        "0.0.0.0",
        "100.64.0.1",
        "2130706433",
        "0x7f.0.0.1",
        "127.1",
        "localhost",
    ],
)
async def test_check_host_refuses(host: str) -> None:
    with pytest.raises(Invalid) as info:
        await AddressGuard().check_host(host, 80)
    assert info.value.type == "url_forbidden_address"
    assert info.value.status == 422


async def test_check_host_allow_networks() -> None:
    guard = AddressGuard(["127.0.0.0/8"])
    assert await guard.check_host("127.0.0.2", 80) == ["127.0.0.2"]
    assert await guard.check_host("2130706433", 80) == ["127.0.0.1"]
