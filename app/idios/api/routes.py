"""HTTP routes: validate, turn each request into a job, hand it to the transport.

Paths are those of the original Idios API so its clients keep working.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import deque
from collections.abc import AsyncIterator
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Body, Depends, File, Form, Query, Request, Response, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import TypeAdapter, ValidationError

from idios import metrics, pages, specs
from idios.api.deps import JobsDep, JobSender, NewUrlsDep, SpecDep, TransportDep
from idios.api.guard import body_limits
from idios.api.schemas import (
    FLIP,
    MAX_PAGE,
    AddRequest,
    BulkFailure,
    BulkResult,
    BulkSearchAnswer,
    CompareRequest,
    Comparison,
    Cursor,
    DumpRow,
    DuplicatesPage,
    DuplicatesRequest,
    ErrorBody,
    ModelInfo,
    PageRequest,
    QueryError,
    RemoveRequest,
    RestoreRow,
    SearchHit,
    SearchOptions,
    SearchRequest,
)
from idios.auth import Scope
from idios.errors import Conflict, IdiosError, Invalid, TooLarge, Unavailable
from idios.protocol import (
    AddArgs,
    CompareArgs,
    CountArgs,
    DumpArgs,
    DuplicatesArgs,
    PingArgs,
    RemoveArgs,
    RestoreArgs,
    SearchArgs,
    UrlsArgs,
)
from idios.specs import ModelSpec

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (404, "Unknown model"),
        (400, "A Host the server does not answer for (IDIOS_ALLOWED_HOSTS)"),
        (413, "Body, download or image too large"),
        (415, "A body without the route's Content-Type (application/json; the upload: multipart/form-data)"),
        (422, "Invalid input, or an image that cannot be fetched or decoded"),
        (503, "No worker can take the job, or the broker or store is down; retry after Retry-After seconds"),
        (504, "No worker answered in time"),
    )
}
ADD_BULK_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/AddRequest"}}}
        },
    }
}

QUEUE_FULL_ITEM = "queue full, retry"

bearer = HTTPBearer(auto_error=False, description="An API key, when the server has keys configured")


def _require(scope: Scope) -> Any:
    """The dependency that declares (for the OpenAPI security scheme and for the front door, which
    checks keys before a body is read: idios.api.guard) and checks the key scope a route needs."""

    async def check(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]):
        presented = f"Bearer {credentials.credentials}" if credentials else request.headers.get("authorization")
        request.app.state.keys.check(presented, scope)

    check.required_scope = scope  # type: ignore[attr-defined]
    return Depends(check)


def required_scope(route: APIRoute) -> Scope | None:
    """The key scope a route's dependencies require (write covers read); None for an open route."""
    found = {getattr(dep.dependency, "required_scope", None) for dep in route.dependencies} - {None}
    return "write" if "write" in found else "read" if found else None


READ = [_require("read")]
WRITE = [_require("write")]
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No valid API key"},
    403: {"model": ErrorBody, "description": "The API key may not do this"},
}

# `router` holds the routes of the server, `model_router` those of one model, under its path.
router = APIRouter(responses=ERRORS)
model_router = APIRouter(prefix="/models/{model}", responses=ERRORS)
ROUTERS = (router, model_router)

NO_CONTENT = Response(status_code=204)


@router.get(
    "/ping",
    responses={401: AUTH_ERRORS[401]},  # any key may read
    summary="Liveness; with rpc=true, a round trip through a worker",
    description="Plain `/ping` needs no key (health checks). With `rpc=true` it costs a worker's time, so it "
    "needs a read key when the server has keys configured.",
)
async def ping(
    request: Request,
    jobs: JobsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    rpc: bool = False,
) -> str:
    if rpc:
        presented = f"Bearer {credentials.credentials}" if credentials else request.headers.get("authorization")
        request.app.state.keys.check(presented, "read")
        return await jobs.run(PingArgs())
    return "pong"


@router.get(
    "/metrics",
    dependencies=READ,
    responses={**AUTH_ERRORS, 200: {"content": {metrics.CONTENT_TYPE_LATEST: {}}, "description": "The metrics"}},
    response_class=Response,
    summary="Prometheus metrics of this process (and, from the broker, its queues)",
    description="The Prometheus text format: HTTP requests by route and status, jobs by operation and outcome, "
    "queue depths, and in `idios serve` the worker's too (downloads, forward passes, Milvus calls, model "
    "status). Each worker answers its own at `/metrics` on its health port. Needs a read key when the server "
    "has keys configured.",
)
async def get_metrics(transport: TransportDep) -> Response:
    for (model, lane), (consumers, waiting) in (await transport.queue_state()).items():
        metrics.QUEUE_CONSUMERS.labels(model, lane).set(consumers)
        metrics.QUEUE_MESSAGES.labels(model, lane).set(waiting)
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE_LATEST)


