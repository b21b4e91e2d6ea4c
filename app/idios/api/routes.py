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

from idios import models, pages
from idios.api.schemas import (
    MAX_PAGE,
    AddRequest,
    BulkFailure,
    BulkResult,
    CompareRequest,
    Cursor,
    DumpRow,
    ErrorBody,
    ModelInfo,
    PageRequest,
    RemoveRequest,
    RestoreRow,
    SearchHit,
    SearchOptions,
    SearchRequest,
)
from idios.auth import Scope
from idios.config import Settings
from idios.errors import Conflict, IdiosError, Invalid, TooLarge, Unavailable
from idios.models import ModelSpec
from idios.transport import KeyedLocks, Lane, Transport, make_job

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

router = APIRouter(responses=ERRORS)

NO_CONTENT = Response(status_code=204)


def _transport(request: Request) -> Transport:
    return request.app.state.transport


def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _call(
    request: Request,
    op: str,
    model: str | None,
    args: dict[str, Any],
    lane: Lane,
    *,
    bulk: bool = False,
    admit: bool = False,
) -> Any:
    if model is not None:
        models.spec(model)  # 404 for an unknown model before anything is queued
    settings = _settings(request)
    transport = _transport(request)
    await transport.ready(model, admit=admit)
    timeout = settings.bulk_timeout if bulk else settings.request_timeout
    return await transport.call(make_job(op, model, args, timeout), lane)


@router.get(
    "/ping",
    responses={401: AUTH_ERRORS[401]},  # any key may read
    summary="Liveness; with rpc=true, a round trip through a worker",
    description="Plain `/ping` needs no key (health checks). With `rpc=true` it costs a worker's time, so it "
    "needs a read key when the server has keys configured.",
)
async def ping(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    rpc: bool = False,
) -> str:
    if rpc:
        presented = f"Bearer {credentials.credentials}" if credentials else request.headers.get("authorization")
        request.app.state.keys.check(presented, "read")
        return await _call(request, "ping", None, {}, "interactive")
    return "pong"


@router.get(
    "/models",
    dependencies=READ,
    responses=AUTH_ERRORS,
    summary="Every model with its dimension, metric, text support and status",
)
async def list_models(request: Request) -> list[ModelInfo]:
    status = await _transport(request).model_status()
    answer = []
    for name, cls in models.REGISTRY.items():
        spec = cls.spec
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


@router.post(
    "/models/{model}/add",
    status_code=204,
    dependencies=WRITE,
    responses=AUTH_ERRORS,
    summary="Add or replace an image (upsert by url)",
)
async def add(request: Request, model: str, body: AddRequest) -> Response:
    return await _add(request, model, body, "upsert")


async def _add(request: Request, model: str, body: AddRequest, mode: str) -> Response:
    """One image: `upsert` replaces a stored url's entry, `new` refuses it with 409."""
    args = {"url": body.url, "metadata": body.metadata, "mode": mode}
    if mode == "new":
        async with _new_urls(request).hold((model, body.url)):
            await _call(request, "add", model, args, "ingest", admit=True)
    else:
        await _call(request, "add", model, args, "ingest", admit=True)
    return NO_CONTENT


def _new_urls(request: Request) -> KeyedLocks:
    """This API's `new` adds (search_add, add_bulk) run one at a time per url, whichever worker
    takes them: of two calls for one url, the second is sent once the first is stored, and finds it."""
    state = request.app.state
    if not hasattr(state, "new_urls"):
        state.new_urls = KeyedLocks()
    return state.new_urls


SEARCH_ADD_GUARANTEE = (
    "Of concurrent calls for one url through one API process (add_bulk items included), exactly one "
    "answers 204 and the others 409, whichever workers run them; a call redelivered after its worker died "
    "recognises its own write (204). Calls through different API processes at the same instant may both "
    "answer 204 (the later write is kept)."
)


@router.post(
    "/models/{model}/search_add",
    dependencies=WRITE,
    status_code=204,
    summary="Add an image unless its url is stored (409)",
    description=SEARCH_ADD_GUARANTEE,
    responses={**AUTH_ERRORS, 409: {"model": ErrorBody, "description": "The url is stored already"}},
)
async def search_add(request: Request, model: str, body: AddRequest) -> Response:
    return await _add(request, model, body, "new")


