"""Page budgets count what the job envelope encodes."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from idios import pages
from idios.specs import spec
from idios.store import Columns
from idios.transport.queues import encode

VIT_L = spec("vit_l14")


def test_page_budgets_count_what_the_envelope_encodes() -> None:
    """Each page, encoded in its envelope as a broker carries it, is within the limit it was cut
    to, and one row more would not have been; for rows full of what JSON escapes."""
    urls = [f'http://h/{i:02d}"\\\n\x01é' for i in range(40)]
    vectors = VIT_L.from_public(np.random.default_rng(6).standard_normal((40, 768)))
    metadata = [{"s": '"\\' * 500 + "\x02\t猫"} for _ in range(40)]
    columns = Columns(urls=urls, vectors=vectors, metadata=metadata)

    def first(count: int) -> Columns:
        return Columns(urls=urls[:count], vectors=vectors[:count], metadata=metadata[:count])

    def answer(value: Any) -> int:
        return len(encode({"ok": True, "value": value}))

    unlimited = 10**9
    # Whole, the pages are what orjson writes for the rows, byte for byte.
    rows = [
        {"url": u, "metadata": m, "embedding": VIT_L.to_public(v)}
        for u, v, m in zip(urls, vectors, metadata, strict=True)
    ]
    line = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE
    assert pages.json_lines(VIT_L, columns, unlimited) == b"".join(orjson.dumps(r, option=line) for r in rows).decode()
    assert pages.json_rows(VIT_L, columns, unlimited) == orjson.dumps(rows, option=orjson.OPT_SERIALIZE_NUMPY)
    for limit in (1, 30_000, 100_000, 250_000, unlimited):
        lines, rows, fitted = (
            pages.json_lines(VIT_L, columns, limit),
            pages.json_rows(VIT_L, columns, limit),
            pages.urls(urls, limit),
        )
        count, row_count = lines.count("\n"), len(orjson.loads(rows))
        assert count >= 1 and row_count >= count  # JSON Lines text grows once more as a JSON string
        assert pages.last_url(lines) == urls[count - 1]
        assert count == 1 or answer(lines) <= limit
        assert row_count == 1 or answer(orjson.Fragment(rows)) <= limit
        assert len(fitted) == 1 or answer(fitted) <= limit
        if count < 40:
            assert answer(pages.json_lines(VIT_L, first(count + 1), unlimited)) > limit
        if row_count < 40:
            assert answer(orjson.Fragment(pages.json_rows(VIT_L, first(row_count + 1), unlimited))) > limit
        if len(fitted) < 40:
            assert answer(urls[: len(fitted) + 1]) > limit
    assert pages.last_url("") is None
    assert pages.budget(16 * 1024 * 1024) == 15 * 1024 * 1024
