"""What every embedding model offers; concrete models live beside this file.

Model modules import torch and friends lazily (inside `load`) so the API process,
which only needs each model's description, stays small.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from idios.errors import Invalid

if TYPE_CHECKING:
    from PIL.Image import Image

    from idios.config import Settings

VectorKind = Literal["float", "binary"]


class PassSlots:
    """Forward passes that run at once: up to `parallel` bulk batches, and as many interactive passes.

    An interactive pass (urgent) never waits for bulk batches: it runs beside those in progress,
    its thread at normal priority against their bulk priority (`idios.niceness`), instead of
    waiting up to a whole batch's time. A bulk batch does not start while an interactive pass
    runs or waits.
    """

    def __init__(self, parallel: int = 1) -> None:
        self.parallel = max(1, parallel)
        self._condition = threading.Condition()
        self._running = {True: 0, False: 0}  # by urgency
        self._urgent = 0  # interactive passes waiting or running

    @contextmanager
    def hold(self, urgent: bool = False) -> Iterator[None]:
        with self._condition:
            self._urgent += urgent
            while self._running[urgent] >= self.parallel or (not urgent and self._urgent):
                self._condition.wait()
            self._running[urgent] += 1
        try:
            yield
        finally:
            with self._condition:
                self._running[urgent] -= 1
                self._urgent -= urgent
                self._condition.notify_all()


def model_cores(settings: Settings) -> int:
    """Cores the forward passes use in all (IDIOS_TORCH_THREADS, for either runtime); 0 means every core."""
    return settings.torch_threads or os.cpu_count() or 1


def pass_threads(settings: Settings) -> int:
    """Threads of each forward pass (IDIOS_PASS_THREADS); 0 means all of `model_cores`."""
    return min(settings.pass_threads or model_cores(settings), model_cores(settings))


def parallel_passes(settings: Settings) -> int:
    """How many bulk batches run their forward passes side by side."""
    return max(1, model_cores(settings) // pass_threads(settings))


class ModelUnavailable(Exception):
    """The model cannot be loaded here (missing weights or packages); the message says why."""


@dataclass(frozen=True)
class ModelSpec:
    """The static description of a model: enough for the API and the store, no weights."""

    name: str
    dim: int
    metric: Literal["COSINE", "HAMMING"]
    vector_kind: VectorKind
    accepts_text: bool
    description: str

    def similarity(self, score: float) -> float:
        """Map Milvus's score to 0-100, 100 a perfect match, on the same scale for every model.

        COSINE scores are the cosine itself (1 identical, 0 unrelated); HAMMING scores count differing bits.
        """
        value = 100.0 * (1.0 - score / self.dim) if self.metric == "HAMMING" else 100.0 * score
        return round(min(100.0, max(0.0, value)), 4)

    def to_public(self, vector: Any) -> np.ndarray | list[int]:
        """A stored vector in its JSON form: a float32 array (orjson writes it as a list of floats,
        each as short as float32 allows), or one 0/1 per bit for binary vectors."""
        if self.vector_kind == "binary":
            raw = vector[0] if isinstance(vector, list) and vector and isinstance(vector[0], bytes) else vector
            return np.unpackbits(np.frombuffer(bytes(raw), dtype=np.uint8)).astype(int).tolist()
        return np.asarray(vector, dtype=np.float32)

    def from_public(self, values: Any) -> Any:
        """Validate JSON embeddings against this model and turn them into the stored form.

        `values` is one embedding, or a 2-D array of them, one per row, all checked before any is
        accepted (errors then name the row). One embedding becomes a float32 array, or packed bytes
        for binary vectors; a 2-D array becomes a float32 array, or a uint8 array of packed bits,
        with one row per embedding. Float embeddings are scaled to unit length.
        """
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise Invalid("embeddings must be lists of numbers of the same length", type="wrong_dimension") from None
        single = array.ndim == 1
        rows = array.reshape(1, -1) if single else array
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            count = rows.shape[-1] if rows.ndim else 0
            raise Invalid(
                f"embedding has {count} values but model {self.name} needs {self.dim}", type="wrong_dimension"
            )

        def refuse(bad: np.ndarray, message: str) -> None:
            if bad.any():
                where = "" if single else f"row {int(np.flatnonzero(bad)[0])}: "
                raise Invalid(where + message, type="bad_embedding")

        refuse(~np.isfinite(rows).all(axis=1), "embedding holds values that are not finite numbers")
        if self.vector_kind == "binary":
            refuse(~((rows == 0) | (rows == 1)).all(axis=1), f"a {self.name} embedding is {self.dim} bits, each 0 or 1")
            packed = np.packbits(rows.astype(np.uint8), axis=1)
            return packed[0].tobytes() if single else packed
        largest = np.abs(rows).max(axis=1, keepdims=True)
        refuse(largest[:, 0] == 0, "embedding is all zeros")
        with np.errstate(over="ignore", under="ignore"):
            norms = np.linalg.norm(rows, axis=1, keepdims=True)
        odd = ~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0)
        if odd.any():  # squares beyond float64's range: scale those rows down (or up) first
            rows = rows.copy()
            rows[odd] /= largest[odd]
            norms[odd] = np.linalg.norm(rows[odd], axis=1, keepdims=True)
        # Rows of unit length to float32 precision (dumped ones) are kept as they are: a dump
        # restores bit for bit, where dividing again could move a last bit.
        norms[np.abs(norms - 1.0) <= 1e-6] = 1.0
        unit = (rows / norms).astype(np.float32)
        return unit[0] if single else unit

    def compare(self, a: Any, b: Any) -> float:
        """Similarity 0-100 between two stored-form vectors."""
        if self.vector_kind == "binary":
            bits = np.unpackbits(np.frombuffer(bytes(a), np.uint8) ^ np.frombuffer(bytes(b), np.uint8))
            return self.similarity(float(bits.sum()))
        va, vb = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return self.similarity(float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb))))


class EmbeddingModel(ABC):
    """A loaded model that turns images (and maybe text) into stored-form vectors."""

    spec: ClassVar[ModelSpec]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = PassSlots(parallel_passes(settings))

    @abstractmethod
    def load(self) -> None:
        """Build the network and its weights; raise ModelUnavailable with the reason when impossible."""

    @abstractmethod
    def embed_images(self, images: list[Image], urgent: bool = False) -> list[Any]:
        """One stored-form vector per image, computed in one batch; `urgent` for interactive requests."""

    def embed_texts(self, texts: list[str]) -> list[Any]:
        raise Invalid(f"model {self.spec.name} has no text tower; search it by image", type="no_text_tower")