@router.get(
    "/models",
    dependencies=READ,
    responses=AUTH_ERRORS,
    summary="Every model with its dimension, metric, text support and status",
)
async def list_models(transport: TransportDep) -> list[ModelInfo]:
    status = await transport.model_status()
    answer = []
    for name, spec in specs.SPECS.items():
        state = status.get(name, {"status": "unavailable", "reason": "unknown"})
        answer.append(
            ModelInfo(
                name=name,
                dimension=spec.dim,
                metric=spec.metric,
                text=spec.accepts_text,
                description=spec.description,
                status=state["status"],
                reason=state.get("reason", ""),
            )
        )
    return answer


@model_router.post(
    "/add",
    status_code=204,
    dependencies=WRITE,
    responses=AUTH_ERRORS,
    summary="Add or replace an image (upsert by url)",
)
async def add(spec: SpecDep, jobs: JobsDep, body: AddRequest) -> Response:
    await jobs.run(AddArgs(url=body.url, metadata=body.metadata, mode="upsert"), spec, admit=True)
    return NO_CONTENT


SEARCH_ADD_GUARANTEE = (
    "Of concurrent calls for one url through one API process (add_bulk items included), exactly one "
    "answers 204 and the others 409, whichever workers run them; a call redelivered after its worker died "
    "recognises its own write (204). Calls through different API processes at the same instant may both "
    "answer 204 (the later write is kept)."
)


@model_router.post(
    "/search_add",
    dependencies=WRITE,
    status_code=204,
    summary="Add an image unless its url is stored (409)",
    description=SEARCH_ADD_GUARANTEE,
    responses={**AUTH_ERRORS, 409: {"model": ErrorBody, "description": "The url is stored already"}},
)
async def search_add(spec: SpecDep, jobs: JobsDep, new_urls: NewUrlsDep, body: AddRequest) -> Response:
    async with new_urls.hold((spec.name, body.url)):
        await jobs.run(AddArgs(url=body.url, metadata=body.metadata, mode="new"), spec, admit=True)
    return NO_CONTENT


@model_router.post(
    "/add_bulk",
    dependencies=WRITE,
    responses=AUTH_ERRORS,
    summary="Add many images; stored urls are reported as found",
    description="A request that finds the ingestion queue full (IDIOS_MAX_QUEUED_JOBS) is refused whole: 503 "
    "with Retry-After. Past that, each item is admitted on its own: one that finds the queue full is reported "
    f"in `failed` with the error '{QUEUE_FULL_ITEM} (...)'; send it again later. The request's own items are "
    "sent a few at a time, never more than that limit at once.",
    openapi_extra=ADD_BULK_BODY,
)
async def add_bulk(
    spec: SpecDep, jobs: JobsDep, new_urls: NewUrlsDep, body: Annotated[list[Any], Body()]
) -> BulkResult:
    settings, transport = jobs.settings, jobs.transport
    if len(body) > settings.max_bulk_items:
        raise TooLarge(f"at most {settings.max_bulk_items} items per request, got {len(body)}", type="too_many_items")
    await transport.ready(spec.name, admit=True)
    result = BulkResult(added=[], found=[], failed=[])
    items: list[AddRequest] = []
    for raw in body:
        try:
            items.append(AddRequest.model_validate(raw))
        except ValidationError as exc:
            url = raw.get("url") if isinstance(raw, dict) and isinstance(raw.get("url"), str) else str(raw)[:200]
            result.failed.append(BulkFailure(url=url, error="; ".join(e["msg"] for e in exc.errors())))
    # Every item becomes its own job, so workers share the load and batch items together. Each is
    # admitted like a single add; the gate keeps the request's own jobs under the limit.
    gate = asyncio.Semaphore(min(settings.prefetch * 4, settings.max_queued_jobs))

    async def one(item: AddRequest) -> tuple[str, str | None]:
        async with gate, new_urls.hold((spec.name, item.url)):
            try:
                await transport.ready(spec.name, admit=True)
            except Unavailable as exc:
                if exc.type != "queue_full":
                    return "failed", exc.msg
                return "failed", f"{QUEUE_FULL_ITEM} ({exc.msg})"
            try:
                await jobs.run(AddArgs(url=item.url, metadata=item.metadata, mode="new"), spec, bulk=True)
                return "added", None
            except IdiosError as exc:
                return ("found", None) if exc.status == Conflict.status else ("failed", exc.msg)

    outcomes = await asyncio.gather(*(one(item) for item in items))
    for item, (outcome, error) in zip(items, outcomes, strict=True):
        if outcome == "added":
            result.added.append(item.url)
        elif outcome == "found":
            result.found.append(item.url)
        else:
            result.failed.append(BulkFailure(url=item.url, error=error or "failed"))
    return result


