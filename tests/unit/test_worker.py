"""The worker's job handling with a fake message: a job whose reply channel closed is handed back."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import aio_pika
import orjson

from idios.config import Settings
from idios.protocol import PROTOCOL_VERSION
from idios.worker import Worker


class _Message:
    """What the worker uses of an incoming message; records how the job was settled."""

    def __init__(self, job: dict) -> None:
        self.body = orjson.dumps(job)
        self.reply_to, self.correlation_id, self.redelivered = "replies", "c1", False
        self.settled: list[str] = []

    async def ack(self) -> None:
        self.settled.append("ack")

    async def nack(self, requeue: bool = True) -> None:
        self.settled.append(f"nack requeue={requeue}")


def test_a_job_whose_reply_channel_is_closed_is_handed_back(monkeypatch) -> None:
    """Publishing on a reply channel that has closed (and not reopened yet) raises aio-pika's
    ChannelInvalidStateError, a RuntimeError rather than an AMQPError: the job's task died with it,
    neither acked nor handed back, so the job stayed with this worker (its prefetch slot lost) for
    as long as the connection lived, instead of going at once to a worker that can answer it."""

    class Runner:
        async def run(self, job: Any) -> dict:
            return {"ok": True, "value": "pong"}

    class ClosedExchange:
        async def publish(self, *args: Any, **kwargs: Any) -> None:
            raise aio_pika.exceptions.ChannelInvalidStateError("<Channel: 2> closed")

    worker = Worker(Settings(_env_file=None, models=[]), Runner())  # type: ignore[arg-type]
    worker._replies = SimpleNamespace(default_exchange=ClosedExchange())  # type: ignore[assignment]
    message = _Message({"v": PROTOCOL_VERSION, "op": "ping", "args": {}, "deadline": 2e9})
    asyncio.run(worker._handle(None, message))  # type: ignore[arg-type]
    assert message.settled == ["nack requeue=True"]
