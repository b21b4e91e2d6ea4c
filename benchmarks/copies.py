"""The copy-detection benchmark's images: original photos, distractors that copy none of them, and
queries made from the originals (crops, rotations, frames, overlays, colour changes, recompression,
blur, screenshots) with their ground truth.

Every image is a pure function of its index, or of its original, family and seed, so the benchmark
can regenerate any of them instead of keeping 100,000 files. Distractors are drawn with OpenCV and
numpy (PIL's filters are several times slower), procedural fields at most 512 pixels on the longer
side and enlarged: the copy detector analyses images at that side.

The distractors are hard on purpose: mosaics recombine patches of a few real photos (held out of
ORIGINALS), so the same local features recur in thousands of unrelated images; application windows
share their glyphs, widgets and layouts with the screenshot queries.
"""

from __future__ import annotations

import colorsys
import importlib.util
import io
import itertools
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

_RGB = tuple[int, int, int]
_Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1 and y1 excluded

# Real photos that ship inside scikit-image (no download) and scikit-learn.
ORIGINALS: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "china",
    "flower",
    "retina",
    "immunohistochemistry",
    "hubble_deep_field",
    "camera",
    "coins",
    "moon",
    "clock",
    # Hard ones: a repeated pattern that defeats the ratio test, and two pictures of text.
    "brick",
    "page",
    "text",
)
# The photos the mosaics are cut from: never an original, nor a view of one. (scikit-image's `cat`
# is `chelsea`; the motorcycle is a stereo pair, both of whose views are here.)
MOSAIC_SOURCES: tuple[str, ...] = ("motorcycle_left", "motorcycle_right", "grass", "gravel", "cell")


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        return np.asarray(getattr(data, name)())

    return load


def _motorcycle(view: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        return np.asarray(data.stereo_motorcycle()[view])

    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        # The file load_sample_image decodes, read without importing scikit-learn (two seconds).
        spec = importlib.util.find_spec("sklearn")
        for folder in (spec.submodule_search_locations or []) if spec else []:
            path = Path(folder) / "datasets" / "images" / filename
            if path.is_file():
                with Image.open(path) as image:
                    return np.asarray(image)
        from sklearn.datasets import load_sample_image

        return np.asarray(load_sample_image(filename))

    return load


_SKIMAGE_PHOTOS = set(ORIGINALS + MOSAIC_SOURCES) - {"china", "flower", "motorcycle_left", "motorcycle_right"}
_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    **{name: _skimage(name) for name in sorted(_SKIMAGE_PHOTOS)},
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
    "motorcycle_left": _motorcycle(0),
    "motorcycle_right": _motorcycle(1),
}


@cache
def _photo(name: str) -> np.ndarray:
    """The photo as a read-only height x width x 3 array of bytes."""
    array = _PHOTOS[name]()
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    array = np.ascontiguousarray(array[:, :, :3], dtype=np.uint8)
    array.setflags(write=False)
    return array


@cache
def original(name: str) -> Image.Image:
    """One of ORIGINALS, in RGB. Cached: copy it before drawing on it."""
    if name not in ORIGINALS:
        raise ValueError(f"{name!r} is not one of the originals: {', '.join(ORIGINALS)}")
    return Image.fromarray(_photo(name).copy())


def encode_jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# Drawing helpers

_WORK_SIDE = 512


def _work_size(width: int, height: int, side: int = _WORK_SIDE) -> tuple[int, int]:
    """The size procedural fields are computed at: the image's, shrunk to `side` pixels at most."""
    scale = min(1.0, side / max(width, height))
    return max(2, round(width * scale)), max(2, round(height * scale))


def _resize(array: np.ndarray, width: int, height: int) -> np.ndarray:
    if array.shape[1] == width and array.shape[0] == height:
        return array
    shrink = width < array.shape[1]
    return cv2.resize(array, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _hsv(hue: float, saturation: float, value: float) -> _RGB:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, min(max(saturation, 0.0), 1.0), min(max(value, 0.0), 1.0))
    return round(r * 255), round(g * 255), round(b * 255)


def _colour(
    rng: np.random.Generator, saturation: tuple[float, float] = (0.2, 1.0), value: tuple[float, float] = (0.2, 1.0)
) -> _RGB:
    return _hsv(rng.random(), rng.uniform(*saturation), rng.uniform(*value))


def _shade(rng: np.random.Generator, light: bool) -> _RGB:
    """A random colour that is clearly light or clearly dark in grey, as corner detectors see it:
    colours of different hues but the same grey make no corners."""
    for _ in range(24):
        r, g, b = colour = _colour(rng)
        grey = 0.299 * r + 0.587 * g + 0.114 * b
        if (grey > 150) if light else (grey < 100):
            return colour
    return (225, 225, 225) if light else (30, 30, 30)


def _palette(rng: np.random.Generator, stops: int, hard: bool = False, field: np.ndarray | None = None) -> np.ndarray:
    """256 x 3 colours along a gradient through `stops` random colours, alternately dark and light;
    `hard` gives flat bands. Given the field's bytes, the stops sit at quantiles of its values, so
    that every colour shows."""
    light = rng.random() < 0.5
    colours = np.array([_shade(rng, light == (i % 2 == 0)) for i in range(stops)], dtype=np.float32)
    levels = np.arange(256)
    count = stops - 1 if hard else stops
    if field is not None:
        shares = np.sort(rng.uniform(0.05, 0.95, count))
        if not hard:
            shares[0], shares[-1] = 0.01, 0.99
        positions = np.quantile(field[::4, ::4], shares) + np.arange(count) * 1e-3
    elif hard:
        positions = np.sort(rng.uniform(1, 255, count))
    else:
        positions = np.concatenate([[0.0], np.sort(rng.uniform(0, 255, stops - 2)), [255.0]])
    if hard:
        return colours[np.searchsorted(positions, levels, side="right")].astype(np.uint8)
    channels = [np.interp(levels, positions, colours[:, c]) for c in range(3)]
    return np.rint(np.stack(channels, axis=1)).astype(np.uint8)


def _to_bytes(field: np.ndarray) -> np.ndarray:
    """A field of values in [0, 1] as bytes."""
    return cv2.convertScaleAbs(field, alpha=255.0)


def _colourise(grey: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Bytes through a 256 x 3 palette (cv2.LUT: several times faster than numpy's indexing)."""
    return cv2.LUT(cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB), palette.reshape(256, 1, 3))


def _normalise(field: np.ndarray) -> np.ndarray:
    return cv2.normalize(field, None, 0.0, 1.0, cv2.NORM_MINMAX)


def _blend(canvas: np.ndarray, mask: np.ndarray, x: int, y: int, colour: _RGB) -> None:
    """Paints `colour` through `mask` (bytes, 255 opaque) with its top left corner at x, y."""
    height, width = mask.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + width, canvas.shape[1]), min(y + height, canvas.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    alpha = mask[y0 - y : y1 - y, x0 - x : x1 - x, None].astype(np.uint16)
    region = canvas[y0:y1, x0:x1]
    paint = np.array(colour, dtype=np.uint16) * alpha
    region[...] = ((region * (255 - alpha) + paint + 127) // 255).astype(np.uint8)


def _paste(canvas: np.ndarray, image: np.ndarray, mask: np.ndarray, x: int, y: int) -> None:
    """Pastes `image` through `mask` (bytes, 255 opaque) with its top left corner at x, y."""
    height, width = mask.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + width, canvas.shape[1]), min(y + height, canvas.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    weights = mask[y0 - y : y1 - y, x0 - x : x1 - x].astype(np.float32) * np.float32(1 / 255)
    top = np.ascontiguousarray(image[y0 - y : y1 - y, x0 - x : x1 - x])
    region = canvas[y0:y1, x0:x1]
    region[...] = cv2.blendLinear(top, np.ascontiguousarray(region), weights, 1 - weights)


def _box(canvas: np.ndarray, rect: _Rect, colour: _RGB) -> None:
    """Fills a rectangle: cv2 does it many times faster than numpy assigns a colour to a slice."""
    x0, y0, x1, y1 = rect
    if x1 > x0 and y1 > y0:
        cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), colour, -1)


def _canvas(width: int, height: int, colour: _RGB) -> np.ndarray:
    canvas = np.empty((height, width, 3), np.uint8)
    _box(canvas, (0, 0, width, height), colour)
    return canvas


