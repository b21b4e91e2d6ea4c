"""copydetect's two collections (image rows, corners) under writes that race or fail, through the
request path on the real Milvus server, in process: each write of an image stores new corners before
the row that names them, so a failure between the steps, or another write or remove of the same url
between them, leaves the url's entry as it was or as written, never a row whose corners are gone or
belong to another image."""

from __future__ import annotations

import asyncio
import base64
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from pymilvus.exceptions import MilvusException

from idios.config import Settings
from idios.corner_store import CornerStore

from tests.support.imageserver import ImageServer
from tests.support.inprocess import InProcess, in_process
from tests.support.photos import encode, photo
from tests.support.stacks import IMAGE_HOST

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.server]

MODEL = "/models/copydetect"


@pytest_asyncio.fixture(loop_scope="session")
async def app(milvus_uri: str) -> AsyncIterator[InProcess]:
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        _env_file=None,
        models=["copydetect"],
        collection_prefix=f"t{tag}_",
        queue_prefix=f"test-{tag}",
        url_allow_networks=[f"{IMAGE_HOST}/32"],
        milvus_consistency="Strong",
    )
    async with in_process(settings, milvus_uri) as serving:
        yield serving


@pytest.fixture
def paused_corner_writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, threading.Event]]:
    """The first corner write, once done, says so (`written`) and waits for `go` before its add goes
    on to its row: the moment another request of the same url can come between the two. Later
    corner writes do not wait."""
    written, go = threading.Event(), threading.Event()
    real = CornerStore.write

    def write_then_wait(self: CornerStore, images: list[int], keypoints: list[Any]) -> None:
        real(self, images, keypoints)
        if not written.is_set():
            written.set()
            go.wait(60)

    monkeypatch.setattr(CornerStore, "write", write_then_wait)
    yield written, go
    go.set()


async def dump(app: InProcess) -> dict[str, str]:
    answer = await app.client.post(f"{MODEL}/dump", json={"limit": 100})
    assert answer.status_code == 200, answer.text
    return {row["url"]: row["embedding"] for row in answer.json()}


async def stored_urls(app: InProcess) -> list[str]:
    answer = await app.client.post(f"{MODEL}/urls", json={"limit": 100})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_a_remove_during_an_add_leaves_no_row_without_its_corners(
    app: InProcess, images: ImageServer, paused_corner_writes: tuple[threading.Event, threading.Event]
) -> None:
    """A remove of the url between the add's corner write and its row write: whichever comes last
    wins, and a url that is listed and counted is also dumped and found."""
    written, go = paused_corner_writes
    url = images.add(f"/race-{uuid.uuid4().hex[:6]}.jpg", encode(photo("astronaut"), "JPEG", quality=90))
    add = asyncio.ensure_future(app.client.post(f"{MODEL}/add", json={"url": url}))
    assert await asyncio.to_thread(written.wait, 60)
    removed = await app.client.post(f"{MODEL}/remove", json={"url": url})
    assert removed.status_code == 204, removed.text
    go.set()
    assert (await add).status_code == 204

    listed, dumped = await stored_urls(app), await dump(app)
    assert listed == sorted(dumped), f"listed {listed}, dumped {sorted(dumped)}: a stored row is missing from the dump"
    if listed:
        crop = base64.b64encode(encode(photo("astronaut").crop((100, 100, 400, 400)), "JPEG")).decode()
        hits = (await app.client.post(f"{MODEL}/search", json={"image": crop, "limit": 3})).json()
        assert [hit["url"] for hit in hits] == [url], hits


async def test_two_adds_of_one_url_leave_one_of_the_two_whole(
    app: InProcess, images: ImageServer, paused_corner_writes: tuple[threading.Event, threading.Event]
) -> None:
    """Two adds of one url whose image changed between them (a re-upload), the second done while the
    first waits between its corner and row writes: both answer 204, and the url is stored whole, as
    one of the two wrote it."""
    written, go = paused_corner_writes
    path = f"/reupload-{uuid.uuid4().hex[:6]}.jpg"
    url = images.add(path, encode(photo("coffee"), "JPEG", quality=90))
    first = asyncio.ensure_future(app.client.post(f"{MODEL}/add", json={"url": url}))
    assert await asyncio.to_thread(written.wait, 60)
    images.add(path, encode(photo("coffee").convert("L").point(lambda _: 128).convert("RGB"), "JPEG"))
    second = await app.client.post(f"{MODEL}/add", json={"url": url})
    assert second.status_code == 204, second.text
    go.set()
    assert (await first).status_code == 204

    assert await stored_urls(app) == [url]
    assert url in await dump(app), "the url is stored, listed and counted, but its row's corners are gone"


async def test_a_failed_re_add_leaves_the_stored_entry_as_it_was(app: InProcess, images: ImageServer) -> None:
    """A url re-added with another picture, where Milvus fails the row write after the corner write
    (a worker killed between the two does the same): the add answers 503, and the stored entry is the
    old picture's, whole: a search for it finds the url, and the dump gives its keypoints."""
    key = uuid.uuid4().hex[:6]
    path = f"/changed-{key}.jpg"
    url = images.add(path, encode(photo("astronaut"), "JPEG", quality=90))
    reference = images.add(f"/reference-{key}.jpg", encode(photo("rocket"), "JPEG", quality=90))
    for added in (url, reference):
        assert (await app.client.post(f"{MODEL}/add", json={"url": added})).status_code == 204
    before = await dump(app)

    images.add(path, encode(photo("rocket"), "JPEG", quality=90))
    store = app.runner.store
    real = store._described

    def milvus_fails(name: str) -> dict[str, Any]:
        if name == store.collection(app.runner.models.get("copydetect").spec):
            raise MilvusException(code=2, message="fail connect to server (injected: Milvus restarting)")
        return real(name)

    store._described = milvus_fails  # type: ignore[method-assign]
    try:
        failed = await app.client.post(f"{MODEL}/add", json={"url": url})
    finally:
        store._described = real  # type: ignore[method-assign]
    assert failed.status_code == 503, failed.text

    after = await dump(app)
    assert after[url] in (before[url], before[reference]), "the entry is a mix of the old row and the new corners"
    crop = base64.b64encode(encode(photo("astronaut").crop((100, 100, 400, 400)), "JPEG")).decode()
    hits = (await app.client.post(f"{MODEL}/search", json={"image": crop, "limit": 3})).json()
    assert after[url] != before[url] or [hit["url"] for hit in hits] == [url], hits
