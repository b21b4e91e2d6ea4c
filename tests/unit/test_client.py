"""idios.client against a scripted server (httpx.MockTransport): what is retried, how long it waits,
and how a refusal reads. The endpoints themselves are tested against a live server (tests/e2e/test_client.py)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from idios.client import ApiError, AsyncClient, Client


def scripted(*answers: httpx.Response) -> tuple[list[httpx.Request], httpx.MockTransport]:
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return queue.pop(0)

    return seen, httpx.MockTransport(handle)


def busy(retry_after: str | None = "0.2") -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(503, json={"detail": [{"msg": "queue full", "type": "queue_full"}]}, headers=headers)


def test_a_503_is_tried_again_after_its_retry_after() -> None:
    seen, transport = scripted(busy("0.3"), httpx.Response(200, json=7))
    with Client("http://idios.test", transport=transport) as client:
        started = time.monotonic()
        assert client.count("phash") == 7
        waited = time.monotonic() - started
    assert len(seen) == 2 and 0.3 <= waited < 5


def test_the_tries_end_with_the_servers_refusal() -> None:
    seen, transport = scripted(busy("0"), busy("0"), busy("0"))
    with Client("http://idios.test", transport=transport, retries=3) as client, pytest.raises(ApiError) as refused:
        client.count("phash")
    assert len(seen) == 3
    assert (refused.value.status, refused.value.type, refused.value.msg) == (503, "queue_full", "queue full")
    assert str(refused.value) == "GET /models/phash/count: 503 queue_full: queue full"


@pytest.mark.parametrize("status", [400, 404, 409, 413, 422, 500, 504])
def test_other_refusals_are_not_sent_again(status: int) -> None:
    seen, transport = scripted(httpx.Response(status, json={"detail": [{"msg": "no", "type": "nope"}]}))
    with Client("http://idios.test", transport=transport) as client, pytest.raises(ApiError) as refused:
        client.add("phash", "http://example.com/a.jpg")
    assert len(seen) == 1 and refused.value.status == status


def test_a_refusal_that_is_not_the_apis_shape_still_reads() -> None:
    _seen, transport = scripted(httpx.Response(502, text="<html>Bad Gateway</html>"))
    with Client("http://idios.test", transport=transport) as client, pytest.raises(ApiError) as refused:
        client.ping()
    assert refused.value.status == 502 and "Bad Gateway" in refused.value.msg


def test_a_hostile_retry_after_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy's Retry-After of a day does not hang the client for a day."""
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    _seen, transport = scripted(busy("86400"), busy("-5"), busy("soon"), httpx.Response(200, json="pong"))
    with Client("http://idios.test", transport=transport) as client:
        assert client.ping() == "pong"
    assert waits == [60.0, 0.0, 4.0]


def test_the_key_and_the_address_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDIOS_API", "http://from-env.test:4213/")
    monkeypatch.setenv("IDIOS_API_KEY", "secret-key")
    seen, transport = scripted(httpx.Response(200, json=[]))
    with Client(transport=transport) as client:
        assert list(client.urls("phash")) == []  # one request: an empty page
    assert str(seen[0].url) == "http://from-env.test:4213/models/phash/urls"
    assert seen[0].headers["authorization"] == "Bearer secret-key"


def test_urls_pages_until_an_empty_page() -> None:
    """A page shorter than asked is not the end: the server answers what fits one broker message."""
    seen, transport = scripted(
        httpx.Response(200, json=["a", "b"]),
        httpx.Response(200, json=["c"]),
        httpx.Response(200, json=["d", "e"]),
        httpx.Response(200, json=[]),
    )
    with Client("http://idios.test", transport=transport) as client:
        assert list(client.urls("phash", page=2)) == ["a", "b", "c", "d", "e"]
    assert [json.loads(r.content) for r in seen] == [
        {"cursor": None, "limit": 2},
        {"cursor": "b", "limit": 2},
        {"cursor": "c", "limit": 2},
        {"cursor": "e", "limit": 2},
    ]


def test_a_dump_cut_inside_an_entry_is_an_error_not_a_short_dump() -> None:
    body = b'{"url":"a","metadata":{},"embedding":[1]}\n{"url":"b","meta'
    _seen, transport = scripted(httpx.Response(200, content=body))
    with Client("http://idios.test", transport=transport) as client:
        rows = client.dump("phash")
        assert next(rows).url == "a"
        with pytest.raises(ApiError, match="inside an entry"):
            next(rows)


def test_the_async_client_retries_the_same_way() -> None:
    seen, transport = scripted(busy("0"), httpx.Response(200, json="pong"))

    async def main() -> str:
        async with AsyncClient("http://idios.test", transport=transport) as client:
            return await client.ping()

    assert asyncio.run(main()) == "pong" and len(seen) == 2


def test_a_dump_line_without_end_is_refused_before_it_fills_memory() -> None:
    def endless():
        yield b'{"url": "a", "metadata": {"x": "'
        while True:
            yield b"y" * (1 << 20)

    _seen, transport = scripted(httpx.Response(200, content=endless()))
    with Client("http://idios.test", transport=transport) as client, pytest.raises(ApiError, match="line_too_long"):
        list(client.dump_lines("phash"))
