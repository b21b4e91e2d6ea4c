"""Bulk paths: restore and dump as columns, from the model's conversions to the HTTP API and the backup CLI."""

from __future__ import annotations

import json
import math
import socketserver
import threading
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest
from pymilvus.grpc_gen import schema_pb2

from idios import backup
from idios.errors import Invalid
from idios.models import spec
from idios.store import Columns, Store, _packed_floats
from idios.transport.queues import decode, encode, encode_job
from idios.wire import unpack_array

from tests.support.stacks import Stack

VIT = spec("vit_b32")
PHASH = spec("phash")
JSON = {"content-type": "application/json"}


def random_rows(count: int, seed: int, dim: int = 512) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, dim))


# conversions


def test_many_embeddings_are_checked_and_normalised_together() -> None:
    values = random_rows(5, 1) * 7
    stored = VIT.from_public(values)
    assert stored.dtype == np.float32 and stored.shape == (5, 512)
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-6)
    for index in range(5):
        np.testing.assert_array_equal(stored[index], VIT.from_public(values[index]))
    assert VIT.from_public(np.empty((0, 512))).shape == (0, 512)


def test_extreme_but_finite_embeddings_still_normalise() -> None:
    for scale in (1e300, 1e-300):
        stored = VIT.from_public(np.full((1, 512), scale))
        np.testing.assert_allclose(stored[0], np.full(512, 1 / math.sqrt(512)), rtol=1e-6)


@pytest.mark.parametrize(
    ("model", "bad", "message"),
    [
        (VIT, [math.inf] + [0.5] * 511, "not finite"),
        (VIT, [math.nan] + [0.5] * 511, "not finite"),
        (VIT, [0.0] * 512, "all zeros"),
        (PHASH, [2] + [0] * 63, "each 0 or 1"),
        (PHASH, [0.5] + [0] * 63, "each 0 or 1"),
    ],
)
def test_a_bad_embedding_among_many_is_named_by_its_row(model, bad: list[float], message: str) -> None:
    good = [1.0] + [0.0] * (model.dim - 1)
    with pytest.raises(Invalid) as caught:
        model.from_public([good, good, bad, good])
    assert caught.value.type == "bad_embedding"
    assert caught.value.msg.startswith("row 2: ") and message in caught.value.msg


def test_many_bit_embeddings_pack_like_one() -> None:
    bits = np.random.default_rng(3).integers(0, 2, (4, 64))
    packed = PHASH.from_public(bits)
    assert packed.dtype == np.uint8 and packed.shape == (4, 8)
    assert [row.tobytes() for row in packed] == [PHASH.from_public(row.tolist()) for row in bits]
    assert [PHASH.to_public(row) for row in packed] == bits.tolist()


def test_ragged_embeddings_are_a_dimension_error() -> None:
    with pytest.raises(Invalid) as caught:
        VIT.from_public([[1.0] * 512, [1.0] * 511])
    assert caught.value.type == "wrong_dimension"


# jobs on the wire


@pytest.mark.parametrize("array", [random_rows(3, 4).astype(np.float32), np.arange(24, dtype=np.uint8).reshape(3, 8)])
def test_arrays_in_jobs_round_trip_exactly(array: np.ndarray) -> None:
    """Through a broker a job's array travels packed; in process (`idios serve`) it stays itself."""
    sent = decode(encode_job({"op": "restore", "args": {"vectors": array}}))
    assert isinstance(sent["args"]["vectors"]["base64"], str)
    for back in (unpack_array(sent["args"]["vectors"]), unpack_array(array)):
        assert back.dtype == array.dtype and back.shape == array.shape
        np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize(
    "packed",
    [
        None,
        {},
        {"dtype": "<f8", "shape": [1, 1], "base64": "AAAAAAAAAAA="},
        {"dtype": "<f4", "shape": [2, 2], "base64": "AAAAAA=="},
        {"dtype": "<f4", "shape": [1], "base64": "AAAAAA=="},
        {"dtype": "<f4", "shape": [1, 1], "base64": "!!!!"},
    ],
)
def test_unreadable_job_arrays_are_bad_jobs(packed: object) -> None:
    with pytest.raises(Invalid) as caught:
        unpack_array(packed)
    assert caught.value.type == "bad_job"


