"""Ingestion admission and `new` adds, in process: add_bulk per item against IDIOS_MAX_QUEUED_JOBS,
search_add's one-winner guarantee, a redelivered add that finds its own write, and the message-size
guards of the broker transport (against RabbitMQ)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from idios.config import Settings
from idios.errors import TooLarge, Unavailable
from idios.jobs import JobRunner
from idios.protocol import AddArgs, CountArgs, Job, SearchArgs
from idios.transport.amqp import AmqpTransport

from tests.support.imageserver import ImageServer
from tests.support.inprocess import InProcess, in_process
from tests.support.inworker import drop_queues
from tests.support.photos import PHOTO_NAMES, jpeg
from tests.support.stacks import AMQP_URL, IMAGE_HOST

PHASH = "/models/phash"
# the in-process app (a fixture) and the tests share the session's event loop
pytestmark = pytest.mark.asyncio(loop_scope="session")


def _settings(**extra: Any) -> Settings:
    tag = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "models": ["phash"],
        "weights": "random",
        "collection_prefix": f"t{tag}_",
        "queue_prefix": f"test-{tag}",
        "url_allow_networks": [f"{IMAGE_HOST}/32"],
        "milvus_consistency": "Strong",
        **extra,
    }
    return Settings(_env_file=None, **values)


@pytest_asyncio.fixture
async def serve(milvus_uri: str, images: ImageServer) -> AsyncIterator[InProcess]:
    async with in_process(_settings(max_queued_jobs=3), milvus_uri) as app:
        yield app


async def _until_in_flight(runner: JobRunner, count: int, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while runner.adds_in_flight < count:
            await asyncio.sleep(0.01)


async def _peak(runner: JobRunner, done: asyncio.Event) -> int:
    peak = 0
    while not done.is_set():
        peak = max(peak, runner.adds_in_flight)
        await asyncio.sleep(0.005)
    return peak


async def test_add_bulk_keeps_its_own_jobs_under_max_queued_jobs(serve: InProcess, images: ImageServer) -> None:
    """With IDIOS_MAX_QUEUED_JOBS=3, a bulk of 8 slow downloads never has more than 3 adds waiting."""
    body = jpeg("coins")
    images.slow("/admission-slow.jpg", body, delay=0.05, chunk=len(body) // 10 + 1)  # about half a second
    items = [{"url": images.url(f"/admission-slow.jpg?alone={i}")} for i in range(8)]
    done = asyncio.Event()
    watcher = asyncio.create_task(_peak(serve.runner, done))
    answer = await serve.client.post(f"{PHASH}/add_bulk", json=items)
    done.set()
    peak = await watcher
    assert answer.status_code == 200, answer.text
    assert sorted(answer.json()["added"]) == sorted(item["url"] for item in items), answer.json()["failed"]
    assert peak <= 3, f"{peak} adds were waiting at once"


async def test_add_bulk_items_that_find_the_queue_full_fail_with_queue_full(
    serve: InProcess, images: ImageServer
) -> None:
    """Two slow adds wait already (limit 3): of a bulk of 4, one item is admitted, three are reported
    as 'queue full, retry' (before, the request was admitted once and all four went in)."""
    body = jpeg("rocket")
    images.slow("/admission-slower.jpg", body, delay=0.8, chunk=len(body) // 10 + 1)  # about eight seconds
    singles = [
        asyncio.create_task(serve.client.post(f"{PHASH}/add", json={"url": images.url(f"/admission-slower.jpg?s={i}")}))
        for i in range(2)
    ]
    await _until_in_flight(serve.runner, 2)
    items = [{"url": images.url(f"/{name}.jpg?full")} for name in PHOTO_NAMES[:4]]
    answer = await serve.client.post(f"{PHASH}/add_bulk", json=items)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert len(result["added"]) == 1 and len(result["failed"]) == 3, result
    assert all(entry["error"].startswith("queue full, retry") for entry in result["failed"]), result
    assert [(await task).status_code for task in singles] == [204, 204]


async def test_concurrent_search_adds_of_one_url_add_it_once(serve: InProcess, images: ImageServer) -> None:
    url = images.url(f"/{PHOTO_NAMES[0]}.jpg?once")
    answers = await asyncio.gather(
        *(serve.client.post(f"{PHASH}/search_add", json={"url": url, "metadata": {"i": i}}) for i in range(5))
    )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [204, 409, 409, 409, 409], [answer.text for answer in answers]
    assert (await serve.client.get(f"{PHASH}/count")).json() == 1


async def test_duplicate_urls_in_one_add_bulk_are_added_once(serve: InProcess, images: ImageServer) -> None:
    url = images.url(f"/{PHOTO_NAMES[1]}.jpg?twice")
    answer = await serve.client.post(f"{PHASH}/add_bulk", json=[{"url": url}, {"url": url}, {"url": url}])
    body = answer.json()
    assert (len(body["added"]), len(body["found"])) == (1, 2), body


def _add_job(url: str, metadata: dict[str, Any], *, redelivered: bool = False) -> Job[AddArgs]:
    job = Job.of(AddArgs(url=url, metadata=metadata, mode="new"), "phash", 60)
    return job.again() if redelivered else job


async def test_concurrent_new_adds_in_one_worker_add_once(serve: InProcess, images: ImageServer) -> None:
    """The worker side alone (calls from several API processes reach one worker): one "added"."""
    url = images.url(f"/{PHOTO_NAMES[2]}.jpg?worker")
    envelopes = await asyncio.gather(*(serve.runner.run(_add_job(url, {"i": i})) for i in range(4)))
    assert sorted(e.get("value") or e["error"]["type"] for e in envelopes) == ["added"] + ["already_stored"] * 3


async def test_a_redelivered_add_recognises_its_own_write(serve: InProcess, images: ImageServer) -> None:
    url = images.url(f"/{PHOTO_NAMES[3]}.jpg?redelivered")
    assert (await serve.runner.run(_add_job(url, {"tag": "mine"})))["value"] == "added"
    # the worker died after the write, before its ack: the broker delivers the same job again
    again = await serve.runner.run(_add_job(url, {"tag": "mine"}, redelivered=True))
    assert again == {"ok": True, "value": "added"}
    # another client's call for that url, or a redelivered one that wrote something else: found
    assert (await serve.runner.run(_add_job(url, {"tag": "mine"})))["error"]["type"] == "already_stored"
    other = await serve.runner.run(_add_job(url, {"tag": "theirs"}, redelivered=True))
    assert other["error"]["type"] == "already_stored"


async def test_an_add_whose_row_the_store_refuses_fails_alone(serve: InProcess, images: ImageServer) -> None:
    """An add job with metadata over Milvus's 64 KiB JSON limit (the API refuses such a body; a job
    from another release or a forged broker message carries it) is refused by the store. It used to
    fail the whole batch's write: every add batched with it answered 422 and was never stored."""
    good, bad = (images.url(f"/{PHOTO_NAMES[4]}.jpg?refused={side}") for side in ("good", "bad"))
    oversized = Job.of(AddArgs(url=bad, metadata={"note": "x" * 70_000}), "phash", 60)
    replies = await asyncio.gather(
        serve.runner.run(Job.of(AddArgs(url=good), "phash", 60)), serve.runner.run(oversized)
    )
    assert replies[0] == {"ok": True, "value": "added"}, replies[0]
    assert replies[1]["ok"] is False and replies[1]["error"]["type"] == "store_refused", replies[1]
    assert (await serve.runner.run(Job.of(CountArgs(), "phash", 30)))["value"] == 1


