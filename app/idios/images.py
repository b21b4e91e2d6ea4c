"""Safe download and decoding of client-supplied images.

`ImageFetcher` downloads with a size cap, a wall-clock limit and its own
redirect handling; every connection goes only to addresses `AddressGuard`
accepts (the checked address is the one connected to, and the peer actually
reached is checked again). Decoding lives in `idios.decoding`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
from PIL import Image

from .config import Settings
from .decoding import decode_image
from .errors import IdiosError, Invalid, TooLarge
from .netguard import AddressGuard, validate_url

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


# ---------------------------------------------------------------- fetching


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses the guard accepts, and to exactly the address checked."""

    def __init__(self, guard: AddressGuard) -> None:
        self._guard = guard
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._guard.check_host(host, port)
        error: Exception | None = None
        for ip in addresses:
            try:
                return await self._backend.connect_tcp(
                    ip, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error or httpcore.ConnectError(f"no address to connect to for {host}")

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool that uses `_GuardedBackend` (no proxies)."""

    def __init__(self, guard: AddressGuard) -> None:
        # SSL_CERT_FILE / SSL_CERT_DIR are honoured; proxy variables are not.
        ssl_context = httpx.create_ssl_context(trust_env=True)
        super().__init__(verify=ssl_context, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_GuardedBackend(guard),
        )


class ImageFetcher:
    """Downloads image urls safely; one instance (and connection pool) per process."""

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.guard = AddressGuard(settings.url_allow_networks)
        # A custom transport (tests) has no real socket, so the peer check only applies to ours.
        self._check_peer = transport is None
        self.client = httpx.AsyncClient(
            transport=transport or _GuardedTransport(self.guard),
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(settings.download_timeout, connect=settings.connect_timeout),
            headers={"User-Agent": settings.user_agent, "Accept": "image/*", "Accept-Encoding": "identity"},
        )

    async def __aenter__(self) -> ImageFetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()

    async def fetch(self, url: str) -> bytes:
        """Download `url` and return the raw bytes, or raise an `IdiosError`."""
        limit = self.settings.download_timeout
        try:
            async with asyncio.timeout(limit):
                return await self._fetch(url)
        except (TimeoutError, httpx.TimeoutException):
            raise Invalid(
                f"the image server was too slow (the download must finish within {limit:g} s)",
                type="download_timeout",
            ) from None
        except IdiosError:
            raise
        except httpx.HTTPError as exc:
            raise Invalid(f"could not download the image: {_describe(exc)}", type="download_failed") from None
        except (httpx.InvalidURL, OSError, ValueError) as exc:
            raise Invalid(f"could not download the image: {_describe(exc)}", type="download_failed") from None

    async def _fetch(self, url: str) -> bytes:
        current = validate_url(url)
        seen = {current}
        for _hop in range(self.settings.max_redirects + 1):
            response = await self.client.send(self.client.build_request("GET", current), stream=True)
            try:
                self._verify_peer(response)
                if response.status_code in REDIRECT_STATUSES:
                    location = response.headers.get("location")
                    if not location:
                        raise Invalid(
                            f"the image server answered HTTP {response.status_code} without a Location",
                            type="download_failed",
                        )
                    current = validate_url(str(response.url.join(location.strip())))
                    if current in seen:
                        raise Invalid("the image url redirects in a loop", type="too_many_redirects")
                    seen.add(current)
                    continue
                if not 200 <= response.status_code < 300:
                    raise Invalid(f"the image server answered HTTP {response.status_code}", type="download_failed")
                return await self._read_body(response)
            finally:
                await response.aclose()
        raise Invalid(
            f"the image url redirects more than {self.settings.max_redirects} times", type="too_many_redirects"
        )

    def _verify_peer(self, response: httpx.Response) -> None:
        """Check the address the connection actually reached (defeats DNS rebinding)."""
        if not self._check_peer:
            return
        stream = response.extensions.get("network_stream")
        peer = stream.get_extra_info("server_addr") if stream is not None else None
        if not peer:
            raise Invalid("could not verify the address of the image server", type="url_forbidden_address")
        self.guard.check_address(str(peer[0]))

    async def _read_body(self, response: httpx.Response) -> bytes:
        limit = self.settings.max_download_bytes
        declared = response.headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise _too_large(limit)
        return bytes(body)


def _too_large(limit: int) -> TooLarge:
    return TooLarge(f"the image is larger than the {_size(limit)} download limit", type="download_too_large")


def _size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):g} MiB"
    if n >= 1024:
        return f"{n / 1024:g} KiB"
    return f"{n} bytes"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def load_image(fetcher: ImageFetcher, url: str, settings: Settings) -> Image.Image:
    """Fetch `url` and decode it in a worker thread."""
    data = await fetcher.fetch(url)
    return await asyncio.to_thread(decode_image, data, settings)


__all__ = ["ImageFetcher", "decode_image", "load_image"]
