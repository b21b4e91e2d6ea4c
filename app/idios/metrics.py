"""Prometheus metrics (`GET /metrics` on the API and on each worker's health port), with prometheus-client.

The metrics live in the process's default registry, beside prometheus-client's own process metrics
(`process_resident_memory_bytes`, `process_cpu_seconds_total`): `idios serve` answers all of them on
its API, an `idios api` the HTTP and queue ones, an `idios worker` the job, download, model and Milvus
ones. Names follow Prometheus's conventions: the `idios_` prefix, base units, `_total` for counters.
Labels take a bounded set of values (route templates, not paths; outcomes, not messages).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from idios.errors import IdiosError

__all__ = ["CONTENT_TYPE_LATEST", "render"]

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_FAST_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HTTP_REQUESTS = Counter(
    "idios_http_requests_total", "HTTP requests answered, by route template and status.", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "idios_http_request_duration_seconds",
    "Seconds from a request's arrival to the end of its response, by route template.",
    ["method", "route"],
    buckets=_SECONDS,
)
JOBS = Counter(
    "idios_jobs_total",
    "Jobs run, by operation and outcome (ok, invalid: the caller's to fix, unavailable, timeout, error).",
    ["operation", "outcome"],
)
JOB_SECONDS = Histogram(
    "idios_job_duration_seconds", "Seconds a job ran, by operation.", ["operation"], buckets=_SECONDS
)
JOBS_IN_PROGRESS = Gauge("idios_jobs_in_progress", "Jobs running now, by model and lane.", ["model", "lane"])
QUEUE_MESSAGES = Gauge(
    "idios_queue_messages",
    "Jobs waiting in the broker's queue, by model and lane (the API asks the broker).",
    ["model", "lane"],
)
QUEUE_CONSUMERS = Gauge(
    "idios_queue_consumers",
    "Workers consuming each queue, by model and lane (the API asks the broker).",
    ["model", "lane"],
)
BATCH_IMAGES = Histogram(
    "idios_batch_images",
    "Images in each forward pass, by model.",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
FORWARD_SECONDS = Histogram(
    "idios_forward_pass_seconds", "Seconds of each forward pass, by model.", ["model"], buckets=_FAST_SECONDS
)
DOWNLOADS = Counter(
    "idios_downloads_total",
    "Images downloaded and decoded, by outcome (ok, too_large, timeout, forbidden_address, not_an_image, failed).",
    ["outcome"],
)
DOWNLOAD_SECONDS = Histogram(
    "idios_download_duration_seconds", "Seconds to download and decode an image.", buckets=_SECONDS
)
MILVUS_SECONDS = Histogram(
    "idios_milvus_call_duration_seconds",
    "Seconds of each call to the vector store, by call.",
    ["call"],
    buckets=_FAST_SECONDS,
)
MILVUS_ERRORS = Counter("idios_milvus_call_errors_total", "Calls to the vector store that failed, by call.", ["call"])
MODEL_STATUS = Gauge(
    "idios_model_status",
    "1 for each model's current status (loading, ready, unavailable), 0 for the others.",
    ["model", "status"],
)

MODEL_STATUSES = ("loading", "ready", "unavailable")
# The error types of a failed download or decode that have a name of their own; the others are `failed`.
_DOWNLOAD_OUTCOMES = {
    "download_too_large": "too_large",
    "too_many_pixels": "too_large",
    "decode_too_large": "too_large",
    "download_timeout": "timeout",
    "url_forbidden_address": "forbidden_address",
    "not_an_image": "not_an_image",
    "image_truncated": "not_an_image",
}


def render() -> bytes:
    """Every metric of this process in the Prometheus text format."""
    return generate_latest()


def outcome(error: IdiosError | None) -> str:
    """A job's outcome label: ok, or its error's kind by status."""
    if error is None:
        return "ok"
    if error.status == 503:
        return "unavailable"
    if error.status == 504:
        return "timeout"
    return "invalid" if error.status < 500 else "error"


def download_outcome(error: IdiosError | None) -> str:
    return "ok" if error is None else _DOWNLOAD_OUTCOMES.get(error.type, "failed")


def set_model_status(model: str, status: str) -> None:
    for each in MODEL_STATUSES:
        MODEL_STATUS.labels(model, each).set(1 if each == status else 0)


@contextmanager
def timed(histogram: Histogram, *labels: str) -> Iterator[None]:
    """Observe the seconds the block took (also when it raises)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        (histogram.labels(*labels) if labels else histogram).observe(time.perf_counter() - started)
