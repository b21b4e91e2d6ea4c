"""The job handlers (`idios.jobs.JobRunner`) with the real phash model and decoders, over an
in-memory store and a fetcher that serves generated images: what each operation answers, and how
a batch of adds fails one item at a time."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from PIL import Image

from idios.config import Settings
from idios.errors import Unavailable
from idios.jobs import JobRunner
from idios.protocol import (
    OPERATIONS,
    AddArgs,
    CompareArgs,
    CountArgs,
    DumpArgs,
    Job,
    PingArgs,
    RemoveArgs,
    RestoreArgs,
    SearchArgs,
    StatusArgs,
    UrlsArgs,
)
from idios.specs import PHASH

from tests.unit.fakes import FakeFetcher, MemoryStore


def png(seed: int, size: int = 256) -> bytes:
    """A distinct picture per seed: blocks of random grey levels (phash tells them apart)."""
    blocks = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
    image = Image.fromarray(np.kron(blocks, np.ones((size // 8, size // 8), np.uint8))).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


URLS = [f"http://images.example/{i}.png" for i in range(6)]


@pytest.fixture
def parts() -> Iterator[tuple[JobRunner, MemoryStore, FakeFetcher]]:
    settings = Settings(models=["phash"], weights="random", batch_linger_ms=20)
    store = MemoryStore()
    fetcher = FakeFetcher({url: png(i) for i, url in enumerate(URLS)})
    runner = JobRunner(settings, store, fetcher=fetcher)  # type: ignore[arg-type]
    assert runner.load_models() == ["phash"]
    yield runner, store, fetcher
    asyncio.run(runner.aclose())


def job(args: Any, model: str | None = "phash", timeout: float = 30) -> Job[Any]:
    return Job.of(args, model if args.needs_model else None, timeout)


def run(runner: JobRunner, *jobs: Job[Any]) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(runner.run(j) for j in jobs)))

    return asyncio.run(go())


def test_every_operation_has_a_handler(parts: tuple[JobRunner, MemoryStore, FakeFetcher]) -> None:
    runner, _, _ = parts
    assert set(runner.handlers) == set(OPERATIONS)


def test_ping_and_status_need_no_model(parts: tuple[JobRunner, MemoryStore, FakeFetcher]) -> None:
    runner, _, _ = parts
    pong, status = run(runner, job(PingArgs()), job(StatusArgs()))
    assert pong == {"ok": True, "value": "pong"}
    assert status["value"]["phash"] == {"status": "ready", "reason": ""}


def test_added_images_are_found_by_url_and_by_upload(parts: tuple[JobRunner, MemoryStore, FakeFetcher]) -> None:
    runner, store, fetcher = parts
    replies = run(runner, *(job(AddArgs(url=url, metadata={"n": i})) for i, url in enumerate(URLS[:4])))
    assert [reply["value"] for reply in replies] == ["added"] * 4
    assert store.rows["phash"][URLS[2]][1] == {"n": 2}

    upload = base64.b64encode(png(1)).decode()
    by_url, by_upload, count = run(
        runner, job(SearchArgs(url=URLS[2], limit=2)), job(SearchArgs(image=upload, limit=1)), job(CountArgs())
    )
    assert by_url["value"][0] == {"url": URLS[2], "metadata": {"n": 2}, "similarity": 100.0, "flipped": False}
    assert by_url["value"][1]["similarity"] < 90
    assert by_upload["value"][0]["url"] == URLS[1]
    assert count["value"] == 4
    assert fetcher.fetched.count(URLS[2]) == 1, "a stored url is searched by its stored vector, not downloaded again"


def test_a_failed_download_fails_only_its_own_add(parts: tuple[JobRunner, MemoryStore, FakeFetcher]) -> None:
    runner, store, _ = parts
    missing = "http://images.example/missing.png"
    replies = run(runner, job(AddArgs(url=URLS[0])), job(AddArgs(url=missing)), job(AddArgs(url=URLS[1])))
    assert replies[0] == replies[2] == {"ok": True, "value": "added"}
    assert replies[1]["ok"] is False and replies[1]["error"]["status"] == 422
    assert set(store.rows["phash"]) == {URLS[0], URLS[1]}


def test_not_an_image_is_refused_with_its_reason(parts: tuple[JobRunner, MemoryStore, FakeFetcher]) -> None:
    runner, store, fetcher = parts
    fetcher.images["http://images.example/text"] = b"<html>not an image</html>"
    (reply,) = run(runner, job(AddArgs(url="http://images.example/text")))
    assert reply["ok"] is False and reply["error"]["status"] == 422, reply
    assert store.rows["phash"] == {}


def test_new_adds_of_one_url_answer_added_once(parts: tuple[JobRunner, MemoryStore, FakeFetcher]) -> None:
    runner, store, _ = parts
    replies = run(runner, *(job(AddArgs(url=URLS[0], mode="new")) for _ in range(4)))
    statuses = sorted(str(reply["value"] if reply["ok"] else reply["error"]["status"]) for reply in replies)
    assert statuses == ["409", "409", "409", "added"]
    assert len(store.rows["phash"]) == 1


def test_a_redelivered_add_recognises_its_own_write(parts: tuple[JobRunner, MemoryStore, FakeFetcher]) -> None:
    runner, store, _ = parts
    store.ensure_collection(PHASH)
    store.rows["phash"][URLS[0]] = (b"\0" * 8, {"tag": "mine"})
    mine = job(AddArgs(url=URLS[0], metadata={"tag": "mine"}, mode="new")).again()
    other = job(AddArgs(url=URLS[0], metadata={"tag": "other"}, mode="new")).again()
    first = job(AddArgs(url=URLS[0], metadata={"tag": "mine"}, mode="new"))
    replies = run(runner, mine)
    assert replies[0] == {"ok": True, "value": "added"}
    replies = run(runner, other)
    assert replies[0]["error"]["status"] == 409, "another job's entry is not this job's write"
    assert run(runner, first)[0]["error"]["status"] == 409, "a first delivery finding the url stored is refused"


def test_a_store_failure_fails_the_whole_batch_with_503(parts: tuple[JobRunner, MemoryStore, FakeFetcher]) -> None:
    runner, store, _ = parts
    store.fail = Unavailable("the vector store failed: connection refused", type="store_unavailable")
    replies = run(runner, job(AddArgs(url=URLS[0])), job(AddArgs(url=URLS[1])), job(CountArgs()))
    assert [reply["error"]["status"] for reply in replies] == [503, 503, 503]
    assert {reply["error"]["type"] for reply in replies} == {"store_unavailable"}


def test_an_expired_job_is_dropped_unrun(parts: tuple[JobRunner, MemoryStore, FakeFetcher]) -> None:
    runner, store, fetcher = parts
    stale = job(AddArgs(url=URLS[0]), timeout=-1)
    (reply,) = run(runner, stale)
    assert reply["error"]["status"] == 504 and reply["error"]["type"] == "deadline"
    assert runner.expired == 1 and fetcher.fetched == [] and store.rows["phash"] == {}


def test_unknown_and_unloaded_models(parts: tuple[JobRunner, MemoryStore, FakeFetcher]) -> None:
    runner, _, _ = parts
    unknown, unloaded = run(runner, job(CountArgs(), model="nope"), job(CountArgs(), model="vit_b32"))
    assert unknown["error"]["status"] == 404 and unknown["error"]["type"] == "unknown_model"
    assert unloaded["error"]["status"] == 503 and unloaded["error"]["type"] == "model_unavailable"


def test_a_handler_bug_answers_500_and_the_runner_goes_on(
    parts: tuple[JobRunner, MemoryStore, FakeFetcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, store, _ = parts

    def broken(spec: Any) -> int:
        raise KeyError("a bug")

    monkeypatch.setattr(store, "count", broken)
    bug, pong = run(runner, job(CountArgs()), job(PingArgs()))
    assert bug["error"] == {"status": 500, "type": "internal", "msg": "internal error (KeyError)"}
    assert pong["value"] == "pong"


def test_search_options_reach_the_store(parts: tuple[JobRunner, MemoryStore, FakeFetcher]) -> None:
    runner, store, _ = parts
    run(runner, *(job(AddArgs(url=url, metadata={"tag": "a" if i % 2 else "b"})) for i, url in enumerate(URLS)))
    (close,) = run(runner, job(SearchArgs(url=URLS[0], min_similarity=99.0, filter={"tag": "b"}, limit=5)))
    assert [hit["url"] for hit in close["value"]] == [URLS[0]], "min_similarity drops the hits below it"
    assert store.filters == ['metadata["tag"] == "b"']


def test_search_needs_exactly_one_query(parts: tuple[JobRunner, MemoryStore, FakeFetcher]) -> None:
    runner, _, _ = parts
    none, two, text = run(
        runner, job(SearchArgs()), job(SearchArgs(url=URLS[0], image="AAAA")), job(SearchArgs(text="a cat"))
    )
    assert none["error"]["type"] == two["error"]["type"] == "missing_query"
    assert text["error"]["type"] == "no_text_tower"


def test_compare_takes_urls_or_uploads(parts: tuple[JobRunner, MemoryStore, FakeFetcher]) -> None:
    runner, _, _ = parts
    upload = base64.b64encode(png(0)).decode()
    same, differ, bad, both = run(
        runner,
        job(CompareArgs(url=URLS[0], other_image=upload)),
        job(CompareArgs(url=URLS[0], other=URLS[1])),
        job(CompareArgs(url=URLS[0], other_image="not base64!")),
        job(CompareArgs(url=URLS[0], image=upload, other=URLS[1])),
    )
    assert same["value"] == {"similarity": 100.0, "match": None, "flipped": False}
    assert differ["value"]["similarity"] < 90
    assert bad["error"]["type"] == "bad_base64"
    assert both["error"]["type"] == "missing_query"


def test_restore_urls_dump_and_remove(parts: tuple[JobRunner, MemoryStore, FakeFetcher]) -> None:
    runner, store, _ = parts
    bits = np.random.default_rng(0).integers(0, 2, (5, 64))
    rows = RestoreArgs(
        urls=[f"http://r.example/{i}" for i in range(5)],
        metadata=[{"i": i} for i in range(5)],
        vectors=PHASH.from_public(bits),
    )
    (restored,) = run(runner, job(rows))
    assert restored["value"] == 5
    urls, page, ranged, removed, count = run(
        runner,
        job(UrlsArgs(cursor="http://r.example/1", limit=2)),
        job(DumpArgs(limit=2)),
        job(DumpArgs(cursor="http://r.example/0", last="http://r.example/2")),
        job(RemoveArgs(url="http://r.example/4")),
        job(CountArgs()),
    )
    assert urls["value"] == ["http://r.example/2", "http://r.example/3"]
    dumped = orjson.loads(orjson.dumps(page["value"]))  # the page comes already encoded, an orjson.Fragment
    assert [row["url"] for row in dumped] == ["http://r.example/0", "http://r.example/1"]
    assert dumped[1]["embedding"] == bits[1].tolist() and dumped[1]["metadata"] == {"i": 1}
    lines = [orjson.loads(line) for line in ranged["value"].splitlines()]
    assert [row["url"] for row in lines] == ["http://r.example/1", "http://r.example/2"]
    assert removed == {"ok": True, "value": None}
    assert count["value"] in (4, 5)  # the remove and the count ran at once
    assert "http://r.example/4" not in store.rows["phash"]


def test_a_restore_whose_columns_do_not_fit_is_a_bad_job(parts: tuple[JobRunner, MemoryStore, FakeFetcher]) -> None:
    runner, _, _ = parts
    rows = RestoreArgs(urls=["http://r.example/0", "http://r.example/1"], metadata=[{}], vectors=np.zeros((2, 8), "u1"))
    garbage = RestoreArgs(urls=["http://r.example/0"], metadata=[{}], vectors={"dtype": "<f8", "shape": [1]})
    short, unreadable = run(runner, job(rows), job(garbage))
    assert short["error"]["status"] == 422 and short["error"]["type"] == "bad_job"
    assert unreadable["error"]["status"] == 422 and unreadable["error"]["type"] == "bad_job"


def test_a_cancelled_job_leaves_the_in_progress_gauge_as_it_found_it() -> None:
    """A streamed dump cancels its range jobs when its client goes away: the gauge must come back down."""
    import asyncio

    from idios import metrics
    from idios.jobs import JobRunner
    from idios.protocol import CountArgs, Job

    class Stalled(JobRunner):
        def __init__(self) -> None:  # only what run() uses
            pass

        async def _run(self, job: Job) -> dict:
            await asyncio.sleep(60)
            return {"ok": True, "value": 0}

    gauge = metrics.JOBS_IN_PROGRESS.labels("phash", "light")
    cancelled = metrics.JOBS.labels("count", "cancelled")
    before, cancelled_before = gauge._value.get(), cancelled._value.get()

    async def main() -> None:
        runner = Stalled()
        tasks = [asyncio.create_task(runner.run(Job.of(CountArgs(), "phash", 30))) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert gauge._value.get() == before + 3
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
    assert gauge._value.get() == before
    assert cancelled._value.get() == cancelled_before + 3
