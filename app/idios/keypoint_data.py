"""Copy detection's keypoints as data: an image's corners, where two images match, their stored form,
the ids of an image's corners in the store, and the similarity score.

No OpenCV here (`idios.keypoints` finds and matches corners): the API checks restored keypoints with
this module alone.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np

# Stored images are analysed with their longer side at this many pixels (`idios.keypoints.extract`).
ANALYSED_SIDE = 512
# Corners kept per stored image, and the bytes of each one's ORB descriptor (256 bits).
STORED_POINTS = 256
DESCRIPTOR_BYTES = 32


@dataclass(frozen=True)
class Keypoints:
    """An image's corners: positions as fractions of the analysed image's width and height (x, y),
    their descriptors (32 bytes each), and the analysed image's size in pixels."""

    points: np.ndarray
    descriptors: np.ndarray
    width: int
    height: int

    def __len__(self) -> int:
        return len(self.points)

    def pixels(self) -> np.ndarray:
        return self.points * np.array([self.width, self.height], dtype=np.float32)


@dataclass(frozen=True)
class Match:
    """Where two images show the same picture. Boxes are (x0, y0, x1, y1) fractions of each image's
    width and height; overlaps are the share of each image's area the shared region covers."""

    inliers: int
    query_box: tuple[float, float, float, float]
    target_box: tuple[float, float, float, float]
    query_overlap: float
    target_overlap: float

    def to_public(self) -> dict[str, Any]:
        return {
            "query_box": list(self.query_box),
            "target_box": list(self.target_box),
            "query_overlap": self.query_overlap,
            "target_overlap": self.target_overlap,
            "inliers": self.inliers,
        }

    def mirrored(self) -> Match:
        """The same match, found with the query mirrored left to right, in the query's own coordinates."""
        x0, y0, x1, y1 = self.query_box
        box = (round(1 - x1, 4), y0, round(1 - x0, 4), y1)
        return Match(self.inliers, box, self.target_box, self.query_overlap, self.target_overlap)

    def swapped(self) -> Match:
        """The same match seen from the other image."""
        return Match(self.inliers, self.target_box, self.query_box, self.target_overlap, self.query_overlap)


def similarity(inliers: int) -> float:
    """0-100 from the count of agreeing pairs (once per place): `100 (1 - exp(-(n - 2) / 8))`. Unrelated
    photos reach 3 (12) in the measurements of doc/copydetect.md, 99% of unrelated queries among
    100,000 images 3 as well; below 39 (6 pairs) a hit is not a copy."""
    return round(max(0.0, 100.0 * (1.0 - math.exp(-(inliers - 2) / 8.0))), 4)


# The stored form of an image's keypoints: the analysed width, height and the count of corners
# (three little-endian 16-bit integers), then each corner's x and y in hundredths of a pixel of the
# analysed image (16 bits each, so sides up to 655 pixels) and its 32-byte descriptor. 256 corners:
# 9,222 bytes (MAX_BYTES). A batch of them is a 1-D array of objects, each one's bytes.
_HEADER = np.dtype([("width", "<u2"), ("height", "<u2"), ("count", "<u2")])
_CORNER = np.dtype([("x", "<u2"), ("y", "<u2"), ("descriptor", "u1", (DESCRIPTOR_BYTES,))])
HUNDREDTHS = 100
MAX_SIDE = 65535 // HUNDREDTHS
MAX_BYTES = _HEADER.itemsize + STORED_POINTS * _CORNER.itemsize


def pack(keypoints: Keypoints) -> bytes:
    """The stored form: what the store keeps, a dump writes and a restore reads back (`unpack`)."""
    if not 0 < keypoints.width <= MAX_SIDE or not 0 < keypoints.height <= MAX_SIDE:
        raise ValueError(f"keypoints of an image of {keypoints.width} x {keypoints.height} pixels cannot be stored")
    if len(keypoints) > STORED_POINTS:
        raise ValueError(f"{len(keypoints)} corners; at most {STORED_POINTS} are stored")
    header = np.array([(keypoints.width, keypoints.height, len(keypoints))], dtype=_HEADER)
    corners = np.empty(len(keypoints), dtype=_CORNER)
    hundredths = np.rint(np.clip(keypoints.points, 0, 1) * _size(keypoints) * HUNDREDTHS).astype("<u2")
    corners["x"], corners["y"] = hundredths[:, 0], hundredths[:, 1]
    corners["descriptor"] = keypoints.descriptors
    return header.tobytes() + corners.tobytes()


