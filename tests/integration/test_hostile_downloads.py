"""Downloads from hostile image servers: compression bombs, lying lengths, bodies that never end.

Each must end with a clear 4xx within the download's limits (size, time) while the fetching
process's memory stays a small multiple of the download limit. Memory is measured in a child
process (its peak resident set, reset just before the fetch), since the test process's own
history would hide a peak.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Iterator

import pytest
from PIL import Image

from idios.config import Settings
from idios.decoding import decode_image
from idios.errors import IdiosError, Invalid, TooLarge
from idios.images import ImageFetcher

from tests.support.imageserver import ImageServer, encode, zstd_module

MiB = 1 << 20
LIMIT = 20 * MiB  # the default max_download_bytes
# Growth allowed while fetching a bomb: the body (up to the limit), its copy as bytes, decoder steps.
MEMORY_BOUND = 3 * LIMIT
ENCODINGS = ["gzip", "x-gzip", "deflate", "br", "zstd"]
STACKED = ["gzip, br", "deflate, zstd", "br, gzip"]


def make_settings(**overrides: object) -> Settings:
    base: dict[str, object] = {"url_allow_networks": ["127.0.0.0/8"], "download_timeout": 5.0, "connect_timeout": 2.0}
    return Settings(_env_file=None, **{**base, **overrides})  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (200, 30, 90)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer(host="127.0.0.2") as srv:
        yield srv


async def fetch(url: str, **settings: object) -> bytes:
    async with ImageFetcher(make_settings(**settings)) as fetcher:
        return await fetcher.fetch(url)


# ---------------------------------------------------------------- memory, in a child process

_CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from idios.config import Settings
    from idios.errors import IdiosError
    from idios.images import ImageFetcher

    def status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024

    async def main(warm, url):
        settings = Settings(_env_file=None, url_allow_networks=["127.0.0.0/8"])
        async with ImageFetcher(settings) as fetcher:
            await fetcher.fetch(warm)  # imports, decoders and the connection pool set up
            base = status("VmRSS")
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # peak RSS := current RSS
            except OSError:
                pass  # then VmHWM is the lifetime peak: the growth measured can only be larger
            try:
                result = {"ok": len(await fetcher.fetch(url))}
            except IdiosError as exc:
                result = exc.to_wire()
            result["growth"] = status("VmHWM") - base
        print(json.dumps(result))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def fetch_in_child(warm_url: str, url: str) -> dict[str, object]:
    """Fetch `url` with the default settings in a fresh process; its answer and its peak RSS growth."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, warm_url, url], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("encoding", ENCODINGS + STACKED)
def test_compression_bomb_stops_at_the_limit(server: ImageServer, encoding: str) -> None:
    """A body of at most about 1 MB inflating to 1 GiB answers 413 without inflating it."""
    warm = server.add("/warm", encode(encoding, b"warm" * 1000), headers={"Content-Encoding": encoding})
    url = server.bomb("/bomb.jpg", encoding, size=1 << 30)
    assert len(server.routes["/bomb.jpg"].body) < 1_100_000
    result = fetch_in_child(warm, url)
    assert result["status"] == 413 and result["type"] == "download_too_large", result
    assert "20 MiB download limit" in str(result["msg"])
    assert int(result["growth"]) < MEMORY_BOUND, f"grew {int(result['growth']) / MiB:.0f} MiB"  # type: ignore[call-overload]


def test_endless_fast_body_stops_at_the_limit(server: ImageServer, jpeg: bytes) -> None:
    warm = server.add("/warm", jpeg)
    url = server.endless("/flood", b"\xff" * (256 << 10))
    result = fetch_in_child(warm, url)
    assert result["status"] == 413 and result["type"] == "download_too_large", result
    assert int(result["growth"]) < MEMORY_BOUND, f"grew {int(result['growth']) / MiB:.0f} MiB"  # type: ignore[call-overload]


# ---------------------------------------------------------------- compressed bodies, in process


@pytest.mark.parametrize("encoding", ENCODINGS + STACKED + ["identity", "gzip, identity", "GZIP"])
async def test_compressed_image_is_decoded(server: ImageServer, jpeg: bytes, encoding: str) -> None:
    """Servers that compress despite Accept-Encoding: identity still deliver their image."""
    url = server.add("/c.jpg", encode(encoding, jpeg), headers={"Content-Encoding": encoding})
    assert await fetch(url) == jpeg
    assert server.request_headers[-1]["accept-encoding"] == "identity"


async def test_raw_deflate_and_gzip_members(server: ImageServer, jpeg: bytes) -> None:
    """deflate without its zlib wrapper (as some servers send it), and gzip members one after another."""
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    raw = server.add("/raw.jpg", packer.compress(jpeg) + packer.flush(), headers={"Content-Encoding": "deflate"})
    members = gzip.compress(jpeg[:1000]) + gzip.compress(jpeg[1000:])
    multi = server.add("/multi.jpg", members, headers={"Content-Encoding": "gzip"})
    async with ImageFetcher(make_settings()) as fetcher:
        assert await fetcher.fetch(raw) == jpeg
        assert await fetcher.fetch(multi) == jpeg


async def test_zstd_window_over_8_mib_refused(server: ImageServer) -> None:
    """A zstd frame may ask for a window of up to 2 GiB; HTTP's zstd allows 8 MiB (RFC 9659)."""
    zstd = zstd_module()
    packer = zstd.ZstdCompressor(options={zstd.CompressionParameter.window_log: 27})
    body = packer.compress(bytes(range(256)) * 4096) + packer.flush()  # no size given: the window stands
    url = server.add("/wide.jpg", body, headers={"Content-Encoding": "zstd"})
    with pytest.raises(Invalid) as info:
        await fetch(url)
    assert info.value.status == 422 and info.value.type == "download_failed"
    assert "zstd" in info.value.msg and "8 MiB window" in info.value.msg


