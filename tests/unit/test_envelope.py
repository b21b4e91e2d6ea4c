"""The worker's answer envelope: an answer over the message limit becomes a 413."""

from __future__ import annotations

import orjson
import pytest

from idios.worker import _encode_reply

# like the rest of the suite, on the session's event loop
pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_an_answer_over_the_message_limit_becomes_a_413() -> None:
    limit = 2 * 1024 * 1024
    page = orjson.Fragment(orjson.dumps([{"url": f"u{i}", "embedding": [0.125] * 512} for i in range(1000)]))
    body = _encode_reply({"ok": True, "value": page}, limit, "dump")
    answer = orjson.loads(body)
    assert len(body) < 1000 and answer["ok"] is False
    assert answer["error"]["status"] == 413 and answer["error"]["type"] == "answer_too_large"
    assert "the answer is too large" in answer["error"]["msg"]
    small = {"ok": True, "value": [1, 2, 3]}
    assert orjson.loads(_encode_reply(small, limit)) == small
