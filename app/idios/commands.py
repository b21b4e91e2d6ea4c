"""`idios add`, `idios search` and `idios reindex`: the everyday jobs, through the API (`idios.client`).

`add` and `reindex` send batches through `add_bulk`, several at once, with a progress bar (rate and
time left), write each url that failed with its reason to a JSON Lines file, and keep a checkpoint
beside their input so that `--resume` goes on where an interrupted run stopped. A url sent twice
(a batch that was in flight when the run stopped) is found stored and left as it is.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from pydantic import ValidationError
from tqdm import tqdm

from idios.api.schemas import BulkResult, SearchHit
from idios.client import ApiError, Client

Item = tuple[str, dict[str, Any] | None]
# What stops a command with one line: the server's refusal, no server (refused, reset, timed out),
# or an answer that is not the API's.
FAILURES = (ApiError, httpx.HTTPError, ValidationError, ValueError)


def _why(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    if isinstance(error, ApiError):
        return str(error)
    if isinstance(error, httpx.HTTPError):
        return f"the API at {_where(error)} did not answer: {type(error).__name__}: {error}"
    return f"the API's answer was not what Idios sends: {type(error).__name__}"


def _where(error: httpx.HTTPError) -> str:
    try:
        return str(error.request.url.copy_with(path="/", query=None))
    except RuntimeError:  # no request attached
        return "the given address"


# reading the input


def read_items(path: Path) -> Iterator[Item]:
    """(url, metadata) of each entry of a text file (a url a line), a CSV file (a `url` column; the
    other non-empty columns become metadata) or a JSON Lines file ({url, metadata}), by its suffix."""
    suffix = path.suffix.lower()
    with path.open(encoding="utf-8-sig", newline="") as lines:  # -sig: a spreadsheet's byte-order mark
        if suffix == ".csv":
            rows = csv.DictReader(lines)
            if not rows.fieldnames or "url" not in rows.fieldnames:
                raise SystemExit(f"{path}: a CSV file needs a 'url' column (found {rows.fieldnames})")
            for number, row in enumerate(rows, start=2):
                url = (row.pop("url") or "").strip()
                if not url:
                    raise SystemExit(f"{path}:{number}: no url")
                metadata = {key: value for key, value in row.items() if key and value not in (None, "")}
                yield url, metadata or None
        elif suffix in (".jsonl", ".ndjson"):
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SystemExit(f"{path}:{number}: not JSON: {exc}") from None
                if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
                    raise SystemExit(f"{path}:{number}: each line must be an object with a url")
                given = entry.get("metadata")
                if given is not None and not isinstance(given, dict):
                    raise SystemExit(f"{path}:{number}: metadata must be an object")
                yield entry["url"], given
        else:
            for line in lines:
                if line.strip() and not line.lstrip().startswith("#"):
                    yield line.strip(), None


# sending batches


@dataclass
class Checkpoint:
    """How many leading entries of the input are done (every batch before them answered): a run with
    `--resume` skips them. Kept in a small JSON file, replaced whole at each update."""

    path: Path
    done: int = 0
    cursor: str | None = None  # reindex: the last url done

    @classmethod
    def load(cls, path: Path, resume: bool) -> Checkpoint:
        if resume and path.exists():
            saved = json.loads(path.read_text())
            return cls(path, int(saved.get("done", 0)), saved.get("cursor"))
        return cls(path)

    def save(self) -> None:
        part = self.path.with_suffix(self.path.suffix + ".part")
        part.write_text(json.dumps({"done": self.done, "cursor": self.cursor}))
        part.replace(self.path)


@dataclass
class Tally:
    added: int = 0
    found: int = 0
    failed: int = 0


class BatchSender:
    """Sends batches of items with `concurrency` requests in flight, in order of completion of the
    input: the checkpoint moves past a batch only once every batch before it has answered."""

    def __init__(self, client: Client, model: str, concurrency: int, failures: Path, checkpoint: Checkpoint) -> None:
        self.client, self.model = client, model
        self.pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="idios-add")
        self.limit = max(1, concurrency)
        self.pending: list[tuple[Future[BulkResult], int, str | None]] = []
        self.failures = failures.open("a", encoding="utf-8")
        self.checkpoint = checkpoint
        self.tally = Tally()

    def send(self, batch: list[Item], progress: tqdm[Any], last_url: str | None = None) -> None:
        if len(self.pending) >= self.limit:
            self._settle(progress)
        future = self.pool.submit(self.client.add_bulk, self.model, batch)
        self.pending.append((future, len(batch), last_url))

    def finish(self, progress: tqdm[Any]) -> Tally:
        while self.pending:
            self._settle(progress)
        self.pool.shutdown()
        self.failures.close()
        return self.tally

    def abandon(self) -> None:
        for future, _, _ in self.pending:
            future.cancel()
        self.pool.shutdown(wait=True)
        self.failures.close()

    def _settle(self, progress: tqdm[Any]) -> None:
        future, size, last_url = self.pending.pop(0)
        result = future.result()  # ApiError: the caller stops, the checkpoint stays before this batch
        self.tally.added += len(result.added)
        self.tally.found += len(result.found)
        self.tally.failed += len(result.failed)
        for failure in result.failed:
            self.failures.write(json.dumps({"url": failure.url, "error": failure.error}) + "\n")
        self.failures.flush()
        self.checkpoint.done += size
        self.checkpoint.cursor = last_url or self.checkpoint.cursor
        self.checkpoint.save()
        progress.update(size)
        progress.set_postfix(added=self.tally.added, found=self.tally.found, failed=self.tally.failed, refresh=False)


def _batches(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def add(
    api: str | None,
    model: str,
    path: Path,
    *,
    batch: int,
    concurrency: int,
    resume: bool,
    failures: Path,
) -> int:
    """Add every url of `path` to `model`; exits non-zero with one line when the server refuses."""
    checkpoint = Checkpoint.load(path.with_name(path.name + f".{model}.checkpoint"), resume)
    total = sum(1 for _ in read_items(path))  # a malformed file fails here, naming its line, before anything is sent
    items = read_items(path)
    for _ in range(checkpoint.done):  # what an earlier run finished
        next(items, None)
    with Client(api) as client:
        try:
            client.count(model)  # the model exists and the key may read it, before the bar starts
        except FAILURES as exc:
            raise SystemExit(_why(exc)) from None
        sender = BatchSender(client, model, concurrency, failures, checkpoint)
        batches = ((each, None) for each in _batches(items, batch))
        return _send_all(sender, batches, total, f"add {model}")


def _send_all(
    sender: BatchSender, batches: Iterable[tuple[list[Item], str | None]], total: int | None, what: str
) -> int:
    """Send every batch (with the last url it holds, for a walk's checkpoint) under a progress bar;
    stop with one line and the way to resume when the server refuses or the user interrupts."""
    checkpoint = sender.checkpoint
    with tqdm(total=total, initial=checkpoint.done, unit="urls", desc=what, smoothing=0.1) as progress:
        try:
            for items, last_url in batches:
                sender.send(items, progress, last_url=last_url)
            tally = sender.finish(progress)
        except (*FAILURES, KeyboardInterrupt) as exc:
            sender.abandon()
            raise SystemExit(
                f"{_why(exc)}\n{checkpoint.done:,} urls done; continue with --resume (checkpoint {checkpoint.path})"
            ) from None
    checkpoint.path.unlink(missing_ok=True)
    note = f" (reasons in {sender.failures.name})" if tally.failed else ""
    print(f"added {tally.added:,}, already stored {tally.found:,}, failed {tally.failed:,}{note}")
    return 0


def reindex(
    api: str | None,
    source: str,
    target: str,
    *,
    batch: int,
    concurrency: int,
    resume: bool,
    failures: Path,
    state: Path,
) -> int:
    """Embed every url stored in `source` into `target` too, with its metadata: the images are
    downloaded again (the models' vectors differ). Resumable from the last url done."""
    checkpoint = Checkpoint.load(state, resume)
    with Client(api) as client:
        try:
            total = client.count(source)
            client.count(target)
        except FAILURES as exc:
            raise SystemExit(_why(exc)) from None
        sender = BatchSender(client, target, concurrency, failures, checkpoint)
        batches = (
            ([(row.url, row.metadata or None) for row in rows], rows[-1].url)
            for rows in client.dump_pages(source, after=checkpoint.cursor, page=batch)
        )
        return _send_all(sender, batches, total, f"{source} → {target}")


# search


def search(
    api: str | None,
    model: str,
    query: str | None,
    text: str | None,
    *,
    limit: int,
    flip: bool,
    filter: str | None,
    as_json: bool,
) -> int:
    """Print the hits of a url, an image file or a text: a table, or JSON."""
    try:
        equalities = None if filter is None else json.loads(filter)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--filter is not JSON: {exc}") from None
    if equalities is not None and not isinstance(equalities, dict):
        raise SystemExit('--filter must be a JSON object, e.g. {"tags": "letter"}')
    url = image = None
    if query is not None:
        if query.startswith(("http://", "https://")):
            url = query
        else:
            try:
                image = Path(query).read_bytes()
            except OSError as exc:
                raise SystemExit(f"cannot read {query}: {exc.strerror or exc}") from None
    with Client(api) as client:
        try:
            hits = client.search(model, url, text=text, image=image, limit=limit, flip=flip or None, filter=equalities)
        except FAILURES as exc:
            raise SystemExit(_why(exc)) from None
    print(_json(hits) if as_json else table(hits))
    return 0


def _json(hits: list[SearchHit]) -> str:
    return orjson.dumps([hit.model_dump() for hit in hits], option=orjson.OPT_INDENT_2).decode()


def table(hits: list[SearchHit]) -> str:
    """Rank, similarity, url and metadata, one hit a line; where a copy matches (copydetect) and
    whether it was found mirrored, when any hit says so."""
    if not hits:
        return "no hits"
    out = io.StringIO()
    out.write(f"{'#':>3}  {'similarity':>10}  url\n")
    for rank, hit in enumerate(hits, start=1):
        notes = []
        if hit.flipped:
            notes.append("mirrored")
        if hit.match is not None:
            box = ", ".join(f"{v:.2f}" for v in hit.match.target_box)
            notes.append(f"at [{box}] of it, {hit.match.inliers} corners")
        if hit.metadata:
            notes.append(orjson.dumps(hit.metadata).decode())
        out.write(f"{rank:>3}  {hit.similarity:>10.2f}  {hit.url}\n")
        if notes:
            out.write(f"{'':>17}{'; '.join(notes)}\n")
    return out.getvalue().rstrip("\n")
