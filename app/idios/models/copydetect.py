"""Copy detection (`copydetect`): an image's ORB corners spread over it, stored in Milvus; needs no
weights (`idios.keypoints`, doc/copydetect.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from idios import keypoint_data, specs
from idios.keypoint_data import ANALYSED_SIDE, STORED_POINTS, Keypoints
from idios.models.base import Comparison, EmbeddingModel, ModelUnavailable

if TYPE_CHECKING:
    from PIL.Image import Image

# The shorter side a query's JPEG is decoded down to at least: its longer side then reaches the
# largest analysis (1024, `keypoints.QUERY_ANALYSES`) for pictures of 4:3.
QUERY_DECODE_SIDE = 768


class CopyDetect(EmbeddingModel):
    """Stored form: the packed keypoints of the image analysed at `ANALYSED_SIDE` (`keypoint_data.pack`).
    A query is a list of analyses: three of a new image (`keypoints.extract_query`), the one of a
    stored image."""

    spec = specs.COPYDETECT
    # A small crop or a thumbnail is a query copy detection answers: it is analysed enlarged.
    smallest_side = 32

    def load(self) -> None:
        try:
            from idios import keypoints
        except ImportError as exc:
            raise ModelUnavailable(f"missing package: {exc.name} (opencv-python-headless)") from exc
        self._keypoints = keypoints

    def decode_side(self, query: bool) -> int | None:
        # Corners are found at the analysed sides (up to 1024 for a query): a JPEG decoded at a
        # fraction of its size, then enlarged to them, loses the fine ones.
        return QUERY_DECODE_SIDE if query else ANALYSED_SIDE

    def embed_images(self, images: list[Image], interactive: bool = False) -> list[Any]:
        return [keypoint_data.pack(self._keypoints.extract(image, STORED_POINTS)) for image in images]

    def embed_queries(self, images: list[Image]) -> list[Any]:
        return [self._keypoints.extract_query(image) for image in images]

    def stored_query(self, stored: Any) -> list[Keypoints]:
        return [keypoint_data.unpack(bytes(stored))]

    def compare(self, first: list[Keypoints], second: list[Keypoints]) -> Comparison:
        """Each image's analyses placed in the other's reference analysis; the placement with the
        most agreeing pairs counts, seen from the first image."""
        forward = self._keypoints.best_match(first, reference(second))
        backward = self._keypoints.best_match(second, reference(first))
        found = max(
            (forward, backward.swapped() if backward else None),
            key=lambda match: match.inliers if match else -1,
        )
        if found is None:
            return Comparison(0.0)
        return Comparison(keypoint_data.similarity(found.inliers), found)


def reference(analyses: list[Keypoints]) -> Keypoints:
    """The analysis an image is matched against: the one at the stored side (`ANALYSED_SIDE`)."""
    return next((k for k in analyses if max(k.width, k.height) == ANALYSED_SIDE), analyses[0])