@pytest.mark.parametrize("encoding", ["compress", "x-compress", "exi", "pack200-gzip", "aes128gcm", "bogus"])
async def test_unknown_encoding_refused(server: ImageServer, jpeg: bytes, encoding: str) -> None:
    url = server.add("/x.jpg", jpeg, headers={"Content-Encoding": encoding})
    with pytest.raises(Invalid) as info:
        await fetch(url)
    assert info.value.status == 422 and info.value.type == "download_encoding"
    assert repr(encoding) in info.value.msg


async def test_too_many_stacked_encodings_refused(server: ImageServer, jpeg: bytes) -> None:
    stacked = "gzip, gzip, gzip, gzip"
    url = server.add("/x.jpg", encode(stacked, jpeg), headers={"Content-Encoding": stacked})
    with pytest.raises(Invalid) as info:
        await fetch(url)
    assert info.value.status == 422 and info.value.type == "download_encoding"
    assert "at most 3" in info.value.msg


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_corrupt_or_truncated_compressed_body(server: ImageServer, jpeg: bytes, encoding: str) -> None:
    packed = encode(encoding, jpeg)
    cut = server.add("/cut.jpg", packed[: len(packed) // 2], headers={"Content-Encoding": encoding})
    junk = server.add("/junk.jpg", b"\x00not compressed at all" * 50, headers={"Content-Encoding": encoding})
    async with ImageFetcher(make_settings()) as fetcher:
        for url in (cut, junk):
            with pytest.raises(Invalid) as info:
                await fetcher.fetch(url)
            assert info.value.status == 422 and info.value.type == "download_failed"
            assert "corrupt or truncated" in info.value.msg


async def test_bomb_stops_at_a_small_limit(server: ImageServer) -> None:
    """In process, with a 1 MiB limit: the answer is the 413, quickly, for every encoding."""
    async with ImageFetcher(make_settings(max_download_bytes=MiB)) as fetcher:
        for number, encoding in enumerate(ENCODINGS + STACKED):
            url = server.bomb(f"/bomb{number}.jpg", encoding, size=1 << 30)
            with pytest.raises(TooLarge) as info:
                await fetcher.fetch(url)
            assert info.value.status == 413 and info.value.type == "download_too_large"
            assert "1 MiB" in info.value.msg


# ---------------------------------------------------------------- lying lengths, endless bodies


async def test_content_length_shorter_than_body(server: ImageServer, jpeg: bytes) -> None:
    """Only the declared bytes are read, so the image is truncated (422); the bytes left on the
    connection do not spoil the next download from that server."""
    url = server.lying_length("/short.jpg", jpeg, declared=len(jpeg) // 2)
    server.add("/ok.jpg", jpeg)
    settings = make_settings()
    async with ImageFetcher(settings) as fetcher:
        assert await fetcher.fetch(url) == jpeg[: len(jpeg) // 2]
        with pytest.raises(IdiosError) as info:
            decode_image(await fetcher.fetch(url), settings)
        assert info.value.status == 422
        for _ in range(3):
            assert await fetcher.fetch(server.url("/ok.jpg")) == jpeg


async def test_content_length_longer_than_body_then_close(server: ImageServer, jpeg: bytes) -> None:
    url = server.truncated("/cut.jpg", jpeg, declared=len(jpeg) * 2)
    with pytest.raises(Invalid) as info:
        await fetch(url)
    assert info.value.status == 422 and info.value.type == "download_failed"


async def test_content_length_longer_than_body_then_stall(server: ImageServer, jpeg: bytes) -> None:
    url = server.lying_length("/stall.jpg", jpeg, declared=len(jpeg) * 2)
    start = time.monotonic()
    with pytest.raises(Invalid) as info:
        await fetch(url, download_timeout=1.0)
    assert info.value.status == 422 and info.value.type == "download_timeout"
    assert time.monotonic() - start < 1.0 + 3


async def test_content_length_over_the_limit_refused_before_reading(server: ImageServer, jpeg: bytes) -> None:
    url = server.lying_length("/huge.jpg", jpeg, declared=LIMIT + 1)
    with pytest.raises(TooLarge) as info:
        await fetch(url)
    assert info.value.type == "download_too_large"


async def test_endless_slow_drip_ends_at_the_total_timeout(server: ImageServer) -> None:
    """A chunk every 0.2 s keeps every read under the timeout; the whole download still ends at it."""
    url = server.endless("/drip.jpg", b"\xff" * 16, delay=0.2)
    start = time.monotonic()
    with pytest.raises(Invalid) as info:
        await fetch(url, download_timeout=1.5)
    elapsed = time.monotonic() - start
    assert info.value.status == 422 and info.value.type == "download_timeout"
    assert "1.5 s" in info.value.msg
    assert 1.0 < elapsed < 1.5 + 3


async def test_endless_compressed_drip_ends_at_the_total_timeout(server: ImageServer) -> None:
    """The same drip, gzip-declared (the pieces are one never-finished gzip member)."""
    url = server.endless("/gzdrip.jpg", b"\x1f\x8b", delay=0.2, headers={"Content-Encoding": "gzip"})
    with pytest.raises(Invalid) as info:
        await fetch(url, download_timeout=1.0)
    assert info.value.status == 422
    assert info.value.type in ("download_timeout", "download_failed")


async def test_endless_fast_body_in_process(server: ImageServer) -> None:
    url = server.endless("/flood.jpg", b"\xff" * (64 << 10))
    with pytest.raises(TooLarge) as info:
        await fetch(url, max_download_bytes=2 * MiB)
    assert info.value.status == 413 and info.value.type == "download_too_large"
