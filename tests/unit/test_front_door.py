"""The API's front door: Host, API key, Content-Type and body size are checked before a body is read.

In process: `create_app` with a fake transport, starlette's TestClient."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from idios.api.app import create_app
from idios.auth import KeyRing, hash_key
from idios.config import Settings

from tests.support.api import JSON, big_bulk, refused
from tests.unit.fakes import FakeTransport

READ_KEY, WRITE_KEY = "front-door-reader", "front-door-writer"
KEYS = [f"read:{hash_key(READ_KEY)}", f"write:{hash_key(WRITE_KEY)}"]
BASE = "http://127.0.0.1:4213"
VIT = "/models/vit_b32"
KIB, MIB = 1024, 1024 * 1024


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


ANSWERS: dict[str, Any] = {
    "ping": "pong",
    "search": [],
    "compare": {"similarity": 50.0, "match": None, "flipped": False},
    "urls": [],
    "dump": [],
    "count": 0,
}


def front_transport() -> FakeTransport:
    """Answers every job at once and remembers it: what passed the front door reached the transport."""
    return FakeTransport(lambda job: ANSWERS.get(job.op))


class BodyReads:
    """ASGI wrapper counting the request body bytes the app pulled from the server."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.bytes += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


class Front:
    def __init__(self, client: TestClient, transport: FakeTransport, reads: BodyReads) -> None:
        self.client, self.transport, self.reads = client, transport, reads


@pytest.fixture
def front(request: pytest.FixtureRequest) -> Iterator[Front]:
    """An in-process API; `@pytest.mark.parametrize("front", [{setting: value}], indirect=True)` sets settings."""
    overrides = getattr(request, "param", {})
    transport = front_transport()
    reads = BodyReads(create_app(Settings(_env_file=None, **overrides), transport))
    with TestClient(reads, base_url=BASE) as client:
        yield Front(client, transport, reads)


KEYED = {"api_keys": KEYS}


# --- API keys are checked before the body is read ---------------------------------------------------


@pytest.mark.parametrize("front", [KEYED], indirect=True)
def test_a_body_without_a_valid_key_is_not_read(front: Front) -> None:
    body = big_bulk(30 * 1000 * 1000)
    for headers, status in (({}, 401), (auth("wrong"), 401), (auth(READ_KEY), 403)):
        response = front.client.post(f"{VIT}/add_bulk", content=body, headers={**JSON, **headers})
        assert response.status_code == status, response.text
        if status == 401:
            assert response.headers["www-authenticate"] == "Bearer"
    restore = front.client.post(f"{VIT}/restore", content=b"[" + b" " * (20 * MIB) + b"]", headers=JSON)
    refused(restore, 401, "unauthorized")
    assert front.reads.bytes == 0 and front.transport.jobs == []


@pytest.mark.parametrize("front", [KEYED], indirect=True)
def test_keys_are_still_enforced_route_by_route(front: Front) -> None:
    client = front.client
    assert client.get("/models").status_code == 401
    assert client.get("/models", headers=auth(READ_KEY)).status_code == 200
    assert client.post(f"{VIT}/search", json={"text": "x"}, headers=auth(READ_KEY)).status_code == 200
    assert client.post(f"{VIT}/remove", json={"url": "u"}, headers=auth(READ_KEY)).status_code == 403
    assert client.post(f"{VIT}/remove", json={"url": "u"}, headers=auth(WRITE_KEY)).status_code == 204
    assert client.get("/").status_code == 200 and client.get("/openapi.json").status_code == 200


@pytest.mark.parametrize("front", [KEYED], indirect=True)
def test_ping_with_rpc_needs_a_read_key(front: Front) -> None:
    assert front.client.get("/ping").json() == "pong"  # health checks need no key
    refused(front.client.get("/ping", params={"rpc": "true"}), 401, "unauthorized")
    refused(front.client.get("/ping", params={"rpc": "true"}, headers=auth("wrong")), 401, "unauthorized")
    assert front.transport.jobs == []
    for key in (READ_KEY, WRITE_KEY):
        assert front.client.get("/ping", params={"rpc": "true"}, headers=auth(key)).json() == "pong"
    assert [job.op for job in front.transport.jobs] == ["ping", "ping"]


