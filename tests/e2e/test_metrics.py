"""Prometheus metrics scraped from a live API and live workers, in both modes; the Grafana dashboard's
queries against them; request ids from the client to the worker's log lines."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.imageserver import ImageServer
from tests.support.stacks import Stack, start_distributed

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "idios.json"
# A PromQL expression's metric names: identifiers followed by `{`, `[` or `)`, not functions or labels.
METRIC_NAME = re.compile(r"\b((?:idios|process)_[a-z_]+)\b")
HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")


Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(url: str, headers: dict[str, str] | None = None) -> tuple[set[str], Samples]:
    """The families (names as declared) and samples (by sample name) of a /metrics answer."""
    answer = httpx.get(url, headers=headers or {}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain"), answer.headers
    families, samples = set(), {}
    for family in text_string_to_metric_families(answer.text):
        families.add(family.name)
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(v for have, v in samples.get(name, []) if labels.items() <= have.items())


def worker_urls(stack: Stack) -> list[str]:
    return [
        f"http://127.0.0.1:{process.env['IDIOS_HEALTH_PORT']}/metrics"
        for process in stack.processes
        if process.name.startswith("worker")
    ]


def merged(scrapes: list[tuple[set[str], Samples]]) -> tuple[set[str], Samples]:
    families: set[str] = set()
    samples: Samples = {}
    for have, each in scrapes:
        families |= have
        for name, values in each.items():
            samples.setdefault(name, []).extend(values)
    return families, samples


def dashboard_metrics() -> set[str]:
    names = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            names |= set(METRIC_NAME.findall(target["expr"]))
    return names


def family_of(name: str, families: set[str]) -> bool:
    """Whether a queried name (`idios_x_bucket`, `idios_y_total`) is a declared family's sample."""
    candidates = {name, *(name.removesuffix(part) for part in HISTOGRAM_PARTS), name.removesuffix("_total")}
    return bool(candidates & families)


@pytest.fixture(scope="module")
def traffic(stack: Stack, images: ImageServer) -> Stack:
    """One of each kind of request: an add, a search, a download that fails, an address refused, a 404."""
    key = uuid.uuid4().hex
    with stack.client() as client:
        assert client.post("/models/phash/add", json={"url": images.url(f"/coffee.jpg?m={key}")}).status_code == 204
        assert client.post("/models/phash/search", json={"url": images.url(f"/coffee.jpg?m={key}")}).status_code == 200
        missing = client.post("/models/phash/add", json={"url": images.url(f"/missing.jpg?m={key}")})
        assert missing.status_code == 422, missing.text
        forbidden = client.post("/models/phash/add", json={"url": f"http://127.0.0.1:9/x.jpg?m={key}"})
        assert forbidden.status_code == 422 and forbidden.json()["detail"][0]["type"] == "url_forbidden_address"
        not_image = client.post("/models/phash/add", json={"url": images.url(f"/page.html?m={key}")})
        assert not_image.json()["detail"][0]["type"] == "not_an_image"
        assert client.get("/models/nosuchmodel/count").status_code == 404
    return stack


def test_the_api_counts_requests_by_route_template_and_status(traffic: Stack) -> None:
    families, samples = scrape(f"{traffic.url}/metrics")
    requests = "idios_http_requests_total"
    assert value(samples, requests, route="/models/{model}/add", status="204", method="POST") >= 1
    assert value(samples, requests, route="/models/{model}/add", status="422") >= 3
    assert value(samples, requests, route="/models/{model}/count", status="404") >= 1
    assert value(samples, "idios_http_request_duration_seconds_count", route="/models/{model}/search") >= 1
    # one series a route, never one a path: no url, model name or key leaks into a label
    routes = {labels["route"] for labels, _ in samples[requests]}
    assert all(not route.startswith("/models/") or "{model}" in route for route in routes), routes
    assert "process_resident_memory_bytes" in families


def test_workers_count_jobs_downloads_forward_passes_and_milvus_calls(traffic: Stack) -> None:
    urls = [f"{traffic.url}/metrics"] if traffic.mode == "embedded" else worker_urls(traffic)
    _, samples = merged([scrape(url) for url in urls])
    assert value(samples, "idios_jobs_total", operation="add", outcome="ok") >= 1
    assert value(samples, "idios_jobs_total", operation="add", outcome="invalid") >= 3
    assert value(samples, "idios_jobs_total", operation="search", outcome="ok") >= 1
    assert value(samples, "idios_job_duration_seconds_count", operation="add") >= 4
    assert value(samples, "idios_downloads_total", outcome="ok") >= 1
    assert value(samples, "idios_downloads_total", outcome="forbidden_address") >= 1
    assert value(samples, "idios_downloads_total", outcome="not_an_image") >= 1
    assert value(samples, "idios_downloads_total", outcome="failed") >= 1  # the 404
    assert value(samples, "idios_batch_images_sum", model="phash") >= 1
    assert value(samples, "idios_forward_pass_seconds_count", model="phash") >= 1
    assert value(samples, "idios_milvus_call_duration_seconds_count") >= 2
    # each worker (or the one process) says its models are ready
    per_process = len(urls)
    assert value(samples, "idios_model_status", model="phash", status="ready") == per_process
    assert value(samples, "idios_model_status", model="phash", status="loading") == 0


