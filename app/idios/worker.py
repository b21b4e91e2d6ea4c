"""The distributed worker: consumes jobs from RabbitMQ, runs them, replies, then acks.

Everything slow (downloads, decoding, forward passes, Milvus calls) runs off the event loop,
so the connection keeps its heartbeats while a job stalls. A job is acked only after its reply
is published (and, for adds, after the row is in Milvus): a worker killed mid-job leaves the
job to be redelivered to another. Replies go out on a channel of their own, apart from the ones
jobs are consumed on; an answer larger than the broker's message limit is replaced by a 413 error
(the broker would refuse it, and the job would come back again and again).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from idios import metrics
from idios.config import Settings
from idios.errors import IdiosError, Invalid, TooLarge, Unavailable
from idios.jobs import JobRunner
from idios.logs import REQUEST_ID
from idios.protocol import Job, Reply, failed
from idios.store import Store
from idios.transport.queues import LANES, connect, declare, decode, encode, queue_name

log = logging.getLogger("idios.worker")

SHUTDOWN_GRACE_SECONDS = 30.0


class Worker:
    def __init__(self, settings: Settings, runner: JobRunner) -> None:
        self.settings = settings
        self.runner = runner
        self.connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._consumers: list[tuple[aio_pika.abc.AbstractQueue, str]] = []
        self._replies: AbstractChannel | None = None
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        loaded = await asyncio.to_thread(self.runner.load_models)
        if self.runner.models.schema_errors:
            raise SystemExit("refusing to start: " + "; ".join(self.runner.models.schema_errors))
        try:
            self.connection = await connect(self.settings.amqp_url, "idios-worker", stopping=self._stopping)
        except (OSError, aio_pika.exceptions.AMQPError):
            if self._stopping.is_set():
                raise SystemExit("stopped before the broker could be reached") from None
            raise
        # One channel per lane, each with its own prefetch: a lane's backlog never holds up another's.
        prefetch = {
            "interactive": self.settings.interactive_prefetch,
            "light": self.settings.interactive_prefetch,
            "ingest": self.settings.prefetch,
        }
        self._replies = await self.connection.channel(publisher_confirms=True)
        channels = {}
        for lane in LANES:
            channels[lane] = await self.connection.channel()
            await channels[lane].set_qos(prefetch_count=prefetch[lane])
        prefix = self.settings.queue_prefix
        await self._consume(channels["light"], queue_name(prefix, None))
        for model in loaded:
            for lane in LANES:
                await self._consume(channels[lane], queue_name(prefix, model, lane))
        health = await self._start_health()
        log.info("worker ready: models %s", ", ".join(loaded) or "none")
        await self._stopping.wait()
        log.info("stopping: no new jobs, finishing %d in hand", len(self._tasks))
        for queue, tag in self._consumers:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=SHUTDOWN_GRACE_SECONDS)
        if health is not None:
            health.close()
        await self.connection.close()
        await self.runner.aclose()

    async def _consume(self, channel: AbstractChannel, name: str) -> None:
        queue = await declare(channel, name)
        tag = await queue.consume(functools.partial(self._spawn, channel))
        self._consumers.append((queue, tag))

    async def _spawn(self, channel: AbstractChannel, message: AbstractIncomingMessage) -> None:
        # Each job runs in its own task so the prefetched jobs of a queue can be batched together.
        task = asyncio.create_task(self._handle(channel, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, channel: AbstractChannel, message: AbstractIncomingMessage) -> None:
        op = "unreadable"
        try:
            job = Job.from_wire(decode(message.body))
        except ValueError as exc:
            log.error("dropping an unreadable job: %s", exc)
            reply = failed(Invalid(f"unreadable job: {exc}", type="bad_job"))
        except IdiosError as exc:
            log.error("refusing a job: %s", exc.msg)
            reply = failed(exc)
        else:
            op = job.op
            REQUEST_ID.set(job.request_id)  # this job's task only: its log lines carry the request's id
            # Handed out again: its own earlier write may be stored already.
            reply = await self.runner.run(job.again() if message.redelivered else job)
        try:
            if message.reply_to:
                replies = self._replies if self._replies is not None else channel
                body = _encode_reply(reply, self.settings.max_message_bytes, op)
                await replies.default_exchange.publish(
                    aio_pika.Message(body, correlation_id=message.correlation_id), routing_key=message.reply_to
                )
            await message.ack()
        except (aio_pika.exceptions.AMQPError, aio_pika.exceptions.ChannelInvalidStateError, ConnectionError) as exc:
            # (A channel that has closed raises ChannelInvalidStateError, a RuntimeError, on publish and ack.)
            # The job's effect is stored (upserts are idempotent); unacked, it is redelivered and answered again.
            log.warning("broker connection lost before a %s job was answered (%s); it will be redelivered", op, exc)
            # Only the reply channel may have closed: hand the job back now rather than hold it unacked.
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)

    # health check: a bare HTTP/1.0 answer; a web framework here would take over the worker's signals

    async def _start_health(self) -> asyncio.Server | None:
        """The health check, or None when it is off or its port is taken: a second worker on one host
        (with the first one's port) runs on without one rather than dying."""
        host, port = self.settings.health_host, self.settings.health_port
        if not port:
            return None
        try:
            server = await asyncio.start_server(self._health, host, port)
        except OSError as exc:
            log.error(
                "health check port %s:%d is unavailable (%s; another worker on this host?): running without a "
                "health check; give each worker on a host its own IDIOS_HEALTH_PORT, or 0 for none",
                host,
                port,
                exc.strerror or exc,
            )
            return None
        log.info("health check on %s:%d", host, port)
        return server

    def health(self) -> tuple[bool, dict[str, Any]]:
        broker = bool(self.connection and not self.connection.is_closed and self.connection.connected.is_set())
        try:
            self.runner.store.ping()
            milvus = True
        except Exception:  # a probe: whatever fails, Milvus is not usable from here
            milvus = False
        body = {"broker": broker, "milvus": milvus, "models": self.runner.status, "expired_jobs": self.runner.expired}
        return broker and milvus, body

    async def _health(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """`GET /metrics`: the Prometheus metrics; any other request: the health check."""
        try:
            line = b""
            with contextlib.suppress(Exception):
                line = await asyncio.wait_for(reader.readline(), 5)
            if line.split(b" ")[1:2] == [b"/metrics"]:
                status, kind, payload = "200 OK", metrics.CONTENT_TYPE_LATEST, metrics.render()
            else:
                healthy, body = await asyncio.to_thread(self.health)
                payload, kind = encode(body), "application/json"
                status = "200 OK" if healthy else "503 Service Unavailable"
            head = f"HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(payload)}\r\n\r\n"
            writer.write(head.encode() + payload)
            await writer.drain()
        finally:
            writer.close()


def _encode_reply(reply: Reply, limit: int, op: str = "job") -> bytes:
    """Every job gets an answer the broker takes: even one whose result cannot be serialised, or
    one larger than the broker's message limit (`limit` bytes), is answered by an error."""
    try:
        body = encode(reply)
    except Exception as exc:
        log.exception("cannot serialise a job's answer")
        return encode(failed(IdiosError(f"the answer could not be serialised ({type(exc).__name__})", status=500)))
    if len(body) <= limit:
        return body
    log.warning(
        "the answer to a %s job is %d bytes, over the broker's limit of %d: answering 413", op, len(body), limit
    )
    error = TooLarge(
        f"the answer is too large: {len(body)} bytes, more than the job broker's limit of {limit} bytes "
        "(IDIOS_MAX_MESSAGE_BYTES); ask for fewer rows",
        type="answer_too_large",
    )
    return encode(failed(error))


def _log_milvus_retry(state: RetryCallState) -> None:
    wait = state.next_action.sleep if state.next_action else 0.0
    error = state.outcome.exception() if state.outcome else None
    log.warning("cannot reach Milvus yet (%s); retrying in %.1fs", error, wait)


def connect_store(settings: Settings, *, wait_max: float = 10.0) -> Store:
    """The store, once Milvus answers: a worker may start before Milvus is up (or while it is still
    starting), as it may before the broker; it waits and says so, instead of exiting."""
    for attempt in Retrying(
        retry=retry_if_exception_type((Unavailable, OSError)),
        wait=wait_exponential(multiplier=0.5, max=wait_max),
        before_sleep=_log_milvus_retry,
        reraise=True,
    ):
        with attempt:
            store = Store(
                settings.milvus_uri,
                token=settings.milvus_token,
                prefix=settings.collection_prefix,
                search_consistency=settings.milvus_consistency,
            )
            try:
                store.ping()  # connected is not ready: a starting Milvus refuses calls
            except BaseException:
                store.close()
                raise
            return store
    raise AssertionError("unreachable: tenacity re-raises the last error")


def run_worker(settings: Settings) -> None:
    store = connect_store(settings)
    asyncio.run(Worker(settings, JobRunner(settings, store)).run())
