"""The job handlers a worker runs: one per operation of `idios.protocol`, fed by any transport.

`JobRunner.run` answers every job with a reply envelope and never raises, so a bad job cannot take
the worker down with it. The handlers use three pieces: the loaded models (`idios.loading`), the
thread pools their slow calls run in (`idios.compute`), and the store (`idios.store`, whose errors
are Idios's own).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from PIL.Image import Image

from idios import copysearch, expr, metrics, pages
from idios.batching import MicroBatcher
from idios.compute import Compute
from idios.config import Settings
from idios.errors import Conflict, IdiosError, Invalid, Timeout, TooLarge
from idios.images import ImageFetcher
from idios.loading import LoadedModels, ModelStatus
from idios.locks import KeyedLocks
from idios.logs import REQUEST_ID
from idios.models import Comparison, EmbeddingModel
from idios.protocol import (
    OPERATIONS,
    AddArgs,
    CompareArgs,
    CountArgs,
    DumpArgs,
    DuplicatesArgs,
    Job,
    PingArgs,
    RemoveArgs,
    Reply,
    RestoreArgs,
    SearchArgs,
    StatusArgs,
    UrlsArgs,
    failed,
    ok,
)
from idios.specs import SPECS, ModelSpec
from idios.store import Columns, Store
from idios.wire import unpack_array

log = logging.getLogger("idios.jobs")

Handler = Callable[[Job[Any]], Awaitable[Any]]

# A duplicates page stops this many seconds (or a tenth of its time, if less) before its deadline,
# to answer with the urls it examined.
DUPLICATES_MARGIN = 5.0


class Fetcher(Protocol):
    """Downloads an image's bytes (`idios.images.ImageFetcher`), raising IdiosError when it cannot."""

    async def fetch(self, url: str) -> bytes: ...

    async def aclose(self) -> None: ...


@dataclass
class PendingAdd:
    """One add waiting in a batch."""

    args: AddArgs
    redelivered: bool
    request_id: str = ""  # the batch's lines about this add name its request, not the batch's first


@contextlib.contextmanager
def _serving(pending: PendingAdd) -> Iterator[None]:
    """Log lines in the block name the request of this add (a batch's task has its first add's)."""
    token = REQUEST_ID.set(pending.request_id)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


