"""Decoding of client-supplied image bytes, within a memory budget.

`decode_image` refuses oversized or malformed images before decoding them and returns an RGB
image no larger than `max_image_side`. It runs in two steps so that a caller can budget memory
between them: `open_image` reads only the header (checks the declared size, counts a JPEG's scans,
estimates the bytes the decode will hold) and `decode_opened` decodes. The conversion to RGB works
in strips of rows, so whatever the mode (16-bit, 32-bit, float, alpha), a decode holds the image
in its own mode once plus a small RGB result, never a full-size wide copy.

`DecodeBudget` caps the decoded bytes in flight across a process; `idios.jobs` acquires each
image's estimate from it before decoding.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import io
import math
import re
import struct
import threading
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from .config import Settings
from .errors import IdiosError, Invalid, TooLarge

# Formats a client may send. Others (EPS runs Ghostscript, and many exotic
# formats have little-tested decoders) are refused as not an image.
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF")

# `decode_image` applies its own pixel limit after reading the declared size;
# Pillow's limit stays as a backstop (raised to ours where needed), without its warning.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# Pixels converted at a time: an RGBA strip of this many pixels is 4 MiB, its float64 working
# copy (32-bit and float modes) 8 MiB.
STRIP_PIXELS = 1 << 20
# What one strip's conversion holds at most (the strip, its wide copy, its RGB forms) and the
# allocator's slack, added to each estimate; and the margin on the rest, from measured peaks.
STRIP_BYTES = STRIP_PIXELS * 32
ESTIMATE_MARGIN = 1.05

MIB = 1024 * 1024

# Pillow reads a PNG's chunks one at a time in Python, an unknown one through a caught exception:
# about 7 us each, so 20 MiB of empty chunks (1.74 million) held a decode thread for 10 s of CPU,
# as long as IDIOS_DECODE_TIMEOUT. Real files have a few dozen (a 20 MiB one in 1 KiB IDATs: 20,480).
MAX_PNG_CHUNKS = 30_000
# Pillow inflates a PNG's text chunks while opening it, up to 1 MiB each and 64 MiB in all: 63 KB of
# zTXt chunks took 63 MiB, outside the decode budget. Real text (XMP included) is far under 8 MiB.
PngImagePlugin.MAX_TEXT_MEMORY = 8 * MIB
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Pillow turns every strip or tile offset of a TIFF's first page into a Python tuple while opening it,
# as many as the file lists, whatever the image needs (the extra ones start further layers): 6 MB
# listing a million strips of a 200 x 200 image took 271 MiB and 3 s of CPU to open, 9 s to decode.
# A real file needs one per strip or tile: a 7,200-row RGB image stored a row a strip in separate
# planes has 21,600, a 52 Mpx one in 64 px tiles 12,700.
MAX_TIFF_STRIPS = 100_000
# Pillow also reads a JPEG's segments before its first scan in Python, and keeps each (applist), and skips
# bytes between them one at a time: 4 MB of empty APP segments took 3.9 s of CPU and 137 MiB to open.
# Real files have a few dozen; XMP and ICC profiles split in 64 KiB segments add one per 64 KiB.
MAX_JPEG_HEADER_STEPS = 2_000
# And a GIF's blocks before its first image, sub-block by sub-block, keeping comments' as a list of
# pieces: 10 MB of one-byte comment sub-blocks took 430 MiB and 2.5 s to open. Real files have a few
# (an XMP packet, which GIF readers take as sub-blocks, a few thousand).
MAX_GIF_BLOCKS = 100_000
TIFF_HEADERS = (b"MM\x00\x2a", b"II\x2a\x00", b"MM\x2a\x00", b"II\x00\x2a", b"MM\x00\x2b", b"II\x2b\x00")  # Pillow's


@dataclass
class OpenedImage:
    """An image whose header has been read and checked, not yet decoded."""

    image: Image.Image
    cost: int  # estimated bytes the decode holds at its peak


def _allowed_formats() -> tuple[str, ...]:
    Image.init()
    return tuple(fmt for fmt in ALLOWED_FORMATS if fmt in Image.OPEN)


def decode_image(data: bytes, settings: Settings) -> Image.Image:
    """Decode `data` to an RGB image whose longest side is at most `settings.max_image_side`.

    CPU bound: run it in a thread. Raises only `IdiosError` subclasses for bad input.
    """
    return decode_opened(open_image(data, settings), settings)


def open_image(
    data: bytes, settings: Settings, min_side: int | None = None, smallest_side: int | None = None
) -> OpenedImage:
    """Read and check the header of `data` without decoding its pixels; estimate the decode's memory.
    A large JPEG is decoded at reduced scale while both sides stay at least `min_side` (default
    `settings.decode_min_side`); an image whose shorter side is under `smallest_side` (default
    `settings.min_image_side`) is refused.

    Refuses (413) an image declaring more than `max_image_pixels` or needing more than the whole
    `decode_budget_bytes`, (422) one too small, not an image, or a JPEG with too many scans.
    """
    if Image.MAX_IMAGE_PIXELS is not None and settings.max_image_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
    if not data:
        raise Invalid("the url did not return an image (empty body)", type="not_an_image")
    scans = 0
    if data[:3] == b"\xff\xd8\xff" and jpeg_header_steps(data, MAX_JPEG_HEADER_STEPS) > MAX_JPEG_HEADER_STEPS:
        raise Invalid(
            f"the JPEG has more than {MAX_JPEG_HEADER_STEPS:,} segments before its image data (a real one has a "
            "few dozen); each costs a step of the decoder",
            type="too_many_segments",
        )
    if data[:3] == b"\xff\xd8\xff":
        scans = jpeg_scans(data, settings.max_jpeg_scans)
        if scans > settings.max_jpeg_scans:
            raise Invalid(
                f"the JPEG has more than {settings.max_jpeg_scans} scans (a real progressive JPEG has about 10); "
                "each scan costs a pass over the whole image",
                type="too_many_scans",
            )
    if data[:8] == PNG_SIGNATURE and png_chunks(data, MAX_PNG_CHUNKS) > MAX_PNG_CHUNKS:
        raise Invalid(
            f"the PNG has more than {MAX_PNG_CHUNKS:,} chunks (a real one has a few dozen); each costs a step "
            "of the decoder",
            type="too_many_chunks",
        )
    if data[:4] in TIFF_HEADERS and tiff_strips(data) > MAX_TIFF_STRIPS:
        raise Invalid(
            f"the TIFF lists more than {MAX_TIFF_STRIPS:,} strips or tiles (a real one needs one per strip of rows "
            "or per tile); each costs the decoder memory and a step",
            type="too_many_strips",
        )
    if data[:6] in (b"GIF87a", b"GIF89a") and gif_blocks(data, MAX_GIF_BLOCKS) > MAX_GIF_BLOCKS:
        raise Invalid(
            f"the GIF has more than {MAX_GIF_BLOCKS:,} blocks before its first image (a real one has a few); "
            "each costs a step of the decoder",
            type="too_many_blocks",
        )
    try:
        img = Image.open(io.BytesIO(data), formats=_allowed_formats())
    except Image.DecompressionBombError:
        raise _too_many_pixels(None, settings) from None
    except UnidentifiedImageError:
        raise Invalid("the url did not return a supported image", type="not_an_image") from None
    except Exception:
        raise Invalid("the url did not return a readable image", type="not_an_image") from None

    width, height = img.size
    if width * height > settings.max_image_pixels:
        raise _too_many_pixels((width, height), settings)
    smallest = settings.min_image_side if smallest_side is None else smallest_side
    if min(width, height) < smallest:
        raise Invalid(
            f"the image is too small ({width}x{height}); its shorter side must be at least {smallest} pixels",
            type="image_too_small",
        )
    try:
        coefficients = 0
        if img.format in ("JPEG", "MPO"):
            # Multi-scan or progressive (even with a single scan): libjpeg keeps every DCT coefficient,
            # at full size; a one-scan progressive file of 49 Mpx is 144 KB and holds 147 MiB of them.
            if scans > 1 or img.info.get("progressive"):
                coefficients = _jpeg_coefficient_bytes(img)
            # Decode at 1/2, 1/4 or 1/8 scale while both sides stay at least decode_min_side: the
            # models look at 224 px, and a full-size decode of a large photo costs several times more.
            target = min(max(settings.decode_min_side, min_side or 0), settings.max_image_side)
            img.draft("RGB", (target, target))
    except Exception:
        raise Invalid("the image is truncated or corrupt", type="image_truncated") from None
    cost = coefficients + _decoded_bytes(img, settings)
    if cost > settings.decode_budget_bytes:
        raise TooLarge(
            f"decoding this {width}x{height} {img.mode} image needs about {cost // MIB:,} MiB, more than the "
            f"{settings.decode_budget_bytes // MIB:,} MiB this server decodes at once",
            type="decode_too_large",
        )
    return OpenedImage(img, cost)


def decode_opened(opened: OpenedImage, settings: Settings) -> Image.Image:
    """Decode an image `open_image` accepted. CPU bound: run it in a thread."""
    img = opened.image
    width, height = img.size
    try:
        img.seek(0)
        img.load()
        rgb = _to_small_rgb(img, _reduce_factor(img.size, settings))
        if max(rgb.size) > settings.max_image_side:
            rgb.thumbnail((settings.max_image_side, settings.max_image_side), Image.Resampling.BICUBIC)
    except IdiosError:
        raise
    except Image.DecompressionBombError:
        raise _too_many_pixels((width, height), settings) from None
    except MemoryError:
        raise TooLarge("the image is too large to decode", type="too_many_pixels") from None
    except Exception:
        raise Invalid("the image is truncated or corrupt", type="image_truncated") from None
    return rgb


def _too_many_pixels(size: tuple[int, int] | None, settings: Settings) -> TooLarge:
    limit = settings.max_image_pixels
    if size is None:
        return TooLarge(f"the image declares more than {limit:,} pixels, the limit", type="too_many_pixels")
    w, h = size
    return TooLarge(
        f"the image declares {w}x{h} = {w * h:,} pixels, more than the limit of {limit:,}", type="too_many_pixels"
    )


# ---------------------------------------------------------------- PNG chunks


def png_chunks(data: bytes, limit: int) -> int:
    """The number of chunks of PNG `data` up to IEND (or its end), counting no further than `limit` + 1."""
    pos, chunks, size = len(PNG_SIGNATURE), 0, len(data)
    while pos + 8 <= size and chunks <= limit:
        chunks += 1
        if data[pos + 4 : pos + 8] == b"IEND":
            break
        pos += 12 + int.from_bytes(data[pos : pos + 4], "big")
    return chunks


# ---------------------------------------------------------------- TIFF strips

_TIFF_OFFSET_TAGS = (273, 324)  # StripOffsets, TileOffsets


def tiff_strips(data: bytes) -> int:
    """The number of strip or tile offsets the first page of TIFF `data` lists, as Pillow reads them
    (the first entry of a tag counts; classic and BigTIFF); 0 where the header cannot be read."""
    endian = "<" if data[:2] == b"II" else ">"
    try:
        if data[2] == 43:  # BigTIFF, told apart as Pillow does
            (ifd,) = struct.unpack_from(endian + "Q", data, 8)
            (entries,) = struct.unpack_from(endian + "Q", data, ifd)
            first, size, entry = ifd + 8, 20, endian + "HHQ"
        else:
            (ifd,) = struct.unpack_from(endian + "L", data, 4)
            (entries,) = struct.unpack_from(endian + "H", data, ifd)
            first, size, entry = ifd + 2, 12, endian + "HHL"
        counts: dict[int, int] = {}
        for index in range(min(entries, max(0, len(data) - first) // size)):
            tag, _type, count = struct.unpack_from(entry, data, first + index * size)
            if tag in _TIFF_OFFSET_TAGS:
                counts.setdefault(tag, count)
    except (struct.error, IndexError):
        return 0
    return max(counts.values(), default=0)


# ---------------------------------------------------------------- GIF blocks


def gif_blocks(data: bytes, limit: int) -> int:
    """The extension blocks, their sub-blocks and stray bytes before the first image of GIF `data`,
    read as Pillow reads them, counting no further than `limit` + 1."""
    size, blocks = len(data), 0
    pos = 13 + (3 << ((data[10] & 7) + 1) if size > 10 and data[10] & 0x80 else 0)  # header, global colours
    while pos < size and blocks <= limit:
        kind = data[pos]
        if kind in (0x2C, 0x3B):  # image descriptor, trailer
            break
        blocks += 1
        pos += 1
        if kind == 0x21:  # extension: a label, then sub-blocks up to an empty one
            pos += 1
            while pos < size and blocks <= limit:
                length = data[pos]
                blocks += 1
                pos += 1 + length
                if not length:
                    break
    return blocks


# ---------------------------------------------------------------- JPEG scans

# In entropy-coded data a 0xFF byte is followed by 0x00 (stuffing) or RST0-7; anything else after
# one or more 0xFF bytes is the next marker.
_NEXT_MARKER = re.compile(rb"\xff+([^\x00\xd0-\xd7\xff])")
# Outside entropy-coded data libjpeg (and Pillow) skip bytes that are not a marker, with a warning,
# up to the next 0xFF followed by anything but 0x00 or 0xFF: so must the scan count.
_ANY_MARKER = re.compile(rb"\xff+([^\x00\xff])")


def _jpeg_markers(data: bytes) -> Iterator[tuple[int, int]]:
    """(marker, bytes skipped before it) for each marker of the first image in JPEG `data`, as libjpeg
    reads them: segments are skipped by their lengths and each scan's entropy-coded data up to the next
    marker, so SOS bytes inside metadata (an EXIF thumbnail) or image data are no markers; bytes between
    segments that are no marker are skipped as libjpeg (and Pillow) skip them. Ends at EOI or the data's end."""
    pos, size = 2, len(data)
    while pos + 4 <= size:
        skipped = 0
        if data[pos] != 0xFF:  # junk between segments: libjpeg reads on at the next marker
            found = _ANY_MARKER.search(data, pos)
            if found is None:
                return
            skipped, pos = found.start(1) - 1 - pos, found.start(1) - 1
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            return
        yield marker, skipped
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:
            found = _NEXT_MARKER.search(data, pos)
            if found is None:
                return
            pos = found.start(1) - 1


