"""A Python client of the Idios HTTP API: `Client` and `AsyncClient`, on httpx.

    from idios.client import Client

    with Client("http://127.0.0.1:4213", key="...") as idios:    # or IDIOS_API, IDIOS_API_KEY
        idios.add("vit_b32", "https://example.com/cat.jpg", {"tags": "cat"})
        for hit in idios.search("vit_b32", text="a cat on a sofa", limit=5):
            print(hit.similarity, hit.url)
        for row in idios.dump("vit_b32"):                          # streamed, every entry once
            ...

One method per endpoint, answering the API's own schemas (`idios.api.schemas`). A refusal raises
`ApiError` with the server's status, type and message. A 503 (no worker free, a full queue, the
store or broker away) is tried again after the server's `Retry-After`, `retries` times (tenacity);
nothing else is retried, so that a request is never sent twice when the first may have landed.
`urls`, `dump` and `duplicates` iterate over a whole collection, a page or a line at a time.

The two classes share what a call is (`_Call`: the request and how to read its answer); each runs
it its own way, as httpx's Client and AsyncClient do.
"""

from __future__ import annotations

import base64
import math
import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
import orjson
from pydantic import TypeAdapter
from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from idios.api.schemas import (
    BulkResult,
    BulkSearchAnswer,
    Comparison,
    DumpRow,
    DuplicateGroup,
    DuplicatesPage,
    ModelInfo,
    SearchHit,
)

DEFAULT_API = "http://127.0.0.1:4213"
TIMEOUT = httpx.Timeout(600.0, connect=10.0)
# The longest line of a streamed dump taken: a stored row is at most about 200 KB (metadata up to
# 64 KiB, a copydetect row's keypoints 12 KB); a line past this is a server gone wrong.
MAX_LINE_BYTES = 4 * 1024 * 1024
# Retry-After caps what a client waits between tries, whatever a server (or a proxy) asks.
MAX_RETRY_WAIT = 60.0
T = TypeVar("T")

_hits = TypeAdapter(list[SearchHit])
_models = TypeAdapter(list[ModelInfo])
_rows = TypeAdapter(list[DumpRow])
_answers = TypeAdapter(list[BulkSearchAnswer])


class ApiError(Exception):
    """The server refused a request: its status, error type and message."""

    def __init__(self, method: str, path: str, status: int, type: str, msg: str, retry_after: float | None = None):
        super().__init__(f"{method} {path}: {status} {type}: {msg}")
        self.method, self.path, self.status, self.type, self.msg = method, path, status, type, msg
        self.retry_after = retry_after

    @classmethod
    def of(cls, response: httpx.Response) -> ApiError:
        try:
            detail = response.json()["detail"][0]
            kind, msg = str(detail.get("type", "error")), str(detail.get("msg", response.text))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            kind, msg = "error", response.text[:500] or response.reason_phrase
        try:
            retry_after: float | None = float(response.headers["retry-after"])
        except (KeyError, ValueError):
            retry_after = None
        if retry_after is not None and not math.isfinite(retry_after):  # nan would sleep forever
            retry_after = None
        return cls(response.request.method, response.request.url.path, response.status_code, kind, msg, retry_after)


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One request and how its answer is read."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    json: Any = None
    content: bytes | None = None
    files: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _json(response: httpx.Response) -> Any:
    return orjson.loads(response.content)


def _nothing(response: httpx.Response) -> None:
    return None


def _b64(image: bytes | None) -> str | None:
    return None if image is None else base64.b64encode(image).decode()


def _options(**given: Any) -> dict[str, Any]:
    """The options that were given (None: the server's default)."""
    return {name: value for name, value in given.items() if value is not None}


