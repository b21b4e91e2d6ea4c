"""Idios processes for benchmarks: `idios serve`, or `idios api` with N `idios worker`, on a given Milvus."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.corpus import IMAGE_HOST

from tests.support.stack import Process, free_port, models_ready, wait_until

AMQP_URL = os.environ.get("IDIOS_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


class LocalStack:
    """`processes` maps a component name (serve, api, worker1, ...) to its running process."""

    def __init__(
        self, milvus_uri: str, log_dir: Path, *, workers: int, models: str = "vit_b32", prefix: str | None = None
    ) -> None:
        """workers=0 runs `idios serve` (API and worker in one process, no broker); `prefix` names the
        collections (default: new ones)."""
        tag = uuid.uuid4().hex[:8]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        cores = os.cpu_count() or 1
        self.env = {
            "IDIOS_WEIGHTS": "random",
            "IDIOS_MILVUS_URI": milvus_uri,
            "IDIOS_COLLECTION_PREFIX": prefix or f"bench{tag}_",
            "IDIOS_QUEUE_PREFIX": f"bench-{tag}",
            "IDIOS_AMQP_URL": AMQP_URL,
            "IDIOS_URL_ALLOW_NETWORKS": f"{IMAGE_HOST}/32",
            "IDIOS_PORT": str(self.port),
            "IDIOS_MODELS": models,
            "IDIOS_LOG_LEVEL": "WARNING",
            # Workers sharing the cores split them rather than fight over them.
            "IDIOS_MODEL_THREADS": str(max(1, cores // max(1, workers))),
        }
        self.processes: dict[str, Process] = {}
        log_dir.mkdir(parents=True, exist_ok=True)
        try:
            if workers == 0:
                self.processes["serve"] = Process("serve", ["serve"], self.env, log_dir)
            else:
                self.processes["api"] = Process("api", ["api"], self.env, log_dir)
                for index in range(1, workers + 1):
                    env = {**self.env, "IDIOS_HEALTH_PORT": str(free_port())}
                    self.processes[f"worker{index}"] = Process(f"worker{index}", ["worker"], env, log_dir)
            names = tuple(models.split(","))
            wait_until(lambda: models_ready(self.url, names), 600, "the benchmark stack", list(self.processes.values()))
        except BaseException:
            self.stop()
            raise

    @contextmanager
    def _milvus(self) -> Iterator[Any]:
        """A client of the stack's Milvus, closed afterwards."""
        from pymilvus import MilvusClient

        client = MilvusClient(self.env["IDIOS_MILVUS_URI"])
        try:
            yield client
        finally:
            client.close()

    def drop_collections(self) -> None:
        """Drop this stack's collections, so Milvus stops indexing them for the stacks that follow."""
        with self._milvus() as client:
            for name in client.list_collections():
                if name.startswith(self.env["IDIOS_COLLECTION_PREFIX"]):
                    client.drop_collection(name)

    def index_progress(self, model: str) -> tuple[int, int]:
        """Rows of the model's collection that Milvus has indexed, and its rows in sealed segments
        (Milvus builds HNSW indexes in the background, segment by segment)."""
        with self._milvus() as client:
            index = client.describe_index(self.env["IDIOS_COLLECTION_PREFIX"] + model, "vector")
        return int(index["indexed_rows"]), int(index["total_rows"])

    def pids(self) -> dict[str, int]:
        return {name: process.proc.pid for name, process in self.processes.items()}

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop(60)
