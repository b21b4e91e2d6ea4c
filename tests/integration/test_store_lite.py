"""The store on a Milvus Lite file: the fallback when the bundled Milvus server is not installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from idios import expr
from idios.specs import spec
from idios.store import Columns, Store


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


def test_milvus_lite_pages_urls_in_order_whatever_order_they_were_stored_in(lite: Store) -> None:
    """Milvus Lite answers a query's limit with rows in storage order: paging by the last url of
    such a page skipped every smaller url it had not answered (in /urls, /dump, dump.jsonl, Browse)."""
    vit = spec("vit_b32")
    lite.ensure_collection(vit)
    urls = [f'http://h/{i * 7919 % 500:03d}"\\é' for i in range(500)]  # stored out of url order
    vectors = np.random.default_rng(8).standard_normal((500, 512)).astype(np.float32)
    for start in range(0, 500, 125):
        lite.upsert_columns(
            vit,
            Columns(urls=urls[start : start + 125], vectors=vectors[start : start + 125], metadata=[{}] * 125),
        )

    seen, cursor = [], None
    while page := lite.page(vit, cursor, 40, with_data=False):
        assert len(page) <= 40
        seen += [row["url"] for row in page]
        cursor = page[-1]["url"]
    assert seen == sorted(urls)

    dumped, cursor = [], None
    while (columns := lite.columns_after(vit, cursor, 60)).urls:
        dumped += columns.urls
        cursor = columns.urls[-1]
    assert dumped == sorted(urls)
    ordered = sorted(urls)
    assert [row["url"] for row in lite.page(vit, ordered[249], 3, with_data=False)] == ordered[250:253]
