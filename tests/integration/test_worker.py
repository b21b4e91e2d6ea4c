"""The worker against the real broker and the real Milvus (phash, no weights): what it answers to
messages another release's API or a buggy client publishes on its queues, a redelivered add, and its
health check with Milvus up and gone."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
import pytest_asyncio

from idios.config import Settings
from idios.jobs import JobRunner
from idios.protocol import PROTOCOL_VERSION, AddArgs, Job, Lane
from idios.store import Store
from idios.transport.queues import LANES, declare, encode_job, queue_name

from tests.support.imageserver import ImageServer
from tests.support.inworker import (
    RawClient,
    drop_collections,
    drop_queues,
    queue_state,
    running_worker,
    store_for,
    wait_for,
    wire_settings,
)
from tests.support.stack import free_port
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.asyncio(loop_scope="session")


def job_body(op: str = "count", args: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A job as `Job.to_wire` writes it; `fields` replace or add top-level keys (None removes one)."""
    body: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "op": op,
        "model": "phash",
        "args": args or {},
        "deadline": time.time() + 30,
        "timeout": 30,
    }
    body.update(fields)
    return {key: value for key, value in body.items() if value is not None}


# (what a client sent, status, error type, words the message must hold)
REFUSED: dict[str, tuple[bytes, int, str, tuple[str, ...]]] = {
    "a later protocol": (
        orjson.dumps(job_body(v=PROTOCOL_VERSION + 1)),
        503,
        "protocol_mismatch",
        (f"speaks job protocol {PROTOCOL_VERSION}", f"came with protocol {PROTOCOL_VERSION + 1}"),
    ),
    "a job without a version (release 1)": (
        orjson.dumps(job_body(v=None)),
        503,
        "protocol_mismatch",
        (f"speaks job protocol {PROTOCOL_VERSION}", "came with protocol 1"),
    ),
    "an unknown operation": (orjson.dumps(job_body("explode")), 422, "unknown_operation", ("'explode'",)),
    "an argument of the wrong type": (
        orjson.dumps(job_body("search", {"url": "http://127.0.0.2/x.jpg", "limit": "many"})),
        422,
        "bad_job",
        ("search job's arguments do not fit", "limit"),
    ),
    "an argument the operation does not take": (
        orjson.dumps(job_body("add", {"url": "http://127.0.0.2/x.jpg", "overwrite": True})),
        422,
        "bad_job",
        ("add job's arguments do not fit", "overwrite"),
    ),
    "a job without its model": (orjson.dumps(job_body(model=None)), 422, "bad_job", ("must name a model",)),
    "a job without a deadline": (orjson.dumps(job_body(deadline=None)), 422, "bad_job", ("no readable deadline",)),
    "a body that is not JSON": (b"\x00count phash please", 422, "bad_job", ("unreadable job",)),
    "a truncated job": (orjson.dumps(job_body())[:-9], 422, "bad_job", ("unreadable job",)),
    "a JSON list": (b'["count", "phash"]', 422, "bad_job", ("not an object",)),
}


@dataclass
class Deployment:
    settings: Settings
    store: Store
    raw: RawClient

    def queue(self, lane: Lane = "interactive") -> str:
        return queue_name(self.settings.queue_prefix, "phash", lane)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def deployment(milvus_uri: str, images: ImageServer) -> AsyncIterator[Deployment]:
    """A throwaway prefix's queues and collections and a client of its own; each test starts its worker."""
    settings = wire_settings()
    store = store_for(settings, milvus_uri)
    raw = await RawClient.open(settings.amqp_url)
    try:
        yield Deployment(settings, store, raw)
    finally:
        await raw.close()
        await drop_queues(settings.amqp_url, settings.queue_prefix)
        drop_collections(store)
        store.close()


