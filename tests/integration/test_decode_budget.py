"""Decoding within a memory budget: small files that declare large images in wide modes, many decodes
at once, slow decodes, and progressive JPEGs with thousands of scans.

Memory is measured as the growth of peak RSS (`VmHWM`) in a fresh subprocess per case: Pillow's
and numpy's buffers are C allocations that tracemalloc does not see.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from PIL import Image
from skimage import data as skdata

from idios.compute import Compute
from idios.config import Settings
from idios.decoding import decode_image, open_image
from idios.errors import Timeout, TooLarge
from idios.jobs import JobRunner
from idios.models import REGISTRY
from idios.protocol import CompareArgs, Job

from tests.support.hostile_files import encode, flat_png, many_scans
from tests.support.inprocess import in_process

MIB = 1024 * 1024
# 51.8 Mpx: under the default max_image_pixels (52 Mpx).
SIDE = 7200


def make_settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


# Colour type, bit depth, one pixel's bytes.
PNGS = {
    "I;16": (0, 16, b"\x75\x30"),
    "RGBA": (6, 8, b"\xc8\x0a\x0a\x80"),
    "LA": (4, 8, b"\x64\x80"),
}

# Peak RSS growth (MiB) of one decode of these 7,200 x 7,200 flat images before decoding worked in
# strips: I;16 1,295, RGBA and LA 992, I and F 1,394; now 142, 246, 246, 266, 266. The bounds:
BOUNDS_MIB = {"I;16": 200, "RGBA": 320, "LA": 320, "I": 340, "F": 340}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """7,200 x 7,200 flat images of about 100 KB each, one per wide mode."""
    folder = tmp_path_factory.mktemp("hostile")
    files = {}
    for mode, (color_type, depth, pixel) in PNGS.items():
        files[mode] = folder / f"{mode.replace(';', '')}.png"
        files[mode].write_bytes(flat_png(SIDE, color_type, depth, pixel))
    # 32-bit integer and float TIFFs, written by Pillow in a subprocess of their own.
    for mode, value in (("I", 70000), ("F", 0.5)):
        files[mode] = folder / f"{mode}.tif"
        script = (
            f"from PIL import Image; Image.new({mode!r}, ({SIDE}, {SIDE}), {value!r})"
            f".save({str(files[mode])!r}, compression='tiff_adobe_deflate')"
        )
        subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    return files


def _peak_growth(script: str, *args: str) -> dict:
    """Run `script` in a fresh interpreter; it sets `result` (a dict); returns it with the peak RSS
    growth (MiB) over what the process had after its imports."""
    code = (
        textwrap.dedent(
            """
        import asyncio, json, sys
        from idios.config import Settings
        from idios.decoding import decode_image, open_image
        from idios.compute import Compute
        def peak():  # this process's own high-water mark, MiB (ru_maxrss may carry the parent's over exec)
            line = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
            return int(line.split()[1]) / 1024
        before = peak()
        """
        )
        + textwrap.dedent(script)
        + "\nresult['growth_mib'] = peak() - before\nprint(json.dumps(result))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- one decode


@pytest.mark.parametrize("mode", list(BOUNDS_MIB))
def test_wide_mode_decode_memory(mode: str, hostile: dict[str, Path]) -> None:
    """A ~100 KB file declaring 52 Mpx of 16-bit, alpha, 32-bit or float pixels decodes within a
    bounded peak (no full-size float64 or RGBA copies), and within the cost the budget counts for it."""
    data = hostile[mode].read_bytes()
    assert len(data) < 600_000
    assert Image.open(io.BytesIO(data)).mode == mode
    result = _peak_growth(
        """
        data = open(sys.argv[1], "rb").read()
        settings = Settings(_env_file=None)
        opened = open_image(data, settings)
        cost = opened.cost
        del opened
        img = decode_image(data, settings)
        result = {"size": img.size, "mode": img.mode, "cost_mib": cost / 1048576}
        """,
        str(hostile[mode]),
    )
    assert result["size"] == [1000, 1000] and result["mode"] == "RGB"
    assert result["growth_mib"] < BOUNDS_MIB[mode], result
    assert result["growth_mib"] < result["cost_mib"], result


def test_image_larger_than_the_whole_budget(hostile: dict[str, Path]) -> None:
    with pytest.raises(TooLarge) as info:
        decode_image(hostile["RGBA"].read_bytes(), make_settings(decode_budget_bytes=100 * MIB))
    assert info.value.status == 413
    assert info.value.type == "decode_too_large"
    assert "7200x7200 RGBA" in info.value.msg and "100 MiB" in info.value.msg


# ---------------------------------------------------------------- many at once


CONCURRENT = """
data = open(sys.argv[1], "rb").read()
budget = int(sys.argv[2])
settings = Settings(_env_file=None, decode_budget_bytes=budget, decode_timeout=120)
compute = Compute(settings)
cost = open_image(data, settings).cost

async def main():
    images = await asyncio.gather(*(compute.decode(data, interactive=i % 2 == 0) for i in range(8)))
    return [img.size for img in images]

