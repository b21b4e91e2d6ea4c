"""ResNet-50 (torchvision, ImageNet weights): the 2048-d pooled features, image only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from idios import specs
from idios.models.base import EmbeddingModel, ModelUnavailable, pass_threads
from idios.models.weights import random_weights, seed_torch, weights_file

if TYPE_CHECKING:
    from PIL.Image import Image


class ResNet50(EmbeddingModel):
    spec = specs.RESNET50

    def load(self) -> None:
        try:
            import torch
            from torchvision.models import ResNet50_Weights, resnet50
        except ImportError as exc:
            raise ModelUnavailable(f"missing package: {exc.name}") from exc
        torch.set_num_threads(pass_threads(self.settings))
        weights = ResNet50_Weights.IMAGENET1K_V2
        if random_weights(self.settings, self.spec.name):
            seed_torch()
            model = resnet50(weights=None)
        else:
            local = weights_file(self.settings, "resnet50.pth", "resnet50.pt")
            try:
                if local:
                    model = resnet50(weights=None)
                    model.load_state_dict(torch.load(local, map_location="cpu", weights_only=True))
                else:
                    model = resnet50(weights=weights)
            except Exception as exc:
                raise ModelUnavailable(
                    f"cannot load ResNet-50 weights: {exc}. Put resnet50.pth in IDIOS_WEIGHTS_DIR."
                ) from exc
        model.fc = torch.nn.Identity()
        self._device = "cuda" if torch.cuda.is_available() else "cpu"
        model.eval().to(self._device)
        self._torch = torch
        self._model = model
        self._preprocess = weights.transforms()

    def embed_images(self, images: list[Image], interactive: bool = False) -> list[Any]:
        torch = self._torch
        batch = torch.stack([self._preprocess(image) for image in images]).to(self._device)
        with self.pass_slots.hold(interactive), torch.inference_mode():
            features = self._model(batch)
            features = features / features.norm(dim=-1, keepdim=True)
        return list(features.float().cpu().numpy())
