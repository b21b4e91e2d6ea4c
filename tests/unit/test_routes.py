"""The HTTP routes over a fake transport: which job each request becomes, and what the API answers
before any job is sent (unknown model, invalid body, no worker) or from a job's answers (bulk adds,
the streamed dump)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from idios.api.app import create_app
from idios.config import Settings
from idios.errors import Conflict, Invalid, Unavailable
from idios.protocol import (
    AddArgs,
    CompareArgs,
    CountArgs,
    DumpArgs,
    DuplicatesArgs,
    Job,
    PingArgs,
    RemoveArgs,
    RestoreArgs,
    SearchArgs,
    UrlsArgs,
)
from idios.specs import PHASH, VIT_B32

from tests.unit.fakes import FakeTransport

SETTINGS = Settings(request_timeout=7, bulk_timeout=70, max_bulk_items=20, max_restore_rows=3)
URL = "http://images.example/a.jpg"


def call(
    transport: FakeTransport, method: str, path: str, settings: Settings = SETTINGS, **kwargs: Any
) -> httpx.Response:
    async def go() -> httpx.Response:
        app = create_app(settings, transport)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://127.0.0.1") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


ROUTES = [
    ("POST", "/models/phash/add", {"url": URL, "metadata": {"k": 1}}, AddArgs(url=URL, metadata={"k": 1}), 7, True),
    ("POST", "/models/phash/search_add", {"url": URL}, AddArgs(url=URL, mode="new"), 7, True),
    ("POST", "/models/vit_b32/search", {"text": "a cat", "limit": 3}, SearchArgs(text="a cat", limit=3), 7, False),
    (
        "POST",
        "/models/phash/search",
        {"url": URL, "offset": 5, "min_similarity": 50, "filter": {"tag": "x"}},
        SearchArgs(url=URL, offset=5, min_similarity=50, filter={"tag": "x"}),
        7,
        False,
    ),
    (
        "POST",
        "/models/phash/compare",
        {"url": URL, "other": URL + "?2"},
        CompareArgs(url=URL, other=URL + "?2"),
        7,
        False,
    ),
    ("POST", "/models/phash/urls", {"cursor": URL, "limit": 5}, UrlsArgs(cursor=URL, limit=5), 7, False),
    ("POST", "/models/phash/dump", {"limit": 5}, DumpArgs(limit=5), 70, False),
    (
        "POST",
        "/models/phash/duplicates",
        {"limit": 5},
        DuplicatesArgs(limit=5, min_similarity=PHASH.copy_similarity),
        70,
        True,
    ),
    (
        "POST",
        "/models/copydetect/duplicates",
        {"cursor": URL, "min_similarity": 60, "max_group": 3},
        DuplicatesArgs(cursor=URL, min_similarity=60, max_group=3),
        70,
        True,
    ),
    ("GET", "/models/phash/count", None, CountArgs(), 7, False),
    ("POST", "/models/phash/remove", {"url": URL}, RemoveArgs(url=URL), 7, False),
]


@pytest.mark.parametrize(("method", "path", "body", "args", "timeout", "admit"), ROUTES, ids=[r[1] for r in ROUTES])
def test_each_route_sends_its_typed_job(
    method: str, path: str, body: Any, args: Any, timeout: float, admit: bool
) -> None:
    answers = {
        "search": [],
        "urls": [],
        "dump": [],
        "compare": {"similarity": 0.0, "match": None, "flipped": False},
        "duplicates": {"groups": [], "cursor": None, "examined": 0},
    }
    transport = FakeTransport(lambda job: answers.get(job.op, 0))
    response = call(transport, method, path, json=body)
    assert response.status_code in (200, 204), response.text
    (job,) = transport.jobs
    model = path.split("/")[2]
    assert (job.args, job.model, job.timeout) == (args, model, timeout)
    assert transport.readiness == [(model, admit)], "ingestion is admitted against the queue, reads are not"


def test_the_upload_becomes_a_search_by_image() -> None:
    transport = FakeTransport(lambda job: [])
    files = {"file": ("q.png", b"\x89PNG fake bytes", "image/png")}
    response = call(transport, "POST", "/models/phash/search/upload", files=files, data={"limit": "4"})
    assert response.status_code == 200, response.text
    assert transport.jobs[0].args == SearchArgs(image=base64.b64encode(b"\x89PNG fake bytes").decode(), limit=4)


def test_ping_with_rpc_goes_through_a_worker() -> None:
    transport = FakeTransport(lambda job: "pong")
    assert call(transport, "GET", "/ping").json() == "pong" and transport.jobs == []
    assert call(transport, "GET", "/ping", params={"rpc": "true"}).json() == "pong"
    assert transport.jobs[0].args == PingArgs() and transport.jobs[0].model is None


@pytest.mark.parametrize(("method", "path", "body"), [(r[0], r[1], r[2]) for r in ROUTES])
def test_an_unknown_model_is_404_before_any_job(method: str, path: str, body: Any) -> None:
    transport = FakeTransport()
    response = call(transport, method, path.replace(path.split("/")[2], "nope"), json=body)
    assert response.status_code == 404
    assert response.json()["detail"][0]["type"] == "unknown_model"
    assert "known models: vit_b32" in response.json()["detail"][0]["msg"]
    assert transport.jobs == [] and transport.readiness == []


def test_an_invalid_body_is_422_before_any_job() -> None:
    transport = FakeTransport()
    for body in ({"url": "ftp://images.example/a.jpg"}, {"url": URL, "metadata": [1]}, {"uri": URL}):
        response = call(transport, "POST", "/models/phash/add", json=body)
        assert response.status_code == 422, body
    response = call(transport, "POST", "/models/phash/search", json={"text": "a cat"})
    assert response.status_code == 422 and response.json()["detail"][0]["type"] == "no_text_tower"
    assert transport.jobs == []


def test_no_worker_is_503_with_retry_after() -> None:
    transport = FakeTransport()
    transport.refuse = Unavailable("no worker is connected that serves model phash", type="no_worker")
    response = call(transport, "GET", "/models/phash/count")
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    (error,) = response.json()["detail"]
    assert error == {"msg": "no worker is connected that serves model phash", "type": "no_worker"}
    assert transport.jobs == []


def test_a_job_error_reaches_the_client_with_its_status() -> None:
    transport = FakeTransport(lambda job: Conflict(f"already stored: {URL}", type="already_stored"))
    response = call(transport, "POST", "/models/phash/search_add", json={"url": URL})
    assert response.status_code == 409
    assert response.json()["detail"] == [{"msg": f"already stored: {URL}", "type": "already_stored"}]


def test_models_lists_every_spec_with_its_status() -> None:
    transport = FakeTransport()
    transport.status = {"phash": {"status": "ready", "reason": ""}}
    listed = {model["name"]: model for model in call(transport, "GET", "/models").json()}
    assert list(listed) == ["vit_b32", "vit_l14", "resnet50", "phash", "copydetect"]
    assert listed["phash"] == {
        "name": "phash",
        "dimension": 64,
        "metric": "HAMMING",
        "text": False,
        "description": PHASH.description,
        "status": "ready",
        "reason": "",
    }
    assert listed["vit_b32"]["status"] == "unavailable" and listed["vit_b32"]["text"] is True


def test_add_bulk_reports_each_item() -> None:
    stored = {"http://images.example/old.jpg"}

    def answer(job: Job) -> Any:
        if job.args.url in stored:
            return Conflict("already stored", type="already_stored")
        if "broken" in job.args.url:
            return Invalid("not an image", type="not_an_image")
        return "added"

    transport = FakeTransport(answer)
    body = [
        {"url": URL},
        {"url": "http://images.example/old.jpg"},
        {"url": "http://images.example/broken.jpg"},
        {"url": "javascript:alert(1)"},
        "not an object",
    ]
    result = call(transport, "POST", "/models/phash/add_bulk", json=body).json()
    assert result["added"] == [URL] and result["found"] == ["http://images.example/old.jpg"]
    failures = {failure["url"]: failure["error"] for failure in result["failed"]}
    assert failures["http://images.example/broken.jpg"] == "not an image"
    assert "javascript:alert(1)" in failures and "not an object" in failures
    assert {job.args.mode for job in transport.jobs} == {"new"} and {job.timeout for job in transport.jobs} == {70}


def test_add_bulk_refuses_too_many_items_whole() -> None:
    transport = FakeTransport(lambda job: "added")
    response = call(transport, "POST", "/models/phash/add_bulk", json=[{"url": f"{URL}?{i}"} for i in range(21)])
    assert response.status_code == 413 and transport.jobs == []


def test_add_bulk_items_finding_the_queue_full_fail_on_their_own() -> None:
    transport = FakeTransport(lambda job: "added")
    admitted = iter([None, None, Unavailable("9 images are waiting", type="queue_full")])

    async def ready(model: str | None, *, admit: bool = False) -> None:
        verdict = next(admitted, None) if admit else None
        if verdict is not None:
            raise verdict

    transport.ready = ready  # type: ignore[method-assign]
    result = call(transport, "POST", "/models/phash/add_bulk", json=[{"url": URL}, {"url": URL + "?2"}]).json()
    assert len(result["added"]) == 1
    (failure,) = result["failed"]
    assert failure["error"] == "queue full, retry (9 images are waiting)"


def test_restore_normalises_rows_into_one_job() -> None:
    transport = FakeTransport()
    rows = [{"url": f"{URL}?{i}", "embedding": [3.0, 4.0] + [0.0] * 510, "metadata": {"i": i}} for i in range(2)]
    assert call(transport, "POST", "/models/vit_b32/restore", json=rows).status_code == 204
    (job,) = transport.jobs
    assert isinstance(job.args, RestoreArgs) and job.timeout == 70
    assert job.args.urls == [f"{URL}?0", f"{URL}?1"] and job.args.metadata == [{"i": 0}, {"i": 1}]
    assert job.args.vectors.shape == (2, VIT_B32.dim)
    assert np.allclose(job.args.vectors[:, :2], [[0.6, 0.8], [0.6, 0.8]]), "scaled to unit length"


@pytest.mark.parametrize(
    ("rows", "status", "says"),
    [
        ([{"url": URL, "embedding": [1.0] * 511}], 422, "row 0: embedding has 511 values, model vit_b32 needs 512"),
        ([{"url": f"{URL}?{i}", "embedding": [1.0] * 512} for i in range(4)], 413, "at most 3 rows"),
        ([{"url": URL, "embedding": [0.0] * 512}], 422, "all zeros"),
    ],
)
def test_a_bad_restore_stores_nothing(rows: list[dict[str, Any]], status: int, says: str) -> None:
    transport = FakeTransport()
    response = call(transport, "POST", "/models/vit_b32/restore", json=rows)
    assert response.status_code == status and says in response.text
    assert transport.jobs == []


def dump_worker(urls: list[str], short: Callable[[DumpArgs], bool] = lambda args: False) -> Callable[[Job], Any]:
    """Answers `urls` and `dump` jobs from `urls` as a worker does; a range job for which `short` is
    true answers only its first row, as one whose rows would not fit one message."""
    stored = sorted(urls)

    def answer(job: Job) -> Any:
        args = job.args
        after = [url for url in stored if args.cursor is None or url > args.cursor]
        if isinstance(args, UrlsArgs):
            return after[: args.limit]
        assert isinstance(args, DumpArgs) and args.last is not None, "the streamed dump asks for ranges"
        rows = [url for url in after if url <= args.last]
        if short(args):
            rows = rows[:1]
        lines = (orjson.dumps({"url": url, "metadata": {}, "embedding": [0] * 64}) + b"\n" for url in rows)
        return b"".join(lines).decode()

    return answer


def test_the_streamed_dump_has_every_row_once_in_order() -> None:
    urls = [f"http://images.example/{i:03}.jpg" for i in range(23)]
    stops_short = lambda args: args.cursor is None or args.cursor.endswith("5.jpg")  # noqa: E731
    transport = FakeTransport(dump_worker(urls, short=stops_short))
    response = call(transport, "GET", "/models/phash/dump.jsonl", params={"page": 4})
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
    dumped = [orjson.loads(line)["url"] for line in response.text.splitlines()]
    assert dumped == urls, "ranges that stopped short were continued, none repeated"


def test_the_streamed_dump_resumes_after_a_url() -> None:
    urls = [f"http://images.example/{i:03}.jpg" for i in range(10)]
    response = call(FakeTransport(dump_worker(urls)), "GET", "/models/phash/dump.jsonl", params={"after": urls[6]})
    assert [orjson.loads(line)["url"] for line in response.text.splitlines()] == urls[7:]


def test_concurrent_search_adds_of_one_url_go_one_at_a_time() -> None:
    running, overlaps = set(), []

    async def answer(job: Job) -> Any:
        if job.args.url in running:
            overlaps.append(job.args.url)
        running.add(job.args.url)
        await asyncio.sleep(0.05)
        running.discard(job.args.url)
        return "added"

    transport = FakeTransport(answer)

    async def go() -> list[int]:
        app = create_app(SETTINGS, transport)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://127.0.0.1") as client:
            calls = [client.post("/models/phash/search_add", json={"url": u}) for u in [URL, URL, URL, URL + "?2"]]
            return [response.status_code for response in await asyncio.gather(*calls)]

    assert asyncio.run(go()) == [204] * 4
    assert overlaps == [] and len(transport.jobs) == 4