result = {"sizes": asyncio.run(main()), "cost": cost}
"""


def test_concurrent_decodes_stay_within_the_budget(hostile: dict[str, Path]) -> None:
    """Eight searches and adds of the hostile 16-bit PNG at once (interactive and bulk pools): with a
    budget of 2.5 images' cost, two decode at a time and the process grows by less than the budget
    (measured: 293 MiB for a 397 MiB budget; 578 MiB with no budget)."""
    path = str(hostile["I;16"])
    cost = open_image(hostile["I;16"].read_bytes(), make_settings()).cost
    budget = int(cost * 2.5)
    result = _peak_growth(CONCURRENT, path, str(budget))
    assert result["sizes"] == [[1000, 1000]] * 8
    assert result["growth_mib"] < budget / MIB, result


# ---------------------------------------------------------------- waiting, time limit


async def test_decodes_wait_for_the_budget_without_a_thread(hostile: dict[str, Path]) -> None:
    data = hostile["I;16"].read_bytes()
    cost = open_image(data, make_settings()).cost
    settings = make_settings(decode_budget_bytes=cost + MIB, decode_timeout=120)
    compute = Compute(settings)
    budget = compute.decode_budget
    try:
        first = asyncio.create_task(compute.decode(data, interactive=True))
        second = asyncio.create_task(compute.decode(data, interactive=True))
        while budget.waiting == 0 and not first.done():
            await asyncio.sleep(0.01)
        assert budget.waiting == 1 and budget.in_use == cost
        # The waiting decode holds no thread of the interactive pool: a small image decodes meanwhile.
        small = await compute.decode(encode(Image.fromarray(skdata.astronaut()), "PNG"), interactive=True)
        assert small.size == (512, 512)
        assert (await first).size == (await second).size == (1000, 1000)
        assert budget.in_use == 0 and budget.waiting == 0
    finally:
        compute.close()


async def test_decode_time_limit(hostile: dict[str, Path]) -> None:
    """A decode running past decode_timeout answers 504 at once; its thread runs on, holding its
    share of the budget until it ends."""
    data = hostile["F"].read_bytes()
    compute = Compute(make_settings(decode_timeout=0.05))
    budget = compute.decode_budget
    try:
        with pytest.raises(Timeout) as info:
            await compute.decode(data, interactive=True)
        assert info.value.status == 504 and info.value.type == "decode_timeout"
        assert "0.05 s" in info.value.msg
        assert budget.in_use > 0  # the thread is still decoding
        deadline = time.monotonic() + 120
        while budget.in_use and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert budget.in_use == 0
    finally:
        compute.close()


# ---------------------------------------------------------------- through a job


def _phash_runner(settings: Settings) -> JobRunner:
    """A runner with the phash model and no store (none of these jobs reaches it)."""
    runner = JobRunner(settings, None)  # type: ignore[arg-type]
    model = REGISTRY["phash"](settings)
    model.load()
    runner.models.models["phash"] = model
    runner.models.status["phash"] = {"status": "ready", "reason": ""}
    return runner


def _compare_job(image: bytes, other: bytes) -> Job[CompareArgs]:
    args = CompareArgs(image=base64.b64encode(image).decode(), other_image=base64.b64encode(other).decode())
    return Job.of(args, "phash", 120)


async def test_uploads_answer_decode_refusals(hostile: dict[str, Path]) -> None:
    """Comparing uploaded images: too many scans answers 422, an image over the whole budget 413, and the
    runner goes on answering."""
    small = encode(Image.fromarray(skdata.astronaut()), "PNG")
    runner = _phash_runner(make_settings(models=["phash"], decode_budget_bytes=200 * MIB))
    try:
        answer = await runner.run(_compare_job(many_scans(5000), small))
        assert answer["error"]["status"] == 422 and answer["error"]["type"] == "too_many_scans"
        answer = await runner.run(_compare_job(small, hostile["RGBA"].read_bytes()))
        assert answer["error"]["status"] == 413 and answer["error"]["type"] == "decode_too_large"
        answer = await runner.run(_compare_job(small, small))
        assert answer["ok"] is True
        assert runner.compute.decode_budget.in_use == 0
    finally:
        await runner.aclose()


async def test_upload_past_the_decode_time_limit(hostile: dict[str, Path]) -> None:
    runner = _phash_runner(make_settings(models=["phash"], decode_timeout=0.05))
    try:
        started = time.monotonic()
        answer = await runner.run(_compare_job(hostile["F"].read_bytes(), hostile["F"].read_bytes()))
        assert answer["error"]["status"] == 504 and answer["error"]["type"] == "decode_timeout"
        assert time.monotonic() - started < 2  # the F TIFF takes seconds to decode; the answer does not wait
    finally:
        await runner.aclose()


# ---------------------------------------------------------------- through the API


@asynccontextmanager
async def _api(milvus_uri: str, **extra: object) -> AsyncIterator[httpx.AsyncClient]:
    """`idios serve`'s API and job runner in this event loop (phash, on collections of their own)."""
    settings = make_settings(models=["phash"], collection_prefix=f"t{uuid.uuid4().hex[:8]}_", **extra)
    async with in_process(settings, milvus_uri) as app:
        yield app.client


def _refused(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert detail[0]["type"] == kind, detail
    return detail[0]["msg"]


async def test_search_upload_refusals(milvus_uri: str, hostile: dict[str, Path]) -> None:
    upload = "/models/phash/search/upload"
    async with _api(milvus_uri, decode_budget_bytes=200 * MIB) as client:
        scans = {"file": ("q.jpg", many_scans(5000), "image/jpeg")}
        assert "100 scans" in _refused(await client.post(upload, files=scans), 422, "too_many_scans")
        rgba = {"file": ("q.png", hostile["RGBA"].read_bytes(), "image/png")}
        assert "200 MiB" in _refused(await client.post(upload, files=rgba), 413, "decode_too_large")
        small = {"file": ("q.png", encode(Image.fromarray(skdata.astronaut()), "PNG"), "image/png")}
        assert (await client.post(upload, files=small)).status_code == 200
    async with _api(milvus_uri, decode_timeout=0.05) as client:
        slow = {"file": ("q.tif", hostile["F"].read_bytes(), "image/tiff")}
        assert "0.05 s" in _refused(await client.post(upload, files=slow), 504, "decode_timeout")
