"""The copy-detection benchmark's images (`benchmarks.copies`): distractors are deterministic, distinct,
of the promised sizes and busy enough for a corner detector; queries come from every family, and a
crop's region is exactly what was cut out."""

from __future__ import annotations

import hashlib
import io
import math

import cv2
import numpy as np
import pytest
from PIL import Image

from benchmarks import copies
from benchmarks.copies import (
    DISTRACTOR_KINDS,
    FAMILIES,
    MOSAIC_SOURCES,
    ORIGINALS,
    Query,
    distractor,
    distractor_kind,
    encode_jpeg,
    make_query,
    original,
    queries,
)

# Every kind several times, from the first indices to the millionth.
INDICES = (*range(16), 4_097, 65_538, 123_455, 999_996, 999_997, 999_998, 999_999)
CROPS = {"crop50": 0.5, "crop25": 0.25, "crop12": 0.12}


@pytest.fixture(scope="module")
def distractors() -> dict[int, Image.Image]:
    return {index: distractor(index) for index in INDICES}


def digest(image: Image.Image) -> str:
    return hashlib.sha256(repr(image.size).encode() + image.tobytes()).hexdigest()


def test_the_same_index_gives_the_same_pixels(distractors: dict[int, Image.Image]) -> None:
    for index in (*range(len(DISTRACTOR_KINDS)), 999_999):
        assert digest(distractor(index)) == digest(distractors[index]), distractor_kind(index)


def test_different_indices_give_different_images(distractors: dict[int, Image.Image]) -> None:
    assert len({digest(image) for image in distractors.values()}) == len(INDICES)


def test_distractors_are_rgb_400_to_1000_pixels_on_the_longer_side_and_of_their_kind(
    distractors: dict[int, Image.Image],
) -> None:
    for index, image in distractors.items():
        assert image.mode == "RGB"
        assert 400 <= max(image.size) <= 1000 and min(image.size) >= 200, (index, image.size)
        assert distractor_kind(index) == DISTRACTOR_KINDS[index % len(DISTRACTOR_KINDS)]
    assert len({image.size for image in distractors.values()}) > len(INDICES) // 2


def test_distractors_have_corners_to_match(distractors: dict[int, Image.Image]) -> None:
    orb = cv2.ORB.create(nfeatures=1024)
    counts = {index: len(orb.detect(np.asarray(image.convert("L")), None)) for index, image in distractors.items()}
    assert sum(count >= 100 for count in counts.values()) >= 0.85 * len(counts), counts


def test_a_negative_index_is_refused() -> None:
    with pytest.raises(ValueError):
        distractor(-1)


def test_originals_are_real_rgb_photos_loaded_once() -> None:
    assert len(ORIGINALS) >= 15 and len(set(ORIGINALS)) == len(ORIGINALS)
    for name in ORIGINALS:
        image = original(name)
        assert image.mode == "RGB" and min(image.size) >= 150, name
    assert original("astronaut") is original("astronaut")
    with pytest.raises(ValueError):
        original("motorcycle_left")


def thumbnail(array: np.ndarray) -> np.ndarray:
    """The picture in grey at 32 x 32, with zero mean and unit norm: pictures compare by a dot product."""
    grey = cv2.resize(
        cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGB2GRAY), (32, 32), interpolation=cv2.INTER_AREA
    )
    values = grey.astype(np.float64).ravel()
    values -= values.mean()
    return values / np.linalg.norm(values)


