"""RabbitMQ names, declarations and message encoding shared by the API and the workers."""

from __future__ import annotations

from typing import Any

import aio_pika
import orjson

from idios.transport import Lane

LANES: tuple[Lane, ...] = ("interactive", "ingest")


def queue_name(prefix: str, model: str | None, lane: Lane = "interactive") -> str:
    """`idios.vit_b32.ingest`, `idios.vit_b32.interactive`; model-less jobs go to `idios.control`."""
    return f"{prefix}.control" if model is None else f"{prefix}.{model}.{lane}"


async def declare(channel: aio_pika.abc.AbstractChannel, name: str) -> aio_pika.abc.AbstractQueue:
    """Durable queues: an accepted ingestion job survives a broker restart (messages are persistent)."""
    return await channel.declare_queue(name, durable=True)


def encode(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def decode(body: bytes) -> Any:
    return orjson.loads(body)
