"""Benchmark a local Idios stack and write `benchmarks/results/<date>-<host>.md` with PNG plots.

    python -m benchmarks [--quick] [--workers 1,2,4] [--entries 500000] [--milvus-uri URI] [--out DIR]

Starts (unless --milvus-uri names one) the Milvus server from the `milvus` package, serves
derived photos on 127.0.0.3, and uses the RabbitMQ at 127.0.0.1:5672 (IDIOS_BENCH_AMQP_URL).
Models run with IDIOS_WEIGHTS=random: the real ViT-B/32 architecture, so the compute of the real
weights. Set IDIOS_QUANTIZE and other IDIOS_* variables to benchmark other settings.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks import report
from benchmarks.corpus import IMAGE_HOST, serve_corpus
from benchmarks.localstack import LocalStack
from benchmarks.memory import MemorySampler, directory_bytes, find_pid, wait_until_quiet
from benchmarks.scenarios import (
    ROOT,
    Latency,
    dump_to_files,
    locust,
    median_ms,
    restore_synthetic,
    timed,
    walk,
)

from tests.support.imageserver import ImageServer

MODEL = "vit_b32"


@dataclass
class Profile:
    ingest_images: int
    seconds: float  # each ingestion run
    latency_seconds: float  # each single-user latency run
    entries: int  # the scale scenario's size
    workers: list[int]
    # Enough adding clients, each with one request in flight, to keep the model busy: with 16, a
    # host whose model embeds 52 images/s left 0.24 of its 2 cores idle (37.8 images/s); 32 left
    # 0.02 (42.2 images/s). The add_bulk run keeps as many images in flight (2 clients, 16 urls).
    ingest_users: int = 32


QUICK = Profile(ingest_images=96, seconds=12, latency_seconds=6, entries=20_000, workers=[1])
FULL = Profile(ingest_images=400, seconds=60, latency_seconds=20, entries=500_000, workers=[1, 2, 4])


@dataclass
class Results:
    profile: str
    host: str
    started: str
    settings: dict[str, str]
    model_rate: dict[str, Any] = field(default_factory=dict)
    # (stack, request name) -> the raw rate just before and just after that ingestion run
    brackets: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    ingestion: dict[str, dict[str, Latency]] = field(default_factory=dict)  # stack -> request name -> figures
    latency: dict[str, Latency] = field(default_factory=dict)  # idle, one user at a time
    under_ingestion: dict[str, Latency] = field(default_factory=dict)
    scale: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, dict[str, int]] = field(default_factory=dict)  # moment -> component -> bytes
    disk: dict[str, int] = field(default_factory=dict)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(args: argparse.Namespace) -> Path:
    profile = QUICK if args.quick else FULL
    if args.workers:
        profile.workers = [int(w) for w in args.workers.split(",")]
    if args.entries:
        profile.entries = args.entries
    host = socket.gethostname()
    results = Results(
        profile="quick" if args.quick else "full",
        host=host,
        started=datetime.datetime.now().isoformat(timespec="seconds"),
        settings={k: v for k, v in sorted(os.environ.items()) if k.startswith("IDIOS_")},
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{datetime.date.today().isoformat()}-{host}{'-quick' if args.quick else ''}"

    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="idios-bench-")))
        milvus_dir: Path | None = None
        if args.milvus_uri:
            milvus_uri = args.milvus_uri
        else:
            from idios.embedded import milvus_uri as bundled

            milvus_dir = work / "data"
            log("starting the Milvus server")
            milvus_uri = stack.enter_context(bundled("embedded", milvus_dir))
        sampler = stack.enter_context(MemorySampler())
        sampler.watch("milvus", find_pid("milvus", str(milvus_dir)) if milvus_dir else None)
        sampler.watch("rabbitmq", find_pid("beam.smp"))

        images = stack.enter_context(ImageServer(host=IMAGE_HOST))
        corpus = serve_corpus(
            images, ROOT / ".cache" / "bench-photos", ingest=profile.ingest_images, stored=40, fresh=24
        )
        corpus_file = corpus.save(work / "corpus.json")
        log(f"serving {len(images.routes)} photos of 600-2000 px on {IMAGE_HOST}")

        log("raw model rate (no I/O), with Milvus idle beside it")
        command = [sys.executable, "-m", "benchmarks.model_rate", "--milvus-uri", milvus_uri]
        command += ["--quick"] if args.quick else []
        results.model_rate = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        log(f"  {results.model_rate['forward']}")

        def csv_prefix(name: str) -> Path:
            return work / name

        def raw_rate() -> float:
            """The raw rate now: this host's speed drifts by tens of percent over minutes, so each
            ingestion run is compared with measurements taken just before and just after it."""
            command = [sys.executable, "-m", "benchmarks.model_rate", "--bracket"] + (["--quick"] if args.quick else [])
            best = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)["best"]
            log(f"  raw model rate now: {best:.1f} images/s")
            return best

        # --- idios serve: the one-machine default
        log("idios serve")
        serve = LocalStack(milvus_uri, work / "logs-serve", workers=0)
        sampler.watch("serve", serve.pids()["serve"])
        results.memory["serve, idle"] = dict(sampler.sample())
        client = stack.enter_context(httpx.Client(base_url=serve.url, timeout=900))
        stored = client.post(f"/models/{MODEL}/add_bulk", json=[{"url": u} for u in corpus.stored]).json()
        assert not stored["failed"], stored["failed"]

        sampler.reset_peaks()
        before = raw_rate()
        log("  ingestion: add, one image per request")
        results.ingestion["serve"] = locust(
            serve.url,
            ["AddUser"],
            count=profile.ingest_users,
            seconds=profile.seconds,
            corpus=corpus_file,
            csv_prefix=csv_prefix("serve-add"),
        )
        after = raw_rate()
        results.brackets[("serve", "add")] = (before, after)
        if not args.quick:
            log("  ingestion: add_bulk, 16 urls per request")
            bulk = locust(
                serve.url,
                ["AddBulkUser"],
                count=2,
                seconds=profile.seconds,
                corpus=corpus_file,
                csv_prefix=csv_prefix("serve-bulk"),
            )
            results.ingestion["serve"].update(bulk)
            before, after = after, raw_rate()
            results.brackets.update({("serve", name): (before, after) for name in bulk})
        results.memory["serve, peak while ingesting"] = dict(sampler.peak)

        for user in ("SearchStoredUrlUser", "SearchNewUrlUser", "SearchTextUser", "SearchUploadUser", "CompareUser"):
            log(f"  latency: {user}, one user")
            results.latency.update(
                locust(
                    serve.url,
                    [user],
                    count=1,
                    seconds=profile.latency_seconds,
                    corpus=corpus_file,
                    csv_prefix=csv_prefix(f"serve-{user}"),
                )
            )
        # One searcher per run beside the adders: each search kind's latency is the one that ingestion
        # causes, not also the load of another searcher's back-to-back requests.
        for searcher in ("OneSearchNewUrlUser", "OneSearchStoredUrlUser"):
            log(f"  {searcher} while ingestion saturates the worker")
            mixed = locust(
                serve.url,
                ["AddUser", searcher],
                count=profile.ingest_users + 1,
                seconds=profile.seconds,
                corpus=corpus_file,
                csv_prefix=csv_prefix(f"serve-mixed-{searcher}"),
            )
            searched = next(name for name in mixed if name != "add")
            results.under_ingestion[searched] = mixed[searched]
            results.under_ingestion[f"add, beside {searched}"] = mixed["add"]

        log(f"  scale: restore to {profile.entries} entries")
        have = client.get(f"/models/{MODEL}/count").json()
        results.scale["restore_per_s"] = restore_synthetic(client, MODEL, 0, profile.entries)
        results.scale["entries"] = client.get(f"/models/{MODEL}/count").json()
        assert results.scale["entries"] >= profile.entries + have - 1, results.scale
        results.scale["indexed"] = {"restore": serve.index_progress(MODEL)}
        time.sleep(5)  # let Milvus settle its segments before timing reads
        results.memory[f"serve, {results.scale['entries']} entries"] = dict(sampler.sample())
        synthetic = [f"http://synthetic.example/{i:07d}.jpg" for i in range(0, profile.entries, profile.entries // 40)]
        calls = {
            "count": lambda: client.get(f"/models/{MODEL}/count"),
            "search by stored url": lambda: client.post(f"/models/{MODEL}/search", json={"url": synthetic.pop()}),
        }
        repeat = 20 if args.quick else 40
        synthetic *= 2
        results.scale["count_ms"] = median_ms(timed(calls["count"], repeat))
        results.scale["search_stored_ms"] = median_ms(timed(calls["search by stored url"], repeat))
        fresh = iter(corpus.fresh * 4)
        results.scale["search_new_ms"] = median_ms(
            timed(lambda: client.post(f"/models/{MODEL}/search", json={"url": next(fresh)}), repeat)
        )
        log("  scale: urls pagination and a full dump")
        count, rate, pages = walk(client, MODEL, "urls", 10_000)
        results.scale["urls"] = {"entries": count, "per_s": rate, "page_ms": median_ms(pages)}
        count, rate, pages = walk(client, MODEL, "dump", 10_000)
        results.scale["dump_pages"] = {"entries": count, "per_s": rate, "page_ms": median_ms(pages)}
        count, rate = dump_to_files(serve.url, MODEL)
        results.scale["dump"] = {"entries": count, "per_s": rate}
        results.scale["indexed"]["dump"] = serve.index_progress(MODEL)
        results.memory[f"serve, after dump of {count}"] = dict(sampler.sample())
        if milvus_dir:
            results.disk[f"Milvus at {results.scale['entries']} entries"] = directory_bytes(milvus_dir)
        client.close()
        serve.stop()
        sampler.forget("serve")
        serve.drop_collections()
        waited = wait_until_quiet(sampler.pids.get("milvus"))
        log(f"  dropped the scale collection; Milvus quiet after {waited:.0f} s")

        # --- idios api + N workers through RabbitMQ
        for workers in profile.workers:
            log(f"idios api + {workers} worker(s)")
            distributed = LocalStack(milvus_uri, work / f"logs-{workers}w", workers=workers)
            for name, pid in distributed.pids().items():
                sampler.watch(name, pid)
            sampler.reset_peaks()
            results.ingestion[f"{workers} worker(s)"] = locust(
                distributed.url,
                ["AddUser"],
                count=profile.ingest_users * workers,
                seconds=profile.seconds,
                corpus=corpus_file,
                csv_prefix=csv_prefix(f"dist{workers}"),
            )
            peak = dict(sampler.peak)
            results.memory[f"api + {workers} worker(s), peak while ingesting"] = peak
            distributed.stop()
            for name in distributed.pids():
                sampler.forget(name)

    path = report.write(results, out, stem)
    log(f"report: {path}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small profile (under 5 minutes)")
    parser.add_argument("--workers", default="", help="worker counts to run, e.g. 1,2,4")
    parser.add_argument("--entries", type=int, default=0, help="size of the scale scenario")
    parser.add_argument("--milvus-uri", default="", help="use this Milvus instead of starting one")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    run(parser.parse_args())


if __name__ == "__main__":
    main()
