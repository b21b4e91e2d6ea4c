"""Image files whose structure (chunks, strips, segments, blocks, text) cost memory or CPU in Pillow
before any limit applied."""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from PIL import Image

from idios.config import Settings
from idios.decoding import decode_image, jpeg_scans, tiff_strips
from idios.errors import IdiosError

from tests.support.hostile_files import _chunk, encode, many_scans

MIB = 1024 * 1024


def _with_junk_after_first_segment(data: bytes) -> bytes:
    """`data` (a JPEG) with one byte that is no marker after its first segment: libjpeg and Pillow
    skip it with a warning and decode the rest."""
    end = 4 + int.from_bytes(data[4:6], "big")
    return data[:end] + b"\x00" + data[end:]


def test_junk_between_jpeg_segments_does_not_hide_the_scans() -> None:
    data = _with_junk_after_first_segment(many_scans(2000))
    assert jpeg_scans(data, 100) == 101
    with pytest.raises(IdiosError) as info:
        decode_image(data, Settings(_env_file=None))
    assert info.value.status == 422 and info.value.type == "too_many_scans"
    # A JPEG with junk but few scans still decodes.
    assert decode_image(_with_junk_after_first_segment(many_scans(10)), Settings(_env_file=None)).size == (256, 256)


def _png(side: int, chunks: list[bytes]) -> bytes:
    """A grey RGB PNG of `side` x `side` with `chunks` between its header and its image data."""
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
    idat = _chunk(b"IDAT", zlib.compress((b"\x00" + b"\x80" * 3 * side) * side))
    return b"\x89PNG\r\n\x1a\n" + ihdr + b"".join(chunks) + idat + _chunk(b"IEND", b"")


def test_a_png_of_empty_chunks_is_refused_before_pillow_walks_them() -> None:
    """Each chunk costs Pillow a step in Python: 1.2 MB of 100,000 empty ones took 0.7 s of CPU to open,
    a 20 MiB download of them 10 s (the whole decode timeout)."""
    settings = Settings(_env_file=None)
    for filler in (_chunk(b"abCd", b""), _chunk(b"IDAT", b"")):
        data = _png(200, [filler] * 100_000)
        with pytest.raises(IdiosError) as info:
            decode_image(data, settings)
        assert info.value.status == 422 and info.value.type == "too_many_chunks", info.value
        assert "30,000 chunks" in info.value.msg
    # Real files pass: a few text chunks, or image data written in 1 KiB chunks.
    assert decode_image(_png(200, [_chunk(b"tEXt", b"k\x00v")] * 20), settings).size == (200, 200)
    rows = random.Random(0).randbytes(400 * 1200)
    stream = zlib.compress(b"".join(b"\x00" + rows[y * 1200 : (y + 1) * 1200] for y in range(400)))
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 400, 400, 8, 2, 0, 0, 0))
    idats = [_chunk(b"IDAT", stream[i : i + 1024]) for i in range(0, len(stream), 1024)]
    assert len(idats) > 400
    small_idats = b"\x89PNG\r\n\x1a\n" + ihdr + b"".join(idats) + _chunk(b"IEND", b"")
    assert decode_image(small_idats, settings).size == (400, 400)


def _tiff_listing_strips(count: int, side: int = 200) -> bytes:
    """An uncompressed grey TIFF of `side` x `side` whose StripOffsets list `count` strips of one row,
    all pointing at its first row (Pillow makes a tile of each, starting new layers past the image)."""
    entries_at, entries = 8, 8
    offsets_at = entries_at + 2 + entries * 12 + 4
    counts_at = offsets_at + 4 * count
    pixels_at = counts_at + 2 * count
    tags = [(256, 3, 1, side), (257, 3, 1, side), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1)]
    tags += [(273, 4, count, offsets_at), (278, 3, 1, 1), (279, 3, count, counts_at)]
    ifd = struct.pack("<H", entries)
    for tag, kind, n, value in tags:
        ifd += struct.pack("<HHI", tag, kind, n) + (
            struct.pack("<HH", value, 0) if n == 1 else struct.pack("<I", value)
        )
    head = b"II*\x00" + struct.pack("<I", entries_at) + ifd + b"\x00" * 4
    return head + struct.pack("<I", pixels_at) * count + struct.pack("<H", side) * count + b"\x80" * side * side