RESTORE_ROWS = TypeAdapter(list[RestoreRow])
RESTORE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/RestoreRow"}}}
        },
    }
}


@model_router.post(
    "/restore",
    status_code=204,
    dependencies=WRITE,
    responses=AUTH_ERRORS,
    summary="Store dumped rows as they are (no download)",
    openapi_extra=RESTORE_BODY,
)
async def restore(request: Request, spec: SpecDep, jobs: JobsDep) -> Response:
    body = await request.body()
    # Parsing a million floats takes a while: in a thread, the event loop keeps answering meanwhile.
    args = await asyncio.to_thread(_restore_args, spec, body, jobs.settings.max_restore_rows)
    await jobs.run(args, spec, bulk=True)
    return NO_CONTENT


def _restore_args(spec: ModelSpec, body: bytes, max_rows: int) -> RestoreArgs:
    """Validate a restore body whole (nothing is stored unless every row is good) and turn it into
    the job's columns, the embeddings normalised to their stored form in one array."""
    # Parsed and validated in one pass by pydantic-core: restores carry millions of floats, and
    # FastAPI's own body handling (json.loads, then validation, then model_dump) is several times slower.
    try:
        rows = RESTORE_ROWS.validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_input=False)) from None
    if len(rows) > max_rows:
        raise TooLarge(f"at most {max_rows} rows per request", type="too_many_items")
    keypoints = spec.vector_kind == "keypoints"
    for index, row in enumerate(rows):
        if keypoints != isinstance(row.embedding, str):
            what = "a base64 string of keypoints" if keypoints else f"a list of {spec.dim} numbers"
            raise Invalid(f"row {index}: a {spec.name} embedding is {what}", type="wrong_dimension")
        if not keypoints and len(row.embedding) != spec.dim:
            raise Invalid(
                f"row {index}: embedding has {len(row.embedding)} values, model {spec.name} needs {spec.dim}",
                type="wrong_dimension",
            )
    embeddings: Any = [row.embedding for row in rows]
    if keypoints:
        spec.from_public(embeddings)  # checked here (422 naming the row); the job carries them as sent
        vectors = embeddings
    else:
        # Normalised to the stored form, as one array: packed for the wire by the transport that needs it.
        vectors = spec.from_public(np.array(embeddings, dtype=np.float64).reshape(len(rows), spec.dim))
    return RestoreArgs(urls=[row.url for row in rows], metadata=[row.metadata or {} for row in rows], vectors=vectors)


async def _search(jobs: JobSender, spec: ModelSpec, args: SearchArgs) -> list[SearchHit]:
    if args.text is not None and not spec.accepts_text:
        raise Invalid(f"model {spec.name} has no text tower; search it by url or image", type="no_text_tower")
    return await jobs.run(args, spec)


@model_router.post(
    "/search",
    dependencies=READ,
    responses=AUTH_ERRORS,
    summary="Similar images to a url, a text or a base64 image; best first",
)
async def search(spec: SpecDep, jobs: JobsDep, body: SearchRequest) -> list[SearchHit]:
    return await _search(jobs, spec, SearchArgs(**body.model_dump()))


SEARCH_BULK_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/SearchRequest"}}}
        },
    }
}
# Queries of one search_bulk searching at once: the others wait, so one request cannot take every worker.
SEARCH_BULK_IN_FLIGHT = 4


