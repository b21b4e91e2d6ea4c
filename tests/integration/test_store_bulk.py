"""Columns against the real Milvus: round trips in url order, binary columns, all-or-nothing writes; and
the backup CLI against a server whose dump breaks off."""

from __future__ import annotations

import socketserver
import threading
from pathlib import Path

import numpy as np
import orjson
import pytest

from idios import backup
from idios.specs import spec
from idios.store import Columns, Store

VIT = spec("vit_b32")
PHASH = spec("phash")


def random_rows(count: int, seed: int, dim: int = 512) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, dim))


# the store, against Milvus


def test_columns_round_trip_exactly_in_url_order(store: Store) -> None:
    store.ensure_collection(VIT)
    count = 2500
    urls = [f"https://x.test/{i * 7919 % count:05d}-é\"'\\.jpg" for i in range(count)]
    vectors = VIT.from_public(random_rows(count, 6))
    metadata = [{"i": i, "deep": {"list": [i, "猫", None, True]}} if i % 3 else {} for i in range(count)]
    store.upsert_columns(VIT, Columns(urls=urls, vectors=vectors, metadata=metadata))
    assert store.count(VIT) == count

    expected = sorted(zip(urls, range(count), strict=True))
    cursor, seen = None, 0
    while (page := store.columns_after(VIT, cursor, 1000)).urls:
        assert page.vectors.dtype == np.float32 and page.vectors.shape == (len(page.urls), 512)
        for url, vector, meta in zip(page.urls, page.vectors, page.metadata, strict=True):
            assert url == expected[seen][0]
            index = expected[seen][1]
            np.testing.assert_array_equal(vector, vectors[index])
            assert meta == metadata[index]
            seen += 1
        cursor = page.urls[-1]
    assert seen == count

    replaced = Columns(urls=[urls[0]], vectors=vectors[1:2], metadata=[{"again": 1}])
    store.upsert_columns(VIT, replaced)
    assert store.count(VIT) == count
    row = store.page(VIT, None, 1, with_data=True)[0]  # urls[0] is the first url
    assert row["url"] == urls[0] and row["metadata"] == {"again": 1}
    np.testing.assert_array_equal(row["vector"], vectors[1])


def test_binary_columns_round_trip(store: Store) -> None:
    store.ensure_collection(PHASH)
    bits = np.random.default_rng(7).integers(0, 2, (40, 64))
    packed = PHASH.from_public(bits)
    urls = [f"https://x.test/{i:02d}" for i in range(40)]
    store.upsert_columns(PHASH, Columns(urls=urls, vectors=packed, metadata=[{"i": i} for i in range(40)]))
    page = store.columns_after(PHASH, urls[9], 100)
    assert page.urls == urls[10:] and page.vectors.dtype == np.uint8
    np.testing.assert_array_equal(page.vectors, packed[10:])
    assert [PHASH.to_public(row) for row in page.vectors] == bits[10:].tolist()
    assert store.columns_after(PHASH, urls[-1], 100).urls == []


def test_columns_that_do_not_fit_store_nothing(store: Store) -> None:
    store.ensure_collection(VIT)
    vectors = VIT.from_public(random_rows(3, 8))
    for columns in (
        Columns(urls=["a", "b"], vectors=vectors, metadata=[{}, {}]),
        Columns(urls=["a", "b", "c"], vectors=vectors[:, :256], metadata=[{}, {}, {}]),
        Columns(urls=["a", "b", "c"], vectors=vectors, metadata=[{}]),
    ):
        with pytest.raises(ValueError):
            store.upsert_columns(VIT, columns)
    assert store.count(VIT) == 0


def test_backup_dump_reports_a_dump_that_broke_off(tmp_path: Path) -> None:
    """A response cut before its last chunk (the server lost its store mid-dump) fails the command,
    and no file holds a partial line."""
    row = orjson.dumps({"url": "http://127.0.0.2/a.jpg", "metadata": {}, "embedding": [1] + [0] * 63}) + b"\n"

    class CutShort(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            request = self.rfile.readline()
            while self.rfile.readline().strip():
                pass
            if b"/count" in request:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n9")
                return
            head = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n"
            self.wfile.write(head)
            body = row * 3 + row[:20]
            self.wfile.write(f"{len(body):x}\r\n".encode() + body + b"\r\n")  # then closes, no final chunk

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), CutShort) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with pytest.raises(SystemExit, match="broke off after 3 entries"):
                backup.dump(f"http://127.0.0.1:{server.server_address[1]}", "phash", tmp_path, 2)
        finally:
            server.shutdown()
    assert (tmp_path / "phash-000000.jsonl").read_bytes() == row * 2
    assert (tmp_path / "phash-000001.jsonl.part").read_bytes() == row
