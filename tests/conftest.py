"""Fixtures that start real parts: the Milvus server, an image server, Idios processes."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pymilvus import MilvusClient

from idios.store import Store

from imageserver import ImageServer
from photos import PHOTO_NAMES, encode, jpeg, photo, resized
from stack import Process, free_port, models_ready, port_free, wait_until

IMAGE_HOST = "127.0.0.2"
# Every model load of the suite, in-process or in a started worker, shares one set of exported
# ONNX graphs: the first load exports them (about 30 s), the others reuse them.
os.environ.setdefault("IDIOS_ONNX_DIR", str(Path(__file__).resolve().parent.parent / ".cache" / "onnx"))
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture(scope="session", autouse=True)
def onnx_graphs() -> None:
    """Export the suite's ONNX graphs up front (about 30 s, once per cache), rather than inside
    the first stack's wait for its workers."""
    from idios.config import Settings
    from idios.models.onnx import ensure_graphs

    ensure_graphs(Settings(weights="random"), "vit_b32", "random", ("image", "text"))


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = Path(__file__).resolve().parent.parent / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


class MilvusUnderTest:
    """The session's Milvus: its URI, and a restart for fault tests when the suite started it."""

    def __init__(self, uri: str, server: object | None) -> None:
        self.uri = uri
        self.server = server

    def restart(self, down_seconds: float = 3.0) -> None:
        assert self.server is not None, "IDIOS_TEST_MILVUS_URI names a server this suite cannot restart"
        port = self.server.listen_port
        self.server.stop()
        time.sleep(down_seconds)
        wait_until(lambda: port_free(port), 60, f"port {port} to be free")
        self.server.start()
        assert self.server.listen_port == port, "Milvus came back on another port"


@pytest.fixture(scope="session")
def milvus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusUnderTest]:
    """A real Milvus 2.3 standalone server (PyPI package `milvus`) for the whole session.

    IDIOS_TEST_MILVUS_URI points the suite at a server that is already running instead.
    """
    if os.environ.get("IDIOS_TEST_MILVUS_URI"):
        yield MilvusUnderTest(os.environ["IDIOS_TEST_MILVUS_URI"], None)
        return
    from idios.embedded import start_bundled_server

    server = start_bundled_server(tmp_path_factory.mktemp("milvus"))
    try:
        yield MilvusUnderTest(f"http://127.0.0.1:{server.listen_port}", server)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def milvus_uri(milvus: MilvusUnderTest) -> str:
    return milvus.uri


@pytest.fixture(scope="session")
def images() -> Iterator[ImageServer]:
    """Real photos and hostile files on 127.0.0.2, the only address the stacks may fetch from."""
    with ImageServer(host=IMAGE_HOST) as server:
        for name in PHOTO_NAMES:
            server.add(f"/{name}.jpg", jpeg(name))
            server.add(f"/{name}_small.jpg", resized(name, 0.6))
            server.add(f"/{name}_q30.jpg", jpeg(name, quality=30))
            server.add(f"/{name}.png", encode(photo(name), "PNG"), content_type="image/png")
        server.add("/page.html", b"<html><body>not an image</body></html>", content_type="image/jpeg")
        server.add("/tiny.jpg", encode(photo("coffee").resize((100, 80)), "JPEG"))
        server.add("/truncated.jpg", jpeg("rocket")[:3000])
        server.add("/missing.jpg", b"gone", status=404, content_type="text/plain")
        server.slow("/slow.jpg", jpeg("coins"), delay=1.0)
        yield server


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


def start_serve(milvus: str, log_dir: Path, **extra: str) -> Stack:
    port = free_port()
    env = stack_env(milvus, IDIOS_PORT=str(port), **extra)
    process = Process("serve", ["serve"], env, log_dir)
    stack = Stack("embedded", f"http://127.0.0.1:{port}", env, [process], log_dir)
    try:
        wait_until(lambda: models_ready(stack.url), 180, "idios serve", [process])
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


# RabbitMQ 4's default message limit, which the shipped broker config sets too (docker/rabbitmq).
MAX_MESSAGE_SIZE = 16 * 1024 * 1024


@pytest.fixture(scope="session")
def amqp_url(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[str]:
    """The broker of the distributed stacks: a throwaway RabbitMQ node with the shipped 16 MiB message
    limit (this machine's RabbitMQ 3 allows 128 MiB, and would hide messages RabbitMQ 4 refuses); the
    machine's broker where rabbitmq-server cannot be started here."""
    from broker import Broker, available

    if not available():
        yield AMQP_URL
        return
    node = Broker(tmp_path_factory.mktemp("rabbitmq-stacks"), max_message_size=MAX_MESSAGE_SIZE)
    try:
        node.start()
        yield node.url
    finally:
        node.stop()
        (artifacts / "rabbitmq-stacks.log").write_text(node.log())


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def stack(request: pytest.FixtureRequest, milvus_uri: str, images: ImageServer, artifacts: Path) -> Iterator[Stack]:
    """Idios in both modes: `idios serve`, and `idios api` with two `idios worker` processes (on a
    broker with the shipped message limit)."""
    log_dir = artifacts / f"{request.module.__name__}-{request.param}"
    log_dir.mkdir(exist_ok=True)
    if request.param == "embedded":
        started = start_serve(milvus_uri, log_dir)
    else:
        started = start_distributed(milvus_uri, log_dir, IDIOS_AMQP_URL=request.getfixturevalue("amqp_url"))
    yield started
    started.stop()
    for process in started.processes:
        assert "Traceback" not in process.log(), f"{process.name} logged a traceback:\n{process.log()[-4000:]}"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/infra checks a real deployment; it is collected only when hosts are named (--hosts=...)."""
    if collection_path.name == "infra" and collection_path.parent == Path(__file__).parent:
        try:
            return not config.getoption("hosts")
        except ValueError:  # pytest-testinfra is not installed
            return True
    return None


def drop_prefixed(client: MilvusClient, prefix: str) -> None:
    for name in client.list_collections():
        if name.startswith(prefix):
            client.drop_collection(name)


@pytest.fixture
def store(milvus_uri: str) -> Iterator[Store]:
    """A Store on collections of its own, dropped afterwards."""
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    s = Store(milvus_uri, prefix=prefix)
    try:
        yield s
    finally:
        drop_prefixed(s.client, prefix)
        s.close()