@router.post(
    "/models/{model}/add_bulk",
    dependencies=WRITE,
    responses=AUTH_ERRORS,
    summary="Add many images; stored urls are reported as found",
    description="A request that finds the ingestion queue full (IDIOS_MAX_QUEUED_JOBS) is refused whole: 503 "
    "with Retry-After. Past that, each item is admitted on its own: one that finds the queue full is reported "
    f"in `failed` with the error '{QUEUE_FULL_ITEM} (...)'; send it again later. The request's own items are "
    "sent a few at a time, never more than that limit at once.",
    openapi_extra=ADD_BULK_BODY,
)
async def add_bulk(request: Request, model: str, body: Annotated[list[Any], Body()]) -> BulkResult:
    settings = _settings(request)
    if len(body) > settings.max_bulk_items:
        raise TooLarge(f"at most {settings.max_bulk_items} items per request, got {len(body)}", type="too_many_items")
    models.spec(model)
    transport = _transport(request)
    await transport.ready(model, admit=True)
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
    locks = _new_urls(request)

    async def one(item: AddRequest) -> tuple[str, str | None]:
        async with gate, locks.hold((model, item.url)):
            try:
                await transport.ready(model, admit=True)
            except Unavailable as exc:
                if exc.type != "queue_full":
                    return "failed", exc.msg
                return "failed", f"{QUEUE_FULL_ITEM} ({exc.msg})"
            try:
                await _call(
                    request,
                    "add",
                    model,
                    {"url": item.url, "metadata": item.metadata, "mode": "new"},
                    "ingest",
                    bulk=True,
                )
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


@router.post(
    "/models/{model}/restore",
    status_code=204,
    dependencies=WRITE,
    responses=AUTH_ERRORS,
    summary="Store dumped rows as they are (no download)",
    openapi_extra=RESTORE_BODY,
)
async def restore(request: Request, model: str) -> Response:
    spec = models.spec(model)
    body = await request.body()
    # Parsing a million floats takes a while: in a thread, the event loop keeps answering meanwhile.
    args = await asyncio.to_thread(_restore_job, spec, body, _settings(request).max_restore_rows)
    await _call(request, "restore", model, args, "ingest", bulk=True)
    return NO_CONTENT


def _restore_job(spec: ModelSpec, body: bytes, max_rows: int) -> dict[str, Any]:
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
    for index, row in enumerate(rows):
        if len(row.embedding) != spec.dim:
            raise Invalid(
                f"row {index}: embedding has {len(row.embedding)} values, model {spec.name} needs {spec.dim}",
                type="wrong_dimension",
            )
    embeddings = np.array([row.embedding for row in rows], dtype=np.float64).reshape(len(rows), spec.dim)
    return {
        "urls": [row.url for row in rows],
        "metadata": [row.metadata or {} for row in rows],
        "vectors": spec.from_public(embeddings),  # packed for the wire by the transport that needs it
    }


async def _search(request: Request, model: str, args: dict[str, Any]) -> list[SearchHit]:
    spec = models.spec(model)
    if args.get("text") is not None and not spec.accepts_text:
        raise Invalid(f"model {model} has no text tower; search it by url or image", type="no_text_tower")
    return await _call(request, "search", model, args, "interactive")


@router.post(
    "/models/{model}/search",
    dependencies=READ,
    responses=AUTH_ERRORS,
    summary="Similar images to a url, a text or a base64 image; best first",
)
async def search(request: Request, model: str, body: SearchRequest) -> list[SearchHit]:
    return await _search(request, model, body.model_dump())


