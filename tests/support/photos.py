"""Real photographs (shipped by scikit-image) as encoded image bytes, and variants of them."""

from __future__ import annotations

import io
from functools import cache

import numpy as np
from PIL import Image
from skimage import data

PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "immunohistochemistry")


@cache
def photo(name: str) -> Image.Image:
    array = getattr(data, name)()
    if array.dtype != np.uint8:
        array = (array * 255).astype(np.uint8) if array.max() <= 1 else array.astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def encode(image: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def jpeg(name: str, quality: int = 90) -> bytes:
    return encode(photo(name), "JPEG", quality=quality)


def resized(name: str, factor: float) -> bytes:
    image = photo(name)
    size = (int(image.width * factor), int(image.height * factor))
    return encode(image.resize(size, Image.Resampling.LANCZOS), "JPEG", quality=85)
