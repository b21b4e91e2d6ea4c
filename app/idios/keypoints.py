"""Local features for copy detection: ORB keypoints spread over an image, and the geometric check
that says whether two images show the same picture, how much of each, and where.

A copy that was cropped, rotated, resized, recompressed, framed or partly covered keeps many of its
original's corners, each with the same neighbourhood. ORB (OpenCV) finds corners at several scales
and describes each one's neighbourhood in 256 bits, independently of its orientation; two images
share a picture when many of their descriptors pair up AND the pairs agree on one placement of one
image inside the other (a rotation, a uniform scale and a shift, found by RANSAC). Descriptors alone
pair up by chance between unrelated images; the agreement on a placement is what they cannot fake.

Mirrored copies are not found this way (ORB's descriptors are not mirror-invariant): the caller
also tries the mirrored query.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import cv2
import numpy as np

from idios.keypoint_data import ANALYSED_SIDE, DESCRIPTOR_BYTES, Keypoints, Match

if TYPE_CHECKING:
    from PIL.Image import Image

# Images are analysed with their longer side at ANALYSED_SIDE pixels (`idios.keypoint_data`): enough
# corners for a 12% crop to keep a few dozen, few enough to extract in about 15 ms.
# Corners are kept per cell of this grid, the strongest first in every cell, so the kept ones cover
# the whole picture (a crop of any part keeps its share) rather than its busiest region.
SPREAD_GRID = 8
# Pairs count when the best descriptor is clearly closer than the second best (Lowe's ratio test)
# and within this many bits of 256.
RATIO = 0.85
MAX_DISTANCE = 80
# A query is analysed at several sides (and keeps up to so many corners at each), and its best
# placement counts: a crop shows its part of the picture larger than the original did (a 12% crop,
# 2.9 times), a screenshot smaller, and ORB's own scales (8 levels, 1.2 apart) span 3.6 times.
# Queries are not stored, so they keep more corners, the more the larger the side: a picture pasted
# into a screenshot holds a tenth of it, and its share of 2,048 corners finds more than twice the
# agreeing pairs its share of 512 does. The spread order (`_spread`) makes the first corners of an
# analysis a spread subset of it (what `idios.copysearch` searches Milvus with).
QUERY_ANALYSES = ((256, 512), (512, 1024), (1024, 2048))
# An analysis that would enlarge the query more than this is left out (but for the first): a small
# crop enlarged 4 times only blurs, and its corners cost a search.
MAX_ENLARGEMENT = 2.5
# A pair agrees with a placement when each point lands within this many pixels of the other, mapped
# either way.
AGREEMENT_PX = 4.0
# An analysed image with a shorter side than a corner's patch (31 pixels) has no corners: a long
# strip, for one (ORB's own pyramid fails on a side of a pixel or two).
MIN_ANALYSED_SIDE = 32
# A placement scaling one image by less than this (or more than its inverse) is degenerate: it
# crowds every point into a few pixels, where unrelated pairs "agree".
MIN_SCALE = 0.05
# Agreeing pairs count once per place: points closer than this many pixels (in each image) are one.
# ORB finds a small detail (a ring of a few pixels) at several of its scales and at several points
# around it, and a small ring in one image pairs with a small ring in another: unrelated drawings
# of shapes reached 24 agreeing pairs at a single place of each.
DISTINCT_PX = 8.0


def extract(image: Image, max_points: int, side: int = ANALYSED_SIDE) -> Keypoints:
    """Up to `max_points` corners of the image analysed with its longer side at `side` pixels,
    spread over it (`SPREAD_GRID`)."""
    grey = np.asarray(image.convert("L"))
    height, width = grey.shape
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if min(size) < MIN_ANALYSED_SIDE:  # a strip: no room for a corner's patch (and ORB's pyramid fails)
        return Keypoints(np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_BYTES), np.uint8), *size)
    grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    orb = cv2.ORB.create(nfeatures=4 * max_points, edgeThreshold=15, patchSize=31, fastThreshold=10)
    found, descriptors = orb.detectAndCompute(grey, None)
    if descriptors is None or not found:
        return Keypoints(np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_BYTES), np.uint8), *size)
    points = np.array([point.pt for point in found], dtype=np.float32) / np.array(size, dtype=np.float32)
    strength = np.array([point.response for point in found], dtype=np.float32)
    keep = _spread(points, strength, max_points)
    return Keypoints(points[keep], descriptors[keep], *size)


def extract_query(image: Image) -> list[Keypoints]:
    """The query's corners at each side of `QUERY_ANALYSES` that enlarges it at most `MAX_ENLARGEMENT` times."""
    largest = max(image.size) * MAX_ENLARGEMENT
    chosen = [(side, points) for side, points in QUERY_ANALYSES if side <= largest] or [QUERY_ANALYSES[0]]
    return [extract(image, points, side) for side, points in chosen]


def best_match(query: list[Keypoints], target: Keypoints) -> Match | None:
    """The placement of the query's analyses in `target` with the most agreeing pairs."""
    found = [found for analysis in query if (found := match(analysis, target)) is not None]
    return max(found, key=lambda found: found.inliers, default=None)


def _spread(points: np.ndarray, strength: np.ndarray, count: int) -> np.ndarray:
    """Indices of `count` points: each grid cell's strongest, then each cell's second, and so on."""
    cells = np.minimum((points * SPREAD_GRID).astype(int), SPREAD_GRID - 1)
    cell = cells[:, 1] * SPREAD_GRID + cells[:, 0]
    by_cell = np.lexsort((-strength, cell))  # grouped by cell, strongest first within each
    starts = np.searchsorted(cell[by_cell], cell[by_cell], side="left")
    rank = np.empty(len(points), dtype=int)
    rank[by_cell] = np.arange(len(points)) - starts
    return np.lexsort((-strength, rank))[:count]


