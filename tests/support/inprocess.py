"""`idios serve`'s API and job runner in the test's own event loop, on a real Milvus: for tests that
need the whole request path but no separate process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from idios.api.app import create_app
from idios.config import Settings
from idios.jobs import JobRunner
from idios.store import Store
from idios.transport.local import LocalTransport

from tests.support.milvus import drop_prefixed


@dataclass
class InProcess:
    client: httpx.AsyncClient
    runner: JobRunner


@asynccontextmanager
async def in_process(settings: Settings, milvus_uri: str) -> AsyncIterator[InProcess]:
    """The app with its models loaded; its collections (`settings.collection_prefix`) are dropped after."""
    store = Store(milvus_uri, prefix=settings.collection_prefix, search_consistency="Strong")
    runner = JobRunner(settings, store)
    transport = LocalTransport(runner)
    await transport.start()
    await transport._loading
    try:
        # The API answers only the loopback names when it listens on loopback (its default).
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(settings, transport)),
            base_url="http://127.0.0.1",
            timeout=120,
        ) as client:
            yield InProcess(client, runner)
    finally:
        await transport.close()
        drop_prefixed(store.client, settings.collection_prefix)
        store.close()
