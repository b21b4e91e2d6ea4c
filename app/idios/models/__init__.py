"""The model registry: names to model classes. Adding a model is one class and one line here."""

from __future__ import annotations

from idios.errors import NotFound
from idios.models.base import EmbeddingModel, ModelSpec, ModelUnavailable
from idios.models.clip import VitB32, VitL14
from idios.models.phash import PerceptualHash
from idios.models.resnet import ResNet50

REGISTRY: dict[str, type[EmbeddingModel]] = {cls.spec.name: cls for cls in (VitB32, VitL14, ResNet50, PerceptualHash)}

__all__ = ["REGISTRY", "EmbeddingModel", "ModelSpec", "ModelUnavailable", "model_class", "spec"]


def model_class(name: str) -> type[EmbeddingModel]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise NotFound(f"unknown model '{name}'; known models: {', '.join(REGISTRY)}", type="unknown_model") from None


def spec(name: str) -> ModelSpec:
    return model_class(name).spec