@model_router.post(
    "/search_bulk",
    dependencies=READ,
    responses=AUTH_ERRORS,
    summary="Many searches in one request, answered in order, each with its hits or its own error",
    description="Up to IDIOS_MAX_BULK_QUERIES queries, each a search body (url, text or base64 image, with its "
    "options). Each is answered `{hits}` or `{error: {status, type, msg}}` in the order sent: a bad query fails "
    "alone. The request itself is refused only when it is too large or no worker can take any query (503).",
    openapi_extra=SEARCH_BULK_BODY,
)
async def search_bulk(spec: SpecDep, jobs: JobsDep, body: Annotated[list[Any], Body()]) -> list[BulkSearchAnswer]:
    settings = jobs.settings
    if len(body) > settings.max_bulk_queries:
        raise TooLarge(
            f"at most {settings.max_bulk_queries} queries per request, got {len(body)}", type="too_many_queries"
        )
    await jobs.transport.ready(spec.name)
    image_limit = body_limits(settings)["search"][0]  # each query is one job: one broker message
    gate = asyncio.Semaphore(SEARCH_BULK_IN_FLIGHT)

    async def one(raw: Any) -> BulkSearchAnswer:
        try:
            query = SearchRequest.model_validate(raw)
            if query.image is not None and len(query.image) > image_limit:
                raise TooLarge(
                    f"this query's image is larger than {image_limit} bytes of base64, the limit of one search",
                    type="image_too_large",
                )
            async with gate:
                return BulkSearchAnswer(hits=await _search(jobs, spec, SearchArgs(**query.model_dump())))
        except ValidationError as exc:
            msg = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'query'}: {e['msg']}" for e in exc.errors())
            return BulkSearchAnswer(error=QueryError(status=422, type="invalid_query", msg=msg[:1000]))
        except IdiosError as exc:
            return BulkSearchAnswer(error=QueryError(status=exc.status, type=exc.type, msg=exc.msg))

    return list(await asyncio.gather(*(one(raw) for raw in body)))


@model_router.post(
    "/search/upload",
    dependencies=READ,
    responses=AUTH_ERRORS,
    summary="Similar images to an uploaded file (multipart)",
)
async def search_upload(
    spec: SpecDep,
    jobs: JobsDep,
    file: Annotated[UploadFile, File(description="The query image")],
    limit: Annotated[int, Form(ge=1, le=1000)] = 10,
    offset: Annotated[int, Form(ge=0, le=10000)] = 0,
    min_similarity: Annotated[float, Form(ge=0, le=100)] = 0.0,
    filter: Annotated[str | None, Form(description='JSON object, e.g. {"tags": "letter"}')] = None,
    flip: Annotated[bool, Form(description=FLIP)] = False,
) -> list[SearchHit]:
    limit_bytes = jobs.settings.max_download_bytes
    data = await file.read(limit_bytes + 1)
    if len(data) > limit_bytes:
        raise TooLarge(f"image is larger than {limit_bytes} bytes", type="image_too_large")
    if not data:
        raise Invalid("the uploaded file is empty", type="empty_file")
    try:
        options = SearchOptions(
            limit=limit,
            offset=offset,
            min_similarity=min_similarity,
            filter=json.loads(filter) if filter else None,
            flip=flip,
        )
    except (ValueError, ValidationError) as exc:
        raise Invalid(f"bad filter: {exc}", type="bad_filter") from None
    args = SearchArgs(**options.model_dump(), image=base64.b64encode(data).decode())
    return await _search(jobs, spec, args)


@model_router.post(
    "/compare",
    dependencies=READ,
    responses=AUTH_ERRORS,
    summary="Similarity 0-100 of two images; with details, where they match",
)
async def compare(spec: SpecDep, jobs: JobsDep, body: CompareRequest) -> float | Comparison:
    found = Comparison.model_validate(await jobs.run(CompareArgs(**body.model_dump(exclude={"details"})), spec))
    return found if body.details else found.similarity


@model_router.post(
    "/urls",
    dependencies=READ,
    responses=AUTH_ERRORS,
    summary="Stored urls, ascending, strictly after the cursor",
)
async def urls(spec: SpecDep, jobs: JobsDep, body: PageRequest | None = None) -> list[str]:
    page = body or PageRequest()
    return await jobs.run(UrlsArgs(cursor=page.cursor, limit=page.limit), spec)


