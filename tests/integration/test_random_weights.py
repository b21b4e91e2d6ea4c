"""Seeded random weights (IDIOS_WEIGHTS=random): the same vectors in two separate processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# seeded random weights

EMBED_SCRIPT = """
import json
import numpy as np
import orjson
from PIL import Image
from skimage import data
from idios.config import Settings
from idios.models import REGISTRY

model = REGISTRY["vit_b32"](Settings())
model.load()
images = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in ("astronaut", "chelsea")]
vectors = model.embed_images(images)
print(json.dumps({
    "first8": [repr(float(x)) for x in vectors[0][:8]],
    "norms": [float(np.linalg.norm(v)) for v in vectors],
    "cosine": float(np.dot(vectors[0], vectors[1])),
    "dim": len(vectors[0]),
}))
"""


def test_random_weights_are_deterministic_across_processes(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDIOS_")}
    env["IDIOS_WEIGHTS"] = "random"
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", EMBED_SCRIPT], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outputs = []
    for run in runs:
        stdout, stderr = run.communicate(timeout=240)
        assert run.returncode == 0, stderr.decode()[-3000:]
        assert b"IDIOS_WEIGHTS=random" in stderr  # the loud warning
        outputs.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    first, second = outputs
    assert first["first8"] == second["first8"]
    assert len(set(first["first8"])) > 1
    assert first["dim"] == 512
    for norm in first["norms"]:
        assert norm == pytest.approx(1.0, abs=1e-5)
    assert first["cosine"] < 0.99