def test_ping_with_rpc_is_open_without_keys(front: Front) -> None:
    assert front.client.get("/ping", params={"rpc": "true"}).json() == "pong"


def test_openapi_keeps_the_security_scheme(front: Front) -> None:
    paths = front.client.get("/openapi.json").json()["paths"]
    assert paths[f"{VIT.replace('vit_b32', '{model}')}/add_bulk"]["post"]["security"] == [{"HTTPBearer": []}]
    assert paths["/ping"]["get"]["security"] == [{"HTTPBearer": []}]
    assert "415" in paths["/models/{model}/restore"]["post"]["responses"]


# --- each route has its own body limit --------------------------------------------------------------

SMALL = {
    "api_keys": [],
    "max_message_bytes": 2 * MIB,
    "max_body_bytes": 3 * MIB,
    "max_bulk_items": 200,
}
# The limits these settings give: 1 MiB for small bodies, the broker message less 64 KiB for a job
# carrying base64 images, 3/4 of that for an upload (base64 grows it by 4/3), 8 KiB an add_bulk item.
LIMITS = {
    "add": MIB,
    "search_add": MIB,
    "remove": MIB,
    "urls": MIB,
    "dump": MIB,
    "add_bulk": 200 * 8 * KIB,
    "restore": 3 * MIB,
    "search": 2 * MIB - 64 * KIB,
    "compare": 2 * MIB - 64 * KIB,
}
UPLOAD_LIMIT = (2 * MIB - 64 * KIB) * 3 // 4


def padded(body: bytes, size: int) -> bytes:
    """`body` (JSON ending in '}' or ']') grown to `size` bytes with whitespace inside."""
    return body[:-1] + b" " * (size - len(body)) + body[-1:]


VALID = {
    "add": b'{"url": "http://127.0.0.2/a.jpg"}',
    "search_add": b'{"url": "http://127.0.0.2/a.jpg"}',
    "remove": b'{"url": "http://127.0.0.2/a.jpg"}',
    "urls": b'{"limit": 5}',
    "dump": b'{"limit": 5}',
    "add_bulk": b"[]",
    "restore": b"[]",
    "search": b'{"text": "a cat"}',
    "compare": b'{"url": "http://127.0.0.2/a.jpg", "other": "http://127.0.0.2/b.jpg"}',
}


@pytest.mark.parametrize("front", [SMALL], indirect=True)
@pytest.mark.parametrize("route", sorted(LIMITS))
def test_each_route_has_its_own_body_limit(front: Front, route: str) -> None:
    limit = LIMITS[route]
    at_limit = front.client.post(f"{VIT}/{route}", content=padded(VALID[route], limit), headers=JSON)
    assert at_limit.status_code < 300, at_limit.text
    front.reads.bytes = 0
    over = front.client.post(f"{VIT}/{route}", content=padded(VALID[route], limit + 1), headers=JSON)
    refused(over, 413, "body_too_large", f"{limit} bytes")
    assert front.reads.bytes == 0, "refused from Content-Length, before the body is read"

    def chunks() -> Iterator[bytes]:
        body = padded(VALID[route], limit + 1)
        for start in range(0, len(body), 256 * KIB):
            yield body[start : start + 256 * KIB]

    jobs = len(front.transport.jobs)
    chunked = front.client.post(f"{VIT}/{route}", content=chunks(), headers=JSON)
    refused(chunked, 413, "body_too_large", f"{limit} bytes")
    assert len(front.transport.jobs) == jobs


