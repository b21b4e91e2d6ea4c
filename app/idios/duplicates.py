"""`idios duplicates`: every group of copies in a model's collection, written to a JSON Lines file
through the HTTP API (`POST /models/{model}/duplicates`, a page at a time)."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
from tqdm import tqdm

from idios.backup import refused
from idios.client import ApiError, Client


def walk(api: str | None, model: str, out: Path, *, min_similarity: float | None, page: int, after: str | None) -> int:
    """Write one group per line ({urls, similarity}) to `out`, starting after the url `after` (to
    resume a walk: the last cursor it printed), with a progress bar over the stored urls."""
    groups = 0
    cursor = after
    with Client(api) as client:
        try:
            total = client.count(model)  # before the file is opened: a refusal leaves it be
        except ApiError as exc:
            raise refused(exc) from None
        with (
            out.open("ab" if after else "wb") as file,
            tqdm(total=total, unit="urls", desc=f"duplicates {model}") as progress,
        ):
            try:
                for found in client.duplicates(model, min_similarity=min_similarity, after=after, page=page):
                    file.write(b"".join(orjson.dumps(group.model_dump()) + b"\n" for group in found.groups))
                    file.flush()
                    groups += len(found.groups)
                    cursor = found.cursor or cursor
                    progress.update(found.examined)
                    progress.set_postfix(groups=groups, refresh=False)
            except (httpx.HTTPError, ApiError, KeyboardInterrupt) as exc:
                resume = f"continue with --after '{cursor}'" if cursor else "run it again"
                raise SystemExit(
                    f"{exc or type(exc).__name__}\nthe groups found so far are in {out}; {resume}"
                ) from None
    print(f"groups of copies: {groups}, in {out}")
    return 0