class _Calls:
    """The API's endpoints as calls; the clients run them."""

    @staticmethod
    def ping() -> _Call[str]:
        return _Call("GET", "/ping", _json)

    @staticmethod
    def models() -> _Call[list[ModelInfo]]:
        return _Call("GET", "/models", lambda r: _models.validate_json(r.content))

    @staticmethod
    def add(model: str, url: str, metadata: dict[str, Any] | None, *, new: bool) -> _Call[None]:
        path = f"/models/{model}/{'search_add' if new else 'add'}"
        return _Call("POST", path, _nothing, json=_options(url=url, metadata=metadata))

    @staticmethod
    def add_bulk(model: str, items: Iterable[tuple[str, dict[str, Any] | None]]) -> _Call[BulkResult]:
        body = [_options(url=url, metadata=metadata) for url, metadata in items]
        return _Call(
            "POST", f"/models/{model}/add_bulk", lambda r: BulkResult.model_validate_json(r.content), json=body
        )

    @staticmethod
    def restore(model: str, rows: list[dict[str, Any]]) -> _Call[None]:
        content = orjson.dumps(rows, option=orjson.OPT_SERIALIZE_NUMPY)
        headers = {"content-type": "application/json"}
        return _Call("POST", f"/models/{model}/restore", _nothing, content=content, headers=headers)

    @staticmethod
    def search(
        model: str, url: str | None, text: str | None, image: bytes | None, **options: Any
    ) -> _Call[list[SearchHit]]:
        body = _options(url=url, text=text, image=_b64(image), **options)
        return _Call("POST", f"/models/{model}/search", lambda r: _hits.validate_json(r.content), json=body)

    @staticmethod
    def search_bulk(model: str, queries: list[dict[str, Any]]) -> _Call[list[BulkSearchAnswer]]:
        body = [
            {**query, "image": _b64(query["image"])} if isinstance(query.get("image"), bytes) else query
            for query in queries
        ]
        return _Call("POST", f"/models/{model}/search_bulk", lambda r: _answers.validate_json(r.content), json=body)

    @staticmethod
    def compare(model: str, first: str | bytes, second: str | bytes, *, flip: bool) -> _Call[Comparison]:
        body: dict[str, Any] = {"details": True, "flip": flip}
        body.update({"image": _b64(first)} if isinstance(first, bytes) else {"url": first})
        body.update({"other_image": _b64(second)} if isinstance(second, bytes) else {"other": second})
        return _Call("POST", f"/models/{model}/compare", lambda r: Comparison.model_validate_json(r.content), json=body)

    @staticmethod
    def urls(model: str, cursor: str | None, limit: int) -> _Call[list[str]]:
        return _Call("POST", f"/models/{model}/urls", _json, json={"cursor": cursor, "limit": limit})

    @staticmethod
    def dump_page(model: str, cursor: str | None, limit: int) -> _Call[list[DumpRow]]:
        return _Call(
            "POST",
            f"/models/{model}/dump",
            lambda r: _rows.validate_json(r.content),
            json={"cursor": cursor, "limit": limit},
        )

    @staticmethod
    def duplicates(model: str, cursor: str | None, limit: int, min_similarity: float | None) -> _Call[DuplicatesPage]:
        body = _options(cursor=cursor, limit=limit, min_similarity=min_similarity)
        return _Call(
            "POST", f"/models/{model}/duplicates", lambda r: DuplicatesPage.model_validate_json(r.content), json=body
        )

    @staticmethod
    def count(model: str) -> _Call[int]:
        return _Call("GET", f"/models/{model}/count", _json)

    @staticmethod
    def remove(model: str, url: str) -> _Call[None]:
        return _Call("POST", f"/models/{model}/remove", _nothing, json={"url": url})


def _connection(api: str | None, key: str | None) -> tuple[str, dict[str, str]]:
    base = (api or os.environ.get("IDIOS_API") or DEFAULT_API).rstrip("/")
    key = key if key is not None else os.environ.get("IDIOS_API_KEY")
    return base, ({"Authorization": f"Bearer {key}"} if key else {})


def _unavailable(error: BaseException) -> bool:
    return isinstance(error, ApiError) and error.status == 503


