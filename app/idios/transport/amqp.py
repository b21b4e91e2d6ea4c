"""API side of the RabbitMQ transport: publish a job, await its reply without blocking the loop.

One robust connection per API process. Replies come back on an exclusive queue named by this
process, consumed on a channel of their own: jobs are published on another, so a publish the broker
refuses (it closes the channel it came on) cannot take the replies other requests wait for with it.
A job's message expires with its deadline, so a job nobody waits for is never computed. A job larger
than the broker's message limit is refused (413) before it is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection

from idios.config import Settings
from idios.errors import Timeout, TooLarge, Unavailable
from idios.protocol import Job, StatusArgs, unwrap
from idios.specs import SPECS
from idios.transport import Transport
from idios.transport.queues import LANES, connect, declare, decode, encode_job, queue_name

log = logging.getLogger("idios.transport.amqp")

QUEUE_CACHE_SECONDS = 1.0
STATUS_TIMEOUT = 2.0


class AmqpTransport(Transport):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.reply_queue_name = f"{settings.queue_prefix}.reply.{uuid.uuid4().hex}"
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None  # publishes jobs
        self._reply_channel: AbstractRobustChannel | None = None  # consumes replies
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._queues: dict[str, tuple[float, int, int]] = {}
        # Ingestion jobs this process sent since each queue's waiting count was last read (and not yet
        # answered): they count against IDIOS_MAX_QUEUED_JOBS until the next read sees them.
        self._fresh: dict[str, set[str]] = {}
        self._connect_task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    # connection

    async def start(self) -> None:
        """Connect in the background: the API answers (503) while the broker is unreachable."""
        self._connect_task = asyncio.create_task(self._connect_forever())

    async def _connect_forever(self) -> None:
        self._connection = await connect(self.settings.amqp_url, "idios-api", self._setup)
        self._connected.set()
        log.info("connected to RabbitMQ")

    async def _setup(self, connection: AbstractRobustConnection) -> None:
        connection.close_callbacks.add(self._on_connection_lost)
        connection.reconnect_callbacks.add(self._on_reconnect)
        channel = await connection.channel(publisher_confirms=True)
        for name in SPECS:
            for lane in LANES:
                await declare(channel, queue_name(self.settings.queue_prefix, name, lane))
        await declare(channel, queue_name(self.settings.queue_prefix, None))
        reply_channel = await connection.channel()
        replies = await reply_channel.declare_queue(self.reply_queue_name, exclusive=True, auto_delete=True)
        await replies.consume(self._on_reply, no_ack=True)
        # Replies that were on their way when the channel closed are lost: every waiting request fails
        # now (503) rather than at its deadline. The robust channel reopens and consumes again by itself.
        reply_channel.close_callbacks.add(self._on_reply_channel_closed)
        self._reply_channel = reply_channel
        self._channel = channel

    def _on_connection_lost(self, *_: Any) -> None:
        self._connected.clear()
        self._queues.clear()
        self._fail_pending(Unavailable("lost the connection to the job broker; try again", type="broker_unavailable"))

    def _on_reply_channel_closed(self, _: Any, exc: BaseException | None = None) -> None:
        if self._pending:
            log.warning("the reply channel closed (%s); failing %d waiting requests", exc, len(self._pending))
        self._fail_pending(
            Unavailable(f"the job broker closed the reply channel ({exc}); try again", type="broker_unavailable")
        )

    def _on_reconnect(self, *_: Any) -> None:
        log.info("reconnected to RabbitMQ")
        self._connected.set()

    def _fail_pending(self, error: Exception) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)

    async def close(self) -> None:
        if self._connect_task is not None:
            self._connect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connect_task
        if self._connection is not None:
            self._connection.close_callbacks.discard(self._on_connection_lost)
            await self._connection.close()
        self._fail_pending(Unavailable("the API is shutting down", type="shutting_down"))

    def _live_channel(self) -> AbstractRobustChannel:
        channel, replies = self._channel, self._reply_channel
        if channel is None or channel.is_closed or replies is None or replies.is_closed or not self._connected.is_set():
            raise Unavailable("the job broker is unreachable; try again shortly", type="broker_unavailable")
        return channel

    # calls

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.pop(message.correlation_id or "", None)
        if future is None or future.done():
            return  # the request gave up already
        try:
            future.set_result(decode(message.body))
        except Exception as exc:
            future.set_exception(Unavailable(f"unreadable reply from a worker: {exc}", type="bad_reply"))

    async def call(self, job: Job[Any]) -> Any:
        channel = self._live_channel()
        body = encode_job(job.to_wire())
        limit = self.settings.max_message_bytes
        if len(body) > limit:
            # The broker would refuse it by closing the channel: say why, and keep the channel.
            raise TooLarge(
                f"this {job.op} request makes a job of {len(body)} bytes, more than the job broker's limit "
                f"of {limit} bytes (IDIOS_MAX_MESSAGE_BYTES); send fewer rows or a smaller image",
                type="job_too_large",
            )
        correlation_id = uuid.uuid4().hex
        remaining = job.deadline - time.time()
        if remaining <= 0:
            raise Timeout("the request timed out before it was sent", type="deadline")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        message = aio_pika.Message(
            body,
            correlation_id=correlation_id,
            reply_to=self.reply_queue_name,
            expiration=remaining,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            if job.lane == "ingest"
            else aio_pika.DeliveryMode.NOT_PERSISTENT,
            content_type="application/json",
        )
        routing_key = queue_name(self.settings.queue_prefix, job.model, job.lane)
        fresh = self._fresh.setdefault(routing_key, set()) if job.lane == "ingest" else set()
        fresh.add(correlation_id)
        try:
            await channel.default_exchange.publish(message, routing_key=routing_key, timeout=remaining)
            envelope = await asyncio.wait_for(future, timeout=max(0.0, job.deadline - time.time()))
        except TimeoutError:
            raise Timeout(f"no worker answered within {job.timeout:.0f}s", type="worker_timeout") from None
        except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise Unavailable(f"the job broker failed: {exc}", type="broker_unavailable") from None
        finally:
            self._pending.pop(correlation_id, None)
            fresh.discard(correlation_id)
        return unwrap(envelope)

    # readiness

    async def _queue_state(self, name: str) -> tuple[int, int]:
        """(consumers, waiting messages) of a queue, cached for a second."""
        cached = self._queues.get(name)
        now = time.monotonic()
        if cached and now - cached[0] < QUEUE_CACHE_SECONDS:
            return cached[1], cached[2]
        channel = self._live_channel()
        try:
            # aio-pika's declare_queue keeps the first declaration's answer; ask the broker itself.
            underlay = await channel.get_underlay_channel()
            declared = await underlay.queue_declare(name, passive=True)
        except Exception as exc:
            raise Unavailable(f"the job broker failed: {exc}", type="broker_unavailable") from None
        state = (int(declared.consumer_count or 0), int(declared.message_count or 0))
        self._queues[name] = (now, *state)
        self._fresh.pop(name, None)
        return state

    async def queue_state(self) -> dict[tuple[str, str], tuple[int, int]]:
        state: dict[tuple[str, str], tuple[int, int]] = {}
        for model in SPECS:
            for lane in LANES:
                with contextlib.suppress(Unavailable):  # the broker is away: those gauges keep their last value
                    state[model, lane] = await self._queue_state(queue_name(self.settings.queue_prefix, model, lane))
        return state

    async def _consumer_count(self, name: str) -> int:
        return (await self._queue_state(name))[0]

    async def ready(self, model: str | None, *, admit: bool = False) -> None:
        prefix = self.settings.queue_prefix
        if await self._consumer_count(queue_name(prefix, model, "interactive")) == 0:
            what = f"model {model}" if model else "jobs"
            raise Unavailable(f"no worker is connected that serves {what}", type="no_worker")
        if admit:
            name = queue_name(prefix, model, "ingest")
            _, waiting = await self._queue_state(name)
            waiting += len(self._fresh.get(name, ()))
            if waiting >= self.settings.max_queued_jobs:
                raise Unavailable(f"{waiting} images are waiting to be added; try again shortly", type="queue_full")

    async def model_status(self) -> dict[str, dict[str, str]]:
        reported: dict[str, dict[str, str]] = {}
        try:
            await self.ready(None)
            reported = await self.call(Job.of(StatusArgs(), None, STATUS_TIMEOUT))
        except Exception as exc:
            log.info("no worker status: %s", exc)
        status = {}
        for name in SPECS:
            try:
                serving = await self._consumer_count(queue_name(self.settings.queue_prefix, name, "interactive"))
            except Unavailable as exc:
                status[name] = {"status": "unavailable", "reason": exc.msg}
                continue
            if serving:
                status[name] = {"status": "ready", "reason": ""}
            elif name in reported and reported[name]["status"] != "ready":
                status[name] = dict(reported[name])
            else:
                status[name] = {"status": "unavailable", "reason": "no connected worker loads this model"}
        return status
