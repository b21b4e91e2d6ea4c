"""Decoding of client-supplied image bytes.

`decode_image` refuses oversized or malformed images before decoding them and returns an RGB
image no larger than `max_image_side`.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from .config import Settings
from .errors import IdiosError, Invalid, TooLarge

# Formats a client may send. Others (EPS runs Ghostscript, and many exotic
# formats have little-tested decoders) are refused as not an image.
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF")

# `decode_image` applies its own pixel limit after reading the declared size;
# Pillow's limit stays as a backstop (raised to ours where needed), without its warning.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _allowed_formats() -> tuple[str, ...]:
    Image.init()
    return tuple(fmt for fmt in ALLOWED_FORMATS if fmt in Image.OPEN)


def decode_image(data: bytes, settings: Settings) -> Image.Image:
    """Decode `data` to an RGB image whose longest side is at most `settings.max_image_side`.

    CPU bound: run it in a thread. Raises only `IdiosError` subclasses for bad input.
    """
    if Image.MAX_IMAGE_PIXELS is not None and settings.max_image_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
    if not data:
        raise Invalid("the url did not return an image (empty body)", type="not_an_image")
    try:
        img = Image.open(io.BytesIO(data), formats=_allowed_formats())
    except Image.DecompressionBombError:
        raise _too_many_pixels(None, settings) from None
    except UnidentifiedImageError:
        raise Invalid("the url did not return a supported image", type="not_an_image") from None
    except Exception:
        raise Invalid("the url did not return a readable image", type="not_an_image") from None

    width, height = img.size
    if width * height > settings.max_image_pixels:
        raise _too_many_pixels((width, height), settings)
    if min(width, height) < settings.min_image_side:
        raise Invalid(
            f"the image is too small ({width}x{height}); its shorter side must be at least "
            f"{settings.min_image_side} pixels",
            type="image_too_small",
        )

    try:
        if img.format in ("JPEG", "MPO"):
            # Decode at 1/2, 1/4 or 1/8 scale while both sides stay at least decode_min_side: the
            # models look at 224 px, and a full-size decode of a large photo costs several times more.
            target = min(settings.decode_min_side, settings.max_image_side)
            img.draft("RGB", (target, target))
        img.seek(0)
        img.load()
        rgb = _to_rgb(img)
        if max(rgb.size) > settings.max_image_side:
            rgb.thumbnail((settings.max_image_side, settings.max_image_side), Image.Resampling.BICUBIC)
    except IdiosError:
        raise
    except Image.DecompressionBombError:
        raise _too_many_pixels((width, height), settings) from None
    except MemoryError:
        raise TooLarge("the image is too large to decode", type="too_many_pixels") from None
    except Exception:
        raise Invalid("the image is truncated or corrupt", type="image_truncated") from None
    return rgb


def _too_many_pixels(size: tuple[int, int] | None, settings: Settings) -> TooLarge:
    limit = settings.max_image_pixels
    if size is None:
        return TooLarge(f"the image declares more than {limit:,} pixels, the limit", type="too_many_pixels")
    w, h = size
    return TooLarge(
        f"the image declares {w}x{h} = {w * h:,} pixels, more than the limit of {limit:,}", type="too_many_pixels"
    )


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any mode to RGB; transparency is composited on white, high bit depths scaled to 8 bits."""
    mode = img.mode
    if mode in ("1", "L", "RGB", "P") and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(img), sixteen_bit=mode.startswith("I;16"))).convert("RGB")
    return img.convert("RGB")


def _to_uint8(arr: np.ndarray, *, sixteen_bit: bool) -> np.ndarray:
    """Scale a single-channel integer or float array to 0..255."""
    is_float = arr.dtype.kind == "f"
    arr = arr.astype(np.float64)
    if arr.size == 0:
        return arr.astype(np.uint8)
    top = float(np.nanmax(arr))
    if sixteen_bit:
        arr = arr / 257.0
    elif is_float and top <= 1.0:
        arr = arr * 255.0
    elif top > 255.0:
        arr = arr / (257.0 if top <= 65535.0 else top / 255.0)
    return np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)


__all__ = ["ALLOWED_FORMATS", "decode_image"]
