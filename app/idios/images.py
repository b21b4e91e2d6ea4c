"""Safe download and decoding of client-supplied images.

`ImageFetcher` downloads with a size cap, a wall-clock limit and its own
redirect handling; a Content-Encoding is undone here, a bounded step at a time,
so the cap holds for the decoded body; every connection goes only to addresses `AddressGuard`
accepts (the checked address is the one connected to, and the peer actually
reached is checked again). Decoding lives in `idios.decoding`.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import zlib
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, Protocol

import httpcore
import httpx

from .config import Settings
from .decoding import decode_image
from .errors import IdiosError, Invalid, TooLarge
from .netguard import AddressGuard, validate_url

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


# ---------------------------------------------------------------- content encodings

# Each decoder call makes at most about this much output, so a compressed bomb is inflated no more
# than a step past the download limit (brotli's buffer may overshoot its limit up to about twice).
DECODE_STEP = 128 * 1024
# More stacked encodings than this is no real server's answer, and each one costs a decoder's memory.
MAX_ENCODINGS = 3
# RFC 9659: zstd content coding uses windows of at most 8 MiB; larger frames are refused instead of
# letting a frame header make the decoder allocate up to 2 GiB.
ZSTD_WINDOW_LOG_MAX = 23
_GZIP_MAGIC = b"\x1f\x8b"


class _Decoder(Protocol):
    name: str

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Pieces of output for `data`, each about `DECODE_STEP` bytes at most."""

    def finish(self) -> Iterator[bytes]:
        """The output left at the end of the body; raises if the stream is truncated."""


def _corrupt(name: str, extra: str = "") -> Invalid:
    return Invalid(f"the image server sent a corrupt or truncated {name} body{extra}", type="download_failed")


def _unsupported(name: str, why: str = "is not supported") -> Invalid:
    return Invalid(f"the image server sent Content-Encoding {name!r}, which {why}", type="download_encoding")