def test_answers_already_in_json_cross_the_broker_unparsed() -> None:
    page = orjson.dumps([{"url": "u", "metadata": {"k": "é"}, "embedding": [0.5, 1.0]}])
    body = encode({"ok": True, "value": orjson.Fragment(page)})
    assert orjson.loads(body) == {"ok": True, "raw": True, "value": orjson.loads(page)}  # any reader can parse it
    answer = decode(body)
    assert answer["ok"] is True and isinstance(answer["value"], orjson.Fragment)
    assert orjson.dumps(answer["value"]) == page
    plain = {"ok": True, "value": [1, 2]}
    assert decode(encode(plain)) == plain
    job = {"op": "dump", "model": "vit_b32", "args": {"cursor": None, "limit": 5}, "deadline": 1.0}
    assert decode(encode(job)) == job


def test_packed_floats_are_a_protobuf_float_array() -> None:
    for rows in (0, 1, 3, 300):
        vectors = random_rows(rows, 5).astype(np.float32)
        message = schema_pb2.FloatArray.FromString(_packed_floats(vectors))
        np.testing.assert_array_equal(np.array(message.data, dtype=np.float32), vectors.ravel())


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


# through the API, both modes


def dump_all(client, model: str = "/models/vit_b32", limit: int = 1000) -> list[dict]:
    rows: list[dict] = []
    cursor = None
    while page := orjson.loads(client.post(f"{model}/dump", json={"cursor": cursor, "limit": limit}).content):
        assert [row["url"] for row in page] == sorted(row["url"] for row in page)
        assert cursor is None or page[0]["url"] > cursor
        rows += page
        cursor = page[-1]["url"]
    return rows


def test_restore_then_dump_round_trips_exactly(stack: Stack) -> None:
    count = 2300
    key = uuid.uuid4().hex[:6]
    urls = [f"http://127.0.0.2/{key}/{i * 31 % count:05d}/é \"'.jpg" for i in range(count)]
    values = random_rows(count, 9) * 3
    metadata = [{"n": i, "tags": ["a", "猫"]} for i in range(count)]
    rows = [
        {"url": url, "metadata": meta, "embedding": vector}
        for url, meta, vector in zip(urls, metadata, values, strict=True)
    ]
    with stack.client() as client:
        before = client.get("/models/vit_b32/count").json()
        for start in range(0, count, 1000):
            body = orjson.dumps(rows[start : start + 1000], option=orjson.OPT_SERIALIZE_NUMPY)
            response = client.post("/models/vit_b32/restore", content=body, headers=JSON)
            assert response.status_code == 204, response.text
        assert client.get("/models/vit_b32/count").json() == before + count
        dumped = {row["url"]: row for row in dump_all(client) if f"/{key}/" in row["url"]}
        assert sorted(dumped) == sorted(urls)
        stored = VIT.from_public(values)
        for index, url in enumerate(urls):
            assert dumped[url]["metadata"] == metadata[index]
            np.testing.assert_array_equal(np.asarray(dumped[url]["embedding"], dtype=np.float32), stored[index])

        # Restoring a dump changes nothing: the dumped floats are the stored (unit) float32 values.
        again = orjson.dumps(list(dumped.values())[:500])
        assert client.post("/models/vit_b32/restore", content=again, headers=JSON).status_code == 204
        redumped = {row["url"]: row for row in dump_all(client) if f"/{key}/" in row["url"]}
        assert redumped == dumped


@pytest.mark.parametrize(
    ("model", "bad", "kind", "message"),
    [
        ("vit_b32", [0.0] * 512, "bad_embedding", "row 2: embedding is all zeros"),
        ("vit_b32", [1e999] + [0.0] * 511, "bad_embedding", "row 2: embedding holds values that are not finite"),
        ("vit_b32", [1.0] * 511, "wrong_dimension", "row 2: embedding has 511 values"),
        ("phash", [2] + [0] * 63, "bad_embedding", "row 2: a phash embedding is 64 bits"),
    ],
)
def test_restore_is_all_or_nothing(stack: Stack, model: str, bad: list[float], kind: str, message: str) -> None:
    dim = 512 if model == "vit_b32" else 64
    good = [1.0] + [0.0] * (dim - 1)
    key = uuid.uuid4().hex[:6]
    rows = [{"url": f"http://127.0.0.2/{key}/{i}.jpg", "embedding": bad if i == 2 else good} for i in range(5)]
    with stack.client() as client:
        before = client.get(f"/models/{model}/count").json()
        body = json.dumps(rows).replace("Infinity", "1e999")
        response = client.post(f"/models/{model}/restore", content=body, headers=JSON)
        assert response.status_code == 422, response.text
        detail = response.json()["detail"][0]
        assert detail["type"] == kind and detail["msg"].startswith(message), detail
        assert client.get(f"/models/{model}/count").json() == before


