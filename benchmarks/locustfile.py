"""Locust load profiles for Idios: ingestion, interactive search, compare, and searches while ingesting.

Run by the benchmark runner (`python -m benchmarks`), or by hand:

    IDIOS_BENCH_CORPUS=corpus.json locust -f benchmarks/locustfile.py --headless \\
        --host http://127.0.0.1:4213 -u 16 -r 16 -t 60s --csv out AddUser

IDIOS_BENCH_CORPUS names the JSON url sets written by `benchmarks.corpus.Corpus.save`;
IDIOS_BENCH_MODEL picks the model (vit_b32); IDIOS_BENCH_BULK the urls per add_bulk request;
IDIOS_API_KEY is sent as a bearer token when set.
"""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path

from locust import FastHttpUser, constant, task
from urllib3 import encode_multipart_formdata

from benchmarks.corpus import Corpus

CORPUS = Corpus.load(Path(os.environ["IDIOS_BENCH_CORPUS"]))
MODEL = os.environ.get("IDIOS_BENCH_MODEL", "vit_b32")
BULK = int(os.environ.get("IDIOS_BENCH_BULK", "16"))
PREFIX = f"/models/{MODEL}"
HEADERS = {"Authorization": f"Bearer {os.environ['IDIOS_API_KEY']}"} if os.environ.get("IDIOS_API_KEY") else {}
# Every user walks the ingestion set from its own starting point, so concurrent adds rarely repeat a url.
_START = itertools.count()
_FRESH = itertools.count()


class IdiosUser(FastHttpUser):
    """Back-to-back requests: each user is one client waiting for its answer before the next call."""

    abstract = True
    wait_time = constant(0)
    connection_timeout = 10.0
    network_timeout = 300.0

    def post(self, path: str, name: str, **kwargs: object) -> None:
        with self.client.post(f"{PREFIX}{path}", name=name, headers=HEADERS, catch_response=True, **kwargs) as response:
            if response.status_code >= 400:
                response.failure(f"{response.status_code}: {response.text[:200]}")


class _Ingesting(IdiosUser):
    abstract = True

    def on_start(self) -> None:
        start = next(_START) * 97
        urls = CORPUS.ingest
        self.urls = itertools.cycle(urls[start % len(urls) :] + urls[: start % len(urls)])


class AddUser(_Ingesting):
    """One image per request (`add`, an upsert): the worker batches concurrent adds itself."""

    @task
    def add(self) -> None:
        self.post("/add", "add", json={"url": next(self.urls), "metadata": {"source": "locust"}})


class AddBulkUser(_Ingesting):
    """IDIOS_BENCH_BULK urls per `add_bulk` request, each new to the store.

    add_bulk leaves stored urls alone, so each url gets a query string never sent before;
    the image server answers it with the same photo.
    """

    @task
    def add_bulk(self) -> None:
        batch = [{"url": f"{next(self.urls)}?bulk={os.getpid()}-{next(_FRESH)}"} for _ in range(BULK)]
        self.post("/add_bulk", f"add_bulk ({BULK} urls)", json=batch)


class SearchStoredUrlUser(IdiosUser):
    """Search by the url of a stored image: its vector is looked up, nothing is downloaded."""

    @task
    def search_stored(self) -> None:
        self.post("/search", "search by stored url", json={"url": random.choice(CORPUS.stored), "limit": 10})


class SearchNewUrlUser(IdiosUser):
    """Search by an image that is not stored: download, decode, embed at batch 1, search."""

    @task
    def search_new(self) -> None:
        self.post("/search", "search by new url", json={"url": random.choice(CORPUS.fresh), "limit": 10})


class OneSearchNewUrlUser(SearchNewUrlUser):
    """Exactly one such user, whatever the total: the searching client of the mixed profile."""

    fixed_count = 1


class OneSearchStoredUrlUser(SearchStoredUrlUser):
    fixed_count = 1


class SearchTextUser(IdiosUser):
    @task
    def search_text(self) -> None:
        words = ("a cat", "an astronaut", "a cup of coffee", "coins on a table", "the moon", "a rocket launch")
        self.post("/search", "search by text", json={"text": random.choice(words), "limit": 10})


class SearchUploadUser(IdiosUser):
    """Multipart upload of a local JPEG (600-2000 px), as the web page sends it."""

    def on_start(self) -> None:
        self.bodies = []
        for path in CORPUS.upload:
            body, content_type = encode_multipart_formdata(
                {"file": (Path(path).name, Path(path).read_bytes(), "image/jpeg"), "limit": "10"}
            )
            self.bodies.append((body, content_type))

    @task
    def search_upload(self) -> None:
        body, content_type = random.choice(self.bodies)
        headers = {**HEADERS, "Content-Type": content_type}
        with self.client.post(
            f"{PREFIX}/search/upload", name="search by upload", data=body, headers=headers, catch_response=True
        ) as response:
            if response.status_code >= 400:
                response.failure(f"{response.status_code}: {response.text[:200]}")


class CompareUser(IdiosUser):
    """Compare a stored image with a new one: one lookup and one download and embedding."""

    @task
    def compare(self) -> None:
        body = {"url": random.choice(CORPUS.stored), "other": random.choice(CORPUS.fresh)}
        self.post("/compare", "compare stored with new", json=body)
