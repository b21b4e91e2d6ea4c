"""Whole Idios deployments started as processes: `idios serve`, or `idios api` with workers."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from pymilvus import MilvusClient

from tests.support.milvus import drop_prefixed
from tests.support.stack import Process, free_port, models_ready, wait_until

# The only address the stacks may fetch images from (the session's image server listens there).
IMAGE_HOST = "127.0.0.2"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
# RabbitMQ 4's default message limit, which the shipped broker config sets too (docker/rabbitmq).
MAX_MESSAGE_SIZE = 16 * 1024 * 1024


def stack_env(milvus: str, **extra: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    env = {
        "IDIOS_WEIGHTS": "random",
        "IDIOS_MILVUS_URI": milvus,
        "IDIOS_COLLECTION_PREFIX": f"t{tag}_",
        "IDIOS_QUEUE_PREFIX": f"test-{tag}",
        "IDIOS_URL_ALLOW_NETWORKS": f"{IMAGE_HOST}/32",
        "IDIOS_AMQP_URL": AMQP_URL,
        "IDIOS_DOWNLOAD_TIMEOUT": "20",
        "IDIOS_LOG_LEVEL": "INFO",
    }
    env.update(extra)
    return env


class Stack:
    """A running deployment: its base url, its processes and its environment."""

    def __init__(self, mode: str, url: str, env: dict[str, str], processes: list[Process], log_dir: Path):
        self.mode = mode
        self.url = url
        self.env = env
        self.processes = processes
        self.log_dir = log_dir

    def client(self, timeout: float = 120.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def by_name(self, name: str) -> Process:
        return next(p for p in self.processes if p.name == name)

    def start_worker(self, name: str) -> Process:
        env = {**self.env, "IDIOS_HEALTH_PORT": str(free_port())}
        process = Process(name, ["worker"], env, self.log_dir)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        """Stop the processes and drop the stack's collections: the session's Milvus would otherwise
        keep loading, ticking and compacting them for the rest of the suite."""
        for process in self.processes:
            process.stop()
        try:
            client = MilvusClient(self.env["IDIOS_MILVUS_URI"], timeout=10)
        except Exception:  # Milvus down (a fault test): nothing to spare it
            return
        try:
            drop_prefixed(client, self.env["IDIOS_COLLECTION_PREFIX"])
        except Exception:
            pass
        finally:
            client.close()


def start_serve(
    milvus: str, log_dir: Path, *, models: tuple[str, ...] = ("vit_b32", "phash"), key: str | None = None, **extra: str
) -> Stack:
    """`idios serve`, once `models` are ready (asked with the API key `key` when the server has keys)."""
    port = free_port()
    env = stack_env(milvus, IDIOS_PORT=str(port), **extra)
    process = Process("serve", ["serve"], env, log_dir)
    stack = Stack("embedded", f"http://127.0.0.1:{port}", env, [process], log_dir)
    try:
        wait_until(lambda: models_ready(stack.url, models, key), 180, "idios serve", [process])
    except BaseException:
        stack.stop()
        raise
    return stack


def start_distributed(milvus: str, log_dir: Path, workers: int = 2, **extra: str) -> Stack:
    port = free_port()
    env = stack_env(milvus, IDIOS_PORT=str(port), IDIOS_MILVUS_CONSISTENCY="Strong", **extra)
    api = Process("api", ["api"], env, log_dir)
    stack = Stack("distributed", f"http://127.0.0.1:{port}", env, [api], log_dir)
    names = tuple(env["IDIOS_MODELS"].split(",")) if "IDIOS_MODELS" in env else ("vit_b32", "phash")
    try:
        for index in range(workers):
            stack.start_worker(f"worker{index + 1}")
        wait_until(lambda: models_ready(stack.url, names), 240, "idios api and workers", stack.processes)
    except BaseException:
        stack.stop()
        raise
    return stack
