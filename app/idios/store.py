"""Milvus storage: one collection per model, keyed by url.

Writes are upserts keyed by url, so a job delivered twice leaves one entry.
Enumerations (count, urls, dump) and existence checks read with Strong consistency;
similarity searches use the configured level.

Bulk writes and dumps move entries as columns (`Columns`): pymilvus's row-by-row packing and
unpacking costs several times what Milvus itself spends on them. Two places reach below
MilvusClient's public methods for this, both pinned by the pymilvus range in pyproject.toml:
`upsert_columns` hands pymilvus a ready UpsertRequest (`GrpcHandler.upsert(upsert_param=...)`,
the hook pymilvus's own column inserts use), and `columns_after` reads the columns of the
query answer (`HybridExtraList._lazy_field_data`) instead of materialising each row.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pymilvus import DataType, MilvusClient
from pymilvus.client.utils import SciPyHelper
from pymilvus.exceptions import MilvusException
from pymilvus.grpc_gen import common_pb2, milvus_pb2
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from idios import expr, keypoint_data
from idios.corner_store import CornerSchemaMismatch, CornerStore, Neighbours
from idios.errors import Invalid, Unavailable
from idios.keypoint_data import Keypoints
from idios.limits import URL_MAX_CHARS
from idios.specs import ModelSpec

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


# Milvus's codes for a request it refuses as malformed (merr's ParameterInvalid, ParameterMissing,
# ParameterTooLarge, Milvus 2.4 on). Milvus 2.3 answers a bad expression with code 65535 (unexpected
# error) and names it only in its message, which holds this.
INPUT_ERROR_CODES = frozenset({1100, 1101, 1102})
BAD_EXPRESSION = "cannot parse expression"


class SchemaMismatch(RuntimeError):
    """An existing collection does not fit the model; the worker refuses to start."""


# pymilvus looks for scipy's sparse matrices on its first insert, search or query, loading
# scipy.sparse by hand and without a lock: threads doing it at once can fail ("deadlock detected by
# _ModuleLock('scipy.sparse._bsr')"), which a user gets as a 503. Done once here, before any thread.
SciPyHelper.is_scipy_sparse(None)


def is_input_error(exc: MilvusException) -> bool:
    """Whether Milvus refused the request itself (a bad expression or parameter), rather than
    failing to answer it: a 422 for the client, where unavailability is a 503 to retry."""
    return (
        exc.is_input_error
        or exc.code in INPUT_ERROR_CODES
        or exc.compatible_code == common_pb2.IllegalArgument
        or BAD_EXPRESSION in (exc.message or "")
    )


@contextlib.contextmanager
def milvus_errors(refused: str = "bad_query") -> Iterator[None]:
    """pymilvus's errors, translated once at the store's edge (as httpx maps httpcore's): a request
    Milvus refuses (a bad expression or parameter, rows it will not take) is Invalid (422, of type
    `refused`: the caller's to fix, never to retry), and a Milvus that fails to answer is Unavailable
    (503, to retry). Every public method of `Store` raises only these, so no caller imports pymilvus."""
    try:
        yield
    except MilvusException as exc:
        if is_input_error(exc):
            raise Invalid(f"the vector store refused the request: {exc.message}", type=refused) from None
        log.error("Milvus failed: %s", exc.message)
        raise Unavailable(f"the vector store failed: {exc.message}", type="store_unavailable") from None


@dataclass
class Columns:
    """Entries as columns, in the same order: urls, stored vectors as one array (float32 rows, rows of
    uint8 packed bits for binary vectors, or a batch of keypoints: `keypoint_data.batch`), metadata."""

    urls: list[str]
    vectors: np.ndarray
    metadata: list[dict[str, Any]]

    @staticmethod
    def empty(spec: ModelSpec) -> Columns:
        if spec.vector_kind == "keypoints":
            return Columns(urls=[], vectors=keypoint_data.batch([]), metadata=[])
        return Columns(urls=[], vectors=np.empty((0, _width(spec)), dtype=_dtype(spec)), metadata=[])


@dataclass
class Hit:
    url: str
    metadata: dict[str, Any]
    score: float


@dataclass
class ImageRow:
    """A keypoints model's image: its url, metadata, analysed size, count of corners and the
    fingerprint of its keypoints (`keypoint_data.fingerprint`)."""

    url: str
    metadata: dict[str, Any]
    width: int
    height: int
    corners: int
    fingerprint: int


# A keypoints model's image rows keep the id of their corners, the analysed size, the count of
# corners and the fingerprint of the keypoints beside the url and metadata; the corners live in a
# collection of their own (`idios.corner_store`). Milvus needs a vector field in every collection:
# theirs holds one unused byte.
IMAGE_FIELDS = ("image", "width", "height", "corners", "fingerprint")
INT32_FIELDS = ("width", "height", "corners")
PLACEHOLDER_DIM = 8
# Times an image row whose corners are changing under a read is read again.
READ_AGAIN = 2


class Store:
    """Thin layer over `MilvusClient` speaking in urls, vectors and metadata. Its methods raise
    Idios's errors only (`milvus_errors`), and `SchemaMismatch` for a collection that does not fit."""

    def __init__(self, uri: str, *, token: str = "", prefix: str = "idios_", search_consistency: str = "Session"):
        self.uri = uri
        self.prefix = prefix
        self.search_consistency = search_consistency
        # pymilvus opens a Milvus Lite file for a uri naming a .db file.
        self.lite = uri.endswith(".db")
        self._descriptions: dict[str, dict[str, Any]] = {}
        try:
            self.client = MilvusClient(uri=uri, token=token) if token else MilvusClient(uri=uri)
        except Exception as exc:
            raise Unavailable(f"cannot reach Milvus at {uri}: {exc}") from exc

    def close(self) -> None:
        self.client.close()

    @milvus_errors()
    def ping(self) -> None:
        """Raise Unavailable unless Milvus answers calls (a starting Milvus accepts connections first)."""
        self.client.list_collections()

    def collection(self, spec: ModelSpec) -> str:
        return f"{self.prefix}{spec.name}"

    @milvus_errors()
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
        if spec.vector_kind == "keypoints":
            try:
                self.corners(spec).ensure()
            except CornerSchemaMismatch as exc:
                raise SchemaMismatch(
                    f"{exc}. Point IDIOS_COLLECTION_PREFIX elsewhere or drop the collection."
                ) from None

    def corners(self, spec: ModelSpec) -> CornerStore:
        """The corners collection of a keypoints model."""
        return CornerStore(
            self.client,
            f"{self.collection(spec)}_corners",
            search_consistency=self.search_consistency,
        )

    def _create(self, name: str, spec: ModelSpec) -> None:
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False, description=spec.description)
        schema.add_field("url", DataType.VARCHAR, is_primary=True, max_length=URL_MAX_BYTES)
        vector_type, dim = _vector_field(spec)
        schema.add_field("vector", vector_type, dim=dim)
        schema.add_field("metadata", DataType.JSON)
        if spec.vector_kind == "keypoints":
            for field in IMAGE_FIELDS:
                schema.add_field(field, DataType.INT32 if field in INT32_FIELDS else DataType.INT64)
        index = self.client.prepare_index_params()
        if vector_type == DataType.BINARY_VECTOR:
            index.add_index("vector", index_type="BIN_FLAT", metric_type="HAMMING")
        else:
            index.add_index("vector", index_type="HNSW", metric_type=spec.metric, params=HNSW_PARAMS)
        self.client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
        log.info("created collection %s (%s, dim %d, %s)", name, spec.vector_kind, spec.dim, spec.metric)

    def _check_schema(self, name: str, spec: ModelSpec) -> None:
        fields = {field["name"]: field for field in self.client.describe_collection(name)["fields"]}
        vector = fields.get("vector")
        expected, expected_dim = _vector_field(spec)
        problems = []
        if "url" not in fields or not fields["url"].get("is_primary"):
            problems.append("no 'url' primary key")
        if vector is None:
            problems.append("no 'vector' field")
        else:
            if vector["type"] != expected:
                problems.append(f"vector type {vector['type'].name}, expected {expected.name}")
            dim = int(vector.get("params", {}).get("dim", -1))
            if dim != expected_dim:
                problems.append(f"dimension {dim}, expected {expected_dim}")
        if "metadata" not in fields:
            problems.append("no 'metadata' field")
        if spec.vector_kind == "keypoints":
            problems += [f"no '{field}' field" for field in IMAGE_FIELDS if field not in fields]
        if problems:
            raise SchemaMismatch(
                f"collection {name} does not fit model {spec.name}: {'; '.join(problems)}. "
                "Point IDIOS_COLLECTION_PREFIX elsewhere or drop the collection."
            )

    # writes

    def upsert(self, spec: ModelSpec, rows: list[dict[str, Any]]) -> None:
        """Rows of {url, vector, metadata}; an existing url is replaced."""
        if not rows:
            return
        if spec.vector_kind == "keypoints":
            vectors = keypoint_data.batch([bytes(row["vector"]) for row in rows])
        elif spec.vector_kind == "binary":
            packed = b"".join(bytes(row["vector"]) for row in rows)
            vectors = np.frombuffer(packed, dtype=np.uint8).reshape(len(rows), -1)
        else:
            vectors = np.asarray([row["vector"] for row in rows], dtype=np.float32)
        metadata = [row["metadata"] or {} for row in rows]
        self.upsert_columns(spec, Columns(urls=[row["url"] for row in rows], vectors=vectors, metadata=metadata))

    @milvus_errors("store_refused")
    def upsert_columns(self, spec: ModelSpec, columns: Columns) -> None:
        """Store entries given as columns in one request; an existing url is replaced, and of a url
        given more than once the last entry is kept (Milvus 2.3 and 2.5 would store each of them
        under the one key, Milvus 2.6 refuses the whole request)."""
        count = len(columns.urls)
        keypoints = spec.vector_kind == "keypoints"
        vectors = columns.vectors if keypoints else np.ascontiguousarray(columns.vectors, dtype=_dtype(spec))
        if vectors.shape != ((count,) if keypoints else (count, _width(spec))) or len(columns.metadata) != count:
            raise ValueError(f"{count} urls, vectors of shape {vectors.shape}, {len(columns.metadata)} metadata")
        if not count:
            return
        keep = _last_of_each(columns.urls)
        if keep is not None:
            urls, metadata = [columns.urls[i] for i in keep], [columns.metadata[i] for i in keep]
            columns = Columns(urls=urls, vectors=vectors[keep], metadata=metadata)
            vectors, count = columns.vectors, len(keep)
        name = self.collection(spec)
        request = milvus_pb2.UpsertRequest(collection_name=name, num_rows=count)
        request.fields_data.add(type=DataType.VARCHAR, field_name="url").scalars.string_data.data.extend(columns.urls)
        if keypoints:
            # The new corners first, the rows naming them next, the corners they named before last: a
            # row never names corners that are not stored (`idios.corner_store`).
            replaced = self._corner_ids(spec, columns.urls)
            self._write_corners(spec, request, columns)
            vectors = np.zeros((count, PLACEHOLDER_DIM // 8), dtype=np.uint8)
        if spec.vector_kind == "float":
            field = request.fields_data.add(type=DataType.FLOAT_VECTOR, field_name="vector")
            field.vectors.float_vector.MergeFromString(_packed_floats(vectors))
        else:
            field = request.fields_data.add(type=DataType.BINARY_VECTOR, field_name="vector")
            field.vectors.binary_vector = vectors.tobytes()
        field.vectors.dim = _vector_field(spec)[1]
        field = request.fields_data.add(type=DataType.JSON, field_name="metadata")
        field.scalars.json_data.data.extend(_json(value or {}) for value in columns.metadata)
        # What MilvusClient.upsert does after packing rows: retries, the session timestamp for
        # Session reads, errors raised as MilvusException. `schema` only spares a describe call.
        self.client._get_connection().upsert(
            name,
            [],
            upsert_param=request,
            schema=self._described(name),
            context=self.client._generate_call_context(),
        )
        if keypoints:
            self.corners(spec).delete(replaced)

    def _write_corners(self, spec: ModelSpec, request: milvus_pb2.UpsertRequest, columns: Columns) -> None:
        """Store the corners of each row's keypoints under a new image id, and add the image fields to
        the rows' request. ValueError for a row that holds no keypoints."""
        packed = [bytes(value) for value in columns.vectors]
        keypoints = [keypoint_data.unpack(value) for value in packed]
        images = [keypoint_data.new_image_id() for _ in packed]
        self.corners(spec).write(images, keypoints)
        for field, values in (
            ("image", images),
            ("width", [k.width for k in keypoints]),
            ("height", [k.height for k in keypoints]),
            ("corners", [len(k) for k in keypoints]),
            ("fingerprint", [keypoint_data.fingerprint(value) for value in packed]),
        ):
            column = request.fields_data.add(field_name=field)
            if field in INT32_FIELDS:
                column.type = DataType.INT32
                column.scalars.int_data.data.extend(values)
            else:
                column.type = DataType.INT64
                column.scalars.long_data.data.extend(values)

    def _corner_ids(self, spec: ModelSpec, urls: list[str]) -> list[int]:
        """The corner ids the stored rows of these urls name (read at once)."""
        rows = self.client.query(
            self.collection(spec), filter=expr.url_in(urls), output_fields=["image"], consistency_level="Strong"
        )
        return [int(row["image"]) for row in rows]

    def _described(self, name: str) -> dict[str, Any]:
        if name not in self._descriptions:
            self._descriptions[name] = self.client.describe_collection(name)
        return self._descriptions[name]

    @milvus_errors("store_refused")
    def remove(self, spec: ModelSpec, url: str) -> None:
        replaced = self._corner_ids(spec, [url]) if spec.vector_kind == "keypoints" else []
        self.client.delete(self.collection(spec), filter=expr.url_equals(url))
        if replaced:  # after the row: a row is never left without its corners
            self.corners(spec).delete(replaced)

    # reads

    @milvus_errors()
    def existing(self, spec: ModelSpec, urls: list[str]) -> set[str]:
        if not urls:
            return set()
        found = self.client.query(
            self.collection(spec), filter=expr.url_in(urls), output_fields=["url"], consistency_level="Strong"
        )
        return {row["url"] for row in found}

    @milvus_errors()
    def metadata(self, spec: ModelSpec, urls: list[str]) -> dict[str, dict[str, Any]]:
        """Stored metadata of those urls that are stored, read at once (Strong)."""
        if not urls:
            return {}
        rows = self.client.query(
            self.collection(spec),
            filter=expr.url_in(urls),
            output_fields=["url", "metadata"],
            consistency_level="Strong",
        )
        return {row["url"]: row.get("metadata") or {} for row in rows}

    @milvus_errors()
    def vectors(self, spec: ModelSpec, urls: list[str], *, strong: bool = False) -> dict[str, Any]:
        """Stored vectors of those urls that are stored."""
        if not urls:
            return {}
        consistency = "Strong" if strong else self.search_consistency
        if spec.vector_kind == "keypoints":
            stored = self._image_rows(spec, expr.url_in(urls), consistency)
            found = self._keypoints(spec, stored, strong=strong)
            return {stored[image].url: keypoint_data.pack(keypoints) for image, keypoints in found.items()}
        rows = self.client.query(
            self.collection(spec),
            filter=expr.url_in(urls),
            output_fields=["url", "vector"],
            consistency_level=consistency,
        )
        return {row["url"]: _vector(row["vector"]) for row in rows}

    def _image_rows(
        self, spec: ModelSpec, filter: str, consistency: str, limit: int | None = None
    ) -> dict[int, ImageRow]:
        """A keypoints model's image rows matching `filter` (at most `limit`), by image id."""
        rows = self.client.query(
            self.collection(spec),
            filter=filter,
            output_fields=["url", "metadata", *IMAGE_FIELDS],
            consistency_level=consistency,
            **({"limit": limit} if limit is not None else {}),
        )
        return {
            int(row["image"]): ImageRow(
                url=row["url"],
                metadata=row.get("metadata") or {},
                width=int(row["width"]),
                height=int(row["height"]),
                corners=int(row["corners"]),
                fingerprint=int(row["fingerprint"]),
            )
            for row in rows
        }

    def _keypoints(self, spec: ModelSpec, rows: dict[int, ImageRow], *, strong: bool = False) -> dict[int, Keypoints]:
        """The keypoints of image rows, by image id. A row read just before the url was written again
        can count corners the new write no longer has: such rows are read again (`READ_AGAIN` times),
        then left out."""
        found: dict[int, Keypoints] = {}
        for attempt in range(READ_AGAIN + 1):
            corners = self.corners(spec).read({image: row.corners for image, row in rows.items()}, strong=strong)
            for image, (descriptors, positions) in corners.items():
                row = rows[image]
                size = np.array([row.width, row.height], dtype=np.float32)
                found[image] = Keypoints(keypoint_data.pixels_of(positions) / size, descriptors, row.width, row.height)
            missing = [image for image in rows if image not in found]
            if not missing or attempt == READ_AGAIN:
                break
            rows = self._image_rows(spec, f"image in {missing}", "Strong")
        for image in rows:
            if image not in found:
                log.warning("%s: the corners of %s are not all stored; left out", spec.name, rows[image].url)
        return found

    @milvus_errors()
    def nearest_corners(
        self, spec: ModelSpec, descriptors: np.ndarray, *, neighbours: int, probes: int, within: int
    ) -> Neighbours:
        """A keypoints model's stored corners nearest each query descriptor (`CornerStore.nearest`)."""
        return self.corners(spec).nearest(descriptors, neighbours=neighbours, probes=probes, within=within)

    @milvus_errors()
    def twins(self, spec: ModelSpec, fingerprints: list[int], limit: int, filter: str = "") -> list[ImageRow]:
        """Up to `limit` image rows of a keypoints model with one of these fingerprints (the same
        keypoints: one picture under several urls), those matching the metadata `filter` only."""
        if not fingerprints:
            return []
        condition = f"fingerprint in {sorted(set(fingerprints))}" + (f" and ({filter})" if filter else "")
        return list(self._image_rows(spec, condition, self.search_consistency, limit).values())

    @milvus_errors()
    def candidates(self, spec: ModelSpec, images: list[int], filter: str = "") -> dict[int, tuple[ImageRow, Keypoints]]:
        """The image rows and keypoints of a keypoints model's images, by id, those matching the
        metadata `filter` only; ids with no row (corners whose image is being written or removed) are
        left out."""
        if not images:
            return {}
        condition = f"image in {[int(image) for image in images]}" + (f" and ({filter})" if filter else "")
        rows = self._image_rows(spec, condition, self.search_consistency)
        return {image: (rows[image], keypoints) for image, keypoints in self._keypoints(spec, rows).items()}

    @milvus_errors()
    def search(self, spec: ModelSpec, vector: Any, *, limit: int, offset: int = 0, filter: str = "") -> list[Hit]:
        params: dict[str, Any] = {"metric_type": spec.metric}
        if spec.vector_kind == "float":
            params["params"] = {"ef": max(64, limit + offset)}
        query = bytes(vector) if spec.vector_kind == "binary" else list(map(float, vector))
        # A filter Milvus cannot use is refused (422): the client's to fix.
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

    @milvus_errors()
    def count(self, spec: ModelSpec) -> int:
        """Milvus answers count(*) from segment statistics: no rows are read."""
        rows = self.client.query(
            self.collection(spec), filter="", output_fields=["count(*)"], consistency_level="Strong"
        )
        return int(rows[0]["count(*)"]) if rows else 0

    @milvus_errors()
    def page(self, spec: ModelSpec, cursor: str | None, limit: int, *, with_data: bool) -> list[dict[str, Any]]:
        """Rows with url > cursor, ascending, at most `limit`: {url}, or {url, vector, metadata}."""
        if with_data:
            columns = self.columns_after(spec, cursor, limit)
            vectors: list[Any] = list(columns.vectors)
            if spec.vector_kind == "binary":
                vectors = [row.tobytes() for row in columns.vectors]
            elif spec.vector_kind == "keypoints":
                vectors = [bytes(packed) for packed in columns.vectors]
            return [
                {"url": url, "vector": vector, "metadata": metadata}
                for url, vector, metadata in zip(columns.urls, vectors, columns.metadata, strict=True)
            ]
        name, after = self.collection(spec), expr.url_after(cursor)
        # Milvus merges the segments' answers in primary key order: these are the smallest urls. Milvus
        # Lite does so only for an iterator's query (else it answers the first rows in storage order);
        # pymilvus's own query iterator cannot serve here, it writes its cursor into an expression
        # unescaped.
        options = {"iterator": "True"} if self.lite else {}
        rows = self.client.query(
            name, filter=after, output_fields=["url"], limit=limit, consistency_level="Strong", **options
        )
        return sorted(rows, key=lambda row: row["url"])[:limit]

    @milvus_errors()
    def columns_after(self, spec: ModelSpec, cursor: str | None, limit: int) -> Columns:
        """Entries with url > cursor, ascending, at most `limit`, as columns.

        Two queries: the page's urls, then the rows from the cursor to the page's last url with
        their vectors, without a limit. One query with vectors and a limit has every segment read up
        to `limit` rows with their vectors before the limit applies across segments: at 100,000 rows
        that costs Milvus twice the CPU time of the two queries. Rows written between the two
        queries can make the page longer than `limit`; it is cut back to `limit` (the rows cut off
        come after the page's last url, where the caller's next page starts). Rows removed between
        them can leave the range empty: an empty answer means the end, so the next range is read.
        """
        while page := self.page(spec, cursor, limit, with_data=False):
            columns = self.columns_between(spec, cursor, page[-1]["url"], limit)
            if columns.urls:
                return columns
            cursor = page[-1]["url"]
        return Columns.empty(spec)

    @milvus_errors()
    def columns_between(self, spec: ModelSpec, cursor: str | None, last: str, limit: int | None = None) -> Columns:
        """Entries with cursor < url <= last, ascending, as columns: all of them, or the first `limit`."""
        if spec.vector_kind == "keypoints":
            return self._keypoint_columns(spec, expr.url_range(cursor, last), limit)
        result = self.client.query(
            self.collection(spec),
            filter=expr.url_range(cursor, last),
            output_fields=["url", "vector", "metadata"],
            consistency_level="Strong",
        )
        if not result:
            return Columns.empty(spec)
        count = len(result)
        # The url column is unpacked into the result's rows up front; reading them through the list
        # itself skips the per-row unpacking of the other two, which are read as whole columns below.
        urls = [row["url"] for row in list.__iter__(result)]
        fields = {field.field_name: field for field in result._lazy_field_data}
        vector = fields["vector"].vectors
        if spec.vector_kind == "binary":
            vectors = np.frombuffer(vector.binary_vector, dtype=np.uint8)
        else:
            vectors = np.array(vector.float_vector.data, dtype=np.float32)
        vectors = vectors.reshape(count, _width(spec))
        metadata = [orjson.loads(raw) for raw in fields["metadata"].scalars.json_data.data]
        if len(metadata) != count:
            raise MilvusException(message=f"{count} urls but {len(metadata)} metadata in a query answer")
        order = sorted(range(count), key=urls.__getitem__)[:limit]  # [:None] keeps them all
        if order != list(range(count)):
            urls = [urls[i] for i in order]
            vectors = vectors[order]
            metadata = [metadata[i] for i in order]
        return Columns(urls=urls, vectors=vectors, metadata=metadata)

    def _keypoint_columns(self, spec: ModelSpec, filter: str, limit: int | None) -> Columns:
        rows = sorted(self._image_rows(spec, filter, "Strong").items(), key=lambda item: item[1].url)[:limit]
        found = self._keypoints(spec, dict(rows), strong=True)
        kept = [(image, row) for image, row in rows if image in found]
        vectors = keypoint_data.batch([keypoint_data.pack(found[image]) for image, _ in kept])
        return Columns(
            urls=[row.url for _, row in kept],
            vectors=vectors,
            metadata=[row.metadata for _, row in kept],
        )


def _vector_field(spec: ModelSpec) -> tuple[DataType, int]:
    """The type and dimension of a model's `vector` field."""
    if spec.vector_kind == "keypoints":
        return DataType.BINARY_VECTOR, PLACEHOLDER_DIM
    return (DataType.BINARY_VECTOR if spec.vector_kind == "binary" else DataType.FLOAT_VECTOR), spec.dim


def _last_of_each(urls: list[str]) -> list[int] | None:
    """Indices keeping the last entry of each repeated url, in order; None when no url repeats."""
    last = {url: index for index, url in enumerate(urls)}
    return None if len(last) == len(urls) else sorted(last.values())


def _width(spec: ModelSpec) -> int:
    """Values per stored vector of a float or binary model: floats, or bytes of packed bits."""
    return spec.dim // 8 if spec.vector_kind == "binary" else spec.dim


def _dtype(spec: ModelSpec) -> type[np.generic]:
    return np.float32 if spec.vector_kind == "float" else np.uint8


def _packed_floats(vectors: np.ndarray) -> bytes:
    """A protobuf FloatArray (`repeated float data = 1`, packed) holding every value of `vectors`, in
    wire format: parsing it copies the bytes once, where adding a million Python floats takes ~0.1 s."""
    payload = vectors.astype("<f4", copy=False).tobytes()
    size, length = len(payload), bytearray()
    while True:
        byte, size = size & 0x7F, size >> 7
        length.append(byte | (0x80 if size else 0))
        if not size:
            return b"\x0a" + bytes(length) + payload


def _json(value: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # nested deeper than orjson goes, or an integer beyond 64 bits
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _vector(value: Any) -> Any:
    """Milvus returns a binary vector as a one-element list of bytes; unwrap it."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], bytes | bytearray):
        return bytes(value[0])
    return value
