"""The corners of a keypoints model's images in Milvus (copydetect): one row per corner, its descriptor
as a 256-bit binary vector, its position, and a key made of its image's id and its index.

Milvus finds each query corner's nearest stored corners (BIN_IVF_FLAT on Hamming distance): that is
how candidates are found among millions of corners. The image rows themselves (url, metadata, the
analysed size and the count of corners) live in the model's url-keyed collection (`idios.store`).

Each write of an image stores its corners under a new image id, before the row that names that id;
the corners of the id the row named before are deleted after it, and a remove deletes the row before
its corners (`idios.store`). So a row never names corners that are not stored: a search meets
corners without a row (a write or a remove under way, or one that failed or was cut short) and skips
them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException
from pymilvus.client.utils import check_status
from pymilvus.grpc_gen import milvus_pb2

from idios import keypoint_data
from idios.keypoint_data import CORNER_BITS, DESCRIPTOR_BYTES, STORED_POINTS, Keypoints

log = logging.getLogger("idios.store")

# Lists of the inverted file. Milvus builds an index per sealed segment (a few million corners);
# more lists make each probe read fewer corners, at the cost of comparing a query corner with
# every list's centre first.
CORNER_LISTS = 2048
# Corner rows per write request: 50,000 are about 2.3 MB, far below gRPC's 64 MB.
WRITE_ROWS = 50_000
# Keys per read or delete request: an `in` list Milvus parses quickly, 32 images of 256 corners.
READ_KEYS = 8192


class CornerSchemaMismatch(RuntimeError):
    """The existing corners collection does not fit (`idios.store.SchemaMismatch` says so to the worker)."""


@dataclass
class Neighbours:
    """Stored corners near the query's corners, one entry per pair: the query corner's index, the
    stored corner's key, image and position (`keypoint_data.positions`), and their distance in bits."""

    query: np.ndarray
    key: np.ndarray
    image: np.ndarray
    position: np.ndarray
    distance: np.ndarray


