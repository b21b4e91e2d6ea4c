"""Every endpoint, end to end, in the embedded mode and the distributed mode."""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import time
from urllib.parse import urlsplit

import pytest

from tests.support.imageserver import ImageServer
from tests.support.photos import jpeg
from tests.support.stacks import Stack

VIT = "/models/vit_b32"
PHASH = "/models/phash"


def url(images: ImageServer, path: str, key: str = "") -> str:
    """A distinct storage key for the same picture: tests do not see each other's entries."""
    return images.url(path) + (f"?k={key}" if key else "")


def stored_metadata(client, key: str, model: str = VIT) -> dict:
    """The metadata stored with `key` (through dump, which pages by url)."""
    before = key[:-1] + chr(ord(key[-1]) - 1) + "\U0010ffff"
    rows = client.post(f"{model}/dump", json={"cursor": before, "limit": 1}).json()
    assert rows and rows[0]["url"] == key, rows
    return rows[0]["metadata"]


def detail_type(response) -> str:
    return response.json()["detail"][0]["type"]


def test_ping_and_models(stack: Stack) -> None:
    with stack.client() as client:
        assert client.get("/ping").json() == "pong"
        assert client.get("/ping", params={"rpc": "true"}).json() == "pong"
        models = {m["name"]: m for m in client.get("/models").json()}
    assert models["vit_b32"] | {"status": "ready"} == models["vit_b32"]
    assert (models["vit_b32"]["dimension"], models["vit_b32"]["metric"], models["vit_b32"]["text"]) == (
        512,
        "COSINE",
        True,
    )
    assert (models["phash"]["dimension"], models["phash"]["metric"], models["phash"]["text"]) == (64, "HAMMING", False)
    assert models["vit_l14"]["status"] == "unavailable" and models["vit_l14"]["reason"]


