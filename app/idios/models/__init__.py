"""The models a worker runs: names to model classes. Adding a model is its spec in `idios.specs`,
one class, and one line here."""

from __future__ import annotations

from idios.models.base import Comparison, EmbeddingModel, ModelUnavailable
from idios.models.clip import VitB32, VitL14
from idios.models.copydetect import CopyDetect
from idios.models.phash import PerceptualHash
from idios.models.resnet import ResNet50
from idios.specs import SPECS

REGISTRY: dict[str, type[EmbeddingModel]] = {
    cls.spec.name: cls for cls in (VitB32, VitL14, ResNet50, PerceptualHash, CopyDetect)
}
assert REGISTRY.keys() == SPECS.keys(), "every spec has a model class, and every class a spec"

__all__ = ["REGISTRY", "Comparison", "EmbeddingModel", "ModelUnavailable"]
