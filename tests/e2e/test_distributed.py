"""The distributed deployment's own behaviour: worker failure, timeouts, missing workers, health."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from tests.support.imageserver import ImageServer
from tests.support.photos import PHOTO_NAMES
from tests.support.stack import Process, all_urls, free_port, models_ready, wait_until
from tests.support.stacks import Stack, start_distributed

VIT = "/models/vit_b32"


@pytest.fixture(scope="module")
def cluster(milvus_uri: str, amqp_url: str, images: ImageServer, artifacts: Path) -> Iterator[Stack]:
    log_dir = artifacts / "test_distributed"
    log_dir.mkdir(exist_ok=True)
    started = start_distributed(milvus_uri, log_dir, workers=2, IDIOS_AMQP_URL=amqp_url)
    yield started
    started.stop()


def test_worker_health_check(cluster: Stack) -> None:
    worker = cluster.by_name("worker1")
    health = f"http://127.0.0.1:{worker.env['IDIOS_HEALTH_PORT']}/health"
    wait_until(lambda: httpx.get(health, timeout=5).status_code == 200, 60, "the health check", [worker])
    answer = httpx.get(health, timeout=10)
    body = answer.json()
    assert body["broker"] is True and body["milvus"] is True
    assert body["models"]["vit_b32"]["status"] == "ready"


def test_no_worker_for_a_model_answers_503(cluster: Stack) -> None:
    with cluster.client() as client:
        response = client.post("/models/resnet50/add", json={"url": "http://127.0.0.2/a.jpg"})
        assert response.status_code == 503
        assert response.json()["detail"][0]["type"] == "no_worker"
        assert response.headers["retry-after"]
        models = {m["name"]: m for m in client.get("/models").json()}
        assert models["resnet50"]["status"] == "unavailable"


def test_a_worker_that_does_not_answer_in_time_gives_504(cluster: Stack, images: ImageServer) -> None:
    port = free_port()
    env = {**cluster.env, "IDIOS_PORT": str(port), "IDIOS_REQUEST_TIMEOUT": "2"}
    impatient = Process("api-impatient", ["api"], env, cluster.log_dir)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: models_ready(base), 60, "second api", [impatient])
        started = time.monotonic()
        response = httpx.post(f"{base}{VIT}/search", json={"url": images.url("/slow.jpg")}, timeout=30)
        elapsed = time.monotonic() - started
        assert response.status_code == 504, response.text
        assert response.json()["detail"][0]["type"] == "worker_timeout"
        assert elapsed < 6
        assert httpx.get(f"{base}/ping", params={"rpc": "true"}, timeout=10).json() == "pong"
    finally:
        impatient.stop()


def test_worker_killed_during_add_bulk_loses_nothing(cluster: Stack, images: ImageServer) -> None:
    urls = [f"{images.url(f'/{name}.jpg')}?kill={i}" for i in range(12) for name in PHOTO_NAMES]
    result: dict = {}

    def bulk() -> None:
        with cluster.client(timeout=300) as client:
            response = client.post(
                f"{VIT}/add_bulk", json=[{"url": u, "metadata": {"i": i}} for i, u in enumerate(urls)]
            )
            result["status"] = response.status_code
            result["body"] = response.json()

    thread = threading.Thread(target=bulk)
    thread.start()
    victim = cluster.by_name("worker1")
    with cluster.client() as client:
        wait_until(lambda: client.get(f"{VIT}/count").json() >= 10, 120, "the first adds", [victim])
    victim.kill()
    thread.join(300)
    assert not thread.is_alive(), "add_bulk never answered"
    assert result["status"] == 200
    assert sorted(result["body"]["added"]) == sorted(urls), result["body"]["failed"]
    with cluster.client() as client:
        stored = set(all_urls(client, VIT))
        assert set(urls) <= stored
        assert client.get(f"{VIT}/count").json() == len(stored)
    replacement = cluster.start_worker("worker3")
    wait_until(lambda: "worker ready" in replacement.log(), 120, "the replacement worker", [replacement])


def test_full_ingestion_queue_answers_503_and_stale_jobs_are_dropped(cluster: Stack, images: ImageServer) -> None:
    """A paused worker lets the queue fill: adds get 503 + Retry-After; jobs past their deadline are not run."""
    env = {
        **cluster.env,
        "IDIOS_QUEUE_PREFIX": cluster.env["IDIOS_QUEUE_PREFIX"] + "-bp",
        "IDIOS_PREFETCH": "1",
        "IDIOS_MAX_QUEUED_JOBS": "3",
        "IDIOS_REQUEST_TIMEOUT": "4",
        "IDIOS_MODELS": "phash",
        "IDIOS_PORT": str(free_port()),
        "IDIOS_HEALTH_PORT": str(free_port()),
    }
    base = f"http://127.0.0.1:{env['IDIOS_PORT']}"
    api = Process("api-bp", ["api"], env, cluster.log_dir)
    worker = Process("worker-bp", ["worker"], env, cluster.log_dir)
    try:
        wait_until(lambda: models_ready(base, ("phash",)), 120, "the back-pressure stack", [api, worker])
        worker.proc.send_signal(signal.SIGSTOP)
        statuses: list[int] = []
        headers: list[str | None] = []

        def add(i: int) -> None:
            response = httpx.post(f"{base}/models/phash/add", json={"url": images.url(f"/moon.jpg?bp={i}")}, timeout=30)
            statuses.append(response.status_code)
            headers.append(response.headers.get("retry-after"))

        threads = []
        for i in range(10):
            threads.append(threading.Thread(target=add, args=(i,)))
            threads[-1].start()
            time.sleep(0.4)
        for thread in threads:
            thread.join(30)
        assert 503 in statuses, statuses
        assert all(h for s, h in zip(statuses, headers, strict=True) if s == 503)
        assert set(statuses) <= {503, 504}, statuses
        worker.proc.send_signal(signal.SIGCONT)
        health = f"http://127.0.0.1:{env['IDIOS_HEALTH_PORT']}/health"
        wait_until(lambda: httpx.get(health, timeout=5).json()["expired_jobs"] >= 1, 30, "dropped jobs", [worker])
        response = httpx.post(f"{base}/models/phash/add", json={"url": images.url("/moon.jpg?bp=after")}, timeout=30)
        assert response.status_code == 204
    finally:
        if worker.alive():
            worker.proc.send_signal(signal.SIGCONT)
        worker.stop()
        api.stop()


def test_sigterm_on_a_worker_finishes_its_jobs_then_exits(cluster: Stack, images: ImageServer) -> None:
    urls = [f"{images.url(f'/{name}.jpg')}?term={i}" for i in range(6) for name in PHOTO_NAMES]
    result: dict = {}

    def bulk() -> None:
        with cluster.client(timeout=300) as client:
            response = client.post(f"{VIT}/add_bulk", json=[{"url": u} for u in urls])
            result["status"], result["body"] = response.status_code, response.json()

    thread = threading.Thread(target=bulk)
    thread.start()
    victim = next(p for p in cluster.processes if p.name.startswith("worker") and p.alive())
    with cluster.client() as client:
        start = client.get(f"{VIT}/count").json()
        wait_until(lambda: client.get(f"{VIT}/count").json() >= start + 5, 120, "the first adds", [victim])
    victim.proc.send_signal(signal.SIGTERM)
    assert victim.proc.wait(60) == 0
    assert "stopping: no new jobs" in victim.log()
    thread.join(300)
    assert result["status"] == 200 and sorted(result["body"]["added"]) == sorted(urls), result["body"]["failed"]
    replacement = cluster.start_worker("worker-after-term")
    wait_until(lambda: "worker ready" in replacement.log(), 120, "the replacement worker", [replacement])


def test_sigterm_on_the_api_lets_requests_in_flight_finish(cluster: Stack, images: ImageServer) -> None:
    port = free_port()
    api = Process("api-term", ["api"], {**cluster.env, "IDIOS_PORT": str(port)}, cluster.log_dir)
    base = f"http://127.0.0.1:{port}"
    urls = [f"{images.url(f'/{name}.jpg')}?api-term={i}" for i in range(3) for name in PHOTO_NAMES]
    result: dict = {}
    try:
        wait_until(lambda: models_ready(base), 60, "the API", [api])

        def bulk() -> None:
            response = httpx.post(f"{base}{VIT}/add_bulk", json=[{"url": u} for u in urls], timeout=300)
            result["status"], result["body"] = response.status_code, response.json()

        thread = threading.Thread(target=bulk)
        thread.start()
        time.sleep(1.0)
        api.proc.send_signal(signal.SIGTERM)
        thread.join(300)
        assert result["status"] == 200 and sorted(result["body"]["added"]) == sorted(urls)
        assert api.proc.wait(30) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/ping", timeout=5)
    finally:
        api.stop()


# worker operations: the health check's address and port, a worker started before Milvus


def _live_worker(cluster: Stack) -> Process:
    """A worker of the cluster still running (earlier tests kill some), once its health check answers."""
    worker = next(p for p in cluster.processes if p.name.startswith("worker") and p.alive())
    health = f"http://127.0.0.1:{worker.env['IDIOS_HEALTH_PORT']}/health"
    wait_until(lambda: httpx.get(health, timeout=5).status_code == 200, 120, "the health check", [worker])
    return worker


def test_worker_health_check_listens_on_loopback_only(cluster: Stack) -> None:
    """It has no key: by default (IDIOS_HEALTH_HOST) only the host itself, or its container, reaches it."""
    worker = _live_worker(cluster)
    port = int(worker.env["IDIOS_HEALTH_PORT"])
    listening = [
        c.laddr for c in psutil.Process(worker.proc.pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN
    ]
    assert [address.ip for address in listening if address.port == port] == ["127.0.0.1"], listening


def test_a_second_worker_with_a_taken_health_port_runs_without_one(cluster: Stack) -> None:
    """Two workers on one host with the same IDIOS_HEALTH_PORT: the second says so in one line and serves."""
    taken = _live_worker(cluster).env["IDIOS_HEALTH_PORT"]
    second = Process("worker-same-port", ["worker"], {**cluster.env, "IDIOS_HEALTH_PORT": taken}, cluster.log_dir)
    try:
        wait_until(lambda: "worker ready" in second.log(), 120, "the second worker", [second])
        log = second.log()
        assert f"health check port 127.0.0.1:{taken} is unavailable" in log
        assert "running without a health check" in log and "Traceback" not in log
        assert second.alive()
    finally:
        second.stop()


class Relay:
    """A TCP relay from a port of its own to `target`, started when asked: Milvus "coming up" late."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._server: socket.socket | None = None

    def start(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self._server is not None
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()


def test_a_worker_started_before_milvus_waits_for_it(cluster: Stack, milvus_uri: str) -> None:
    target = urlsplit(milvus_uri)
    relay = Relay((target.hostname or "127.0.0.1", target.port or 19530))
    env = {**cluster.env, "IDIOS_MILVUS_URI": f"http://127.0.0.1:{relay.port}", "IDIOS_HEALTH_PORT": "0"}
    early = Process("worker-before-milvus", ["worker"], env, cluster.log_dir)
    try:
        wait_until(lambda: "cannot reach Milvus yet" in early.log(), 60, "the worker's wait for Milvus", [early])
        time.sleep(3)
        assert early.alive() and "worker ready" not in early.log()
        relay.start()
        wait_until(lambda: "worker ready" in early.log(), 120, "the worker once Milvus is up", [early])
        assert "Traceback" not in early.log()
    finally:
        early.stop()
        relay.stop()


def test_concurrent_search_adds_of_one_url_through_two_workers_add_it_once(cluster: Stack, images: ImageServer) -> None:
    url = images.url(f"/{PHOTO_NAMES[0]}.jpg?search-add-once")
    statuses: list[int] = []

    def search_add(i: int) -> None:
        with cluster.client() as client:
            statuses.append(client.post(f"{VIT}/search_add", json={"url": url, "metadata": {"i": i}}).status_code)

    threads = [threading.Thread(target=search_add, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(statuses) == [204] + [409] * 7, statuses
    with cluster.client() as client:
        assert url in all_urls(client, VIT)