def test_a_connection_idle_for_seconds_still_gets_answers(stack: Stack) -> None:
    """Clients and proxies reuse keep-alive connections for a while (httpx 5 s, Traefik 60 s here):
    the API must not close an idle one first, or a request sent as it closes is lost."""
    address = urlsplit(stack.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        connection.request("GET", "/ping")
        assert connection.getresponse().read() == b'"pong"'
        first = connection.sock
        time.sleep(6)
        connection.request("GET", "/ping")
        answer = connection.getresponse()
        assert (answer.status, answer.read()) == (200, b'"pong"')
        assert connection.sock is first, "the client had to open a new connection"
    finally:
        connection.close()


def test_add_search_count_remove(stack: Stack, images: ImageServer) -> None:
    target = url(images, "/astronaut.jpg", "asr")
    with stack.client() as client:
        before = client.get(f"{VIT}/count").json()
        response = client.post(f"{VIT}/add", json={"url": target, "metadata": {"tags": "person", "n": 1}})
        assert response.status_code == 204, response.text
        assert client.get(f"{VIT}/count").json() == before + 1
        hits = client.post(f"{VIT}/search", json={"url": target, "limit": 5}).json()
        assert hits[0] == {
            "url": target,
            "metadata": {"tags": "person", "n": 1},
            "similarity": 100.0,
            "flipped": False,
            "match": None,
        }
        assert all(a["similarity"] >= b["similarity"] for a, b in itertools.pairwise(hits))
        assert client.post(f"{VIT}/remove", json={"url": target}).status_code == 204
        assert client.get(f"{VIT}/count").json() == before
        hits = client.post(f"{VIT}/search", json={"url": images.url("/astronaut.jpg"), "limit": 50}).json()
        assert target not in [hit["url"] for hit in hits]


def test_add_is_an_upsert_and_search_add_refuses_stored_urls(stack: Stack, images: ImageServer) -> None:
    target = url(images, "/chelsea.jpg", "upsert")
    with stack.client() as client:
        assert client.post(f"{VIT}/add", json={"url": target, "metadata": {"v": 1}}).status_code == 204
        count = client.get(f"{VIT}/count").json()
        assert client.post(f"{VIT}/add", json={"url": target, "metadata": {"v": 2}}).status_code == 204
        assert client.get(f"{VIT}/count").json() == count
        assert stored_metadata(client, target) == {"v": 2}

        fresh = url(images, "/chelsea.jpg", "search_add")
        assert client.post(f"{VIT}/search_add", json={"url": fresh}).status_code == 204
        again = client.post(f"{VIT}/search_add", json={"url": fresh, "metadata": {"v": 3}})
        assert again.status_code == 409 and detail_type(again) == "already_stored"
        assert stored_metadata(client, fresh) == {}


def test_add_bulk_reports_added_found_and_failed(stack: Stack, images: ImageServer) -> None:
    stored = url(images, "/coffee.jpg", "bulk-stored")
    good = [url(images, f"/{name}.jpg", "bulk") for name in ("coffee", "rocket", "camera", "coins", "moon")]
    bad = [images.url("/missing.jpg"), images.url("/page.html"), images.url("/tiny.jpg"), "ftp://example.com/a.jpg"]
    with stack.client() as client:
        assert client.post(f"{VIT}/add", json={"url": stored}).status_code == 204
        body = [{"url": u, "metadata": {"i": i}} for i, u in enumerate(good)] + [{"url": u} for u in [stored, *bad]]
        response = client.post(f"{VIT}/add_bulk", json=body)
        assert response.status_code == 200, response.text
        result = response.json()
        assert sorted(result["added"]) == sorted(good)
        assert result["found"] == [stored]
        failed = {item["url"]: item["error"] for item in result["failed"]}
        assert set(failed) == set(bad)
        assert "404" in failed[images.url("/missing.jpg")]
        stored_urls = set(client.post(f"{VIT}/urls", json={"limit": 10000}).json())
        assert set(good) <= stored_urls
        assert not set(bad) & stored_urls


def test_search_by_text_image_upload_and_filters(stack: Stack, images: ImageServer) -> None:
    names = ("coffee", "rocket", "moon")
    keyed = {name: url(images, f"/{name}.jpg", "filters") for name in names}
    with stack.client() as client:
        for name, u in keyed.items():
            metadata = {"tags": 'say "cheese"' if name == "rocket" else "plain", "name": name}
            assert client.post(f"{VIT}/add", json={"url": u, "metadata": metadata}).status_code == 204

        encoded = base64.b64encode(jpeg("rocket")).decode()
        hits = client.post(f"{VIT}/search", json={"image": encoded, "limit": 3}).json()
        assert hits[0]["similarity"] > 99.0 and hits[0]["url"].split("?")[0] == images.url("/rocket.jpg")

        upload = client.post(
            f"{VIT}/search/upload", files={"file": ("q.jpg", jpeg("moon"), "image/jpeg")}, data={"limit": "2"}
        ).json()
        assert upload[0]["url"].split("?")[0] == images.url("/moon.jpg") and len(upload) == 2

        text_hits = client.post(f"{VIT}/search", json={"text": "a rocket on a launch pad", "limit": 4}).json()
        assert len(text_hits) == 4 and all(0 <= hit["similarity"] <= 100 for hit in text_hits)

        filtered = client.post(
            f"{VIT}/search", json={"url": keyed["coffee"], "filter": {"tags": 'say "cheese"'}, "limit": 10}
        ).json()
        assert [hit["url"] for hit in filtered] == [keyed["rocket"]]
        assert client.post(f"{VIT}/search", json={"url": keyed["coffee"], "filter": {"name": 'x\\"y'}}).json() == []

        everything = client.post(f"{VIT}/search", json={"url": keyed["coffee"], "limit": 6}).json()
        second_page = client.post(f"{VIT}/search", json={"url": keyed["coffee"], "limit": 3, "offset": 3}).json()
        assert [h["url"] for h in second_page] == [h["url"] for h in everything[3:6]]
        threshold = everything[2]["similarity"]
        above = client.post(f"{VIT}/search", json={"url": keyed["coffee"], "limit": 50, "min_similarity": threshold})
        assert all(hit["similarity"] >= threshold for hit in above.json())
        assert len(above.json()) >= 3


def test_compare(stack: Stack, images: ImageServer) -> None:
    a, b = images.url("/astronaut.jpg"), images.url("/coins.jpg")
    with stack.client() as client:
        same = client.post(f"{VIT}/compare", json={"url": a, "other": a + "?k=copy"}).json()
        different = client.post(f"{VIT}/compare", json={"url": a, "other": b}).json()
        assert same == pytest.approx(100.0, abs=0.01)
        assert 0 <= different < 99
        near = client.post(f"{PHASH}/compare", json={"url": a, "other": images.url("/astronaut_small.jpg")}).json()
        far = client.post(f"{PHASH}/compare", json={"url": a, "other": b}).json()
        assert near > 90 > far
        # Either side may be an uploaded image (base64) instead of a url.
        upload = base64.b64encode(jpeg("astronaut")).decode()
        mixed = client.post(f"{VIT}/compare", json={"image": upload, "other": a + "?k=other"}).json()
        assert mixed == pytest.approx(100.0, abs=0.01)
        both = client.post(f"{VIT}/compare", json={"image": upload, "other_image": upload}).json()
        assert both == pytest.approx(100.0, abs=0.01)
        for body in ({"url": a}, {"url": a, "image": upload, "other": b}, {"image": "%%%", "other": b}):
            answer = client.post(f"{VIT}/compare", json=body)
            assert answer.status_code == 422, (body, answer.text)


def test_urls_pagination_to_the_end_with_awkward_urls(stack: Stack, images: ImageServer) -> None:
    keys = ['q"uote', "back\\slash", "unicodé-猫", "spa ce", "apos'trophe", "plain", "%22enc", "z-last"]
    urls = [url(images, "/camera.jpg", f"page-{key}") for key in keys]
    with stack.client() as client:
        rows = [{"url": u, "metadata": {}, "embedding": [1.0] + [0.0] * 511} for u in urls]
        assert client.post(f"{VIT}/restore", json=rows).status_code == 204
        seen: list[str] = []
        cursor = None
        while True:
            page = client.post(f"{VIT}/urls", json={"cursor": cursor, "limit": 3}).json()
            if not page:
                break
            assert page == sorted(page) and (cursor is None or page[0] > cursor)
            seen += page
            cursor = page[-1]
        assert seen == sorted(set(seen))
        assert set(urls) <= set(seen)
        assert client.get(f"{VIT}/count").json() == len(seen)
        dumped = client.post(f"{VIT}/dump", json={"cursor": urls[0], "limit": 1000}).json()
        assert all(row["url"] > urls[0] for row in dumped)


def test_phash_finds_resized_and_recompressed_copies(stack: Stack, images: ImageServer) -> None:
    originals = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "immunohistochemistry")
    with stack.client() as client:
        result = client.post(f"{PHASH}/add_bulk", json=[{"url": images.url(f"/{n}.jpg")} for n in originals]).json()
        assert not result["failed"], result
        for name in originals:
            for variant in (f"/{name}_small.jpg", f"/{name}_q30.jpg", f"/{name}.png"):
                hits = client.post(f"{PHASH}/search", json={"url": images.url(variant), "limit": 2}).json()
                assert hits[0]["url"] == images.url(f"/{name}.jpg"), (variant, hits)
                assert hits[0]["similarity"] >= 85 > hits[1]["similarity"]


