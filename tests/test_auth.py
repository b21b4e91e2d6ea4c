"""API keys: 401 without a key, 403 with a read key on a write route, keys never logged."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from idios.api.app import create_app
from idios.auth import KeyRing, hash_key, parse_entry
from idios.config import Settings, default_credential_problems
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


def test_key_entries_are_validated() -> None:
    assert parse_entry(f"write:{hash_key('x')}") == (hash_key("x"), "write")
    assert parse_entry(f"read {hash_key('x').upper()}") == (hash_key("x"), "read")
    for bad in ("admin:" + hash_key("x"), "read:abc", "write:" + "g" * 64, hash_key("x")):
        with pytest.raises(ValueError):
            parse_entry(bad)
    assert KeyRing.load([], None).open


@pytest.mark.parametrize(
    ("amqp", "milvus", "token", "allowed", "refused"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "http://127.0.0.1:19530", "root:Milvus", False, 0),
        ("amqp://rabbit.internal/", "http://milvus:19530", "", False, 1),
        ("amqp://guest:guest@10.0.0.5:5672/", "http://milvus:19530", "root:Milvus", False, 2),
        ("amqp://idios:s3cret@rabbit:5672/", "http://milvus:19530", "idios:s3cret", False, 0),
        ("amqp://guest:guest@rabbit:5672/", "http://milvus:19530", "root:Milvus", True, 0),
    ],
)
def test_default_credentials_are_refused_off_loopback(amqp, milvus, token, allowed, refused) -> None:
    settings = Settings(
        _env_file=None, amqp_url=amqp, milvus_uri=milvus, milvus_token=token, allow_default_credentials=allowed
    )
    assert len(default_credential_problems(settings, broker=True, milvus=True)) == refused


def test_credentials_can_come_from_files(tmp_path) -> None:
    (tmp_path / "amqp").write_text("amqp://idios:from-file@rabbit:5672/\n")
    (tmp_path / "token").write_text("idios:token-from-file\n")
    settings = Settings(_env_file=None, amqp_url_file=tmp_path / "amqp", milvus_token_file=tmp_path / "token")
    assert settings.amqp_url == "amqp://idios:from-file@rabbit:5672/"
    assert settings.milvus_token == "idios:token-from-file"


def test_api_refuses_to_start_with_guest_on_a_remote_broker() -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "IDIOS_AMQP_URL": "amqp://guest:guest@192.0.2.10:5672/"}
    result = subprocess.run([sys.executable, "-m", "idios", "api"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "guest/guest" in result.stderr
