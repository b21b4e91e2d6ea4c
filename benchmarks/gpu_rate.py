"""The CLIP models on a GPU: forward rates by batch size and precision, the CPU work that feeds them,
and how far reduced precision moves the embeddings.

    python -m benchmarks.gpu_rate [--out DIR] [--seconds S]   # writes gpu.json and gpu.md into DIR

Needs torch with CUDA (`make bench` does not run it: the benchmark host has no GPU). Every model is
built as a worker builds it with IDIOS_RUNTIME=torch, once per IDIOS_GPU_PRECISION, with random
weights: the same compute as the real ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.corpus import derived_jpeg
from idios.config import Settings
from idios.images import decode_image
from idios.models import REGISTRY
from idios.models.base import parallel_passes

MODELS = ("vit_b32", "vit_l14")
BATCHES = (1, 16, 64, 256)


def timed_rate(count: int, call: Any, seconds: float, threads: int = 1) -> float:
    """Items/s of `call` (which handles `count` items and returns once its results are on the host),
    repeated for about `seconds` by each of `threads` threads side by side, after warm-up calls."""
    for _ in range(2):
        call()
    deadline = time.perf_counter() + seconds

    def repeat(_: int) -> int:
        done = 0
        while done < 3 or time.perf_counter() < deadline:
            call()
            done += 1
        return done

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        calls = sum(pool.map(repeat, range(threads)))
    return count * calls / (time.perf_counter() - start)


def threads_label(threads: int) -> str:
    return f"{threads} thread{'s' if threads > 1 else ''}"


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest cosine between matching rows of two batches of embeddings."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cosines = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cosines.min())


PRECISIONS = ("float32", "tf32", "float16")  # IDIOS_GPU_PRECISION; float32 first: the reference
TEXTS = [f"a photograph of {thing}" for thing in ("a cat", "a rocket", "coffee", "the moon", "coins")]


def model_rates(name: str, images: list[Any], seconds: float) -> dict[str, Any]:
    """One model in each precision: forward rates by batch size, and how far the image and text
    embeddings move from float32's."""
    import torch

    result: dict[str, Any] = {"precisions": {}}
    reference: dict[str, np.ndarray] = {}
    for precision in PRECISIONS:
        measured, vectors = precision_rates(name, precision, images, seconds)
        torch.cuda.empty_cache()  # the model went with precision_rates' frame: the next starts from zero
        torch.cuda.reset_peak_memory_stats()
        reference = reference or vectors
        measured["min_cosine"] = {kind: min_cosine(reference[kind], vectors[kind]) for kind in vectors}
        result["precisions"][precision] = measured
    return result


