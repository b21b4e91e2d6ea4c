"""In-process transport for `idios serve`: the API awaits the job handlers directly."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from idios.errors import Unavailable
from idios.jobs import JobRunner
from idios.protocol import Job, unwrap
from idios.specs import SPECS
from idios.transport import Transport

log = logging.getLogger("idios.transport.local")


class LocalTransport(Transport):
    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner
        self._loading: asyncio.Task[list[str]] | None = None

    async def start(self) -> None:
        # Models load in the background so the API answers (with status "loading") meanwhile.
        self._loading = asyncio.create_task(asyncio.to_thread(self.runner.load_models))

    async def close(self) -> None:
        if self._loading is not None:
            await asyncio.gather(self._loading, return_exceptions=True)
        await self.runner.aclose()

    async def call(self, job: Job[Any]) -> Any:
        return unwrap(await self.runner.run(job))

    async def model_status(self) -> dict[str, dict[str, str]]:
        status = {name: {"status": "unavailable", "reason": "not listed in IDIOS_MODELS"} for name in SPECS}
        status.update({name: dict(state) for name, state in self.runner.status.items() if name in SPECS})
        return status

    async def ready(self, model: str | None, *, admit: bool = False) -> None:
        if model is None:
            return
        busy = self.runner.adds_in_flight + self.runner.walks_in_flight
        if admit and busy >= self.runner.settings.max_queued_jobs:
            raise Unavailable(
                f"{self.runner.adds_in_flight} images are waiting to be added and {self.runner.walks_in_flight} "
                "duplicates pages are under way; try again shortly",
                type="queue_full",
            )
        state = self.runner.status.get(model)
        if state is None or state["status"] != "ready":
            reason = state["reason"] if state and state["reason"] else (state or {}).get("status", "not loaded")
            raise Unavailable(f"model {model} is not ready: {reason}", type="model_unavailable")
