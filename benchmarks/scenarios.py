"""The measurements: locust runs against a stack, and direct API calls for the scale scenario."""

from __future__ import annotations

import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from idios import backup

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Latency:
    """One request kind's figures from a run: count, failures, rate and percentiles in ms."""

    name: str
    requests: int
    failures: int
    rps: float
    p50: float
    p95: float
    p99: float

    @classmethod
    def of(cls, name: str, seconds: list[float]) -> Latency:
        ms = np.array(seconds) * 1000
        total = float(sum(seconds)) or 1.0
        return cls(name, len(ms), 0, len(ms) / total, *(float(np.percentile(ms, q)) for q in (50, 95, 99)))


def locust(
    host: str,
    users: list[str],
    *,
    count: int,
    seconds: float,
    corpus: Path,
    csv_prefix: Path,
    env: dict[str, str] | None = None,
) -> dict[str, Latency]:
    """Run the locustfile's `users` classes headless with `count` users in all; figures by request name."""
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(ROOT / "benchmarks" / "locustfile.py"),
        "--headless",
        "--host",
        host,
        "-u",
        str(count),
        "-r",
        str(count),
        "-t",
        f"{int(seconds)}s",
        "--stop-timeout",
        "120",
        "--csv",
        str(csv_prefix),
        "--only-summary",
        "--exit-code-on-error",
        "0",
        "--loglevel",
        "WARNING",
        *users,
    ]
    environment = {**os.environ, "IDIOS_BENCH_CORPUS": str(corpus), "PYTHONPATH": str(ROOT), **(env or {})}
    with Path(f"{csv_prefix}.log").open("wb") as output:
        subprocess.run(command, env=environment, check=True, stdout=output, stderr=output, timeout=seconds + 300)
    figures = {}
    with Path(f"{csv_prefix}_stats.csv").open() as stats:
        for row in csv.DictReader(stats):
            if row["Name"] == "Aggregated":
                continue
            figures[row["Name"]] = Latency(
                name=row["Name"],
                requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]),
                rps=float(row["Requests/s"]),
                p50=float(row["50%"]),
                p95=float(row["95%"]),
                p99=float(row["99%"]),
            )
    return figures


def timed(call: Any, repeat: int) -> list[float]:
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = call()
        seconds.append(time.perf_counter() - start)
        response.raise_for_status()
    return seconds


def restore_synthetic(client: httpx.Client, model: str, start: int, stop: int, *, rows: int = 2500) -> float:
    """Restore synthetic unit vectors for urls start..stop-1 through the API; returns entries/s.

    Two requests are in flight, as a client streaming a dump back would keep them, so the
    client's own encoding overlaps the server's work.
    """

    def body(offset: int) -> bytes:
        rng = np.random.default_rng(offset)
        vectors = rng.standard_normal((min(rows, stop - offset), 512)).astype(np.float32)
        return orjson.dumps(
            [
                {"url": f"http://synthetic.example/{offset + i:07d}.jpg", "metadata": {"i": offset + i}, "embedding": v}
                for i, v in enumerate(vectors)
            ],
            option=orjson.OPT_SERIALIZE_NUMPY,
        )

    def send(offset: int) -> None:
        response = client.post(
            f"/models/{model}/restore", content=body(offset), headers={"Content-Type": "application/json"}
        )
        response.raise_for_status()

    begin = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(send, range(start, stop, rows)))
    return (stop - start) / (time.perf_counter() - begin)


def walk(client: httpx.Client, model: str, op: str, page: int) -> tuple[int, float, list[float]]:
    """Page through `urls` or `dump` to the end like a client would; entries, entries/s, page seconds."""
    cursor, total, pages = None, 0, []
    begin = time.perf_counter()
    while True:
        start = time.perf_counter()
        response = client.post(f"/models/{model}/{op}", json={"cursor": cursor, "limit": page})
        response.raise_for_status()
        rows = orjson.loads(response.content)
        pages.append(time.perf_counter() - start)
        if not rows:
            break
        total += len(rows)
        cursor = rows[-1] if op == "urls" else rows[-1]["url"]
    return total, total / (time.perf_counter() - begin), pages


def dump_to_files(api: str, model: str) -> tuple[int, float]:
    """`idios dump` as a user runs it: the streamed dump written to JSON Lines files; entries, entries/s."""
    with tempfile.TemporaryDirectory(prefix="idios-bench-dump-") as directory:
        begin = time.perf_counter()
        backup.dump(api, model, Path(directory), 10_000)
        seconds = time.perf_counter() - begin
        entries = sum(path.read_bytes().count(b"\n") for path in Path(directory).glob("*.jsonl"))
    return entries, entries / seconds


def median_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000
