"""`flip` and the duplicates walk for the vector models (phash, and vit_b32 with seeded random
weights: mirroring a mirrored image gives the image back, whatever the weights), through the
request path on the real Milvus server, in process."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from PIL import ImageOps

from idios.config import Settings

from tests.support.imageserver import ImageServer
from tests.support.inprocess import InProcess, in_process
from tests.support.photos import encode, photo
from tests.support.stacks import IMAGE_HOST

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.server]

NAMES = ("astronaut", "coffee", "rocket", "chelsea")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def app(milvus_uri: str, images: ImageServer) -> AsyncIterator[InProcess]:
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        _env_file=None,
        models=["phash", "vit_b32"],
        weights="random",
        collection_prefix=f"t{tag}_",
        queue_prefix=f"test-{tag}",
        url_allow_networks=[f"{IMAGE_HOST}/32"],
        milvus_consistency="Strong",
    )
    async with in_process(settings, milvus_uri) as serving:
        for model in ("phash", "vit_b32"):
            items = [{"url": images.url(f"/{name}.jpg")} for name in NAMES]
            answer = await serving.client.post(f"/models/{model}/add_bulk", json=items)
            assert answer.status_code == 200 and not answer.json()["failed"], answer.text
        yield serving


def mirrored(name: str) -> str:
    return base64.b64encode(encode(ImageOps.mirror(photo(name)), "JPEG", quality=90)).decode()


@pytest.mark.parametrize("model", ["phash", "vit_b32"])
async def test_a_mirrored_copy_is_found_with_flip(app: InProcess, images: ImageServer, model: str) -> None:
    path = f"/models/{model}/search"
    plain = (await app.client.post(path, json={"image": mirrored("coffee"), "limit": 2})).json()
    flipped = (await app.client.post(path, json={"image": mirrored("coffee"), "limit": 2, "flip": True})).json()
    original = images.url("/coffee.jpg")
    assert flipped[0]["url"] == original and flipped[0]["flipped"] is True and flipped[0]["similarity"] > 97, flipped
    assert [hit["url"] for hit in flipped].count(original) == 1, "each url once, its better hit"
    best_plain = next((hit["similarity"] for hit in plain if hit["url"] == original), 0.0)
    assert flipped[0]["similarity"] > best_plain, (plain, flipped)
    assert all(hit["flipped"] is False for hit in plain)


async def test_flip_on_a_stored_url_and_on_compare(app: InProcess, images: ImageServer) -> None:
    url = images.url("/rocket.jpg")
    hits = (await app.client.post("/models/phash/search", json={"url": url, "flip": True, "limit": 3})).json()
    assert hits[0] == {"url": url, "metadata": {}, "similarity": 100.0, "flipped": False, "match": None}
    body = {"image": mirrored("rocket"), "other": url, "flip": True, "details": True}
    found = (await app.client.post("/models/phash/compare", json=body)).json()
    assert found["flipped"] is True and found["similarity"] > 97 and found["match"] is None, found
    unflipped = (await app.client.post("/models/phash/compare", json={**body, "flip": False})).json()
    assert unflipped["flipped"] is False and unflipped["similarity"] < found["similarity"]


async def test_flip_has_no_meaning_for_a_text(app: InProcess) -> None:
    answer = await app.client.post("/models/vit_b32/search", json={"text": "a cat", "flip": True})
    assert answer.status_code == 422 and answer.json()["detail"][0]["type"] == "bad_flip", answer.text


async def test_duplicates_of_a_vector_model(app: InProcess, images: ImageServer) -> None:
    copy = images.add("/zz-coffee-again.jpg", encode(photo("coffee"), "JPEG", quality=70))
    assert (await app.client.post("/models/phash/add", json={"url": copy})).status_code == 204
    answer = await app.client.post("/models/phash/duplicates", json={"limit": 100})
    page = answer.json()
    assert answer.status_code == 200 and page["cursor"] is None and page["examined"] == len(NAMES) + 1, page
    (group,) = page["groups"]
    assert group["urls"] == [images.url("/coffee.jpg"), copy]
    assert group["similarity"][0][0] == 100.0 and group["similarity"][0][1] == group["similarity"][1][0] > 90
    strict = (await app.client.post("/models/phash/duplicates", json={"min_similarity": 100})).json()
    assert strict["groups"] == [] or strict["groups"][0]["similarity"][0][1] == 100.0