def test_the_api_reports_the_queues_of_the_broker(traffic: Stack) -> None:
    _, samples = scrape(f"{traffic.url}/metrics")
    consumers = value(samples, "idios_queue_consumers", model="phash", lane="interactive")
    assert consumers == (2 if traffic.mode == "distributed" else 0)


def test_every_metric_the_dashboard_queries_exists(traffic: Stack) -> None:
    urls = [f"{traffic.url}/metrics", *(worker_urls(traffic) if traffic.mode == "distributed" else [])]
    families, _ = merged([scrape(url) for url in urls])
    queried = dashboard_metrics()
    assert len(queried) >= 12, queried
    missing = sorted(name for name in queried if not family_of(name, families))
    assert not missing, f"the dashboard queries metrics no process exposes: {missing}"


def test_a_request_id_is_kept_made_or_replaced(traffic: Stack) -> None:
    with traffic.client() as client:
        kept = client.get("/models/phash/count", headers={"X-Request-ID": "trace-42.a:b"})
        made = client.get("/models/phash/count")
        forged = client.get("/models/phash/count", headers={"X-Request-ID": "x\tINFO forged line" + "y" * 200})
        refused = client.get("/models/nosuchmodel/count", headers={"X-Request-ID": "refused-1"})
    assert kept.headers["x-request-id"] == "trace-42.a:b"
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    assert re.fullmatch(r"[0-9a-f]{32}", forged.headers["x-request-id"])
    assert refused.status_code == 404 and refused.headers["x-request-id"] == "refused-1"


def test_the_metrics_need_a_read_key_when_keys_are_configured(
    milvus_uri: str, artifacts: Path, images: ImageServer
) -> None:
    from idios.auth import hash_key

    from tests.support.stacks import start_serve

    log_dir = artifacts / "metrics-keys"
    log_dir.mkdir(exist_ok=True)
    key = "metrics-reader-key-0123456789"
    stack = start_serve(milvus_uri, log_dir, models=("phash",), key=key, IDIOS_API_KEYS=f"read:{hash_key(key)}")
    try:
        assert httpx.get(f"{stack.url}/metrics", timeout=10).status_code == 401
        scrape(f"{stack.url}/metrics", {"Authorization": f"Bearer {key}"})
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def json_logged(milvus_uri: str, artifacts: Path, amqp_url: str) -> Iterator[Stack]:
    log_dir = artifacts / "metrics-json-logs"
    log_dir.mkdir(exist_ok=True)
    stack = start_distributed(
        milvus_uri,
        log_dir,
        workers=1,
        IDIOS_AMQP_URL=amqp_url,
        IDIOS_MODELS="phash",
        IDIOS_LOG_LEVEL="DEBUG",
        IDIOS_LOG_FORMAT="json",
    )
    yield stack
    stack.stop()


def test_the_request_id_reaches_the_worker_log_in_json_lines(json_logged: Stack, images: ImageServer) -> None:
    rid = f"rid-{uuid.uuid4().hex}"
    with json_logged.client() as client:
        answer = client.post(
            "/models/phash/add", json={"url": images.url(f"/rocket.jpg?r={rid}")}, headers={"X-Request-ID": rid}
        )
    assert answer.status_code == 204 and answer.headers["x-request-id"] == rid
    json_logged.stop()  # flush and close the logs
    lines = {process.name: process.log().splitlines() for process in json_logged.processes}
    records = {}
    for name, text in lines.items():
        records[name] = []
        for line in text:
            if line.strip():
                record = json.loads(line)  # every line is one JSON object
                assert {"time", "level", "logger", "message", "request_id"} <= record.keys(), record
                records[name].append(record)
    for name in ("api", "worker1"):
        mine = [record for record in records[name] if record["request_id"] == rid]
        assert mine, f"{name} logged nothing for request {rid}"
    worker_lines = [r["message"] for r in records["worker1"] if r["request_id"] == rid]
    assert any(message.startswith("add job of phash: ok") for message in worker_lines), worker_lines