def _retry_after(state: RetryCallState) -> float:
    """The server's Retry-After (at most MAX_RETRY_WAIT), else 1, 2, 4, ... seconds."""
    error = state.outcome.exception() if state.outcome else None
    if isinstance(error, ApiError) and error.retry_after is not None:
        return min(max(error.retry_after, 0.0), MAX_RETRY_WAIT)
    return float(min(2 ** (state.attempt_number - 1), MAX_RETRY_WAIT))


def _retry_policy(retries: int) -> dict[str, Any]:
    """Tenacity's settings for both clients: a 503 is tried again after its Retry-After, `retries` times in all."""
    return {
        "retry": retry_if_exception(_unavailable),
        "stop": stop_after_attempt(max(1, retries)),
        "wait": _retry_after,
        "reraise": True,
    }


def _checked(response: httpx.Response) -> httpx.Response:
    if response.is_error:
        raise ApiError.of(response)
    return response


def _dump_rows(lines: Iterable[bytes]) -> Iterator[DumpRow]:
    for line in lines:
        if line.strip():
            yield DumpRow.model_validate_json(line)


class Client:
    """A blocking client. `api` defaults to IDIOS_API (else http://127.0.0.1:4213), `key` to
    IDIOS_API_KEY; `retries`: tries of a request answered 503; `transport`: an httpx transport (tests)."""

    def __init__(
        self,
        api: str | None = None,
        *,
        key: str | None = None,
        timeout: httpx.Timeout | float = TIMEOUT,
        retries: int = 5,
        transport: httpx.BaseTransport | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        """`http`: an httpx client of one's own instead (its base url, headers and TLS as they are; not closed here)."""
        base, headers = _connection(api, key)
        self._owned = http is None
        self.http = http or httpx.Client(base_url=base, headers=headers, timeout=timeout, transport=transport)
        self.retries = retries

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self.http.close()

    def _run(self, call: _Call[T]) -> T:
        return Retrying(**_retry_policy(self.retries))(self._send, call)

    def _send(self, call: _Call[T]) -> T:
        response = self.http.request(
            call.method,
            call.path,
            json=call.json,
            content=call.content,
            files=call.files,
            data=call.data,
            headers=call.headers,
        )
        return call.read(_checked(response))

    def ping(self) -> str:
        return self._run(_Calls.ping())

    def models(self) -> list[ModelInfo]:
        """Every model with its dimension, metric, text support and status."""
        return self._run(_Calls.models())

    def add(self, model: str, url: str, metadata: dict[str, Any] | None = None, *, new: bool = False) -> None:
        """Store (or replace) the image at `url`; with `new`, refuse a stored url (ApiError 409)."""
        self._run(_Calls.add(model, url, metadata, new=new))

    def add_bulk(self, model: str, items: Iterable[str | tuple[str, dict[str, Any] | None]]) -> BulkResult:
        """Add many urls (each alone or with its metadata) in one request; a url stored already is left be."""
        pairs = [(item, None) if isinstance(item, str) else item for item in items]
        return self._run(_Calls.add_bulk(model, pairs))

    def restore(self, model: str, rows: list[dict[str, Any]]) -> None:
        """Store entries as `dump` gave them ({url, metadata, embedding}), without downloading."""
        self._run(_Calls.restore(model, rows))

    def search(
        self,
        model: str,
        url: str | None = None,
        *,
        text: str | None = None,
        image: bytes | None = None,
        limit: int | None = None,
        offset: int | None = None,
        min_similarity: float | None = None,
        filter: dict[str, Any] | None = None,
        flip: bool | None = None,
    ) -> list[SearchHit]:
        """The stored images most like one query: a url, a text or an image's bytes."""
        options = _options(limit=limit, offset=offset, min_similarity=min_similarity, filter=filter, flip=flip)
        return self._run(_Calls.search(model, url, text, image, **options))

    def search_bulk(self, model: str, queries: list[dict[str, Any]]) -> list[BulkSearchAnswer]:
        """Many searches in one request (each a search body: url, text or image bytes, and options),
        answered in order, each with its hits or its own error."""
        return self._run(_Calls.search_bulk(model, queries))

    def compare(self, model: str, first: str | bytes, second: str | bytes, *, flip: bool = False) -> Comparison:
        """How alike two images are (each a url or its bytes), and where they match (copydetect)."""
        return self._run(_Calls.compare(model, first, second, flip=flip))

    def count(self, model: str) -> int:
        return self._run(_Calls.count(model))

    def remove(self, model: str, url: str) -> None:
        self._run(_Calls.remove(model, url))

    def urls(self, model: str, *, after: str | None = None, page: int = 1000) -> Iterator[str]:
        """Every stored url, ascending, from after `after`, `page` a request."""
        cursor = after
        while True:
            found = self._run(_Calls.urls(model, cursor, page))
            if not found:  # a short page is not the end: the server sends what fits one broker message
                return
            yield from found
            cursor = found[-1]

    def dump_lines(self, model: str) -> Iterator[bytes]:
        """Every entry as the JSON line the server streams (`GET /models/{model}/dump.jsonl`), unparsed."""
        with self.http.stream("GET", f"/models/{model}/dump.jsonl") as response:
            if response.is_error:
                response.read()
                raise ApiError.of(response)
            yield from _lines(response)

    def dump(self, model: str) -> Iterator[DumpRow]:
        """Every entry ({url, metadata, embedding}), ascending by url, from one streamed response."""
        return _dump_rows(self.dump_lines(model))

    def dump_pages(self, model: str, *, after: str | None = None, page: int = 1000) -> Iterator[list[DumpRow]]:
        """The entries after the url `after`, a page a request (`POST /dump`): a walk that can resume."""
        cursor = after
        while found := self._run(_Calls.dump_page(model, cursor, page)):
            yield found
            cursor = found[-1].url

    def duplicates(
        self, model: str, *, min_similarity: float | None = None, after: str | None = None, page: int = 100
    ) -> Iterator[DuplicatesPage]:
        """The walk over the collection for groups of copies, a page at a time (each page's `cursor`
        is where to resume with `after`)."""
        cursor = after
        while True:
            found = self._run(_Calls.duplicates(model, cursor, page, min_similarity))
            yield found
            if found.cursor is None:
                return
            cursor = found.cursor

    def duplicate_groups(self, model: str, *, min_similarity: float | None = None) -> Iterator[DuplicateGroup]:
        """Every group of copies in the collection."""
        for found in self.duplicates(model, min_similarity=min_similarity):
            yield from found.groups


class _LineSplitter:
    """Whole lines out of a streamed body's chunks, as bytes (no decoding: an entry is UTF-8 JSON);
    a line past MAX_LINE_BYTES, or a body ending inside one, is the server's error."""

    def __init__(self, response: httpx.Response) -> None:
        self.path = response.request.url.path
        self.tail = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self.tail + chunk
        end = buffer.rfind(b"\n") + 1
        self.tail = buffer[end:]
        if len(self.tail) > MAX_LINE_BYTES:
            raise ApiError("GET", self.path, 502, "line_too_long", f"a dump line passed {MAX_LINE_BYTES} bytes")
        return buffer[:end].splitlines()

    def close(self) -> None:
        if self.tail.strip():
            raise ApiError("GET", self.path, 502, "dump_truncated", "the dump ended inside an entry")


def _lines(response: httpx.Response) -> Iterator[bytes]:
    lines = _LineSplitter(response)
    for chunk in response.iter_bytes():
        yield from lines.feed(chunk)
    lines.close()


async def _alines(response: httpx.Response) -> AsyncIterator[bytes]:
    lines = _LineSplitter(response)
    async for chunk in response.aiter_bytes():
        for line in lines.feed(chunk):
            yield line
    lines.close()


class AsyncClient:
    """The asyncio twin of `Client`, with the same methods (awaited) and iterators (`async for`)."""

    def __init__(
        self,
        api: str | None = None,
        *,
        key: str | None = None,
        timeout: httpx.Timeout | float = TIMEOUT,
        retries: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        base, headers = _connection(api, key)
        self._owned = http is None
        self.http = http or httpx.AsyncClient(base_url=base, headers=headers, timeout=timeout, transport=transport)
        self.retries = retries

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owned:
            await self.http.aclose()

    async def _run(self, call: _Call[T]) -> T:
        return await AsyncRetrying(**_retry_policy(self.retries))(self._send, call)

    async def _send(self, call: _Call[T]) -> T:
        response = await self.http.request(
            call.method,
            call.path,
            json=call.json,
            content=call.content,
            files=call.files,
            data=call.data,
            headers=call.headers,
        )
        return call.read(_checked(response))

    async def ping(self) -> str:
        return await self._run(_Calls.ping())

    async def models(self) -> list[ModelInfo]:
        return await self._run(_Calls.models())

    async def add(self, model: str, url: str, metadata: dict[str, Any] | None = None, *, new: bool = False) -> None:
        await self._run(_Calls.add(model, url, metadata, new=new))

    async def add_bulk(self, model: str, items: Iterable[str | tuple[str, dict[str, Any] | None]]) -> BulkResult:
        pairs = [(item, None) if isinstance(item, str) else item for item in items]
        return await self._run(_Calls.add_bulk(model, pairs))

    async def restore(self, model: str, rows: list[dict[str, Any]]) -> None:
        await self._run(_Calls.restore(model, rows))

    async def search(
        self,
        model: str,
        url: str | None = None,
        *,
        text: str | None = None,
        image: bytes | None = None,
        limit: int | None = None,
        offset: int | None = None,
        min_similarity: float | None = None,
        filter: dict[str, Any] | None = None,
        flip: bool | None = None,
    ) -> list[SearchHit]:
        options = _options(limit=limit, offset=offset, min_similarity=min_similarity, filter=filter, flip=flip)
        return await self._run(_Calls.search(model, url, text, image, **options))

    async def search_bulk(self, model: str, queries: list[dict[str, Any]]) -> list[BulkSearchAnswer]:
        return await self._run(_Calls.search_bulk(model, queries))

    async def compare(self, model: str, first: str | bytes, second: str | bytes, *, flip: bool = False) -> Comparison:
        return await self._run(_Calls.compare(model, first, second, flip=flip))

    async def count(self, model: str) -> int:
        return await self._run(_Calls.count(model))

    async def remove(self, model: str, url: str) -> None:
        await self._run(_Calls.remove(model, url))

    async def urls(self, model: str, *, after: str | None = None, page: int = 1000) -> AsyncIterator[str]:
        cursor = after
        while True:
            found = await self._run(_Calls.urls(model, cursor, page))
            if not found:
                return
            for url in found:
                yield url
            cursor = found[-1]

    async def dump_lines(self, model: str) -> AsyncIterator[bytes]:
        async with self.http.stream("GET", f"/models/{model}/dump.jsonl") as response:
            if response.is_error:
                await response.aread()
                raise ApiError.of(response)
            async for line in _alines(response):
                yield line

    async def dump(self, model: str) -> AsyncIterator[DumpRow]:
        async for line in self.dump_lines(model):
            if line.strip():
                yield DumpRow.model_validate_json(line)

    async def dump_pages(
        self, model: str, *, after: str | None = None, page: int = 1000
    ) -> AsyncIterator[list[DumpRow]]:
        cursor = after
        while found := await self._run(_Calls.dump_page(model, cursor, page)):
            yield found
            cursor = found[-1].url

    async def duplicates(
        self, model: str, *, min_similarity: float | None = None, after: str | None = None, page: int = 100
    ) -> AsyncIterator[DuplicatesPage]:
        cursor = after
        while True:
            found = await self._run(_Calls.duplicates(model, cursor, page, min_similarity))
            yield found
            if found.cursor is None:
                return
            cursor = found.cursor
