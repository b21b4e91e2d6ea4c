"""`idios dump` and `idios restore`: entries to and from JSON Lines files, through the HTTP API."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
from tqdm import tqdm

TIMEOUT = httpx.Timeout(600.0, connect=10.0)
IN_FLIGHT = 2


def _client(api: str) -> httpx.Client:
    headers = {}
    key = os.environ.get("IDIOS_API_KEY")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.Client(base_url=api.rstrip("/"), timeout=TIMEOUT, headers=headers)


def _check(response: httpx.Response) -> httpx.Response:
    if response.is_error:
        raise SystemExit(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text}"
        )
    return response


def dump(api: str, model: str, directory: Path, batch: int) -> int:
    """Write files `MODEL-000000.jsonl`, ... of `batch` entries each, ascending by url."""
    directory.mkdir(parents=True, exist_ok=True)
    with _client(api) as client:
        total = _check(client.get(f"/models/{model}/count")).json()
        cursor = None
        part = 0
        with tqdm(total=total, unit="entries", desc=f"dump {model}") as progress:
            while True:
                response = _check(client.post(f"/models/{model}/dump", json={"cursor": cursor, "limit": batch}))
                rows = orjson.loads(response.content)
                if not rows:
                    break
                path = directory / f"{model}-{part:06d}.jsonl"
                tmp = path.with_suffix(".jsonl.part")
                with tmp.open("wb") as out:
                    for row in rows:
                        out.write(_line(row))
                tmp.replace(path)
                part += 1
                cursor = rows[-1]["url"]
                progress.update(len(rows))
    return 0


def _line(row: dict[str, Any]) -> bytes:
    """One JSON line. Floats keep the server's short spelling: they are read into the nearest
    Python float, which orjson writes back with the shortest digits that name it."""
    return orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)


def restore(api: str, model: str, directory: Path, batch: int) -> int:
    """Send every `*.jsonl` file of the directory to /restore, `batch` entries a request.

    IN_FLIGHT requests go at once, so the API parses one batch while the store writes another:
    the order in which batches land is not fixed, which is fine for a dump (each url once)."""
    files = sorted(directory.glob("*.jsonl"))
    if not files:
        raise SystemExit(f"no .jsonl files in {directory}")
    total = sum(1 for path in files for line in path.open("rb") if line.strip())
    with (
        _client(api) as client,
        tqdm(total=total, unit="entries", desc=f"restore {model}") as progress,
        ThreadPoolExecutor(max_workers=IN_FLIGHT, thread_name_prefix="restore") as senders,
    ):
        pending: deque[Future[int]] = deque()

        def send(rows: list[Any]) -> int:
            body = orjson.dumps(rows)
            _check(client.post(f"/models/{model}/restore", content=body, headers={"content-type": "application/json"}))
            return len(rows)

        def submit(rows: list[Any]) -> None:
            if len(pending) >= IN_FLIGHT:
                progress.update(pending.popleft().result())
            pending.append(senders.submit(send, rows))

        rows: list[Any] = []
        for path in files:
            with path.open("rb") as lines:
                for number, line in enumerate(lines, start=1):
                    if line.strip():
                        try:
                            rows.append(orjson.loads(line))
                        except orjson.JSONDecodeError as exc:
                            raise SystemExit(f"{path}:{number}: not JSON: {exc}") from None
                    if len(rows) >= batch:
                        submit(rows)
                        rows = []
        if rows:
            submit(rows)
        while pending:
            progress.update(pending.popleft().result())
    return 0
