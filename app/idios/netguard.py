"""Validation of image urls and a guard against fetching from internal addresses.

Image urls come from clients, so a fetch must never reach the service's own
network (loopback, private ranges, cloud metadata at 169.254.169.254, ...).
`validate_url` refuses urls that are malformed or unsafe on their face;
`AddressGuard` refuses hosts that resolve to a non-public address, and checks
the address a connection actually reached (against DNS rebinding). Names are
resolved in a small thread pool of their own, within `dns_timeout` seconds.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from .errors import Invalid
from .limits import URL_MAX_CHARS

ALLOWED_SCHEMES = ("http", "https")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# NAT64's well-known prefix (RFC 6052): a DNS64 resolver answers IPv6-only hosts with these for
# IPv4-only names. Python calls the range reserved; such an address is judged by the IPv4 one inside.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
# Ranges not public that Python 3.11's is_private/is_global/is_reserved miss (or newer Pythons
# changed): refused on every Python. 64:ff9b:1::/48 is local-use NAT64 (RFC 8215), whose embedded
# IPv4 address sits where each network chooses, so it cannot be judged and is refused.
_NOT_PUBLIC: tuple[IPNetwork, ...] = (
    ipaddress.IPv4Network("192.88.99.0/24"),  # 6to4 relay anycast, deprecated (RFC 7526)
    ipaddress.IPv6Network("fec0::/10"),  # site-local, deprecated (RFC 3879)
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # local-use NAT64 (RFC 8215)
    ipaddress.IPv6Network("3fff::/20"),  # documentation (RFC 9637)
    ipaddress.IPv6Network("5f00::/16"),  # SRv6 SIDs (RFC 9602)
)

# Host names are resolved in threads of their own: a name that never resolves holds one of these,
# not a thread of the default pool that store calls and decodes share.
DNS_THREADS = 8
_dns_pool: ThreadPoolExecutor | None = None


def validate_url(url: str) -> str:
    """Return the url stripped of surrounding whitespace, or raise `Invalid`.

    Only http(s) urls with a host, without credentials and at most 2,083
    characters long are accepted; anything else a url may hold is kept as is,
    since the url is the storage key.
    """
    if not isinstance(url, str):
        raise Invalid("url must be a string", type="url_scheme")
    url = url.strip()
    if len(url) > URL_MAX_CHARS:
        raise Invalid(f"url is longer than {URL_MAX_CHARS} characters ({len(url)})", type="url_too_long")
    if _is_plain(url):
        return url
    return _checked_by_httpx(url)


# httpx.URL takes about 25 us to parse a url: most of a restore's cost per row on the API. A url of
# the common plain shape below (lowercase http(s), an ASCII host, a port, printable ASCII after it)
# is one that httpx accepts with a host and no credentials, so it skips the parse; any other url gets
# it. tests/unit/test_netguard.py checks that both ways agree.
_PLAIN_URL = re.compile(r"https?://(?P<host>[a-z0-9._-]+)(?::(?P<port>[0-9]{1,5}))?(?:[/?#][\x21-\x7e]*)?", re.ASCII)
# httpx's own test for a host it then parses as an IPv4 address (its dots match any character).
_IPV4_STYLE_HOST = re.compile(r"[0-9]+.[0-9]+.[0-9]+.[0-9]+")


def _is_plain(url: str) -> bool:
    """Plain: the shape above, a host httpx does not read as IPv4 and no IDNA label ("xn--", which
    httpx decodes and may refuse), and a port that fits."""
    match = _PLAIN_URL.fullmatch(url)
    if not match:
        return False
    host = match["host"]
    return not _IPV4_STYLE_HOST.fullmatch(host) and "xn--" not in host and int(match["port"] or 0) <= 65535


def _checked_by_httpx(url: str) -> str:
    try:
        parsed = httpx.URL(url)
        host = parsed.host  # decodes IDNA labels, which may be invalid (idna.IDNAError, a UnicodeError)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise Invalid(f"url cannot be parsed: {exc}", type="url_host") from None
    if parsed.scheme not in ALLOWED_SCHEMES:
        shown = parsed.scheme or "none"
        raise Invalid(f"url scheme must be http or https, not {shown!r}", type="url_scheme")
    if parsed.userinfo:
        raise Invalid("url must not contain a user name or password", type="url_credentials")
    if not host:
        raise Invalid("url has no host", type="url_host")
    return url


def _parse_ip(value: str) -> IPAddress | None:
    value = value.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, Teredo, NAT64), if any."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def _is_public(addr: IPAddress) -> bool:
    if any(addr.version == net.version and addr in net for net in _NOT_PUBLIC):
        return False
    if (
        addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
        or not addr.is_global
    ):
        return False
    return not (isinstance(addr, ipaddress.IPv4Address) and addr in _SHARED)


class AddressGuard:
    """Refuses addresses that are not public unless they lie in `allow_networks`."""

    def __init__(self, allow_networks: Iterable[str] = (), *, dns_timeout: float = 5.0) -> None:
        self.allow_networks: list[IPNetwork] = [ipaddress.ip_network(net, strict=False) for net in allow_networks]
        self.dns_timeout = dns_timeout

    def _allowed(self, addr: IPAddress) -> bool:
        return any(addr.version == net.version and addr in net for net in self.allow_networks)

    def is_forbidden(self, addr: IPAddress) -> bool:
        if self._allowed(addr):
            return False
        if isinstance(addr, ipaddress.IPv6Address):
            embedded = _embedded_ipv4(addr)
            if embedded is not None:
                if addr.ipv4_mapped is not None or addr in _NAT64:
                    # A mapped address is the IPv4 address itself, public or not; a NAT64 one reaches it.
                    return self.is_forbidden(embedded)
                if self.is_forbidden(embedded):
                    return True
        return not _is_public(addr)

    def check_address(self, ip: str) -> None:
        """Raise `Invalid` unless `ip` (an IP literal) is public or allowed."""
        addr = _parse_ip(ip)
        if addr is None:
            raise Invalid(f"image url points to an unrecognised address {ip!r}", type="url_forbidden_address")
        if self.is_forbidden(addr):
            raise Invalid(
                f"image url points to a private or reserved address ({addr}), which is not allowed",
                type="url_forbidden_address",
            )

    async def check_host(self, host: str, port: int) -> list[str]:
        """Resolve `host` and return its addresses, refusing if any of them is forbidden.

        Every address is checked (not only the first) since the connection may
        use any of them.
        """
        literal = _parse_ip(host)
        if literal is not None:
            self.check_address(str(literal))
            return [str(literal)]
        name = host.strip()
        if not name:
            raise Invalid("image url has no host", type="url_host")
        try:
            async with asyncio.timeout(self.dns_timeout):
                infos = await _resolve(name, port)
        except TimeoutError:
            raise Invalid(
                f"image host {host!r} could not be resolved within {self.dns_timeout:g} s", type="url_unresolvable"
            ) from None
        except (OSError, UnicodeError, ValueError) as exc:
            raise Invalid(f"image host {host!r} could not be resolved", type="url_unresolvable") from exc
        addresses: list[str] = []
        for family, _type, _proto, _canon, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = str(sockaddr[0]).split("%")[0]
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise Invalid(f"image host {host!r} could not be resolved", type="url_unresolvable")
        for ip in addresses:
            self.check_address(ip)
        return addresses


async def _resolve(name: str, port: int) -> list[tuple[Any, ...]]:
    """`socket.getaddrinfo` in the resolver's own threads (as the event loop's getaddrinfo does in
    the default pool). A lookup given up on is cancelled if it has not started yet; one already
    running cannot be stopped and returns its thread when the system resolver gives up."""
    global _dns_pool
    if _dns_pool is None:
        _dns_pool = ThreadPoolExecutor(max_workers=DNS_THREADS, thread_name_prefix="idios-dns")
    lookup = functools.partial(socket.getaddrinfo, name, port, 0, socket.SOCK_STREAM)
    return await asyncio.get_running_loop().run_in_executor(_dns_pool, lookup)
