"""Where a worker's slow calls run: decoding, forward passes and store calls, each off the event loop
in a thread pool chosen by who waits for it.

Interactive work (a search or compare: someone waits for it now) has pools of its own at normal
priority, so it never queues behind ingestion's batches, whose decodes and forward passes run in
the bulk pool at bulk priority (`idios.niceness`). Every decode first takes its share of the
process's decode budget (`idios.decoding`), so the images decoded at once fit in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from idios import metrics, niceness
from idios.config import Settings
from idios.decoding import decode_opened, open_image, process_budget, return_freed_buffers
from idios.errors import Timeout

if TYPE_CHECKING:
    from PIL.Image import Image

    from idios.models import Comparison, EmbeddingModel

log = logging.getLogger("idios.compute")

T = TypeVar("T")


class Compute:
    """The thread pools, and the decode, embed and store calls made in them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Interactive forward passes, and any pass waiting for its model's slots: waiting there, they
        # never use up the default pool that store calls need.
        self._model_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="idios-model")
        # Interactive decodes and store reads: never queued behind a bulk batch's images.
        self._interactive_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="idios-interactive")
        self._bulk_pool = ThreadPoolExecutor(
            max_workers=8, thread_name_prefix="idios-bulk", initializer=niceness.lower_this_thread
        )
        # Shared by both pools' decodes, and by every worker in the process.
        self.decode_budget = process_budget(settings.decode_budget_bytes)
        return_freed_buffers()  # else the decodes' freed buffers stay in per-thread heaps, over the budget

    def close(self) -> None:
        for pool in (self._model_pool, self._interactive_pool, self._bulk_pool):
            pool.shutdown(wait=False, cancel_futures=True)

    async def decode(
        self, data: bytes, *, interactive: bool = False, min_side: int | None = None, smallest_side: int | None = None
    ) -> Image:
        """Decode in a pool thread once the image's estimated memory fits the process's decode budget;
        a large JPEG at reduced scale while both sides stay at least `min_side`, and an image with a
        side under `smallest_side` refused (`decoding.open_image`).

        The header is read first (in the pool too: a hostile one can take a while); the wait for the
        budget is asyncio's, holding no thread.
        """
        pool = self._interactive_pool if interactive else self._bulk_pool
        opened = await self._in_decode_thread(pool, open_image, data, self.settings, min_side, smallest_side)
        await self.decode_budget.acquire(opened.cost, interactive=interactive)
        return await self._in_decode_thread(pool, decode_opened, opened, self.settings, held=opened.cost)

    async def embed(self, model: EmbeddingModel, images: list[Image], *, interactive: bool = False) -> list[Any]:
        pool = self._model_pool if interactive else self._bulk_pool
        return await asyncio.get_running_loop().run_in_executor(
            pool, _forward_pass, model.spec.name, model.embed_images, images, interactive
        )

    async def embed_queries(self, model: EmbeddingModel, images: list[Image]) -> list[Any]:
        return await asyncio.get_running_loop().run_in_executor(
            self._model_pool, _forward_pass, model.spec.name, model.embed_queries, images
        )

    async def compare(self, model: EmbeddingModel, first: Any, second: Any, *, interactive: bool = True) -> Comparison:
        pool = self._model_pool if interactive else self._bulk_pool
        return await asyncio.get_running_loop().run_in_executor(pool, model.compare, first, second)

    async def mirror(self, image: Image) -> Image:
        """The image mirrored left to right (a search's `flip`)."""
        from PIL.Image import Transpose

        return await asyncio.get_running_loop().run_in_executor(
            self._interactive_pool, image.transpose, Transpose.FLIP_LEFT_RIGHT
        )

    async def embed_text(self, model: EmbeddingModel, text: str) -> Any:
        return (await asyncio.get_running_loop().run_in_executor(self._model_pool, model.embed_texts, [text]))[0]

    async def store_call(self, fn: Callable[..., T], *args: Any, interactive: bool = False, **kwargs: Any) -> T:
        """A (blocking) store call: interactive ones in their own pool, the others in asyncio's default pool."""
        if not interactive:
            return await asyncio.to_thread(_store_call, fn, *args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._interactive_pool, lambda: _store_call(fn, *args, **kwargs))

    async def _in_decode_thread(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any, held: int = 0) -> T:
        """`fn(*args)` in `pool`, failing with 504 when it runs longer than IDIOS_DECODE_TIMEOUT once started.

        Python cannot stop a thread: on timeout (or cancellation) the call runs on to its end, and only
        then gives back `held` bytes of the decode budget.
        """
        loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = loop.create_future()

        def call() -> T:
            with contextlib.suppress(RuntimeError):  # the event loop has closed
                loop.call_soon_threadsafe(_set_done, started)
            return fn(*args)

        try:
            job = pool.submit(call)
        except BaseException:  # the pool has shut down
            self.decode_budget.release(held)
            raise
        if held:
            job.add_done_callback(lambda _: self.decode_budget.release(held))
        result: asyncio.Future[T] = asyncio.wrap_future(job)
        result.add_done_callback(_retrieve)
        try:
            waiting: set[asyncio.Future[Any]] = {started, result}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            return await asyncio.wait_for(asyncio.shield(result), self.settings.decode_timeout)
        except TimeoutError:
            log.warning("a decode ran past %s s; its thread runs on", self.settings.decode_timeout)
            raise Timeout(
                f"decoding the image took longer than {self.settings.decode_timeout:g} s, the limit",
                type="decode_timeout",
            ) from None
        except asyncio.CancelledError:
            job.cancel()  # not started yet: it never will; running: it runs to its end
            raise


def _forward_pass(model: str, fn: Callable[..., list[Any]], images: list[Image], *args: Any) -> list[Any]:
    metrics.BATCH_IMAGES.labels(model).observe(len(images))
    with metrics.timed(metrics.FORWARD_SECONDS, model):
        return fn(images, *args)


def _store_call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)`, timed under its name (`idios_milvus_call_duration_seconds`)."""
    # module.function: `store.search` (one Milvus call) apart from `copysearch.search` (several, and
    # the check of the candidates) and `jobs._dump_page` (a page read and encoded).
    call = f"{getattr(fn, '__module__', '').rpartition('.')[2]}.{getattr(fn, '__name__', 'call')}"
    try:
        with metrics.timed(metrics.MILVUS_SECONDS, call):
            return fn(*args, **kwargs)
    except Exception:
        metrics.MILVUS_ERRORS.labels(call).inc()
        raise


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark an abandoned (timed-out) call's exception as seen, so asyncio does not log it."""
    if not future.cancelled():
        future.exception()