def jpeg_scans(data: bytes, limit: int) -> int:
    """The number of scans (SOS markers) of the first image in JPEG `data`, counting no further than `limit` + 1."""
    scans = 0
    for marker, _ in _jpeg_markers(data):
        if marker == 0xDA:
            scans += 1
            if scans > limit:
                break
    return scans


def jpeg_header_steps(data: bytes, limit: int) -> int:
    """The segments and junk bytes before the first scan of JPEG `data` (Pillow reads each in Python),
    counting no further than `limit` + 1."""
    steps = 0
    for marker, skipped in _jpeg_markers(data):
        if marker == 0xDA:
            break
        steps += 1 + skipped
        if steps > limit:
            break
    return steps


def _jpeg_coefficient_bytes(img: Image.Image) -> int:
    """Bytes of the DCT coefficient buffers libjpeg allocates for a multi-scan JPEG: 2 bytes per
    coefficient, 64 per 8x8 block of each component at its sampling, whatever the draft scale."""
    width, height = img.size
    layers = getattr(img, "layer", None) or [(0, 1, 1, 0)] * len(img.getbands())
    h_max = max(layer[1] for layer in layers) or 1
    v_max = max(layer[2] for layer in layers) or 1
    total = 0
    for _, h, v, _ in layers:
        blocks = math.ceil(width * h / h_max / 8) * math.ceil(height * v / v_max / 8)
        total += blocks * 64 * 2
    return total


