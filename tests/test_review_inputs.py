"""Hostile inputs that got around a limit of the front door, the fetcher or the decoder."""

from __future__ import annotations

import pytest

from idios.config import Settings
from idios.decoding import decode_image, jpeg_scans
from idios.errors import IdiosError

from hostile_files import many_scans


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
