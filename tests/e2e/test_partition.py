"""Network partitions between the API and the broker, then a worker and the broker, healed after 10 s.

The API and one worker run on test hosts in network namespaces; the broker, Milvus, the image server
and a second worker run on this machine. A partition drops every packet a host sends to the broker.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import netns
from tests.support.broker import Broker
from tests.support.broker import available as broker_available
from tests.support.imageserver import ImageServer
from tests.support.milvus import MilvusUnderTest
from tests.support.photos import PHOTO_NAMES, jpeg
from tests.support.stack import Process, all_urls, free_port, models_ready, wait_until
from tests.support.stacks import stack_env

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(not broker_available(), reason="rabbitmq-server is not installed"),
    pytest.mark.skipif(not netns.available(), reason="network namespaces need root and iproute2"),
]

VIT = "/models/vit_b32"
PARTITION_SECONDS = 10


@pytest.fixture(scope="module")
def network() -> Iterator[list[netns.Host]]:
    with netns.hosts(2) as made:
        yield made


@pytest.fixture(scope="module")
def remote_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    node = Broker(tmp_path_factory.mktemp("rabbitmq-partition"), listen="0.0.0.0", remote_guest=True)
    try:
        node.start()
        yield node
    finally:
        node.stop()


@pytest.mark.timeout(900)
def test_partitions_heal_without_losing_images(
    network: list[netns.Host], remote_broker: Broker, milvus: MilvusUnderTest, artifacts: Path
) -> None:
    api_host, worker_host = network
    log_dir = artifacts / "test_partition"
    log_dir.mkdir(exist_ok=True)
    milvus_port = milvus.uri.rsplit(":", 1)[1]
    processes: list[Process] = []
    with ImageServer(host=worker_host.gateway) as images:
        for name in PHOTO_NAMES:
            images.add(f"/{name}.jpg", jpeg(name))
        base = stack_env(
            milvus.uri,
            IDIOS_QUEUE_PREFIX=f"partition-{uuid.uuid4().hex[:6]}",
            IDIOS_URL_ALLOW_NETWORKS="10.213.0.0/16",
            IDIOS_ALLOW_DEFAULT_CREDENTIALS="true",
            IDIOS_REQUEST_TIMEOUT="8",
        )
        port = free_port()

        def on(host: netns.Host, **extra: str) -> dict[str, str]:
            url = f"amqp://guest:guest@{host.service}:{remote_broker.port}/"
            return {**base, "IDIOS_AMQP_URL": url, **extra}

        try:
            processes.append(
                Process(
                    "api",
                    ["api"],
                    on(api_host, IDIOS_HOST="0.0.0.0", IDIOS_PORT=str(port)),
                    log_dir,
                    wrap=netns_wrap(api_host),
                )
            )
            processes.append(
                Process(
                    "worker-netns",
                    ["worker"],
                    on(
                        worker_host,
                        IDIOS_MILVUS_URI=f"http://{worker_host.gateway}:{milvus_port}",
                        IDIOS_HEALTH_PORT=str(free_port()),
                    ),
                    log_dir,
                    wrap=netns_wrap(worker_host),
                )
            )
            local = {**base, "IDIOS_AMQP_URL": remote_broker.url, "IDIOS_HEALTH_PORT": str(free_port())}
            processes.append(Process("worker-local", ["worker"], local, log_dir))
            api = f"http://{api_host.address}:{port}"
            wait_until(lambda: models_ready(api), 240, "the partitioned stack", processes)

            accepted, statuses = run_with_partitions(api, images, [api_host, worker_host])

            assert set(statuses) <= {200, 204, 503, 504}, sorted(set(statuses))
            assert {503, 504} & set(statuses), "the partition of the API went unnoticed"
            with httpx.Client(base_url=api, timeout=60) as client:
                wait_until(lambda: client.get("/ping", params={"rpc": "true"}).status_code == 200, 120, "recovery")
                stored = all_urls(client, VIT)
                missing = set(accepted) - set(stored)
                assert not missing, f"{len(missing)} acknowledged adds are missing"
                assert client.get(f"{VIT}/count").json() == len(stored) == len(set(stored))
            assert all(process.alive() for process in processes)
        finally:
            for process in processes:
                process.stop()


def netns_wrap(host: netns.Host) -> list[str]:
    return host.command([])


def run_with_partitions(api: str, images: ImageServer, hosts: list[netns.Host]) -> tuple[list[str], list[int]]:
    """Adds and searches from three clients while each host in turn loses the broker for 10 s."""
    accepted: list[str] = []
    statuses: list[int] = []
    stop = threading.Event()

    def client_loop(seed: int) -> None:
        with httpx.Client(base_url=api, timeout=40) as client:
            i = 0
            while not stop.is_set() and i < 5000:
                url = images.url(f"/{PHOTO_NAMES[i % len(PHOTO_NAMES)]}.jpg") + f"?p={seed}-{i}"
                response = client.post(f"{VIT}/add", json={"url": url})
                statuses.append(response.status_code)
                if response.status_code == 204:
                    accepted.append(url)
                    statuses.append(client.post(f"{VIT}/search", json={"url": url, "limit": 3}).status_code)
                i += 1

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    try:
        for host in hosts:
            time.sleep(5)
            before = len(accepted)
            host.partition()
            time.sleep(PARTITION_SECONDS)
            host.heal()
            healed = time.monotonic()
            while len(accepted) < before + 5 and time.monotonic() - healed < 120:
                time.sleep(0.5)
            assert len(accepted) >= before + 5, f"no adds succeeded after healing {host.netns}"
    finally:
        stop.set()
        for thread in threads:
            thread.join(120)
    assert not any(thread.is_alive() for thread in threads), "a request never answered"
    return accepted, statuses
