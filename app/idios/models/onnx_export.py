"""Export a model's towers to ONNX: `python -m idios.models.onnx_export MODEL DIR [options]`.

Run as a child process by `idios.models.onnx.ensure_graphs`, so that torch (needed to build the
graphs, not to run them) never enters the worker's memory. Each tower's graph takes a float32
or int64 batch and returns unit-length embeddings; with `--quantize int8` the matrix products'
weights are stored as int8 (ONNX Runtime's dynamic quantisation, one scale per output channel,
7-bit range).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from idios.config import Settings
from idios.models import REGISTRY


class Tower(torch.nn.Module):
    """One tower of the model (its `encode_image` or `encode_text`), output scaled to unit length."""

    def __init__(self, model: torch.nn.Module, encode: str) -> None:
        super().__init__()
        self.model = model
        self.encode = encode

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        features = getattr(self.model, self.encode)(batch)
        return features / features.norm(dim=-1, keepdim=True)


def export(name: str, settings: Settings, directory: Path) -> None:
    model = REGISTRY[name](settings)
    network = model.build_torch()  # type: ignore[attr-defined]  # the CLIP models have it
    size = model.image_size  # type: ignore[attr-defined]  # what their `pixels` make
    examples = {
        "image": (Tower(network, "encode_image"), torch.zeros(2, 3, size, size), "pixels"),
        "text": (Tower(network, "encode_text"), torch.zeros(2, 77, dtype=torch.long), "tokens"),
    }
    directory.mkdir(parents=True, exist_ok=True)
    # The fused attention kernel that eval mode picks has no ONNX form; the unfused path computes the same.
    torch.backends.mha.set_fastpath_enabled(False)
    for tower, (module, example, input_name) in examples.items():
        path = directory / f"{tower}.onnx"
        float_path = path.with_suffix(".float32.onnx") if settings.quantize == "int8" else path
        torch.onnx.export(
            module.eval(),
            (example,),
            str(float_path),
            input_names=[input_name],
            output_names=["embedding"],
            dynamic_axes={input_name: {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        if settings.quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # 7-bit weights (reduce_range): on CPUs without VNNI, ONNX Runtime's int8 kernel adds pairs of
            # uint8 x int8 products in 16 bits, which saturates with full 8-bit weights (cosine to float32
            # 0.982 on such a CPU, against 0.9996 with 7 bits) and cannot with 7-bit ones.
            quantize_dynamic(float_path, path, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
            float_path.unlink()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m idios.models.onnx_export")
    parser.add_argument("model", choices=sorted(REGISTRY))
    parser.add_argument("directory", type=Path)
    parser.add_argument("--quantize", choices=["none", "int8"], default="int8")
    parser.add_argument("--weights", choices=["pretrained", "random"], default="pretrained")
    parser.add_argument("--weights-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    # The quantiser advises a pre-processing pass through the root logger; it changes nothing here.
    logging.basicConfig(level=logging.ERROR)
    settings = Settings(quantize=args.quantize, weights=args.weights, weights_dir=args.weights_dir)
    export(args.model, settings, args.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
