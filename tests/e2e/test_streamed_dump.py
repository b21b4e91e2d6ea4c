"""The streamed dump through a real broker, API and worker processes keeps every row while a restore runs."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import httpx

from tests.support.api import assert_every_row_once_in_order, bits_rows, restore, streamed_dump
from tests.support.stack import Process, free_port, models_ready, wait_until
from tests.support.stacks import AMQP_URL, IMAGE_HOST


def start_api_and_worker(milvus_uri: str, log_dir: Path, **extra: str) -> tuple[str, list[Process]]:
    port = free_port()
    tag = uuid.uuid4().hex[:8]
    env = {
        "IDIOS_WEIGHTS": "random",
        "IDIOS_MODELS": "phash",
        "IDIOS_MILVUS_URI": milvus_uri,
        "IDIOS_MILVUS_CONSISTENCY": "Strong",
        "IDIOS_COLLECTION_PREFIX": f"t{tag}_",
        "IDIOS_QUEUE_PREFIX": f"test-{tag}",
        "IDIOS_AMQP_URL": AMQP_URL,
        "IDIOS_PORT": str(port),
        **extra,
    }
    processes = [Process("api", ["api"], env, log_dir)]
    processes.append(Process("worker", ["worker"], {**env, "IDIOS_HEALTH_PORT": str(free_port())}, log_dir))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: models_ready(url, ("phash",)), 180, "idios api and a worker", processes)
    except BaseException:
        for process in processes:
            process.stop()
        raise
    return url, processes


def test_streamed_dump_through_a_broker_keeps_every_row_while_a_restore_runs(milvus_uri: str, artifacts: Path) -> None:
    """`idios api` and a worker: 20,000 rows stored, then a dump streamed while another client
    restores 20,000 more whose urls fall between the stored ones. Pages are cut by bytes too
    (a 1.2 MiB message limit), so range jobs also stop short of their range."""
    log_dir = artifacts / "test_paging-broker"
    log_dir.mkdir(exist_ok=True)
    url, processes = start_api_and_worker(milvus_uri, log_dir, IDIOS_MAX_MESSAGE_BYTES=str(1200 * 1024))
    key = uuid.uuid4().hex[:6]
    stored = [f"http://{IMAGE_HOST}/{key}/{i:05d}0" for i in range(20000)]
    incoming = bits_rows([u[:-1] + "5" for u in stored], seed=3)
    failures: list[BaseException] = []
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            # 600 bytes a row: a range of 2,000 is over the budget, its answer stops short
            restore(client, "phash", bits_rows(stored, seed=2, metadata=lambda i: {"i": i, "pad": "x" * 400}), 1000)

            def restore_meanwhile() -> None:
                try:
                    with httpx.Client(base_url=url, timeout=120) as other:
                        for start in range(0, len(incoming), 250):
                            restore(other, "phash", incoming[start : start + 250])
                except BaseException as exc:
                    failures.append(exc)

            writer = threading.Thread(target=restore_meanwhile)
            writer.start()
            try:
                dumped = [row["url"] for row in streamed_dump(client, "phash", page=2000)]
            finally:
                writer.join()
            assert not failures, failures
            assert_every_row_once_in_order(dumped, stored)
            assert client.get("/models/phash/count").json() == 40000
            # after the writes, the dump is the whole collection
            again = [row["url"] for row in streamed_dump(client, "phash", page=5000)]
            assert again == sorted(stored + [row["url"] for row in incoming])
    finally:
        for process in processes:
            process.stop()
    for process in processes:
        assert "Traceback" not in process.log(), process.log()[-3000:]
