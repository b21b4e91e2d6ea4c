"""Fault injection and load on the distributed deployment: a broker restart under traffic, many clients.

The broker restart runs against a throwaway RabbitMQ node (tests/support/broker.py) on its own port; the
machine's broker on 5672 is only used, never stopped, by the load test.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import httpx
import numpy as np
import orjson
import pytest
from PIL import Image

from tests.support.broker import Broker, available
from tests.support.imageserver import ImageServer
from tests.support.photos import PHOTO_NAMES, resized
from tests.support.stack import all_urls, wait_until
from tests.support.stacks import MAX_MESSAGE_SIZE, Stack, start_distributed

pytestmark = [pytest.mark.faults, pytest.mark.skipif(not available(), reason="rabbitmq-server is not installed")]

VIT = "/models/vit_b32"
REQUEST_TIMEOUT = 8.0
MARGIN = 12.0  # what a request may take beyond its deadline before it counts as hanging
OUTAGE = 5.0


@dataclass
class Call:
    kind: str
    url: str | None
    started: float
    ended: float
    status: int | None  # None: no answer (the client gave up or the connection failed)
    body: str
    error: str = ""


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[Broker]:
    node = Broker(tmp_path_factory.mktemp("rabbitmq"), max_message_size=MAX_MESSAGE_SIZE)
    try:
        node.start()
        yield node
    finally:
        node.stop()
        (artifacts / "test_faults").mkdir(exist_ok=True)
        (artifacts / "test_faults" / "rabbitmq.log").write_text(node.log())


async def _consumers(amqp_url: str, queue: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.consumer_count or 0)
    finally:
        await connection.close()


def consumers(amqp_url: str, queue: str) -> int:
    return asyncio.run(_consumers(amqp_url, queue))


def worker_healthy(stack: Stack, name: str) -> bool:
    port = stack.by_name(name).env["IDIOS_HEALTH_PORT"]
    return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200


# 1. the broker goes away for a few seconds under searches and adds


@pytest.mark.timeout(600)
def test_broker_restart_during_searches_and_adds(
    broker: Broker, milvus_uri: str, images: ImageServer, artifacts: Path
) -> None:
    log_dir = artifacts / "test_faults"
    log_dir.mkdir(exist_ok=True)
    stack = start_distributed(
        milvus_uri, log_dir, workers=2, IDIOS_AMQP_URL=broker.url, IDIOS_REQUEST_TIMEOUT=str(REQUEST_TIMEOUT)
    )
    calls: list[Call] = []
    lock = threading.Lock()
    stop = threading.Event()
    counter = iter(range(10**9))
    try:
        stored = [images.url(f"/{name}.jpg") for name in PHOTO_NAMES[:4]]
        with stack.client() as client:
            for url in stored:
                assert client.post(f"{VIT}/add", json={"url": url}).status_code == 204

        def loop(kind: str, seed: int) -> None:
            rng = random.Random(seed)
            with httpx.Client(base_url=stack.url, timeout=REQUEST_TIMEOUT + MARGIN) as client:
                for _ in range(5000):  # bounded: ends by itself even if `stop` is never set
                    if stop.is_set():
                        return
                    if kind == "add":
                        url = images.url(f"/{rng.choice(PHOTO_NAMES)}.jpg") + f"?f={next(counter)}"
                        path, body = f"{VIT}/add", {"url": url}
                    else:
                        url = rng.choice(stored)
                        path, body = f"{VIT}/search", {"url": url, "limit": 3}
                    started = time.monotonic()
                    try:
                        response = client.post(path, json=body)
                        call = Call(kind, url, started, time.monotonic(), response.status_code, response.text[:300])
                    except httpx.HTTPError as exc:
                        call = Call(kind, url, started, time.monotonic(), None, "", f"{type(exc).__name__}: {exc}")
                    with lock:
                        calls.append(call)
                    if call.status != 200 and call.status != 204:
                        time.sleep(0.2)  # a failing client backs off a little, as a real one would

        threads = [
            threading.Thread(target=loop, args=(kind, i), daemon=True) for i, kind in enumerate(["add", "search"] * 3)
        ]
        for thread in threads:
            thread.start()
        time.sleep(8)  # traffic flows before the fault
        down_at = time.monotonic()
        broker.stop()
        time.sleep(OUTAGE)
        broker.start()
        up_at = time.monotonic()

        def recovered(kind: str) -> bool:
            with lock:
                return any(c.kind == kind and c.started > up_at and c.status in (200, 204) for c in calls)

        wait_until(lambda: recovered("add") and recovered("search"), 60, "searches and adds after the restart")
        recovered_at = time.monotonic()
        time.sleep(3)  # a little traffic after recovery
        stop.set()
        for thread in threads:
            thread.join(REQUEST_TIMEOUT + MARGIN + 5)
        assert not any(t.is_alive() for t in threads), "a client never got its answer"

        with stack.client(timeout=30) as client:
            ping = client.get("/ping", params={"rpc": "true"})
            assert ping.status_code == 200 and ping.json() == "pong", ping.text
        prefix = stack.env["IDIOS_QUEUE_PREFIX"]
        # both workers reconnected and consume again, not only one of them
        wait_until(
            lambda: (
                consumers(broker.url, f"{prefix}.vit_b32.interactive") == 2
                and consumers(broker.url, f"{prefix}.vit_b32.ingest") == 2
                and consumers(broker.url, f"{prefix}.control") == 2
            ),
            60,
            "both workers consuming again",
            stack.processes,
        )
        for name in ("worker1", "worker2"):
            wait_until(lambda name=name: worker_healthy(stack, name), 30, f"{name} healthy", stack.processes)

        by_status = Counter((c.kind, c.status) for c in calls)
        outage = [c for c in calls if c.ended >= down_at and c.started <= up_at]
        print(
            f"\nbroker restart: {len(calls)} requests, {by_status}; down {up_at - down_at:.1f}s, "
            f"recovered {recovered_at - up_at:.1f}s after the broker came back"
        )
        hung = [c for c in calls if c.status is None or c.ended - c.started > REQUEST_TIMEOUT + MARGIN]
        assert not hung, f"requests without an answer in time: {hung[:5]}"
        wrong = [c for c in calls if c.status not in (200, 204, 503, 504)]
        assert not wrong, f"unexpected answers: {wrong[:5]}"
        assert all(c.status in (200, 204, 503, 504) for c in outage)
        assert any(c.status in (503, 504) for c in outage), "the outage went unnoticed: was the broker down?"

        added = {c.url for c in calls if c.kind == "add" and c.status == 204}
        assert added
        with stack.client(timeout=60) as client:

            def settled() -> bool:
                # jobs redelivered after the restart may still be running; wait until the count holds still
                first = client.get(f"{VIT}/count").json()
                time.sleep(2)
                return client.get(f"{VIT}/count").json() == first

            wait_until(settled, 60, "the stored count to settle")
            listed = all_urls(client, VIT)
            count = client.get(f"{VIT}/count").json()
        duplicates = [url for url, n in Counter(listed).items() if n > 1]
        assert not duplicates, f"stored more than once: {duplicates[:5]}"
        missing = sorted(added - set(listed))
        assert not missing, f"{len(missing)} adds answered 204 but are not stored: {missing[:5]}"
        assert count == len(listed), f"count {count} but {len(listed)} urls listed: some url is stored twice"
        for process in stack.processes:
            assert process.alive(), f"{process.name} exited:\n{process.log()[-3000:]}"
    finally:
        stop.set()
        stack.stop()
        if not broker.alive():
            broker.start()  # leave the module's broker usable for whatever runs next


# 2. a hundred clients mixing every endpoint for a minute


CLIENTS = 100
DURATION = 60.0
LOAD_TIMEOUT = 60.0

OPS = {  # operation: weight
    "add": 8,
    "search_add": 4,
    "add_bulk": 3,
    "search_stored": 14,
    "search_new": 6,
    "search_text": 8,
    "search_image": 5,
    "compare": 6,
    "urls": 6,
    "dump": 4,
    "count": 8,
    "remove": 4,
    "models": 6,
    "ping_rpc": 8,
}
ALLOWED_4XX = {"search_add": {409}}  # a url added by someone else first; nothing else may answer 4xx


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


@pytest.mark.timeout(600)
def test_many_concurrent_clients_mixing_every_endpoint(
    milvus_uri: str, amqp_url: str, images: ImageServer, artifacts: Path
) -> None:
    log_dir = artifacts / "test_faults-load"
    log_dir.mkdir(exist_ok=True)
    stack = start_distributed(
        milvus_uri,
        log_dir,
        workers=2,
        IDIOS_AMQP_URL=amqp_url,
        IDIOS_MAX_QUEUED_JOBS="100000",
        IDIOS_REQUEST_TIMEOUT=str(LOAD_TIMEOUT),
        IDIOS_BULK_TIMEOUT=str(LOAD_TIMEOUT),
    )
    try:
        stored = [images.url(f"/{name}.jpg") for name in PHOTO_NAMES]
        with stack.client() as client:
            for url in stored:
                assert client.post(f"{VIT}/add", json={"url": url}).status_code == 204
        small = base64.b64encode(resized("coffee", 0.5)).decode()
        results = asyncio.run(_load(stack.url, images, stored, small))
    finally:
        stack.stop()

    latencies: dict[str, list[float]] = defaultdict(list)
    statuses: dict[str, Counter[int | str]] = defaultdict(Counter)
    for op, status, seconds, _ in results:
        latencies[op].append(seconds)
        statuses[op][status] += 1
    lines = [
        f"{CLIENTS} clients, {DURATION:.0f}s, {len(results)} requests "
        f"({len(results) / DURATION:.1f}/s), 2 workers, vit_b32 with random weights",
        f"{'endpoint':<15}{'n':>6}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}  statuses",
    ]
    for op in OPS:
        values = latencies.get(op) or [0.0]
        lines.append(
            f"{op:<15}{len(latencies.get(op, [])):>6}"
            + "".join(f"{1000 * percentile(values, q):>9.0f}" for q in (50, 95, 99))
            + f"{1000 * max(values):>9.0f}  {dict(statuses[op])}"
        )
    every = [s for _, _, s, _ in results]
    lines.append(
        f"{'all':<15}{len(every):>6}"
        + "".join(f"{1000 * percentile(every, q):>9.0f}" for q in (50, 95, 99))
        + f"{1000 * max(every):>9.0f}"
    )
    report = "\n".join(lines)
    print("\n" + report)
    (artifacts / "load.txt").write_text(report + "\n")

    failed = [(op, status, body) for op, status, _, body in results if not isinstance(status, int)]
    assert not failed, f"{len(failed)} requests got no answer: {failed[:5]}"
    errors = [(op, status, body) for op, status, _, body in results if status >= 500]
    assert not errors, f"{len(errors)} answers 5xx: {errors[:5]}"
    refused = [
        (op, status, body)
        for op, status, _, body in results
        if 400 <= status < 500 and status not in ALLOWED_4XX.get(op, ())
    ]
    assert not refused, f"{len(refused)} unexpected 4xx: {refused[:5]}"
    assert set(latencies) == set(OPS), f"endpoints never exercised: {set(OPS) - set(latencies)}"
    for process in stack.processes:
        assert "Traceback" not in process.log(), f"{process.name} logged a traceback:\n{process.log()[-4000:]}"


async def _load(
    base_url: str, images: ImageServer, stored: list[str], image_b64: str
) -> list[tuple[str, int | str, float, str]]:
    results: list[tuple[str, int | str, float, str]] = []
    names, weights = list(OPS), list(OPS.values())
    end = time.monotonic() + DURATION
    limits = httpx.Limits(max_connections=CLIENTS + 10, max_keepalive_connections=CLIENTS + 10)

    async with httpx.AsyncClient(base_url=base_url, timeout=LOAD_TIMEOUT + 30, limits=limits) as client:

        async def one_client(index: int) -> None:
            rng = random.Random(index)
            mine: list[str] = []  # urls this client added: the ones it may remove
            for step in range(100_000):  # bounded; the clock ends it first
                if time.monotonic() >= end:
                    return
                op = rng.choices(names, weights)[0]
                tag = f"c{index}-{step}"

                def fresh(tag: str = tag) -> str:
                    return images.url(f"/{rng.choice(PHOTO_NAMES)}.jpg") + f"?load={tag}"

                method, path, body = "POST", "", None
                if op == "add":
                    url = fresh()
                    path, body = f"{VIT}/add", {"url": url, "metadata": {"client": index}}
                elif op == "search_add":
                    url = fresh()
                    path, body = f"{VIT}/search_add", {"url": url}
                elif op == "add_bulk":
                    url = None
                    path, body = f"{VIT}/add_bulk", [{"url": fresh(f"{tag}-{k}")} for k in range(3)]
                elif op == "search_stored":
                    path, body = f"{VIT}/search", {"url": rng.choice(stored), "limit": 5}
                elif op == "search_new":
                    path, body = f"{VIT}/search", {"url": fresh(), "limit": 5}
                elif op == "search_text":
                    path, body = f"{VIT}/search", {"text": rng.choice(["a cup of coffee", "a rocket", "the moon"])}
                elif op == "search_image":
                    path, body = f"{VIT}/search", {"image": image_b64, "limit": 5}
                elif op == "compare":
                    path, body = f"{VIT}/compare", {"url": rng.choice(stored), "other": rng.choice(stored)}
                elif op == "urls":
                    path, body = f"{VIT}/urls", {"cursor": None, "limit": 50}
                elif op == "dump":
                    path, body = f"{VIT}/dump", {"cursor": None, "limit": 5}
                elif op == "count":
                    method, path = "GET", f"{VIT}/count"
                elif op == "remove":
                    if not mine:
                        continue
                    path, body = f"{VIT}/remove", {"url": mine.pop(rng.randrange(len(mine)))}
                elif op == "models":
                    method, path = "GET", "/models"
                else:
                    method, path = "GET", "/ping?rpc=true"
                started = time.monotonic()
                try:
                    response = await client.request(method, path, json=body)
                    status: int | str = response.status_code
                    text = response.text[:200]
                except httpx.HTTPError as exc:
                    status, text = type(exc).__name__, str(exc)[:200]
                results.append((op, status, time.monotonic() - started, text))
                if op == "add" and status == 204:
                    mine.append(body["url"])  # type: ignore[index]

        await asyncio.gather(*(one_client(i) for i in range(CLIENTS)))
    return results


# 3. jobs and answers around the broker's 16 MiB message limit, beside 20 clients searching

BIG_ROWS = 12_000
JSON = {"Content-Type": "application/json"}
SEARCHERS = 20


def _rows(dim: int, start: int, count: int, rng: np.random.Generator) -> bytes:
    """Restore rows with 4-decimal embeddings (short JSON numbers: more rows fit in a request body)."""
    vectors = np.round(rng.standard_normal((count, dim)), 4)
    rows = [{"url": f"http://127.0.0.2/big/{start + i}.jpg", "embedding": vectors[i]} for i in range(count)]
    return orjson.dumps(rows, option=orjson.OPT_SERIALIZE_NUMPY)


def _noise_png(side: int) -> bytes:
    """An uncompressed PNG of side x side random pixels: about 3 * side**2 bytes, decodable."""
    pixels = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG", compress_level=0)
    return out.getvalue()


def _too_large(response: httpx.Response) -> bool:
    detail = response.json()["detail"][0]
    return response.status_code == 413 and "limit" in detail["msg"]


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("model", "dim", "chunk", "oversize"),
    # rows per restore request that fit, and a count whose job passes 16 MiB (its body stays under 32 MiB);
    # resnet50 (2048 dimensions) stands for the wide models: vit_l14's export takes 4 minutes on 2 cores
    [("vit_b32", 512, 3000, 6500), ("resnet50", 2048, 1000, 1700)],
)
def test_messages_near_the_broker_limit_answer_clearly_beside_searches(
    broker: Broker,
    milvus_uri: str,
    images: ImageServer,
    artifacts: Path,
    model: str,
    dim: int,
    chunk: int,
    oversize: int,
) -> None:
    """On a broker refusing messages over 16 MiB (RabbitMQ 4's default): a restore job over the limit,
    POST /dump of 10,000 rows, dump.jsonl and `idios dump` of 12,000 rows, and uploads either side of
    the limit each answer 200 or a clear 413, never a broker error or a hang, while 20 clients keep
    searching without one failure (before, a refused message closed the channel under all of them)."""
    log_dir = artifacts / f"test_faults-big-{model}"
    log_dir.mkdir(exist_ok=True)
    path = f"/models/{model}"
    stack = start_distributed(
        milvus_uri, log_dir, workers=1, IDIOS_AMQP_URL=broker.url, IDIOS_MODELS=model, IDIOS_REQUEST_TIMEOUT="60"
    )
    stop = threading.Event()
    searches: list[tuple[int | None, str]] = []
    try:
        rng = np.random.default_rng(dim)
        with stack.client(timeout=300) as client:
            for start in range(0, BIG_ROWS, chunk):
                response = client.post(f"{path}/restore", content=_rows(dim, start, chunk, rng), headers=JSON)
                assert response.status_code == 204, response.text[:500]
            assert client.get(f"{path}/count").json() == BIG_ROWS

        def search(seed: int) -> None:
            with httpx.Client(base_url=stack.url, timeout=90) as client:
                for i in range(10_000):
                    if stop.is_set():
                        return
                    url = f"http://127.0.0.2/big/{(seed * 7919 + i) % BIG_ROWS}.jpg"
                    try:
                        response = client.post(f"{path}/search", json={"url": url, "limit": 3})
                        searches.append((response.status_code, response.text[:200]))
                    except httpx.HTTPError as exc:
                        searches.append((None, f"{type(exc).__name__}: {exc}"))

        threads = [threading.Thread(target=search, args=(seed,)) for seed in range(SEARCHERS)]
        for thread in threads:
            thread.start()
        with stack.client(timeout=300) as client:
            # a restore whose job would pass the limit (its body is well under IDIOS_MAX_BODY_BYTES)
            big = client.post(f"{path}/restore", content=_rows(dim, BIG_ROWS, oversize, rng), headers=JSON)
            assert _too_large(big), big.text[:500]
            assert big.json()["detail"][0]["type"] == "job_too_large"
            with client.stream("GET", f"{path}/dump.jsonl") as streamed:
                if streamed.status_code == 200:
                    assert sum(1 for line in streamed.iter_lines() if line) == BIG_ROWS
                else:
                    streamed.read()
                    assert _too_large(streamed), streamed.text[:500]
            # uploads: 12 MB (16 MB as base64, just under the limit) is searched; 13.2 MB is refused
            under = client.post(f"{path}/search/upload", files={"file": ("u.png", _noise_png(2000), "image/png")})
            assert under.status_code == 200, under.text[:500]
            over = client.post(f"{path}/search/upload", files={"file": ("o.png", _noise_png(2100), "image/png")})
            assert _too_large(over), over.text[:500]
        out = log_dir / "dump"
        cli = subprocess.run(
            [sys.executable, "-m", "idios", "dump", model, str(out), "--api", stack.url],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, **stack.env},
        )
        if cli.returncode == 0:
            assert sum(len(f.read_text().splitlines()) for f in out.glob("*.jsonl")) == BIG_ROWS
        else:
            assert "413" in cli.stderr and "limit" in cli.stderr, cli.stderr[-2000:]
        with stack.client(timeout=300) as client:
            page = client.post(f"{path}/dump", json={"limit": 10_000})
            assert page.status_code == 200 or _too_large(page), page.text[:500]
            if page.status_code == 200:
                assert 0 < len(page.json()) <= 10_000
        stop.set()
        for thread in threads:
            thread.join(120)
    finally:
        stop.set()
        stack.stop()
    failed = [answer for answer in searches if answer[0] != 200]
    assert len(searches) >= SEARCHERS and not failed, f"{len(failed)} of {len(searches)} searches failed: {failed[:5]}"
    assert "PRECONDITION_FAILED" not in broker.log()
    for process in stack.processes:
        assert "Traceback" not in process.log(), f"{process.name} logged a traceback:\n{process.log()[-4000:]}"
