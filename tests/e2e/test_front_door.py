"""The front door of real processes: bad settings stop the server, and a refused 30 MB body costs a real
`idios serve` no memory."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from idios.auth import hash_key

from tests.support.api import JSON, big_bulk, refused
from tests.support.stack import free_port
from tests.support.stacks import Stack, start_serve

READ_KEY, WRITE_KEY = "front-door-reader", "front-door-writer"
KEYS = [f"read:{hash_key(READ_KEY)}", f"write:{hash_key(WRITE_KEY)}"]


KIB, MIB = 1024, 1024 * 1024


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- API keys are checked before the body is read ---------------------------------------------------


@pytest.mark.parametrize(
    ("command", "env", "problem"),
    [
        ("serve", {"IDIOS_API_KEYS_FILE": "{empty}"}, "holds no API key entry"),
        ("api", {"IDIOS_API_KEYS_FILE": "{empty}"}, "holds no API key entry"),
        ("serve", {"IDIOS_API_KEYS_FILE": "{missing}"}, "does not exist"),
        ("api", {"IDIOS_API_KEYS": ","}, "holds no key entry"),
        ("serve", {"IDIOS_API_KEYS": "admin:0123"}, "IDIOS_API_KEYS, entry 1"),
        ("api", {"IDIOS_ALLOWED_HOSTS": "idios.example.net:443"}, "IDIOS_ALLOWED_HOSTS"),
    ],
)
def test_bad_front_door_settings_stop_the_server(
    tmp_path: Path, command: str, env: dict[str, str], problem: str
) -> None:
    (tmp_path / "empty").write_text("# no keys yet\n")
    paths = {"empty": str(tmp_path / "empty"), "missing": str(tmp_path / "missing")}
    env = {key: value.format(**paths) for key, value in env.items()}
    # Nothing may start: a port nobody listens on, a Milvus and a broker that are not there.
    full = {
        **os.environ,
        **env,
        "IDIOS_PORT": str(free_port()),
        "IDIOS_MILVUS_URI": str(tmp_path / "none.db"),
        "IDIOS_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/",
    }
    result = subprocess.run(
        [sys.executable, "-m", "idios", command], env=full, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and problem in lines[0], result.stderr


# --- a real server: what a refused body costs ----------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_serve(milvus_uri: str, artifacts: Path) -> Iterator[Stack]:
    """`idios serve` with API keys (phash only, to start fast)."""
    log_dir = artifacts / "test_front_door"
    log_dir.mkdir(exist_ok=True)
    stack = start_serve(
        milvus_uri, log_dir, models=("phash",), key=READ_KEY, IDIOS_MODELS="phash", IDIOS_API_KEYS=",".join(KEYS)
    )
    try:
        yield stack
    finally:
        stack.stop()
    log = stack.processes[0].log()
    assert "Traceback" not in log, log[-4000:]


def test_30_mb_without_a_key_costs_the_server_no_memory(keyed_serve: Stack) -> None:
    server = psutil.Process(keyed_serve.processes[0].proc.pid)
    body = big_bulk(30 * 1000 * 1000)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), MIB):
            yield body[start : start + MIB]

    with keyed_serve.client(timeout=60) as client:
        refused(client.post("/models/phash/add_bulk", content=b"[]", headers=JSON), 401, "unauthorized")  # warm
        before = server.memory_info().rss
        for headers in ({}, auth("a-wrong-key")):
            response = client.post("/models/phash/add_bulk", content=body, headers={**JSON, **headers})
            refused(response, 401, "unauthorized")
        response = client.post("/models/phash/add_bulk", content=chunks(), headers={**JSON, **auth("a-wrong-key")})
        refused(response, 401, "unauthorized")
        grown = server.memory_info().rss - before
        assert client.get("/ping").json() == "pong"
        print(f"RSS before {before / MIB:.1f} MiB, grown by {grown / MIB:.2f} MiB after three 30 MB bodies")
        assert grown < 4 * MIB, f"the server grew by {grown / MIB:.1f} MiB"
