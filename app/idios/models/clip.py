"""CLIP models from open_clip: image and text towers sharing one embedding space."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from idios.models.base import EmbeddingModel, ModelSpec, ModelUnavailable
from idios.models.weights import random_weights, seed_torch, weights_file

if TYPE_CHECKING:
    from PIL.Image import Image


class ClipModel(EmbeddingModel):
    """An open_clip architecture; subclasses name it and its pretrained tag."""

    architecture: ClassVar[str]
    pretrained: ClassVar[str]

    def load(self) -> None:
        try:
            import open_clip
            import torch
        except ImportError as exc:  # the API image ships without torch
            raise ModelUnavailable(f"missing package: {exc.name}") from exc
        name = self.spec.name
        if random_weights(self.settings, name):
            seed_torch()
            model = open_clip.create_model(self.architecture, pretrained=None)
        else:
            local = weights_file(self.settings, f"{name}.pt", f"{name}.bin", f"{name}.safetensors")
            pretrained = str(local) if local else self.pretrained
            cache_dir = str(self.settings.weights_dir) if self.settings.weights_dir else None
            try:
                model = open_clip.create_model(self.architecture, pretrained=pretrained, cache_dir=cache_dir)
            except Exception as exc:
                raise ModelUnavailable(
                    f"cannot load {self.architecture} weights '{pretrained}': {exc}. "
                    f"Put {name}.pt in IDIOS_WEIGHTS_DIR or make the open_clip cache reachable."
                ) from exc
        model.eval()
        model.requires_grad_(False)
        try:
            from idios.models.int8 import quantize_int8, release_memory
        except ImportError as exc:  # torch.ao.quantization is deprecated; a future torch may drop it
            raise ModelUnavailable(f"int8 quantisation unavailable ({exc}); set IDIOS_QUANTIZE=none") from exc
        if self.settings.quantize == "int8":
            quantize_int8(model)  # frees the float32 weights
        else:
            release_memory()  # the checkpoint's state dict, freed once loaded
        self._torch = torch
        self._model = model
        self._preprocess = open_clip.image_transform(model.visual.image_size, is_train=False)
        self._tokenizer = open_clip.get_tokenizer(self.architecture)

    def _normalised(self, features: Any) -> list[Any]:
        features = features / features.norm(dim=-1, keepdim=True)
        return list(features.float().cpu().numpy())

    def embed_images(self, images: list[Image], urgent: bool = False) -> list[Any]:
        torch = self._torch
        batch = torch.stack([self._preprocess(image) for image in images])
        with self.lock.hold(urgent), torch.inference_mode():
            return self._normalised(self._model.encode_image(batch))

    def embed_texts(self, texts: list[str]) -> list[Any]:
        torch = self._torch
        tokens = self._tokenizer(texts)
        with self.lock.hold(urgent=True), torch.inference_mode():
            return self._normalised(self._model.encode_text(tokens))


class VitB32(ClipModel):
    spec = ModelSpec("vit_b32", 512, "COSINE", "float", True, "CLIP ViT-B/32 (OpenAI weights), image and text")
    architecture = "ViT-B-32"
    pretrained = "openai"


class VitL14(ClipModel):
    spec = ModelSpec("vit_l14", 768, "COSINE", "float", True, "CLIP ViT-L/14 (OpenAI weights), image and text")
    architecture = "ViT-L-14"
    pretrained = "openai"
