"""Url validation and the private-address guard, with DNS answered by the test (no traffic at all)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idios.config import Settings
from idios.errors import Invalid
from idios.images import ImageFetcher
from idios.limits import URL_MAX_CHARS
from idios.netguard import (
    DNS_THREADS,
    AddressGuard,
    _checked_by_httpx,
    _is_plain,
    validate_url,
)

# ---------------------------------------------------------------- validate_url


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/a.jpg",
        "https://example.com/a.jpg?x=1&y=2#frag",
        'http://example.com/"quoted"/it\'s.jpg',
        "http://example.com/back\\slash.jpg",
        "https://example.com/ünïcødé/猫.png",
        "https://bücher.example/a.png",
        "http://example.com/100%25/%zz/%E2%9C%93.jpg",
        "http://example.com/a b.jpg",
        "HTTP://EXAMPLE.COM/A.JPG",
        "http://93.184.216.34:8080/x.png",
        "http://[2606:4700::1111]/x.png",
    ],
)
def test_valid_urls_pass_unchanged(url: str) -> None:
    assert validate_url(url) == url


def _outcome(check: Any, url: str) -> str:
    try:
        return f"ok {check(url)}"
    except Invalid as exc:
        return f"refused {exc.type}"


# Pieces of urls, plain and odd, that the generated urls below are made of.
_SCHEMES = ["http://", "https://", "HTTP://", "ftp://", "http:/", "http:", ""]
_HOSTS = [
    "example.com",
    "a",
    "-",
    ".",
    "_x_",
    "127.0.0.3",
    "999.1.1.1",
    "1a2b3c4",
    "1234567",
    "0.0.0.0",
    "a..b",
    "xn--bcher-kva.example",
    "xn--zz.com",  # an A-label that does not decode: httpx refuses it
    "a.xn--zz",
    "[::1]",
    "user:pw@host",
    "@host",
    "",
    "ex ample",
    "EXAMPLE.com",
    "bücher.de",
]
_PORTS = ["", ":80", ":0", ":65535", ":65536", ":99999", ":00080", ":", ":8a", ":80:90"]
_RESTS = [
    "",
    "/",
    "/a.jpg",
    "?q=1",
    "#f",
    "/a?b#c#d",
    "/%zz%",
    "/a b",
    "/\\x",
    '/"q"',
    "/ü",
    "/~!$&'()*+,;=:@",
    "/\x7f",
    "/\t",
]


# 1,000 examples keep the unit layer quick; the fuzz target `url` (tests/e2e/fuzz) checks the same
# property, guided by coverage, on every `make test`.
@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(_SCHEMES), st.sampled_from(_HOSTS), st.sampled_from(_PORTS), st.lists(st.sampled_from(_RESTS)))
def test_plain_urls_skip_the_parse_with_the_same_outcome(scheme: str, host: str, port: str, rest: list[str]) -> None:
    """`validate_url` skips httpx's parse for plain urls: every url gets what httpx's checks give."""
    url = scheme + host + port + "".join(rest)
    assert _outcome(validate_url, url) == _outcome(lambda u: _checked_by_httpx(u.strip()), url), url


@pytest.mark.parametrize("url", ["http://example.com/a.jpg", "https://h.example:8443/x?y=1#z", "http://1a2b.c/"])
def test_common_urls_are_plain(url: str) -> None:
    """The fast way is taken for the urls restores and adds carry (else it saves nothing)."""
    assert _is_plain(url)


@pytest.mark.parametrize("url", ["http://xn--zz.com/a.jpg", "HTTP://xn--zz.com/a.jpg", "https://xn--zz.example:8080/"])
def test_undecodable_idna_hosts_are_refused(url: str) -> None:
    """Both ways refuse a host httpx cannot decode, with our 422 (the fast way accepted it; the other
    let idna's own error escape)."""
    with pytest.raises(Invalid) as info:
        validate_url(url)
    assert info.value.type == "url_host" and "Invalid A-label" in info.value.msg


def test_surrounding_whitespace_is_stripped() -> None:
    assert validate_url("  \thttp://example.com/a.jpg \n") == "http://example.com/a.jpg"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.jpg",
        "file:///etc/passwd",
        "gopher://example.com/",
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "example.com/a.jpg",
        "//example.com/a.jpg",
        "",
    ],
)
def test_scheme_refused(url: str) -> None:
    with pytest.raises(Invalid) as info:
        validate_url(url)
    assert info.value.type == "url_scheme"
    assert info.value.status == 422


