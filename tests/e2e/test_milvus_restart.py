"""The Milvus server restarted during ingestion: nothing acknowledged as added goes missing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.support.imageserver import ImageServer
from tests.support.milvus import MilvusUnderTest
from tests.support.photos import PHOTO_NAMES
from tests.support.stack import all_urls, wait_until
from tests.support.stacks import start_distributed

VIT = "/models/vit_b32"


def test_milvus_restart_during_ingestion(milvus: MilvusUnderTest, images: ImageServer, artifacts: Path) -> None:
    log_dir = artifacts / "test_milvus_restart"
    log_dir.mkdir(exist_ok=True)
    stack = start_distributed(milvus.uri, log_dir, workers=2, IDIOS_REQUEST_TIMEOUT="20")
    accepted: list[str] = []
    statuses: list[int] = []
    stop = threading.Event()

    def add_forever(thread: int) -> None:
        with stack.client(timeout=60) as client:
            i = 0
            while not stop.is_set() and i < 2000:
                url = images.url(f"/{PHOTO_NAMES[i % len(PHOTO_NAMES)]}.jpg") + f"?restart={thread}-{i}"
                status = client.post(f"{VIT}/add", json={"url": url}).status_code
                statuses.append(status)
                if status == 204:
                    accepted.append(url)
                i += 1

    threads = [threading.Thread(target=add_forever, args=(n,)) for n in range(3)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(6)
        before_restart = len(accepted)
        milvus.restart()
        restarted = time.monotonic()
        while len(accepted) <= before_restart + 10 and time.monotonic() - restarted < 120:
            time.sleep(1)
        stop.set()
        for thread in threads:
            thread.join(90)
        assert not any(thread.is_alive() for thread in threads), "a request never answered"
        assert len(accepted) > before_restart + 10, f"ingestion did not recover: {statuses[-20:]}"
        assert set(statuses) <= {204, 503, 504}, sorted(set(statuses))

        with stack.client() as client:
            # Milvus reloads its collections after a restart; listings answer once that is done.
            wait_until(lambda: client.post(f"{VIT}/urls", json={"limit": 1}).status_code == 200, 180, "listings")
            stored = all_urls(client, VIT)
            missing = set(accepted) - set(stored)
            assert not missing, f"{len(missing)} acknowledged adds are missing, e.g. {sorted(missing)[:3]}"
            assert client.get(f"{VIT}/count").json() == len(stored) == len(set(stored))
            # every copy of the same photo scores 100, so look for this url among the perfect matches
            hits = client.post(f"{VIT}/search", json={"url": accepted[-1], "limit": 1000}).json()
            assert accepted[-1] in [hit["url"] for hit in hits if hit["similarity"] == 100.0]
    finally:
        stop.set()
        stack.stop()
