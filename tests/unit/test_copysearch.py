"""Copy detection's search (`idios.copysearch`) on real photos, with the store's two calls answered in
memory exactly (brute-force nearest corners): the vote, the placement of the voting pairs and the
check rank the original of a copy first, and images whose rows are missing or filtered out are left
out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from idios import copysearch, keypoint_data, keypoints
from idios.corner_store import Neighbours
from idios.keypoint_data import Keypoints
from idios.specs import COPYDETECT, ModelSpec
from idios.store import ImageRow

from tests.support.photos import PHOTO_NAMES, photo


@dataclass
class CornersInMemory:
    """The store's `nearest_corners` and `candidates`, over images kept in memory."""

    images: dict[int, tuple[ImageRow, Keypoints]]
    rowless: frozenset[int] = frozenset()  # images whose corners are stored but not their row
    searched: int = 0

    def nearest_corners(
        self, spec: ModelSpec, descriptors: np.ndarray, *, neighbours: int, probes: int, within: int
    ) -> Neighbours:
        self.searched += len(descriptors)
        keys = np.concatenate([keypoint_data.corner_ids(image, len(k)) for image, (_, k) in self.images.items()])
        stored = np.concatenate([k.descriptors for _, k in self.images.values()])
        positions = np.concatenate([keypoint_data.positions(k) for _, k in self.images.values()])
        pairs = [
            (pair.queryIdx, pair.trainIdx, pair.distance)
            for found in cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(descriptors, stored, k=neighbours)
            for pair in found
            if pair.distance <= within
        ]
        if not pairs:
            return Neighbours(*(np.empty(0, dtype=np.int64) for _ in range(5)))
        query, found, distance = (np.array(column, dtype=np.int64) for column in zip(*pairs, strict=True))
        return Neighbours(query, keys[found], keys[found] >> 8, positions[found], distance)

    def twins(self, spec: ModelSpec, fingerprints: list[int], limit: int, filter: str = "") -> list[ImageRow]:
        return [row for row, _ in self.images.values() if row.fingerprint in fingerprints][:limit]

    def candidates(self, spec: ModelSpec, images: list[int], filter: str = "") -> dict[int, tuple[ImageRow, Any]]:
        wanted = 'metadata["name"] == '
        chosen = {image for image in images if image in self.images and image not in self.rowless}
        if filter.startswith(wanted):
            name = filter.removeprefix(wanted).strip('"')
            chosen = {image for image in chosen if self.images[image][0].metadata.get("name") == name}
        return {image: self.images[image] for image in chosen}


def url(name: str) -> str:
    return f"http://images.example/{name}.jpg"


@pytest.fixture(scope="module")
def store() -> CornersInMemory:
    images = {}
    rng = np.random.default_rng(0)
    names = {name: photo(name) for name in PHOTO_NAMES}
    for index in range(12):  # noise pictures: corners that pair up with nothing
        names[f"noise{index}"] = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    for name, image in names.items():
        features = keypoints.extract(image, keypoint_data.STORED_POINTS)
        fingerprint = keypoint_data.fingerprint(keypoint_data.pack(features))
        row = ImageRow(url(name), {"name": name}, features.width, features.height, len(features), fingerprint)
        images[keypoint_data.new_image_id()] = (row, features)
    return CornersInMemory(images)


def image_of(store: CornersInMemory, name: str) -> int:
    return next(image for image, (row, _) in store.images.items() if row.url == url(name))


def crop(name: str, box: tuple[float, float, float, float]) -> Image.Image:
    image = photo(name)
    w, h = image.size
    return image.crop((round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)))


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket"])
def test_the_original_of_a_crop_comes_first(store: CornersInMemory, name: str) -> None:
    query = keypoints.extract_query(crop(name, (0.25, 0.25, 0.75, 0.75)))
    hits = copysearch.search(store, COPYDETECT, query, count=3)  # type: ignore[arg-type]
    assert hits[0].url == url(name) and hits[0].match.inliers >= 12, hits
    assert all(hit.match.inliers < 6 for hit in hits[1:]), hits


