"""CLIP models from open_clip: image and text towers sharing one embedding space.

Two runtimes (IDIOS_RUNTIME): `onnx`, the default, runs graphs exported from the open_clip model
with ONNX Runtime and keeps torch out of the process; `torch` runs the open_clip model itself (the
GPU's choice, in IDIOS_GPU_PRECISION). Both take the same inputs (`clip_inputs`) and give
unit-length float32 vectors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from idios import heap, specs
from idios.models import onnx
from idios.models.base import EmbeddingModel, ModelUnavailable, pass_threads
from idios.models.weights import random_weights, seed_torch, weights_file

if TYPE_CHECKING:
    from PIL.Image import Image


class ClipModel(EmbeddingModel):
    """An open_clip architecture; subclasses name it, its pretrained tag and its input size."""

    architecture: ClassVar[str]
    pretrained: ClassVar[str]
    image_size: ClassVar[int] = 224

    def _weights_files(self) -> tuple[str, ...]:
        name = self.spec.name
        return f"{name}.pt", f"{name}.bin", f"{name}.safetensors"

    def build_torch(self) -> Any:
        """The float32 open_clip model with its weights, in eval mode."""
        try:
            import open_clip
        except ImportError as exc:  # the API image ships without torch
            raise ModelUnavailable(f"missing package: {exc.name}") from exc
        if random_weights(self.settings, self.spec.name):
            seed_torch()
            model = open_clip.create_model(self.architecture, pretrained=None)
        else:
            local = weights_file(self.settings, *self._weights_files())
            pretrained = str(local) if local else self.pretrained
            cache_dir = str(self.settings.weights_dir) if self.settings.weights_dir else None
            try:
                model = open_clip.create_model(self.architecture, pretrained=pretrained, cache_dir=cache_dir)
            except Exception as exc:
                raise ModelUnavailable(
                    f"cannot load {self.architecture} weights '{pretrained}': {exc}. "
                    f"Put {self.spec.name}.pt in IDIOS_WEIGHTS_DIR or make the open_clip cache reachable."
                ) from exc
        model.eval()
        model.requires_grad_(False)
        return model

    def load(self) -> None:
        from idios.models.clip_inputs import ClipTokenizer

        try:
            self._tokenizer = ClipTokenizer()
        except (ImportError, FileNotFoundError) as exc:
            raise ModelUnavailable(f"cannot build CLIP's tokenizer: {exc}") from exc
        if self.settings.runtime == "onnx":
            self._load_onnx()
        else:
            self._load_torch()

    def _weights_identity(self) -> str:
        """What the exported graphs are computed from: random, a local file (as it is now), or a tag."""
        if random_weights(self.settings, self.spec.name):
            return "random"
        local = weights_file(self.settings, *self._weights_files())
        if local is not None:
            stat = local.stat()
            return f"file:{local.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        return f"pretrained:{self.pretrained}"

    def _load_onnx(self) -> None:
        paths = onnx.ensure_graphs(self.settings, self.spec.name, self._weights_identity(), ("image", "text"))
        towers = onnx.load_towers(self.settings, paths, shared=("image",))
        self._image_tower, self._text_tower = towers["image"].run, towers["text"].run
        heap.release_memory()  # the graph files' bytes and the weights before packing, freed once loaded

    def _load_torch(self) -> None:
        import torch

        torch.set_num_threads(pass_threads(self.settings))
        model = self.build_torch()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float32
        if device == "cuda":  # int8 dynamic quantisation is CPU-only; a GPU follows IDIOS_GPU_PRECISION
            precision = self.settings.gpu_precision
            # Process-wide, like the thread count: every model of a worker computes alike.
            torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
            if precision == "float16":
                dtype = torch.float16
            model.to(device, dtype)
        elif self.settings.quantize == "int8":
            try:
                from idios.models.int8 import quantize_int8
            except ImportError as exc:  # torch.ao.quantization is deprecated; a future torch may drop it
                raise ModelUnavailable(f"int8 quantisation unavailable ({exc}); set IDIOS_QUANTIZE=none") from exc
            quantize_int8(model)  # frees the float32 weights
        else:
            heap.release_memory()  # the checkpoint's state dict, freed once loaded

        def tower(encode: Any, dtype: Any) -> Any:
            def run(array: np.ndarray) -> np.ndarray:
                with torch.inference_mode():
                    # Cast once on the device: a float16 cast on the CPU costs more than the copy it saves.
                    features = encode(torch.from_numpy(array).to(device).to(dtype))
                    features = features.float()
                    return (features / features.norm(dim=-1, keepdim=True)).cpu().numpy()

            return run

        self._model = model
        self._image_tower = tower(model.encode_image, dtype)
        self._text_tower = tower(model.encode_text, torch.long)

    def pixels(self, images: list[Image]) -> np.ndarray:
        """The image tower's input batch."""
        from idios.models.clip_inputs import pixels

        return pixels(images, self.image_size)

    def embed_pixels(self, batch: np.ndarray, interactive: bool = False) -> list[Any]:
        with self.pass_slots.hold(interactive):
            return list(self._image_tower(batch))

    def embed_images(self, images: list[Image], interactive: bool = False) -> list[Any]:
        return self.embed_pixels(self.pixels(images), interactive)

    def embed_texts(self, texts: list[str]) -> list[Any]:
        tokens = self._tokenizer(texts)
        with self.pass_slots.hold(interactive=True):
            return list(self._text_tower(tokens))


class VitB32(ClipModel):
    spec = specs.VIT_B32
    architecture = "ViT-B-32"
    pretrained = "openai"


class VitL14(ClipModel):
    spec = specs.VIT_L14
    architecture = "ViT-L-14"
    pretrained = "openai"
