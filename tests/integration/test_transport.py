"""The API's side of the broker: `AmqpTransport` against RabbitMQ, with a real worker (phash, real
Milvus) in the test's loop. Jobs cross the broker and come back as they do in process, readiness
follows the workers, and the message limit is kept both ways."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest
import pytest_asyncio

from idios.config import Settings
from idios.errors import IdiosError, Timeout, TooLarge, Unavailable
from idios.jobs import JobRunner
from idios.protocol import (
    AddArgs,
    CompareArgs,
    CountArgs,
    DumpArgs,
    Job,
    JobArgs,
    RemoveArgs,
    RestoreArgs,
    SearchArgs,
    UrlsArgs,
)
from idios.transport import Transport
from idios.transport.amqp import AmqpTransport
from idios.transport.local import LocalTransport
from idios.transport.queues import queue_name

from tests.support.imageserver import ImageServer
from tests.support.inworker import (
    drop_collections,
    drop_queues,
    queue_state,
    running_worker,
    store_for,
    wait_for,
    wire_settings,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Above the 1 MiB the settings allow at least, far below the broker's own limit.
SMALL_LIMIT = 1_200_000


async def connected(settings: Settings) -> AmqpTransport:
    transport = AmqpTransport(settings)
    await transport.start()
    await asyncio.wait_for(transport._connected.wait(), 30)
    return transport


async def outcome(transport: Transport, args: JobArgs, model: str | None = "phash", timeout: float = 20) -> Any:
    """The job's value, or the error it failed with as (status, type, message)."""
    try:
        return await transport.call(Job.of(args, model, timeout))
    except IdiosError as exc:
        return (exc.status, exc.type, exc.msg)


def rows(count: int, metadata: Callable[[int], dict[str, Any]]) -> RestoreArgs:
    """`count` phash rows (64-bit hashes, packed) with urls of their own, as a restore sends them."""
    vectors = np.random.default_rng(count).integers(0, 256, size=(count, 8), dtype=np.uint8)
    urls = [f"http://restored.example/{i:04}.jpg" for i in range(count)]
    return RestoreArgs(urls=urls, metadata=[metadata(i) for i in range(count)], vectors=vectors)


@dataclass
class Pair:
    """One deployment through the broker, one in process, each with its own collections."""

    wire: AmqpTransport
    local: LocalTransport


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pair(milvus_uri: str, images: ImageServer) -> AsyncIterator[Pair]:
    settings, local_settings = wire_settings(), wire_settings()
    store, local_store = store_for(settings, milvus_uri), store_for(local_settings, milvus_uri)
    local = LocalTransport(JobRunner(local_settings, local_store))
    await local.start()
    assert await local._loading == ["phash"]
    try:
        async with running_worker(settings, store):
            wire = await connected(settings)
            try:
                yield Pair(wire, local)
            finally:
                await wire.close()
    finally:
        await local.close()
        await drop_queues(settings.amqp_url, settings.queue_prefix)
        for each in (store, local_store):
            drop_collections(each)
            each.close()


async def test_jobs_answer_through_the_broker_as_they_do_in_process(pair: Pair, images: ImageServer) -> None:
    """Count, adds, searches, compares, listings and removals: the same values, and the same errors
    (status, type, message), through RabbitMQ and a worker as in process."""
    photos = ["coffee", "chelsea", "rocket"]
    jobs: list[JobArgs] = [
        CountArgs(),
        *(AddArgs(url=images.url(f"/{name}.jpg"), metadata={"name": name}) for name in photos),
        AddArgs(url=images.url("/coffee.jpg"), mode="new"),
        AddArgs(url=images.url("/missing.jpg")),
        AddArgs(url=images.url("/page.html")),
        CountArgs(),
        SearchArgs(url=images.url("/coffee_small.jpg"), limit=2),
        SearchArgs(url=images.url("/chelsea.jpg"), filter={"name": "rocket"}),
        SearchArgs(text="a cup of coffee"),
        CompareArgs(url=images.url("/rocket.jpg"), other=images.url("/rocket_q30.jpg")),
        UrlsArgs(limit=10),
        RemoveArgs(url=images.url("/rocket.jpg")),
        CountArgs(),
    ]
    through_broker = [await outcome(pair.wire, args) for args in jobs]
    in_process = [await outcome(pair.local, args) for args in jobs]
    assert through_broker == in_process
    # and they are the answers a user expects, not the same failure twice
    count, *added, new, missing, page, count_after, search, filtered, text, compare, urls, removed, count_last = (
        through_broker
    )
    assert (count, added, count_after, removed, count_last) == (0, ["added"] * 3, 3, None, 2)
    assert new[:2] == (409, "already_stored")
    assert missing[0] == 422 and page[0] == 422, (missing, page)
    assert len(search) == 2 and search[0]["url"] == images.url("/coffee.jpg"), search
    assert search[0]["metadata"] == {"name": "coffee"} and search[0]["similarity"] > 0.9, search
    assert [hit["metadata"] for hit in filtered] == [{"name": "rocket"}], filtered
    assert text[:2] == (422, "no_text_tower")
    assert compare["similarity"] > 0.9 and compare["match"] is None and compare["flipped"] is False
    assert sorted(urls) == sorted(images.url(f"/{name}.jpg") for name in photos)


