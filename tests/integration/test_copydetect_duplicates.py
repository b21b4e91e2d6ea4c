"""Copies copydetect must not miss in a search and in the duplicates walk, through the request path
on the real Milvus server, in process: one picture stored under many urls, a copy found one way only,
and a page that runs out of time."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from idios import copysearch, keypoints
from idios.config import Settings
from idios.keypoint_data import pack
from idios.protocol import DuplicatesArgs, Job

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


async def walk(app: InProcess) -> list[dict[str, Any]]:
    groups, cursor = [], None
    while True:
        answer = await app.client.post(f"{MODEL}/duplicates", json={"cursor": cursor, "limit": 100})
        assert answer.status_code == 200, answer.text
        page = answer.json()
        groups += page["groups"]
        if page["cursor"] is None:
            return groups
        cursor = page["cursor"]


async def test_a_copy_found_only_from_the_later_url_is_still_grouped(app: InProcess, images: ImageServer) -> None:
    """The astronaut and a crop of a third of it: the crop's corners place it in the original (7
    agreeing pairs, 46.5), the original's 256 corners spread over the whole picture do not place it
    in the crop. The walk examines the original first (no copies found) and then the crop, whose
    copy comes before it but did not find it: the pair is reported there, once."""
    key = uuid.uuid4().hex[:6]
    original = images.add(f"/{key}-a-astronaut.jpg", encode(photo("astronaut"), "JPEG", quality=85))
    crop = photo("astronaut").crop((107, 48, 286, 227))
    copy = images.add(f"/{key}-b-astronaut-crop.jpg", encode(crop, "JPEG", quality=85))
    added = await app.client.post(f"{MODEL}/add_bulk", json=[{"url": original}, {"url": copy}])
    assert sorted(added.json()["added"]) == [original, copy], added.text

    compared = (await app.client.post(f"{MODEL}/compare", json={"url": original, "other": copy})).json()
    assert compared >= 39, "the two are copies of each other"
    hits = (await app.client.post(f"{MODEL}/search", json={"url": copy, "limit": 5})).json()
    assert original in [hit["url"] for hit in hits if hit["similarity"] >= 39], hits

    assert [group["urls"] for group in await walk(app)] == [[original, copy]]


async def test_one_picture_stored_under_several_urls_is_found_under_each(app: InProcess, images: ImageServer) -> None:
    """The same bytes under six urls (a picture reposted, or served by several hosts): the vote's
    nearest corners are always the same four of the six exact copies, and the other two come with
    them. A search by a crop lists all six, a search by the fifth url lists itself, and the
    duplicates walk reports one group of six."""
    key = uuid.uuid4().hex[:6]
    data = encode(photo("coffee"), "JPEG", quality=90)
    urls = [images.add(f"/{key}-copy-{i}.jpg", data) for i in range(6)]
    added = await app.client.post(f"{MODEL}/add_bulk", json=[{"url": url} for url in urls])
    assert sorted(added.json()["added"]) == urls, added.text

    query = base64.b64encode(encode(photo("coffee").crop((50, 50, 450, 350)), "JPEG")).decode()
    hits = (await app.client.post(f"{MODEL}/search", json={"image": query, "limit": 10})).json()
    assert sorted(hit["url"] for hit in hits) == urls, hits
    itself = (await app.client.post(f"{MODEL}/search", json={"url": urls[4], "limit": 10})).json()
    assert sorted(hit["url"] for hit in itself) == urls, itself
    assert [group["urls"] for group in await walk(app)] == [urls]


def restored_rows(count: int) -> list[dict[str, Any]]:
    """`count` stored entries (no download): the keypoints of a few photos, each under several urls."""
    key = uuid.uuid4().hex[:6]
    names = ("astronaut", "coffee", "rocket", "chelsea")
    embeddings = [base64.b64encode(pack(keypoints.extract(photo(name), 256))).decode() for name in names]
    return [
        {"url": f"http://{IMAGE_HOST}/{key}/{i:03d}.jpg", "embedding": embeddings[i % len(names)]} for i in range(count)
    ]


@pytest.fixture
def slow_searches(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Each copydetect search takes 0.3 s and finds nothing (a large collection's cost, without its
    data); the times the searches started."""
    started: list[float] = []

    def slow_search(*args: Any, **kwargs: Any) -> list[Any]:
        started.append(time.time())
        time.sleep(0.3)
        return []

    monkeypatch.setattr(copysearch, "search", slow_search)
    return started


async def test_a_page_stops_at_its_deadline(app: InProcess, slow_searches: list[float]) -> None:
    """A page examines `limit` urls (up to 1,000), each a search of its own: hundreds of milliseconds
    each on a large collection, so minutes a page. It stops as its deadline nears and answers the
    urls it examined, rather than searching on for no one."""
    rows = restored_rows(20)
    assert (await app.client.post(f"{MODEL}/restore", json=rows)).status_code == 204
    job = Job.of(DuplicatesArgs(limit=20, min_similarity=39.0), "copydetect", 1.0)
    await app.runner.run(job)
    late = [moment for moment in slow_searches if moment > job.deadline]
    assert len(late) <= 1, f"{len(late)} of the page's {len(slow_searches)} searches started after its deadline"


async def test_duplicates_pages_are_admitted_like_adds_in_serve(milvus_uri: str, slow_searches: list[float]) -> None:
    """`idios serve` admits a duplicates page like an add: with IDIOS_MAX_QUEUED_JOBS=1 a second page
    asked while the first runs is refused with 503."""
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        _env_file=None,
        models=["copydetect"],
        collection_prefix=f"t{tag}_",
        queue_prefix=f"test-{tag}",
        max_queued_jobs=1,
    )
    async with in_process(settings, milvus_uri) as serving:
        assert (await serving.client.post(f"{MODEL}/restore", json=restored_rows(10))).status_code == 204
        first = asyncio.ensure_future(serving.client.post(f"{MODEL}/duplicates", json={"limit": 10}))
        while not slow_searches:
            await asyncio.sleep(0.05)
        second = await serving.client.post(f"{MODEL}/duplicates", json={"limit": 10})
        assert (await first).status_code == 200
        assert second.status_code == 503, f"a second page ran beside the first: {second.status_code}"