class _ZlibDecoder:
    """gzip (members one after another, as RFC 1952 allows) and deflate (zlib-wrapped or raw)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._gzip = name == "gzip"
        self._obj = self._new()
        self._started = False
        self._after_end = b""  # bytes after a gzip member: the start of another member, or trailing junk
        self._ignore_rest = False

    def _new(self, raw: bool = False) -> Any:
        return zlib.decompressobj(16 + zlib.MAX_WBITS if self._gzip else (-zlib.MAX_WBITS if raw else zlib.MAX_WBITS))

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            yield from self._feed(data)
        except zlib.error:
            raise _corrupt(self.name) from None

    def _feed(self, data: bytes) -> Iterator[bytes]:
        while data and not self._ignore_rest:
            if self._obj.eof:
                data = self._after_end + data
                if len(data) < len(_GZIP_MAGIC):
                    self._after_end = data
                    return
                self._after_end = b""
                if not (self._gzip and data.startswith(_GZIP_MAGIC)):
                    self._ignore_rest = True  # trailing junk after the stream, as httpx ignores it
                    return
                self._obj = self._new()
            try:
                out = self._obj.decompress(data, DECODE_STEP)
            except zlib.error:
                if self._started or self._gzip:
                    raise
                # "deflate" should be zlib-wrapped, but some servers send raw deflate (as httpx allows).
                self._obj = self._new(raw=True)
                out = self._obj.decompress(data, DECODE_STEP)
            self._started = True
            if out:
                yield out
            # Unread input waits in unconsumed_tail; a full step may leave output inside zlib too.
            data = self._obj.unconsumed_tail
            while not data and len(out) == DECODE_STEP and not self._obj.eof:
                out = self._obj.decompress(b"", DECODE_STEP)
                if out:
                    yield out
                data = self._obj.unconsumed_tail
            if self._obj.eof:
                data = self._obj.unused_data + data

    def finish(self) -> Iterator[bytes]:
        if not self._obj.eof:
            raise _corrupt(self.name)
        return iter(())


class _BrotliDecoder:
    """brotli, through a `Decompressor` whose `process` takes `output_buffer_limit` (brotli >= 1.2)."""

    name = "br"

    def __init__(self, module: Any) -> None:
        self._module = module
        self._obj = module.Decompressor()

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._obj.is_finished():
            return  # trailing junk after the stream is ignored
        try:
            out = self._obj.process(data, output_buffer_limit=DECODE_STEP)
            # Output can remain even once the decoder accepts input again: drain it until none comes.
            while True:
                if out:
                    yield out
                if self._obj.is_finished() or (not out and self._obj.can_accept_more_data()):
                    return
                stalled = not out
                out = self._obj.process(b"", output_buffer_limit=DECODE_STEP)
                if stalled and not out:
                    raise _corrupt(self.name)  # neither output nor room for input: never loop on it
        except self._module.error:
            raise _corrupt(self.name) from None

    def finish(self) -> Iterator[bytes]:
        if not self._obj.is_finished():
            raise _corrupt(self.name)
        return iter(())


class _ZstdDecoder:
    """zstd frames one after another (RFC 8878), through `compression.zstd` (or its backport)."""

    name = "zstd"

    def __init__(self, module: Any) -> None:
        self._module = module
        self._obj = self._new()
        self._fed = False

    def _new(self) -> Any:
        options = {self._module.DecompressionParameter.window_log_max: ZSTD_WINDOW_LOG_MAX}
        return self._module.ZstdDecompressor(options=options)

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            while data:
                if self._obj.eof:
                    self._obj = self._new()
                self._fed = True
                out = self._obj.decompress(data, DECODE_STEP)
                if out:
                    yield out
                while not self._obj.eof and not self._obj.needs_input:
                    out = self._obj.decompress(b"", DECODE_STEP)
                    if out:
                        yield out
                data = self._obj.unused_data if self._obj.eof else b""
        except (self._module.ZstdError, EOFError):
            raise _corrupt(self.name, f" (or one needing over a {1 << ZSTD_WINDOW_LOG_MAX >> 20} MiB window)") from None

    def finish(self) -> Iterator[bytes]:
        if not (self._fed and self._obj.eof):
            raise _corrupt(self.name)
        return iter(())


@functools.cache
def _brotli_module() -> Any | None:
    """brotli or brotlicffi, if installed and able to bound its output; None otherwise."""
    for name in ("brotli", "brotlicffi"):
        try:
            module = importlib.import_module(name)
            module.Decompressor().process(b"", output_buffer_limit=1)
        except (ImportError, TypeError, AttributeError):
            continue
        return module
    return None


@functools.cache
def _zstd_module() -> Any | None:
    for name in ("compression.zstd", "backports.zstd"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def _decoder(token: str) -> _Decoder:
    name = token.strip().lower()
    if name in ("gzip", "x-gzip"):
        return _ZlibDecoder("gzip")
    if name == "deflate":
        return _ZlibDecoder("deflate")
    if name == "br":
        module = _brotli_module()
        if module is None:
            raise _unsupported(token, "cannot be decoded here within the download limit (brotli >= 1.2 is needed)")
        return _BrotliDecoder(module)
    if name == "zstd":
        module = _zstd_module()
        if module is None:
            raise _unsupported(token, "cannot be decoded here (backports.zstd is needed)")
        return _ZstdDecoder(module)
    raise _unsupported(token)


class ContentDecoding:
    """Undoes a response's Content-Encoding (stacked ones too) with each layer's output bounded.

    Every layer's total output, not only the last one's, counts against `limit`: a gzip inside a
    gzip must not inflate its inner layer unbounded either.
    """

    def __init__(self, encodings: Iterable[str], limit: int) -> None:
        tokens = [token.strip() for token in encodings]
        tokens = [token for token in tokens if token and token.lower() != "identity"]
        if len(tokens) > MAX_ENCODINGS:
            raise Invalid(
                f"the image server stacked {len(tokens)} content encodings (at most {MAX_ENCODINGS} are decoded)",
                type="download_encoding",
            )
        # Encodings are listed in the order they were applied: undo the last one first.
        self._layers = [_decoder(token) for token in reversed(tokens)]
        self._produced = [0] * len(self._layers)
        self._limit = limit

    def feed(self, raw: bytes) -> Iterator[bytes]:
        return self._through(0, raw)

    def finish(self) -> Iterator[bytes]:
        for index, layer in enumerate(self._layers):
            for out in layer.finish():
                yield from self._counted_onwards(index, out)

    def _through(self, index: int, data: bytes) -> Iterator[bytes]:
        if index == len(self._layers):
            yield data
            return
        for out in self._layers[index].feed(data):
            yield from self._counted_onwards(index, out)

    def _counted_onwards(self, index: int, out: bytes) -> Iterator[bytes]:
        self._produced[index] += len(out)
        if self._produced[index] > self._limit:
            raise _too_large(self._limit)
        yield from self._through(index + 1, out)


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
        self.guard = AddressGuard(settings.url_allow_networks, dns_timeout=settings.dns_timeout)
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
        """The body, decoded from its Content-Encoding, refused as soon as it passes the download limit.

        httpx's own decoding inflates a whole network read at once (a 64 KiB brotli read can make
        gigabytes), so the raw bytes are read here and inflated a bounded step at a time.
        """
        limit = self.settings.max_download_bytes
        declared = response.headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        if response.is_stream_consumed:
            # A transport that hands over a response already read (httpx.MockTransport): httpx decoded it.
            encodings: list[str] = []
            chunks: AsyncIterator[bytes] = _once(response.content)
        else:
            encodings = response.headers.get_list("content-encoding", split_commas=True)
            chunks = response.aiter_raw()
        decoding = ContentDecoding(encodings, limit)
        body = bytearray()
        received = 0
        async for raw in chunks:
            received += len(raw)
            if received > limit:
                raise _too_large(limit)
            for piece in decoding.feed(raw):
                body += piece
                if len(body) > limit:
                    raise _too_large(limit)
        for piece in decoding.finish():
            body += piece
            if len(body) > limit:
                raise _too_large(limit)
        return bytes(body)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


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


__all__ = ["ImageFetcher", "decode_image"]
