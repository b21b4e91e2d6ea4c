"""API keys through the app and its broker transport: 401 without a key, 403 with a read key on a
write route, keys never logged."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from idios.api.app import create_app
from idios.auth import hash_key
from idios.config import Settings
from idios.transport.amqp import AmqpTransport

READ_KEY, WRITE_KEY = "reader-secret-1", "writer-secret-2"


@pytest.fixture
def client(tmp_path) -> Iterator[TestClient]:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# operators\nwrite:{hash_key(WRITE_KEY)}\n")
    settings = Settings(
        _env_file=None,
        api_keys=[f"read:{hash_key(READ_KEY)}"],
        api_keys_file=keys_file,
        queue_prefix="test-auth-nobody",
        request_timeout=3,
    )
    with TestClient(create_app(settings, AmqpTransport(settings)), base_url="http://127.0.0.1:4213") as test_client:
        yield test_client


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_routes_need_a_key(client: TestClient) -> None:
    assert client.get("/ping").json() == "pong"
    for method, path in [("get", "/models"), ("get", "/models/vit_b32/count"), ("post", "/models/vit_b32/add")]:
        response = client.request(method, path, json={"url": "http://127.0.0.2/a.jpg"})
        assert response.status_code == 401, (path, response.text)
        assert response.json()["detail"][0]["type"] == "unauthorized"
    assert client.get("/models", headers=auth("wrong")).status_code == 401
    assert client.get("/models", headers={"Authorization": f"Basic {READ_KEY}"}).status_code == 401


def test_read_key_reads_but_does_not_write(client: TestClient) -> None:
    assert client.get("/models", headers=auth(READ_KEY)).status_code == 200
    # past authentication, the request reaches the transport (no worker serves this queue prefix)
    assert client.get("/models/vit_b32/count", headers=auth(READ_KEY)).status_code == 503
    for path in ("add", "search_add", "remove"):
        response = client.post(
            f"/models/vit_b32/{path}", json={"url": "http://127.0.0.2/a.jpg"}, headers=auth(READ_KEY)
        )
        assert response.status_code == 403 and response.json()["detail"][0]["type"] == "forbidden"
    assert client.post("/models/vit_b32/add_bulk", json=[], headers=auth(READ_KEY)).status_code == 403
    assert client.post("/models/vit_b32/restore", json=[], headers=auth(READ_KEY)).status_code == 403


def test_write_key_does_everything(client: TestClient) -> None:
    assert client.get("/models", headers=auth(WRITE_KEY)).status_code == 200
    response = client.post("/models/vit_b32/add", json={"url": "http://127.0.0.2/a.jpg"}, headers=auth(WRITE_KEY))
    assert response.status_code == 503  # authorised; no worker here


def test_keys_never_reach_the_logs(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        client.get("/models", headers=auth(READ_KEY))
        client.post("/models/vit_b32/add", json={"url": "http://127.0.0.2/a.jpg"}, headers=auth(READ_KEY))
        client.get("/models", headers=auth("a-wrong-key"))
    assert READ_KEY not in caplog.text and "a-wrong-key" not in caplog.text
