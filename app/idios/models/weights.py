"""Where model weights come from: real files, or seeded random values for tests and benchmarks."""

from __future__ import annotations

import logging
from pathlib import Path

from idios.config import Settings

log = logging.getLogger("idios.models")

RANDOM_SEED = 20240229


def random_weights(settings: Settings, name: str) -> bool:
    """True when the operator asked for random weights; says so loudly, every time a model is built."""
    if settings.weights == "random":
        log.warning(
            "IDIOS_WEIGHTS=random: model %s gets seeded random weights; its embeddings are NOT meaningful", name
        )
        return True
    return False


def seed_torch() -> None:
    """Same seed before building a model, so every worker computes identical vectors."""
    import torch

    torch.manual_seed(RANDOM_SEED)


def weights_file(settings: Settings, *candidates: str) -> Path | None:
    """The first candidate file present in IDIOS_WEIGHTS_DIR, if that directory is set."""
    if settings.weights_dir is None:
        return None
    for candidate in candidates:
        path = Path(settings.weights_dir) / candidate
        if path.is_file():
            return path
    return None
