"""Paging, message-size and locking paths under concurrent writes and removes, through the HTTP API
of an in-process Idios against the real Milvus (the `make_app` fixture of test_paging)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from idios import backup, expr
from idios.client import Client
from idios.transport.queues import decode, encode_job

from tests.integration.test_paging import JSON, bits_rows, make_app, paged_dump, restore  # noqa: F401 (make_app is a fixture)
from tests.support.stacks import IMAGE_HOST


def test_a_dump_page_whose_rows_were_all_removed_meanwhile_is_not_the_end(make_app) -> None:  # noqa: F811
    """POST /dump reads a page's urls, then their rows: when another client removed every row of
    the page in between, the page came back empty, which a client takes for the end of the dump,
    and every row after it (never removed) was missing from the dump."""
    app = make_app("phash")
    key = uuid.uuid4().hex[:6]
    stored = [f"http://{IMAGE_HOST}/{key}/{i:03d}" for i in range(30)]
    restore(app.client, "phash", bits_rows(stored, seed=2))
    real = app.store.columns_between
    removed: list[str] = []

    def removed_first(model_spec, cursor, last, limit=None):
        """The first page's rows are removed by another client just before they are read."""
        if not removed:
            gone = [url for url in stored if (cursor is None or url > cursor) and url <= last]
            app.store.client.delete(app.store.collection(model_spec), filter=expr.url_in(gone))
            removed.extend(gone)
        return real(model_spec, cursor, last, limit)

    app.store.columns_between = removed_first
    urls = [row["url"] for row in paged_dump(app.client, "phash", limit=10)]
    assert removed == stored[:10]
    assert urls == stored[10:]


def test_idios_restore_sends_what_the_server_takes_of_rows_it_dumped(make_app, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    """Rows with much metadata (which adds accept up to 65,535 bytes) made `idios restore` requests
    of `--batch` rows larger than the server takes (IDIOS_MAX_BODY_BYTES, or the broker's message
    limit): the restore of a dump `idios dump` wrote stopped at its first request with a 413."""
    app = make_app("phash", max_body_bytes=1024 * 1024)
    key = uuid.uuid4().hex[:6]
    urls = [f"http://{IMAGE_HOST}/{key}/{i:03d}" for i in range(120)]
    rows = bits_rows(urls, seed=3, metadata=lambda i: {"i": i, "text": "m" * 60_000})
    (tmp_path / "phash-000000.jsonl").write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    monkeypatch.setattr(backup, "Client", lambda api: Client(http=app.client))

    assert backup.restore("http://testserver", "phash", tmp_path, 1000) == 0
    dumped = paged_dump(app.client, "phash", limit=1000)
    assert [row["url"] for row in dumped] == urls
    assert [row["metadata"] for row in dumped] == [row["metadata"] for row in rows]


def _nested(depth: int) -> dict:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return {"a": value}


@pytest.mark.parametrize("metadata", [_nested(252), {"n": 2**64}, {"n": -(2**63) - 1}], ids=["deep", "big", "small"])
def test_metadata_no_job_can_carry_is_refused_with_422(make_app, monkeypatch, metadata: dict) -> None:  # noqa: F811
    """The add routes parse their body with json.loads, which reads metadata nested deeper than
    orjson (the jobs' and answers' encoder) writes, and integers beyond 64 bits, which it does not
    write at all: such an add was accepted, then failed with a 500 when its job was encoded for the
    broker (and a row stored without a broker made every answer holding it fail the same way)."""
    app = make_app("phash")
    run = app.transport.call

    async def as_the_broker_carries_it(job: dict, lane: Any) -> Any:
        return await run(decode(encode_job(job)), lane)

    monkeypatch.setattr(app.transport, "call", as_the_broker_carries_it)
    body = json.dumps({"url": f"http://{IMAGE_HOST}/{uuid.uuid4().hex[:6]}/a.jpg", "metadata": metadata})
    for route in ("add", "search_add"):
        response = app.client.post(f"/models/phash/{route}", content=body, headers=JSON)
        assert response.status_code == 422, response.text
        assert "metadata" in response.text and "64 bits" in response.text
    response = app.client.post("/models/phash/add_bulk", content=f"[{body}]", headers=JSON)
    assert response.status_code == 200 and response.json()["added"] == []
    assert "64 bits" in response.json()["failed"][0]["error"]


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_metadata_numbers_json_cannot_hold_are_refused_not_stored_as_null(make_app, number: str) -> None:  # noqa: F811
    """Both body parsers read NaN and Infinity, which JSON has no way to write: the metadata was
    stored with null in their place (204), silently other than what was sent."""
    app = make_app("phash")
    url = f"http://{IMAGE_HOST}/{uuid.uuid4().hex[:6]}/a.jpg"
    metadata = '{"x": NUMBER, "y": 1}'.replace("NUMBER", number)
    row = f'[{{"url": "{url}", "metadata": {metadata}, "embedding": {json.dumps([0, 1] * 32)}}}]'
    response = app.client.post("/models/phash/restore", content=row, headers=JSON)
    assert response.status_code == 422, response.text
    assert "finite" in response.text
    response = app.client.post("/models/phash/add", content=f'{{"url": "{url}", "metadata": {metadata}}}', headers=JSON)
    assert response.status_code == 422 and "finite" in response.text, response.text
    assert app.client.get("/models/phash/count").json() == 0