class JobRunner:
    """Runs jobs against the loaded models, the image fetcher and the store."""

    def __init__(self, settings: Settings, store: Store, *, fetcher: Fetcher | None = None) -> None:
        self.settings = settings
        self.store = store
        self.fetcher: Fetcher = fetcher if fetcher is not None else ImageFetcher(settings)
        self.models = LoadedModels(settings, store)
        self.compute = Compute(settings)
        self.adds_in_flight = 0
        self.walks_in_flight = 0  # duplicates pages under way
        self.expired = 0
        self._new_urls = KeyedLocks()
        self._adds: MicroBatcher[PendingAdd, Reply] = MicroBatcher(
            self._add_batch, max_size=settings.batch_size, linger=settings.batch_linger_ms / 1000
        )
        self.handlers: dict[str, Handler] = {
            PingArgs.op: self.ping,
            StatusArgs.op: self.model_status,
            AddArgs.op: self.add,
            RestoreArgs.op: self.restore,
            SearchArgs.op: self.search,
            CompareArgs.op: self.compare,
            UrlsArgs.op: self.urls,
            DumpArgs.op: self.dump,
            DuplicatesArgs.op: self.duplicates,
            CountArgs.op: self.count,
            RemoveArgs.op: self.remove,
        }
        assert self.handlers.keys() == OPERATIONS.keys(), "every operation has a handler"

    @property
    def status(self) -> ModelStatus:
        return self.models.status

    def load_models(self) -> list[str]:
        return self.models.load_all()

    async def aclose(self) -> None:
        await self.fetcher.aclose()
        self.compute.close()

    # dispatch

    async def run(self, job: Job[Any]) -> Reply:
        # A job names any model it likes (a broker's message is anyone's): unknown names share one series.
        model = "" if job.model is None else job.model if job.model in SPECS else "unknown"
        in_progress = metrics.JOBS_IN_PROGRESS.labels(model, job.lane)
        in_progress.inc()
        started = time.perf_counter()
        outcome = "cancelled"  # the caller stopped waiting (a streamed dump's client went away)
        try:
            reply = await self._run(job)
            outcome = metrics.outcome(None if reply["ok"] else IdiosError.from_wire(reply["error"]))
            return reply
        finally:
            in_progress.dec()
            seconds = time.perf_counter() - started
            metrics.JOB_SECONDS.labels(job.op).observe(seconds)
            metrics.JOBS.labels(job.op, outcome).inc()
            log.debug("%s job of %s: %s in %.1f ms", job.op, job.model or "no model", outcome, 1000 * seconds)

    async def _run(self, job: Job[Any]) -> Reply:
        try:
            if job.expired():
                self.expired += 1
                log.info("dropped a %s job: its deadline passed before it started", job.op)
                raise Timeout("the request's deadline passed before a worker could start it", type="deadline")
            return ok(await self.handlers[job.op](job))
        except IdiosError as exc:
            return failed(exc)
        except Exception as exc:  # a bug: answer anyway, keep the worker alive
            log.exception("job %s failed", job.op)
            return failed(IdiosError(f"internal error ({type(exc).__name__})", status=500, type="internal"))

    # building blocks

    async def _image(self, url: str, model: EmbeddingModel, *, interactive: bool = False) -> Image:
        started = time.perf_counter()
        try:
            data = await self.fetcher.fetch(url)
            image = await self._decode(data, model, interactive=interactive)
        except IdiosError as exc:
            metrics.DOWNLOADS.labels(metrics.download_outcome(exc)).inc()
            raise
        metrics.DOWNLOADS.labels("ok").inc()
        metrics.DOWNLOAD_SECONDS.observe(time.perf_counter() - started)
        return image

    async def _decode(self, data: bytes, model: EmbeddingModel, *, interactive: bool) -> Image:
        """The image decoded at the sizes the model needs (`EmbeddingModel.decode_side`, `smallest_side`)."""
        return await self.compute.decode(
            data, interactive=interactive, min_side=model.decode_side(interactive), smallest_side=model.smallest_side
        )

    async def _queries(
        self, model: EmbeddingModel, url: str | None, image: str | None, *, flip: bool = False
    ) -> list[tuple[Any, bool]]:
        """The query of a url or a base64 image, and with `flip` the mirrored image's, each with
        whether it is mirrored. A stored url's own vector serves (no download) unless its mirror is
        needed: then the image is downloaded once, for the mirror."""
        if (url is None) == (image is None):
            raise Invalid("give exactly one of url or image for each side", type="missing_query")
        if url is not None:
            stored = await self.compute.store_call(self.store.vectors, model.spec, [url], interactive=True)
            if url in stored:
                own = (model.stored_query(stored[url]), False)
                if not flip:
                    return [own]
                mirrored = await self.compute.mirror(await self._image(url, model, interactive=True))
                return [own, ((await self.compute.embed_queries(model, [mirrored]))[0], True)]
            picture = await self._image(url, model, interactive=True)
        else:
            data = _base64(image or "", self.settings.max_download_bytes)
            picture = await self._decode(data, model, interactive=True)
        pictures = [picture, await self.compute.mirror(picture)] if flip else [picture]
        queries = await self.compute.embed_queries(model, pictures)
        return list(zip(queries, (False, True), strict=False))

    # operations

    async def ping(self, job: Job[PingArgs]) -> str:
        return "pong"

    async def model_status(self, job: Job[StatusArgs]) -> ModelStatus:
        return self.models.status

    async def add(self, job: Job[AddArgs]) -> str:
        """Adds go through the batcher; concurrent adds for a model share one forward pass.

        `new` adds of one url run one after the other in this worker (the existence check and the
        write of one are not interleaved with another's), so only one of them answers "added".
        A redelivered job (the broker gave it again: a worker died before acking it) recognises
        its own earlier write: a stored entry with the job's metadata answers "added"."""
        model = self.models.get(job.model)
        pending = PendingAdd(job.args, job.redelivered, job.request_id)
        self.adds_in_flight += 1
        try:
            if job.args.mode == "new":
                async with self._new_urls.hold((model.spec.name, job.args.url)):
                    reply = await self._adds.submit(model.spec.name, pending)
            else:
                reply = await self._adds.submit(model.spec.name, pending)
        finally:
            self.adds_in_flight -= 1
        if not reply["ok"]:
            raise IdiosError.from_wire(reply["error"])
        return str(reply["value"])

    async def _add_batch(self, name: Hashable, batch: list[PendingAdd]) -> list[Reply]:
        """One reply per add: the stored urls a `new` add refuses, then the downloads, then one
        forward pass and one write for every image that decoded."""
        model = self.models.get(str(name))
        replies: list[Reply | None] = [None] * len(batch)
        try:
            await self._refuse_stored(model.spec, batch, replies)
            images = await self._fetch_images(model, batch, replies)
            if images:
                refused = await self._embed_and_store(model, batch, images)
                for i in images:
                    replies[i] = refused.get(batch[i].args.url) or ok("added")
        except IdiosError as exc:  # the store failed: every add not answered yet fails with it
            return [reply if reply is not None and not reply["ok"] else failed(exc) for reply in replies]
        return [reply if reply is not None else failed(IdiosError("not processed", status=500)) for reply in replies]

    async def _refuse_stored(self, spec: ModelSpec, batch: list[PendingAdd], replies: list[Reply | None]) -> None:
        """Answer the `new` adds whose url is stored: 409, or "added" for a redelivered job's own write."""
        fresh = [i for i, pending in enumerate(batch) if pending.args.mode == "new"]
        if not fresh:
            return
        found = await self.compute.store_call(self.store.existing, spec, [batch[i].args.url for i in fresh])
        again = [batch[i].args.url for i in fresh if batch[i].args.url in found and batch[i].redelivered]
        own = await self.compute.store_call(self.store.metadata, spec, again) if again else {}
        for i in fresh:
            url = batch[i].args.url
            if url in own and own[url] == (batch[i].args.metadata or {}):
                replies[i] = ok("added")  # this job's own write, before its worker died unacked
            elif url in found:
                replies[i] = failed(Conflict(f"already stored: {url}", type="already_stored"))

    async def _fetch_images(
        self, model: EmbeddingModel, batch: list[PendingAdd], replies: list[Reply | None]
    ) -> dict[int, Image]:
        """Download and decode the images of the adds not answered yet, at once; answer those that fail."""
        todo = [i for i, reply in enumerate(replies) if reply is None]
        fetched = await asyncio.gather(*(self._image(batch[i].args.url, model) for i in todo), return_exceptions=True)
        images: dict[int, Image] = {}
        for i, image in zip(todo, fetched, strict=True):
            if isinstance(image, IdiosError):
                replies[i] = failed(image)
            elif isinstance(image, BaseException):
                with _serving(batch[i]):
                    log.error("fetching %s failed: %r", batch[i].args.url, image)
                replies[i] = failed(IdiosError(f"internal error ({type(image).__name__})", status=500))
            else:
                images[i] = image
        return images

    async def _embed_and_store(
        self, model: EmbeddingModel, batch: list[PendingAdd], images: dict[int, Image]
    ) -> dict[str, Reply]:
        """One forward pass and one write; the failure of each url the model or the store refused.

        A write the store refuses (a row it will not take: a url or metadata over its limits, which
        a job from another release or a forged one can carry) is tried again row by row, so only
        the adds whose rows it refuses fail, not every add that shared their batch."""
        vectors, refused = await self._embed(model, batch, images)
        rows = {}
        for i, vector in vectors.items():
            args = batch[i].args
            rows[args.url] = {"url": args.url, "vector": vector, "metadata": args.metadata}
        if not rows:
            return refused
        try:
            await self.compute.store_call(self.store.upsert, model.spec, list(rows.values()))
            return refused
        except Invalid:
            if len(rows) == 1:
                raise
        for url, row in rows.items():
            try:
                await self.compute.store_call(self.store.upsert, model.spec, [row])
            except Invalid as exc:
                refused[url] = failed(exc)
        return refused

    async def _embed(
        self, model: EmbeddingModel, batch: list[PendingAdd], images: dict[int, Image]
    ) -> tuple[dict[int, Any], dict[str, Reply]]:
        """The vector of each image, in one forward pass; where that fails, a pass per image, so an
        image the model cannot take fails alone (with its own error) rather than with its batch."""
        try:
            return dict(zip(images, await self.compute.embed(model, list(images.values())), strict=True)), {}
        except Exception:
            if len(images) == 1:
                raise
        vectors: dict[int, Any] = {}
        refused: dict[str, Reply] = {}
        for i, image in images.items():
            try:
                vectors[i] = (await self.compute.embed(model, [image]))[0]
            except IdiosError as exc:
                refused[batch[i].args.url] = failed(exc)
            except Exception as exc:
                with _serving(batch[i]):
                    log.exception("model %s failed on %s", model.spec.name, batch[i].args.url)
                refused[batch[i].args.url] = failed(IdiosError(f"internal error ({type(exc).__name__})", status=500))
        return vectors, refused

    async def restore(self, job: Job[RestoreArgs]) -> int:
        model = self.models.get(job.model)
        args = job.args
        # A keypoints model's rows travel as the base64 strings the client sent, checked again here.
        keypoints = model.spec.vector_kind == "keypoints"
        vectors = model.spec.from_public(list(args.vectors)) if keypoints else unpack_array(args.vectors)
        columns = Columns(urls=args.urls, vectors=vectors, metadata=args.metadata)
        try:
            await self.compute.store_call(self.store.upsert_columns, model.spec, columns)
        except ValueError as exc:  # columns of different lengths, or vectors of another width
            raise Invalid(f"the restore job does not fit model {model.spec.name}: {exc}", type="bad_job") from None
        return len(args.urls)

    async def search(self, job: Job[SearchArgs]) -> list[dict[str, Any]]:
        """Hits, best first: {url, metadata, similarity, flipped}, and the match of a copy detection
        model. With `flip` the mirrored query is searched too, and each url keeps its better hit."""
        model = self.models.get(job.model)
        spec, args = model.spec, job.args
        if sum(query is not None for query in (args.url, args.text, args.image)) != 1:
            raise Invalid("give exactly one of url, text or image", type="missing_query")
        if args.text is not None:
            if args.flip:
                raise Invalid("flip mirrors an image query; a text has no mirror", type="bad_flip")
            if not spec.accepts_text:
                raise Invalid(f"model {spec.name} has no text tower; search it by image", type="no_text_tower")
            queries = [(await self.compute.embed_text(model, args.text), False)]
        else:
            queries = await self._queries(model, args.url, args.image, flip=args.flip)
        filter = expr.metadata_filter(args.filter)
        if len(queries) == 1:
            hits = await self._search_one(model, queries[0][0], limit=args.limit, offset=args.offset, filter=filter)
        else:
            found: dict[str, dict[str, Any]] = {}
            for query, flipped in queries:
                for hit in await self._search_one(
                    model, query, limit=args.limit + args.offset, filter=filter, flipped=flipped
                ):
                    if hit["url"] not in found or hit["similarity"] > found[hit["url"]]["similarity"]:
                        found[hit["url"]] = hit
            ranked = sorted(found.values(), key=lambda hit: -hit["similarity"])
            hits = ranked[args.offset : args.offset + args.limit]
        return [hit for hit in hits if hit["similarity"] >= args.min_similarity]

    async def _search_one(
        self, model: EmbeddingModel, query: Any, *, limit: int, offset: int = 0, filter: str = "", flipped: bool = False
    ) -> list[dict[str, Any]]:
        """Hits of one query; `flipped`: the query is the mirrored image (its match boxes are mirrored back)."""
        spec = model.spec
        if spec.vector_kind == "keypoints":
            copies = await self.compute.store_call(
                copysearch.search, self.store, spec, query, count=limit + offset, filter=filter
            )
            return [
                {
                    "url": copy.url,
                    "metadata": copy.metadata,
                    "similarity": spec.similarity(copy.match.inliers),
                    "flipped": flipped,
                    "match": (copy.match.mirrored() if flipped else copy.match).to_public(),
                }
                for copy in copies[offset:]
            ]
        hits = await self.compute.store_call(self.store.search, spec, query, limit=limit, offset=offset, filter=filter)
        return [
            {"url": hit.url, "metadata": hit.metadata, "similarity": spec.similarity(hit.score), "flipped": flipped}
            for hit in hits
        ]

    async def compare(self, job: Job[CompareArgs]) -> dict[str, Any]:
        """{similarity, match, flipped}: with `flip`, the better of the first image and its mirror."""
        model = self.models.get(job.model)
        args = job.args
        firsts, seconds = await asyncio.gather(
            self._queries(model, args.url, args.image, flip=args.flip),
            self._queries(model, args.other, args.other_image),
        )
        best: tuple[Comparison, bool] | None = None
        for query, flipped in firsts:
            found = await self.compute.compare(model, query, seconds[0][0])
            if best is None or found.similarity > best[0].similarity:
                best = (found, flipped)
        assert best is not None
        comparison, flipped = best
        match = comparison.match and (comparison.match.mirrored() if flipped else comparison.match).to_public()
        return {"similarity": comparison.similarity, "match": match, "flipped": flipped}

    async def duplicates(self, job: Job[DuplicatesArgs]) -> dict[str, Any]:
        """{groups, cursor, examined}: each url of the page with its copies (those its stored vector
        finds, `min_similarity` and up), as a group {urls, similarity} (the urls in url order, the
        similarity of every pair as a matrix). A group is reported at its first url: at a url with
        copies before it in url order, only when none of those found it (a copy found one way only:
        a small crop finds its original, not the other way). `cursor` is the last url examined (where
        the next page starts), None at the end. The page stops early where more groups would not fit
        in one message (`idios.pages`), or when the job's deadline nears (its searches are what take
        the time: the next page goes on from there)."""
        model = self.models.get(job.model)
        spec, args = model.spec, job.args
        rows = await self.compute.store_call(self.store.page, spec, args.cursor, args.limit, with_data=False)
        urls = [row["url"] for row in rows]
        stored = await self.compute.store_call(self.store.vectors, spec, urls, strong=True)
        budget, size = pages.budget(self.settings.max_message_bytes), pages.ENVELOPE + 64
        stop = job.deadline - min(DUPLICATES_MARGIN, job.timeout / 10)
        found: dict[str, set[str]] = {}  # each url searched: its copies
        groups: list[dict[str, Any]] = []
        cursor, examined = args.cursor, 0
        self.walks_in_flight += 1
        try:
            for url in urls:
                if examined and time.time() > stop:
                    break
                copies = await self._copies(model, url, stored, found, args)
                if copies and not await self._found_before(model, url, copies, stored, found, args):
                    group = await self._group(model, sorted({url, *copies}), stored)
                    size += len(orjson.dumps(group)) + 1
                    if groups and size > budget:
                        break  # this url starts the next page
                    groups.append(group)
                cursor, examined = url, examined + 1
        finally:
            self.walks_in_flight -= 1
        done = len(rows) < args.limit and examined == len(urls)
        return {"groups": groups, "cursor": None if done else cursor, "examined": examined}

    async def _copies(
        self, model: EmbeddingModel, url: str, stored: dict[str, Any], found: dict[str, set[str]], args: DuplicatesArgs
    ) -> set[str]:
        """The urls a stored url's vector finds at `min_similarity` and up, itself left out (once per page)."""
        if url not in found:
            if url not in stored:  # a url of an earlier page, or removed meanwhile
                stored.update(await self.compute.store_call(self.store.vectors, model.spec, [url], strong=True))
            hits = (
                await self._search_one(model, model.stored_query(stored[url]), limit=args.max_group)
                if url in stored
                else []
            )
            found[url] = {hit["url"] for hit in hits if hit["similarity"] >= args.min_similarity} - {url}
        return found[url]

    async def _found_before(
        self,
        model: EmbeddingModel,
        url: str,
        copies: set[str],
        stored: dict[str, Any],
        found: dict[str, set[str]],
        args: DuplicatesArgs,
    ) -> bool:
        """Whether a copy before `url` in url order finds it: then the group at that copy has it."""
        for copy in sorted(copy for copy in copies if copy < url):
            if url in await self._copies(model, copy, stored, found, args):
                return True
        return False

    async def _group(self, model: EmbeddingModel, urls: list[str], known: dict[str, Any]) -> dict[str, Any]:
        """The group's urls and the similarity of each pair of them, from their stored vectors."""
        missing = [url for url in urls if url not in known]
        stored = {**known, **await self.compute.store_call(self.store.vectors, model.spec, missing, strong=True)}
        members = [url for url in urls if url in stored]  # a member removed meanwhile is left out
        queries = [model.stored_query(stored[url]) for url in members]
        similarity = [[100.0] * len(members) for _ in members]
        for i, j in itertools.combinations(range(len(members)), 2):
            found = await self.compute.compare(model, queries[i], queries[j], interactive=False)
            similarity[i][j] = similarity[j][i] = found.similarity
        return {"urls": members, "similarity": similarity}

    async def urls(self, job: Job[UrlsArgs]) -> list[str]:
        """Up to `limit` urls after the cursor, fewer where more would not fit in one message (`idios.pages`)."""
        spec = self.models.get(job.model).spec
        rows = await self.compute.store_call(self.store.page, spec, job.args.cursor, job.args.limit, with_data=False)
        return pages.urls([row["url"] for row in rows], pages.budget(self.settings.max_message_bytes))

    async def dump(self, job: Job[DumpArgs]) -> orjson.Fragment | str:
        """A page of rows {url, metadata, embedding} after the cursor, already JSON: it travels to
        the HTTP client as it is. With `last` (the streamed dump, which knows each page's ends from
        `urls` jobs), the rows up to and including that url, as JSON Lines text, however many rows
        were written into that range since. Either way the page stops early where more rows would
        not fit in one message (`idios.pages`): the caller continues after its last url."""
        spec = self.models.get(job.model).spec
        return await self.compute.store_call(self._dump_page, spec, job.args)

    def _dump_page(self, spec: ModelSpec, args: DumpArgs) -> orjson.Fragment | str:
        budget = pages.budget(self.settings.max_message_bytes)
        if args.last is None:
            limit = min(args.limit, pages.rows_that_fit(spec, budget))  # read no rows that could not be sent
            return orjson.Fragment(pages.json_rows(spec, self.store.columns_after(spec, args.cursor, limit), budget))
        return pages.json_lines(spec, self.store.columns_between(spec, args.cursor, args.last), budget)

    async def count(self, job: Job[CountArgs]) -> int:
        return await self.compute.store_call(self.store.count, self.models.get(job.model).spec)

    async def remove(self, job: Job[RemoveArgs]) -> None:
        await self.compute.store_call(self.store.remove, self.models.get(job.model).spec, job.args.url)


def _base64(data: str, limit: int) -> bytes:
    if len(data) > limit * 4 // 3 + 4:
        raise TooLarge(f"image is larger than {limit} bytes", type="image_too_large")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid("image is not valid base64", type="bad_base64") from None
