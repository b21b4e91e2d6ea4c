"""The image fetcher against real local (127.0.0.x) HTTP servers: redirects, limits, slow servers,
refused addresses."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import pytest
from PIL import Image
from skimage import data as skdata

from idios.config import Settings
from idios.decoding import decode_image
from idios.errors import Invalid, TooLarge
from idios.images import ImageFetcher

from tests.support.imageserver import ImageServer
from tests.support.photos import encode

# ---------------------------------------------------------------- helpers


def make_settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(skdata.astronaut())  # 512 x 512 RGB


@pytest.fixture(scope="module")
def jpeg_bytes(astronaut: Image.Image) -> bytes:
    return encode(astronaut, "JPEG", quality=90)


@pytest.fixture
def settings() -> Settings:
    return make_settings()


# ---------------------------------------------------------------- fetching


@pytest.fixture
def server(jpeg_bytes: bytes) -> Iterator[ImageServer]:
    with ImageServer(host="127.0.0.2") as srv:
        srv.add("/cat.jpg", jpeg_bytes)
        yield srv


@pytest.fixture
def local_settings() -> Settings:
    return make_settings(url_allow_networks=["127.0.0.0/8"], download_timeout=5.0, connect_timeout=2.0)


async def test_fetch_ok(server: ImageServer, jpeg_bytes: bytes, local_settings: Settings) -> None:
    async with ImageFetcher(local_settings) as fetcher:
        assert await fetcher.fetch(server.url("/cat.jpg")) == jpeg_bytes
    headers = server.request_headers[-1]
    assert headers["user-agent"] == local_settings.user_agent
    assert headers["accept"] == "image/*"


class _ImportRecorder:
    """A finder first on sys.meta_path: records every import that is not answered by sys.modules."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        self.names.append(name)


async def test_downloads_search_for_no_module(server: ImageServer, jpeg_bytes: bytes, local_settings: Settings) -> None:
    """httpcore asks which event loop runs several times a download (`sniffio`); a missing module
    there is a failed import, a search of sys.path each time, on every download."""
    recorder = _ImportRecorder()
    async with ImageFetcher(local_settings) as fetcher:
        await fetcher.fetch(server.url("/cat.jpg"))  # first use imports what it needs
        sys.meta_path.insert(0, recorder)
        try:
            for _ in range(3):
                assert await fetcher.fetch(server.url("/cat.jpg")) == jpeg_bytes
        finally:
            sys.meta_path.remove(recorder)
    assert recorder.names == []


async def test_fetch_then_decode(server: ImageServer, local_settings: Settings) -> None:
    async with ImageFetcher(local_settings) as fetcher:
        img = decode_image(await fetcher.fetch(server.url("/cat.jpg")), local_settings)
    assert img.mode == "RGB" and img.size == (256, 256)


async def test_fetch_decimal_host(server: ImageServer, jpeg_bytes: bytes, local_settings: Settings) -> None:
    url = f"http://2130706434:{server.port}/cat.jpg"  # 127.0.0.2
    async with ImageFetcher(local_settings) as fetcher:
        assert await fetcher.fetch(url) == jpeg_bytes
    async with ImageFetcher(make_settings()) as fetcher:
        with pytest.raises(Invalid) as info:
            await fetcher.fetch(url)
    assert info.value.type == "url_forbidden_address"


async def test_fetch_loopback_refused_by_default(server: ImageServer) -> None:
    async with ImageFetcher(make_settings()) as fetcher:
        for url in (server.url("/cat.jpg"), f"http://localhost:{server.port}/cat.jpg"):
            with pytest.raises(Invalid) as info:
                await fetcher.fetch(url)
            assert info.value.type == "url_forbidden_address"
    assert server.requests == []


async def test_fetch_invalid_url(local_settings: Settings) -> None:
    async with ImageFetcher(local_settings) as fetcher:
        with pytest.raises(Invalid) as info:
            await fetcher.fetch("file:///etc/passwd")
    assert info.value.type == "url_scheme"


async def test_fetch_404(server: ImageServer, local_settings: Settings) -> None:
    async with ImageFetcher(local_settings) as fetcher:
        with pytest.raises(Invalid) as info:
            await fetcher.fetch(server.url("/missing.jpg"))
    assert info.value.type == "download_failed"
    assert info.value.status == 422
    assert "404" in info.value.msg


async def test_fetch_server_error(server: ImageServer, local_settings: Settings) -> None:
    server.add("/boom", b"oops", "text/plain", status=500)
    async with ImageFetcher(local_settings) as fetcher:
        with pytest.raises(Invalid) as info:
            await fetcher.fetch(server.url("/boom"))
    assert info.value.type == "download_failed" and "500" in info.value.msg


async def test_fetch_connection_refused(local_settings: Settings) -> None:
    with ImageServer(host="127.0.0.2") as srv:
        url = srv.url("/x.jpg")
    async with ImageFetcher(local_settings) as fetcher:
        with pytest.raises(Invalid) as info:
            await fetcher.fetch(url)
    assert info.value.type == "download_failed"


async def test_fetch_redirects(server: ImageServer, jpeg_bytes: bytes, local_settings: Settings) -> None:
    server.redirect("/one", "/two", status=301)
    server.redirect("/two", server.url("/cat.jpg"), status=307)
    async with ImageFetcher(local_settings) as fetcher:
        assert await fetcher.fetch(server.url("/one")) == jpeg_bytes
    assert server.requests == ["/one", "/two", "/cat.jpg"]