def match(query: Keypoints, target: Keypoints) -> Match | None:
    """Where `query` shows (part of) `target`'s picture, or None when their corners agree on no
    placement of one in the other."""
    if len(query) < 2 or len(target) < 2:
        return None
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(query.descriptors, target.descriptors, k=2)
    good = [
        best
        for best, second in (pair for pair in pairs if len(pair) == 2)
        if best.distance < RATIO * second.distance and best.distance <= MAX_DISTANCE
    ]
    query_index = np.array([pair.queryIdx for pair in good], dtype=np.int64)
    target_index = np.array([pair.trainIdx for pair in good], dtype=np.int64)
    found = placement(query.pixels()[query_index], target.pixels()[target_index])
    if found is None:
        return None
    forward, inliers = found
    query_rect, target_rect = _rect(query), _rect(target)
    in_target = _shared(_apply(forward, query_rect), target_rect)
    in_query = _shared(_apply(np.linalg.inv(forward), target_rect), query_rect)
    if in_target is None or in_query is None:
        return None
    return Match(
        inliers=inliers,
        query_box=_box(in_query, query),
        target_box=_box(in_target, target),
        query_overlap=_share(in_query, query),
        target_overlap=_share(in_target, target),
    )


def placement(source: np.ndarray, destination: np.ndarray, *, attempts: int = 2000) -> tuple[np.ndarray, int] | None:
    """The placement (rotation, uniform scale and shift, as a 3 x 3 matrix) that most of the pairs of
    points `source[i]`, `destination[i]` (pixels) agree with, and at how many distinct places pairs
    agree both ways (`_places`: a point paired twice, or points a few pixels apart, count once); None
    when fewer than three do. RANSAC draws up to `attempts` samples of two pairs: far fewer when most
    pairs agree, all of them when few do (an unrelated image: about 0.3 ms for 2,000)."""
    if len(source) < 3:
        return None
    cv2.setRNGSeed(0)  # RANSAC's samples: the same pairs always give the same answer
    found, _ = cv2.estimateAffinePartial2D(
        source.astype(np.float32),
        destination.astype(np.float32),
        method=cv2.RANSAC,
        ransacReprojThreshold=AGREEMENT_PX,
        maxIters=attempts,
        confidence=0.995,
    )
    if found is None:
        return None
    scale = math.sqrt(abs(float(np.linalg.det(found[:, :2]))))
    if not MIN_SCALE < scale < 1 / MIN_SCALE:
        return None
    forward = np.vstack([found, [0.0, 0.0, 1.0]])
    backward = np.linalg.inv(forward)
    agree = (np.linalg.norm(_apply(forward, source) - destination, axis=1) < AGREEMENT_PX) & (
        np.linalg.norm(_apply(backward, destination) - source, axis=1) < AGREEMENT_PX
    )
    # A target has a few hundred corners at most, a query up to 2,048: the target's side first.
    places = _places(destination[agree])
    inliers = _places(source[agree], most=places)
    return (forward, inliers) if inliers >= 3 else None


def _places(points: np.ndarray, most: int | None = None) -> int:
    """How many of the points lie apart: each point at least DISTINCT_PX from every one counted
    before it (in the order given) counts; counting stops at `most`. Counted points are kept by cell
    of a DISTINCT_PX grid, so each point is compared with the few in the cells around its own."""
    cells: dict[tuple[int, int], list[tuple[float, float]]] = {}
    count, apart = 0, DISTINCT_PX**2
    for x, y in points.tolist():
        column, row = int(x // DISTINCT_PX), int(y // DISTINCT_PX)
        near = (
            (x - a) ** 2 + (y - b) ** 2 < apart
            for dx in (-1, 0, 1)
            for dy in (-1, 0, 1)
            for a, b in cells.get((column + dx, row + dy), ())
        )
        if any(near):
            continue
        cells.setdefault((column, row), []).append((x, y))
        count += 1
        if count == most:
            break
    return count


def _apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ transform[:2, :2].T + transform[:2, 2]


def _rect(keypoints: Keypoints) -> np.ndarray:
    w, h = float(keypoints.width), float(keypoints.height)
    return np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)


def _shared(placed: np.ndarray, frame: np.ndarray) -> np.ndarray | None:
    """The polygon where a placed rectangle and an image's frame overlap; None when they do not."""
    area, polygon = cv2.intersectConvexConvex(placed.astype(np.float32), frame.astype(np.float32))
    if area <= 0 or polygon is None:
        return None
    return polygon.reshape(-1, 2)


def _box(polygon: np.ndarray, keypoints: Keypoints) -> tuple[float, float, float, float]:
    size = np.array([keypoints.width, keypoints.height], dtype=np.float64)
    low, high = np.clip(polygon.min(axis=0) / size, 0, 1), np.clip(polygon.max(axis=0) / size, 0, 1)
    return (round(float(low[0]), 4), round(float(low[1]), 4), round(float(high[0]), 4), round(float(high[1]), 4))


def _share(polygon: np.ndarray, keypoints: Keypoints) -> float:
    area = float(cv2.contourArea(polygon.astype(np.float32)))
    return round(min(1.0, area / (keypoints.width * keypoints.height)), 4)
