"""RabbitMQ names, declarations and message encoding shared by the API and the workers."""

from __future__ import annotations

from typing import Any

import aio_pika
import orjson

from idios.transport import Lane

LANES: tuple[Lane, ...] = ("interactive", "light", "ingest")


def queue_name(prefix: str, model: str | None, lane: Lane = "interactive") -> str:
    """`idios.vit_b32.ingest`, `.interactive`, `.light`; model-less jobs go to `idios.control`."""
    return f"{prefix}.control" if model is None else f"{prefix}.{model}.{lane}"


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


def encode(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def decode(body: bytes) -> Any:
    return orjson.loads(body)
