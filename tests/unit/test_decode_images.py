"""Image decoding limits: formats, modes, sizes, pixel limits, truncated and corrupt files."""

from __future__ import annotations

import contextlib
import io
import struct
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from idios.config import Settings
from idios.decoding import decode_opened, open_image
from idios.errors import IdiosError, Invalid, TooLarge
from idios.images import ImageFetcher, decode_image

from tests.support.photos import encode

# ---------------------------------------------------------------- helpers


def make_settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG header declaring `width` x `height` RGB pixels, with a tiny (empty) image stream."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"")
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(skdata.astronaut())  # 512 x 512 RGB


@pytest.fixture(scope="module")
def jpeg_bytes(astronaut: Image.Image) -> bytes:
    return encode(astronaut, "JPEG", quality=90)


@pytest.fixture(scope="module")
def png_bytes() -> bytes:
    return encode(Image.fromarray(skdata.chelsea()), "PNG")  # 451 x 300


@pytest.fixture
def settings() -> Settings:
    return make_settings()


# ---------------------------------------------------------------- decoding


def test_decode_jpeg(jpeg_bytes: bytes, settings: Settings) -> None:
    img = decode_image(jpeg_bytes, settings)
    assert img.mode == "RGB"
    # Decoded at half scale: both sides stay at least decode_min_side (224).
    assert img.size == (256, 256)
    assert decode_image(jpeg_bytes, make_settings(decode_min_side=300)).size == (512, 512)


def test_decode_png(png_bytes: bytes, settings: Settings) -> None:
    img = decode_image(png_bytes, settings)
    assert img.mode == "RGB"
    assert img.size == (451, 300)


def test_large_jpeg_is_shrunk(settings: Settings) -> None:
    big = Image.fromarray(skdata.coffee()).resize((4000, 2667), Image.Resampling.BILINEAR)
    img = decode_image(encode(big, "JPEG", quality=85), settings)
    assert img.mode == "RGB"
    assert img.size == (500, 334)  # decoded at 1/8 scale
    img = decode_image(encode(big, "JPEG", quality=85), make_settings(decode_min_side=2000))
    assert max(img.size) == 1000  # decoded in full, then shrunk
    assert abs(img.size[0] / img.size[1] - 4000 / 2667) < 0.01


def test_a_model_needing_more_detail_gets_a_larger_decode(settings: Settings) -> None:
    """A 1600 x 1200 JPEG is decoded at a quarter of its size for the models that look at 224 px, and at
    half (800 x 600) for one that asks to keep a shorter side of 600 (copy detection's corners)."""
    data = encode(Image.fromarray(skdata.astronaut()).resize((1600, 1200)), "JPEG")
    assert open_image(data, settings).image.size == (400, 300)
    assert decode_opened(open_image(data, settings, min_side=600), settings).size == (800, 600)


def test_large_png_is_shrunk(settings: Settings) -> None:
    big = Image.fromarray(skdata.chelsea()).resize((1800, 1200))
    img = decode_image(encode(big, "PNG"), settings)
    assert img.size == (1000, 667)


