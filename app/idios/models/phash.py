"""Perceptual hash: 64 bits that survive resizing and recompression; finds near-duplicates, needs no weights."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from idios import specs
from idios.models.base import EmbeddingModel, ModelUnavailable

if TYPE_CHECKING:
    from PIL.Image import Image


class PerceptualHash(EmbeddingModel):
    spec = specs.PHASH

    def load(self) -> None:
        try:
            import imagehash
        except ImportError as exc:
            raise ModelUnavailable(f"missing package: {exc.name}") from exc
        self._imagehash = imagehash

    def embed_images(self, images: list[Image], interactive: bool = False) -> list[Any]:
        return [np.packbits(self._imagehash.phash(image).hash.flatten()).tobytes() for image in images]
