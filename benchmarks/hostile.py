"""Peak memory of `idios serve` and of a worker while hostile inputs arrive beside ingestion.

    python -m benchmarks.hostile [--seconds 60] [--milvus-uri URI] [--out DIR]

Each stack (`idios serve`; `idios api` with one worker) first ingests real photos alone, then the same
ingestion runs beside clients that send nothing but hostile inputs: compression bombs of 1 GiB in every
encoding the fetcher decodes, an endless body, small PNGs that declare 51.8 Mpx in 16-bit and alpha modes
(by url and uploaded), a JPEG of 5,000 scans. The report gives each process's peak resident memory in
both phases, every answer the hostile clients got (they must all be 4xx), and the ingestion rate in
both phases. Writes `<date>-<host>-hostile.md` and `.json`.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.corpus import IMAGE_HOST, serve_corpus
from benchmarks.localstack import LocalStack
from benchmarks.memory import MemorySampler
from benchmarks.scenarios import ROOT

from tests.support.hostile_files import flat_png, many_scans
from tests.support.imageserver import ImageServer

MODEL = "vit_b32"
MIB = 1024 * 1024
SIDE = 7200  # 51.8 Mpx: just under the default IDIOS_MAX_IMAGE_PIXELS
ADDERS = 8
HOSTILE_CLIENTS = 6
BOMB_ENCODINGS = ("gzip", "deflate", "br", "zstd", "gzip, br")


@dataclass
class Hostile:
    """What the hostile clients send: urls to add and search, files to upload."""

    urls: dict[str, str]
    uploads: dict[str, bytes]

    def requests(self) -> list[tuple[str, Callable[[httpx.Client], httpx.Response]]]:
        calls: list[tuple[str, Callable[[httpx.Client], httpx.Response]]] = []
        for name, url in self.urls.items():
            calls.append((f"add {name}", lambda c, u=url: c.post(f"/models/{MODEL}/add", json={"url": u})))
            calls.append((f"search {name}", lambda c, u=url: c.post(f"/models/{MODEL}/search", json={"url": u})))
        for name, data in self.uploads.items():
            files = {"file": (f"{name}.bin", data, "application/octet-stream")}
            calls.append((f"upload {name}", lambda c, f=files: c.post(f"/models/{MODEL}/search/upload", files=f)))
        return calls


def serve_hostile(server: ImageServer) -> Hostile:
    urls = {f"bomb {encoding}": server.bomb(f"/bomb/{i}.jpg", encoding) for i, encoding in enumerate(BOMB_ENCODINGS)}
    urls["endless body"] = server.endless("/endless.jpg", b"\xff" * 65536)
    pngs = {
        "16-bit PNG": flat_png(SIDE, 0, 16, b"\x75\x30"),
        "RGBA PNG": flat_png(SIDE, 6, 8, b"\xc8\x0a\x0a\x80"),
        "LA PNG": flat_png(SIDE, 4, 8, b"\x64\x80"),
    }
    for name, data in pngs.items():
        urls[name] = server.add(f"/{name.replace(' ', '-')}.png", data, "image/png")
    scans = many_scans(5000)
    urls["JPEG of 5,000 scans"] = server.add("/scans.jpg", scans)
    return Hostile(urls=urls, uploads={**pngs, "JPEG of 5,000 scans": scans})


@dataclass
class Phase:
    seconds: float
    added: int = 0
    add_errors: Counter[str] = field(default_factory=Counter)
    hostile: Counter[tuple[str, int]] = field(default_factory=Counter)
    peak_rss: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 1),
            "added": self.added,
            "added_per_s": round(self.added / self.seconds, 2),
            "add_errors": dict(self.add_errors),
            "hostile": [{"request": name, "status": status, "count": n} for (name, status), n in self.hostile.items()],
            "peak_rss_mib": {name: round(rss / MIB) for name, rss in self.peak_rss.items()},
        }


def run_phase(url: str, photos: list[str], hostile: Hostile | None, seconds: float, sampler: MemorySampler) -> Phase:
    """`ADDERS` clients add photos for `seconds`; with `hostile`, `HOSTILE_CLIENTS` more send its requests."""
    phase = Phase(seconds=seconds)
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    next_photo = itertools.cycle(photos).__next__
    calls = itertools.cycle(hostile.requests() if hostile else [])

    def add() -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            while time.monotonic() < deadline:
                with lock:
                    photo = next_photo()
                response = client.post(f"/models/{MODEL}/add", json={"url": photo})
                with lock:
                    if response.status_code == 204:
                        phase.added += 1
                    else:
                        phase.add_errors[f"{response.status_code} {response.text[:120]}"] += 1

    def attack() -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            while time.monotonic() < deadline:
                with lock:
                    name, call = next(calls)
                try:
                    status = call(client).status_code
                except httpx.HTTPError:
                    status = 0  # no answer
                with lock:
                    phase.hostile[(name, status)] += 1

    sampler.reset_peaks()
    threads = [threading.Thread(target=add) for _ in range(ADDERS)]
    if hostile is not None:
        threads += [threading.Thread(target=attack) for _ in range(HOSTILE_CLIENTS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    phase.seconds = time.monotonic() - started
    phase.peak_rss = dict(sampler.peak)
    return phase


def measure(milvus_uri: str, work: Path, seconds: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with ExitStack() as stack:
        sampler = stack.enter_context(MemorySampler(interval=0.2))
        images = stack.enter_context(ImageServer(host=IMAGE_HOST))
        corpus = serve_corpus(images, ROOT / ".cache" / "bench-photos", ingest=400, stored=0, fresh=0)
        hostile = serve_hostile(images)
        for label, workers in (("idios serve", 0), ("idios api + 1 worker", 1)):
            local = LocalStack(milvus_uri, work / f"logs-{workers}", workers=workers)
            try:
                for name, pid in local.pids().items():
                    sampler.watch(name, pid)
                time.sleep(2)
                sampler.sample()
                idle = dict(sampler.last)
                alone = run_phase(local.url, corpus.ingest, None, seconds, sampler)
                beside = run_phase(local.url, corpus.ingest, hostile, seconds, sampler)
                results[label] = {
                    "idle_rss_mib": {name: round(rss / MIB) for name, rss in idle.items()},
                    "ingestion alone": alone.summary(),
                    "ingestion beside hostile clients": beside.summary(),
                }
            finally:
                local.stop()
                local.drop_collections()
                for name in local.pids():
                    sampler.forget(name)
    return results


def write(results: dict[str, Any], out: Path, stem: str, seconds: float) -> Path:
    lines = [
        f"# Hostile inputs beside ingestion ({stem})",
        "",
        f"Each phase: {ADDERS} clients add photos of 600-2000 px for {seconds:g} s; in the second phase "
        f"{HOSTILE_CLIENTS} more clients send only hostile inputs, round robin: compression bombs of 1 GiB "
        f"({', '.join(BOMB_ENCODINGS)}), an endless body, flat {SIDE}x{SIDE} PNGs (16-bit, RGBA, LA; about "
        "100 KB each) and a JPEG of 5,000 scans, by url (add and search) and uploaded (search). Peak resident "
        "memory sampled every 0.2 s. `python -m benchmarks.hostile`.",
        "",
        "| stack | process | idle | peak, ingestion alone | peak, beside hostile clients |",
        "|---|---|---|---|---|",
    ]
    for label, figures in results.items():
        alone, beside = figures["ingestion alone"], figures["ingestion beside hostile clients"]
        for name, idle in figures["idle_rss_mib"].items():
            lines.append(
                f"| {label} | {name} | {idle} MiB | {alone['peak_rss_mib'].get(name, 0)} MiB "
                f"| {beside['peak_rss_mib'].get(name, 0)} MiB |"
            )
    lines += ["", "| stack | images added/s alone | beside hostile clients | add errors |", "|---|---|---|---|"]
    for label, figures in results.items():
        alone, beside = figures["ingestion alone"], figures["ingestion beside hostile clients"]
        errors = sum(alone["add_errors"].values()) + sum(beside["add_errors"].values())
        lines.append(f"| {label} | {alone['added_per_s']} | {beside['added_per_s']} | {errors} |")
    lines += ["", "Answers to the hostile clients:", "", "| stack | request | status | count |", "|---|---|---|---|"]
    for label, figures in results.items():
        for row in sorted(
            figures["ingestion beside hostile clients"]["hostile"], key=lambda r: (r["request"], r["status"])
        ):
            lines.append(f"| {label} | {row['request']} | {row['status']} | {row['count']} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    path = out / f"{stem}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hostile", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each phase")
    parser.add_argument("--milvus-uri", default="", help="use this Milvus instead of starting one")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    stem = f"{datetime.date.today().isoformat()}-{socket.gethostname()}-hostile"
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="idios-hostile-")))
        if args.milvus_uri:
            milvus_uri = args.milvus_uri
        else:
            from idios.embedded import milvus_uri as bundled

            milvus_uri = stack.enter_context(bundled("embedded", work / "data"))
        results = measure(milvus_uri, work, args.seconds)
    print(write(results, Path(args.out), stem, args.seconds))


if __name__ == "__main__":
    main()