@model_router.post(
    "/dump",
    dependencies=READ,
    responses=AUTH_ERRORS,
    summary="Stored rows with embeddings, ascending by url, after the cursor",
    response_model=list[DumpRow],
)
async def dump(spec: SpecDep, jobs: JobsDep, body: PageRequest | None = None) -> Response:
    """At most `limit` rows, fewer where more would pass the broker's message size: continue with
    the last url of each page as the next cursor until a page comes back empty."""
    page = body or PageRequest()
    rows = await jobs.run(DumpArgs(cursor=page.cursor, limit=page.limit), spec, bulk=True)
    # The worker answers the page already encoded (an orjson.Fragment, passed through as it is); an
    # older worker answers the rows themselves. Either way they are what the schema says.
    return Response(orjson.dumps(rows, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


# Range jobs of a streamed dump running at once: the store, the worker's encoding and the HTTP
# transfer each have a page to work on.
DUMP_IN_FLIGHT = 2


@model_router.get(
    "/dump.jsonl",
    dependencies=READ,
    responses={
        **AUTH_ERRORS,
        200: {"content": {"application/x-ndjson": {}}, "description": "One DumpRow per line, ascending by url."},
    },
    summary="Every stored row with its embedding after the cursor, streamed as JSON Lines",
    response_class=StreamingResponse,
)
async def dump_stream(
    spec: SpecDep,
    jobs: JobsDep,
    after: Annotated[Cursor, Query(description="Start strictly after this url (resume an interrupted dump).")] = None,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Rows per store query.")] = 5000,
) -> StreamingResponse:
    """The whole collection in one response, one row per line, as `POST /dump` pages give them.
    Every row stored when the dump starts is in it, once, in url order, whatever is written
    meanwhile (rows written during the dump may or may not be). An error after the first rows
    cuts the response short (no final chunk): a client can tell a broken dump from a complete
    one, and resume it with `after` set to the last url it received."""
    # Each range's ends come from a `urls` job (urls only, cheap), its rows from a `dump` job for
    # that range; DUMP_IN_FLIGHT range jobs run at once, so the store reads one range while the
    # worker encodes another and the API sends a third. A range job answers every row of its
    # range, rows written into it since included, as far as fits in one message: when it stops
    # short, the rest of its range is the next job, before the ranges already under way.
    # The urls per range: no more than an answer can carry, and fewer once an answer stops short.
    size = min(page, pages.rows_that_fit(spec, pages.budget(jobs.settings.max_message_bytes)))

    def range_job(cursor: str | None, last: str) -> tuple[str, asyncio.Task[str]]:
        args = DumpArgs(cursor=cursor, limit=size, last=last)
        return last, asyncio.ensure_future(jobs.run(args, spec, bulk=True))

    async def next_range(cursor: str | None) -> tuple[str, asyncio.Task[str]] | None:
        """The next range's last url and the job fetching its rows; None at the end."""
        urls = await jobs.run(UrlsArgs(cursor=cursor, limit=size), spec)
        return range_job(cursor, urls[-1]) if urls else None

    first = await next_range(after)  # errors here (unknown model, no worker) are ordinary HTTP errors
    if first is not None:
        await first[1]  # and so are those of the first range's rows (awaiting it again gives the rows)

    async def lines() -> AsyncIterator[bytes]:
        nonlocal size
        pending: deque[tuple[str, asyncio.Task[str]]] = deque()
        upcoming = first
        try:
            while upcoming is not None or pending:
                while upcoming is not None and len(pending) < DUMP_IN_FLIGHT:
                    pending.append(upcoming)
                    upcoming = await next_range(upcoming[0])
                last, job = pending.popleft()
                text = await job
                if not text:  # the range's rows were all removed meanwhile
                    continue
                yield text.encode()
                end = pages.last_url(text)
                if end != last:  # stopped short of its range: the rest comes next
                    size = max(1, min(size, text.count("\n")))
                    pending.appendleft(range_job(end, last))
        finally:
            for _, job in pending:
                job.cancel()

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@model_router.post(
    "/duplicates",
    dependencies=READ,
    responses=AUTH_ERRORS,
    summary="Groups of stored images that are copies of each other, a page of the collection at a time",
)
async def duplicates(spec: SpecDep, jobs: JobsDep, body: DuplicatesRequest | None = None) -> DuplicatesPage:
    """Walks the stored urls in url order, `limit` of them per page: each is searched by its stored
    vector, and it and its copies (`min_similarity` and up) form a group, reported at the group's first
    url only. Continue with the answer's `cursor` until it is null. Where copying is not transitive (a
    crop of a crop), a url whose copies come before it in url order is not reported with them."""
    page = body or DuplicatesRequest()
    minimum = spec.copy_similarity if page.min_similarity is None else page.min_similarity
    args = DuplicatesArgs(cursor=page.cursor, limit=page.limit, min_similarity=minimum, max_group=page.max_group)
    # Admitted like an add (503 when the ingestion queue is full): a page is seconds of a worker's time.
    return DuplicatesPage.model_validate(await jobs.run(args, spec, bulk=True, admit=True))


@model_router.get("/count", dependencies=READ, responses=AUTH_ERRORS, summary="Number of stored images")
async def count(spec: SpecDep, jobs: JobsDep) -> int:
    return await jobs.run(CountArgs(), spec)


@model_router.post(
    "/remove",
    status_code=204,
    dependencies=WRITE,
    responses=AUTH_ERRORS,
    summary="Remove an image by url",
)
async def remove(spec: SpecDep, jobs: JobsDep, body: RemoveRequest) -> Response:
    await jobs.run(RemoveArgs(url=body.url), spec)
    return NO_CONTENT