async def test_a_job_over_the_message_limit_is_refused_before_it_is_sent() -> None:
    """413 at once, never published: the broker would close the channel (RabbitMQ 4: over 16 MiB)."""
    settings = _settings(amqp_url=AMQP_URL, max_message_bytes=2 * 1024 * 1024, request_timeout=20)
    transport = AmqpTransport(settings)
    await transport.start()
    try:
        await asyncio.wait_for(transport._connected.wait(), 30)
        job = Job.of(SearchArgs(image="A" * (3 * 1024 * 1024)), "phash", 20)
        with pytest.raises(TooLarge) as refused:
            await asyncio.wait_for(transport.call(job), 5)
        assert refused.value.status == 413 and refused.value.type == "job_too_large"
        assert "more than the job broker's limit of 2097152 bytes" in refused.value.msg
        assert not transport._pending
    finally:
        await transport.close()
        await drop_queues(AMQP_URL, settings.queue_prefix)  # durable: the broker would keep them


async def test_requests_waiting_for_replies_fail_at_once_when_the_reply_channel_closes() -> None:
    """The broker closes the channel replies come on: every waiting request answers 503 now, not at its
    deadline, and the transport carries on with the reopened channel."""
    settings = _settings(amqp_url=AMQP_URL, request_timeout=30)
    transport = AmqpTransport(settings)
    await transport.start()
    try:
        await asyncio.wait_for(transport._connected.wait(), 30)
        # nobody consumes this prefix's queues: without the channel's close, each call waits 30 s
        calls = [asyncio.create_task(transport.call(Job.of(CountArgs(), "phash", 30))) for _ in range(3)]
        while len(transport._pending) < 3:
            await asyncio.sleep(0.01)
        channel = getattr(transport, "_reply_channel", None) or transport._channel  # one channel for all, before
        underlay = await channel.get_underlay_channel()
        with contextlib.suppress(Exception):  # a passive declare of a missing queue: the broker closes the channel
            await underlay.queue_declare(f"{settings.queue_prefix}.missing", passive=True)
        async with asyncio.timeout(5):
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(o, Unavailable) and o.type == "broker_unavailable" for o in outcomes), outcomes
        assert "reply channel" in outcomes[0].msg
    finally:
        await transport.close()
        await drop_queues(AMQP_URL, settings.queue_prefix)  # durable: the broker would keep them