def test_a_tiff_listing_more_strips_than_it_needs_is_refused_before_pillow_opens_it() -> None:
    """Pillow builds a Python tuple for every strip offset while opening: 6 MB listing a million strips of
    a 200 x 200 image took 271 MiB (outside the decode budget) and 9 s of CPU."""
    settings = Settings(_env_file=None)
    data = _tiff_listing_strips(150_000)
    assert len(data) < 1_000_000 and tiff_strips(data) == 150_000
    with pytest.raises(IdiosError) as info:
        decode_image(data, settings)
    assert info.value.status == 422 and info.value.type == "too_many_strips", info.value
    assert "100,000 strips or tiles" in info.value.msg
    assert decode_image(_tiff_listing_strips(200), settings).size == (200, 200)
    # Files Pillow writes are read as Pillow reads them, classic and BigTIFF.
    image = Image.new("L", (400, 3000), 128)
    deflate = {"compression": "tiff_adobe_deflate", "strip_size": 4000}
    for extra in (deflate, {**deflate, "big_tiff": True}):
        tiff = encode(image, "TIFF", **extra)
        assert tiff_strips(tiff) == len(Image.open(io.BytesIO(tiff)).tag_v2[273]) == 300, extra
        assert decode_image(tiff, settings).mode == "RGB"


def test_a_jpeg_of_empty_segments_is_refused_before_pillow_reads_them() -> None:
    """Pillow reads and keeps every segment before the first scan in Python: 4 MB of empty APP5 segments
    took 3.9 s of CPU and 137 MiB to open; a megabyte of junk bytes is read one byte a step."""
    settings = Settings(_env_file=None)
    jpeg = encode(Image.new("RGB", (200, 200), (1, 2, 3)), "JPEG")
    first = 4 + int.from_bytes(jpeg[4:6], "big")  # after the first segment (APP0)
    for filler in (b"\xff\xe5\x00\x02" * 100_000, b"\xff\xfe\x00\x02" * 100_000, b"\x00" * 1_000_000):
        with pytest.raises(IdiosError) as info:
            decode_image(jpeg[:first] + filler + jpeg[first:], settings)
        assert info.value.status == 422 and info.value.type == "too_many_segments", info.value
        assert "2,000 segments" in info.value.msg
    # Real metadata passes: an ICC profile, EXIF, comments, an XMP split in a hundred segments.
    exif = Image.Exif()
    exif[0x010E] = "a description"
    tagged = encode(Image.new("RGB", (200, 200)), "JPEG", exif=exif, comment=b"c", icc_profile=b"\x00" * 300_000)
    xmp = b"\xff\xe1\xff\xfe" + b"x" * 65532
    assert decode_image(tagged[:2] + xmp * 100 + tagged[2:], settings).size == (200, 200)


def test_a_gif_of_tiny_blocks_is_refused_before_pillow_reads_them() -> None:
    """Pillow reads a GIF's blocks before its first image one by one in Python and keeps a comment's
    pieces: 10 MB of one-byte comment sub-blocks took 430 MiB outside the decode budget and 2.5 s to open."""
    settings = Settings(_env_file=None)
    gif = encode(Image.new("P", (200, 200), 1), "GIF")
    screen = 13 + (3 << ((gif[10] & 7) + 1) if gif[10] & 0x80 else 0)
    for filler in (b"\x21\xfe" + b"\x01a" * 200_000 + b"\x00", b"\x21\xfe\x00" * 200_000):
        with pytest.raises(IdiosError) as info:
            decode_image(gif[:screen] + filler + gif[screen:], settings)
        assert info.value.status == 422 and info.value.type == "too_many_blocks", info.value
        assert "100,000 blocks" in info.value.msg
    # Real files pass: a comment, a loop count, several frames.
    frames = [Image.new("P", (200, 200), i) for i in range(3)]
    animated = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], loop=0, comment=b"x" * 2000)
    assert decode_image(animated, settings).size == (200, 200)


def _png_with_texts(count: int) -> bytes:
    """A PNG with `count` zTXt chunks of distinct keys, each inflating to 1 MiB from about 1 KB."""
    text = zlib.compress(b"a" * (MIB - 1), 9)
    return _png(200, [_chunk(b"zTXt", b"k%d\x00\x00" % i + text) for i in range(count)])


def test_png_text_chunks_cannot_inflate_to_tens_of_mib() -> None:
    """Pillow inflates text chunks while opening, up to 64 MiB in all by default: 63 KB took 63 MiB,
    none of it counted by the decode budget."""
    settings = Settings(_env_file=None)
    with pytest.raises(IdiosError) as info:
        decode_image(_png_with_texts(60), settings)
    assert info.value.status == 422 and info.value.type == "not_an_image", info.value
    assert decode_image(_png_with_texts(6), settings).size == (200, 200)  # 6 MiB of text still passes
