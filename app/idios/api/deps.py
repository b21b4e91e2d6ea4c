"""What the routes depend on, as named types (FastAPI's `Annotated` dependencies): the transport,
the settings, the model a path names, and the job sender built from them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Request

from idios import specs
from idios.config import Settings
from idios.locks import KeyedLocks
from idios.protocol import Job, JobArgs
from idios.specs import ModelSpec
from idios.transport import Transport


def _transport(request: Request) -> Transport:
    return request.app.state.transport


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _spec(model: Annotated[str, Path(description="A model's name, as `GET /models` lists them")]) -> ModelSpec:
    """The model the path names; 404 for an unknown one, before a body is validated or a job queued."""
    return specs.spec(model)


def _new_urls(request: Request) -> KeyedLocks:
    return request.app.state.new_urls


TransportDep = Annotated[Transport, Depends(_transport)]
SettingsDep = Annotated[Settings, Depends(_settings)]
SpecDep = Annotated[ModelSpec, Depends(_spec)]
# This API's `new` adds (search_add, add_bulk) run one at a time per url, whichever worker takes
# them: of two calls for one url, the second is sent once the first is stored, and finds it.
NewUrlsDep = Annotated[KeyedLocks, Depends(_new_urls)]


class JobSender:
    """Turns an operation's arguments into a job and runs it through the transport."""

    def __init__(self, transport: TransportDep, settings: SettingsDep) -> None:
        self.transport = transport
        self.settings = settings

    async def run(
        self, args: JobArgs, spec: ModelSpec | None = None, *, bulk: bool = False, admit: bool = False
    ) -> Any:
        """The job's value. `bulk` jobs may take IDIOS_BULK_TIMEOUT; `admit` refuses (503) when the
        ingestion queue is full already."""
        model = spec.name if spec is not None else None
        await self.transport.ready(model, admit=admit)
        timeout = self.settings.bulk_timeout if bulk else self.settings.request_timeout
        return await self.transport.call(Job.of(args, model, timeout))


JobsDep = Annotated[JobSender, Depends()]
