"""A real `Worker` in the test's own event loop, on RabbitMQ and a real Milvus, and what the transport
and worker tests do on the broker beside it: publish raw messages, read a queue's depth, drop queues.

The worker runs as `idios worker` runs it (`Worker.run`: models loaded, one consumer per queue, replies,
acks), minus the process: a test can hand it a store of its own (through a `TcpProxy`, say) and stop it
between two deliveries of a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from idios.config import Settings
from idios.jobs import JobRunner
from idios.specs import SPECS
from idios.store import Store
from idios.transport.queues import LANES, queue_name
from idios.worker import Worker

from tests.support.milvus import drop_prefixed
from tests.support.stacks import AMQP_URL, IMAGE_HOST


def wire_settings(**extra: Any) -> Settings:
    """Settings of a throwaway deployment: queues and collections of its own, phash only (no weights),
    the machine's broker, images from the harness's image server, no health check unless asked."""
    tag = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "models": ["phash"],
        "weights": "random",
        "amqp_url": AMQP_URL,
        "collection_prefix": f"t{tag}_",
        "queue_prefix": f"test-{tag}",
        "url_allow_networks": [f"{IMAGE_HOST}/32"],
        "milvus_consistency": "Strong",
        "health_port": 0,
        "request_timeout": 20,
        **extra,
    }
    return Settings(_env_file=None, **values)


def store_for(settings: Settings, uri: str | None = None) -> Store:
    return Store(
        uri or settings.milvus_uri, prefix=settings.collection_prefix, search_consistency=settings.milvus_consistency
    )


async def queue_state(channel: AbstractChannel, name: str) -> tuple[int, int]:
    """(consumers, ready messages) of a queue, as the broker counts them now."""
    underlay = await channel.get_underlay_channel()
    declared = await underlay.queue_declare(name, passive=True)
    return int(declared.consumer_count or 0), int(declared.message_count or 0)


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 15.0) -> None:
    """Await `check()` until it is true; an AssertionError naming `what` after `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, store: Store) -> AsyncIterator[Worker]:
    """A worker consuming `settings`' queues, until the block ends: then it stops as on SIGTERM
    (finishes what it holds, closes its connection), and the loop's signals are given back."""
    worker = Worker(settings, JobRunner(settings, store))
    task = asyncio.create_task(worker.run())
    queues = [queue_name(settings.queue_prefix, model, lane) for model in settings.models for lane in LANES]
    connection = await aio_pika.connect(settings.amqp_url)
    try:

        async def consuming() -> bool:
            if task.done():
                task.result()  # raises what stopped it
                raise AssertionError("the worker stopped before consuming")
            channel = await connection.channel()
            try:
                counts = [(await queue_state(channel, name))[0] for name in queues]
                return all(count > 0 for count in counts)
            except aio_pika.exceptions.ChannelClosed:
                return False  # a queue is not declared yet (the broker closed the channel)
            finally:
                if not channel.is_closed:
                    await channel.close()

        await wait_for(consuming, "the worker to consume its queues", 30)
        yield worker
    finally:
        worker._stopping.set()
        try:
            await asyncio.wait_for(task, 40)
        finally:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await connection.close()


class RawClient:
    """Publishes bodies straight onto a queue, as another release's API or a buggy client would, and
    reads the replies the worker sends to its own reply queue."""

    def __init__(self, connection: AbstractConnection, channel: AbstractChannel, reply_queue: str) -> None:
        self.connection = connection
        self.channel = channel
        self.reply_queue = reply_queue
        self.replies: dict[str, list[Any]] = {}
        self._arrived = asyncio.Condition()

    @classmethod
    async def open(cls, url: str) -> RawClient:
        connection = await aio_pika.connect(url)
        channel = await connection.channel()
        queue = await channel.declare_queue(f"test-raw-reply.{uuid.uuid4().hex}", exclusive=True, auto_delete=True)
        client = cls(connection, channel, queue.name)
        await queue.consume(client._on_reply, no_ack=True)
        return client

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        async with self._arrived:
            self.replies.setdefault(message.correlation_id or "", []).append(orjson.loads(message.body))
            self._arrived.notify_all()

    async def publish(self, routing_key: str, body: bytes, *, persistent: bool = False) -> str:
        correlation_id = uuid.uuid4().hex
        message = aio_pika.Message(
            body,
            correlation_id=correlation_id,
            reply_to=self.reply_queue,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT if persistent else aio_pika.DeliveryMode.NOT_PERSISTENT,
        )
        await self.channel.default_exchange.publish(message, routing_key=routing_key)
        return correlation_id

    async def reply(self, correlation_id: str, timeout: float = 15.0) -> Any:
        """The first reply to that message."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: correlation_id in self.replies)
        return self.replies[correlation_id][0]

    async def call(self, routing_key: str, body: bytes, timeout: float = 15.0) -> Any:
        return await self.reply(await self.publish(routing_key, body), timeout)

    async def close(self) -> None:
        await self.connection.close()


async def drop_queues(url: str, prefix: str) -> None:
    """Delete every queue the API and the workers declare under `prefix` (the broker keeps durable ones)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        for name in [queue_name(prefix, None)] + [queue_name(prefix, m, lane) for m in SPECS for lane in LANES]:
            await channel.queue_delete(name)
    finally:
        await connection.close()


def drop_collections(store: Store) -> None:
    drop_prefixed(store.client, store.prefix)
