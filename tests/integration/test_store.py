"""The Milvus store and the expressions it sends, against a real Milvus server.

Every test works in collections under its own random prefix and drops them afterwards:
other suites may share the server.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymilvus import DataType

from idios import expr
from idios.errors import Invalid
from idios.specs import spec
from idios.store import SchemaMismatch, Store

from tests.support.milvus import drop_prefixed

VIT = spec("vit_b32")
PHASH = spec("phash")

TRICKY_URLS = [
    'https://x.test/a"b.jpg',
    "https://x.test/a'b.jpg",
    "https://x.test/a\\b.jpg",
    'https://x.test/a\\\\"b.jpg',
    '" or url != "',
    "' or url != '",
    "https://x.test/line\nbreak.jpg",
    "https://x.test/tab\there.jpg",
    "https://x.test/caf\u00e9/\u732b/\U0001f600.jpg",
    "https://x.test/ctl\x01.jpg",
    "https://x.test/%22%5C%27%20%0A.jpg",
    "https://x.test/\\u0041.jpg",
    "https://x.test/a\\",
]
PLAIN_URLS = ["https://x.test/a", "https://x.test/ab.jpg", "https://x.test/a b.jpg", "https://x.test/z.jpg"]


def unit_vectors(n: int, dim: int = VIT.dim, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def phash_rows(urls: list[str], start: int = 0) -> list[dict]:
    return [
        {"url": url, "vector": bytes([i % 256] * 8), "metadata": {"i": i}} for i, url in enumerate(urls, start=start)
    ]


def query_urls(s: Store, filter: str) -> set[str]:
    rows = s.client.query(s.collection(PHASH), filter=filter, output_fields=["url"], consistency_level="Strong")
    return {row["url"] for row in rows}


# collections


def test_ensure_collection_creates_both_kinds_and_is_idempotent(store: Store) -> None:
    for model, vector_type in ((VIT, DataType.FLOAT_VECTOR), (PHASH, DataType.BINARY_VECTOR)):
        store.ensure_collection(model)
        name = store.collection(model)
        assert name == f"{store.prefix}{model.name}"
        assert store.client.has_collection(name)
        fields = {f["name"]: f for f in store.client.describe_collection(name)["fields"]}
        assert fields["url"]["is_primary"]
        assert fields["url"]["type"] == DataType.VARCHAR
        assert fields["vector"]["type"] == vector_type
        assert int(fields["vector"]["params"]["dim"]) == model.dim
        assert fields["metadata"]["type"] == DataType.JSON
        index = store.client.describe_index(name, "vector")
        assert index["metric_type"] == model.metric
        # Again on the existing collection: checked, not recreated.
        store.upsert(
            model, phash_rows(["u"]) if model is PHASH else [{"url": "u", "vector": unit_vectors(1)[0], "metadata": {}}]
        )
        store.ensure_collection(model)
        assert store.count(model) == 1


def test_ensure_collection_refuses_wrong_dimension(store: Store) -> None:
    name = store.collection(VIT)
    schema = store.client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("url", DataType.VARCHAR, is_primary=True, max_length=1000)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=256)
    schema.add_field("metadata", DataType.JSON)
    store.client.create_collection(name, schema=schema)
    with pytest.raises(SchemaMismatch, match=r"dimension 256, expected 512") as caught:
        store.ensure_collection(VIT)
    assert name in str(caught.value)
    # The mismatched collection is left alone.
    fields = {f["name"]: f for f in store.client.describe_collection(name)["fields"]}
    assert int(fields["vector"]["params"]["dim"]) == 256


def test_ensure_collection_refuses_wrong_vector_type(store: Store) -> None:
    name = store.collection(PHASH)
    schema = store.client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("url", DataType.VARCHAR, is_primary=True, max_length=1000)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=64)
    schema.add_field("metadata", DataType.JSON)
    store.client.create_collection(name, schema=schema)
    with pytest.raises(SchemaMismatch, match="BINARY_VECTOR"):
        store.ensure_collection(PHASH)


# writes and reads


def test_upsert_replaces_and_reads_back(store: Store) -> None:
    store.ensure_collection(VIT)
    v1, v2, v3 = unit_vectors(3)
    store.upsert(VIT, [{"url": "https://x.test/1.jpg", "vector": v1, "metadata": {"v": 1, "tag": "first"}}])
    store.upsert(VIT, [{"url": "https://x.test/1.jpg", "vector": v2, "metadata": {"v": 2}}])
    assert store.count(VIT) == 1
    rows = store.page(VIT, None, 10, with_data=True)
    assert [r["url"] for r in rows] == ["https://x.test/1.jpg"]
    assert rows[0]["metadata"] == {"v": 2}
    np.testing.assert_allclose(rows[0]["vector"], v2, atol=1e-6)

    store.upsert(VIT, [{"url": "https://x.test/2.jpg", "vector": v3, "metadata": None}])
    assert store.count(VIT) == 2
    assert store.existing(VIT, ["https://x.test/1.jpg", "https://x.test/2.jpg", "https://x.test/3.jpg"]) == {
        "https://x.test/1.jpg",
        "https://x.test/2.jpg",
    }
    assert store.existing(VIT, []) == set()
    vectors = store.vectors(VIT, ["https://x.test/2.jpg", "https://x.test/nope.jpg"], strong=True)
    assert set(vectors) == {"https://x.test/2.jpg"}
    np.testing.assert_allclose(vectors["https://x.test/2.jpg"], v3, atol=1e-6)
    assert store.vectors(VIT, []) == {}
    hits = store.search(VIT, v3, limit=2)
    assert hits[0].url == "https://x.test/2.jpg"
    assert hits[0].metadata == {}
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)

    store.remove(VIT, "https://x.test/1.jpg")
    assert store.count(VIT) == 1
    assert store.existing(VIT, ["https://x.test/1.jpg", "https://x.test/2.jpg"]) == {"https://x.test/2.jpg"}
    store.remove(VIT, "https://x.test/never-stored.jpg")
    assert store.count(VIT) == 1


def test_binary_vectors_round_trip(store: Store) -> None:
    store.ensure_collection(PHASH)
    bits = bytes([0b10110000, 1, 2, 3, 255, 0, 128, 7])
    store.upsert(PHASH, [{"url": "u", "vector": bits, "metadata": {"k": "v"}}])
    assert store.vectors(PHASH, ["u"], strong=True) == {"u": bits}
    row = store.page(PHASH, None, 5, with_data=True)[0]
    assert row["vector"] == bits
    assert PHASH.to_public(row["vector"]) == PHASH.to_public(bits)
    hits = store.search(PHASH, bits, limit=1)
    assert hits[0].url == "u" and hits[0].score == 0 and hits[0].metadata == {"k": "v"}


def test_page_walks_every_url_in_order_across_segments(store: Store) -> None:
    store.ensure_collection(PHASH)
    rng = random.Random(7)
    urls = [
        f"https://img{rng.randrange(50)}.test/{rng.getrandbits(rng.randrange(4, 64)):x}/{i}.jpg" for i in range(1990)
    ]
    urls += [f"https://x.test/{word}" for word in ("\u00e9", "\u732b", "\U0001f600", "Z", "a", "~", "\x7f")]
    urls += ["https://x.test/a\x01", "https://x.test/\u00e9\u00e9", "https://x.test/\uffff"]
    rng.shuffle(urls)
    assert len(set(urls)) == len(urls) == 2000
    collection = store.collection(PHASH)
    for start in range(0, len(urls), 450):
        store.upsert(PHASH, phash_rows(urls[start : start + 450], start))
        store.client.flush(collection)
    assert store.count(PHASH) == 2000

    walked: list[str] = []
    cursor = None
    pages = 0
    while True:
        rows = store.page(PHASH, cursor, 97, with_data=False)
        if not rows:
            break
        assert len(rows) <= 97
        assert all(set(row) == {"url"} for row in rows)
        walked += [row["url"] for row in rows]
        cursor = rows[-1]["url"]
        pages += 1
    assert walked == sorted(urls)
    assert pages == -(-2000 // 97)

    with_data = store.page(PHASH, walked[499], 3, with_data=True)
    assert [row["url"] for row in with_data] == walked[500:503]
    for row in with_data:
        assert isinstance(row["vector"], bytes) and len(row["vector"]) == 8
        assert row["metadata"] == {"i": urls.index(row["url"])}


# expressions on the live server


def test_tricky_urls_are_stored_found_removed_and_used_as_cursors(store: Store) -> None:
    store.ensure_collection(PHASH)
    everything = TRICKY_URLS + PLAIN_URLS
    store.upsert(PHASH, phash_rows(everything))
    assert store.count(PHASH) == len(everything)
    assert store.existing(PHASH, everything) == set(everything)
    ordered = sorted(everything)
    assert [r["url"] for r in store.page(PHASH, None, 100, with_data=False)] == ordered

    for url in TRICKY_URLS:
        assert store.existing(PHASH, [url]) == {url}, repr(url)
        assert set(store.vectors(PHASH, [url], strong=True)) == {url}
        after = [r["url"] for r in store.page(PHASH, url, 100, with_data=False)]
        assert after == [u for u in ordered if u > url], repr(url)

    remaining = list(everything)
    for url in TRICKY_URLS:
        store.remove(PHASH, url)
        remaining.remove(url)
        assert store.count(PHASH) == len(remaining), repr(url)
        assert store.existing(PHASH, everything) == set(remaining), repr(url)
    assert sorted(remaining) == sorted(PLAIN_URLS)


def test_metadata_filter_on_the_server(store: Store) -> None:
    store.ensure_collection(PHASH)
    metadata = {
        "quote": {"s": 'say "hi"'},
        "backslash": {"s": "C:\\dir\\"},
        "escaped": {"s": '\\"'},
        "single": {"s": "it's"},
        "plain": {"s": "x"},
        "victim": {"a": "y", "s": "x"},
        "keyed": {"sp ace": "v", "[b]": 1, "it's": True, "é猫": 2},
        "int3": {"n": 3, "b": True, "f": 2.5},
        "int4": {"n": 4, "b": False, "f": 2.25},
        "neg": {"n": -7, "f": -0.5},
    }
    store.upsert(PHASH, [{"url": url, "vector": bytes(8), "metadata": meta} for url, meta in metadata.items()])

    def matching(equalities: dict) -> set[str]:
        return query_urls(store, expr.metadata_filter(equalities))

    for url in ("quote", "backslash", "escaped", "single", "plain"):
        assert matching({"s": metadata[url]["s"]}) == ({url, "victim"} if url == "plain" else {url}), url
    assert matching({"s": 'say "hi'}) == set()
    assert matching({"s": "C:\\dir"}) == set()
    assert matching({"sp ace": "v"}) == {"keyed"}
    assert matching({"[b]": 1}) == {"keyed"}
    assert matching({"it's": True}) == {"keyed"}
    assert matching({"é猫": 2}) == {"keyed"}
    # Keys Milvus versions read differently (escapes) or cannot parse ('][') are refused before any query.
    for key in ('we"ird', "back\\slash", 'metadata["a"]["b', "a][b", "tab\there"):
        with pytest.raises(Invalid) as caught:
            expr.metadata_filter({key: 1})
        assert caught.value.type == "bad_filter" and "keys may not hold" in caught.value.msg
    for number in (2**63, -(2**63), 10**40):
        with pytest.raises(Invalid, match="integers must lie between"):
            expr.metadata_filter({"n": number})
    assert matching({"n": 2**63 - 1}) == matching({"n": -(2**63 - 1)}) == set()
    assert matching({"n": 3}) == {"int3"}
    assert matching({"n": 4}) == {"int4"}
    assert matching({"n": -7}) == {"neg"}
    assert matching({"n": 5}) == set()
    assert matching({"b": True}) == {"int3"}
    assert matching({"b": False}) == {"int4"}
    assert matching({"f": 2.5}) == {"int3"}
    assert matching({"f": 2.25}) == {"int4"}
    assert matching({"f": -0.5}) == {"neg"}
    assert matching({"n": 3, "b": True}) == {"int3"}
    assert matching({"n": 3, "b": False}) == set()
    assert matching({"s": "x", "a": "y"}) == {"victim"}

    # Injection attempts stay inside their literal and match nothing.
    assert matching({"s": 'x" or metadata["a"] != "'}) == set()
    assert matching({"s": "x' or metadata['a'] != '"}) == set()
    assert matching({"s": 'x\\" or metadata["a"] != "'}) == set()
    with pytest.raises(Invalid):
        matching({'s"] == "x" or metadata["a': "y"})

    # The filter also narrows a similarity search.
    hits = store.search(PHASH, bytes(8), limit=10, filter=expr.metadata_filter({"s": 'say "hi"'}))
    assert [hit.url for hit in hits] == ["quote"]
    # An expression Milvus refuses is the client's error (422), not an unavailable store.
    for bad in ('metadata["a][b"] == 1', 'metadata["n"] == 18446744073709551616', "url >>> 1"):
        with pytest.raises(Invalid) as refused:
            store.search(PHASH, bytes(8), limit=1, filter=bad)
        assert refused.value.status == 422 and refused.value.type == "bad_query"


# property: any text survives the literal round trip


@pytest.fixture(scope="module")
def shared_phash_store(milvus_uri: str) -> Iterator[Store]:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    s = Store(milvus_uri, prefix=prefix)
    s.ensure_collection(PHASH)
    s.upsert(PHASH, phash_rows(PLAIN_URLS))
    try:
        yield s
    finally:
        drop_prefixed(s.client, prefix)
        s.close()


@settings(max_examples=60, deadline=None)
@given(text=st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40))
def test_any_text_is_found_exactly(shared_phash_store: Store, text: str) -> None:
    s = shared_phash_store
    url = f"{uuid.uuid4().hex[:6]}{text}"
    s.upsert(PHASH, [{"url": url, "vector": bytes(8), "metadata": {"text": text}}])
    try:
        assert s.existing(PHASH, [url]) == {url}
        assert query_urls(s, expr.metadata_filter({"text": text})) == {url}
        assert s.existing(PHASH, [text]) == ({text} if text in PLAIN_URLS else set())
    finally:
        s.remove(PHASH, url)
    assert s.existing(PHASH, [url]) == set()
    assert s.existing(PHASH, PLAIN_URLS) == set(PLAIN_URLS)
