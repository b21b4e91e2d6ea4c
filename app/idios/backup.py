"""`idios dump` and `idios restore`: entries to and from JSON Lines files, through the HTTP API."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import orjson
from tqdm import tqdm

from idios.client import ApiError, Client

IN_FLIGHT = 2
# A restore request holds at most `--batch` rows and about this many bytes of them: rows with much
# metadata (up to 65,535 bytes each) would otherwise pass the server's default body limit (32 MiB)
# and its broker's message limit (16 MiB). A request the server still refuses as too large (413) is
# sent again in halves.
REQUEST_BYTES = 8 * 1024 * 1024


def refused(error: ApiError) -> SystemExit:
    """The one line a command exits with when the server refused it."""
    return SystemExit(str(error))


class DumpFiles:
    """Lines in, files `MODEL-000000.jsonl`, ... of `batch` lines out; each file appears (renamed
    from `.part`) only once it is whole."""

    def __init__(self, directory: Path, model: str, batch: int) -> None:
        self.directory, self.model, self.batch = directory, model, batch
        self.part = 0
        self.lines = 0  # in the file being written
        self._out: BinaryIO | None = None

    def write(self, data: bytes) -> int:
        """Write whole lines; returns how many."""
        written = 0
        while data:
            if self._out is None:
                self._out = self._path(".jsonl.part").open("wb")
            cut = _after_nth_newline(data, self.batch - self.lines)
            self._out.write(data[:cut])
            count = data.count(b"\n", 0, cut)
            self.lines += count
            written += count
            data = data[cut:]
            if self.lines == self.batch:
                self.close()
        return written

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
            self._path(".jsonl.part").replace(self._path(".jsonl"))
            self.part += 1
            self.lines = 0

    def _path(self, suffix: str) -> Path:
        return self.directory / f"{self.model}-{self.part:06d}{suffix}"


def _after_nth_newline(data: bytes, n: int) -> int:
    """The index just after the n-th newline of `data`, or its length when it has fewer."""
    index = -1
    for _ in range(n):
        index = data.find(b"\n", index + 1)
        if index < 0:
            return len(data)
    return index + 1


def dump(api: str | None, model: str, directory: Path, batch: int) -> int:
    """Write files `MODEL-000000.jsonl`, ... of `batch` entries each, ascending by url, from one
    streamed response; the lines are written as the server sent them, never parsed."""
    directory.mkdir(parents=True, exist_ok=True)
    files = DumpFiles(directory, model, batch)
    with Client(api) as client:
        try:
            total = client.count(model)
            with tqdm(total=total, unit="entries", desc=f"dump {model}") as progress:
                try:
                    for line in client.dump_lines(model):
                        progress.update(files.write(line + b"\n"))
                except httpx.HTTPError as exc:
                    raise SystemExit(
                        f"the dump broke off after {progress.n} entries ({type(exc).__name__}: {exc}); "
                        f"the {files.part} files without .part are whole"
                    ) from None
        except ApiError as exc:
            raise refused(exc) from None
        files.close()
    return 0


def restore(api: str | None, model: str, directory: Path, batch: int) -> int:
    """Send every `*.jsonl` file of the directory to /restore, `batch` entries a request (fewer where
    they are large: REQUEST_BYTES).

    IN_FLIGHT requests go at once, so the API parses one batch while the store writes another:
    the order in which batches land is not fixed, which is fine for a dump (each url once)."""
    files = sorted(directory.glob("*.jsonl"))
    if not files:
        raise SystemExit(f"no .jsonl files in {directory}")
    total = sum(1 for path in files for line in path.open("rb") if line.strip())
    with (
        Client(api) as client,
        tqdm(total=total, unit="entries", desc=f"restore {model}") as progress,
        ThreadPoolExecutor(max_workers=IN_FLIGHT, thread_name_prefix="restore") as senders,
    ):
        pending: deque[Future[int]] = deque()

        def send(rows: list[Any]) -> int:
            try:
                client.restore(model, rows)
            except ApiError as exc:
                if exc.status == 413 and len(rows) > 1:
                    # Larger than the server takes (its body limit, or its broker's message limit, which
                    # this side cannot know): the halves, one after the other.
                    half = len(rows) // 2
                    return send(rows[:half]) + send(rows[half:])
                raise refused(exc) from None
            return len(rows)

        def submit(rows: list[Any]) -> None:
            if len(pending) >= IN_FLIGHT:
                progress.update(pending.popleft().result())
            pending.append(senders.submit(send, rows))

        rows: list[Any] = []
        size = 0
        for path in files:
            with path.open("rb") as lines:
                for number, line in enumerate(lines, start=1):
                    if line.strip():
                        try:
                            rows.append(orjson.loads(line))
                        except orjson.JSONDecodeError as exc:
                            raise SystemExit(f"{path}:{number}: not JSON: {exc}") from None
                        size += len(line)
                    if len(rows) >= batch or size >= REQUEST_BYTES:
                        submit(rows)
                        rows, size = [], 0
        if rows:
            submit(rows)
        while pending:
            progress.update(pending.popleft().result())
    return 0
