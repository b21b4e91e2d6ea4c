"""Model towers on ONNX Runtime (IDIOS_RUNTIME=onnx): exported once from torch, then run without it.

Importing torch alone costs a worker over 500 MB; ONNX Runtime costs about 60 MB, and its int8
kernels run about as fast on CPUs as torch's dynamic quantisation. The graphs are exported by a
child process (`python -m idios.models.onnx_export`), so the worker itself never imports torch,
into IDIOS_ONNX_DIR under a key of everything they depend on: the model, its weights, the
quantisation and the versions of the packages that build them. Workers sharing the directory
export each graph once (a file lock keeps two from doing it at the same time).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from idios import niceness
from idios.models.base import ModelUnavailable, pass_threads

if TYPE_CHECKING:
    from collections.abc import Iterator

    from idios.config import Settings

log = logging.getLogger("idios.models")

# Bump when the export itself changes (what the graphs compute, how they are quantised).
EXPORT_VERSION = 2
PACKAGES = ("torch", "open_clip_torch", "onnx", "onnxruntime")


def graph_root(settings: Settings) -> Path:
    if settings.onnx_dir is not None:
        return Path(settings.onnx_dir)
    if settings.weights_dir is not None:
        return Path(settings.weights_dir) / "onnx"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "idios" / "onnx"


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "missing"


def graph_dir(settings: Settings, name: str, weights: str) -> Path:
    """Where the graphs of this model, built from `weights` (what identifies them), live."""
    key = {
        "model": name,
        "weights": weights,
        "quantize": settings.quantize,
        "export": EXPORT_VERSION,
        **{package: _package_version(package) for package in PACKAGES},
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return graph_root(settings) / f"{name}-{settings.quantize}-{digest}"


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_graphs(settings: Settings, name: str, weights: str, towers: tuple[str, ...]) -> dict[str, Path]:
    """The model's `{tower}.onnx` files, exported first by a child process when missing."""
    directory = graph_dir(settings, name, weights)
    paths = {tower: directory / f"{tower}.onnx" for tower in towers}
    if all(path.is_file() for path in paths.values()):
        return paths
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelUnavailable(f"cannot create the ONNX graph directory {directory.parent}: {exc}") from exc
    with _exclusive(directory.parent / f".{name}.lock"):
        if all(path.is_file() for path in paths.values()):  # another worker exported them meanwhile
            return paths
        _export(settings, name, directory)
    return paths


def _export(settings: Settings, name: str, directory: Path) -> None:
    log.info("exporting %s to ONNX in %s (once per model, weights and versions)", name, directory)
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=directory.parent))
    command = [sys.executable, "-m", "idios.models.onnx_export", name, str(scratch), "--quantize", settings.quantize]
    command += ["--weights", settings.weights]
    if settings.weights_dir is not None:
        command += ["--weights-dir", str(settings.weights_dir)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise ModelUnavailable(f"exporting {name} to ONNX failed: {' | '.join(tail) or done.returncode}")
        shutil.rmtree(directory, ignore_errors=True)
        scratch.rename(directory)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class OnnxTower:
    """One exported tower: `run(array)` returns its unit-length embeddings, one row per input row."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle pool threads would otherwise spin for a while after each pass, taking CPU from the
        # image decoding and the other forward pass that share the cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_cpu_mem_arena = False  # the arena keeps each batch size's peak allocation for good
        self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def run(self, array: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: array})[0]


def load_towers(settings: Settings, paths: dict[str, Path], shared: tuple[str, ...] = ()) -> dict[str, OnnxTower]:
    """A session per tower; passes run side by side on it (ONNX Runtime sessions take concurrent
    runs). With more than one thread a pass (IDIOS_PASS_THREADS), the thread pools of the towers
    named in `shared` (used by bulk and interactive passes alike) run at bulk priority
    (`idios.niceness`): the session is created by a thread that has lowered its own priority, whose
    priority the pool threads inherit. A pass's own thread works on it too, taking whatever share of
    its work the pool threads leave: alone, a pass gets every core; beside a bulk batch, an
    interactive pass keeps one core for itself."""
    threads = pass_threads(settings)
    try:
        with ThreadPoolExecutor(max_workers=1, initializer=niceness.lower_this_thread) as lowered:
            made = {tower: lowered.submit(OnnxTower, paths[tower], threads) for tower in shared}
            return {
                tower: made[tower].result() if tower in made else OnnxTower(path, threads)
                for tower, path in paths.items()
            }
    except ImportError as exc:
        raise ModelUnavailable(f"missing package: {exc.name} (or set IDIOS_RUNTIME=torch)") from exc
    except Exception as exc:  # a damaged file: delete it, the next start exports again
        for path in paths.values():
            path.unlink(missing_ok=True)
        raise ModelUnavailable(f"cannot load the ONNX graphs ({type(exc).__name__}: {exc}); removed them") from exc