@pytest.mark.parametrize("url", ["http://user:pw@example.com/a.jpg", "https://user@example.com/a.jpg"])
def test_credentials_refused(url: str) -> None:
    with pytest.raises(Invalid) as info:
        validate_url(url)
    assert info.value.type == "url_credentials"
    assert info.value.status == 422


@pytest.mark.parametrize("url", ["http://", "http:///a.jpg", "https://:443/a.jpg", "http://[::1/x"])
def test_missing_host_refused(url: str) -> None:
    with pytest.raises(Invalid) as info:
        validate_url(url)
    assert info.value.type == "url_host"
    assert info.value.status == 422


def test_too_long_refused() -> None:
    base = "http://example.com/"
    ok = base + "a" * (URL_MAX_CHARS - len(base))
    assert validate_url(ok) == ok
    with pytest.raises(Invalid) as info:
        validate_url(ok + "a")
    assert info.value.type == "url_too_long"
    assert info.value.status == 422
    assert str(URL_MAX_CHARS) in info.value.msg


# ---------------------------------------------------------------- check_address


FORBIDDEN = [
    "127.0.0.1",
    "127.1.2.3",
    "10.0.0.1",
    "10.255.1.2",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "100.127.255.254",
    "0.0.0.0",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "fe80::1",
    "fc00::1",
    "ff02::1",
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b::10.0.0.1",  # NAT64 of a private address
    "64:ff9b::127.0.0.1",
    "[::1]",
]

# Refused since: allowed before, or refused only by some Python versions' tables.
NOT_PUBLIC_SPECIAL = [
    "fec0::1",  # site-local (deprecated)
    "feff:ffff::1",  # the top of fec0::/10
    "64:ff9b:1::808:808",  # local-use NAT64: the embedded IPv4 address cannot be told
    "64:ff9b:1:ffff::1",
    "3fff::1",  # documentation (RFC 9637)
    "3fff:fff:ffff::1",
    "5f00::1",  # SRv6 SIDs
    "192.88.99.1",  # 6to4 relay anycast (deprecated)
]


@pytest.mark.parametrize("ip", NOT_PUBLIC_SPECIAL)
def test_special_ranges_refused(ip: str) -> None:
    with pytest.raises(Invalid) as info:
        AddressGuard().check_address(ip)
    assert info.value.type == "url_forbidden_address"


@pytest.mark.parametrize("ip", ["64:ff9b::808:808", "64:ff9b::93.184.216.34", "64:ff9b::1.1.1.1"])
def test_nat64_of_public_ipv4_allowed(ip: str) -> None:
    """IPv6-only hosts behind DNS64 get 64:ff9b::/96 answers for every IPv4-only name."""
    AddressGuard().check_address(ip)


def test_nat64_allowed_by_the_ipv4_network_it_embeds() -> None:
    guard = AddressGuard(["10.0.0.0/8"])
    guard.check_address("64:ff9b::10.1.2.3")
    with pytest.raises(Invalid):
        guard.check_address("64:ff9b::192.168.0.1")


@pytest.mark.parametrize("ip", FORBIDDEN)
def test_forbidden_addresses(ip: str) -> None:
    with pytest.raises(Invalid) as info:
        AddressGuard().check_address(ip)
    assert info.value.type == "url_forbidden_address"
    assert info.value.status == 422


