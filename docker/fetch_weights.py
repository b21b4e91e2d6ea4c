"""Fetch model weights into IDIOS_WEIGHTS_DIR at image build time: `python fetch_weights.py vit_b32,resnet50`.

Each model is loaded exactly as a worker loads it (open_clip caches CLIP weights in IDIOS_WEIGHTS_DIR,
torchvision caches ResNet-50 under TORCH_HOME, and with IDIOS_RUNTIME=onnx the CLIP models are exported
to IDIOS_WEIGHTS_DIR/onnx), so a worker started from the image finds them there and downloads and
exports nothing. An empty list fetches nothing; a model that cannot be loaded fails the build.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    names = [name.strip() for arg in argv for name in arg.split(",") if name.strip()]
    if not names:
        print("fetch_weights: no models to fetch")
        return 0
    from idios import specs
    from idios.config import Settings
    from idios.models import REGISTRY

    settings = Settings(_env_file=None, weights="pretrained")
    if settings.weights_dir is None:
        sys.exit("fetch_weights: set IDIOS_WEIGHTS_DIR")
    for name in names:
        print(f"fetch_weights: {name} into {settings.weights_dir}", flush=True)
        specs.spec(name)  # an unknown name fails here, naming the known ones
        REGISTRY[name](settings).load()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
