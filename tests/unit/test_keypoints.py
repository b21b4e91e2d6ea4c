"""Copy detection's local features (`idios.keypoints`) on real photos: copies are found with the
region they share, unrelated photos are not."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from idios import keypoint_data, keypoints

from tests.support.photos import PHOTO_NAMES, photo

POINTS = 256


def crop(image: Image.Image, x0: float, y0: float, x1: float, y1: float) -> Image.Image:
    w, h = image.size
    return image.crop((round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h)))


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


@pytest.fixture(scope="module")
def originals() -> dict[str, keypoint_data.Keypoints]:
    return {name: keypoints.extract(photo(name), POINTS) for name in PHOTO_NAMES}


def best(query: Image.Image, originals: dict[str, keypoint_data.Keypoints]) -> tuple[str, dict[str, int]]:
    features = keypoints.extract(query, POINTS)
    found = {name: keypoints.match(features, target) for name, target in originals.items()}
    inliers = {name: match.inliers if match else 0 for name, match in found.items()}
    return max(inliers, key=inliers.__getitem__), inliers


def test_features_are_spread_over_the_whole_picture(originals: dict[str, keypoint_data.Keypoints]) -> None:
    features = originals["astronaut"]
    assert len(features) == POINTS and features.descriptors.shape == (POINTS, 32)
    assert max(features.width, features.height) == keypoints.ANALYSED_SIDE
    # Per sixteenth of the picture: ORB's own strongest 256 crowd into the busy ones (60 in one, 6
    # sixteenths with 1 or none); spread, no sixteenth holds more than 32 (an eighth).
    sixteenths = np.minimum((features.points * 4).astype(int), 3) @ np.array([1, 4])
    counts = np.bincount(sixteenths, minlength=16)
    assert counts.max() <= POINTS // 8 and (counts >= 5).sum() >= 14, counts


@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_a_crop_of_a_quarter_is_found_with_its_region(name: str, originals: dict[str, keypoint_data.Keypoints]) -> None:
    region = (0.2, 0.35, 0.7, 0.85)
    found, inliers = best(crop(photo(name), *region), originals)
    assert found == name, inliers
    match = keypoints.match(keypoints.extract(crop(photo(name), *region), POINTS), originals[name])
    assert match is not None
    assert iou(match.target_box, region) > 0.85, match
    assert iou(match.query_box, (0, 0, 1, 1)) > 0.9, match
    assert match.query_overlap > 0.9 and 0.2 < match.target_overlap < 0.3, match


@pytest.mark.parametrize(
    "change",
    [
        lambda image: image.rotate(90, expand=True),
        lambda image: image.rotate(15, expand=True, fillcolor=(255, 255, 255)),
        lambda image: jpeg(image, 10),
        lambda image: image.filter(ImageFilter.GaussianBlur(2)),
        lambda image: ImageOps.grayscale(image).convert("RGB"),
        lambda image: image.resize((image.width // 3, image.height // 3)),
    ],
    ids=["rotated 90", "rotated 15", "jpeg 10", "blurred", "greyscale", "a third of the size"],
)
def test_changed_copies_are_found(change, originals: dict[str, keypoint_data.Keypoints]) -> None:
    for name in ("astronaut", "coffee", "camera"):
        found, inliers = best(change(photo(name)), originals)
        assert found == name and inliers[name] >= 6, inliers
        assert max(count for other, count in inliers.items() if other != name) <= 4, inliers


def test_a_small_crop_is_found_with_its_region(originals: dict[str, keypoint_data.Keypoints]) -> None:
    """12% of the picture's area, analysed at several sides: at one of them it meets its original's scale."""
    region = (0.35, 0.3, 0.70, 0.64)
    for name in ("astronaut", "coffee", "immunohistochemistry"):
        query = keypoints.extract_query(crop(photo(name), *region))
        found = {other: keypoints.best_match(query, target) for other, target in originals.items()}
        inliers = {other: match.inliers if match else 0 for other, match in found.items()}
        assert max(inliers, key=inliers.__getitem__) == name and inliers[name] >= 5, inliers
        assert iou(found[name].target_box, region) > 0.85, found[name]  # type: ignore[union-attr]


def test_a_picture_pasted_into_a_screenshot_is_found(originals: dict[str, keypoint_data.Keypoints]) -> None:
    window = Image.new("RGB", (1280, 800), (236, 236, 236))
    draw = ImageDraw.Draw(window)
    draw.rectangle((0, 0, 1280, 40), fill=(60, 60, 70))
    for y in range(60, 780, 24):
        draw.text((12, y), f"menu item {y}", fill=(20, 20, 20))
    pasted = photo("rocket").copy()
    pasted.thumbnail((640, 480))
    window.paste(pasted, (400, 150))
    match = keypoints.best_match(keypoints.extract_query(window), originals["rocket"])
    assert match is not None and match.inliers >= 10, match
    where = (400 / 1280, 150 / 800, (400 + pasted.width) / 1280, (150 + pasted.height) / 800)
    assert iou(match.query_box, where) > 0.85 and match.target_overlap > 0.95, match


def test_a_framed_copy_says_where_the_picture_lies_in_it(originals: dict[str, keypoint_data.Keypoints]) -> None:
    image = photo("chelsea")
    framed = ImageOps.expand(image, border=(100, 50, 100, 50), fill=(0, 0, 0))
    match = keypoints.match(keypoints.extract(framed, POINTS), originals["chelsea"])
    assert match is not None
    inner = (100 / framed.width, 50 / framed.height, 1 - 100 / framed.width, 1 - 50 / framed.height)
    assert iou(match.query_box, inner) > 0.9, match
    assert match.target_overlap > 0.95, match


def test_a_mirrored_copy_needs_the_mirrored_query(originals: dict[str, keypoint_data.Keypoints]) -> None:
    mirrored = ImageOps.mirror(photo("astronaut"))
    direct = keypoints.match(keypoints.extract(mirrored, POINTS), originals["astronaut"])
    assert direct is None or direct.inliers < 10  # symmetric details may pair up, a few
    again = keypoints.match(keypoints.extract(ImageOps.mirror(mirrored), POINTS), originals["astronaut"])
    assert again is not None and again.inliers > 60


def test_unrelated_photos_do_not_match(originals: dict[str, keypoint_data.Keypoints]) -> None:
    counts = [
        (match.inliers if (match := keypoints.match(originals[a], originals[b])) else 0)
        for a in PHOTO_NAMES
        for b in PHOTO_NAMES
        if a != b
    ]
    assert max(counts) <= 4, counts
    assert keypoint_data.similarity(max(counts)) < 25


def test_images_without_corners_match_nothing(originals: dict[str, keypoint_data.Keypoints]) -> None:
    flat = keypoints.extract(Image.new("RGB", (300, 200), (120, 130, 140)), POINTS)
    assert len(flat) == 0 and (flat.width, flat.height) == (512, 341)
    assert keypoints.match(flat, originals["astronaut"]) is None
    assert keypoints.match(originals["astronaut"], flat) is None
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8))
    assert best(noise, originals)[1][max(best(noise, originals)[1], key=best(noise, originals)[1].get)] <= 4


def test_similarity_grows_with_the_agreeing_pairs() -> None:
    scores = [keypoint_data.similarity(n) for n in (0, 2, 3, 6, 10, 30, 200)]
    assert scores == sorted(scores) and scores[0] == scores[1] == 0 and scores[-1] == 100
    assert keypoint_data.similarity(5) < 39 <= keypoint_data.similarity(6)


def test_the_stored_form_restores_to_keypoints_that_match_as_before(
    originals: dict[str, keypoint_data.Keypoints],
) -> None:
    features = originals["coffee"]
    stored = keypoint_data.pack(features)
    assert len(stored) == 6 + POINTS * 36  # 9,222 bytes for 256 corners
    again = keypoint_data.unpack(stored)
    assert keypoint_data.pack(again) == stored, "a dump restores byte for byte"
    assert (again.width, again.height) == (features.width, features.height)
    assert np.array_equal(again.descriptors, features.descriptors)
    assert np.abs(again.pixels() - features.pixels()).max() < 0.01, "positions within a hundredth of a pixel"
    query = keypoints.extract_query(crop(photo("coffee"), 0.1, 0.1, 0.6, 0.6))
    before, after = keypoints.best_match(query, features), keypoints.best_match(query, again)
    assert before is not None and after is not None and abs(before.inliers - after.inliers) <= 1
    empty = keypoints.extract(Image.new("RGB", (200, 200)), POINTS)
    assert len(keypoint_data.unpack(keypoint_data.pack(empty))) == 0


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "too few"),
        (b"\x00\x02\x00\x02\x01\x00", "take 42 bytes, not 6"),
        (b"\x00\x02\x00\x02\x00\x00" + b"\x00" * 36, "take 6 bytes, not 42"),
        (b"\x00\x00\x00\x02\x00\x00", "0 x 512"),
    ],
)
def test_bytes_that_are_not_keypoints_are_refused(data: bytes, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        keypoint_data.unpack(data)


def test_a_small_detail_drawn_alike_in_unrelated_images_counts_once() -> None:
    """Unrelated drawings of shapes (the copy benchmark's distractors) each hold a small ring: ORB
    finds it at several scales and points, and the pairs at that one place agree on a placement.
    Counted per pair, these reached 18 to 24 agreeing pairs; counted per place, a few."""
    from benchmarks.copies import distractor, distractor_kind

    for query, target in ((100395, 74923), (100631, 67243), (100219, 34943)):
        assert distractor_kind(query) == distractor_kind(target) == "shapes"
        analyses = keypoints.extract_query(jpeg(distractor(query), 88))
        found = keypoints.best_match(analyses, keypoints.extract(jpeg(distractor(target), 88), POINTS))
        assert found is None or found.inliers <= 5, (query, target, found)


def test_agreeing_pairs_count_once_per_place() -> None:
    rng = np.random.default_rng(3)
    detail = np.array([[100.0, 100.0]]) + rng.uniform(-2.5, 2.5, (40, 2))  # one detail found 40 times
    assert keypoints._places(detail) == 1
    grid = np.array([[x, y] for x in range(0, 200, 10) for y in range(0, 200, 10)], dtype=float)  # 10 px apart
    assert keypoints._places(grid) == 400
    assert keypoints._places(grid, most=25) == 25
    assert keypoints._places(np.repeat(grid[:3], 700, axis=0)) == 3  # 2,100 pairs at three places
    assert keypoints._places(np.empty((0, 2))) == 0
