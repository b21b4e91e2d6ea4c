"""Pictures copydetect takes (a shorter side of 32 pixels and up) but cannot analyse, through the
request path on the real Milvus server, in process: a long strip (6,400 x 32, a 763-byte PNG) is
shrunk to 1,000 x 5 on decoding; it has no corners, and a search, a compare or an add of it is
answered as such, never with a 500, and never fails the other adds of its batch."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from PIL import Image

from idios.config import Settings

from tests.support.imageserver import ImageServer
from tests.support.inprocess import InProcess, in_process
from tests.support.photos import encode, photo
from tests.support.stacks import IMAGE_HOST

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.server]

MODEL = "/models/copydetect"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def app(milvus_uri: str) -> AsyncIterator[InProcess]:
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        _env_file=None,
        models=["copydetect"],
        collection_prefix=f"t{tag}_",
        queue_prefix=f"test-{tag}",
        url_allow_networks=[f"{IMAGE_HOST}/32"],
        milvus_consistency="Strong",
    )
    async with in_process(settings, milvus_uri) as serving:
        yield serving


def strip(width: int, height: int = 32) -> bytes:
    return encode(Image.new("RGB", (width, height), (200, 30, 30)), "PNG")


@pytest.mark.parametrize("width", [6400, 16000])
async def test_a_long_strip_is_answered_not_an_internal_error(app: InProcess, width: int) -> None:
    image = base64.b64encode(strip(width)).decode()
    for path, body in (
        ("search", {"image": image}),
        ("search", {"image": image, "flip": True}),
        ("compare", {"image": image, "other_image": image, "details": True}),
    ):
        answer = await app.client.post(f"{MODEL}/{path}", json=body)
        assert answer.status_code in (200, 422), f"{path} of a {width} x 32 picture: {answer.status_code} {answer.text}"


async def test_a_long_strip_does_not_fail_the_other_adds_of_its_batch(app: InProcess, images: ImageServer) -> None:
    key = uuid.uuid4().hex[:6]
    good = images.add(f"/{key}-astronaut.jpg", encode(photo("astronaut"), "JPEG"))
    bad = images.add(f"/{key}-strip.png", strip(16000), "image/png")
    answer = await app.client.post(f"{MODEL}/add_bulk", json=[{"url": good}, {"url": bad}])
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert good in result["added"], result
    assert all("internal" not in failure["error"] for failure in result["failed"]), result
