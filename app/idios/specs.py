"""What the API, the transports and the store know of each model: its name, vector shape and
metric, and how its vectors map to JSON and to a similarity, with no weights and no model code.

The API process imports this module alone; the models (`idios.models`), which pull in CLIP, ONNX
Runtime and torchvision, load only where a worker runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from idios.errors import Invalid, NotFound

VectorKind = Literal["float", "binary"]


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

        def refuse(bad: Any, message: str) -> None:  # a boolean per row
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


VIT_B32 = ModelSpec(
    name="vit_b32",
    dim=512,
    metric="COSINE",
    vector_kind="float",
    accepts_text=True,
    description="CLIP ViT-B/32 (OpenAI weights), image and text",
)
VIT_L14 = ModelSpec(
    name="vit_l14",
    dim=768,
    metric="COSINE",
    vector_kind="float",
    accepts_text=True,
    description="CLIP ViT-L/14 (OpenAI weights), image and text",
)
RESNET50 = ModelSpec(
    name="resnet50",
    dim=2048,
    metric="COSINE",
    vector_kind="float",
    accepts_text=False,
    description="ResNet-50 (ImageNet), pooled features, image only",
)
PHASH = ModelSpec(
    name="phash",
    dim=64,
    metric="HAMMING",
    vector_kind="binary",
    accepts_text=False,
    description="64-bit perceptual hash for near-duplicates",
)

# Every model Idios knows, in the order `GET /models` lists them.
SPECS: dict[str, ModelSpec] = {spec.name: spec for spec in (VIT_B32, VIT_L14, RESNET50, PHASH)}


def spec(name: str) -> ModelSpec:
    """The named model's spec; 404 for a name Idios does not know."""
    try:
        return SPECS[name]
    except KeyError:
        raise NotFound(f"unknown model '{name}'; known models: {', '.join(SPECS)}", type="unknown_model") from None