def test_dump_then_restore_gives_identical_search_results(stack: Stack, images: ImageServer) -> None:
    with stack.client() as client:
        for name in ("coffee", "rocket", "moon", "coins"):
            client.post(f"{PHASH}/add", json={"url": url(images, f"/{name}.jpg", "dump")})
        queries = [images.url("/coffee_small.jpg"), images.url("/moon_q30.jpg")]

        def results() -> list[list[tuple[str, float]]]:
            answers = [client.post(f"{PHASH}/search", json={"url": q, "limit": 50}).json() for q in queries]
            return [sorted((hit["url"], hit["similarity"]) for hit in answer) for answer in answers]

        before = results()
        dump: list[dict] = []
        cursor = None
        while page := client.post(f"{PHASH}/dump", json={"cursor": cursor, "limit": 4}).json():
            dump += page
            cursor = page[-1]["url"]
        assert len(dump) == client.get(f"{PHASH}/count").json()
        assert all(len(row["embedding"]) == 64 and set(row["embedding"]) <= {0, 1} for row in dump)
        for row in dump:
            assert client.post(f"{PHASH}/remove", json={"url": row["url"]}).status_code == 204
        assert client.get(f"{PHASH}/count").json() == 0
        assert client.post(f"{PHASH}/restore", json=dump).status_code == 204
        assert client.get(f"{PHASH}/count").json() == len(dump)
        assert results() == before