class CornerStore:
    """The corners collection of one keypoints model."""

    def __init__(self, client: MilvusClient, name: str, *, search_consistency: str) -> None:
        self.client = client
        self.name = name
        self.search_consistency = search_consistency

    def ensure(self) -> None:
        if self.client.has_collection(self.name):
            self._check()
        else:
            self._create()
        self.client.load_collection(self.name)

    def _create(self) -> None:
        schema = self.client.create_schema(
            auto_id=False, enable_dynamic_field=False, description="copy detection: one row per corner"
        )
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.BINARY_VECTOR, dim=8 * DESCRIPTOR_BYTES)
        schema.add_field("position", DataType.INT32)
        index = self.client.prepare_index_params()
        index.add_index("vector", index_type="BIN_IVF_FLAT", metric_type="HAMMING", params={"nlist": CORNER_LISTS})
        self.client.create_collection(self.name, schema=schema, index_params=index, consistency_level="Strong")
        log.info("created collection %s (corners, BIN_IVF_FLAT, %d lists)", self.name, CORNER_LISTS)

    def _check(self) -> None:
        fields = {field["name"]: field for field in self.client.describe_collection(self.name)["fields"]}
        problems = []
        key = fields.get("id")
        if key is None or not key.get("is_primary") or key["type"] != DataType.INT64:
            problems.append("no INT64 'id' primary key")
        vector = fields.get("vector")
        if vector is None or vector["type"] != DataType.BINARY_VECTOR:
            problems.append("no binary 'vector' field")
        elif int(vector.get("params", {}).get("dim", -1)) != 8 * DESCRIPTOR_BYTES:
            problems.append(f"dimension {vector['params'].get('dim')}, expected {8 * DESCRIPTOR_BYTES}")
        if "position" not in fields:
            problems.append("no 'position' field")
        if problems:
            raise CornerSchemaMismatch(f"collection {self.name} does not hold corners: {'; '.join(problems)}")

    # writes

    def write(self, images: list[int], keypoints: list[Keypoints]) -> None:
        """Store the corners of each image, under its id."""
        ids = _keys(images, [len(k) for k in keypoints])
        if not len(ids):
            return
        vectors = np.concatenate([k.descriptors for k in keypoints])
        positions = np.concatenate([keypoint_data.positions(k) for k in keypoints])
        for start in range(0, len(ids), WRITE_ROWS):
            end = start + WRITE_ROWS
            rows = [
                {"id": int(key), "vector": vector.tobytes(), "position": int(position)}
                for key, vector, position in zip(ids[start:end], vectors[start:end], positions[start:end], strict=True)
            ]
            # Inserted, not upserted: each write's keys are new (an upsert makes Milvus delete each key first,
            # and keep a record of every delete).
            self.client.insert(self.name, rows)

    def delete(self, images: list[int]) -> None:
        """Delete every corner of these images."""
        for chunk in _chunks(_keys(images, [STORED_POINTS] * len(images)), READ_KEYS):
            self.client.delete(self.name, ids=chunk.tolist())

    # reads

    def nearest(self, descriptors: np.ndarray, *, neighbours: int, probes: int, within: int) -> Neighbours:
        """Each query descriptor's `neighbours` nearest stored corners within `within` bits."""
        if not len(descriptors):
            return Neighbours(*(np.empty(0, dtype=np.int64) for _ in range(5)))
        # MilvusClient.search's own request (database, consistency and all), its answer read as arrays:
        # pymilvus makes an object of each of the few thousand pairs (about 20 ms of a 110 ms search
        # of 768 query corners among 5 million here).
        pending = self.client.search(
            self.name,
            data=[row.tobytes() for row in descriptors],
            anns_field="vector",
            limit=neighbours,
            output_fields=["position"],
            search_params={"metric_type": "HAMMING", "params": {"nprobe": probes}},
            consistency_level=self.search_consistency,
            _async=True,
        )
        results = _answer(pending).results
        key = np.array(results.ids.int_id.data, dtype=np.int64)
        distance = np.array(results.scores, dtype=np.float32).astype(np.int64)
        query = np.repeat(np.arange(len(results.topks), dtype=np.int64), np.array(results.topks, dtype=np.int64))
        fields = {field.field_name: field for field in results.fields_data}
        position = np.array(fields["position"].scalars.int_data.data if "position" in fields else [], dtype=np.int32)
        if not len(key) == len(distance) == len(query) == len(position):
            raise MilvusException(message=f"a search answered {len(key)} corners with {len(position)} positions")
        near = distance <= within
        return Neighbours(
            query=query[near],
            key=key[near],
            image=key[near] >> CORNER_BITS,
            position=position[near],
            distance=distance[near],
        )

    def read(self, counts: dict[int, int], *, strong: bool = False) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """The stored corners of images {id: count of corners}: {id: (descriptors, positions)}, each in
        the corners' order. An image whose corners are not all there is left out."""
        found: dict[int, tuple[np.ndarray, int]] = {}
        consistency = "Strong" if strong else self.search_consistency
        for chunk in _chunks(_keys(list(counts), list(counts.values())), READ_KEYS):
            result = self.client.query(
                self.name,
                filter=f"id in {chunk.tolist()}",
                output_fields=["id", "vector", "position"],
                consistency_level=consistency,
            )
            if not result:
                continue
            # The scalar columns are unpacked into the result's rows up front; the vectors are read as
            # one column (`idios.store.Store.columns_between` does the same).
            rows = list(list.__iter__(result))
            vector = next(field for field in result._lazy_field_data if field.field_name == "vector")
            vectors = np.frombuffer(vector.vectors.binary_vector, dtype=np.uint8).reshape(-1, DESCRIPTOR_BYTES)
            for row, descriptor in zip(rows, vectors, strict=True):
                found[int(row["id"])] = (descriptor, int(row["position"]))
        corners = {}
        for image, count in counts.items():
            keys = keypoint_data.corner_ids(image, count).tolist()
            if all(key in found for key in keys):
                descriptors = np.array([found[key][0] for key in keys], dtype=np.uint8).reshape(count, DESCRIPTOR_BYTES)
                corners[image] = (descriptors, np.array([found[key][1] for key in keys], dtype=np.int32))
        return corners


def _answer(pending: Any) -> milvus_pb2.SearchResults:
    """Milvus's answer to a search sent with `_async=True`, as it is (pymilvus's SearchFuture would
    parse it into objects), its errors raised as MilvusException as pymilvus raises them."""
    pending.exception()  # a request refused before it was sent
    try:
        response = pending._future.result()
    except grpc.RpcError as exc:
        raise MilvusException(message=f"search failed: {exc}") from exc
    if response is None:
        raise MilvusException(message="Milvus answered a search with nothing")
    check_status(response.status)
    return response


def _keys(images: list[int], counts: list[int]) -> np.ndarray:
    """The keys of the first `counts[i]` corners of each image `images[i]`."""
    parts = [keypoint_data.corner_ids(image, count) for image, count in zip(images, counts, strict=True)]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def _chunks(keys: np.ndarray, size: int) -> Iterable[np.ndarray]:
    for start in range(0, len(keys), size):
        yield keys[start : start + size]