async def test_fetch_redirect_to_other_server(jpeg_bytes: bytes, local_settings: Settings) -> None:
    with ImageServer(host="127.0.0.2") as first, ImageServer(host="127.0.0.3") as second:
        second.add("/img.jpg", jpeg_bytes)
        first.redirect("/go", second.url("/img.jpg"))
        async with ImageFetcher(local_settings) as fetcher:
            assert await fetcher.fetch(first.url("/go")) == jpeg_bytes


async def test_fetch_redirect_to_forbidden_address(jpeg_bytes: bytes) -> None:
    settings = make_settings(url_allow_networks=["127.0.0.2/32"], download_timeout=5.0)
    with ImageServer(host="127.0.0.2") as first, ImageServer(host="127.0.0.3") as second:
        second.add("/img.jpg", jpeg_bytes)
        first.redirect("/go", second.url("/img.jpg"))
        first.redirect("/go-decimal", f"http://2130706435:{second.port}/img.jpg")
        async with ImageFetcher(settings) as fetcher:
            for path in ("/go", "/go-decimal"):
                with pytest.raises(Invalid) as info:
                    await fetcher.fetch(first.url(path))
                assert info.value.type == "url_forbidden_address"
        assert second.requests == []


async def test_fetch_redirect_to_bad_scheme(server: ImageServer, local_settings: Settings) -> None:
    server.redirect("/ftp", "ftp://127.0.0.2/cat.jpg")
    async with ImageFetcher(local_settings) as fetcher:
        with pytest.raises(Invalid) as info:
            await fetcher.fetch(server.url("/ftp"))
    assert info.value.type == "url_scheme"


async def test_fetch_redirect_loop(server: ImageServer, local_settings: Settings) -> None:
    server.redirect("/a", "/b")
    server.redirect("/b", "/a")
    server.redirect("/self", "/self")
    async with ImageFetcher(local_settings) as fetcher:
        for path in ("/a", "/self"):
            with pytest.raises(Invalid) as info:
                await fetcher.fetch(server.url(path))
            assert info.value.type == "too_many_redirects"


async def test_fetch_too_many_redirects(server: ImageServer, local_settings: Settings) -> None:
    for i in range(10):
        server.redirect(f"/r{i}", f"/r{i + 1}")
    server.redirect("/r10", "/cat.jpg")
    async with ImageFetcher(local_settings) as fetcher:
        with pytest.raises(Invalid) as info:
            await fetcher.fetch(server.url("/r0"))
    assert info.value.type == "too_many_redirects"
    assert len(server.requests) == local_settings.max_redirects + 1
    settings = make_settings(url_allow_networks=["127.0.0.0/8"], max_redirects=11)
    async with ImageFetcher(settings) as fetcher:
        assert await fetcher.fetch(server.url("/r0"))


async def test_fetch_declared_too_large(server: ImageServer) -> None:
    settings = make_settings(url_allow_networks=["127.0.0.0/8"], max_download_bytes=100_000)
    server.add("/big.jpg", b"\xff" * 200_000)
    async with ImageFetcher(settings) as fetcher:
        with pytest.raises(TooLarge) as info:
            await fetcher.fetch(server.url("/big.jpg"))
    assert info.value.type == "download_too_large"
    assert info.value.status == 413


async def test_fetch_streamed_too_large_stops_early(server: ImageServer) -> None:
    settings = make_settings(url_allow_networks=["127.0.0.0/8"], max_download_bytes=100_000, download_timeout=10.0)
    # 64 MiB without Content-Length, 64 KiB every 10 ms: reading it all would take over 10 s.
    server.slow("/endless.jpg", b"\xff" * (64 << 20), delay=0.01, chunk=64 << 10, headers={"Content-Length": ""})
    start = time.monotonic()
    async with ImageFetcher(settings) as fetcher:
        with pytest.raises(TooLarge) as info:
            await fetcher.fetch(server.url("/endless.jpg"))
    assert info.value.type == "download_too_large"
    assert time.monotonic() - start < 3


async def test_fetch_slow_server(server: ImageServer, jpeg_bytes: bytes) -> None:
    settings = make_settings(url_allow_networks=["127.0.0.0/8"], download_timeout=2.0)
    server.slow("/drip.jpg", jpeg_bytes)  # one byte per second
    start = time.monotonic()
    async with ImageFetcher(settings) as fetcher:
        with pytest.raises(Invalid) as info:
            await fetcher.fetch(server.url("/drip.jpg"))
    elapsed = time.monotonic() - start
    assert info.value.type == "download_timeout"
    assert info.value.status == 422
    assert "too slow" in info.value.msg
    assert 1.5 < elapsed < 4


async def test_peer_address_checked(server: ImageServer) -> None:
    """If resolution said one thing and the connection reached another, the peer check refuses."""
    settings = make_settings(download_timeout=5.0)
    async with ImageFetcher(settings) as fetcher:

        async def lying_check_host(host: str, port: int) -> list[str]:
            return [host]

        fetcher.guard.check_host = lying_check_host  # type: ignore[method-assign]
        with pytest.raises(Invalid) as info:
            await fetcher.fetch(server.url("/cat.jpg"))
    assert info.value.type == "url_forbidden_address"