def precision_rates(
    name: str, precision: str, images: list[Any], seconds: float
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The model as a worker builds it with IDIOS_GPU_PRECISION=`precision`: its load time, forward
    rates, peak GPU memory and, in the default precision, the stack's own layout at its default
    batch and preprocessing plus forward pass together; and its embeddings of the sample."""
    import torch

    settings = Settings(weights="random", runtime="torch", models=[name], gpu_precision=precision)
    model = REGISTRY[name](settings)
    started = time.perf_counter()
    model.load()
    result: dict[str, Any] = {"load_s": time.perf_counter() - started}
    sample = model.pixels(images)
    largest = max(*BATCHES, settings.batch_size)
    batch = np.concatenate([sample] * (largest // len(sample) + 1))[:largest]
    vectors = {"images": np.stack(model.embed_pixels(sample)), "texts": np.stack(model.embed_texts(TEXTS))}
    result["forward"] = {
        size: timed_rate(size, lambda part=batch[:size]: model.embed_pixels(part), seconds) for size in BATCHES
    }
    if precision == Settings.model_fields["gpu_precision"].default:
        passes, default_batch = parallel_passes(settings), settings.batch_size
        result["layout"] = {"passes": passes, "batch": default_batch}
        result["layout_rate"] = timed_rate(
            default_batch, lambda: model.embed_pixels(batch[:default_batch]), seconds, threads=passes
        )
        result["with_preprocessing"] = {
            f"{threads_label(threads)}, batch {size}": timed_rate(
                size, lambda size=size: model.embed_images(images[:size]), seconds, threads=threads
            )
            for threads, size in ((1, 16), (1, 64), (passes, 16))
        }
    result["gpu_memory_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result, vectors


def input_copy_ms(images: list[Any], size: int = 256) -> dict[str, float]:
    """Milliseconds to put a float32 batch on the GPU as float16: cast on the host, then copy; or
    copy, then cast on the device (what the torch runtime does)."""
    import torch

    pixels = REGISTRY["vit_b32"](Settings()).pixels(images)
    batch = np.concatenate([pixels] * (size // len(pixels) + 1))[:size]
    ways = {
        "cast on the host, then copy": lambda: torch.from_numpy(batch).to("cuda", torch.float16),
        "copy, then cast on the device": lambda: torch.from_numpy(batch).to("cuda").to(torch.float16),
    }
    result = {}
    for way, call in ways.items():
        call()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            call()
        torch.cuda.synchronize()
        result[way] = (time.perf_counter() - start) * 100
    return result


def cpu_rates(payloads: list[bytes], images: list[Any], seconds: float) -> dict[str, dict[str, float]]:
    """Images/s of the CPU work in front of the GPU: JPEG decoding (draft mode, as the workers decode)
    and CLIP's resize, crop and normalise, on one core and on every core."""
    settings = Settings()
    clip = REGISTRY["vit_b32"](settings)
    cores = os.cpu_count() or 1
    jobs = {
        "decode": lambda i: decode_image(payloads[i % len(payloads)], settings),
        "preprocess": lambda i: clip.pixels([images[i % len(images)]]),
    }
    result: dict[str, dict[str, float]] = {}
    for job_name, job in jobs.items():
        counter = iter(range(10**9))
        result[job_name] = {
            threads_label(threads): timed_rate(
                1, lambda job=job, counter=counter: job(next(counter)), seconds, threads=threads
            )
            for threads in (1, cores)
        }
    return result


def markdown(result: dict[str, Any]) -> str:
    """The report: a table per model (forward rates, load, memory and embedding agreement by
    precision), the stack's default layout, then the CPU work that feeds the GPU."""
    env = result["environment"]
    lines = [
        f"# Idios model throughput on a GPU ({env['gpu']})",
        "",
        f"`python -m benchmarks.gpu_rate`, {env['date']}: torch {env['torch']}, CUDA {env['cuda']}, "
        f"{env['cpu_count']} CPU cores, Python {env['python']}. Random weights: the real architectures, "
        "the same compute as the real weights. Each model is built as a worker builds it with "
        "IDIOS_RUNTIME=torch, once per IDIOS_GPU_PRECISION. Rates are images/s of the image tower, the "
        "float32 input batch copied from host memory and the unit-length embeddings copied back.",
        "",
    ]
    for name, model in result["models"].items():
        precisions = model["precisions"]
        lines += [f"## {name}", "", "| | " + " | ".join(precisions) + " |", "|---|" + "---|" * len(precisions)]
        for size in BATCHES:
            lines.append(
                f"| batch {size} | " + " | ".join(f"{p['forward'][size]:,.0f}" for p in precisions.values()) + " |"
            )
        rows = {
            f"smallest cosine to float32, {result['sample']} images": lambda p: f"{p['min_cosine']['images']:.6f}",
            f"smallest cosine to float32, {len(TEXTS)} texts": lambda p: f"{p['min_cosine']['texts']:.6f}",
            "peak GPU memory allocated": lambda p: f"{p['gpu_memory_peak_mb']:,.0f} MB",
            "model build and load": lambda p: f"{p['load_s']:.1f} s",
        }
        lines += [
            f"| {label} | " + " | ".join(cell(p) for p in precisions.values()) + " |" for label, cell in rows.items()
        ]
        default = next((precision, p) for precision, p in precisions.items() if "layout" in p)
        layout = default[1]["layout"]
        lines += [
            "",
            f"- Default settings ({default[0]}, {layout['passes']} passes side by side, batches of "
            f"{layout['batch']}): {default[1]['layout_rate']:,.0f} images/s.",
            f"- With CLIP's preprocessing on the CPU in the same call ({default[0]}): "
            + "; ".join(f"{k}: {v:,.0f} images/s" for k, v in default[1]["with_preprocessing"].items())
            + ".",
            "",
        ]
    cpu = result["cpu"]
    lines += ["## The CPU side (images/s)", "", "| work | " + " | ".join(cpu["decode"]) + " |"]
    lines.append("|---|" + "---|" * len(cpu["decode"]))
    for job_name, label in (("decode", "JPEG decode (draft mode)"), ("preprocess", "CLIP resize, crop, normalise")):
        lines.append(f"| {label} | " + " | ".join(f"{v:,.0f}" for v in cpu[job_name].values()) + " |")
    copy = "; ".join(f"{way}: {ms:.1f} ms" for way, ms in result["input_copy_ms"].items())
    lines += ["", f"A batch of 256 inputs to the GPU as float16: {copy}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--seconds", type=float, default=1.5, help="how long each rate is measured")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark measures a GPU")
    payloads = [derived_jpeg(i) for i in range(64)]
    images = [decode_image(data, Settings()) for data in payloads]
    result: dict[str, Any] = {
        "environment": {
            "gpu": torch.cuda.get_device_name(0),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"),
        },
        "sample": len(images),
        "models": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        result["models"][name] = model_rates(name, images, args.seconds)
        print(json.dumps({name: result["models"][name]}), flush=True)
    result["cpu"] = cpu_rates(payloads, images, args.seconds)
    result["input_copy_ms"] = input_copy_ms(images)
    (args.out / "gpu.json").write_text(json.dumps(result, indent=1))
    (args.out / "gpu.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
