"""Pages of urls and rows (`/urls`, `/dump`, `dump.jsonl`), restores of repeated urls and metadata
filters, through the HTTP API of an in-process Idios against the real Milvus.

The in-process app has no model weights: restores, dumps, url listings and searches by a stored
url need only the model's spec. Its transport encodes every answer as a broker would
(`idios.transport.queues.encode`) and keeps the sizes, so tests can hold each message to the byte
budget. A real stack (`idios api` and a worker through RabbitMQ) checks the streamed dump against
a concurrent restore.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from pymilvus.exceptions import MilvusException

from idios import expr, pages
from idios.api.app import create_app
from idios.config import Settings
from idios.errors import Invalid
from idios.jobs import JobRunner
from idios.protocol import PROTOCOL_VERSION, Job, SearchArgs, unwrap
from idios.specs import spec
from idios.store import Columns, Store, is_input_error
from idios.transport.local import LocalTransport
from idios.transport.queues import encode

from tests.support.api import JSON, assert_every_row_once_in_order, bits_rows, paged_dump, restore, streamed_dump
from tests.support.milvus import drop_prefixed
from tests.support.stacks import IMAGE_HOST

PHASH = spec("phash")
VIT_L = spec("vit_l14")
SMALL_MESSAGE = 2 * 1024 * 1024  # a 2 MiB broker limit: pages of a few hundred big rows pass it


class MeasuringTransport(LocalTransport):
    """In process, but each answer is encoded as a broker would carry it, and its size kept."""

    def __init__(self, runner: JobRunner) -> None:
        super().__init__(runner)
        self.sizes: list[tuple[str, int]] = []

    async def call(self, job: Job[Any]) -> Any:
        reply = await self.runner.run(job)
        self.sizes.append((job.op, len(encode(reply))))
        return unwrap(reply)


class App(SimpleNamespace):
    client: TestClient
    store: Store
    transport: MeasuringTransport
    settings: Settings


@pytest.fixture
def make_app(milvus_uri: str) -> Iterator[Callable[..., App]]:
    """An in-process Idios on collections of its own, the given models ready (without weights)."""
    opened: list[tuple[TestClient, Store]] = []
    prefix = f"t{uuid.uuid4().hex[:8]}_"

    def make(*names: str, **overrides: Any) -> App:
        settings = Settings(
            _env_file=None, models=[], milvus_uri=milvus_uri, collection_prefix=prefix, weights="random", **overrides
        )
        store = Store(milvus_uri, prefix=prefix)
        runner = JobRunner(settings, store)
        for name in names:
            model_spec = spec(name)
            store.ensure_collection(model_spec)
            model = SimpleNamespace(spec=model_spec, stored_query=lambda stored: stored)  # searches by stored url
            runner.models.models[name] = model  # type: ignore[assignment]
            runner.status[name] = {"status": "ready", "reason": ""}
        transport = MeasuringTransport(runner)
        client = TestClient(create_app(settings, transport), base_url="http://127.0.0.1")
        client.__enter__()
        opened.append((client, store))
        return App(client=client, store=store, transport=transport, settings=settings)

    yield make
    for client, store in opened:
        client.__exit__(None, None, None)
        drop_prefixed(store.client, prefix)
        store.close()


# rows written while a dump runs


def test_dumps_keep_every_stored_row_while_rows_are_written_into_their_pages(make_app) -> None:
    """Rows written into a page's range between the page's url query and its rows' query (another
    client restoring) used to push stored rows out of the streamed dump: its range job cut the
    range back to `limit` rows and the next range started after the range's end."""
    app = make_app("phash")
    key = uuid.uuid4().hex[:6]
    stored = [f"http://{IMAGE_HOST}/{key}/{i:05d}0" for i in range(3000)]
    restore(app.client, "phash", bits_rows(stored, seed=1))
    real = app.store.columns_between
    written: set[str] = set()

    def with_writes_first(model_spec, cursor, last, limit=None):
        """Another client's rows land inside the range just before it is read: 150 new urls, one
        after each of the range's first 150 stored urls."""
        inside = [
            url for url in stored if (cursor is None or url > cursor) and url <= last and url + "5" not in written
        ]
        new = [url + "5" for url in inside[:150]]
        written.update(new)
        vectors = PHASH.from_public(np.ones((len(new), 64)))
        app.store.upsert_columns(model_spec, Columns(urls=new, vectors=vectors, metadata=[{}] * len(new)))
        return real(model_spec, cursor, last, limit)

    app.store.columns_between = with_writes_first
    for dumped in (streamed_dump(app.client, "phash", page=500), paged_dump(app.client, "phash", limit=500)):
        urls = [row["url"] for row in dumped]
        assert_every_row_once_in_order(urls, stored)
        assert set(urls) <= set(stored) | written
    assert written  # the writes did land inside the pages


# pages that fit in one message


