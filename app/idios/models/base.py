"""What every embedding model offers; concrete models live beside this file.

Model modules import torch and friends lazily (inside `load`) so the API process,
which only needs each model's description, stays small.
"""

from __future__ import annotations

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


class PriorityLock:
    """One forward pass at a time; interactive callers (urgent) go ahead of waiting batches.

    A plain lock would let a search wait behind every queued bulk batch.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._busy = False
        self._urgent_waiting = 0

    @contextmanager
    def hold(self, urgent: bool = False) -> Iterator[None]:
        with self._condition:
            self._urgent_waiting += urgent
            while self._busy or (not urgent and self._urgent_waiting):
                self._condition.wait()
            self._urgent_waiting -= urgent
            self._busy = True
        try:
            yield
        finally:
            with self._condition:
                self._busy = False
                self._condition.notify_all()


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

    def to_public(self, vector: Any) -> list[float] | list[int]:
        """A stored vector as JSON: floats, or one 0/1 per bit for binary vectors."""
        if self.vector_kind == "binary":
            raw = vector[0] if isinstance(vector, list) and vector and isinstance(vector[0], bytes) else vector
            return np.unpackbits(np.frombuffer(bytes(raw), dtype=np.uint8)).astype(int).tolist()
        return [float(x) for x in vector]

    def from_public(self, values: list[float]) -> Any:
        """Validate a JSON embedding against this model and turn it into the stored form."""
        if len(values) != self.dim:
            raise Invalid(
                f"embedding has {len(values)} values but model {self.name} needs {self.dim}", type="wrong_dimension"
            )
        array = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(array)):
            raise Invalid("embedding holds values that are not finite numbers", type="bad_embedding")
        if self.vector_kind == "binary":
            if not np.all((array == 0) | (array == 1)):
                raise Invalid(f"a {self.name} embedding is {self.dim} bits, each 0 or 1", type="bad_embedding")
            return np.packbits(array.astype(np.uint8)).tobytes()
        norm = float(np.linalg.norm(array))
        if norm == 0.0:
            raise Invalid("embedding is all zeros", type="bad_embedding")
        return (array / norm).astype(np.float32)

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
        self.lock = PriorityLock()

    @abstractmethod
    def load(self) -> None:
        """Build the network and its weights; raise ModelUnavailable with the reason when impossible."""

    @abstractmethod
    def embed_images(self, images: list[Image], urgent: bool = False) -> list[Any]:
        """One stored-form vector per image, computed in one batch; `urgent` for interactive requests."""

    def embed_texts(self, texts: list[str]) -> list[Any]:
        raise Invalid(f"model {self.spec.name} has no text tower; search it by image", type="no_text_tower")
