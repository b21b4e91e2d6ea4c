"""The job handlers a worker runs: one per API operation, fed by any transport.

A job is a plain dict `{"op", "model", "args", "deadline"}`; `JobRunner.run` answers every
job with an envelope, `{"ok": true, "value": ...}` or `{"ok": false, "error": {...}}`, and
never raises, so a bad job cannot take the worker down with it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson
from pymilvus.exceptions import MilvusException

from idios import expr, niceness, pages
from idios.batching import MicroBatcher
from idios.config import Settings
from idios.decoding import decode_opened, open_image, process_budget, return_freed_buffers
from idios.errors import Conflict, IdiosError, Invalid, NotFound, Timeout, TooLarge, Unavailable
from idios.images import ImageFetcher
from idios.models import REGISTRY, EmbeddingModel, ModelSpec, ModelUnavailable
from idios.store import Columns, SchemaMismatch, Store, is_input_error
from idios.transport import KeyedLocks
from idios.wire import unpack_array

log = logging.getLogger("idios.jobs")

Envelope = dict[str, Any]
T = TypeVar("T")


def ok(value: Any = None) -> Envelope:
    return {"ok": True, "value": value}


def failed(error: IdiosError) -> Envelope:
    return {"ok": False, "error": error.to_wire()}


class JobRunner:
    """Owns the loaded models, the image fetcher and the store; runs jobs against them."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.fetcher = ImageFetcher(settings)
        self.models: dict[str, EmbeddingModel] = {}
        self.status: dict[str, dict[str, str]] = {name: {"status": "loading", "reason": ""} for name in settings.models}
        self.schema_errors: list[str] = []
        self.adds_in_flight = 0
        self.expired = 0
        self._model_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="idios-model")
        self._interactive_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="idios-interactive")
        # Shared by both pools' decodes, and by every runner in the process.
        self._decode_budget = process_budget(settings.decode_budget_bytes)
        return_freed_buffers()  # else the decodes' freed buffers stay in per-thread heaps, over the budget
        # Ingestion's decodes and forward passes run at bulk priority (`idios.niceness`).
        self._bulk_pool = ThreadPoolExecutor(
            max_workers=8, thread_name_prefix="idios-bulk", initializer=niceness.lower_this_thread
        )
        self._new_urls = KeyedLocks()
        self._adds: MicroBatcher[dict[str, Any], Envelope] = MicroBatcher(
            self._add_batch, max_size=settings.batch_size, linger=settings.batch_linger_ms / 1000
        )

    # lifecycle

    def load_models(self) -> list[str]:
        """Load every configured model (blocking, in parallel: one slow download does not hold up
        the others); returns the names now ready."""
        with ThreadPoolExecutor(max_workers=max(1, len(self.settings.models))) as pool:
            list(pool.map(self._load, self.settings.models))
        return list(self.models)

    def _load(self, name: str) -> None:
        if name not in REGISTRY:
            self.status[name] = {"status": "unavailable", "reason": f"unknown model '{name}'"}
            return
        model = REGISTRY[name](self.settings)
        try:
            model.load()
            self.store.ensure_collection(model.spec)
        except Exception as exc:
            # A refused schema and a missing model say why themselves; anything else also names its type.
            explained = isinstance(exc, SchemaMismatch | ModelUnavailable)
            reason = str(exc) if explained else f"{type(exc).__name__}: {exc}"
            log.error("model %s unavailable: %s", name, reason)
            if isinstance(exc, SchemaMismatch):
                self.schema_errors.append(reason)
            self.status[name] = {"status": "unavailable", "reason": reason}
            return
        self.models[name] = model
        self.status[name] = {"status": "ready", "reason": ""}
        log.info("model %s ready", name)

    async def aclose(self) -> None:
        await self.fetcher.aclose()
        self._model_pool.shutdown(wait=False, cancel_futures=True)
        self._interactive_pool.shutdown(wait=False, cancel_futures=True)
        self._bulk_pool.shutdown(wait=False, cancel_futures=True)

    # dispatch

    async def run(self, job: dict[str, Any]) -> Envelope:
        op = job.get("op")
        try:
            if time.time() > float(job.get("deadline", 0) or 0):
                self.expired += 1
                log.info("dropped a %s job: its deadline passed before it started", op)
                raise Timeout("the request's deadline passed before a worker could start it", type="deadline")
            handler = getattr(self, f"op_{op}", None)
            if handler is None:
                raise Invalid(f"unknown operation '{op}'", type="unknown_operation")
            args = job.get("args") or {}
            if op in ("ping", "status"):
                return ok(await handler(**args))
            model = self._model(job.get("model"))
            return ok(await handler(model, **args))
        except IdiosError as exc:
            return failed(exc)
        except MilvusException as exc:
            log.error("Milvus failed on %s: %s", op, exc)
            return failed(Unavailable(f"the vector store failed: {exc.message}", type="store_unavailable"))
        except Exception as exc:  # a bug: answer anyway, keep the worker alive
            log.exception("job %s failed", op)
            return failed(IdiosError(f"internal error ({type(exc).__name__})", status=500, type="internal"))

    def _model(self, name: Any) -> EmbeddingModel:
        if name not in REGISTRY:
            raise NotFound(f"unknown model '{name}'", type="unknown_model")
        model = self.models.get(name)
        if model is None:
            state = self.status.get(name, {"status": "unavailable", "reason": "not loaded by this worker"})
            raise Unavailable(
                f"model {name} is {state['status']}: {state['reason'] or 'loading'}", type="model_unavailable"
            )
        return model

    # building blocks

    async def _image(self, url: str, *, urgent: bool = False) -> Any:
        data = await self.fetcher.fetch(url)
        return await self._decode(data, urgent=urgent)

    async def _decode(self, data: bytes, *, urgent: bool = False) -> Any:
        """Decode in a pool thread once the image's estimated memory fits the process's decode budget.

        The header is read first (in the pool too: a hostile one can take a while); the wait for the
        budget is asyncio's, holding no thread.
        """
        # Interactive requests decode in their own pool: never queued behind a bulk batch's images.
        pool = self._interactive_pool if urgent else self._bulk_pool
        opened = await self._in_decode_thread(pool, open_image, data, self.settings)
        await self._decode_budget.acquire(opened.cost, urgent=urgent)
        return await self._in_decode_thread(pool, decode_opened, opened, self.settings, held=opened.cost)

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
            self._decode_budget.release(held)
            raise
        if held:
            job.add_done_callback(lambda _: self._decode_budget.release(held))
        result = asyncio.wrap_future(job)
        result.add_done_callback(_retrieve)
        try:
            await asyncio.wait({started, result}, return_when=asyncio.FIRST_COMPLETED)
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

    async def _embed(self, model: EmbeddingModel, images: list[Any], *, urgent: bool = False) -> list[Any]:
        # Calls waiting for the model lock sit in their own pools, so they never use up the
        # default pool that store queries need.
        pool = self._model_pool if urgent else self._bulk_pool
        return await asyncio.get_running_loop().run_in_executor(pool, model.embed_images, images, urgent)

    async def _vector_of_url(self, model: EmbeddingModel, url: str) -> Any:
        """A stored url's vector (no download), else the vector of the downloaded image."""
        loop = asyncio.get_running_loop()
        stored = await loop.run_in_executor(self._interactive_pool, self.store.vectors, model.spec, [url])
        if url in stored:
            return stored[url]
        image = await self._image(url, urgent=True)
        return (await self._embed(model, [image], urgent=True))[0]

    async def _vector_of_upload(self, model: EmbeddingModel, data: str) -> Any:
        """The vector of a base64 image sent with the request."""
        picture = await self._decode(_base64(data, self.settings.max_download_bytes), urgent=True)
        return (await self._embed(model, [picture], urgent=True))[0]

    async def _vector_of(self, model: EmbeddingModel, url: str | None, image: str | None) -> Any:
        if (url is None) == (image is None):
            raise Invalid("give exactly one of url or image for each side", type="missing_query")
        return await (self._vector_of_url(model, url) if url is not None else self._vector_of_upload(model, image))

    # operations

    async def op_ping(self) -> str:
        return "pong"

    async def op_status(self) -> dict[str, dict[str, str]]:
        return self.status

    async def op_add(
        self,
        model: EmbeddingModel,
        url: str,
        metadata: dict | None = None,
        mode: str = "upsert",
        redelivered: bool = False,
    ) -> str:
        """Adds go through the batcher; concurrent adds for a model share one forward pass.

        `new` adds of one url run one after the other in this worker (the existence check and the
        write of one are not interleaved with another's), so only one of them answers "added".
        `redelivered` (the broker gave the job again: a worker died before acking it) lets a job
        recognise its own earlier write: a stored entry with the job's metadata answers "added"."""
        self.adds_in_flight += 1
        try:
            item = {"url": url, "metadata": metadata, "mode": mode, "redelivered": redelivered}
            if mode == "new":
                async with self._new_urls.hold((model.spec.name, url)):
                    envelope = await self._adds.submit(model.spec.name, item)
            else:
                envelope = await self._adds.submit(model.spec.name, item)
        finally:
            self.adds_in_flight -= 1
        if not envelope["ok"]:
            raise IdiosError.from_wire(envelope["error"])
        return envelope["value"]

    async def _add_batch(self, name: Hashable, items: list[dict[str, Any]]) -> list[Envelope]:
        model = self.models[str(name)]
        spec = model.spec
        results: list[Envelope | None] = [None] * len(items)
        try:
            fresh = [i for i, item in enumerate(items) if item["mode"] == "new"]
            if fresh:
                found = await asyncio.to_thread(self.store.existing, spec, [items[i]["url"] for i in fresh])
                again = [items[i]["url"] for i in fresh if items[i]["url"] in found and items[i].get("redelivered")]
                own = await asyncio.to_thread(self._stored_metadata, spec, again) if again else {}
                for i in fresh:
                    url = items[i]["url"]
                    if url in own and own[url] == (items[i]["metadata"] or {}):
                        results[i] = ok("added")  # this job's own write, before its worker died unacked
                    elif url in found:
                        results[i] = failed(Conflict(f"already stored: {url}", type="already_stored"))
            todo = [i for i, result in enumerate(results) if result is None]
            images = await asyncio.gather(*(self._image(items[i]["url"]) for i in todo), return_exceptions=True)
            ready: list[tuple[int, Any]] = []
            for i, image in zip(todo, images, strict=True):
                if isinstance(image, IdiosError):
                    results[i] = failed(image)
                elif isinstance(image, BaseException):
                    log.error("fetching %s failed: %r", items[i]["url"], image)
                    results[i] = failed(IdiosError(f"internal error ({type(image).__name__})", status=500))
                else:
                    ready.append((i, image))
            if ready:
                vectors = await self._embed(model, [image for _, image in ready])
                rows = {}
                for (i, _), vector in zip(ready, vectors, strict=True):
                    rows[items[i]["url"]] = {"url": items[i]["url"], "vector": vector, "metadata": items[i]["metadata"]}
                await asyncio.to_thread(self.store.upsert, spec, list(rows.values()))
                for i, _ in ready:
                    results[i] = ok("added")
        except MilvusException as exc:
            log.error("Milvus failed while adding: %s", exc)
            error = Unavailable(f"the vector store failed: {exc.message}", type="store_unavailable")
            return [result if result is not None and not result["ok"] else failed(error) for result in results]
        return [result if result is not None else failed(IdiosError("not processed", status=500)) for result in results]

    def _stored_metadata(self, spec: ModelSpec, urls: list[str]) -> dict[str, Any]:
        # Store has no metadata-only read; a redelivered add is rare enough for a plain query.
        rows = self.store.client.query(
            self.store.collection(spec),
            filter=expr.url_in(urls),
            output_fields=["url", "metadata"],
            consistency_level="Strong",
        )
        return {row["url"]: row.get("metadata") or {} for row in rows}

    async def op_restore(
        self, model: EmbeddingModel, urls: list[str], metadata: list[dict[str, Any]], vectors: dict[str, Any]
    ) -> int:
        """Store rows the API has validated and normalised (`ModelSpec.from_public`), sent as
        columns: the vectors as one array (packed by `idios.wire` if it came through a broker)."""
        await asyncio.to_thread(self._restore, model.spec, urls, metadata, vectors)
        return len(urls)

    def _restore(self, spec: ModelSpec, urls: list[str], metadata: list[dict[str, Any]], packed: Any) -> None:
        columns = Columns(urls=urls, vectors=unpack_array(packed), metadata=metadata)
        try:
            self.store.upsert_columns(spec, columns)
        except ValueError as exc:  # columns of different lengths, or vectors of another width
            raise Invalid(f"the restore job does not fit model {spec.name}: {exc}", type="bad_job") from None
        except MilvusException as exc:  # rows Milvus refuses are refused for good: a 503 would be retried
            if not is_input_error(exc):
                raise
            raise Invalid(f"the vector store refused the rows: {exc.message}", type="store_refused") from None

    async def op_search(
        self,
        model: EmbeddingModel,
        url: str | None = None,
        text: str | None = None,
        image: str | None = None,
        limit: int = 10,
        offset: int = 0,
        min_similarity: float = 0.0,
        filter: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        spec = model.spec
        if url is not None:
            vector = await self._vector_of_url(model, url)
        elif text is not None:
            if not spec.accepts_text:
                raise Invalid(f"model {spec.name} has no text tower; search it by image", type="no_text_tower")
            vector = (await asyncio.get_running_loop().run_in_executor(self._model_pool, model.embed_texts, [text]))[0]
        elif image is not None:
            vector = await self._vector_of_upload(model, image)
        else:
            raise Invalid("give exactly one of url, text or image", type="missing_query")
        hits = await asyncio.to_thread(
            self.store.search, spec, vector, limit=limit, offset=offset, filter=expr.metadata_filter(filter)
        )
        answers = [{"url": h.url, "metadata": h.metadata, "similarity": spec.similarity(h.score)} for h in hits]
        return [answer for answer in answers if answer["similarity"] >= min_similarity]

    async def op_compare(
        self,
        model: EmbeddingModel,
        url: str | None = None,
        other: str | None = None,
        image: str | None = None,
        other_image: str | None = None,
    ) -> float:
        """Each side is a url (stored or downloaded) or a base64 image."""
        first, second = await asyncio.gather(
            self._vector_of(model, url, image), self._vector_of(model, other, other_image)
        )
        return model.spec.compare(first, second)

    async def op_urls(self, model: EmbeddingModel, cursor: str | None = None, limit: int = 1000) -> list[str]:
        """Up to `limit` urls after the cursor, fewer where more would not fit in one message (`idios.pages`)."""
        rows = await asyncio.to_thread(self.store.page, model.spec, cursor, limit, with_data=False)
        return pages.urls([row["url"] for row in rows], pages.budget(self.settings.max_message_bytes))

    async def op_dump(
        self, model: EmbeddingModel, cursor: str | None = None, limit: int = 1000, last: str | None = None
    ) -> orjson.Fragment | str:
        """A page of rows {url, metadata, embedding} after the cursor, already JSON: it travels to
        the HTTP client as it is. With `last` (the streamed dump, which knows each page's ends from
        `urls` jobs), the rows up to and including that url, as JSON Lines text, however many rows
        were written into that range since. Either way the page stops early where more rows would
        not fit in one message (`idios.pages`): the caller continues after its last url."""
        return await asyncio.to_thread(self._dump_page, model.spec, cursor, limit, last)

    def _dump_page(self, spec: ModelSpec, cursor: str | None, limit: int, last: str | None) -> orjson.Fragment | str:
        budget = pages.budget(self.settings.max_message_bytes)
        if last is None:
            limit = min(limit, pages.rows_that_fit(spec, budget))  # read no rows that could not be sent
            return orjson.Fragment(pages.json_rows(spec, self.store.columns_after(spec, cursor, limit), budget))
        return pages.json_lines(spec, self.store.columns_between(spec, cursor, last), budget)

    async def op_count(self, model: EmbeddingModel) -> int:
        return await asyncio.to_thread(self.store.count, model.spec)

    async def op_remove(self, model: EmbeddingModel, url: str) -> None:
        await asyncio.to_thread(self.store.remove, model.spec, url)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark an abandoned (timed-out) call's exception as seen, so asyncio does not log it."""
    if not future.cancelled():
        future.exception()


def _base64(data: str, limit: int) -> bytes:
    if len(data) > limit * 4 // 3 + 4:
        raise TooLarge(f"image is larger than {limit} bytes", type="image_too_large")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid("image is not valid base64", type="bad_base64") from None
