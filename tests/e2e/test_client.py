"""idios.client against a live `idios serve`: every method, both clients, and the server's refusals."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from idios.api.schemas import SearchHit
from idios.client import ApiError, AsyncClient, Client

from tests.support.imageserver import ImageServer
from tests.support.photos import jpeg
from tests.support.stacks import Stack


def test_add_search_compare_count_remove(serve: Stack, images: ImageServer) -> None:
    key = uuid.uuid4().hex
    coffee, rocket = images.url(f"/coffee.jpg?c={key}"), images.url(f"/rocket.jpg?c={key}")
    with Client(serve.url) as idios:
        assert idios.ping() == "pong"
        assert {m.name: m.status for m in idios.models()}["phash"] == "ready"
        before = idios.count("phash")
        idios.add("phash", coffee, {"key": key, "what": "coffee"})
        idios.add("phash", rocket, {"key": key, "what": "rocket"})
        with pytest.raises(ApiError) as again:
            idios.add("phash", coffee, new=True)
        assert (again.value.status, again.value.type) == (409, "already_stored")
        hits = idios.search("phash", images.url("/coffee_small.jpg"), limit=3, filter={"key": key})
        assert isinstance(hits[0], SearchHit) and hits[0].url == coffee and hits[0].metadata["what"] == "coffee"
        by_bytes = idios.search("phash", image=jpeg("rocket"), limit=1, filter={"key": key})
        assert by_bytes[0].url == rocket and by_bytes[0].similarity == pytest.approx(100.0)
        idios.add("vit_b32", coffee, {"key": key})
        by_text = idios.search("vit_b32", text="a cup of coffee", limit=2, filter={"key": key})
        assert [hit.url for hit in by_text] == [coffee]
        same = idios.compare("phash", coffee, jpeg("coffee"))
        assert same.similarity == pytest.approx(100.0) and same.match is None
        assert idios.compare("phash", coffee, rocket).similarity < 80
        assert idios.count("phash") == before + 2
        idios.remove("phash", coffee)
        assert idios.count("phash") == before + 1


def test_bulk_urls_dump_restore_and_duplicates(serve: Stack, images: ImageServer) -> None:
    key = uuid.uuid4().hex
    names = ["astronaut", "coffee", "coins", "rocket"]
    urls = [images.url(f"/{name}.jpg?b={key}") for name in names]
    with Client(serve.url) as idios:
        result = idios.add_bulk("phash", [(url, {"batch": key}) for url in urls[:3]] + [urls[3]])
        assert sorted(result.added) == sorted(urls) and not result.failed
        again = idios.add_bulk("phash", [*urls[:2], images.url(f"/missing.jpg?b={key}")])
        assert sorted(again.found) == sorted(urls[:2])
        assert [failure.url for failure in again.failed] == [images.url(f"/missing.jpg?b={key}")]

        every = list(idios.urls("phash", page=3))
        assert every == sorted(every) and set(urls) <= set(every)
        assert list(idios.urls("phash", after=urls[0], page=2)) == [u for u in every if u > urls[0]]

        dumped = {row.url: row for row in idios.dump("phash")}
        assert set(dumped) == set(every)
        assert dumped[urls[0]].metadata == {"batch": key} and dumped[urls[3]].metadata == {}
        for url in urls:
            idios.remove("phash", url)
        idios.restore("phash", [dumped[url].model_dump() for url in urls])
        assert {row.url: row for row in idios.dump("phash") if row.url in urls} == {url: dumped[url] for url in urls}

        copy = images.url(f"/coffee_small.jpg?b={key}")
        idios.add("phash", copy)
        groups = [group for page in idios.duplicates("phash", page=5) for group in page.groups]
        assert any({urls[1], copy} <= set(group.urls) for group in groups), groups


def test_refusals_name_status_type_and_message(serve: Stack, images: ImageServer) -> None:
    with Client(serve.url, retries=1) as idios:
        with pytest.raises(ApiError) as unknown:
            idios.count("nosuchmodel")
        assert (unknown.value.status, unknown.value.type) == (404, "unknown_model")
        with pytest.raises(ApiError) as bad:
            idios.add("phash", images.url("/page.html"))
        assert bad.value.status == 422 and bad.value.type == "not_an_image"
        with pytest.raises(ApiError) as not_loaded:  # not in IDIOS_MODELS: 503, tried once here
            idios.count("vit_l14")
        assert not_loaded.value.status == 503 and not_loaded.value.retry_after == 5
        assert str(not_loaded.value).startswith("GET /models/vit_l14/count: 503 model_unavailable: ")


def test_the_async_client(serve: Stack, images: ImageServer) -> None:
    key = uuid.uuid4().hex
    url = images.url(f"/coins.jpg?a={key}")

    async def main() -> tuple[list[SearchHit], list[str], int]:
        async with AsyncClient(serve.url) as idios:
            await idios.add("phash", url, {"key": key})
            hits, count = await asyncio.gather(
                idios.search("phash", url, limit=1, filter={"key": key}), idios.count("phash")
            )
            stored = [u async for u in idios.urls("phash", page=4) if u == url]
            rows = [row async for row in idios.dump("phash") if row.url == url]
            assert rows[0].metadata == {"key": key}
            return hits, stored, count

    hits, stored, count = asyncio.run(main())
    assert hits[0].url == url and stored == [url] and count >= 1
