"""Content decoding on its own (no server): bomb sizes, any split of the body, the size limit, gzip members."""

from __future__ import annotations

import gzip
import itertools
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idios.errors import TooLarge
from idios.images import DECODE_STEP, ContentDecoding

from tests.support.imageserver import compression_bomb, encode

MiB = 1 << 20
LIMIT = 20 * MiB  # the default max_download_bytes


ENCODINGS = ["gzip", "x-gzip", "deflate", "br", "zstd"]
STACKED = ["gzip, br", "deflate, zstd", "br, gzip"]


def test_bomb_sizes() -> None:
    """The corpus's bombs are what they claim: small bodies that inflate to exactly their size."""
    for encoding in ("gzip", "deflate"):
        body = compression_bomb(encoding, 64 * MiB)
        inflated = zlib.decompress(body, 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
        assert len(inflated) == 64 * MiB and not inflated.strip(b"\0")
        assert len(compression_bomb(encoding)) < 1_100_000


# ---------------------------------------------------------------- the decoder alone


def _decode_in_pieces(encodings: str, body: bytes, cuts: list[int], limit: int) -> bytes:
    decoding = ContentDecoding(encodings.split(","), limit)
    out = bytearray()
    edges = sorted({0, len(body), *(cut % (len(body) + 1) for cut in cuts)})
    for start, end in itertools.pairwise(edges):
        for piece in decoding.feed(body[start:end]):
            assert len(piece) <= 2 * DECODE_STEP
            out += piece
    for piece in decoding.finish():
        out += piece
    return bytes(out)


@given(
    data=st.binary(max_size=3000),
    zeros=st.integers(0, 600_000),
    encodings=st.sampled_from(ENCODINGS + STACKED + ["gzip, gzip", "zstd, br, deflate"]),
    cuts=st.lists(st.integers(0, 1 << 30), max_size=12),
)
@settings(max_examples=60, deadline=None)
def test_decoding_any_split_of_the_body(data: bytes, zeros: int, encodings: str, cuts: list[int]) -> None:
    """However the network splits the body, the output is the original, in bounded pieces."""
    original = data + bytes(zeros) + data
    assert _decode_in_pieces(encodings, encode(encodings, original), cuts, LIMIT) == original


@given(encodings=st.sampled_from(ENCODINGS + STACKED), cuts=st.lists(st.integers(0, 1 << 30), max_size=6))
@settings(max_examples=20, deadline=None)
def test_decoding_over_the_limit_raises_413(encodings: str, cuts: list[int]) -> None:
    body = encode(encodings, bytes(3 * MiB))
    with pytest.raises(TooLarge):
        _decode_in_pieces(encodings, body, cuts, 2 * MiB)


def test_gzip_members_split_anywhere() -> None:
    """A member boundary split between the two bytes of the next member's magic number."""
    first, second = gzip.compress(b"a" * 1000), gzip.compress(b"b" * 1000)
    body = first + second
    for cut in range(len(first) - 3, len(first) + 4):
        assert _decode_in_pieces("gzip", body, [cut, cut + 1], LIMIT) == b"a" * 1000 + b"b" * 1000
    # Bytes after the stream that start no member are ignored, as httpx does.
    assert _decode_in_pieces("gzip", first + b"\n\x00junk", [len(first) + 1], LIMIT) == b"a" * 1000
