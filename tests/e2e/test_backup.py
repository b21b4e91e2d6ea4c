"""Restore and dump through a running stack's HTTP API and the backup CLI, in both modes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest

from idios import backup
from idios.specs import spec

from tests.support.stacks import Stack

VIT = spec("vit_b32")


JSON = {"content-type": "application/json"}


def random_rows(count: int, seed: int, dim: int = 512) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, dim))


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
