"""Paging, message-size and locking paths under concurrent writes and removes, through the HTTP API
of an in-process Idios against the real Milvus (the `make_app` fixture of test_paging)."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import orjson
from test_paging import bits_rows, make_app, paged_dump, restore  # noqa: F401 (make_app is a fixture)

from idios import backup, expr

from conftest import IMAGE_HOST


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
    monkeypatch.setattr(backup, "_client", lambda api: contextlib.nullcontext(app.client))

    assert backup.restore("http://testserver", "phash", tmp_path, 1000) == 0
    dumped = paged_dump(app.client, "phash", limit=1000)
    assert [row["url"] for row in dumped] == urls
    assert [row["metadata"] for row in dumped] == [row["metadata"] for row in rows]