@pytest.mark.parametrize("front", [SMALL], indirect=True)
def test_upload_limit_leaves_room_for_base64(front: Front) -> None:
    def upload(size: int) -> httpx.Response:
        # the multipart framing around the file is about 200 bytes: a file of `size` makes a body just over it
        return front.client.post(f"{VIT}/search/upload", files={"file": ("a.jpg", io.BytesIO(b"x" * size))})

    assert upload(UPLOAD_LIMIT - 1000).status_code == 200
    front.reads.bytes = 0
    refused(upload(UPLOAD_LIMIT), 413, "body_too_large", f"{UPLOAD_LIMIT} bytes", "base64")
    assert front.reads.bytes == 0
    # the job that passed carries the file base64 encoded: it fits the 2 MiB broker message
    assert len(front.transport.jobs[0].args.image) < 2 * MIB - 64 * KIB

    # without Content-Length, refused as soon as the body passes the limit
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'

    def chunks() -> Iterator[bytes]:
        yield head
        for _ in range(UPLOAD_LIMIT // (64 * KIB) + 1):
            yield b"x" * 64 * KIB
        yield b"\r\n--b--\r\n"

    chunked = front.client.post(
        f"{VIT}/search/upload", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    refused(chunked, 413, "body_too_large", f"{UPLOAD_LIMIT} bytes")
    assert len(front.transport.jobs) == 1


@pytest.mark.parametrize("front", [SMALL], indirect=True)
def test_add_bulk_limit_names_what_to_do(front: Front) -> None:
    over = front.client.post(f"{VIT}/add_bulk", content=big_bulk(2 * MIB), headers=JSON)
    refused(over, 413, "body_too_large", str(200 * 8 * KIB), "fewer items")


# --- Content-Type ------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", sorted(VALID))
def test_json_routes_take_only_json(front: Front, route: str) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        response = front.client.post(f"{VIT}/{route}", content=VALID[route], headers={"content-type": content_type})
        refused(response, 415, "unsupported_media_type", "application/json")
    response = front.client.post(f"{VIT}/{route}", content=VALID[route], headers={"content-type": ""})
    refused(response, 415, "unsupported_media_type", "application/json")
    assert front.transport.jobs == [] and front.reads.bytes == 0
    for content_type in ("application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"):
        response = front.client.post(f"{VIT}/{route}", content=VALID[route], headers={"content-type": content_type})
        assert response.status_code < 300, (content_type, response.text)


def test_a_cross_site_text_plain_restore_stores_nothing(front: Front) -> None:
    """What a web page can send to an open instance on 127.0.0.1 without a CORS preflight."""
    row = b'[{"url": "http://127.0.0.2/a.jpg", "embedding": [' + b"0.1," * 511 + b"0.1]}]"
    response = front.client.post(f"{VIT}/restore", content=row, headers={"content-type": "text/plain"})
    refused(response, 415, "unsupported_media_type")
    assert front.transport.jobs == []


def test_the_upload_takes_only_multipart(front: Front) -> None:
    upload = front.client.post(f"{VIT}/search/upload", files={"file": ("a.jpg", b"x" * 100)})
    assert upload.status_code == 200
    response = front.client.post(f"{VIT}/search/upload", content=b'{"file": "x"}', headers=JSON)
    refused(response, 415, "unsupported_media_type", "multipart/form-data")


def test_bodiless_posts_need_no_content_type(front: Front) -> None:
    assert front.client.post(f"{VIT}/urls").status_code == 200
    refused(front.client.post(f"{VIT}/remove"), 422, "missing")


# --- Host -------------------------------------------------------------------------------------------


def hosted(**overrides: Any) -> TestClient:
    return TestClient(create_app(Settings(_env_file=None, **overrides), front_transport()), base_url=BASE)


def test_on_loopback_only_loopback_names_are_answered() -> None:
    """DNS rebinding: a page on attacker.example, resolved to 127.0.0.1, must not read the index."""
    with hosted() as client:
        for host in ("localhost", "localhost:4213", "127.0.0.1", "127.0.0.1:4213", "[::1]:4213", "LOCALHOST."):
            assert client.get("/models", headers={"Host": host}).status_code == 200, host
        for host in ("attacker.example", "attacker.example:4213", "127.0.0.1.nip.io", "localhost.attacker.example"):
            refused(client.get("/models", headers={"Host": host}), 400, "host_not_allowed", "IDIOS_ALLOWED_HOSTS")
        refused(client.get("/", headers={"Host": "attacker.example"}), 400, "host_not_allowed")
        bad = client.post(f"{VIT}/remove", json={"url": "u"}, headers={"Host": "attacker.example:4213"})
        refused(bad, 400, "host_not_allowed")
        for host in ("a b", "x:port", "[::1"):
            refused(client.get("/ping", headers={"Host": host}), 400, "host_not_allowed")


def test_allowed_hosts_list() -> None:
    with hosted(host="0.0.0.0", allowed_hosts="idios.example.net,*.idios.test") as client:
        for host in ("idios.example.net", "IDIOS.example.net:443", "api.idios.test", "localhost", "127.0.0.1:4213"):
            assert client.get("/ping", headers={"Host": host}).status_code == 200, host
        for host in ("example.net", "other.example.net", "idios.test", "evil-idios.test"):
            refused(client.get("/ping", headers={"Host": host}), 400, "host_not_allowed")


@pytest.mark.parametrize("overrides", [{"host": "0.0.0.0"}, {"allowed_hosts": "*"}])
def test_any_host_when_bound_off_loopback_or_star(overrides: dict[str, str]) -> None:
    with hosted(**overrides) as client:
        assert client.get("/models", headers={"Host": "anything.example"}).status_code == 200


@pytest.mark.parametrize("bad", ["idios.example.net:443", "http://idios.example.net", "*idios.test", "a*.b"])
def test_bad_allowed_hosts_refuse_to_start(bad: str) -> None:
    from idios.auth import ConfigError

    with pytest.raises(ConfigError, match="IDIOS_ALLOWED_HOSTS"):
        hosted(allowed_hosts=bad)


# --- keys configuration -----------------------------------------------------------------------------

ENTRY = f"write:{hash_key(WRITE_KEY)}"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("# operators\n# nobody yet\n", "holds no API key entry"),
        ("", "holds no API key entry"),
        ("\n   \n\t\n", "holds no API key entry"),
        ("   # indented comment\n", "holds no API key entry"),
        (f"{ENTRY}\nidios_a-raw-key-pasted-by-mistake\n", "line 2"),
    ],
)
def test_a_keys_file_without_keys_is_an_error(tmp_path: Path, text: str, problem: str) -> None:
    from idios.auth import ConfigError

    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem) as info:
        KeyRing.load([], path)
    assert "raw-key" not in str(info.value)
    with pytest.raises(ConfigError):
        create_app(Settings(_env_file=None, api_keys_file=path), front_transport())


def test_keys_file_comments_may_be_indented(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"  # operators\n\t# more\n  {ENTRY}  \n")
    assert KeyRing.load([], path).scopes == {hash_key(WRITE_KEY): "write"}


def test_unreadable_keys_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from idios.auth import ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        KeyRing.load([], tmp_path / "missing")
    with pytest.raises(ConfigError, match="is a directory"):
        KeyRing.load([], tmp_path)
    (tmp_path / "latin1").write_bytes(b"# caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        KeyRing.load([], tmp_path / "latin1")
    locked = tmp_path / "locked"
    locked.write_text(ENTRY)

    def denied(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", denied)  # chmod does not stop root, who runs the suite in CI
    with pytest.raises(ConfigError, match="permission denied"):
        KeyRing.load([], locked)


def test_an_empty_keys_variable_is_unset_but_a_set_one_needs_a_key() -> None:
    from pydantic import ValidationError

    assert KeyRing.load(Settings(_env_file=None, api_keys="").api_keys, None).open
    with pytest.raises(ValidationError, match="holds no key entry"):
        Settings(_env_file=None, api_keys=" , ")
    assert Settings(_env_file=None, api_keys_file="").api_keys_file is None