def test_the_vote_searches_a_spread_subset_of_each_analysis(store: CornersInMemory) -> None:
    query = keypoints.extract_query(photo("astronaut").resize((1000, 1000)))
    assert [len(a) for a in query] == [512, 1024, 2048]
    before = store.searched
    copysearch.search(store, COPYDETECT, query, count=1)  # type: ignore[arg-type]
    assert store.searched - before == sum(copysearch.VOTERS[3])
    small = keypoints.extract_query(photo("astronaut").resize((180, 180)))  # a small crop: one analysis
    assert len(small) == 1
    before = store.searched
    copysearch.search(store, COPYDETECT, small, count=1)  # type: ignore[arg-type]
    assert store.searched - before == copysearch.VOTERS[1][0], "its one analysis gets the whole vote"


def test_a_small_query_is_not_enlarged_past_its_detail() -> None:
    assert [k.width for k in keypoints.extract_query(photo("coffee").resize((180, 120)))] == [256]
    assert [k.width for k in keypoints.extract_query(photo("coffee").resize((300, 200)))] == [256, 512]


def test_images_whose_rows_are_missing_or_filtered_out_are_left_out(store: CornersInMemory) -> None:
    query = keypoints.extract_query(crop("coffee", (0.1, 0.1, 0.9, 0.9)))
    coffee = image_of(store, "coffee")
    rowless = CornersInMemory(store.images, rowless=frozenset({coffee}))
    assert url("coffee") not in [hit.url for hit in copysearch.search(rowless, COPYDETECT, query, count=5)]  # type: ignore[arg-type]
    hits = copysearch.search(store, COPYDETECT, query, count=5, filter='metadata["name"] == "coins"')  # type: ignore[arg-type]
    assert all(hit.metadata == {"name": "coins"} for hit in hits)


def test_a_query_without_corners_finds_nothing(store: CornersInMemory) -> None:
    flat = keypoints.extract_query(Image.new("RGB", (400, 300), (128, 128, 128)))
    assert copysearch.search(store, COPYDETECT, flat, count=10) == []  # type: ignore[arg-type]


def test_a_picture_stored_under_many_urls_is_found_under_each(store: CornersInMemory) -> None:
    """Six urls with the same corners: each query corner's 4 nearest are 4 of them, always the same
    4; the other two come with them (the same fingerprint)."""
    row, features = store.images[image_of(store, "chelsea")]
    copies = dict(store.images)
    for index in range(5):
        copy = ImageRow(url(f"chelsea-{index}"), {}, row.width, row.height, row.corners, row.fingerprint)
        copies[keypoint_data.new_image_id()] = (copy, features)
    query = keypoints.extract_query(crop("chelsea", (0.2, 0.2, 0.8, 0.8)))
    hits = copysearch.search(CornersInMemory(copies), COPYDETECT, query, count=10)  # type: ignore[arg-type]
    found = sorted(hit.url for hit in hits if hit.match.inliers >= 6)
    assert found == sorted([url("chelsea")] + [url(f"chelsea-{index}") for index in range(5)]), hits
    assert len({hit.match for hit in hits if hit.match.inliers >= 6}) == 1


def test_the_placed_candidates_are_checked_and_a_few_others_besides(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each check reads an image's corners from Milvus: the candidates whose voting pairs agree on a
    placement are checked, as many as asked for, and the next ones only up to MIN_CHECKED."""
    monkeypatch.setattr(copysearch, "MIN_CHECKED", 4)
    ranked = [(11, 9), (12, 5), (13, 3), (21, 0), (22, 0), (23, 0), (24, 0), (25, 0)]
    assert copysearch.checked(ranked, 10) == [11, 12, 13, 21]
    assert copysearch.checked(ranked, 2) == [11, 12, 13, 21]
    placed = [(image, 9) for image in range(10)]
    assert copysearch.checked(placed, 6) == list(range(6))
    unplaced = [(image, 0) for image in range(30, 40)]
    assert copysearch.checked(unplaced, 10) == [30, 31, 32, 33]
    many = [(image, 5) for image in range(200)]
    assert copysearch.checked(many, 500) == list(range(copysearch.MAX_CHECKED))
    assert copysearch.checked([], 10) == []
