"""The copy-detection benchmark's distractors as JPEG files and as each model's stored vectors,
computed as a worker computes them and kept on disk, so that a run indexes 100,000 images through
`restore` in minutes.

Each distractor (`benchmarks.copies.distractor`) is encoded as JPEG (quality 88), decoded as the
worker decodes a download for that model (`idios.decoding`, with the model's `decode_side`), and
embedded by the model itself (`idios.models`, seeded random weights for the CLIP models). Chunks of
1,000 are computed in worker processes, one core each, and cached under `.cache/copy-features/`:
the JPEGs keyed by the generator's source, the vectors also by the decoder's and the models'; a
change to any of them computes what depends on it again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.copies import distractor, distractor_kind, encode_jpeg

CHUNK = 1000
JPEG_QUALITY = 88
ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "copy-features"
APP = ROOT / "app" / "idios"

_loaded: dict[str, Any] = {}


def _hash(parts: list[str | bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
    return digest.hexdigest()[:12]


def _jpeg_directory() -> Path:
    return CACHE / f"jpeg-{_hash([(ROOT / 'benchmarks' / 'copies.py').read_bytes()])}"


def vector_directory(model: str) -> Path:
    """Where a model's vectors are kept: keyed by what they depend on, the generator, the decoder and
    the code that computes them (for copydetect, the extraction and the stored form, not the search)."""
    import inspect

    from idios import keypoint_data, keypoints
    from idios.models import copydetect

    parts: list[str | bytes] = [(ROOT / "benchmarks" / "copies.py").read_bytes(), (APP / "decoding.py").read_bytes()]
    if model == "copydetect":
        functions = (keypoints.extract, keypoints._spread, keypoint_data.pack, copydetect.CopyDetect)
        parts += [inspect.getsource(function) for function in functions]
        parts.append(repr((keypoints.SPREAD_GRID, keypoints.MIN_ANALYSED_SIDE, keypoint_data.STORED_POINTS)))
    else:
        parts += [path.read_bytes() for path in sorted((APP / "models").glob("*.py")) if path.stem != "copydetect"]
    return CACHE / f"{model}-{_hash(parts)}"


def jpeg_chunk(start: int) -> list[bytes]:
    """The JPEGs of distractors `start` to `start + CHUNK - 1` (a chunk's first index is a multiple of CHUNK)."""
    path = _jpeg_directory() / f"{start:07d}.npz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        images = [encode_jpeg(distractor(index), JPEG_QUALITY) for index in range(start, start + CHUNK)]
        part = path.with_suffix(".part.npz")
        np.savez(part, data=np.frombuffer(b"".join(images), np.uint8), sizes=np.array([len(i) for i in images]))
        part.replace(path)
    stored = np.load(path)
    data, ends = stored["data"].tobytes(), np.cumsum(stored["sizes"])
    return [data[end - size : end] for size, end in zip(stored["sizes"], ends, strict=True)]


def _settings() -> Any:
    from idios.config import Settings

    return Settings(_env_file=None, weights="random", model_threads=1, pass_threads=1)


def model(name: str) -> Any:
    """The model as a worker loads it, once per process."""
    if name not in _loaded:
        from idios.models import REGISTRY

        loaded = REGISTRY[name](_settings())
        loaded.load()
        _loaded[name] = loaded
    return _loaded[name]


def save_vectors(path: Path, name: str, vectors: list[Any], kinds: np.ndarray) -> None:
    """The stored-form vectors of a chunk: float32 rows or packed bits as one array, keypoints (bytes
    of different lengths) as their concatenation and lengths."""
    from idios.specs import SPECS

    kind = SPECS[name].vector_kind
    arrays: dict[str, np.ndarray] = {"kinds": kinds}
    if kind == "keypoints":
        arrays["data"] = np.frombuffer(b"".join(bytes(vector) for vector in vectors), dtype=np.uint8)
        arrays["sizes"] = np.array([len(vector) for vector in vectors])
    elif kind == "binary":
        arrays["vectors"] = np.frombuffer(b"".join(bytes(vector) for vector in vectors), dtype=np.uint8).reshape(
            len(vectors), -1
        )
    else:
        arrays["vectors"] = np.asarray(vectors, dtype=np.float32)
    part = path.with_suffix(".part.npz")
    np.savez(part, **arrays)  # type: ignore[arg-type]  # numpy types **kwds as savez(allow_pickle=...)
    part.replace(path)


def load_vectors(path: Path) -> tuple[list[Any], np.ndarray]:
    """The stored-form vectors of a chunk (`save_vectors`), one per distractor, and their kinds."""
    stored = np.load(path)
    if "data" in stored:
        data, ends = stored["data"].tobytes(), np.cumsum(stored["sizes"])
        return [data[end - size : end] for size, end in zip(stored["sizes"], ends, strict=True)], stored["kinds"]
    return list(stored["vectors"]), stored["kinds"]


def _compute(name: str, start: int, directory: Path) -> Path:
    from idios.decoding import decode_opened, open_image

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    settings, embedder = _settings(), model(name)
    images = [
        decode_opened(open_image(data, settings, embedder.decode_side(False)), settings) for data in jpeg_chunk(start)
    ]
    vectors = [vector for first in range(0, CHUNK, 16) for vector in embedder.embed_images(images[first : first + 16])]
    path = directory / f"{start:07d}.npz"
    save_vectors(path, name, vectors, np.array([distractor_kind(index) for index in range(start, start + CHUNK)]))
    return path


def _jpegs(start: int) -> int:
    return len(jpeg_chunk(start))


def chunks(name: str, count: int, *, processes: int = 2, log: Callable[[str], None] = print) -> Iterator[Path]:
    """The file of each chunk of the first `count` distractors' stored vectors for model `name`
    ({vectors, kinds}), computing the missing ones first."""
    directory = vector_directory(name)  # once, here: the processes compute into it whatever changes meanwhile
    directory.mkdir(parents=True, exist_ok=True)
    starts = range(0, count, CHUNK)
    missing = [start for start in starts if not (directory / f"{start:07d}.npz").exists()]
    if missing:
        log(f"{name}: computing the stored vectors of {len(missing) * CHUNK:,} distractors in {processes} processes")
        model(name)  # a model's first load may prepare files (ONNX graphs) the processes then share
        with ProcessPoolExecutor(max_workers=processes) as pool:
            for done, _ in enumerate(pool.map(_compute, [name] * len(missing), missing, [directory] * len(missing)), 1):
                if done % 10 == 0 or done == len(missing):
                    log(f"  {done * CHUNK:,} of {len(missing) * CHUNK:,}")
    for start in starts:
        yield directory / f"{start:07d}.npz"


def prepare(count: int, *, processes: int = 2, log: Callable[[str], None] = print) -> None:
    """The JPEGs of the first `count` distractors, generated in `processes` processes."""
    starts = [start for start in range(0, count, CHUNK) if not (_jpeg_directory() / f"{start:07d}.npz").exists()]
    if starts:
        log(f"generating {len(starts) * CHUNK:,} distractors in {processes} processes")
        with ProcessPoolExecutor(max_workers=processes) as pool:
            for done, _ in enumerate(pool.map(_jpegs, starts), 1):
                if done % 10 == 0 or done == len(starts):
                    log(f"  {done * CHUNK:,} of {len(starts) * CHUNK:,}")


def main() -> None:
    """`python -m benchmarks.copy_features COUNT MODEL...`: fill the cache ahead of a run."""
    import sys

    count, names = int(sys.argv[1]), sys.argv[2:]
    prepare(count)
    for name in names:
        for _ in chunks(name, count):
            pass


if __name__ == "__main__":
    main()