def unpack(data: bytes) -> Keypoints:
    """The keypoints `pack` wrote; ValueError, saying why, for bytes it did not write."""
    width, height, count = _header(data)
    expected = _HEADER.itemsize + count * _CORNER.itemsize
    if len(data) != expected:
        raise ValueError(f"keypoints of {count} corners take {expected} bytes, not {len(data)}")
    corners = np.frombuffer(data, dtype=_CORNER, offset=_HEADER.itemsize, count=count)
    hundredths = np.stack([corners["x"], corners["y"]], axis=1).astype(np.float32)
    if count and ((hundredths[:, 0] > width * HUNDREDTHS).any() or (hundredths[:, 1] > height * HUNDREDTHS).any()):
        raise ValueError(f"keypoints lie outside their image of {width} x {height} pixels")
    points = hundredths / (np.array([width, height], dtype=np.float32) * HUNDREDTHS)
    return Keypoints(points, np.ascontiguousarray(corners["descriptor"]), width, height)


def _header(data: bytes) -> tuple[int, int, int]:
    if len(data) < _HEADER.itemsize:
        raise ValueError(f"{len(data)} bytes are too few for keypoints: the header alone is {_HEADER.itemsize}")
    header = np.frombuffer(data, dtype=_HEADER, count=1)[0]
    width, height, count = int(header["width"]), int(header["height"]), int(header["count"])
    if not 0 < width <= MAX_SIDE or not 0 < height <= MAX_SIDE:
        raise ValueError(f"keypoints of an image of {width} x {height} pixels")
    if count > STORED_POINTS:
        raise ValueError(f"keypoints of {count} corners; at most {STORED_POINTS} are stored")
    return width, height, count


def _size(keypoints: Keypoints) -> np.ndarray:
    return np.array([keypoints.width, keypoints.height], dtype=np.float64)


def batch(packed: list[bytes]) -> np.ndarray:
    """Stored forms as a batch: a 1-D array of objects (numpy would make equal-length bytes a 2-D array)."""
    rows = np.empty(len(packed), dtype=object)
    rows[:] = packed
    return rows


# The store keys each corner by its image's id and its index among the image's corners (8 bits).
# The id is 55 random bits drawn for each write of an image: a url written again gets new corners
# beside its old ones, which go only once its row points at the new ones (`idios.store`), and every
# key is a positive 64-bit integer.
CORNER_BITS = 8
IMAGE_BITS = 63 - CORNER_BITS


def new_image_id() -> int:
    return secrets.randbits(IMAGE_BITS)


def fingerprint(packed: bytes) -> int:
    """63 bits of a hash of an image's stored keypoints: images stored with the same keypoints (one
    picture under several urls) have the same, so a search finds all of them (`idios.copysearch`)."""
    return int.from_bytes(hashlib.blake2b(packed, digest_size=8).digest(), "big") >> 1


def corner_ids(image: int, count: int, start: int = 0) -> np.ndarray:
    """The keys of an image's corners `start` to `count - 1`."""
    return (np.int64(image) << CORNER_BITS) | np.arange(start, count, dtype=np.int64)


def positions(keypoints: Keypoints) -> np.ndarray:
    """Each corner's position as one 32-bit integer (x, then y << 16, in hundredths of a pixel), as the
    store keeps it beside the descriptor."""
    hundredths = np.rint(np.clip(keypoints.points, 0, 1) * _size(keypoints) * HUNDREDTHS).astype(np.uint32)
    return (hundredths[:, 0] | (hundredths[:, 1] << 16)).view(np.int32)


def pixels_of(positions: np.ndarray) -> np.ndarray:
    """The pixel positions (x, y) that `positions` encoded."""
    packed = np.asarray(positions, dtype=np.int32).view(np.uint32)
    return np.stack([packed & 0xFFFF, packed >> 16], axis=1).astype(np.float32) / HUNDREDTHS