def _rounded_rect(canvas: np.ndarray, rect: _Rect, radius: int, colour: _RGB, thickness: int = -1) -> None:
    """A rectangle with rounded corners, filled (thickness -1) or outlined."""
    x0, y0, x1, y1 = rect
    x1, y1 = x1 - 1, y1 - 1
    if x1 <= x0 or y1 <= y0:
        return
    r = max(0, min(radius, (x1 - x0) // 2, (y1 - y0) // 2))
    if r == 0:
        cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, thickness)
        return
    corners = ((x0 + r, y0 + r, 180), (x1 - r, y0 + r, 270), (x1 - r, y1 - r, 0), (x0 + r, y1 - r, 90))
    if thickness < 0:
        cv2.rectangle(canvas, (x0, y0 + r), (x1, y1 - r), colour, -1)
        cv2.rectangle(canvas, (x0 + r, y0), (x1 - r, y1), colour, -1)
        for cx, cy, _ in corners:
            cv2.circle(canvas, (cx, cy), r, colour, -1, cv2.LINE_AA)
        return
    for cx, cy, start in corners:
        cv2.ellipse(canvas, (cx, cy), (r, r), 0, start, start + 90, colour, thickness, cv2.LINE_AA)
    cv2.line(canvas, (x0 + r, y0), (x1 - r, y0), colour, thickness)
    cv2.line(canvas, (x0 + r, y1), (x1 - r, y1), colour, thickness)
    cv2.line(canvas, (x0, y0 + r), (x0, y1 - r), colour, thickness)
    cv2.line(canvas, (x1, y0 + r), (x1, y1 - r), colour, thickness)


# ---------------------------------------------------------------------------------------------
# Text: words are rendered once per size (PIL's text drawing costs about a millisecond a call here)
# and lines are cut from long strips of them.

_WORDS = (  # noqa: SIM905 (a list literal would take a line per word)
    "file edit view project settings report invoice customer order status pending shipped delivered total "
    "amount date name email address update delete share export import search filter sort open close save "
    "cancel apply next previous account profile billing security notifications dashboard analytics revenue "
    "users sessions page document draft review approved rejected comment reply message inbox sent archive "
    "folder images music videos downloads desktop library recent favourites tags labels priority high low "
    "medium task due today tomorrow week month year meeting notes agenda budget forecast quarter team member "
    "role admin editor viewer owner access permission version history branch commit merge build test deploy "
    "server client request response error warning info debug config value key default enabled disabled true "
    "false null return function class import const string number list map array object the of and to in is "
    "for with on as by at from this that be are was it an or not all can will more new one has have your we "
    "our data time system model results figure table section chapter summary overview details general "
    "network storage memory backup restore sync upload download connect device display language region "
    "keyboard mouse printer battery power sound volume brightness theme colour font size layout window help "
    "about support contact terms privacy policy cookies sign login logout register password username welcome "
    "back home start finish done ready loading waiting running stopped failed passed queued scheduled"
).split()
_TOKENS = (  # noqa: SIM905
    "12:45 09:30 17:02 2024-03-17 2023-11-02 3.2 MB 148 KB 1.4 GB #4821 #77 $129.00 $4,310 98% 45% v2.14.1 "
    "README.md main.py index.html app.js style.css Q3 ID OK API URL PDF CSV JSON 404 200 x86 (3) [12] ..."
).split()


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's own font (Aileron), the same on every machine."""
    return ImageFont.load_default(size=size)


# The interface's fixed labels, and the characters numbers are made of.
_LABELS = ("File", "Edit", "View", "Go", "Tools", "Window", "Help", "Search")
_CHARACTERS = tuple("0123456789,.%$:-+#")


@cache
def _sheet(size: int) -> dict[str, np.ndarray]:
    """The vocabulary (lower case and capitalised), the labels and the characters of numbers at `size`
    pixels, as masks cropped to their advance: drawn into one image, which costs a tenth of a
    millisecond a word against a quarter for an image each."""
    font = _font(size)
    texts = sorted({*_WORDS, *(word.capitalize() for word in _WORDS), *_TOKENS, *_LABELS, *_CHARACTERS})
    height = math.ceil(size * 1.3)
    sheet = Image.new("L", (1, 1))
    draw = ImageDraw.Draw(sheet)
    widths = [max(1, math.ceil(draw.textlength(text, font=font))) for text in texts]
    sheet = Image.new("L", (max(widths), height * len(texts)))
    draw = ImageDraw.Draw(sheet)
    for i, text in enumerate(texts):
        draw.text((0, i * height), text, fill=255, font=font)
    array = np.asarray(sheet)
    return {
        text: array[i * height : (i + 1) * height, :width]
        for i, (text, width) in enumerate(zip(texts, widths, strict=True))
    }


@lru_cache(maxsize=1024)
def _render(text: str, size: int) -> np.ndarray:
    font = _font(size)
    width = math.ceil(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(text, font=font))
    image = Image.new("L", (max(1, width), math.ceil(size * 1.3)))
    ImageDraw.Draw(image).text((0, 0), text, fill=255, font=font)
    return np.asarray(image)


def _word(text: str, size: int) -> np.ndarray:
    """`text` in white on black at `size` pixels, as a mask cropped to its advance. Words of the
    vocabulary and numbers cost no drawing."""
    sheet = _sheet(size)
    mask = sheet.get(text)
    if mask is not None:
        return mask
    if text and all(character in sheet for character in text):
        return np.hstack([sheet[character] for character in text])
    return _render(text, size)


_STRIPS_PER_SIZE = 24
_STRIP_WORDS = 48


@cache
def _strips(size: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Long lines of random words at `size` pixels, each with its words' (start, end) x positions."""
    rng = np.random.default_rng([0x7E47, size])
    space = max(2, round(size * 0.28))
    strips = []
    for _ in range(_STRIPS_PER_SIZE):
        words = []
        for _ in range(_STRIP_WORDS):
            word = str(rng.choice(_TOKENS)) if rng.random() < 0.12 else str(rng.choice(_WORDS))
            if rng.random() < 0.2:
                word = word.capitalize()
            words.append(_word(word, size))
        width = sum(m.shape[1] for m in words) + space * (len(words) - 1)
        strip = np.zeros((words[0].shape[0], width), np.uint8)
        spans = np.empty((len(words), 2), np.int32)
        x = 0
        for i, mask in enumerate(words):
            strip[:, x : x + mask.shape[1]] = mask
            spans[i] = x, x + mask.shape[1]
            x += mask.shape[1] + space
        strips.append((strip, spans))
    return tuple(strips)


_SIZES = (11, 12, 13, 14, 16, 18, 20, 24, 28, 32)


def _size(pixels: float) -> int:
    """The nearest of a few font sizes, so that few sizes need rendering."""
    return min(_SIZES, key=lambda s: abs(s - pixels))


def _text(
    canvas: np.ndarray,
    rng: np.random.Generator,
    x: int,
    y: int,
    size: int,
    colour: _RGB,
    max_width: int,
    words: tuple[int, int] = (1, 40),
) -> int:
    """Writes a few random words (between `words` counts) at most `max_width` wide; returns the width."""
    strips = _strips(size)
    strip, spans = strips[int(rng.integers(len(strips)))]
    count = int(rng.integers(words[0], words[1] + 1))
    first = int(rng.integers(0, max(1, len(spans) - count)))
    last = min(first + count, len(spans)) - 1
    start = int(spans[first, 0])
    fits = int(np.searchsorted(spans[first : last + 1, 1], start + max_width, side="right"))
    end = int(spans[first + max(0, fits - 1), 1])
    if end - start > max_width:
        end = start + max(0, max_width)
    _blend(canvas, strip[:, start:end], x, y, colour)
    return end - start


def _label(canvas: np.ndarray, text: str, x: int, y: int, size: int, colour: _RGB) -> int:
    mask = _word(text, size)
    _blend(canvas, mask, x, y, colour)
    return mask.shape[1]


# ---------------------------------------------------------------------------------------------
# Distractors

DISTRACTOR_KINDS: tuple[str, ...] = ("texture", "mosaic", "screenshot", "shapes")
_DISTRACTOR_SALT = 0x1D105


def distractor_kind(index: int) -> str:
    return DISTRACTOR_KINDS[index % len(DISTRACTOR_KINDS)]


def distractor(index: int) -> Image.Image:
    """The `index`-th distractor (RGB, 400 to 1000 pixels on the longer side); the same index always
    gives the same pixels, and no distractor is a copy of an original."""
    if index < 0:
        raise ValueError(f"distractor indices start at 0, not {index}")
    rng = np.random.default_rng([_DISTRACTOR_SALT, index])
    kind = distractor_kind(index)
    longer = int(rng.integers(400, 1001))
    if kind == "screenshot":
        ratio = float(rng.choice([10 / 16, 9 / 16, 3 / 4, 2 / 3, 4 / 5])) if rng.random() < 0.8 else rng.uniform(0.5, 1)
        landscape = rng.random() < 0.85
    else:
        ratio = rng.uniform(0.5, 1.0)
        landscape = rng.random() < 0.6
    shorter = max(200, round(longer * ratio))
    width, height = (longer, shorter) if landscape else (shorter, longer)
    array = _GENERATORS[kind](rng, width, height)
    return Image.fromarray(array)


# Textures: procedural fields at the work size, coloured through a random palette.


def _fractal(
    rng: np.random.Generator, width: int, height: int, cells: float, octaves: int, persistence: float
) -> np.ndarray:
    """Value noise with about `cells` cells along the longer side, plus octaves of twice the cells and
    `persistence` times the weight, summed on a growing grid and enlarged once; values in [0, 1]."""
    longer = max(width, height)

    def grid(cells: float) -> tuple[int, int]:
        return max(2, round(cells * width / longer)) + 1, max(2, round(cells * height / longer)) + 1

    grid_w, grid_h = grid(cells)
    total: np.ndarray = rng.random((grid_h, grid_w), dtype=np.float32)
    weight = 1.0
    for octave in range(1, octaves):
        weight *= persistence
        grid_w, grid_h = grid(cells * 2**octave)
        total = cv2.resize(total, (grid_w, grid_h), interpolation=cv2.INTER_CUBIC)
        cv2.scaleAdd(rng.random((grid_h, grid_w), dtype=np.float32), weight, total, total)
    return _normalise(cv2.resize(total, (width, height), interpolation=cv2.INTER_CUBIC))


def _coordinates(width: int, height: int, angle: float, period: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates turned by `angle` and divided by `period`, as a row and a column to add."""
    xs = np.arange(width, dtype=np.float32)[None, :]
    ys = np.arange(height, dtype=np.float32)[:, None]
    c, s = math.cos(angle) / period, math.sin(angle) / period
    return xs * c, ys * s


def _fractal_field(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    octaves = int(rng.integers(4, 7))
    field = _fractal(rng, width, height, rng.uniform(2, 7), octaves, rng.uniform(0.45, 0.75))
    mode = rng.integers(3)
    if mode == 1:  # turbulence: creases where the noise crosses its middle
        field = np.abs(field * 2 - 1)
    elif mode == 2:  # ridges
        field = 1 - np.abs(field * 2 - 1)
    return field


def _wave_field(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Stripes, wood grain or marble: a sine of the position, warped by noise; sometimes a plaid."""
    field = np.ones((height, width), np.float32)
    for _ in range(1 if rng.random() < 0.5 else 2):
        u, v = _coordinates(width, height, rng.uniform(0, math.pi), rng.uniform(4, 40) / (2 * math.pi))
        warp = _fractal(rng, width, height, rng.uniform(1.5, 5), 3, 0.5) * np.float32(rng.uniform(0, 14))
        wave = 0.5 + 0.5 * np.sin(u + v + warp)
        if rng.random() < 0.5:
            wave = np.clip((wave - 0.5) * np.float32(rng.uniform(2, 8)) + 0.5, 0, 1)
        field *= wave
    return field


def _check_field(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Checkers, turned and warped, shaded by noise."""
    angle, cell = rng.uniform(0, math.pi), rng.uniform(6, 48)
    u0, u1 = _coordinates(width, height, angle, cell)
    v0, v1 = _coordinates(width, height, angle + math.pi / 2, cell * rng.uniform(0.5, 2))
    warp = _fractal(rng, width, height, rng.uniform(1.5, 4), 3, 0.5) * np.float32(rng.uniform(0, 1.5))
    checks = (np.floor(u0 + u1 + warp) + np.floor(v0 + v1 + warp)) % 2
    shade = _fractal(rng, width, height, rng.uniform(2, 6), 4, 0.6)
    return (checks * np.float32(0.6) + shade * np.float32(0.4)).astype(np.float32)


def _cell_field(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Voronoi cells (stones, tiles, crackle) with grout between them."""
    seeds = int(rng.integers(15, 400))
    image = np.ones((height, width), np.uint8)
    image[rng.integers(0, height, seeds), rng.integers(0, width, seeds)] = 0
    distance, labels = cv2.distanceTransformWithLabels(image, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    field = rng.random(int(labels.max()) + 1, dtype=np.float32)[labels]
    if rng.random() < 0.5:  # domes: each cell darker towards its rim
        field *= 1 - np.float32(rng.uniform(0.2, 0.7)) * _normalise(distance)
    edges = np.zeros((height, width), np.uint8)
    edges[:, 1:] |= (labels[:, 1:] != labels[:, :-1]).astype(np.uint8)
    edges[1:, :] |= (labels[1:, :] != labels[:-1, :]).astype(np.uint8)
    grout = int(rng.integers(0, 4))
    if grout:
        edges[...] = cv2.dilate(edges, np.ones((grout, grout), np.uint8))
    field[edges > 0] = np.float32(rng.choice([0.0, 1.0, rng.random()]))
    return field


def _blob_field(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Many overlapping ellipses, a little blurred: pebbles, bubbles, bokeh."""
    field = np.full((height, width), rng.random(), np.float32)
    side = min(width, height)
    for _ in range(int(rng.integers(30, 250))):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        radius = side * math.exp(rng.uniform(math.log(0.01), math.log(0.15)))
        axes = (max(1, round(radius)), max(1, round(radius * rng.uniform(0.4, 1))))
        cv2.ellipse(field, centre, axes, rng.uniform(0, 180), 0, 360, float(rng.random()), -1, cv2.LINE_AA)
    sigma = rng.uniform(0.5, 3)
    return cv2.GaussianBlur(field, (0, 0), sigma)


_FIELDS = (_fractal_field, _wave_field, _check_field, _cell_field, _blob_field)


def _texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    work_w, work_h = _work_size(width, height)
    field = _FIELDS[int(rng.integers(len(_FIELDS)))](rng, work_w, work_h)
    if rng.random() < 0.5:
        other = _FIELDS[int(rng.integers(len(_FIELDS)))](rng, work_w, work_h)
        if rng.random() < 0.5:
            mix = np.float32(rng.uniform(0.2, 0.5))
            field = field * (1 - mix) + other * mix
        else:
            field = field * (np.float32(0.4) + np.float32(0.6) * other)
        field = _normalise(field)
    if rng.random() < 0.7:  # fine grain, as on most surfaces
        grain = rng.uniform(0.08, 0.3)
        detail = _fractal(rng, work_w, work_h, rng.uniform(40, 120), 2, 0.5)
        field = cv2.addWeighted(field, 1 - grain, detail, grain, 0)
    grey = _to_bytes(field)
    rgb = _colourise(grey, _palette(rng, int(rng.integers(2, 8)), hard=rng.random() < 0.4, field=grey))
    if rng.random() < 0.5:  # lighting that does not follow the pattern
        shade = _to_bytes(0.45 + 0.55 * _fractal(rng, work_w, work_h, rng.uniform(1, 4), 3, 0.5))
        rgb = cv2.multiply(rgb, cv2.cvtColor(shade, cv2.COLOR_GRAY2RGB), scale=1 / 255)
    return _resize(rgb, width, height)


# Shapes: a blurred layer of shapes, drawn small and enlarged, then sharp ones at full size.


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    choice = rng.integers(3)
    if choice == 0:
        return _canvas(width, height, _colour(rng))
    if choice == 1:
        u, v = _coordinates(width, height, rng.uniform(0, 2 * math.pi), 1.0)
        field = _normalise(u + v)
    else:
        field = _fractal(rng, width, height, rng.uniform(1, 4), 3, 0.5)
    return _colourise(_to_bytes(field), _palette(rng, int(rng.integers(2, 4))))


def _draw_shape(canvas: np.ndarray, rng: np.random.Generator, colour: _RGB, scale: float) -> None:
    height, width = canvas.shape[:2]
    centre = np.array([rng.uniform(-0.1, 1.1) * width, rng.uniform(-0.1, 1.1) * height])
    radius = scale * math.exp(rng.uniform(math.log(0.02), math.log(0.3)))
    thickness = -1 if rng.random() < 0.75 else int(rng.integers(1, max(2, round(scale / 80)) + 2))
    kind = rng.integers(6)
    if kind == 0:
        cv2.circle(canvas, (round(centre[0]), round(centre[1])), max(1, round(radius)), colour, thickness, cv2.LINE_AA)
        return
    if kind == 1:
        axes = (max(1, round(radius)), max(1, round(radius * rng.uniform(0.2, 1))))
        centre_px = (round(centre[0]), round(centre[1]))
        cv2.ellipse(canvas, centre_px, axes, rng.uniform(0, 180), 0, 360, colour, thickness, cv2.LINE_AA)
        return
    if kind == 4:  # a thick line or a polyline
        count = int(rng.integers(2, 6))
        points = centre + rng.normal(0, radius, (count, 2))
        line = max(1, round(radius * rng.uniform(0.03, 0.2)))
        cv2.polylines(canvas, [np.rint(points).astype(np.int32)], False, colour, line, cv2.LINE_AA)
        return
    if kind == 2:  # an irregular polygon
        count = int(rng.integers(3, 10))
        angles = np.sort(rng.uniform(0, 2 * math.pi, count))
        radii = radius * rng.uniform(0.4, 1.0, count)
    elif kind == 3:  # a turned rectangle
        half = np.array([radius, radius * rng.uniform(0.15, 1)])
        turn = rng.uniform(0, math.pi)
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
        rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
        points = centre + corners @ rotation.T
        _fill(canvas, points, colour, thickness)
        return
    else:  # a star
        count = int(rng.integers(4, 9)) * 2
        angles = np.linspace(0, 2 * math.pi, count, endpoint=False) + rng.uniform(0, math.pi)
        radii = np.where(np.arange(count) % 2 == 0, radius, radius * rng.uniform(0.3, 0.7))
    points = centre + np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii[:, None]
    _fill(canvas, points, colour, thickness)


def _fill(canvas: np.ndarray, points: np.ndarray, colour: _RGB, thickness: int) -> None:
    polygon = [np.rint(points).astype(np.int32)]
    if thickness < 0:
        cv2.fillPoly(canvas, polygon, colour, cv2.LINE_AA)
    else:
        cv2.polylines(canvas, polygon, True, colour, thickness, cv2.LINE_AA)


def _shapes(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    colours = [_shade(rng, i % 2 == 0) for i in range(int(rng.integers(4, 9)))]

    def pick() -> _RGB:
        return colours[int(rng.integers(len(colours)))] if rng.random() < 0.8 else _colour(rng)

    soft_w, soft_h = _work_size(width, height, _WORK_SIDE // 2)
    layer = _background(rng, soft_w, soft_h)
    for _ in range(int(rng.integers(5, 30))):
        _draw_shape(layer, rng, pick(), min(soft_w, soft_h))
    layer = cv2.GaussianBlur(layer, (0, 0), rng.uniform(0.75, 4))
    canvas = np.ascontiguousarray(_resize(layer, width, height))
    translucent = rng.random() < 0.3
    overlay = canvas.copy() if translucent else canvas
    for _ in range(int(rng.integers(15, 60))):
        _draw_shape(overlay, rng, pick(), min(width, height))
    if translucent:
        opacity = rng.uniform(0.45, 0.8)
        canvas = cv2.addWeighted(overlay, opacity, canvas, 1 - opacity, 0)
        for _ in range(int(rng.integers(5, 20))):
            _draw_shape(canvas, rng, pick(), min(width, height))
    return canvas


# Mosaics: patches of the held-out photos, turned, mirrored, scaled and recoloured.


@cache
def _mosaic_sources() -> tuple[tuple[np.ndarray, ...], ...]:
    """Each source photo: its grey channel alone, or its three channels in each of their six orders
    (choosing an order is cheaper than shuffling each patch's channels)."""
    sources: list[tuple[np.ndarray, ...]] = []
    for name in MOSAIC_SOURCES:
        array = _photo(name)
        if np.array_equal(array[:, :, 0], array[:, :, 1]) and np.array_equal(array[:, :, 1], array[:, :, 2]):
            sources.append((np.ascontiguousarray(array[:, :, 0]),))
        else:
            orders = itertools.permutations(range(3))
            sources.append(tuple(np.ascontiguousarray(array[:, :, list(order)]) for order in orders))
    return tuple(sources)


def _recolour(rng: np.random.Generator, patch: np.ndarray) -> np.ndarray:
    """A grey patch through a colour gradient; a colour one through a curve per channel, or a gradient."""
    if patch.ndim == 2 or rng.random() < 0.25:
        # From a dark colour to a light one, so that the picture stays readable.
        stops = np.array(
            [_colour(rng, value=(0.0, 0.45)), _colour(rng, value=(0.3, 0.8)), _colour(rng, value=(0.6, 1.0))],
            np.float32,
        )
        levels, middle = np.arange(256), rng.uniform(60, 200)
        ramp = np.stack([np.interp(levels, [0, middle, 255], stops[:, c]) for c in range(3)], 1).astype(np.uint8)
        grey = patch if patch.ndim == 2 else cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY)
        result = _colourise(grey, ramp)
    else:
        inputs = np.arange(256, dtype=np.float32) / 255
        curves = []
        for _ in range(3):
            gamma, gain, offset = rng.uniform(0.6, 1.6), rng.uniform(0.7, 1.2), rng.uniform(-30, 30)
            curves.append(np.clip(inputs**gamma * 255 * gain + offset, 0, 255))
        result = cv2.LUT(patch, np.stack(curves, axis=1).astype(np.uint8).reshape(256, 1, 3))
    if rng.random() < 0.08:
        result = cv2.bitwise_not(result)
    return result


def _source_map(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A source photo, and the map from the pixels of a `width` x `height` patch to its pixels (for
    cv2.WARP_INVERSE_MAP): a random piece of it, turned, maybe mirrored, scaled."""
    sources = _mosaic_sources()
    orders = sources[int(rng.integers(len(sources)))]
    source = orders[int(rng.integers(len(orders)))] if rng.random() < 0.5 else orders[0]
    source_h, source_w = source.shape[:2]
    draw = rng.random()
    angle = 0.0 if draw < 0.3 else (rng.integers(4) * math.pi / 2 if draw < 0.65 else rng.uniform(-math.pi, math.pi))
    scale = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))  # patch pixels per source pixel
    c, s = math.cos(angle), math.sin(angle)
    need_w = (abs(width * c) + abs(height * s)) / scale
    need_h = (abs(width * s) + abs(height * c)) / scale
    zoom = max(need_w / (source_w - 2), need_h / (source_h - 2), 1.0)  # a large patch enlarges its source
    scale, need_w, need_h = scale * zoom, need_w / zoom, need_h / zoom
    centre_x = rng.uniform(need_w / 2, source_w - need_w / 2)
    centre_y = rng.uniform(need_h / 2, source_h - need_h / 2)
    mirror = -1.0 if rng.random() < 0.3 else 1.0
    linear = np.array([[c, -s], [s, c]]) @ np.diag([mirror, 1.0]) / scale
    shift = np.array([centre_x, centre_y]) - linear @ np.array([(width - 1) / 2, (height - 1) / 2])
    return source, np.hstack([linear, shift[:, None]])


def _warp(source: np.ndarray, matrix: np.ndarray, width: int, height: int) -> np.ndarray:
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(source, matrix, (width, height), flags=flags, borderMode=cv2.BORDER_REFLECT101)


def _patch(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A `width` x `height` piece of a source photo, turned, maybe mirrored, scaled and recoloured."""
    source, matrix = _source_map(rng, width, height)
    return _recolour(rng, _warp(source, matrix, width, height))


def _split(rng: np.random.Generator, width: int, height: int, count: int, smallest: int) -> list[_Rect]:
    """The canvas cut into `count` rectangles by splitting the largest one, across its longer side."""
    rects: list[_Rect] = [(0, 0, width, height)]
    while len(rects) < count:
        rects.sort(key=lambda r: (r[2] - r[0]) * (r[3] - r[1]))
        x0, y0, x1, y1 = rects[-1]
        if max(x1 - x0, y1 - y0) < 2 * smallest:
            break
        rects.pop()
        if x1 - x0 >= y1 - y0:
            cut = x0 + round((x1 - x0) * rng.uniform(0.25, 0.75))
            rects += [(x0, y0, cut, y1), (cut, y0, x1, y1)]
        else:
            cut = y0 + round((y1 - y0) * rng.uniform(0.25, 0.75))
            rects += [(x0, y0, x1, cut), (x0, cut, x1, y1)]
    return rects


def _lay(
    canvas: np.ndarray,
    rng: np.random.Generator,
    size: tuple[int, int],
    centre: tuple[float, float],
    degrees: float,
    frame: int,
    frame_colour: _RGB,
) -> None:
    """Lays a patch of `size` on the canvas, centred at `centre`, turned by `degrees`, inside a frame
    `frame` pixels wide: warped from its source straight onto the canvas's pixels, in one step."""
    width, height = size
    turn = math.radians(degrees)
    c, s = math.cos(turn), math.sin(turn)
    unturn = np.array([[c, s], [-s, c]])  # canvas offsets to patch offsets
    middle = np.array(centre)
    signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
    inner = middle + (signs * [width / 2, height / 2]) @ unturn
    outer = middle + (signs * [width / 2 + frame, height / 2 + frame]) @ unturn
    x0, y0 = (max(0, math.floor(v)) for v in outer.min(axis=0))
    x1, y1 = (
        min(canvas.shape[1], math.ceil(outer[:, 0].max()) + 1),
        min(canvas.shape[0], math.ceil(outer[:, 1].max()) + 1),
    )
    if x1 <= x0 or y1 <= y0:
        return
    if frame:
        cv2.fillConvexPoly(canvas, np.rint(outer * 16).astype(np.int32), frame_colour, cv2.LINE_AA, 4)
    source, to_source = _source_map(rng, width, height)
    # Canvas pixel q (the box's pixel plus x0, y0) -> patch pixel unturn (q - centre) + the patch's middle -> source.
    linear = to_source[:, :2] @ unturn
    patch_middle = np.array([(width - 1) / 2, (height - 1) / 2])
    shift = to_source[:, :2] @ (patch_middle - unturn @ (middle - [x0, y0])) + to_source[:, 2]
    picture = _recolour(rng, _warp(source, np.hstack([linear, shift[:, None]]), x1 - x0, y1 - y0))
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillConvexPoly(mask, np.rint((inner - [x0, y0]) * 16).astype(np.int32), 255, cv2.LINE_AA, 4)
    _paste(canvas, picture, mask, x0, y0)


def _tiles(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Patches side by side, with or without gaps between them."""
    tiles = _canvas(width, height, _colour(rng))
    gap = int(rng.integers(2, 10)) if rng.random() < 0.35 else 0
    smallest = max(24, min(width, height) // 10)
    for x0, y0, x1, y1 in _split(rng, width, height, int(rng.integers(3, 18)), smallest):
        tile_w, tile_h = x1 - x0 - gap, y1 - y0 - gap
        if tile_w > 4 and tile_h > 4:
            tiles[y0 : y0 + tile_h, x0 : x0 + tile_w] = _patch(rng, tile_w, tile_h)
    return tiles


def _mosaic(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    if rng.random() < 0.4:
        return _tiles(rng, width, height)
    # A collage: pieces laid over tiles or one large patch, at angles, some framed like prints.
    canvas = _tiles(rng, width, height) if rng.random() < 0.4 else _patch(rng, width, height)
    if rng.random() < 0.5:
        canvas = cv2.convertScaleAbs(canvas, alpha=rng.uniform(0.4, 0.8), beta=rng.uniform(0, 80))
    side = min(width, height)
    for _ in range(int(rng.integers(3, 11))):
        patch_w = max(16, round(side * rng.uniform(0.15, 0.55)))
        patch_h = max(16, round(patch_w * math.exp(rng.uniform(-0.5, 0.5))))
        framed = rng.random() < 0.5
        frame = max(2, round(patch_w * rng.uniform(0.02, 0.08))) if framed else 0
        colour = (255, 255, 255) if rng.random() < 0.6 else _colour(rng)
        degrees = rng.uniform(-35, 35) if rng.random() < 0.7 else 0.0
        centre = (rng.uniform(0, width), rng.uniform(0, height))
        _lay(canvas, rng, (patch_w, patch_h), centre, degrees, frame, colour)
    return canvas


# Application windows: title bar, toolbar, sidebar, content, status bar, in a random theme.


@dataclass(frozen=True)
class _Theme:
    background: _RGB
    panel: _RGB  # title bar, toolbar, sidebar
    text: _RGB
    muted: _RGB
    accent: _RGB
    on_accent: _RGB
    border: _RGB
    stripe: _RGB  # alternate table rows, input fields
    scale: float  # pixels per point of the interface


def _theme(rng: np.random.Generator) -> _Theme:
    hue, tint = rng.random(), rng.uniform(0, 0.12)
    accent = _hsv(rng.random(), rng.uniform(0.5, 0.9), rng.uniform(0.55, 0.95))
    if rng.random() < 0.35:  # dark
        base = rng.uniform(0.1, 0.22)
        background, panel = _hsv(hue, tint, base), _hsv(hue, tint, base + rng.uniform(-0.06, 0.08))
        text, muted = _hsv(hue, 0.05, rng.uniform(0.85, 0.97)), _hsv(hue, 0.05, rng.uniform(0.55, 0.7))
        border, stripe = _hsv(hue, tint, base + 0.12), _hsv(hue, tint, base + 0.05)
    else:
        base = rng.uniform(0.93, 1.0)
        background, panel = _hsv(hue, tint / 2, base), _hsv(hue, tint, base - rng.uniform(0.02, 0.1))
        text, muted = _hsv(hue, 0.1, rng.uniform(0.05, 0.25)), _hsv(hue, 0.05, rng.uniform(0.4, 0.55))
        border, stripe = _hsv(hue, tint, base - 0.18), _hsv(hue, tint, base - 0.04)
    on_accent = (255, 255, 255) if sum(accent) < 560 else (20, 20, 20)
    return _Theme(background, panel, text, muted, accent, on_accent, border, stripe, rng.uniform(0.85, 1.5))


def _icon(canvas: np.ndarray, rng: np.random.Generator, rect: _Rect, colour: _RGB) -> None:
    """A small glyph: a circle, a triangle, bars, a square or a cross."""
    x0, y0, x1, y1 = rect
    cx, cy, r = (x0 + x1) // 2, (y0 + y1) // 2, max(2, (x1 - x0) // 2 - 1)
    kind = rng.integers(5)
    if kind == 0:
        cv2.circle(canvas, (cx, cy), r, colour, int(rng.choice([-1, 2])), cv2.LINE_AA)
    elif kind == 1:
        points = np.array([[cx - r, cy + r], [cx + r, cy + r], [cx, cy - r]], np.int32)
        cv2.fillPoly(canvas, [points], colour, cv2.LINE_AA)
    elif kind == 2:
        for dy in (-r // 2, 0, r // 2):
            cv2.line(canvas, (cx - r, cy + dy), (cx + r, cy + dy), colour, max(1, r // 4))
    elif kind == 3:
        _rounded_rect(canvas, (cx - r, cy - r, cx + r, cy + r), r // 3, colour, int(rng.choice([-1, 2])))
    else:
        cv2.line(canvas, (cx - r, cy - r), (cx + r, cy + r), colour, max(1, r // 3), cv2.LINE_AA)
        cv2.line(canvas, (cx - r, cy + r), (cx + r, cy - r), colour, max(1, r // 3), cv2.LINE_AA)


def _button(canvas: np.ndarray, rng: np.random.Generator, theme: _Theme, x: int, y: int, primary: bool) -> int:
    """A button with a label at x, y; returns its width."""
    size = _size(13 * theme.scale)
    pad = round(10 * theme.scale)
    height = round(size * 1.3) + pad
    label = str(rng.choice(_WORDS)).capitalize()
    width = _word(label, size).shape[1] + 2 * pad
    fill, ink = (theme.accent, theme.on_accent) if primary else (theme.stripe, theme.text)
    _rounded_rect(canvas, (x, y, x + width, y + height), round(5 * theme.scale), fill)
    if not primary:
        _rounded_rect(canvas, (x, y, x + width, y + height), round(5 * theme.scale), theme.border, 1)
    _label(canvas, label, x + pad, y + pad // 2, size, ink)
    return width


def _document(canvas: np.ndarray, rng: np.random.Generator, theme: _Theme, rect: _Rect) -> None:
    x0, y0, x1, y1 = rect
    margin = round(rng.uniform(12, 40) * theme.scale)
    x, y, width = x0 + margin, y0 + margin, x1 - x0 - 2 * margin
    body = _size(rng.uniform(12, 16) * theme.scale)
    while y < y1 - body:
        heading = _size(body * rng.uniform(1.4, 2.2))
        _text(canvas, rng, x, y, heading, theme.text, width, (1, 5))
        y += round(heading * 1.6)
        bullets = rng.random() < 0.25
        for line in range(int(rng.integers(2, 9))):
            if y > y1 - body:
                break
            indent = round(body * 1.5) if bullets else 0
            if bullets:
                cv2.circle(
                    canvas, (x + body // 2, y + round(body * 0.7)), max(2, body // 5), theme.text, -1, cv2.LINE_AA
                )
            last = line > 0 and rng.random() < 0.2
            _text(canvas, rng, x + indent, y, body, theme.text, round(width * (rng.uniform(0.2, 0.7) if last else 1)))
            y += round(body * rng.uniform(1.4, 1.8))
        if rng.random() < 0.3 and y < y1 - 6 * body:  # a bar chart
            bars = int(rng.integers(4, 14))
            chart_h = round(rng.uniform(4, 9) * body)
            bar_w = max(3, width // (2 * bars))
            for i in range(bars):
                top = y + round(chart_h * rng.uniform(0.05, 0.9))
                cv2.rectangle(
                    canvas, (x + 2 * i * bar_w, top), (x + (2 * i + 1) * bar_w, y + chart_h), theme.accent, -1
                )
            cv2.line(canvas, (x, y + chart_h), (x + width, y + chart_h), theme.muted, 1)
            y += chart_h + body
        y += round(body * 1.2)


def _table(canvas: np.ndarray, rng: np.random.Generator, theme: _Theme, rect: _Rect) -> None:
    x0, y0, x1, y1 = rect
    size = _size(rng.uniform(12, 14) * theme.scale)
    row = round(size * rng.uniform(1.9, 2.6))
    columns = int(rng.integers(3, 8))
    cuts = np.sort(rng.uniform(0, 1, columns - 1))
    edges = [x0, *(x0 + np.rint(cuts * (x1 - x0)).astype(int)), x1]
    pad = round(8 * theme.scale)
    _box(canvas, (x0, y0, x1, min(y0 + row, y1)), theme.panel)
    striped, ruled = rng.random() < 0.6, rng.random() < 0.5
    y, header = y0, True
    while y < y1:
        if striped and not header and ((y - y0) // row) % 2 == 0:
            _box(canvas, (x0, y, x1, min(y + row, y1)), theme.stripe)
        for left, right in itertools.pairwise(edges):
            if header:
                _text(canvas, rng, left + pad, y + (row - size) // 2, size, theme.muted, right - left - 2 * pad, (1, 2))
            elif rng.random() < 0.12:  # a status pill
                label = str(rng.choice(_WORDS))
                pill = _word(label, size).shape[1] + 12
                if pill < right - left - pad:
                    top = y + (row - size) // 2 - 2
                    _rounded_rect(canvas, (left + pad, top, left + pad + pill, top + size + 6), size, theme.accent)
                    _label(canvas, label, left + pad + 6, y + (row - size) // 2, size, theme.on_accent)
            else:
                colour = theme.text if rng.random() < 0.8 else theme.muted
                _text(canvas, rng, left + pad, y + (row - size) // 2, size, colour, right - left - 2 * pad, (1, 4))
        y += row
        header = False
        cv2.line(canvas, (x0, y - 1), (x1, y - 1), theme.border, 1)
    if ruled:
        for edge in edges[1:-1]:
            cv2.line(canvas, (edge, y0), (edge, y1), theme.border, 1)


def _code(canvas: np.ndarray, rng: np.random.Generator, theme: _Theme, rect: _Rect) -> None:
    x0, y0, x1, y1 = rect
    size = _size(rng.uniform(12, 15) * theme.scale)
    line_h = round(size * rng.uniform(1.35, 1.6))
    gutter = round(size * 3.2)
    _box(canvas, (x0, y0, x0 + gutter, y1), theme.panel)
    colours = [theme.text, theme.accent, *(_colour(rng, (0.4, 0.8), (0.45, 0.9)) for _ in range(3))]
    first, indent, y = int(rng.integers(1, 400)), 0, y0 + round(6 * theme.scale)
    while y < y1 - line_h:
        number = _word(str(first), size)
        _blend(canvas, number, x0 + gutter - number.shape[1] - 6, y, theme.muted)
        first += 1
        indent = int(np.clip(indent + rng.choice([-1, 0, 0, 0, 1]), 0, 5))
        x = x0 + gutter + round(10 * theme.scale) + indent * 2 * size
        if rng.random() < 0.85:
            for _ in range(int(rng.integers(1, 5))):
                colour = colours[int(rng.integers(len(colours)))]
                x += _text(canvas, rng, x, y, size, colour, max(0, x1 - x - 8), (1, 3)) + size // 2
                if x > x1 - size:
                    break
        y += line_h


def _form(canvas: np.ndarray, rng: np.random.Generator, theme: _Theme, rect: _Rect) -> None:
    x0, y0, x1, y1 = rect
    size = _size(rng.uniform(12, 15) * theme.scale)
    margin = round(rng.uniform(16, 48) * theme.scale)
    x, y = x0 + margin, y0 + margin
    field_w = round((x1 - x0 - 2 * margin) * rng.uniform(0.5, 1))
    field_h = round(size * 2.2)
    while y < y1 - 3 * field_h:
        choice = rng.random()
        if choice < 0.6:
            _text(canvas, rng, x, y, size, theme.text, field_w, (1, 3))
            y += round(size * 1.6)
            _rounded_rect(canvas, (x, y, x + field_w, y + field_h), round(4 * theme.scale), theme.stripe)
            _rounded_rect(canvas, (x, y, x + field_w, y + field_h), round(4 * theme.scale), theme.border, 1)
            if rng.random() < 0.7:
                colour = theme.text if rng.random() < 0.5 else theme.muted
                _text(canvas, rng, x + 8, y + (field_h - size) // 2 - 2, size, colour, field_w - 16, (1, 4))
            y += field_h + round(size * 1.2)
        elif choice < 0.85:  # a checkbox or a switch with its label
            box = round(size * 1.1)
            on = rng.random() < 0.5
            if rng.random() < 0.5:
                _rounded_rect(
                    canvas, (x, y, x + box, y + box), 3, theme.accent if on else theme.border, -1 if on else 1
                )
                if on:
                    tick = [
                        [x + box // 5, y + box // 2],
                        [x + box * 2 // 5, y + box * 3 // 4],
                        [x + box * 4 // 5, y + box // 4],
                    ]
                    points = np.array(tick, np.int32)
                    cv2.polylines(canvas, [points], False, theme.on_accent, 2, cv2.LINE_AA)
                offset = box
            else:
                _rounded_rect(canvas, (x, y, x + 2 * box, y + box), box // 2, theme.accent if on else theme.border)
                knob = (x + (box * 3 // 2 if on else box // 2), y + box // 2)
                cv2.circle(canvas, knob, max(2, box // 2 - 2), (255, 255, 255), -1, cv2.LINE_AA)
                offset = 2 * box
            _text(canvas, rng, x + offset + size // 2, y - 1, size, theme.text, field_w, (2, 6))
            y += round(box * 1.9)
        else:
            bx = x
            for primary in (True, False)[: int(rng.integers(1, 3))]:
                bx += _button(canvas, rng, theme, bx, y, primary) + round(10 * theme.scale)
            y += round(size * 3.2)


def _thumbnail(canvas: np.ndarray, rng: np.random.Generator, rect: _Rect) -> None:
    """A tile of a gallery: a gradient with a few shapes (never a photo)."""
    x0, y0, x1, y1 = rect
    a, b = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    ramp = np.linspace(0, 1, y1 - y0, dtype=np.float32)[:, None, None]
    canvas[y0:y1, x0:x1] = np.rint(a + (b - a) * ramp).astype(np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        cx, cy = int(rng.integers(x0, x1)), int(rng.integers(y0, y1))
        r = max(2, int(rng.integers(2, max(3, (x1 - x0) // 3))))
        cv2.circle(canvas, (cx, cy), r, _colour(rng), -1, cv2.LINE_AA)


def _gallery(canvas: np.ndarray, rng: np.random.Generator, theme: _Theme, rect: _Rect) -> None:
    x0, y0, x1, y1 = rect
    size = _size(12 * theme.scale)
    gap = round(rng.uniform(8, 20) * theme.scale)
    tile = round(rng.uniform(70, 160) * theme.scale)
    y = y0 + gap
    while y + tile < y1:
        x = x0 + gap
        while x + tile < x1:
            _thumbnail(canvas, rng, (x, y, x + tile, y + round(tile * 0.75)))
            _text(canvas, rng, x, y + round(tile * 0.75) + 4, size, theme.text, tile, (1, 2))
            x += tile + gap
        y += round(tile * 0.75) + 2 * size + gap


def _chat(canvas: np.ndarray, rng: np.random.Generator, theme: _Theme, rect: _Rect) -> None:
    x0, y0, x1, y1 = rect
    size = _size(rng.uniform(12, 15) * theme.scale)
    pad, y = round(10 * theme.scale), y0 + round(12 * theme.scale)
    avatar = round(size * 1.4)
    while y < y1 - 3 * size:
        mine = rng.random() < 0.4
        lines = int(rng.integers(1, 4))
        bubble_w = round((x1 - x0) * rng.uniform(0.3, 0.65))
        bubble_h = lines * round(size * 1.45) + 2 * pad
        left = x1 - bubble_w - pad if mine else x0 + 2 * avatar + pad
        if not mine:
            cv2.circle(canvas, (x0 + avatar + pad // 2, y + avatar), avatar, _colour(rng, (0.3, 0.7)), -1, cv2.LINE_AA)
        fill, ink = (theme.accent, theme.on_accent) if mine else (theme.stripe, theme.text)
        _rounded_rect(canvas, (left, y, left + bubble_w, y + bubble_h), round(12 * theme.scale), fill)
        for i in range(lines):
            _text(canvas, rng, left + pad, y + pad + i * round(size * 1.45), size, ink, bubble_w - 2 * pad)
        y += bubble_h + round(size * rng.uniform(0.6, 1.6))


def _dashboard(canvas: np.ndarray, rng: np.random.Generator, theme: _Theme, rect: _Rect) -> None:
    x0, y0, x1, y1 = rect
    gap = round(14 * theme.scale)
    columns = int(rng.integers(2, 5))
    card_w = (x1 - x0 - gap * (columns + 1)) // columns
    card_h = round(card_w * rng.uniform(0.45, 0.8))
    size = _size(12 * theme.scale)
    big = _size(rng.uniform(22, 32) * theme.scale)
    y = y0 + gap
    while y + card_h < y1 and card_w > 40:
        for column in range(columns):
            x = x0 + gap + column * (card_w + gap)
            _rounded_rect(canvas, (x, y, x + card_w, y + card_h), round(8 * theme.scale), theme.panel)
            _rounded_rect(canvas, (x, y, x + card_w, y + card_h), round(8 * theme.scale), theme.border, 1)
            _text(canvas, rng, x + gap, y + gap, size, theme.muted, card_w - 2 * gap, (1, 3))
            value = f"{rng.integers(1, 99999):,}" if rng.random() < 0.7 else f"{rng.uniform(0, 100):.1f}%"
            _label(canvas, value, x + gap, y + gap + round(size * 1.8), big, theme.text)
            top = y + gap + round(size * 1.8) + round(big * 1.6)
            if y + card_h - gap - top > 10:  # a sparkline
                count = int(rng.integers(6, 24))
                xs = np.linspace(x + gap, x + card_w - gap, count)
                ys = top + (y + card_h - gap - top) * rng.uniform(0, 1, count)
                points = np.rint(np.stack([xs, ys], axis=1)).astype(np.int32)
                cv2.polylines(canvas, [points], False, theme.accent, max(1, round(2 * theme.scale)), cv2.LINE_AA)
        y += card_h + gap


_CONTENTS = (_document, _table, _code, _form, _gallery, _chat, _dashboard)


def _window(
    rng: np.random.Generator, width: int, height: int, photo: np.ndarray | None = None
) -> tuple[np.ndarray, _Rect, _RGB]:
    """An application window, its content area and that area's colour. With a photo, the content is
    one that could show it."""
    theme = _theme(rng)
    s = theme.scale
    canvas = _canvas(width, height, theme.background)
    small = _size(12 * s)
    # Title bar: window controls and the title.
    bar = round(rng.uniform(26, 38) * s)
    _box(canvas, (0, 0, width, bar), theme.panel)
    if rng.random() < 0.5:
        for i, colour in enumerate(((237, 106, 94), (245, 191, 79), (98, 197, 84))):
            cx = round((14 + 20 * i) * s)
            cv2.circle(canvas, (cx, bar // 2), max(3, round(6 * s)), colour, -1, cv2.LINE_AA)
    else:
        half = round(6 * s)
        for i in range(3):
            cx = width - round((22 + 44 * i) * s)
            _icon(canvas, rng, (cx - half, bar // 2 - half, cx + half, bar // 2 + half), theme.text)
    title = _size(13 * s)
    title_w = min(width // 2, round(width * rng.uniform(0.15, 0.35)))
    _text(canvas, rng, (width - title_w) // 2, (bar - round(title * 1.3)) // 2, title, theme.text, title_w, (1, 5))
    y = bar
    cv2.line(canvas, (0, y - 1), (width, y - 1), theme.border, 1)
    if rng.random() < 0.5:  # menu bar
        menu = round(small * 1.9)
        _box(canvas, (0, y, width, y + menu), theme.background)
        x = round(10 * s)
        for name in ("File", "Edit", "View", "Go", "Tools", "Window", "Help")[: int(rng.integers(3, 8))]:
            x += _label(canvas, name, x, y + (menu - round(small * 1.3)) // 2, small, theme.text) + round(16 * s)
        y += menu
    if rng.random() < 0.8:  # toolbar: icon buttons, separators and a search field
        tool = round(rng.uniform(34, 48) * s)
        _box(canvas, (0, y, width, y + tool), theme.panel)
        icon = round(18 * s)
        x = round(10 * s)
        for _ in range(int(rng.integers(3, 12))):
            if rng.random() < 0.15:
                cv2.line(canvas, (x, y + tool // 4), (x, y + 3 * tool // 4), theme.border, 1)
                x += round(10 * s)
            top = y + (tool - icon) // 2
            colour = theme.accent if rng.random() < 0.2 else theme.muted
            _icon(canvas, rng, (x, top, x + icon, top + icon), colour)
            x += icon + round(rng.uniform(8, 16) * s)
        search_w = round(width * rng.uniform(0.15, 0.3))
        if x + search_w + 20 < width and rng.random() < 0.7:
            left, top = width - search_w - round(12 * s), y + tool // 5
            _rounded_rect(canvas, (left, top, left + search_w, y + tool - tool // 5), tool // 3, theme.background)
            _rounded_rect(canvas, (left, top, left + search_w, y + tool - tool // 5), tool // 3, theme.border, 1)
            _label(canvas, "Search", left + tool // 3, y + (tool - round(small * 1.3)) // 2, small, theme.muted)
        y += tool
        cv2.line(canvas, (0, y - 1), (width, y - 1), theme.border, 1)
    bottom = height
    if rng.random() < 0.6:  # status bar
        status = round(small * 1.9)
        bottom = height - status
        _box(canvas, (0, bottom, width, height), theme.panel)
        cv2.line(canvas, (0, bottom), (width, bottom), theme.border, 1)
        x = round(10 * s)
        for _ in range(int(rng.integers(1, 4))):
            x += _text(
                canvas, rng, x, bottom + (status - round(small * 1.3)) // 2, small, theme.muted, width // 4, (1, 3)
            )
            x += round(30 * s)
    left, right = 0, width
    if rng.random() < 0.8 and width > 300:  # sidebar
        side_w = round(width * rng.uniform(0.14, 0.28))
        on_left = rng.random() < 0.8
        sx0, sx1 = (0, side_w) if on_left else (width - side_w, width)
        _box(canvas, (sx0, y, sx1, bottom), theme.panel)
        edge = sx1 - 1 if on_left else sx0
        cv2.line(canvas, (edge, y), (edge, bottom), theme.border, 1)
        item = round(small * rng.uniform(2.0, 2.6))
        selected = int(rng.integers(0, 8))
        sy, i = y + round(10 * s), 0
        while sy < bottom - item:
            if rng.random() < 0.15:  # a section heading
                _text(canvas, rng, sx0 + round(12 * s), sy + item // 3, small, theme.muted, side_w - 24, (1, 2))
            else:
                ink = theme.text
                if i == selected:
                    _rounded_rect(canvas, (sx0 + 6, sy, sx1 - 6, sy + item), round(5 * s), theme.accent)
                    ink = theme.on_accent
                icon = round(small * 1.1)
                top = sy + (item - icon) // 2
                _icon(canvas, rng, (sx0 + round(14 * s), top, sx0 + round(14 * s) + icon, top + icon), ink)
                label_x = sx0 + round(20 * s) + icon
                _text(
                    canvas, rng, label_x, sy + (item - round(small * 1.3)) // 2, small, ink, sx1 - label_x - 10, (1, 3)
                )
                i += 1
            sy += item
        left, right = (side_w, width) if on_left else (0, width - side_w)
    top = y
    if rng.random() < 0.35:  # tabs
        tab_h = round(small * 2.4)
        _box(canvas, (left, y, right, y + tab_h), theme.panel)
        x, active = left, int(rng.integers(0, 4))
        for i in range(int(rng.integers(2, 6))):
            tab_w = round(rng.uniform(90, 180) * s)
            if x + tab_w > right:
                break
            if i == active:
                _box(canvas, (x, y, x + tab_w, y + tab_h), theme.background)
                _box(canvas, (x, y + tab_h - 3, x + tab_w, y + tab_h), theme.accent)
            _text(canvas, rng, x + 12, y + (tab_h - round(small * 1.3)) // 2, small, theme.text, tab_w - 24, (1, 2))
            cv2.line(canvas, (x + tab_w, y + 4), (x + tab_w, y + tab_h - 4), theme.border, 1)
            x += tab_w
        top = y + tab_h
    content: _Rect = (left, top, right, bottom)
    scroll = round(10 * s)
    inner: _Rect = (left, top, right - scroll, bottom)
    above = canvas[:bottom]  # the rows above the status bar, which content may not cross (a view: cv2 draws into it)
    if photo is None:
        if rng.random() < 0.25 and right - left > 500:  # two panes: a list beside the content
            split = left + round((right - left) * rng.uniform(0.3, 0.45))
            _table(above, rng, theme, (left, top, split, bottom))
            cv2.line(canvas, (split, top), (split, bottom), theme.border, 1)
            inner = (split + 1, top, right - scroll, bottom)
        _CONTENTS[int(rng.integers(len(_CONTENTS)))](above, rng, theme, inner)
    else:
        (_document, _chat, _gallery, _form)[int(rng.integers(4))](above, rng, theme, inner)
    # Scrollbar.
    _box(canvas, (right - scroll, top, right, bottom), theme.panel)
    thumb_top = top + round((bottom - top) * rng.uniform(0, 0.6))
    thumb = (right - scroll + 2, thumb_top, right - 2, thumb_top + round((bottom - top) * rng.uniform(0.1, 0.4)))
    _rounded_rect(canvas, thumb, scroll // 2, theme.border)
    return canvas, content, theme.background


def _screenshot(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    if rng.random() < 0.25:  # the window on a desktop
        desktop = _background(rng, *_work_size(width, height))
        canvas = np.ascontiguousarray(_resize(desktop, width, height))
        margin_x, margin_y = round(width * rng.uniform(0.03, 0.12)), round(height * rng.uniform(0.03, 0.12))
        window, _, _ = _window(rng, width - 2 * margin_x, height - 2 * margin_y)
        canvas[margin_y : height - margin_y, margin_x : width - margin_x] = window
        return canvas
    window, _, _ = _window(rng, width, height)
    return window


_GENERATORS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "texture": _texture,
    "mosaic": _mosaic,
    "screenshot": _screenshot,
    "shapes": _shapes,
}


# ---------------------------------------------------------------------------------------------
# Queries

FAMILIES: tuple[str, ...] = (
    "crop50",
    "crop25",
    "crop12",
    "flip",
    "rot90",
    "rot180",
    "rot15",
    "border15",
    "text_overlay",
    "box_overlay",
    "brightness",
    "contrast",
    "saturation",
    "greyscale",
    "jpeg10",
    "blur2",
    "screenshot",
)
_QUERY_SALT = 0xC0B1E5
_CROPS = {"crop50": 0.5, "crop25": 0.25, "crop12": 0.12}
SCREEN_SIZE = (1280, 800)


@dataclass(frozen=True)
class Query:
    family: str
    original: str  # the name in ORIGINALS it was made from
    image: Image.Image  # RGB
    # For crops, the region of the original that was cut out: (x0, y0, x1, y1) as fractions of the
    # original's width and height. None for the other families.
    region: tuple[float, float, float, float] | None
    mirrored: bool  # True for "flip"


def _crop(image: Image.Image, rng: np.random.Generator, fraction: float) -> tuple[Image.Image, tuple[float, ...]]:
    """A crop keeping `fraction` of the area, its aspect within 15% of the original's, anywhere."""
    width, height = image.size
    aspect = math.exp(rng.uniform(-0.15, 0.15))
    crop_w = min(width, max(1, round(width * math.sqrt(fraction) * aspect)))
    crop_h = min(height, max(1, round(fraction * width * height / crop_w)))
    x0, y0 = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
    region = (x0 / width, y0 / height, (x0 + crop_w) / width, (y0 + crop_h) / height)
    return image.crop((x0, y0, x0 + crop_w, y0 + crop_h)), region


def _text_overlay(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One or two lines of large words, as on a meme or a watermark, with an outline."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    width, height = image.size
    lines = [
        " ".join(str(rng.choice(_WORDS)) for _ in range(int(rng.integers(1, 4))))
        for _ in range(int(rng.integers(1, 3)))
    ]
    if rng.random() < 0.5:
        lines = [line.upper() for line in lines]
    size = max(10, round(height * rng.uniform(0.12, 0.2)))
    while size > 10 and max(draw.textlength(line, font=_font(size)) for line in lines) > 0.92 * width:
        size = round(size * 0.9)
    font = _font(size)
    fill = _colour(rng, value=(0.85, 1.0)) if rng.random() < 0.7 else _colour(rng, value=(0.0, 0.3))
    stroke = (0, 0, 0) if sum(fill) > 380 else (255, 255, 255)
    block = len(lines) * size * 1.25
    top = rng.uniform(0.02, 0.98) * (height - block)
    for i, line in enumerate(lines):
        line_w = draw.textlength(line, font=font)
        x = rng.uniform(0.02, 0.98) * (width - line_w)
        y = top + i * size * 1.25
        draw.text((x, y), line, fill=fill, font=font, stroke_width=max(1, size // 14), stroke_fill=stroke)
    return image


def _box_overlay(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A few solid rectangles and ellipses, together covering 10 to 20% of the picture."""
    image = image.copy()
    width, height = image.size
    target = rng.uniform(0.1, 0.2)
    count = int(rng.integers(1, 5))
    covered = np.zeros((height, width), bool)
    draw = ImageDraw.Draw(image)
    for _ in range(count):
        area = target / count * width * height
        ellipse = rng.random() < 0.35
        if ellipse:
            area *= 4 / math.pi  # the ellipse fills pi/4 of its box
        ratio = math.exp(rng.uniform(-0.8, 0.8))
        box_w = min(width, max(2, round(math.sqrt(area * ratio))))
        box_h = min(height, max(2, round(area / box_w)))
        for _ in range(20):  # try to keep the shapes apart, so they cover what they should
            x0, y0 = int(rng.integers(0, width - box_w + 1)), int(rng.integers(0, height - box_h + 1))
            if not covered[y0 : y0 + box_h, x0 : x0 + box_w].any():
                break
        covered[y0 : y0 + box_h, x0 : x0 + box_w] = True
        box = (x0, y0, x0 + box_w - 1, y0 + box_h - 1)
        colour = _colour(rng)
        if ellipse:
            draw.ellipse(box, fill=colour)
        else:
            draw.rectangle(box, fill=colour)
    return image


def _screenshot_query(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The photo at 30 to 60% of the window's width, inside an application window."""
    screen_w, screen_h = SCREEN_SIZE
    canvas, (left, top, right, bottom), background = _window(rng, screen_w, screen_h, photo=np.asarray(image))
    width, height = image.size
    margin = 16
    room_w, room_h = right - left - 2 * margin - 10, bottom - top - 2 * margin
    most = min(0.6, room_w / screen_w, room_h * width / height / screen_w)
    share = rng.uniform(min(0.3, most), most)
    photo_w = round(screen_w * share)
    photo_h = max(1, round(photo_w * height / width))
    x = left + margin + int(rng.integers(0, room_w - photo_w + 1))
    y = top + margin + int(rng.integers(0, max(1, room_h - photo_h + 1)))
    _box(canvas, (max(left, x - margin), max(top, y - margin), x + photo_w + margin, y + photo_h + margin), background)
    shrink = photo_w < width
    canvas[y : y + photo_h, x : x + photo_w] = cv2.resize(
        np.asarray(image), (photo_w, photo_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    )
    return Image.fromarray(canvas)


def _enhance(
    enhancer: Callable[[Image.Image], ImageEnhance._Enhance],
) -> Callable[[Image.Image, np.random.Generator], Image.Image]:
    def change(image: Image.Image, rng: np.random.Generator) -> Image.Image:
        return enhancer(image).enhance(float(rng.choice([0.6, 1.5])))

    return change


def _jpeg(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    decoded = Image.open(io.BytesIO(encode_jpeg(image, quality=10)))
    return decoded.convert("RGB")


_TRANSFORMS: dict[str, Callable[[Image.Image, np.random.Generator], Image.Image]] = {
    "flip": lambda image, rng: image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "rot90": lambda image, rng: image.transpose(Image.Transpose.ROTATE_90),
    "rot180": lambda image, rng: image.transpose(Image.Transpose.ROTATE_180),
    "rot15": lambda image, rng: image.rotate(15, Image.Resampling.BICUBIC, expand=True, fillcolor=_colour(rng)),
    "border15": lambda image, rng: _border(image, rng, 0.15),
    "text_overlay": _text_overlay,
    "box_overlay": _box_overlay,
    "brightness": _enhance(ImageEnhance.Brightness),
    "contrast": _enhance(ImageEnhance.Contrast),
    "saturation": _enhance(ImageEnhance.Color),
    "greyscale": lambda image, rng: image.convert("L").convert("RGB"),
    "jpeg10": _jpeg,
    "blur2": lambda image, rng: image.filter(ImageFilter.GaussianBlur(2)),
    "screenshot": _screenshot_query,
}


def _border(image: Image.Image, rng: np.random.Generator, share: float) -> Image.Image:
    """A solid frame `share` of the width wide on the left and right, of the height on top and below."""
    width, height = image.size
    pad_x, pad_y = round(width * share), round(height * share)
    framed = Image.new("RGB", (width + 2 * pad_x, height + 2 * pad_y), _colour(rng))
    framed.paste(image, (pad_x, pad_y))
    return framed


def make_query(name: str, family: str, seed: int) -> Query:
    """A copy of the original `name` made by `family`; the same arguments give the same pixels."""
    if family not in FAMILIES:
        raise ValueError(f"unknown query family {family!r}: {', '.join(FAMILIES)}")
    image = original(name)
    rng = np.random.default_rng([_QUERY_SALT, seed, zlib.crc32(name.encode()), zlib.crc32(family.encode())])
    if family in _CROPS:
        crop, region = _crop(image, rng, _CROPS[family])
        x0, y0, x1, y1 = region
        return Query(family, name, crop, (x0, y0, x1, y1), mirrored=False)
    return Query(family, name, _TRANSFORMS[family](image, rng).convert("RGB"), None, mirrored=family == "flip")


def queries(per_family: int = 1, seed: int = 0) -> list[Query]:
    """Every original through every family, `per_family` times: the k-th uses seed + k."""
    return [make_query(name, family, seed + k) for name in ORIGINALS for family in FAMILIES for k in range(per_family)]