def test_max_image_side_setting(jpeg_bytes: bytes) -> None:
    img = decode_image(jpeg_bytes, make_settings(max_image_side=200, min_image_side=100))
    assert img.size == (200, 200)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated(fmt: str, settings: Settings) -> None:
    full = encode(Image.fromarray(skdata.astronaut()), fmt)
    with pytest.raises(Invalid) as info:
        decode_image(full[: len(full) // 2], settings)
    assert info.value.type == "image_truncated"
    assert info.value.status == 422


def test_corrupt_png_crc(png_bytes: bytes, settings: Settings) -> None:
    broken = bytearray(png_bytes)
    idat = broken.index(b"IDAT")
    for i in range(idat + 100, idat + 200):
        broken[i] ^= 0x55
    with pytest.raises(Invalid) as info:
        decode_image(bytes(broken), settings)
    assert info.value.type == "image_truncated"


def test_png_declaring_huge_size(settings: Settings) -> None:
    data = png_declaring(50_000, 50_000)
    assert len(data) < 100
    with pytest.raises(TooLarge) as info:
        decode_image(data, settings)
    assert info.value.type == "too_many_pixels"
    assert info.value.status == 413


def test_png_over_our_limit_but_under_pillows(settings: Settings) -> None:
    # 81 M pixels: more than our 52 M limit, less than Pillow's own.
    with pytest.raises(TooLarge) as info:
        decode_image(png_declaring(9000, 9000), settings)
    assert info.value.type == "too_many_pixels"
    assert "9000x9000" in info.value.msg


@pytest.mark.parametrize(("size", "accepted"), [((8192, 6144), True), ((8064, 6048), True), ((9504, 6336), False)])
def test_default_pixel_limit(size: tuple[int, int], accepted: bool, settings: Settings) -> None:
    """50 and 48 Mpx phone photos pass the pixel check (this header has no pixels: then truncated); 61 Mpx do not."""
    with pytest.raises(IdiosError) as info:
        decode_image(png_declaring(*size), settings)
    assert info.value.type == ("image_truncated" if accepted else "too_many_pixels")


def test_pixel_limit_setting(jpeg_bytes: bytes) -> None:
    with pytest.raises(TooLarge) as info:
        decode_image(jpeg_bytes, make_settings(max_image_pixels=200_000))
    assert info.value.type == "too_many_pixels"


def test_too_small(settings: Settings) -> None:
    small = encode(Image.fromarray(skdata.astronaut()).resize((100, 300)), "PNG")
    with pytest.raises(Invalid) as info:
        decode_image(small, settings)
    assert info.value.type == "image_too_small"
    assert info.value.status == 422
    assert "100x300" in info.value.msg and "150" in info.value.msg


@pytest.mark.parametrize(
    "data",
    [
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="500" height="500">'
        b'<rect width="500" height="500" fill="red"/></svg>',
        b"<!DOCTYPE html><html><head><title>Not found</title></head><body>nope</body></html>",
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 500 500\nshowpage\n",
        bytes(range(256)) * 20,
        b"\x89PNG\r\n\x1a\n",
        b"",
    ],
    ids=["svg", "html", "eps", "garbage", "png-signature-only", "empty"],
)
def test_not_an_image(data: bytes, settings: Settings) -> None:
    with pytest.raises(Invalid) as info:
        decode_image(data, settings)
    assert info.value.type == "not_an_image"
    assert info.value.status == 422


def test_animated_gif_first_frame(settings: Settings) -> None:
    base = Image.fromarray(skdata.astronaut()).resize((300, 300))
    frames = [base, Image.new("RGB", (300, 300), (0, 0, 255)), Image.new("RGB", (300, 300), (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    img = decode_image(data, settings)
    assert img.mode == "RGB" and img.size == (300, 300)
    # The first frame is the astronaut, not a flat colour.
    assert np.asarray(img).std() > 20


def test_cmyk_jpeg(astronaut: Image.Image, settings: Settings) -> None:
    data = encode(astronaut.convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    img = decode_image(data, make_settings(decode_min_side=512))
    assert img.mode == "RGB" and img.size == (512, 512)
    diff = np.abs(np.asarray(img, dtype=np.int16) - np.asarray(astronaut, dtype=np.int16)).mean()
    assert diff < 20


def test_16bit_png(settings: Settings) -> None:
    gray8 = np.asarray(Image.fromarray(skdata.astronaut()).convert("L"))
    data = encode(Image.fromarray(gray8.astype(np.uint16) * 257), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    img = decode_image(data, settings)
    assert img.mode == "RGB"
    assert abs(np.asarray(img)[..., 0].astype(float).mean() - gray8.mean()) < 2


@pytest.mark.parametrize(("mode", "fmt"), [("RGBA", "PNG"), ("LA", "PNG"), ("RGBA", "WEBP"), ("RGBA", "TIFF")])
def test_transparency_on_white(mode: str, fmt: str, settings: Settings) -> None:
    rgba = Image.new("RGBA", (300, 200), (255, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 150, 200))  # left half fully transparent
    img_in = rgba if mode == "RGBA" else rgba.convert(mode)
    params = {"lossless": True} if fmt == "WEBP" else {}
    img = decode_image(encode(img_in, fmt, **params), settings)
    arr = np.asarray(img)
    assert img.mode == "RGB"
    assert (arr[:, :150] == 255).all()
    assert (arr[:, 150:] != 255).any()


def test_palette_with_transparency(settings: Settings) -> None:
    pal = Image.new("P", (200, 200), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(1, (100, 0, 200, 200))
    data = encode(pal, "PNG", transparency=0)
    img = decode_image(data, settings)
    arr = np.asarray(img)
    assert (arr[:, :100] == 255).all()
    assert tuple(arr[0, 150]) == (255, 0, 0)


@pytest.mark.parametrize("fmt", ["WEBP", "BMP", "TIFF", "GIF"])
def test_other_formats(fmt: str, astronaut: Image.Image, settings: Settings) -> None:
    img = decode_image(encode(astronaut, fmt), settings)
    assert img.mode == "RGB" and img.size == (512, 512)


def test_only_idios_errors(settings: Settings) -> None:
    """Random corruption of a real image never raises anything but IdiosError."""
    good = encode(Image.fromarray(skdata.coffee()), "JPEG")
    rng = np.random.default_rng(0)
    for _ in range(40):
        data = bytearray(good)
        for pos in rng.integers(0, len(data), 20):
            data[pos] = int(rng.integers(0, 256))
        with contextlib.suppress(IdiosError):
            decode_image(bytes(data[: int(rng.integers(10, len(data)))]), settings)


async def test_custom_transport(jpeg_bytes: bytes) -> None:
    """A mock transport (no network at all) can stand in for the real one."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/old":
            return httpx.Response(302, headers={"Location": "/new.jpg"})
        return httpx.Response(200, content=jpeg_bytes, headers={"Content-Type": "image/jpeg"})

    settings = make_settings()
    async with ImageFetcher(settings, transport=httpx.MockTransport(handler)) as fetcher:
        img = decode_image(await fetcher.fetch("https://images.example/old"), settings)
    assert img.size == (256, 256)