def big_rows(count: int, seed: int) -> tuple[list[str], np.ndarray, list[dict]]:
    """vit_l14 rows (768 floats) with 2,000-character urls and 20 kB of metadata: ~30 kB each."""
    key = uuid.uuid4().hex[:6]
    urls = [f"http://{IMAGE_HOST}/{key}/{i:04d}/" + "p" * 1960 + "\"\\'é" for i in range(count)]
    vectors = VIT_L.from_public(np.random.default_rng(seed).standard_normal((count, 768)))
    metadata = [{"i": i, "text": 'quote " and back\\slash ' * 800, "tags": ["猫"] * 50} for i in range(count)]
    return urls, vectors, metadata


def test_dump_pages_fit_in_one_message_and_lose_nothing(make_app) -> None:
    """300 rows of ~30 kB are 9 MB: one page of them used to be one answer, over a 2 MiB broker
    limit. Now each answer stays under the budget, and paging from the last url returned gets
    every row, exactly."""
    app = make_app("vit_l14", max_message_bytes=SMALL_MESSAGE)
    budget = pages.budget(SMALL_MESSAGE)
    urls, vectors, metadata = big_rows(300, seed=4)
    app.store.upsert_columns(VIT_L, Columns(urls=urls, vectors=vectors, metadata=metadata))
    expected = sorted(zip(urls, range(300), strict=True))

    paged = paged_dump(app.client, "vit_l14", limit=10000)
    streamed = streamed_dump(app.client, "vit_l14", page=10000)
    assert [row["url"] for row in paged] == [url for url, _ in expected]
    for row, (_, index) in zip(paged, expected, strict=True):
        assert row["metadata"] == metadata[index]
        np.testing.assert_array_equal(np.asarray(row["embedding"], dtype=np.float32), vectors[index])
    assert streamed == paged

    sizes = app.transport.sizes
    assert max(size for _, size in sizes) <= budget, sorted(sizes, key=lambda item: -item[1])[:3]
    dumps = [size for op, size in sizes if op == "dump"]
    assert len(dumps) >= 2 * (300 * 30_000 // budget)  # both dumps took many pages


def test_url_pages_fit_in_one_message_and_lose_nothing(make_app) -> None:
    """3,000 urls of 2,083 characters are 6.3 MB as one answer; under a 2 MiB limit /urls answers
    fewer per page, and paging from the last url returned gets them all."""
    app = make_app("phash", max_message_bytes=SMALL_MESSAGE)
    key = uuid.uuid4().hex[:6]
    head = f"http://{IMAGE_HOST}/{key}/"
    urls = [f"{head}{i:04d}/" + "u" * (2083 - len(head) - 5) for i in range(3000)]
    assert {len(url) for url in urls} == {2083}
    restore(app.client, "phash", bits_rows(urls, seed=5, metadata=lambda i: {}))
    app.transport.sizes.clear()

    walked: list[str] = []
    cursor = None
    while page := app.client.post("/models/phash/urls", json={"cursor": cursor, "limit": 10000}).json():
        walked += page
        cursor = page[-1]
    sizes = [size for op, size in app.transport.sizes if op == "urls"]
    assert max(sizes) <= pages.budget(SMALL_MESSAGE) and len(sizes) >= 4
    assert walked == sorted(urls)


# restores


def test_a_restore_keeps_the_last_row_of_a_repeated_url(make_app) -> None:
    app = make_app("phash")
    key = uuid.uuid4().hex[:6]
    a, b = f"http://{IMAGE_HOST}/{key}/a.jpg", f"http://{IMAGE_HOST}/{key}/b.jpg"
    first, second, other = [1] * 32 + [0] * 32, [0] * 32 + [1] * 32, [1, 0] * 32
    rows = [
        {"url": a, "metadata": {"v": 1}, "embedding": first},
        {"url": b, "metadata": {"v": "b"}, "embedding": other},
        {"url": a, "metadata": {"v": 2}, "embedding": second},
    ]
    restore(app.client, "phash", rows)
    assert app.client.get("/models/phash/count").json() == 2
    assert paged_dump(app.client, "phash", limit=10) == [
        {"url": a, "metadata": {"v": 2}, "embedding": second},
        {"url": b, "metadata": {"v": "b"}, "embedding": other},
    ]


# filters


def search(app: App, body: dict) -> httpx.Response:
    return app.client.post("/models/phash/search", json=body)


@pytest.mark.parametrize(
    "bad",
    [
        {'we"ird': "v"},
        {"back\\slash": 1},
        {"a][b": 1},
        {"line\nbreak": 1},
        {"n": 2**63},
        {"n": -(2**63)},
        {"n": 10**30},
    ],
)
def test_filters_the_store_cannot_match_are_refused_with_422(make_app, bad: dict) -> None:
    app = make_app("phash")
    url = f"http://{IMAGE_HOST}/{uuid.uuid4().hex[:6]}/a.jpg"
    restore(app.client, "phash", bits_rows([url], seed=7, metadata=lambda i: {"n": 3, "ok [x]": True}))
    refused = search(app, {"url": url, "filter": bad})
    assert refused.status_code == 422, refused.text
    message = refused.json()["detail"][0]["msg"]
    assert "filter" in message and ("keys may not hold" in message or "integers must lie between" in message)

    files = {"file": ("q.jpg", b"not read: the filter is refused first", "image/jpeg")}
    upload = app.client.post("/models/phash/search/upload", files=files, data={"filter": json.dumps(bad)})
    assert upload.status_code == 422 and upload.json()["detail"][0]["type"] == "bad_filter", upload.text

    # A job that skips the API's validation (another client of the broker) gets the same refusal.
    wire = {"v": PROTOCOL_VERSION, "op": "search", "model": "phash", "args": {"url": url, "filter": bad}}
    job = Job.from_wire({**wire, "deadline": 2e9})
    answer = app.client.portal.call(app.transport.runner.run, job)
    assert answer["ok"] is False and answer["error"]["status"] == 422 and answer["error"]["type"] == "bad_filter"

    # Filters at the edges still work.
    fine = search(app, {"url": url, "filter": {"n": 3, "ok [x]": True}})
    assert fine.status_code == 200 and [hit["url"] for hit in fine.json()] == [url]
    assert search(app, {"url": url, "filter": {"n": 2**63 - 1}}).json() == []
    assert search(app, {"url": url, "filter": {"n": -(2**63 - 1)}}).json() == []


def test_expressions_milvus_refuses_are_422_and_an_absent_milvus_503(make_app, monkeypatch) -> None:
    app = make_app("phash")
    url = f"http://{IMAGE_HOST}/{uuid.uuid4().hex[:6]}/a.jpg"
    restore(app.client, "phash", bits_rows([url], seed=8))
    store = app.store
    for bad in ("metadata[", 'metadata["n"] == 18446744073709551616', 'metadata["a][b"] == 1'):
        with pytest.raises(Invalid) as caught:
            store.search(PHASH, bytes(8), limit=1, filter=bad)
        assert caught.value.status == 422 and "cannot parse expression" in caught.value.msg

    # Through a job: a filter that passes the expression builder but not Milvus is still a 422.
    with monkeypatch.context() as patched:
        patched.setattr(expr, "metadata_filter", lambda equalities: "metadata[")
        job = Job.of(SearchArgs(url=url, filter={"k": 1}), "phash", 60)
        answer = app.client.portal.call(app.transport.runner.run, job)
    assert answer["ok"] is False and answer["error"]["status"] == 422, answer

    # Milvus's codes: bad input (2.4 on, and 2.3's expression message) against a server not answering.
    assert is_input_error(MilvusException(code=1100, message="invalid parameter"))
    assert is_input_error(MilvusException(code=65535, message="cannot parse expression: x, error: y"))
    assert is_input_error(MilvusException(code=65535, message="refused", is_input_error=True))
    assert not is_input_error(MilvusException(code=2, message="Fail connecting to server on 127.0.0.1:19530"))
    assert not is_input_error(MilvusException(code=65535, message="find no available rootcoord"))

    # A Milvus that stopped answering: the job answers 503, to be retried.
    def down(*args: Any, **kwargs: Any) -> Any:
        raise MilvusException(code=2, message="Fail connecting to server on 127.0.0.1:19530")

    monkeypatch.setattr(store.client, "search", down)
    job = Job.of(SearchArgs(url=url), "phash", 60)
    answer = app.client.portal.call(app.transport.runner.run, job)
    assert answer["ok"] is False and answer["error"]["status"] == 503 and answer["error"]["type"] == "store_unavailable"


def test_rows_milvus_refuses_are_422_not_a_503_to_retry(make_app, monkeypatch) -> None:
    """Milvus 2.6 refuses a batch it finds invalid (ParameterInvalid, 1100); a 503 would have the
    client send it again and again. A Milvus that does not answer is still a 503."""
    app = make_app("phash")
    rows = bits_rows([f"http://{IMAGE_HOST}/{uuid.uuid4().hex[:6]}/a.jpg"], seed=9)
    connection = app.store.client._get_connection()
    for code, message, status in ((1100, "invalid parameter[expected=unique]", 422), (2, "server unavailable", 503)):

        def refuse(*args: Any, code: int = code, message: str = message, **kwargs: Any) -> Any:
            raise MilvusException(code=code, message=message)

        monkeypatch.setattr(connection, "upsert", refuse)
        response = app.client.post("/models/phash/restore", content=orjson.dumps(rows), headers=JSON)
        assert response.status_code == status, response.text
        assert message in response.json()["detail"][0]["msg"]
    monkeypatch.undo()
    assert app.client.get("/models/phash/count").json() == 0
