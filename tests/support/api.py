"""Driving the HTTP API in tests: request bodies, restores and dumps, and the checks on what comes back."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import numpy as np
import orjson
from fastapi.testclient import TestClient

JSON = {"content-type": "application/json"}


def refused(response: httpx.Response, status: int, kind: str, *words: str) -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"][0]
    assert detail["type"] == kind, detail
    for word in words:
        assert word in detail["msg"], detail
    return detail["msg"]


def big_bulk(size: int) -> bytes:
    item = b'{"url": "http://127.0.0.2/a.jpg", "metadata": {"k": 1}},'
    return b"[" + item * (size // len(item)) + b'{"url": "http://127.0.0.2/a.jpg"}]'


def bits_rows(urls: list[str], seed: int, metadata: Callable[[int], dict] = lambda i: {"i": i}) -> list[dict]:
    bits = np.random.default_rng(seed).integers(0, 2, (len(urls), 64)).tolist()
    return [{"url": url, "metadata": metadata(i), "embedding": bits[i]} for i, url in enumerate(urls)]


def restore(client: TestClient | httpx.Client, model: str, rows: list[dict], batch: int = 5000) -> None:
    for start in range(0, len(rows), batch):
        body = orjson.dumps(rows[start : start + batch], option=orjson.OPT_SERIALIZE_NUMPY)
        response = client.post(f"/models/{model}/restore", content=body, headers=JSON)
        assert response.status_code == 204, response.text


def paged_dump(client: TestClient, model: str, limit: int) -> list[dict]:
    """POST /dump page after page, each from the last url of the one before, to an empty page."""
    rows: list[dict] = []
    cursor = None
    while page := orjson.loads(client.post(f"/models/{model}/dump", json={"cursor": cursor, "limit": limit}).content):
        rows += page
        cursor = page[-1]["url"]
    return rows


def streamed_dump(client: TestClient | httpx.Client, model: str, page: int) -> list[dict]:
    response = client.get(f"/models/{model}/dump.jsonl", params={"page": page})
    assert response.status_code == 200, response.text
    assert response.content.endswith(b"\n")
    return [orjson.loads(line) for line in response.content.splitlines()]


def assert_every_row_once_in_order(dumped: list[str], stored: list[str]) -> None:
    assert dumped == sorted(dumped), "out of order"
    assert len(dumped) == len(set(dumped)), "a row twice"
    missing = sorted(set(stored) - set(dumped))
    assert not missing, f"{len(missing)} stored rows missing, e.g. {missing[:3]}"
