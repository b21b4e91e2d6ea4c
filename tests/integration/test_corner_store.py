"""The corners collection on a real Milvus server: the vote's search, read as arrays, answers what
pymilvus's own search answers (pairs, positions, distances, the distance bound)."""

from __future__ import annotations

import numpy as np
import pytest

from idios import keypoint_data
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
