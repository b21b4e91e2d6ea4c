"""RabbitMQ names, declarations and message encoding shared by the API and the workers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractRobustConnection
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from idios.protocol import Lane
from idios.wire import to_wire

LANES: tuple[Lane, ...] = ("interactive", "light", "ingest")


def queue_name(prefix: str, model: str | None, lane: Lane = "interactive") -> str:
    """`idios.vit_b32.ingest`, `.interactive`, `.light`; model-less jobs go to `idios.control`."""
    return f"{prefix}.control" if model is None else f"{prefix}.{model}.{lane}"


log = logging.getLogger("idios.transport")


def _log_retry(state: RetryCallState) -> None:
    wait = state.next_action.sleep if state.next_action else 0.0
    error = state.outcome.exception() if state.outcome else None
    log.warning("cannot reach RabbitMQ (%s); retrying in %.1fs", error, wait)


async def connect(
    url: str,
    name: str,
    setup: Callable[[AbstractRobustConnection], Awaitable[None]] | None = None,
    stopping: asyncio.Event | None = None,
) -> AbstractRobustConnection:
    """A robust connection, retried until the broker answers (it may start after us) or `stopping`
    is set; `setup` (declarations, consumers) runs on it before it is returned. Later losses are
    handled by the robust connection itself, which reconnects and restores channels and consumers."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((OSError, aio_pika.exceptions.AMQPError)),
        wait=wait_exponential(multiplier=0.5, max=10.0),
        stop=lambda _: stopping is not None and stopping.is_set(),
        before_sleep=_log_retry,
        reraise=True,
    ):
        with attempt:
            connection = await aio_pika.connect_robust(url, client_properties={"connection_name": name})
            if setup is not None:
                try:
                    await setup(connection)
                except BaseException:
                    await connection.close()
                    raise
            return connection
    raise AssertionError("unreachable: tenacity re-raises the last error")


# A job redelivered this often (it keeps killing workers, say) is dropped rather than retried forever.
DELIVERY_LIMIT = 5


def queue_arguments(name: str) -> dict[str, Any]:
    """Ingestion queues are quorum queues (replicated, durable, with a delivery limit against poison
    jobs); interactive and control queues are classic: their jobs die with their requests anyway."""
    if name.endswith(".ingest"):
        return {"x-queue-type": "quorum", "x-delivery-limit": DELIVERY_LIMIT}
    return {}


async def declare(channel: aio_pika.abc.AbstractChannel, name: str) -> aio_pika.abc.AbstractQueue:
    """Every job queue is durable; ingestion messages are also persistent, so they survive a broker restart."""
    return await channel.declare_queue(name, durable=True, arguments=queue_arguments(name))


# An answer whose value is JSON already (an orjson.Fragment: a dump page of tens of megabytes) is
# written behind this head, so the API can take the value back without parsing it and hand the
# bytes to its HTTP client as they are. It stays an ordinary envelope for any other reader.
RAW_ANSWER_HEAD = b'{"ok":true,"raw":true,"value":'


def encode(value: Any) -> bytes:
    if isinstance(value, dict) and value.get("ok") is True and isinstance(value.get("value"), orjson.Fragment):
        return orjson.dumps({"ok": True, "raw": True, "value": value["value"]})  # RAW_ANSWER_HEAD, value, }
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_job(job: dict[str, Any]) -> bytes:
    """A job for the broker: its numpy arrays (a restore's vectors) packed by `idios.wire`."""
    return orjson.dumps(job, default=to_wire)


def decode(body: bytes) -> Any:
    if body.startswith(RAW_ANSWER_HEAD) and body.endswith(b"}"):
        return {"ok": True, "value": orjson.Fragment(body[len(RAW_ANSWER_HEAD) : -1])}
    return orjson.loads(body)
