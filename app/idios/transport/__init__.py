"""How the API reaches the job handlers: in-process (`local`) or through RabbitMQ (`amqp`).

Both offer the same small interface: `call(job)` answers the job's value or raises the
`IdiosError` the handler raised, `model_status()` says what each model is doing, `ready(model)`
refuses with 503 when nothing could run the job. What a job is: `idios.protocol`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from idios.protocol import Job


class Transport(ABC):
    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def call(self, job: Job[Any]) -> Any:
        """Run the job in its lane; return its value or raise the IdiosError it failed with."""

    @abstractmethod
    async def model_status(self) -> dict[str, dict[str, str]]:
        """{model name: {"status": ready|loading|unavailable, "reason": str}} for every known model."""

    @abstractmethod
    async def ready(self, model: str | None, *, admit: bool = False) -> None:
        """Raise Unavailable (503) when no worker could take a job for this model right now, or,
        with `admit`, when too many ingestion jobs are waiting already (back-pressure)."""

    async def queue_state(self) -> dict[tuple[str, str], tuple[int, int]]:
        """{(model, lane): (consumers, waiting jobs)} of the broker's queues, for the metrics; none
        without a broker."""
        return {}
