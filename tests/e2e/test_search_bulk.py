"""POST /models/{model}/search_bulk in both modes: answers in order, a bad query fails alone, and the
limits (queries per request, an image per query that must fit one broker message) hold."""

from __future__ import annotations

import base64
import uuid

from idios.client import Client

from tests.support.imageserver import ImageServer
from tests.support.photos import jpeg
from tests.support.stacks import Stack


def test_each_query_gets_its_hits_or_its_own_error_in_order(stack: Stack, images: ImageServer) -> None:
    key = uuid.uuid4().hex
    coffee, rocket = images.url(f"/coffee.jpg?q={key}"), images.url(f"/rocket.jpg?q={key}")
    only = {"filter": {"key": key}}
    with Client(stack.url) as client:
        client.add_bulk("phash", [(coffee, {"key": key}), (rocket, {"key": key})])
        answers = client.search_bulk(
            "phash",
            [
                {"url": images.url("/rocket_small.jpg"), "limit": 1, **only},
                {"text": "a rocket", **only},  # phash reads no text
                {"url": coffee, "text": "both"},  # not one query
                {"url": images.url(f"/missing.jpg?q={key}"), **only},
                {"image": jpeg("coffee"), "limit": 1, **only},
                {"url": "ftp://example.com/x.jpg"},
                {"image": "not base64 !!", **only},
                {"url": images.url("/coffee_small.jpg"), "limit": 2, **only},
            ],
        )
    assert len(answers) == 8
    assert [hit.url for hit in answers[0].hits or []] == [rocket]
    assert answers[1].error is not None and (answers[1].error.status, answers[1].error.type) == (422, "no_text_tower")
    assert answers[2].error is not None and answers[2].error.type == "invalid_query" and answers[2].hits is None
    assert answers[3].error is not None and answers[3].error.status == 422 and "404" in answers[3].error.msg
    assert [hit.url for hit in answers[4].hits or []] == [coffee]
    assert answers[5].error is not None and answers[5].error.type == "invalid_query"
    assert answers[6].error is not None and answers[6].error.status == 422
    assert [hit.url for hit in answers[7].hits or []][:1] == [coffee]


def test_too_many_queries_or_too_large_an_image_is_refused(stack: Stack) -> None:
    with stack.client() as client:
        many = client.post("/models/phash/search_bulk", json=[{"text": "x"}] * 101)
        assert many.status_code == 413 and many.json()["detail"][0]["type"] == "too_many_queries"
        # Over one broker message (16 MiB): that query alone fails; the other is answered.
        huge = base64.b64encode(b"\xff" * (13 * 1024 * 1024)).decode()
        answer = client.post(
            "/models/phash/search_bulk", json=[{"image": huge}, {"image": base64.b64encode(jpeg("coins")).decode()}]
        )
        assert answer.status_code == 200, answer.text
        first, second = answer.json()
        assert first["error"]["status"] == 413 and first["error"]["type"] == "image_too_large"
        assert second["error"] is None and isinstance(second["hits"], list)
        unknown = client.post("/models/nosuchmodel/search_bulk", json=[])
        assert unknown.status_code == 404