async def test_a_restore_and_its_dump_cross_the_broker_intact(pair: Pair) -> None:
    """The restore's vectors travel packed (`idios.wire`) and the dump's page comes back as raw JSON:
    the rows read back are the rows written, as in process."""
    restore = rows(40, lambda i: {"i": i, "tag": "restored"})
    assert await pair.wire.call(Job.of(restore, "phash", 20)) == 40
    assert await pair.local.call(Job.of(restore, "phash", 20)) == 40
    cursor = "http://restored.example/"  # after every url of the other test, before these
    pages = [
        await transport.call(Job.of(DumpArgs(cursor=cursor), "phash", 20)) for transport in (pair.wire, pair.local)
    ]
    through_broker, in_process = (orjson.loads(orjson.dumps(page)) for page in pages)
    assert through_broker == in_process
    dumped = [row for row in through_broker if row["url"].startswith(cursor)]
    assert [row["url"] for row in dumped] == restore.urls
    assert [row["metadata"] for row in dumped] == restore.metadata


async def test_ready_follows_the_workers_that_consume_a_model(milvus_uri: str, images: ImageServer) -> None:
    """503 no_worker while nobody consumes phash's queues, ready once a worker does, 503 again when it
    stops; the models listing says the same."""
    settings = wire_settings()
    store = store_for(settings, milvus_uri)
    transport = await connected(settings)

    async def ready() -> bool:
        try:
            await transport.ready("phash")
        except Unavailable:
            return False
        return True

    async def refusing() -> bool:
        return not await ready()

    try:
        with pytest.raises(Unavailable) as refused:
            await transport.ready("phash")
        assert (refused.value.status, refused.value.type) == (503, "no_worker")
        assert "model phash" in refused.value.msg
        assert (await transport.model_status())["phash"]["status"] == "unavailable"
        async with running_worker(settings, store):
            await wait_for(ready, "the transport to see the worker", 10)
            status = await transport.model_status()
            assert status["phash"] == {"status": "ready", "reason": ""}
            assert status["vit_b32"]["status"] == "unavailable", status
        await wait_for(refusing, "the transport to see the worker gone", 10)
        assert (await transport.model_status())["phash"]["status"] == "unavailable"
    finally:
        await transport.close()
        await drop_queues(settings.amqp_url, settings.queue_prefix)
        drop_collections(store)
        store.close()


async def test_a_job_over_the_message_limit_is_never_published(milvus_uri: str) -> None:
    """413 before publishing, with nothing left on the queue, and the channel still publishes: a job
    that fits waits there for a worker (none here) until its deadline, then 504."""
    settings = wire_settings(max_message_bytes=SMALL_LIMIT)
    transport = await connected(settings)
    ingest = queue_name(settings.queue_prefix, "phash", "ingest")
    try:
        big = rows(30, lambda i: {"note": "x" * 50_000})
        with pytest.raises(TooLarge) as refused:
            await transport.call(Job.of(big, "phash", 20))
        assert (refused.value.status, refused.value.type) == (413, "job_too_large")
        assert f"limit of {SMALL_LIMIT} bytes" in refused.value.msg and "fewer rows" in refused.value.msg
        channel = transport._channel
        assert channel is not None and not channel.is_closed
        assert (await queue_state(channel, ingest)) == (0, 0)

        waiting = asyncio.create_task(transport.call(Job.of(rows(2, lambda i: {}), "phash", 5)))

        async def queued() -> bool:
            return (await queue_state(channel, ingest))[1] == 1

        await wait_for(queued, "the small restore to wait on the queue", 5)
        with pytest.raises(Timeout) as late:
            await waiting
        assert (late.value.status, late.value.type) == (504, "worker_timeout")
    finally:
        await transport.close()
        await drop_queues(settings.amqp_url, settings.queue_prefix)


async def test_an_answer_over_the_message_limit_becomes_a_413(milvus_uri: str) -> None:
    """A search whose hits carry more metadata than one message holds answers 413 (the broker would
    refuse the reply, and the job would come back again and again); a smaller page of it answers."""
    settings = wire_settings(max_message_bytes=SMALL_LIMIT)
    store = store_for(settings, milvus_uri)
    restore = rows(40, lambda i: {"i": i, "note": "x" * 40_000})
    try:
        async with running_worker(settings, store):
            transport = await connected(settings)
            try:
                for start in (0, 20):  # each half fits in a job
                    half = RestoreArgs(
                        urls=restore.urls[start : start + 20],
                        metadata=restore.metadata[start : start + 20],
                        vectors=restore.vectors[start : start + 20],
                    )
                    assert await transport.call(Job.of(half, "phash", 20)) == 20
                query = restore.urls[0]
                with pytest.raises(IdiosError) as refused:  # a worker's error comes back as its status and type
                    await transport.call(Job.of(SearchArgs(url=query, limit=40), "phash", 20))
                assert (refused.value.status, refused.value.type) == (413, "answer_too_large")
                assert f"limit of {SMALL_LIMIT} bytes" in refused.value.msg
                hits = await transport.call(Job.of(SearchArgs(url=query, limit=10), "phash", 20))
                assert len(hits) == 10 and hits[0]["url"] == query
                assert await transport.call(Job.of(CountArgs(), "phash", 20)) == 40
            finally:
                await transport.close()
    finally:
        await drop_queues(settings.amqp_url, settings.queue_prefix)
        drop_collections(store)
        store.close()
