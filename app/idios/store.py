"""Milvus storage: one collection per model, keyed by url.

Writes are upserts keyed by url, so a job delivered twice leaves one entry.
Enumerations (count, urls, dump) and existence checks read with Strong consistency;
similarity searches use the configured level.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from idios import expr
from idios.errors import Unavailable
from idios.limits import URL_MAX_CHARS
from idios.models.base import ModelSpec

log = logging.getLogger("idios.store")

# pymilvus configures its loggers when imported and logs each failed call and reconnection attempt
# with a traceback; Idios logs every Milvus failure it meets itself, once, with what it did about it.
for _name in ("pymilvus", "pymilvus.milvus_client"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)

# Milvus measures VARCHAR in bytes; four UTF-8 bytes per character bounds any url we accept.
URL_MAX_BYTES = URL_MAX_CHARS * 4
# Milvus refuses offset + limit above this.
MAX_WINDOW = 16384
HNSW_PARAMS = {"M": 16, "efConstruction": 200}


class SchemaMismatch(RuntimeError):
    """An existing collection does not fit the model; the worker refuses to start."""


@dataclass
class Hit:
    url: str
    metadata: dict[str, Any]
    score: float


class Store:
    """Thin layer over `MilvusClient` speaking in urls, vectors and metadata."""

    def __init__(self, uri: str, *, token: str = "", prefix: str = "idios_", search_consistency: str = "Session"):
        self.uri = uri
        self.prefix = prefix
        self.search_consistency = search_consistency
        try:
            self.client = MilvusClient(uri=uri, token=token) if token else MilvusClient(uri=uri)
        except Exception as exc:
            raise Unavailable(f"cannot reach Milvus at {uri}: {exc}") from exc

    def close(self) -> None:
        self.client.close()

    def collection(self, spec: ModelSpec) -> str:
        return f"{self.prefix}{spec.name}"

    @retry(
        retry=retry_if_exception_type(MilvusException),
        stop=stop_after_attempt(10),
        wait=wait_exponential(multiplier=0.2, max=5),
        reraise=True,
    )
    def ensure_collection(self, spec: ModelSpec) -> None:
        """Create the model's collection, or check that the existing one fits the model.

        Retried: workers starting together race to create the collection, and one may find it
        created but not yet indexed ("index not found") or created under its feet ("already exists").
        """
        name = self.collection(spec)
        if self.client.has_collection(name):
            self._check_schema(name, spec)
        else:
            self._create(name, spec)
        self.client.load_collection(name)

    def _create(self, name: str, spec: ModelSpec) -> None:
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False, description=spec.description)
        schema.add_field("url", DataType.VARCHAR, is_primary=True, max_length=URL_MAX_BYTES)
        vector_type = DataType.BINARY_VECTOR if spec.vector_kind == "binary" else DataType.FLOAT_VECTOR
        schema.add_field("vector", vector_type, dim=spec.dim)
        schema.add_field("metadata", DataType.JSON)
        index = self.client.prepare_index_params()
        if spec.vector_kind == "binary":
            index.add_index("vector", index_type="BIN_FLAT", metric_type=spec.metric)
        else:
            index.add_index("vector", index_type="HNSW", metric_type=spec.metric, params=HNSW_PARAMS)
        self.client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
        log.info("created collection %s (%s, dim %d, %s)", name, spec.vector_kind, spec.dim, spec.metric)

    def _check_schema(self, name: str, spec: ModelSpec) -> None:
        fields = {field["name"]: field for field in self.client.describe_collection(name)["fields"]}
        vector = fields.get("vector")
        expected = DataType.BINARY_VECTOR if spec.vector_kind == "binary" else DataType.FLOAT_VECTOR
        problems = []
        if "url" not in fields or not fields["url"].get("is_primary"):
            problems.append("no 'url' primary key")
        if vector is None:
            problems.append("no 'vector' field")
        else:
            if vector["type"] != expected:
                problems.append(f"vector type {vector['type'].name}, expected {expected.name}")
            dim = int(vector.get("params", {}).get("dim", -1))
            if dim != spec.dim:
                problems.append(f"dimension {dim}, expected {spec.dim}")
        if "metadata" not in fields:
            problems.append("no 'metadata' field")
        if problems:
            raise SchemaMismatch(
                f"collection {name} does not fit model {spec.name}: {'; '.join(problems)}. "
                "Point IDIOS_COLLECTION_PREFIX elsewhere or drop the collection."
            )

    # writes

    def upsert(self, spec: ModelSpec, rows: list[dict[str, Any]]) -> None:
        """Rows of {url, vector, metadata}; an existing url is replaced."""
        if rows:
            self.client.upsert(self.collection(spec), self._storable(spec, rows))

    def remove(self, spec: ModelSpec, url: str) -> None:
        self.client.delete(self.collection(spec), filter=expr.url_equals(url))

    @staticmethod
    def _storable(spec: ModelSpec, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if spec.vector_kind == "binary":
            return [{"url": r["url"], "vector": bytes(r["vector"]), "metadata": r["metadata"] or {}} for r in rows]
        # pymilvus takes numpy float32 vectors as they are; a list of Python floats would cost a copy.
        return [
            {"url": r["url"], "vector": np.asarray(r["vector"], dtype=np.float32), "metadata": r["metadata"] or {}}
            for r in rows
        ]

    # reads

    def existing(self, spec: ModelSpec, urls: list[str]) -> set[str]:
        if not urls:
            return set()
        found = self.client.query(
            self.collection(spec), filter=expr.url_in(urls), output_fields=["url"], consistency_level="Strong"
        )
        return {row["url"] for row in found}

    def vectors(self, spec: ModelSpec, urls: list[str], *, strong: bool = False) -> dict[str, Any]:
        """Stored vectors of those urls that are stored."""
        if not urls:
            return {}
        rows = self.client.query(
            self.collection(spec),
            filter=expr.url_in(urls),
            output_fields=["url", "vector"],
            consistency_level="Strong" if strong else self.search_consistency,
        )
        return {row["url"]: _vector(row["vector"]) for row in rows}

    def search(self, spec: ModelSpec, vector: Any, *, limit: int, offset: int = 0, filter: str = "") -> list[Hit]:
        params: dict[str, Any] = {"metric_type": spec.metric}
        if spec.vector_kind == "float":
            params["params"] = {"ef": max(64, limit + offset)}
        query = bytes(vector) if spec.vector_kind == "binary" else list(map(float, vector))
        results = self.client.search(
            self.collection(spec),
            data=[query],
            anns_field="vector",
            limit=limit,
            offset=offset,
            filter=filter,
            output_fields=["url", "metadata"],
            search_params=params,
            consistency_level=self.search_consistency,
        )
        hits = []
        for hit in results[0] if results else []:
            entity = hit.get("entity") or {}
            url = entity.get("url") or hit.get("id")  # Milvus Lite names no "id"
            hits.append(Hit(url=url, metadata=entity.get("metadata") or {}, score=float(hit["distance"])))
        return hits

    def count(self, spec: ModelSpec) -> int:
        """Milvus answers count(*) from segment statistics: no rows are read."""
        rows = self.client.query(
            self.collection(spec), filter="", output_fields=["count(*)"], consistency_level="Strong"
        )
        return int(rows[0]["count(*)"]) if rows else 0

    def page(self, spec: ModelSpec, cursor: str | None, limit: int, *, with_data: bool) -> list[dict[str, Any]]:
        """Rows with url > cursor, ascending, at most `limit`."""
        fields = ["url", "vector", "metadata"] if with_data else ["url"]
        rows = self.client.query(
            self.collection(spec),
            filter=expr.url_after(cursor),
            output_fields=fields,
            limit=limit,
            consistency_level="Strong",
        )
        rows.sort(key=lambda row: row["url"])
        if with_data:
            for row in rows:
                row["vector"] = _vector(row["vector"])
        return rows


def _vector(value: Any) -> Any:
    """Milvus returns a binary vector as a one-element list of bytes; unwrap it."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], bytes | bytearray):
        return bytes(value[0])
    return value
