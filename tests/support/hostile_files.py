"""Small files that are expensive to decode: flat images in wide modes, progressive JPEGs with many
scans. Shared by the decode tests and the hostile-corpus benchmark."""

from __future__ import annotations

import io
import re
import struct
import zlib

from PIL import Image
from skimage import data as skdata


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def flat_png(side: int, color_type: int, bit_depth: int, pixel: bytes) -> bytes:
    """A PNG of one colour, `side` x `side`, written row by row (the test process never holds the image)."""
    packer = zlib.compressobj(6)
    row = b"\x00" + pixel * side
    stream = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b"")


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


_NEXT_MARKER = re.compile(rb"\xff+([^\x00\xd0-\xd7\xff])")


def many_scans(count: int) -> bytes:
    """A progressive JPEG with `count` scans: Pillow's own (10), then copies of its smallest scan."""
    data = encode(Image.fromarray(skdata.astronaut()), "JPEG", progressive=True, quality=90)
    pos, scans, head_end = 2, [], 0
    while data[pos + 1] != 0xD9:
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if data[pos + 1] == 0xDA:
            found = _NEXT_MARKER.search(data, end)
            assert found is not None
            end = found.start(1) - 1
            scans.append(data[pos:end])
        pos = head_end = end
    assert len(scans) <= count
    return data[:head_end] + min(scans, key=len) * (count - len(scans)) + b"\xff\xd9"