@router.post(
    "/models/{model}/search/upload",
    dependencies=READ,
    responses=AUTH_ERRORS,
    summary="Similar images to an uploaded file (multipart)",
)
async def search_upload(
    request: Request,
    model: str,
    file: Annotated[UploadFile, File(description="The query image")],
    limit: Annotated[int, Form(ge=1, le=1000)] = 10,
    offset: Annotated[int, Form(ge=0, le=10000)] = 0,
    min_similarity: Annotated[float, Form(ge=0, le=100)] = 0.0,
    filter: Annotated[str | None, Form(description='JSON object, e.g. {"tags": "letter"}')] = None,
) -> list[SearchHit]:
    limit_bytes = _settings(request).max_download_bytes
    data = await file.read(limit_bytes + 1)
    if len(data) > limit_bytes:
        raise TooLarge(f"image is larger than {limit_bytes} bytes", type="image_too_large")
    if not data:
        raise Invalid("the uploaded file is empty", type="empty_file")
    try:
        options = SearchOptions(
            limit=limit, offset=offset, min_similarity=min_similarity, filter=json.loads(filter) if filter else None
        )
    except (ValueError, ValidationError) as exc:
        raise Invalid(f"bad filter: {exc}", type="bad_filter") from None
    return await _search(request, model, {**options.model_dump(), "image": base64.b64encode(data).decode()})


@router.post(
    "/models/{model}/compare", dependencies=READ, responses=AUTH_ERRORS, summary="Similarity 0-100 of two images"
)
async def compare(request: Request, model: str, body: CompareRequest) -> float:
    return await _call(request, "compare", model, body.model_dump(), "interactive")


@router.post(
    "/models/{model}/urls",
    dependencies=READ,
    responses=AUTH_ERRORS,
    summary="Stored urls, ascending, strictly after the cursor",
)
async def urls(request: Request, model: str, body: PageRequest | None = None) -> list[str]:
    page = body or PageRequest()
    return await _call(request, "urls", model, page.model_dump(), "light")


@router.post(
    "/models/{model}/dump",
    dependencies=READ,
    responses=AUTH_ERRORS,
    summary="Stored rows with embeddings, ascending by url, after the cursor",
    response_model=list[DumpRow],
)
async def dump(request: Request, model: str, body: PageRequest | None = None) -> Response:
    """At most `limit` rows, fewer where more would pass the broker's message size: continue with
    the last url of each page as the next cursor until a page comes back empty."""
    page = body or PageRequest()
    rows = await _call(request, "dump", model, page.model_dump(), "light", bulk=True)
    # The worker answers the page already encoded (an orjson.Fragment, passed through as it is); an
    # older worker answers the rows themselves. Either way they are what the schema says.
    return Response(orjson.dumps(rows, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


# Range jobs of a streamed dump running at once: the store, the worker's encoding and the HTTP
# transfer each have a page to work on.
DUMP_IN_FLIGHT = 2


@router.get(
    "/models/{model}/dump.jsonl",
    dependencies=READ,
    responses={
        **AUTH_ERRORS,
        200: {"content": {"application/x-ndjson": {}}, "description": "One DumpRow per line, ascending by url."},
    },
    summary="Every stored row with its embedding after the cursor, streamed as JSON Lines",
    response_class=StreamingResponse,
)
async def dump_stream(
    request: Request,
    model: str,
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
    size = min(page, pages.rows_that_fit(models.spec(model), pages.budget(_settings(request).max_message_bytes)))

    def range_job(cursor: str | None, last: str) -> tuple[str, asyncio.Task[str]]:
        args = {"cursor": cursor, "limit": size, "last": last}
        return last, asyncio.ensure_future(_call(request, "dump", model, args, "light", bulk=True))

    async def next_range(cursor: str | None) -> tuple[str, asyncio.Task[str]] | None:
        """The next range's last url and the job fetching its rows; None at the end."""
        urls = await _call(request, "urls", model, {"cursor": cursor, "limit": size}, "light")
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


@router.get("/models/{model}/count", dependencies=READ, responses=AUTH_ERRORS, summary="Number of stored images")
async def count(request: Request, model: str) -> int:
    return await _call(request, "count", model, {}, "light")


@router.post(
    "/models/{model}/remove",
    status_code=204,
    dependencies=WRITE,
    responses=AUTH_ERRORS,
    summary="Remove an image by url",
)
async def remove(request: Request, model: str, body: RemoveRequest) -> Response:
    await _call(request, "remove", model, {"url": body.url}, "ingest")
    return NO_CONTENT
