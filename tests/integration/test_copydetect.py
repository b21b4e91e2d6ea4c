"""Copy detection through the request path on the real Milvus server, in process: copies of real
photos are found with where they match, mirrored ones with `flip`, and the two collections stay
consistent through re-adds, removes, dumps and restores."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image, ImageOps
from pymilvus import MilvusClient

from idios.config import Settings

from tests.support.imageserver import ImageServer
from tests.support.inprocess import InProcess, in_process
from tests.support.photos import PHOTO_NAMES, encode, photo
from tests.support.stacks import IMAGE_HOST

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.server]

MODEL = "/models/copydetect"


def _settings() -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings(
        _env_file=None,
        models=["copydetect"],
        collection_prefix=f"t{tag}_",
        queue_prefix=f"test-{tag}",
        url_allow_networks=[f"{IMAGE_HOST}/32"],
        milvus_consistency="Strong",
    )


def crop(image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    w, h = image.size
    return image.crop((round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)))


def iou(a: list[float] | tuple[float, ...], b: list[float] | tuple[float, ...]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def upload(image: Image.Image) -> str:
    return base64.b64encode(encode(image, "JPEG", quality=90)).decode()


@pytest.fixture(scope="module")
def originals(images: ImageServer) -> dict[str, str]:
    return {name: images.url(f"/{name}.jpg") for name in PHOTO_NAMES}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def app(milvus_uri: str, originals: dict[str, str]) -> AsyncIterator[InProcess]:
    async with in_process(_settings(), milvus_uri) as serving:
        items = [{"url": url, "metadata": {"name": name}} for name, url in originals.items()]
        answer = await serving.client.post(f"{MODEL}/add_bulk", json=items)
        assert answer.status_code == 200 and not answer.json()["failed"], answer.text
        yield serving


async def search(app: InProcess, **body: Any) -> list[dict[str, Any]]:
    answer = await app.client.post(f"{MODEL}/search", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_a_crop_is_found_with_the_region_it_came_from(app: InProcess, originals: dict[str, str]) -> None:
    region = (0.3, 0.2, 0.8, 0.7)  # a quarter of the picture
    for name in ("astronaut", "coffee", "rocket"):
        hits = await search(app, image=upload(crop(photo(name), region)), limit=3)
        assert hits[0]["url"] == originals[name] and hits[0]["metadata"] == {"name": name}, hits
        match = hits[0]["match"]
        assert iou(match["target_box"], region) > 0.85 and iou(match["query_box"], (0, 0, 1, 1)) > 0.9, match
        assert 0.2 < match["target_overlap"] < 0.3 and match["query_overlap"] > 0.9, match
        assert hits[0]["similarity"] > 70 and hits[0]["flipped"] is False  # 12 agreeing places or more
        assert all(hit["similarity"] < 39 for hit in hits[1:]), hits


async def test_a_stored_url_finds_itself_whole(app: InProcess, originals: dict[str, str]) -> None:
    hits = await search(app, url=originals["chelsea"], limit=2)
    assert hits[0]["url"] == originals["chelsea"] and hits[0]["similarity"] > 99.9, hits
    assert iou(hits[0]["match"]["target_box"], (0, 0, 1, 1)) > 0.95


async def test_a_mirrored_copy_is_found_only_with_flip(app: InProcess, originals: dict[str, str]) -> None:
    mirrored = upload(ImageOps.mirror(crop(photo("coffee"), (0.1, 0.1, 0.9, 0.9))))
    plain = await search(app, image=mirrored, limit=3)
    assert all(hit["similarity"] < 39 for hit in plain), plain
    flipped = await search(app, image=mirrored, limit=3, flip=True)
    assert flipped[0]["url"] == originals["coffee"] and flipped[0]["flipped"] is True, flipped
    assert flipped[0]["similarity"] > 90


async def test_compare_says_where_two_images_match(app: InProcess, originals: dict[str, str]) -> None:
    region = (0.1, 0.4, 0.6, 0.9)
    body = {"image": upload(crop(photo("rocket"), region)), "other": originals["rocket"], "details": True}
    answer = await app.client.post(f"{MODEL}/compare", json=body)
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert found["similarity"] > 70 and found["flipped"] is False
    assert iou(found["match"]["target_box"], region) > 0.85, found
    plain = await app.client.post(f"{MODEL}/compare", json={**body, "details": False})
    assert plain.json() == found["similarity"]
    unrelated = await app.client.post(f"{MODEL}/compare", json={**body, "other": originals["coins"]})
    assert unrelated.json()["similarity"] < 39


async def test_a_dump_restores_to_entries_that_match_as_before(
    app: InProcess, milvus_uri: str, originals: dict[str, str]
) -> None:
    dumped = (await app.client.post(f"{MODEL}/dump", json={"limit": 100})).json()
    assert [row["url"] for row in dumped] == sorted(originals.values())
    assert all(isinstance(row["embedding"], str) for row in dumped)
    async with in_process(_settings(), milvus_uri) as other:
        answer = await other.client.post(f"{MODEL}/restore", json=dumped)
        assert answer.status_code == 204, answer.text
        assert (await other.client.post(f"{MODEL}/dump", json={"limit": 100})).json() == dumped
        query = upload(crop(photo("astronaut"), (0.2, 0.1, 0.7, 0.6)))
        before, after = await search(app, image=query, limit=2), await search(other, image=query, limit=2)
        assert before == after


async def test_restore_refuses_what_is_not_keypoints(app: InProcess) -> None:
    url = "http://127.0.0.2/none.jpg"
    for embedding, says in (([0.5] * 256, "base64 string of keypoints"), ("AAAA", "too few"), ("!!", "copydetect")):
        answer = await app.client.post(f"{MODEL}/restore", json=[{"url": url, "embedding": embedding}])
        assert answer.status_code == 422 and says in answer.text, answer.text


async def test_an_added_again_url_keeps_only_its_new_corners(
    app: InProcess, images: ImageServer, milvus_uri: str
) -> None:
    path = f"/changing-{uuid.uuid4().hex[:6]}.jpg"
    url = images.url(path)
    images.add(path, encode(photo("moon"), "JPEG"))
    assert (await app.client.post(f"{MODEL}/add", json={"url": url})).status_code == 204
    plain = Image.new("RGB", (400, 300), (90, 90, 90))  # no corners at all
    images.add(path, encode(plain, "JPEG"))
    assert (await app.client.post(f"{MODEL}/add", json={"url": url})).status_code == 204
    hits = await search(app, image=upload(crop(photo("moon"), (0.2, 0.2, 0.8, 0.8))), limit=5)
    assert url not in [hit["url"] for hit in hits], hits
    corners = _corners(milvus_uri, app)
    assert corners == 256 * len(PHOTO_NAMES), "the replaced image's corners are gone"
    assert (await app.client.post(f"{MODEL}/remove", json={"url": url})).status_code == 204
    assert _corners(milvus_uri, app) == 256 * len(PHOTO_NAMES)


async def test_remove_takes_the_corners_with_the_row(app: InProcess, images: ImageServer, milvus_uri: str) -> None:
    url = images.url("/camera.png")
    assert (await app.client.post(f"{MODEL}/add", json={"url": url})).status_code == 204
    assert _corners(milvus_uri, app) == 256 * (len(PHOTO_NAMES) + 1)
    assert (await app.client.post(f"{MODEL}/remove", json={"url": url})).status_code == 204
    assert _corners(milvus_uri, app) == 256 * len(PHOTO_NAMES)
    assert (await app.client.get(f"{MODEL}/count")).json() == len(PHOTO_NAMES)


def _corners(milvus_uri: str, app: InProcess) -> int:
    client = MilvusClient(milvus_uri)
    try:
        name = f"{app.runner.settings.collection_prefix}copydetect_corners"
        return int(client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")[0]["count(*)"])
    finally:
        client.close()


async def test_duplicates_groups_the_copies_once(
    app: InProcess, images: ImageServer, originals: dict[str, str]
) -> None:
    """A page of three urls at a time walks the collection; the astronaut, a crop and a rotation of it
    are one group, reported once, with every pair's similarity."""
    copies = {
        "/zz-astronaut-crop.jpg": crop(photo("astronaut"), (0.2, 0.1, 0.8, 0.7)),
        "/zz-astronaut-rotated.jpg": photo("astronaut").rotate(90, expand=True),
    }
    urls = [images.add(path, encode(image, "JPEG", quality=85)) for path, image in copies.items()]
    added = await app.client.post(f"{MODEL}/add_bulk", json=[{"url": url} for url in urls])
    assert sorted(added.json()["added"]) == sorted(urls), added.text
    try:
        groups, cursor, pages = [], None, 0
        while True:
            answer = await app.client.post(f"{MODEL}/duplicates", json={"cursor": cursor, "limit": 3})
            assert answer.status_code == 200, answer.text
            page = answer.json()
            groups += page["groups"]
            pages += 1
            if page["cursor"] is None:
                break
            cursor = page["cursor"]
        assert pages >= 3
        (group,) = groups
        assert group["urls"] == sorted([originals["astronaut"], *urls])
        matrix = group["similarity"]
        assert all(matrix[i][i] == 100.0 for i in range(3))
        assert all(matrix[i][j] == matrix[j][i] > 39 for i in range(3) for j in range(3)), matrix
    finally:
        for url in urls:
            await app.client.post(f"{MODEL}/remove", json={"url": url})


async def test_a_mirrored_match_says_where_it_lies_in_the_query_as_sent(
    app: InProcess, originals: dict[str, str]
) -> None:
    """The query is the astronaut mirrored and pasted into the right half of a white picture: found by its
    mirror, the box in the query is still on the right, where the picture lies in what was sent."""
    canvas = Image.new("RGB", (1000, 500), (255, 255, 255))
    canvas.paste(ImageOps.mirror(photo("astronaut")).resize((400, 400)), (550, 50))
    where = (0.55, 0.1, 0.95, 0.9)
    hits = await search(app, image=upload(canvas), limit=1, flip=True)
    assert hits[0]["url"] == originals["astronaut"] and hits[0]["flipped"] is True, hits
    assert iou(hits[0]["match"]["query_box"], where) > 0.9, hits[0]["match"]
    body = {"image": upload(canvas), "other": originals["astronaut"], "flip": True, "details": True}
    found = (await app.client.post(f"{MODEL}/compare", json=body)).json()
    assert found["flipped"] is True and iou(found["match"]["query_box"], where) > 0.9, found
