"""Copy detection's data without OpenCV (`idios.keypoint_data`): the rows a batch carries, the keys and
positions the store keeps, the JSON form of a dump (`ModelSpec.to_public`, `from_public`), and how a
match reads seen from the other image or found by the mirrored query."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from idios import keypoint_data, pages
from idios.errors import Invalid
from idios.keypoint_data import MAX_BYTES, Keypoints, Match
from idios.specs import COPYDETECT, VIT_B32


def keypoints(count: int, seed: int = 0, size: tuple[int, int] = (512, 384)) -> Keypoints:
    rng = np.random.default_rng(seed)
    points = rng.random((count, 2)).astype(np.float32)
    descriptors = rng.integers(0, 256, (count, 32), dtype=np.uint8)
    return Keypoints(points, descriptors, *size)


def test_a_batch_holds_stored_forms_of_any_length() -> None:
    packed = [keypoint_data.pack(keypoints(count)) for count in (256, 256, 0, 17)]
    assert len(packed[0]) == MAX_BYTES and len(packed[2]) == 6
    rows = keypoint_data.batch(packed)
    assert rows.shape == (4,) and rows.dtype == object and list(rows) == packed, "not a 2-D array of bytes"
    assert keypoint_data.batch([]).shape == (0,)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda data: data + b"\x00", "take 3606 bytes, not 3607"),
        (lambda data: data[:4] + (258).to_bytes(2, "little") + data[6:], "at most 256"),
        (lambda data: b"\x00\x00" + data[2:], "0 x 384"),
    ],
)
def test_bytes_that_are_not_keypoints_are_refused(change, says: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=says):
        keypoint_data.unpack(change(keypoint_data.pack(keypoints(100))))


def test_a_position_outside_the_image_is_refused() -> None:
    packed = bytearray(keypoint_data.pack(keypoints(3)))
    packed[6:8] = (60000).to_bytes(2, "little")  # x = 600.00 px in an image 512 wide
    with pytest.raises(ValueError, match="outside"):
        keypoint_data.unpack(bytes(packed))


def test_pack_refuses_what_it_could_not_give_back() -> None:
    with pytest.raises(ValueError, match="at most 256"):
        keypoint_data.pack(keypoints(257))
    with pytest.raises(ValueError, match="700 x 300"):
        keypoint_data.pack(keypoints(3, size=(700, 300)))


def test_each_write_keys_its_corners_anew() -> None:
    images = {keypoint_data.new_image_id() for _ in range(1000)}
    assert len(images) == 1000 and all(0 <= image < 2**keypoint_data.IMAGE_BITS for image in images)
    image = images.pop()
    keys = keypoint_data.corner_ids(image, 256)
    assert keys.dtype == np.int64 and (keys >= 0).all() and len(set(keys.tolist())) == 256
    assert (keys >> keypoint_data.CORNER_BITS == image).all()
    assert keypoint_data.corner_ids(image, 256, 250).tolist() == keys[250:].tolist()


def test_the_same_keypoints_have_the_same_fingerprint() -> None:
    packed = keypoint_data.pack(keypoints(256, seed=1))
    assert keypoint_data.fingerprint(packed) == keypoint_data.fingerprint(bytes(packed))
    assert keypoint_data.fingerprint(packed) != keypoint_data.fingerprint(keypoint_data.pack(keypoints(256, seed=2)))
    assert 0 <= keypoint_data.fingerprint(packed) < 2**63


def test_positions_in_the_store_are_the_pixels_within_a_hundredth() -> None:
    features = keypoints(200)
    positions = keypoint_data.positions(features)
    assert positions.dtype == np.int32
    assert np.abs(keypoint_data.pixels_of(positions) - features.pixels()).max() <= 0.005 + 1e-4


def test_a_dump_row_is_base64_and_restores_byte_for_byte() -> None:
    packed = keypoint_data.pack(keypoints(256, seed=3))
    text = COPYDETECT.to_public(packed)
    assert isinstance(text, str) and base64.b64decode(text) == packed
    assert COPYDETECT.from_public(text) == packed
    small = keypoint_data.pack(keypoints(5))
    rows = COPYDETECT.from_public([text, COPYDETECT.to_public(small)])
    assert list(rows) == [packed, small]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ([0.5] * 256, "base64 string of keypoints"),
        (["not base64!"], "row 0: not keypoints of copydetect"),
        ([base64.b64encode(b"\x00\x02").decode()], "too few"),
        (["A" * 20000], "row 0: not keypoints of copydetect: 20000 characters"),
    ],
)
def test_json_that_is_not_keypoints_is_refused(value: object, says: str) -> None:
    with pytest.raises(Invalid, match=says):
        COPYDETECT.from_public(value)


def test_a_page_of_keypoints_rows_fits_the_broker_message() -> None:
    budget = pages.budget(16 * 1024 * 1024)
    fits = pages.rows_that_fit(COPYDETECT, budget)
    assert 1000 < fits < 1300, fits
    text = COPYDETECT.to_public(keypoint_data.pack(keypoints(256)))
    assert abs(len(text) + 2 - COPYDETECT.public_bytes) <= 4, "the estimate is the JSON string itself"
    assert pages.rows_that_fit(VIT_B32, budget) > fits


def test_a_match_seen_from_the_other_image_and_found_by_the_mirror() -> None:
    match = Match(12, (0.1, 0.2, 0.5, 0.9), (0.0, 0.0, 1.0, 1.0), 0.28, 1.0)
    assert match.swapped() == Match(12, (0.0, 0.0, 1.0, 1.0), (0.1, 0.2, 0.5, 0.9), 1.0, 0.28)
    assert match.mirrored() == Match(12, (0.5, 0.2, 0.9, 0.9), (0.0, 0.0, 1.0, 1.0), 0.28, 1.0)
    assert match.mirrored().mirrored() == match


def test_similarity_is_calibrated_on_agreeing_pairs() -> None:
    assert [keypoint_data.similarity(n) for n in (2, 6, 10, 20)] == [0.0, 39.3469, 63.2121, 89.4601]
    assert COPYDETECT.similarity(6) == keypoint_data.similarity(6) == COPYDETECT.copy_similarity
