"""Stand-ins for the parts the unit layer leaves out (Milvus, the broker, image servers), each
behind the same interface the code under test uses. Only the unit layer uses them: integration and
end-to-end tests run the real Milvus, RabbitMQ and HTTP servers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from idios.errors import IdiosError, Invalid
from idios.protocol import Job
from idios.specs import ModelSpec
from idios.store import Columns, Hit
from idios.transport import Transport


class FakeTransport(Transport):
    """Answers each job with `handler(job)` (as httpx's MockTransport answers requests) and keeps
    every job it was given; `refuse` makes `ready` raise, as a transport does with no worker."""

    def __init__(self, handler: Callable[[Job[Any]], Any | Awaitable[Any]] | None = None) -> None:
        self.handler = handler or (lambda job: None)
        self.jobs: list[Job[Any]] = []
        self.refuse: IdiosError | None = None
        self.readiness: list[tuple[str | None, bool]] = []
        self.status: dict[str, dict[str, str]] = {}

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def call(self, job: Job[Any]) -> Any:
        self.jobs.append(job)
        answer = self.handler(job)
        if asyncio.iscoroutine(answer):
            answer = await answer
        if isinstance(answer, IdiosError):
            raise answer
        return answer

    async def model_status(self) -> dict[str, dict[str, str]]:
        return self.status

    async def ready(self, model: str | None, *, admit: bool = False) -> None:
        self.readiness.append((model, admit))
        if self.refuse is not None:
            raise self.refuse


class FakeFetcher:
    """Image bytes by url; a url it does not hold fails as an unreachable image does (422)."""

    def __init__(self, images: dict[str, bytes] | None = None) -> None:
        self.images = dict(images or {})
        self.fetched: list[str] = []

    async def fetch(self, url: str) -> bytes:
        self.fetched.append(url)
        if url not in self.images:
            raise Invalid(f"cannot fetch {url}: 404 Not Found", type="download_failed")
        return self.images[url]

    async def aclose(self) -> None:
        pass


class MemoryStore:
    """The `idios.store.Store` interface over dicts: urls to (stored vector, metadata), per model.

    Search is exact (cosine, or Hamming distance for binary vectors), as Milvus's HNSW and BIN_FLAT
    indexes approximate it. `fail` makes every call raise that error, as a Milvus that is down makes
    the real store raise Unavailable."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, tuple[Any, dict[str, Any]]]] = {}
        self.fail: IdiosError | None = None
        self.filters: list[str] = []

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    def ping(self) -> None:
        self._check()

    def ensure_collection(self, spec: ModelSpec) -> None:
        self._check()
        self.rows.setdefault(spec.name, {})

    def upsert(self, spec: ModelSpec, rows: list[dict[str, Any]]) -> None:
        self._check()
        for row in rows:
            self.rows[spec.name][row["url"]] = (row["vector"], row["metadata"] or {})

    def upsert_columns(self, spec: ModelSpec, columns: Columns) -> None:
        self._check()
        count = len(columns.urls)
        width = spec.dim // 8 if spec.vector_kind == "binary" else spec.dim
        if columns.vectors.shape != (count, width) or len(columns.metadata) != count:
            shape, metadata = columns.vectors.shape, len(columns.metadata)
            raise ValueError(f"{count} urls, vectors of shape {shape}, {metadata} metadata")
        for url, vector, metadata in zip(columns.urls, columns.vectors, columns.metadata, strict=True):
            stored = vector.tobytes() if spec.vector_kind == "binary" else np.asarray(vector, np.float32)
            self.rows[spec.name][url] = (stored, metadata)

    def remove(self, spec: ModelSpec, url: str) -> None:
        self._check()
        self.rows[spec.name].pop(url, None)

    def existing(self, spec: ModelSpec, urls: list[str]) -> set[str]:
        self._check()
        return {url for url in urls if url in self.rows[spec.name]}

    def metadata(self, spec: ModelSpec, urls: list[str]) -> dict[str, dict[str, Any]]:
        self._check()
        return {url: self.rows[spec.name][url][1] for url in urls if url in self.rows[spec.name]}

    def vectors(self, spec: ModelSpec, urls: list[str], *, strong: bool = False) -> dict[str, Any]:
        self._check()
        return {url: self.rows[spec.name][url][0] for url in urls if url in self.rows[spec.name]}

    def search(self, spec: ModelSpec, vector: Any, *, limit: int, offset: int = 0, filter: str = "") -> list[Hit]:
        self._check()
        self.filters.append(filter)
        scored = []
        for url, (stored, metadata) in self.rows[spec.name].items():
            if spec.vector_kind == "binary":
                bits = np.unpackbits(np.frombuffer(bytes(stored), np.uint8) ^ np.frombuffer(bytes(vector), np.uint8))
                score, rank = float(bits.sum()), float(bits.sum())
            else:
                a, b = np.asarray(stored, np.float64), np.asarray(vector, np.float64)
                score = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
                rank = -score
            scored.append((rank, url, Hit(url=url, metadata=metadata, score=score)))
        scored.sort(key=lambda item: (item[0], item[1]))
        return [hit for _, _, hit in scored[offset : offset + limit]]

    def count(self, spec: ModelSpec) -> int:
        self._check()
        return len(self.rows[spec.name])

    def _sorted(self, spec: ModelSpec, cursor: str | None) -> list[str]:
        return sorted(url for url in self.rows[spec.name] if cursor is None or url > cursor)

    def page(self, spec: ModelSpec, cursor: str | None, limit: int, *, with_data: bool) -> list[dict[str, Any]]:
        self._check()
        return [{"url": url} for url in self._sorted(spec, cursor)[:limit]]

    def _columns(self, spec: ModelSpec, urls: list[str]) -> Columns:
        if not urls:
            return Columns.empty(spec)
        dtype = np.uint8 if spec.vector_kind == "binary" else np.float32
        vectors = [
            np.frombuffer(bytes(self.rows[spec.name][url][0]), np.uint8)
            if spec.vector_kind == "binary"
            else self.rows[spec.name][url][0]
            for url in urls
        ]
        metadata = [self.rows[spec.name][url][1] for url in urls]
        return Columns(urls=urls, vectors=np.asarray(vectors, dtype=dtype), metadata=metadata)

    def columns_after(self, spec: ModelSpec, cursor: str | None, limit: int) -> Columns:
        self._check()
        return self._columns(spec, self._sorted(spec, cursor)[:limit])

    def columns_between(self, spec: ModelSpec, cursor: str | None, last: str, limit: int | None = None) -> Columns:
        self._check()
        return self._columns(spec, [url for url in self._sorted(spec, cursor) if url <= last][:limit])
