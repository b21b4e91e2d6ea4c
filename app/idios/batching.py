"""Gather concurrent single requests into batches, so a model runs one forward pass for many images."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """`await submit(key, item)` returns `process(key, items)[i]` for the batch the item ended in.

    A batch closes when it holds `max_size` items or `linger` seconds after its first item;
    items with different keys never share a batch. Batches run concurrently, so one batch can
    download while another computes.
    """

    def __init__(
        self, process: Callable[[Hashable, list[T]], Awaitable[list[R]]], *, max_size: int, linger: float
    ) -> None:
        self._process = process
        self._max_size = max_size
        self._linger = linger
        self._pending: dict[Hashable, list[tuple[T, asyncio.Future[R]]]] = {}
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, key: Hashable, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        batch = self._pending.setdefault(key, [])
        batch.append((item, future))
        if len(batch) >= self._max_size:
            self._flush(key)
        elif key not in self._timers:
            self._timers[key] = loop.call_later(self._linger, self._flush, key)
        return await future

    def _flush(self, key: Hashable) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        batch = self._pending.pop(key, [])
        if batch:
            task = asyncio.create_task(self._run(key, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, key: Hashable, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._process(key, [item for item, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
