"""Model specs: similarity scores, public embeddings to stored vectors and back, compare."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from idios.errors import Invalid
from idios.specs import ModelSpec, spec

VIT = spec("vit_b32")
PHASH = spec("phash")


# ModelSpec


@pytest.mark.parametrize(
    ("score", "expected"),
    [(1.0, 100.0), (1.0000004, 100.0), (0.0, 0.0), (-0.3, 0.0), (-1.0, 0.0), (0.5, 50.0), (0.123456789, 12.3457)],
)
def test_cosine_similarity(score: float, expected: float) -> None:
    assert VIT.similarity(score) == expected


@pytest.mark.parametrize(
    ("distance", "expected"), [(0, 100.0), (64, 0.0), (32, 50.0), (1, 98.4375), (3, 95.3125), (63, 1.5625)]
)
def test_hamming_similarity(distance: int, expected: float) -> None:
    assert PHASH.similarity(distance) == expected


def test_similarity_rounds_to_four_places() -> None:
    assert VIT.similarity(1 / 3) == 33.3333
    assert VIT.similarity(2 / 3) == 66.6667
    hamming = ModelSpec("h", 3, "HAMMING", "binary", False, "three bits", copy_similarity=90.0)
    assert hamming.similarity(1) == 66.6667


def test_phash_public_round_trip() -> None:
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2, 64).tolist()
    stored = PHASH.from_public(bits)
    assert isinstance(stored, bytes) and len(stored) == 8
    assert PHASH.to_public(stored) == bits
    # Milvus hands binary vectors back wrapped in a one-element list.
    assert PHASH.to_public([stored]) == bits
    assert PHASH.from_public([1] + [0] * 63) == b"\x80" + bytes(7)


def test_float_public_round_trip_is_normalised() -> None:
    values = [3.0, 4.0] + [0.0] * 510
    stored = VIT.from_public(values)
    assert stored.dtype == np.float32 and stored.shape == (512,)
    assert float(np.linalg.norm(stored)) == pytest.approx(1.0, abs=1e-6)
    public = VIT.to_public(stored)
    assert public.dtype == np.float32 and public.shape == (512,)
    assert public[:3] == pytest.approx([0.6, 0.8, 0.0], abs=1e-7)
    assert orjson.loads(orjson.dumps(public, option=orjson.OPT_SERIALIZE_NUMPY))[:2] == [0.6, 0.8]
    np.testing.assert_allclose(VIT.from_public(public), stored, atol=1e-7)


def test_from_public_rejects_bad_embeddings() -> None:
    with pytest.raises(Invalid) as caught:
        VIT.from_public([0.1] * 511)
    assert caught.value.type == "wrong_dimension"
    assert "511" in caught.value.msg and "512" in caught.value.msg
    with pytest.raises(Invalid) as caught:
        PHASH.from_public([0] * 65)
    assert caught.value.type == "wrong_dimension"
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(Invalid) as caught:
            VIT.from_public([bad] + [0.5] * 511)
        assert caught.value.type == "bad_embedding"
    with pytest.raises(Invalid) as caught:
        PHASH.from_public([math.nan] + [0] * 63)
    assert caught.value.type == "bad_embedding"
    for bad_bit in (2, -1, 0.5):
        with pytest.raises(Invalid) as caught:
            PHASH.from_public([bad_bit] + [0] * 63)
        assert caught.value.type == "bad_embedding"
    with pytest.raises(Invalid) as caught:
        VIT.from_public([0.0] * 512)
    assert caught.value.type == "bad_embedding"


def test_compare() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(512), rng.standard_normal(512)
    assert VIT.compare(a, a) == 100.0
    assert VIT.compare(a, 3 * a) == 100.0
    assert VIT.compare(a, -a) == 0.0
    assert 0.0 < VIT.compare(a, a + 0.5 * b) < 100.0
    bits = PHASH.from_public(rng.integers(0, 2, 64).tolist())
    assert PHASH.compare(bits, bits) == 100.0
    flipped = bytes(x ^ 0xFF for x in bits)
    assert PHASH.compare(bits, flipped) == 0.0
    half = bytes(x ^ 0xFF if i < 4 else x for i, x in enumerate(bits))
    assert PHASH.compare(bits, half) == 50.0