def test_mosaics_are_cut_from_photos_that_are_not_originals() -> None:
    assert set(ORIGINALS).isdisjoint(MOSAIC_SOURCES)
    # Nor the same picture under another name (scikit-image's `cat` is `chelsea`), mirrored or not.
    sources = [copies._photo(name) for name in MOSAIC_SOURCES]
    for name in ORIGINALS:
        for view in (np.asarray(original(name)), np.asarray(original(name))[:, ::-1]):
            target = thumbnail(view)
            similarities = [float(target @ thumbnail(source)) for source in sources]
            assert max(similarities) < 0.8, (name, similarities)
    # The mosaics' patches come from those photos and no others.
    used = {variant.shape[:2] for variants in copies._mosaic_sources() for variant in variants}
    assert used == {copies._photo(name).shape[:2] for name in MOSAIC_SOURCES}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_makes_a_deterministic_rgb_image(family: str) -> None:
    query = make_query("coffee", family, 3)
    assert isinstance(query, Query)
    assert (query.family, query.original, query.image.mode) == (family, "coffee", "RGB")
    assert min(query.image.size) > 0
    assert query.mirrored == (family == "flip")
    assert (query.region is not None) == (family in CROPS)
    assert digest(make_query("coffee", family, 3).image) == digest(query.image)
    assert digest(query.image) != digest(original("coffee"))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_the_families_do_what_they_say() -> None:
    image = original("coffee")
    width, height = image.size
    made = {family: make_query("coffee", family, 0).image for family in FAMILIES}
    assert np.array_equal(pixels(made["flip"]), pixels(image)[:, ::-1])
    assert np.array_equal(pixels(made["rot180"]), pixels(image)[::-1, ::-1])
    assert np.array_equal(pixels(made["rot90"]), np.rot90(pixels(image)))
    turned = width * math.cos(math.radians(15)) + height * math.sin(math.radians(15))
    assert made["rot15"].width == pytest.approx(turned, abs=2)
    assert made["border15"].size == (width + 2 * round(0.15 * width), height + 2 * round(0.15 * height))
    framed = pixels(made["border15"])
    assert np.array_equal(
        framed[round(0.15 * height) : -round(0.15 * height), round(0.15 * width) : -round(0.15 * width)], pixels(image)
    )
    assert len(np.unique(framed[0].reshape(-1, 3), axis=0)) == 1
    covered = (pixels(made["box_overlay"]) != pixels(image)).any(axis=2).mean()
    assert 0.08 <= covered <= 0.22
    assert 0.01 <= (pixels(made["text_overlay"]) != pixels(image)).any(axis=2).mean() <= 0.5
    grey = pixels(made["greyscale"])
    assert np.array_equal(grey[:, :, 0], grey[:, :, 1]) and np.array_equal(grey[:, :, 1], grey[:, :, 2])
    for family in ("brightness", "contrast", "saturation", "jpeg10", "blur2"):
        assert made[family].size == image.size
        assert np.abs(pixels(made[family]) - pixels(image)).mean() > 2, family
    assert made["screenshot"].size == copies.SCREEN_SIZE


@pytest.mark.parametrize("family", CROPS)
@pytest.mark.parametrize("name", ["astronaut", "text", "retina"])  # square, wide, large
def test_a_crop_keeps_its_share_of_the_original_and_says_where(family: str, name: str) -> None:
    image = original(name)
    width, height = image.size
    regions = set()
    for seed in range(4):
        query = make_query(name, family, seed)
        assert query.region is not None
        x0, y0, x1, y1 = query.region
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        assert (x1 - x0) * (y1 - y0) == pytest.approx(CROPS[family], rel=0.03)
        assert math.exp(-0.35) < (x1 - x0) / (y1 - y0) < math.exp(0.35)  # about the original's aspect
        box = (round(x0 * width), round(y0 * height), round(x1 * width), round(y1 * height))
        assert query.image.size == (box[2] - box[0], box[3] - box[1])
        assert np.array_equal(pixels(query.image), pixels(image.crop(box)))
        regions.add(query.region)
    assert len(regions) == 4  # a new position for every seed


def test_queries_take_every_original_through_every_family(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[tuple[str, str, int]] = []

    def make(name: str, family: str, seed: int) -> tuple[str, str, int]:
        made.append((name, family, seed))
        return name, family, seed

    monkeypatch.setattr(copies, "make_query", make)
    result = queries(per_family=2, seed=5)
    assert len(result) == len(ORIGINALS) * len(FAMILIES) * 2 == len(set(made))
    assert {(name, family) for name, family, _ in made} == {(n, f) for n in ORIGINALS for f in FAMILIES}
    assert {seed for _, _, seed in made} == {5, 6}


def test_encode_jpeg_writes_a_jpeg_of_the_quality_asked() -> None:
    image = original("chelsea")
    data = encode_jpeg(image)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == "JPEG" and decoded.size == image.size
    assert len(encode_jpeg(image, quality=10)) < len(data) / 2
    assert encode_jpeg(image) == data