@pytest.mark.parametrize("ip", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:93.184.216.34"])
def test_public_addresses_pass(ip: str) -> None:
    AddressGuard().check_address(ip)


def test_not_an_address_refused() -> None:
    with pytest.raises(Invalid) as info:
        AddressGuard().check_address("example.com")
    assert info.value.type == "url_forbidden_address"


def test_allow_networks() -> None:
    guard = AddressGuard(["127.0.0.0/8", "fd00::/8"])
    guard.check_address("127.0.0.1")
    guard.check_address("127.9.9.9")
    guard.check_address("::ffff:127.0.0.1")
    guard.check_address("fd12::1")
    for ip in ("10.0.0.1", "::1", "169.254.169.254"):
        with pytest.raises(Invalid):
            guard.check_address(ip)


def test_allow_single_host() -> None:
    guard = AddressGuard(["127.0.0.2/32"])
    guard.check_address("127.0.0.2")
    with pytest.raises(Invalid):
        guard.check_address("127.0.0.3")


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Answers for host names, so that no real DNS query is made."""
    answers: dict[str, list[str]] = {}

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        result: list[tuple[Any, ...]] = []
        for ip in answers[host]:
            if ":" in ip:
                result.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0)))
            else:
                result.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)))
        return result

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


async def test_check_host_public_name(fake_dns: dict[str, list[str]]) -> None:
    fake_dns["images.example"] = ["93.184.216.34", "2606:4700::1111", "93.184.216.34"]
    assert await AddressGuard().check_host("images.example", 443) == ["93.184.216.34", "2606:4700::1111"]


async def test_check_host_any_private_address_refuses(fake_dns: dict[str, list[str]]) -> None:
    fake_dns["mixed.example"] = ["93.184.216.34", "10.0.0.5"]
    with pytest.raises(Invalid) as info:
        await AddressGuard().check_host("mixed.example", 80)
    assert info.value.type == "url_forbidden_address"


async def test_check_host_metadata_name_refused(fake_dns: dict[str, list[str]]) -> None:
    fake_dns["metadata.example"] = ["169.254.169.254"]
    with pytest.raises(Invalid):
        await AddressGuard().check_host("metadata.example", 80)


async def test_check_host_unresolvable(fake_dns: dict[str, list[str]]) -> None:
    with pytest.raises(Invalid) as info:
        await AddressGuard().check_host("nowhere.example", 80)
    assert info.value.type == "url_unresolvable"
    assert info.value.status == 422


async def test_check_host_nat64_name(fake_dns: dict[str, list[str]]) -> None:
    fake_dns["v4only.example"] = ["64:ff9b::5db8:d822"]  # DNS64's answer for 93.184.216.34
    assert await AddressGuard().check_host("v4only.example", 80) == ["64:ff9b::5db8:d822"]
    fake_dns["internal.example"] = ["64:ff9b::a00:5"]  # 10.0.0.5
    with pytest.raises(Invalid) as info:
        await AddressGuard().check_host("internal.example", 80)
    assert info.value.type == "url_forbidden_address"


@pytest.fixture
def hanging_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A resolver whose lookups block until the test ends; yields the names asked for."""
    release = threading.Event()
    asked: list[str] = []

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        asked.append(host)
        release.wait(30)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield asked
    release.set()


async def test_hanging_dns_times_out_and_spares_the_default_pool(hanging_dns: list[str]) -> None:
    """Names that never resolve must not hold the default thread pool (store calls and decodes use
    it), and each lookup is given up after the DNS timeout with a 422."""
    guard = AddressGuard(dns_timeout=0.5)
    default_threads = asyncio.get_running_loop()._default_executor  # type: ignore[attr-defined]
    default_size = default_threads._max_workers if default_threads else min(32, (os.cpu_count() or 1) + 4)
    lookups = [asyncio.ensure_future(guard.check_host(f"h{i}.example", 80)) for i in range(default_size + 8)]
    await asyncio.sleep(0.1)
    # Every default-pool thread is still free: as many blocking calls as it has threads all run at once.
    started = threading.Barrier(default_size, timeout=5)
    await asyncio.wait_for(asyncio.gather(*(asyncio.to_thread(started.wait) for _ in range(default_size))), 10)
    results = await asyncio.gather(*lookups, return_exceptions=True)
    assert all(isinstance(r, Invalid) and r.type == "url_unresolvable" and r.status == 422 for r in results)
    assert "could not be resolved within 0.5 s" in str(results[0])
    # The resolver's own pool is bounded: the lookups beyond its threads never started.
    assert len(hanging_dns) == DNS_THREADS


async def test_dns_timeout_setting_reaches_the_fetcher(hanging_dns: list[str]) -> None:
    settings = Settings(_env_file=None, dns_timeout=0.3)  # type: ignore[call-arg]
    async with ImageFetcher(settings) as fetcher:
        with pytest.raises(Invalid) as info:
            await fetcher.fetch("http://never.example/cat.jpg")
    assert info.value.type == "url_unresolvable"
    assert "0.3 s" in info.value.msg
