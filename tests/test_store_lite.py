"""The store on a Milvus Lite file: the fallback when the bundled Milvus server is not installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from idios import expr
from idios.models import spec
from idios.store import Store


@pytest.fixture
def lite(tmp_path: Path) -> Store:
    store = Store(str(tmp_path / "idios.db"), prefix="lite_")
    yield store
    store.close()


def test_milvus_lite_stores_pages_and_searches(lite: Store) -> None:
    vit = spec("vit_b32")
    lite.ensure_collection(vit)
    rng = np.random.default_rng(5)
    urls = [f'http://h/{i:03d}"\\é' for i in range(300)]
    vectors = rng.standard_normal((300, 512)).astype(np.float32)
    lite.upsert(
        vit,
        [
            {"url": u, "vector": v, "metadata": {"i": i, "odd": i % 2 == 1}}
            for i, (u, v) in enumerate(zip(urls, vectors, strict=True))
        ],
    )
    assert lite.count(vit) == 300

    seen, cursor = [], None
    while page := lite.page(vit, cursor, 64, with_data=False):
        seen += [row["url"] for row in page]
        cursor = page[-1]["url"]
    assert seen == sorted(urls)

    hits = lite.search(vit, vectors[7], limit=3, filter=expr.metadata_filter({"odd": True}))
    assert hits[0].url == urls[7] and vit.similarity(hits[0].score) == pytest.approx(100, abs=0.01)
    assert all(hit.metadata["odd"] for hit in hits)

    lite.upsert(vit, [{"url": urls[0], "vector": vectors[1], "metadata": {"again": True}}])
    assert lite.count(vit) == 300
    lite.remove(vit, urls[0])
    assert lite.count(vit) == 299 and lite.existing(vit, urls[:2]) == {urls[1]}


def test_reopening_a_lite_file_keeps_the_entries(tmp_path: Path) -> None:
    vit = spec("vit_b32")
    path = str(tmp_path / "again.db")
    first = Store(path, prefix="lite_")
    first.ensure_collection(vit)
    first.upsert(vit, [{"url": "http://h/a.jpg", "vector": np.ones(512, np.float32), "metadata": {}}])
    first.close()
    second = Store(path, prefix="lite_")
    second.ensure_collection(vit)
    assert second.count(vit) == 1
    second.close()
