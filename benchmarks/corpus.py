"""Benchmark images: many distinct JPEGs derived from real photos, served over HTTP on 127.0.0.x.

Each image is a random crop of a scikit-image photo, maybe mirrored, with its colour and
brightness shifted, resized so its longer side is 600-2000 px, and saved as JPEG: the sizes
users upload, each with its own embedding.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from tests.support.imageserver import ImageServer
from tests.support.photos import PHOTO_NAMES, photo

IMAGE_HOST = "127.0.0.3"


def derived_jpeg(index: int, seed: int = 7) -> bytes:
    """The `index`-th derived photo; the same index always gives the same bytes."""
    rng = np.random.default_rng([seed, index])
    image = photo(PHOTO_NAMES[index % len(PHOTO_NAMES)])
    w, h = image.size
    left, top = int(rng.integers(0, w // 4)), int(rng.integers(0, h // 4))
    right, bottom = w - int(rng.integers(0, w // 4)), h - int(rng.integers(0, h // 4))
    image = image.crop((left, top, right, bottom))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = ImageEnhance.Color(image).enhance(float(rng.uniform(0.6, 1.4)))
    image = ImageEnhance.Brightness(image).enhance(float(rng.uniform(0.8, 1.2)))
    side = int(rng.integers(600, 2001))
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    buffer = io.BytesIO()
    image.resize(size, Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=88)
    return buffer.getvalue()


@dataclass
class Corpus:
    """Url sets the load generator draws from; written to a JSON file for locust."""

    ingest: list[str]  # images the ingestion users add
    stored: list[str]  # images added before the search scenarios
    fresh: list[str]  # never stored: a search must download and embed them
    upload: list[str]  # paths of local files for upload searches

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self)))
        return path

    @classmethod
    def load(cls, path: Path) -> Corpus:
        return cls(**json.loads(Path(path).read_text()))


def cached_jpeg(index: int, cache: Path) -> bytes:
    """`derived_jpeg(index)`, kept in `cache` so later runs skip the encoding."""
    path = cache / f"{index:06d}.jpg"
    if not path.exists():
        path.write_bytes(derived_jpeg(index))
    return path.read_bytes()


def serve_corpus(server: ImageServer, cache: Path, *, ingest: int, stored: int, fresh: int) -> Corpus:
    """Register `ingest + stored + fresh` distinct images on `server`; a few more are upload files."""
    cache.mkdir(parents=True, exist_ok=True)
    urls = [
        server.add(f"/photo/{index:05d}.jpg", cached_jpeg(index, cache)) for index in range(ingest + stored + fresh)
    ]
    uploads = []
    for index in range(100_000, 100_008):
        cached_jpeg(index, cache)
        uploads.append(str(cache / f"{index:06d}.jpg"))
    return Corpus(
        ingest=urls[:ingest],
        stored=urls[ingest : ingest + stored],
        fresh=urls[ingest + stored :],
        upload=uploads,
    )
