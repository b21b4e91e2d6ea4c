"""What the API, the transports and the store know of each model: its name, vector shape and
metric, and how its vectors map to JSON and to a similarity, with no weights and no model code.

The API process imports this module alone; the models (`idios.models`), which pull in CLIP, ONNX
Runtime and torchvision, load only where a worker runs them.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from idios import keypoint_data
from idios.errors import Invalid, NotFound

# float and binary models store one vector per image; keypoints models (copydetect) store an image's
# corners, each with a binary descriptor of `dim` bits, and compare images by their agreeing corners.
VectorKind = Literal["float", "binary", "keypoints"]


@dataclass(frozen=True)
class ModelSpec:
    """The static description of a model: enough for the API and the store, no weights."""

    name: str
    dim: int
    metric: Literal["COSINE", "HAMMING"]
    vector_kind: VectorKind
    accepts_text: bool
    description: str
    # The similarity from which two images count as copies of each other: the duplicates walk's default.
    copy_similarity: float

    def similarity(self, score: float) -> float:
        """Map Milvus's score to 0-100, 100 a perfect match, on the same scale for every model.

        COSINE scores are the cosine itself (1 identical, 0 unrelated); HAMMING scores count differing
        bits; a keypoints model's score is the count of agreeing corners (`keypoint_data.similarity`).
        """
        if self.vector_kind == "keypoints":
            return keypoint_data.similarity(int(score))
        value = 100.0 * (1.0 - score / self.dim) if self.metric == "HAMMING" else 100.0 * score
        return round(min(100.0, max(0.0, value)), 4)

    @property
    def public_bytes(self) -> int:
        """About how many bytes one stored vector takes in JSON (`to_public`): a float32 as orjson
        writes it with its comma (12.4 bytes on average for unit vectors), a bit and its comma, or
        the base64 of a keypoints row."""
        if self.vector_kind == "keypoints":
            return 4 * (keypoint_data.MAX_BYTES + 2) // 3 + 2
        return self.dim * (13 if self.vector_kind == "float" else 2)

    def to_public(self, vector: Any) -> np.ndarray | list[int] | str:
        """A stored vector in its JSON form: a float32 array (orjson writes it as a list of floats,
        each as short as float32 allows), one 0/1 per bit for binary vectors, or the base64 of the
        stored form of keypoints (`keypoint_data.pack`)."""
        if self.vector_kind == "keypoints":
            return base64.b64encode(bytes(vector)).decode("ascii")
        if self.vector_kind == "binary":
            raw = vector[0] if isinstance(vector, list) and vector and isinstance(vector[0], bytes) else vector
            return np.unpackbits(np.frombuffer(bytes(raw), dtype=np.uint8)).astype(int).tolist()
        return np.asarray(vector, dtype=np.float32)

    def from_public(self, values: Any) -> Any:
        """Validate JSON embeddings against this model and turn them into the stored form.

        `values` is one embedding, or a 2-D array of them, one per row, all checked before any is
        accepted (errors then name the row). One embedding becomes a float32 array, or packed bytes
        for binary vectors; a 2-D array becomes a float32 array, or a uint8 array of packed bits,
        with one row per embedding. Float embeddings are scaled to unit length. A keypoints model's
        embedding is a base64 string (`to_public`), or a list of them: the stored form (bytes), or a
        batch of them (`keypoint_data.batch`), each checked (`keypoint_data.unpack`).
        """
        if self.vector_kind == "keypoints":
            return _keypoints_from_public(self, values)
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
        """Similarity 0-100 between two stored-form vectors of a float or binary model (a keypoints
        model compares images itself: `idios.models.copydetect`)."""
        if self.vector_kind == "binary":
            bits = np.unpackbits(np.frombuffer(bytes(a), np.uint8) ^ np.frombuffer(bytes(b), np.uint8))
            return self.similarity(float(bits.sum()))
        va, vb = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return self.similarity(float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb))))


def _keypoints_from_public(spec: ModelSpec, values: Any) -> Any:
    single = isinstance(values, str)
    embeddings = [values] if single else values
    if not isinstance(embeddings, list) or not all(isinstance(value, str) for value in embeddings):
        raise Invalid(f"a {spec.name} embedding is a base64 string of keypoints", type="bad_embedding")
    rows = []
    for index, value in enumerate(embeddings):
        where = "" if single else f"row {index}: "
        try:
            if len(value) > 4 * (keypoint_data.MAX_BYTES + 2) // 3:
                raise ValueError(f"{len(value)} characters; keypoints take {spec.public_bytes - 2} at most")
            packed = base64.b64decode(value, validate=True)
            keypoint_data.unpack(packed)
        except (binascii.Error, ValueError) as exc:
            raise Invalid(f"{where}not keypoints of {spec.name}: {exc}", type="bad_embedding") from None
        rows.append(packed)
    return rows[0] if single else keypoint_data.batch(rows)


VIT_B32 = ModelSpec(
    name="vit_b32",
    dim=512,
    metric="COSINE",
    vector_kind="float",
    accepts_text=True,
    description="CLIP ViT-B/32 (OpenAI weights), image and text",
    copy_similarity=95.0,
)
VIT_L14 = ModelSpec(
    name="vit_l14",
    dim=768,
    metric="COSINE",
    vector_kind="float",
    accepts_text=True,
    description="CLIP ViT-L/14 (OpenAI weights), image and text",
    copy_similarity=95.0,
)
RESNET50 = ModelSpec(
    name="resnet50",
    dim=2048,
    metric="COSINE",
    vector_kind="float",
    accepts_text=False,
    description="ResNet-50 (ImageNet), pooled features, image only",
    copy_similarity=95.0,
)
PHASH = ModelSpec(
    name="phash",
    dim=64,
    metric="HAMMING",
    vector_kind="binary",
    accepts_text=False,
    description="64-bit perceptual hash for near-duplicates",
    copy_similarity=90.625,  # at most 6 of 64 bits differ
)

COPYDETECT = ModelSpec(
    name="copydetect",
    dim=256,
    metric="HAMMING",
    vector_kind="keypoints",
    accepts_text=False,
    description="Copy detection: finds crops, rotations, overlays and screenshots of an image, and where they "
    "match; no weights (ORB corners, 256 bits each, checked by their placement)",
    copy_similarity=keypoint_data.similarity(6),  # 6 agreeing pairs (doc/copydetect.md)
)

# Every model Idios knows, in the order `GET /models` lists them.
SPECS: dict[str, ModelSpec] = {spec.name: spec for spec in (VIT_B32, VIT_L14, RESNET50, PHASH, COPYDETECT)}


def spec(name: str) -> ModelSpec:
    """The named model's spec; 404 for a name Idios does not know."""
    try:
        return SPECS[name]
    except KeyError:
        raise NotFound(f"unknown model '{name}'; known models: {', '.join(SPECS)}", type="unknown_model") from None