# ---------------------------------------------------------------- memory estimate


def _bytes_per_pixel(mode: str) -> int:
    """Pillow's storage: one byte for 1, L and P, two for I;16*, four for every other mode (RGB included)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _reduce_factor(size: tuple[int, int], settings: Settings) -> int:
    """The box reduction applied while converting: Pillow's `thumbnail` does the same (reducing_gap 2)
    before its resampling filter."""
    return max(1, int(max(size) / settings.max_image_side / 2))


def _decoded_bytes(img: Image.Image, settings: Settings) -> int:
    """Estimated peak bytes of decoding `img` (after any JPEG draft): the image in its own mode, the
    decoder's own buffer where it has one, the reduced RGB result and one strip's working set."""
    width, height = img.size
    pixels = width * height
    native = pixels * _bytes_per_pixel(img.mode)
    if img.format in ("WEBP", "AVIF"):
        # libwebp and libavif decode into buffers of their own (measured: 12 and 6 bytes a pixel more than
        # the image at 8 bits; AVIF's can be 16-bit YUV), copied to Python bytes and then to the image.
        buffer = pixels * 12
    elif img.format == "TIFF":
        buffer = native  # libtiff reads a strip or tile at a time, and one strip can be the whole image
    else:
        buffer = 0
    factor = _reduce_factor(img.size, settings)
    result = math.ceil(width / factor) * math.ceil(height / factor) * 4
    return int((native + buffer + result) * ESTIMATE_MARGIN) + STRIP_BYTES


# ---------------------------------------------------------------- conversion


def _to_small_rgb(img: Image.Image, factor: int) -> Image.Image:
    """`img` in RGB, box-reduced by `factor`, converted a strip of rows at a time."""
    if img.mode == "RGB" and "transparency" not in img.info:
        return img if factor == 1 else img.reduce(factor)
    width, height = img.size
    top = _top_value(img)
    rows = max(factor, STRIP_PIXELS // max(width, 1) // factor * factor)
    out = Image.new("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
    for y in range(0, height, rows):
        strip = _to_rgb(img.crop((0, y, width, min(height, y + rows))), top)
        out.paste(strip if factor == 1 else strip.reduce(factor), (0, y // factor))
    return out


def _top_value(img: Image.Image) -> float | None:
    """The largest value of a 32-bit integer or float image (NaN ignored), read in strips; None for other modes."""
    if not (img.mode == "F" or (img.mode.startswith("I") and not img.mode.startswith("I;16"))):
        return None
    width, height = img.size
    rows = max(1, STRIP_PIXELS // max(width, 1))
    top = math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN strip
        for y in range(0, height, rows):
            part = float(np.nanmax(np.asarray(img.crop((0, y, width, min(height, y + rows))))))
            if not math.isnan(part):
                top = part if math.isnan(top) else max(top, part)
    return top


def _to_rgb(img: Image.Image, top: float | None = None) -> Image.Image:
    """Convert any mode to RGB; transparency is composited on white, high bit depths scaled to 8 bits.

    `top` is the largest value of the whole image for 32-bit and float modes (`_top_value`), when `img`
    is a strip of it.
    """
    mode = img.mode
    if mode in ("1", "L", "RGB", "P") and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(img), sixteen_bit=mode.startswith("I;16"), top=top)).convert("RGB")
    return img.convert("RGB")


def _to_uint8(arr: np.ndarray, *, sixteen_bit: bool, top: float | None = None) -> np.ndarray:
    """Scale a single-channel integer or float array to 0..255 (`top`: the whole image's largest value,
    when `arr` is a strip of it)."""
    if arr.size == 0:
        return arr.astype(np.uint8)
    if sixteen_bit:
        return (arr // 257).astype(np.uint8)  # 0..65535 to 0..255 in integers, as floor(v / 257)
    is_float = arr.dtype.kind == "f"
    arr = arr.astype(np.float64)
    if top is None:
        top = float(np.nanmax(arr))
    if is_float and top <= 1.0:
        arr = arr * 255.0
    elif top > 255.0:
        arr = arr / (257.0 if top <= 65535.0 else top / 255.0)
    return np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- budget

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def return_freed_buffers() -> bool:
    """Make large buffers (over 128 KiB: image blocks, strips) go back to the OS as soon as they are freed.

    glibc raises its mmap threshold each time a mapped block is freed (up to 32 MiB), after which
    Pillow's and numpy's image buffers come from per-thread heaps that keep freed memory and do not
    share it between threads: six 160 MiB decodes in turns on four threads then grew the process by
    480 MiB instead of 280. Fixing the threshold (`mallopt`, the same as MALLOC_MMAP_THRESHOLD_) stops
    that; no Python library wraps it. A no-op (False) without glibc.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        return bool(ctypes.CDLL(name).mallopt(_M_MMAP_THRESHOLD, 128 * 1024))
    except (OSError, AttributeError):
        return False