@pytest.mark.parametrize(
    ("path", "body", "status", "kind"),
    [
        ("/models/nope/add", {"url": "http://127.0.0.2/a.jpg"}, 404, "unknown_model"),
        (f"{PHASH}/search", {"text": "a cat"}, 422, "no_text_tower"),
        (f"{VIT}/add", {"url": "ftp://127.0.0.2/a.jpg"}, 422, "value_error"),
        (f"{VIT}/add", {"url": "http://user:pw@127.0.0.2/a.jpg"}, 422, "value_error"),
        (f"{VIT}/add", {"url": "http://127.0.0.2/" + "a" * 3000}, 422, "string_too_long"),
        (f"{VIT}/add", {"url": "http://127.0.0.1:4213/ping"}, 422, "url_forbidden_address"),
        (f"{VIT}/add", {"url": "http://169.254.169.254/latest/meta-data"}, 422, "url_forbidden_address"),
        (f"{VIT}/add", {"url": "http://[::1]/a.jpg"}, 422, "url_forbidden_address"),
        (f"{VIT}/add", {}, 422, "missing"),
        (f"{VIT}/add", {"url": "http://127.0.0.2/a.jpg", "metadata": {"x": "y" * 70000}}, 422, "value_error"),
        (f"{VIT}/search", {"url": "http://127.0.0.2/a.jpg", "text": "both"}, 422, "value_error"),
        (f"{VIT}/search", {"text": "x", "limit": 0}, 422, "greater_than_equal"),
        (f"{VIT}/search", {"text": "x", "limit": 10**9}, 422, "less_than_equal"),
        (f"{VIT}/search", {"image": "!!!not base64"}, 422, "bad_base64"),
        (f"{VIT}/restore", [{"url": "http://127.0.0.2/r.jpg", "embedding": [0.5] * 10}], 422, "wrong_dimension"),
        (f"{VIT}/urls", {"cursor": 'a"b\\', "limit": 0}, 422, "greater_than_equal"),
    ],
)
def test_bad_requests_get_clear_client_errors(stack: Stack, path: str, body: object, status: int, kind: str) -> None:
    with stack.client() as client:
        response = client.post(path, json=body)
    assert response.status_code == status, response.text
    assert detail_type(response) == kind and response.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/missing.jpg", "download_failed"),
        ("/page.html", "not_an_image"),
        ("/tiny.jpg", "image_too_small"),
        ("/truncated.jpg", "image_truncated"),
    ],
)
def test_bad_images_get_clear_client_errors(stack: Stack, images: ImageServer, path: str, kind: str) -> None:
    with stack.client() as client:
        response = client.post(f"{VIT}/add", json={"url": images.url(path)})
        assert response.status_code == 422, response.text
        assert detail_type(response) == kind
        assert client.get("/ping", params={"rpc": "true"}).json() == "pong"


def test_cursor_with_quotes_and_large_bodies(stack: Stack) -> None:
    with stack.client() as client:
        response = client.post(f"{VIT}/urls", json={"cursor": 'x" or url != "', "limit": 5})
        assert response.status_code == 200 and all(u > 'x" or url != "' for u in response.json())
        big = client.post(
            f"{VIT}/restore",
            content=b"[" + b" " * (40 * 1024 * 1024) + b"]",
            headers={"content-type": "application/json"},
        )
        assert big.status_code == 413
        empty = client.post(f"{VIT}/add", content=b"", headers={"content-type": "application/json"})
        assert empty.status_code == 422
        nested = client.post(
            f"{VIT}/add",
            content=json.dumps({"url": "http://127.0.0.2/n.jpg"})[:-1].encode()
            + b', "metadata": '
            + b'{"a":' * 1000
            + b"1"
            + b"}" * 1001,
            headers={"content-type": "application/json"},
        )
        assert 400 <= nested.status_code < 500
