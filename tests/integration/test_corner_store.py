"""The corners collection on a real Milvus server: the vote's search, read as arrays, answers what
pymilvus's own search answers (pairs, positions, distances, the distance bound), with the
consistency it is given and in the database its client names."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient

from idios import keypoint_data
from idios.corner_store import CornerStore
from idios.keypoint_data import DESCRIPTOR_BYTES, Keypoints
from idios.specs import spec
from idios.store import Columns, Store

pytestmark = pytest.mark.server

COPYDETECT = spec("copydetect")


def _keypoints(rng: np.random.Generator, count: int) -> Keypoints:
    points = rng.random((count, 2)).astype(np.float32)
    descriptors = rng.integers(0, 256, (count, DESCRIPTOR_BYTES), dtype=np.uint8)
    return Keypoints(points, descriptors, 512, 384)


def test_the_vote_reads_what_pymilvus_reads(store: Store) -> None:
    rng = np.random.default_rng(7)
    stored = [_keypoints(rng, 200) for _ in range(5)]
    store.ensure_collection(COPYDETECT)
    urls = [f"https://x.test/{i}.jpg" for i in range(len(stored))]
    store.upsert_columns(
        COPYDETECT,
        Columns(urls=urls, vectors=keypoint_data.batch([keypoint_data.pack(k) for k in stored]), metadata=[{}] * 5),
    )
    corners = store.corners(COPYDETECT)
    corners.client.flush(corners.name)
    # Queries: stored corners with a few bits changed, and unrelated ones (nothing within 64 bits).
    near = np.concatenate([k.descriptors[:40] for k in stored])
    near ^= np.packbits(rng.random((len(near), 8 * DESCRIPTOR_BYTES)) < 0.02, axis=1)
    queries = np.concatenate([near, rng.integers(0, 256, (30, DESCRIPTOR_BYTES), dtype=np.uint8)])

    found = corners.nearest(queries, neighbours=3, probes=2048, within=64)

    answer = corners.client.search(
        corners.name,
        data=[row.tobytes() for row in queries],
        anns_field="vector",
        limit=3,
        output_fields=["position"],
        search_params={"metric_type": "HAMMING", "params": {"nprobe": 2048}},
        consistency_level="Strong",
    )
    expected = sorted(
        (index, hit["id"], hit["entity"]["position"], int(hit["distance"]))
        for index, hits in enumerate(answer)
        for hit in hits
        if hit["distance"] <= 64
    )
    pairs = sorted(
        zip(found.query.tolist(), found.key.tolist(), found.position.tolist(), found.distance.tolist(), strict=True)
    )
    assert pairs == expected
    assert len(set(found.query.tolist())) == len(near), "each changed corner finds its own"
    assert found.query.max() < len(near), "unrelated corners find nothing within 64 bits"
    assert set(found.image.tolist()) == {int(key) >> keypoint_data.CORNER_BITS for key in found.key.tolist()}
    assert len(set(found.image.tolist())) == len(stored)


def _corner_collection(client: MilvusClient, name: str, consistency: str) -> None:
    """A corners collection as CornerStore makes one, with a default consistency of `consistency`."""
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.BINARY_VECTOR, dim=8 * DESCRIPTOR_BYTES)
    schema.add_field("position", DataType.INT32)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="BIN_IVF_FLAT", metric_type="HAMMING", params={"nlist": 16})
    client.create_collection(name, schema=schema, index_params=index, consistency_level=consistency)


def test_the_vote_reads_with_the_consistency_it_is_given(milvus_uri: str) -> None:
    """A Strong vote sees the corners written just before it, whatever the collection's default."""
    client = MilvusClient(milvus_uri)
    name = f"t{uuid.uuid4().hex[:8]}_corners"
    _corner_collection(client, name, "Eventually")
    try:
        corners = CornerStore(client, name, search_consistency="Strong")
        corners.ensure()
        rng = np.random.default_rng(11)
        missed = 0
        for image in range(1, 9):
            written = _keypoints(rng, 4)
            corners.write([image], [written])
            found = corners.nearest(written.descriptors[:1], neighbours=1, probes=16, within=0)
            missed += keypoint_data.corner_ids(image, 1)[0] not in found.key.tolist()
        assert missed == 0
    finally:
        client.drop_collection(name)
        client.close()


def test_the_vote_searches_the_database_its_client_names(milvus_uri: str) -> None:
    database = f"t{uuid.uuid4().hex[:8]}"
    admin = MilvusClient(milvus_uri)
    admin.create_database(database)
    client = MilvusClient(f"{milvus_uri}/{database}")
    try:
        corners = CornerStore(client, "corners", search_consistency="Strong")
        corners.ensure()
        written = _keypoints(np.random.default_rng(12), 20)
        corners.write([5], [written])
        found = corners.nearest(written.descriptors, neighbours=1, probes=2048, within=0)
        assert found.key.tolist() == keypoint_data.corner_ids(5, 20).tolist()
        assert "corners" not in admin.list_collections(), "the default database holds no such collection"
    finally:
        client.drop_collection("corners")
        client.close()
        admin.drop_database(database)
        admin.close()