def phash_rows(count: int, seed: int) -> tuple[str, list[dict]]:
    """`count` restore rows of random phash bits under urls with a fresh key; the key and the rows."""
    key = uuid.uuid4().hex[:6]
    bits = np.random.default_rng(seed).integers(0, 2, (count, 64)).tolist()
    urls = [f"http://127.0.0.2/{key}/{i:02d}.jpg" for i in range(count)]
    return key, [{"url": url, "metadata": {"i": i}, "embedding": bits[i]} for i, url in enumerate(urls)]


def test_backup_cli_round_trip(stack: Stack, tmp_path: Path) -> None:
    key, rows = phash_rows(30, seed=10)
    with stack.client() as client:
        assert client.post("/models/phash/restore", json=rows).status_code == 204
        assert backup.dump(stack.url, "phash", tmp_path, 7) == 0
        files = sorted(tmp_path.glob("*.jsonl"))
        lines = [orjson.loads(line) for path in files for line in path.read_bytes().splitlines()]
        assert len(lines) == client.get("/models/phash/count").json()
        assert all(len(path.read_bytes().splitlines()) <= 7 for path in files)
        mine = [line for line in lines if f"/{key}/" in line["url"]]
        assert mine == rows
        for row in mine[:10]:
            assert client.post("/models/phash/remove", json={"url": row["url"]}).status_code == 204
        assert backup.restore(stack.url, "phash", tmp_path, 4) == 0
        assert dump_all(client, "/models/phash") == lines

    vit = tmp_path / "vit"
    with stack.client() as client:
        assert backup.dump(stack.url, "vit_b32", vit, 1000) == 0
        text = b"".join(path.read_bytes() for path in sorted(vit.glob("*.jsonl")))
        dumped = [orjson.loads(line) for line in text.splitlines()]
        assert dumped == dump_all(client)


def test_backup_restore_names_an_unreadable_line(tmp_path: Path) -> None:
    good = orjson.dumps({"url": "http://127.0.0.2/a.jpg", "embedding": [1] + [0] * 63})
    (tmp_path / "phash-000000.jsonl").write_bytes(good + b"\n\n" + b'{"url": "http://127.0.0.2/b.jpg",\n')
    with pytest.raises(SystemExit, match=r"phash-000000\.jsonl:3: not JSON"):
        backup.restore("http://127.0.0.1:9", "phash", tmp_path, 10)


def test_streamed_dump_is_the_paged_dump(stack: Stack) -> None:
    """dump.jsonl: every row once, in url order, as the pages give them; `after` resumes; bad asks are 4xx."""
    _, rows = phash_rows(10, seed=11)
    with stack.client() as client:
        assert client.post("/models/phash/restore", json=rows).status_code == 204
        paged = dump_all(client, "/models/phash")
        response = client.get("/models/phash/dump.jsonl", params={"page": 3})  # many pages, each prefetched
        assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
        assert response.content.endswith(b"\n")
        assert [orjson.loads(line) for line in response.content.splitlines()] == paged
        middle = paged[len(paged) // 2]["url"]
        resumed = client.get("/models/phash/dump.jsonl", params={"after": middle, "page": 4}).content
        assert [orjson.loads(line) for line in resumed.splitlines()] == [r for r in paged if r["url"] > middle]
        assert client.get("/models/phash/dump.jsonl", params={"after": paged[-1]["url"]}).content == b""
        assert client.get("/models/nope/dump.jsonl").status_code == 404
        refused = client.get("/models/phash/dump.jsonl", params={"page": 0})
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["query", "page"]


def test_dump_files_split_whole_lines(tmp_path: Path) -> None:
    lines = [orjson.dumps({"url": f"u{i}"}) + b"\n" for i in range(23)]
    files = backup.DumpFiles(tmp_path, "m", 5)
    written = sum(files.write(b"".join(lines[start : start + size])) for start, size in ((0, 1), (1, 7), (8, 15)))
    files.close()
    assert written == 23
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == [f"m-{i:06d}.jsonl" for i in range(5)]  # 5+5+5+5+3 lines, no .part left
    assert [(tmp_path / name).read_bytes() for name in names] == [b"".join(lines[i : i + 5]) for i in range(0, 23, 5)]


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
