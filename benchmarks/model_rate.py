"""The model alone, on the cores the stack uses: batched forward rates and the cost of not batching.

    python -m benchmarks.model_rate [--quick] [--milvus-uri URI]   # prints one JSON object
    python -m benchmarks.model_rate --bracket [--quick]            # the short form, between ingestion runs

Runs in its own process so the runner stays small; uses the same settings (IDIOS_*) as the workers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from benchmarks.corpus import derived_jpeg
from idios.config import Settings
from idios.images import decode_image
from idios.models import REGISTRY
from idios.models.base import parallel_passes, pass_threads


def _rate(count: int, call: Any, calls: int, passes: int = 1) -> float:
    """Images/s of `calls` calls of `count` images, shared among `passes` threads side by side."""
    call()  # warm-up: first calls allocate
    rounds = max(1, calls // passes)

    def repeat(_: int) -> None:
        for _ in range(rounds):
            call()

    with ThreadPoolExecutor(max_workers=passes) as pool:
        start = time.perf_counter()
        list(pool.map(repeat, range(passes)))
        return count * rounds * passes / (time.perf_counter() - start)


def layouts(settings: Settings) -> dict[str, Settings]:
    """The stack's own layout of forward passes, and one pass at a time on every core beside it."""
    every_core = settings.model_copy(update={"pass_threads": 0})
    return {_layout(s): s for s in (settings, every_core)}


def _layout(settings: Settings) -> str:
    threads, passes = pass_threads(settings), parallel_passes(settings)
    return f"{passes} pass{'es' if passes > 1 else ''} of {threads} thread{'s' if threads > 1 else ''}"


def _forward(
    variants: dict[str, Settings], images: list[Any], batches: list[int], rounds: int, trials: int = 1
) -> dict[str, dict[int, float]]:
    """Images/s of the image tower alone (inputs prepared beforehand), by variant and batch size:
    the median of `trials` measurements, variants and batch sizes taking turns, so that a slow
    spell of a shared machine slows every one alike instead of flattering whichever ran outside it.
    Each variant runs as many passes side by side as its stack would (`parallel_passes`)."""
    models = {name: REGISTRY["vit_b32"](settings) for name, settings in variants.items()}
    for model in models.values():
        model.load()
    pixels = next(iter(models.values())).pixels(images)
    runs: dict[str, dict[int, list[float]]] = {name: {batch: [] for batch in batches} for name in variants}
    for _ in range(trials):
        for name, model in models.items():
            passes = parallel_passes(variants[name])
            for batch in batches:
                part = pixels[:batch]
                calls = rounds * 16 // batch
                rate = _rate(batch, lambda model=model, part=part: model.embed_pixels(part), calls, passes)
                runs[name][batch].append(rate)
    return {
        name: {batch: statistics.median(rates) for batch, rates in by_batch.items()} for name, by_batch in runs.items()
    }


def forward_rates(settings: Settings, batches: list[int], rounds: int, runtimes: bool) -> dict[str, Any]:
    """The stack's own model (its runtime and quantisation): forward rates in its own layout of
    passes and in one pass on every core, with preprocessing, singles against a batch; with
    `runtimes`, the forward rates of the other runtimes beside it."""
    images = [decode_image(derived_jpeg(i), settings) for i in range(max(batches))]
    forward = _forward(layouts(settings), images, batches, rounds, trials=5 if rounds > 2 else 3)
    result: dict[str, Any] = {"forward": forward, "layout": _layout(settings), "with_preprocessing": {}}
    result["variant"] = f"{settings.runtime} {settings.quantize}"
    if runtimes:
        variants = {
            f"{runtime} {quantize}": settings.model_copy(update={"runtime": runtime, "quantize": quantize})
            for runtime, quantize in (("onnx", "int8"), ("onnx", "none"), ("torch", "int8"), ("torch", "none"))
        }
        result["runtimes"] = {
            name: _forward({name: variant}, images, [1, 16], rounds)[name] for name, variant in variants.items()
        }
    model = REGISTRY["vit_b32"](settings)
    model.load()
    passes = parallel_passes(settings)
    for batch in batches:
        part = images[:batch]
        rate = _rate(batch, lambda part=part: model.embed_images(part), rounds * 16 // batch, passes)
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


def bracket_rate(settings: Settings, quick: bool) -> dict[str, Any]:
    """The short measurement taken just before and after each ingestion run: both layouts at batch
    8 and 16 (the stack's batches are at most IDIOS_BATCH_SIZE, 16 by default), so that the
    machine's speed at that moment weighs on both sides of the ingestion ratio."""
    images = [decode_image(derived_jpeg(i), settings) for i in range(16)]
    forward = _forward(layouts(settings), images, [8, 16], rounds=2 if quick else 4, trials=1 if quick else 3)
    return {"forward": forward, "best": max(rate for by_batch in forward.values() for rate in by_batch.values())}


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
    parser.add_argument("--bracket", action="store_true", help="only the short measurement around an ingestion run")
    args = parser.parse_args()
    settings = Settings(weights="random")
    if args.bracket:
        print(json.dumps(bracket_rate(settings, args.quick)))
        return
    batches = [1, 8, 16] if args.quick else [1, 8, 16, 32]
    result = forward_rates(settings, batches, rounds=2 if args.quick else 4, runtimes=not args.quick)
    if args.milvus_uri:
        result.update(insert_costs(args.milvus_uri))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
