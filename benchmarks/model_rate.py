"""The model alone, on the cores the stack uses: batched forward rates and the cost of not batching.

    python -m benchmarks.model_rate [--quick] [--milvus-uri URI]   # prints one JSON object

Runs in its own process so the runner stays small; uses the same settings (IDIOS_*) as the workers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from typing import Any

import numpy as np

from benchmarks.corpus import derived_jpeg
from idios.config import Settings
from idios.images import decode_image
from idios.models import REGISTRY


def _rate(count: int, call: Any, rounds: int) -> float:
    call()  # warm-up: first calls allocate
    start = time.perf_counter()
    for _ in range(rounds):
        call()
    return count * rounds / (time.perf_counter() - start)


def _forward(
    settings: Settings, images: list[Any], batches: list[int], rounds: int, trials: int = 1
) -> dict[int, float]:
    """Images/s of the image tower alone (inputs prepared beforehand), by batch size: the median of
    `trials` measurements, the batch sizes taking turns, so that a slow spell of a shared machine
    slows every batch size alike instead of flattering whichever ran outside it."""
    model = REGISTRY["vit_b32"](settings)
    model.load()
    pixels = model.pixels(images)
    runs: dict[int, list[float]] = {batch: [] for batch in batches}
    for _ in range(trials):
        for batch in batches:
            part = pixels[:batch]
            runs[batch].append(_rate(batch, lambda part=part: model.embed_pixels(part), max(1, rounds * 16 // batch)))
    return {batch: statistics.median(rates) for batch, rates in runs.items()}


def forward_rates(settings: Settings, batches: list[int], rounds: int, runtimes: bool) -> dict[str, Any]:
    """The stack's own model (its runtime and quantisation): forward rates, with preprocessing,
    singles against a batch; with `runtimes`, the forward rates of the other runtimes beside it."""
    images = [decode_image(derived_jpeg(i), settings) for i in range(max(batches))]
    forward = _forward(settings, images, batches, rounds, trials=5 if rounds > 2 else 3)
    result: dict[str, Any] = {"forward": forward, "with_preprocessing": {}}
    result["variant"] = f"{settings.runtime} {settings.quantize}"
    if runtimes:
        result["runtimes"] = {
            f"{runtime} {quantize}": _forward(
                settings.model_copy(update={"runtime": runtime, "quantize": quantize}), images, [1, 16], rounds
            )
            for runtime, quantize in (("onnx", "int8"), ("onnx", "none"), ("torch", "int8"), ("torch", "none"))
        }
    model = REGISTRY["vit_b32"](settings)
    model.load()
    for batch in batches:
        part = images[:batch]
        rate = _rate(batch, lambda part=part: model.embed_images(part), max(1, rounds * 16 // batch))
        result["with_preprocessing"][batch] = rate
    # The original's comparison: 100 images one at a time against one batch of 100.
    count = 100 if rounds > 2 else 32
    start = time.perf_counter()
    for image in images[:1] * count:
        model.embed_images([image])
    singles = time.perf_counter() - start
    batch_images = (images * (count // len(images) + 1))[:count]
    start = time.perf_counter()
    model.embed_images(batch_images)
    result["embed_singles_s"], result["embed_batch_s"], result["embed_count"] = (
        singles,
        time.perf_counter() - start,
        count,
    )
    return result


def insert_costs(uri: str) -> dict[str, Any]:
    """1,000 single-row Milvus upserts against one 1,000-row upsert, through the project's Store."""
    from idios.store import Store

    spec = REGISTRY["vit_b32"].spec
    store = Store(uri, prefix=f"benchins{uuid.uuid4().hex[:6]}_")
    try:
        store.ensure_collection(spec)
        vectors = np.random.default_rng(1).standard_normal((2000, spec.dim)).astype(np.float32)
        rows = [
            {"url": f"http://bench.example/{i}.jpg", "vector": v, "metadata": {"i": i}} for i, v in enumerate(vectors)
        ]
        start = time.perf_counter()
        for row in rows[:1000]:
            store.upsert(spec, [row])
        singles = time.perf_counter() - start
        start = time.perf_counter()
        store.upsert(spec, rows[1000:])
        batch = time.perf_counter() - start
    finally:
        store.client.drop_collection(store.collection(spec))
        store.close()
    return {"insert_singles_s": singles, "insert_batch_s": batch, "insert_count": 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--milvus-uri", default="")
    args = parser.parse_args()
    settings = Settings(weights="random")
    batches = [1, 8, 16] if args.quick else [1, 8, 16, 32]
    result = forward_rates(settings, batches, rounds=2 if args.quick else 4, runtimes=not args.quick)
    if args.milvus_uri:
        result.update(insert_costs(args.milvus_uri))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
