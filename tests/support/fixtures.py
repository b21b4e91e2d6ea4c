"""Fixtures shared by the layers (a pytest plugin, named in tests/conftest.py).

Nothing here starts unless a test asks for it: the Milvus server, the image server, the broker and
the stacks start on first request, and the ONNX export runs only where a layer's conftest asks for it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from idios.store import Store

from tests.support.imageserver import ImageServer
from tests.support.milvus import MilvusUnderTest, drop_prefixed
from tests.support.photos import PHOTO_NAMES, encode, jpeg, photo, resized
from tests.support.stacks import AMQP_URL, IMAGE_HOST, MAX_MESSAGE_SIZE, Stack, start_distributed, start_serve

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def onnx_graphs() -> None:
    """Export the suite's ONNX graphs up front (about 30 s, once per cache), rather than inside
    the first stack's wait for its workers."""
    from idios.config import Settings
    from idios.models.onnx import ensure_graphs

    ensure_graphs(Settings(weights="random"), "vit_b32", "random", ("image", "text"))


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = REPO / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


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


@pytest.fixture(scope="session")
def amqp_url(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[str]:
    """The broker of the distributed stacks: a throwaway RabbitMQ node with the shipped 16 MiB message
    limit (this machine's RabbitMQ 3 allows 128 MiB, and would hide messages RabbitMQ 4 refuses); the
    machine's broker where rabbitmq-server cannot be started here."""
    from tests.support.broker import Broker, available

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
    log_dir = artifacts / f"{request.module.__name__.rpartition('.')[2]}-{request.param}"
    log_dir.mkdir(exist_ok=True)
    if request.param == "embedded":
        started = start_serve(milvus_uri, log_dir)
    else:
        started = start_distributed(milvus_uri, log_dir, IDIOS_AMQP_URL=request.getfixturevalue("amqp_url"))
    yield started
    started.stop()
    for process in started.processes:
        assert "Traceback" not in process.log(), f"{process.name} logged a traceback:\n{process.log()[-4000:]}"


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
