"""How the API reaches the job handlers: in-process (`local`) or through RabbitMQ (`amqp`).

Both offer the same small interface: `call(job, lane)` answers the job's value or raises the
`IdiosError` the handler raised, `model_status()` says what each model is doing, `ready(model)`
refuses with 503 when nothing could run the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Hashable
from typing import Any, Literal

from idios.errors import IdiosError

# interactive: searches and compares (may need a forward pass); light: reads of the store alone
# (count, urls, dump), so they never wait behind searches; ingest: everything that writes.
Lane = Literal["interactive", "light", "ingest"]


class Transport(ABC):
    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def call(self, job: dict[str, Any], lane: Lane) -> Any:
        """Run the job; return its value or raise the IdiosError it failed with."""

    @abstractmethod
    async def model_status(self) -> dict[str, dict[str, str]]:
        """{model name: {"status": ready|loading|unavailable, "reason": str}} for every known model."""

    @abstractmethod
    async def ready(self, model: str | None, *, admit: bool = False) -> None:
        """Raise Unavailable (503) when no worker could take a job for this model right now, or,
        with `admit`, when too many ingestion jobs are waiting already (back-pressure)."""


def make_job(op: str, model: str | None, args: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
    """The job format every transport carries and `idios.jobs.JobRunner.run` understands."""
    return {"op": op, "model": model, "args": args or {}, "deadline": time.time() + timeout, "timeout": timeout}


def unwrap(envelope: dict[str, Any]) -> Any:
    if envelope.get("ok"):
        return envelope.get("value")
    raise IdiosError.from_wire(envelope.get("error") or {})


class KeyedLocks:
    """One asyncio lock per key (a model and url), held only while someone uses it: calls for one
    key run one after the other, calls for different keys are not held up."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