class _Waiter:
    __slots__ = ("cost", "future", "granted", "interactive", "loop")

    def __init__(self, cost: int, loop: asyncio.AbstractEventLoop, interactive: bool) -> None:
        self.cost = cost
        self.loop = loop
        self.interactive = interactive
        self.future: asyncio.Future[None] = loop.create_future()
        self.granted = False


class DecodeBudget:
    """Bytes of decoded images a process holds at once.

    `acquire` waits (in asyncio, holding no thread) until the cost fits; waiters are served in
    arrival order, so a large image is not overtaken forever by small ones, except that interactive
    ones (searches, compares) go ahead of the others (ingestion's). `release` may be
    called from any thread (a pool thread when its decode ends). Costs larger than the whole
    budget wait for all of it (`open_image` refuses those first).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._used = 0
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()

    @property
    def in_use(self) -> int:
        return self._used

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, cost: int, *, interactive: bool = False) -> None:
        cost = min(cost, self.capacity)
        with self._lock:
            ahead = sum(1 for waiter in self._waiters if waiter.interactive) if interactive else len(self._waiters)
            if not ahead and self._used + cost <= self.capacity:
                self._used += cost
                return
            waiter = _Waiter(cost, asyncio.get_running_loop(), interactive)
            self._waiters.insert(ahead, waiter)
        try:
            await waiter.future
        except BaseException:
            with self._lock:
                granted = waiter.granted
                if not granted and waiter in self._waiters:
                    self._waiters.remove(waiter)
                    self._grant_locked()  # the next in line may fit now
            if granted:
                self.release(cost)
            raise

    def release(self, cost: int) -> None:
        with self._lock:
            self._used -= min(cost, self.capacity)
            self._grant_locked()

    def _grant_locked(self) -> None:
        while self._waiters and self._used + self._waiters[0].cost <= self.capacity:
            waiter = self._waiters.popleft()
            try:
                waiter.loop.call_soon_threadsafe(_wake, waiter.future)
            except RuntimeError:  # its event loop has closed: nobody will use the grant
                continue
            waiter.granted = True
            self._used += waiter.cost


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_budgets: dict[int, DecodeBudget] = {}
_budgets_lock = threading.Lock()


def process_budget(capacity: int) -> DecodeBudget:
    """The process's decode budget of this size, shared by every job runner (and pool) in the process."""
    with _budgets_lock:
        if capacity not in _budgets:
            _budgets[capacity] = DecodeBudget(capacity)
        return _budgets[capacity]


__all__ = [
    "ALLOWED_FORMATS",
    "DecodeBudget",
    "OpenedImage",
    "decode_image",
    "decode_opened",
    "open_image",
    "process_budget",
    "return_freed_buffers",
]