async def test_jobs_it_cannot_run_get_a_clear_error_and_are_acked(deployment: Deployment) -> None:
    """Each refused message is answered once with its reason, the worker goes on serving, and none
    of them stays on the queue: unacked, they would come back as soon as the worker's connection closed."""
    raw = deployment.raw
    async with running_worker(deployment.settings, deployment.store):
        sent = {case: await raw.publish(deployment.queue(), body) for case, (body, *_) in REFUSED.items()}
        ingest = await raw.publish(deployment.queue("ingest"), orjson.dumps(job_body(v=1)), persistent=True)
        for case, (_, status, kind, words) in REFUSED.items():
            reply = await raw.reply(sent[case])
            assert reply["ok"] is False, case
            error = reply["error"]
            assert (error["status"], error["type"]) == (status, kind), f"{case}: {error}"
            assert all(word in error["msg"] for word in words), f"{case}: {error['msg']}"
        assert (await raw.reply(ingest))["error"]["type"] == "protocol_mismatch"
        # still serving, on the queue the refused jobs came by
        assert await raw.call(deployment.queue(), orjson.dumps(job_body())) == {"ok": True, "value": 0}
    # the worker has stopped: whatever it had not acked is back on its queues
    for lane in LANES:
        name = queue_name(deployment.settings.queue_prefix, "phash", lane)

        async def released(name: str = name) -> bool:
            return (await queue_state(raw.channel, name))[0] == 0

        await wait_for(released, f"the broker to see {name}'s consumer gone", 10)
        assert (await queue_state(raw.channel, name))[1] == 0, f"messages left on {name}"
    assert all(len(raw.replies[correlation]) == 1 for correlation in [*sent.values(), ingest]), raw.replies


async def test_a_redelivered_add_recognises_its_own_write(deployment: Deployment, images: ImageServer) -> None:
    """A worker takes an add, writes its row and dies before acking: the quorum queue hands the job to
    the next worker flagged as redelivered, which answers "added" (its own write), where the same job
    sent again by a client is refused as already stored."""
    settings, raw = deployment.settings, deployment.raw
    ingest = deployment.queue("ingest")
    job = Job.of(AddArgs(url=images.url("/moon.jpg?redelivered"), metadata={"tag": "mine"}, mode="new"), "phash", 60)
    body = encode_job(job.to_wire())
    await declare(raw.channel, ingest)
    correlation = await raw.publish(ingest, body, persistent=True)

    # the first worker: its runner writes the row; its channel closes before the ack
    first = JobRunner(settings, deployment.store)
    try:
        assert first.load_models() == ["phash"]
        channel = await raw.connection.channel()
        message = await (await channel.declare_queue(ingest, passive=True)).get(no_ack=False, timeout=10)
        assert message is not None and not message.redelivered
        assert await first.run(Job.from_wire(orjson.loads(message.body))) == {"ok": True, "value": "added"}
        await channel.close()
    finally:
        await first.aclose()

    async with running_worker(settings, deployment.store):
        assert await raw.reply(correlation) == {"ok": True, "value": "added"}
        again = await raw.call(ingest, body)
        assert (again["ok"], again["error"]["status"], again["error"]["type"]) == (False, 409, "already_stored")
        assert (await raw.call(deployment.queue("light"), orjson.dumps(job_body())))["value"] == 1


async def test_health_check_reports_the_broker_and_milvus(milvus_uri: str, images: ImageServer) -> None:
    """200 with broker and Milvus up; 503 naming Milvus once its port closes, while jobs that need the
    store answer 503 instead of hanging."""
    milvus = urlsplit(milvus_uri)
    proxy = TcpProxy((milvus.hostname or "127.0.0.1", milvus.port or 19530))
    port = free_port()
    settings = wire_settings(health_port=port, health_host="127.0.0.1")
    store = store_for(settings, f"http://127.0.0.1:{proxy.port}")
    raw = await RawClient.open(settings.amqp_url)
    try:
        async with running_worker(settings, store), httpx.AsyncClient(timeout=20) as client:
            health = await client.get(f"http://127.0.0.1:{port}/")
            assert health.status_code == 200, health.text
            body = health.json()
            assert (body["broker"], body["milvus"]) == (True, True), body
            assert body["models"]["phash"]["status"] == "ready", body
            proxy.cut()

            async def unhealthy() -> bool:
                return (await client.get(f"http://127.0.0.1:{port}/")).status_code == 503

            await wait_for(unhealthy, "the health check to see Milvus gone", 20)
            body = (await client.get(f"http://127.0.0.1:{port}/")).json()
            assert (body["broker"], body["milvus"]) == (True, False), body
            count = await raw.call(queue_name(settings.queue_prefix, "phash", "light"), orjson.dumps(job_body()), 20)
            assert (count["ok"], count["error"]["status"]) == (False, 503), count
    finally:
        proxy.cut()
        store.close()
        await raw.close()
        await drop_queues(settings.amqp_url, settings.queue_prefix)
        direct = Store(milvus_uri, prefix=settings.collection_prefix)
        drop_collections(direct)
        direct.close()
