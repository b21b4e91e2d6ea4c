"""Core figures of one `idios serve`: ingestion against the raw model rate, search, count, dump, restore.

    python -m benchmarks.core [--milvus-uri http://127.0.0.1:19530] [--entries 100000] [--images 200]

Uses IDIOS_WEIGHTS=random (the real ViT-B/32 architecture, so the same compute as real weights)
and serves JPEG photos of 600-2000 px from 127.0.0.3.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from idios.config import Settings
from idios.models import REGISTRY

from imageserver import ImageServer
from photos import PHOTO_NAMES, photo
from stack import free_port, models_ready, wait_until

IMAGE_HOST = "127.0.0.3"


def photos(count: int) -> list[bytes]:
    """Distinct JPEGs of 600-2000 px: crops, flips, colour shifts and resizes of real photos."""
    rng = np.random.default_rng(7)
    out = []
    for i in range(count):
        image = photo(PHOTO_NAMES[i % len(PHOTO_NAMES)])
        w, h = image.size
        left, top = int(rng.integers(0, w // 5)), int(rng.integers(0, h // 5))
        image = image.crop((left, top, w - int(rng.integers(0, w // 5)), h - int(rng.integers(0, h // 5))))
        if i % 2:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image = ImageEnhance.Color(image).enhance(float(rng.uniform(0.6, 1.4)))
        side = int(rng.integers(600, 2001))
        scale = side / max(image.size)
        image = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=88)
        out.append(buffer.getvalue())
    return out


def raw_model_rate(batch: int = 16, rounds: int = 4) -> tuple[float, float]:
    """Images/s of batched forward passes alone, and with preprocessing, on the same cores."""
    import torch

    settings = Settings(weights="random")
    model = REGISTRY["vit_b32"](settings)
    model.load()
    torch.set_num_threads(os.cpu_count() or 1)
    images = [photo(PHOTO_NAMES[i % len(PHOTO_NAMES)]) for i in range(batch)]
    tensors = torch.stack([model._preprocess(image) for image in images])
    with torch.inference_mode():
        model._model.encode_image(tensors)
        start = time.perf_counter()
        for _ in range(rounds):
            model._model.encode_image(tensors)
        forward = batch * rounds / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(rounds):
        model.embed_images(images)
    with_preprocessing = batch * rounds / (time.perf_counter() - start)
    return forward, with_preprocessing


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--milvus-uri", default="embedded")
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()

    forward, preprocessed = raw_model_rate()
    print(f"raw vit_b32 forward, batch 16: {forward:.1f} img/s; with preprocessing: {preprocessed:.1f} img/s")

    with ExitStack() as stack:
        server = stack.enter_context(ImageServer(host=IMAGE_HOST))
        urls = [server.add(f"/p{i}.jpg", data) for i, data in enumerate(photos(args.images))]
        port = free_port()
        data_dir = stack.enter_context(tempfile.TemporaryDirectory())
        env = {
            **os.environ,
            "IDIOS_WEIGHTS": "random",
            "IDIOS_PORT": str(port),
            "IDIOS_MILVUS_URI": args.milvus_uri,
            "IDIOS_DATA_DIR": data_dir,
            "IDIOS_COLLECTION_PREFIX": f"bench{uuid.uuid4().hex[:6]}_",
            "IDIOS_URL_ALLOW_NETWORKS": f"{IMAGE_HOST}/32",
            "IDIOS_LOG_LEVEL": "WARNING",
        }
        proc = subprocess.Popen([sys.executable, "-m", "idios", "serve"], env=env)
        stack.callback(proc.wait, 60)
        stack.callback(proc.terminate)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: models_ready(base), 300, "idios serve")
        client = stack.enter_context(httpx.Client(base_url=base, timeout=600))
        vit = "/models/vit_b32"

        start = time.perf_counter()
        result = client.post(f"{vit}/add_bulk", json=[{"url": u} for u in urls]).json()
        elapsed = time.perf_counter() - start
        rate = len(result["added"]) / elapsed
        print(
            f"add_bulk {len(result['added'])} images ({len(result['failed'])} failed) in {elapsed:.1f}s: "
            f"{rate:.1f} img/s = {100 * rate / forward:.0f}% of the raw forward rate"
        )

        rng = np.random.default_rng(3)
        start = time.perf_counter()
        for offset in range(0, args.entries, 2000):
            vectors = rng.standard_normal((2000, 512)).astype(np.float32)
            rows = [
                {
                    "url": f"http://synthetic.example/{offset + i:07d}.jpg",
                    "metadata": {"i": offset + i},
                    "embedding": vector.tolist(),
                }
                for i, vector in enumerate(vectors)
            ]
            response = client.post(f"{vit}/restore", json=rows)
            response.raise_for_status()
        restore_s = time.perf_counter() - start
        count = client.get(f"{vit}/count").json()
        print(f"restore {args.entries} entries: {args.entries / restore_s:.0f} entries/s; count now {count}")

        timings: dict[str, list[float]] = {
            "count": [],
            "search stored url": [],
            "search new url": [],
            "search text": [],
        }
        for i in range(40):
            for name, call in (
                ("count", lambda: client.get(f"{vit}/count")),
                ("search stored url", lambda i=i: client.post(f"{vit}/search", json={"url": urls[i]})),
                ("search new url", lambda i=i: client.post(f"{vit}/search", json={"url": urls[i] + f"?new={i}"})),
                ("search text", lambda i=i: client.post(f"{vit}/search", json={"text": f"a photo number {i}"})),
            ):
                start = time.perf_counter()
                call().raise_for_status()
                timings[name].append(time.perf_counter() - start)
        for name, values in timings.items():
            print(
                f"{name} at {count} entries: p50 {percentile(values, 50):.1f} ms, p95 {percentile(values, 95):.1f} ms"
            )

        start = time.perf_counter()
        dumped, cursor = 0, None
        while page := client.post(f"{vit}/dump", json={"cursor": cursor, "limit": 10000}).json():
            dumped += len(page)
            cursor = page[-1]["url"]
        dump_s = time.perf_counter() - start
        print(f"dump {dumped} entries: {dumped / dump_s:.0f} entries/s")
        print(f"median count latency {statistics.median(timings['count']) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
