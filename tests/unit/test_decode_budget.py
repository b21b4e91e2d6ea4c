"""The decode budget in process: wide-mode values, the budget's order and cancellation, interactive
decodes ahead of ingestion, and the cost and count of progressive JPEG scans."""

from __future__ import annotations

import asyncio

import pytest
from PIL import Image
from skimage import data as skdata

from idios.config import Settings
from idios.decoding import DecodeBudget, decode_image, jpeg_scans, open_image
from idios.errors import Invalid

from tests.support.hostile_files import encode, many_scans


def make_settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


@pytest.mark.parametrize("mode", ["I;16", "F"])
def test_wide_mode_values(mode: str) -> None:
    """Strip-wise conversion keeps the scaling of 16-bit and float images to 8 bits."""
    if mode == "I;16":
        img = Image.fromarray(skdata.camera().astype("uint16") * 257)
    else:
        img = Image.fromarray(skdata.camera().astype("float32") / 255)
    rgb = decode_image(encode(img, "TIFF" if mode == "F" else "PNG"), make_settings())
    got = list(rgb.convert("L").get_flattened_data())
    want = list(Image.fromarray(skdata.camera()).get_flattened_data())
    assert max(abs(a - b) for a, b in zip(got, want, strict=True)) <= 1


async def test_budget_order_and_cancellation() -> None:
    budget = DecodeBudget(100)
    await budget.acquire(60)
    big = asyncio.create_task(budget.acquire(100))  # more than the whole budget: waits for all of it
    await asyncio.sleep(0)
    small = asyncio.create_task(budget.acquire(10))  # fits, but waits its turn behind the big one
    await asyncio.sleep(0.01)
    assert budget.waiting == 2 and not small.done()
    big.cancel()
    await asyncio.sleep(0.01)
    assert small.done() and budget.in_use == 70 and budget.waiting == 0
    # A waiter granted the budget and cancelled before it runs gives it back.
    late = asyncio.create_task(budget.acquire(50))
    await asyncio.sleep(0.01)
    budget.release(60)
    late.cancel()
    await asyncio.sleep(0.01)
    assert budget.in_use == 10


async def test_interactive_decodes_go_ahead_of_ingestion() -> None:
    budget = DecodeBudget(100)
    await budget.acquire(90)
    bulk = asyncio.create_task(budget.acquire(50))
    await asyncio.sleep(0.01)
    quick = asyncio.create_task(budget.acquire(5, interactive=True))  # fits: no interactive decode waits
    search = asyncio.create_task(budget.acquire(50, interactive=True))
    await asyncio.sleep(0.01)
    assert quick.done() and not search.done() and not bulk.done()
    budget.release(90)
    await asyncio.sleep(0.01)
    assert search.done() and not bulk.done() and budget.in_use == 55  # the search went first
    budget.release(50)
    await asyncio.sleep(0.01)
    assert bulk.done() and budget.in_use == 55


# ---------------------------------------------------------------- progressive JPEG scans


def test_jpeg_scan_count() -> None:
    assert jpeg_scans(many_scans(10), 1000) == 10
    assert jpeg_scans(many_scans(2000), 1000) == 1001  # stops counting past the limit
    baseline = encode(Image.fromarray(skdata.astronaut()), "JPEG")
    assert jpeg_scans(baseline, 1000) == 1
    # SOS bytes inside a comment segment are not scans.
    assert jpeg_scans(encode(Image.fromarray(skdata.astronaut()), "JPEG", comment=b"\xff\xda" * 3000), 1000) == 1


def test_jpeg_with_thousands_of_scans_is_refused() -> None:
    data = many_scans(5000)
    assert len(data) < make_settings().max_download_bytes
    with pytest.raises(Invalid) as info:  # refused from its markers, before decoding
        decode_image(data, make_settings())
    assert info.value.status == 422 and info.value.type == "too_many_scans"
    assert "more than 100 scans" in info.value.msg


def test_jpeg_scan_limit_setting() -> None:
    assert decode_image(many_scans(100), make_settings()).size == (256, 256)
    with pytest.raises(Invalid):
        decode_image(many_scans(101), make_settings())
    assert decode_image(many_scans(101), make_settings(max_jpeg_scans=200)).size == (256, 256)


def test_progressive_jpeg_cost_counts_its_coefficients() -> None:
    """A progressive JPEG keeps its DCT coefficients at full size whatever the draft scale."""
    img = Image.fromarray(skdata.astronaut()).resize((4000, 4000))
    baseline = open_image(encode(img, "JPEG"), make_settings()).cost
    progressive = open_image(encode(img, "JPEG", progressive=True), make_settings()).cost
    # 4:2:0: 2 bytes a pixel for Y, a quarter of that for each of Cb and Cr.
    assert progressive - baseline == pytest.approx(4000 * 4000 * 3, rel=0.01)
