"""`idios duplicates`: every group of copies in a model's collection, written to a JSON Lines file
through the HTTP API (`POST /models/{model}/duplicates`, a page at a time)."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
from tqdm import tqdm

from idios.backup import api_client, check


def walk(api: str, model: str, out: Path, *, min_similarity: float | None, page: int, after: str | None) -> int:
    """Write one group per line ({urls, similarity}) to `out`, starting after the url `after` (to
    resume a walk: the last cursor it printed), with a progress bar over the stored urls."""
    body: dict[str, object] = {"limit": page, "cursor": after}
    if min_similarity is not None:
        body["min_similarity"] = min_similarity
    groups = 0
    with api_client(api) as http:
        total = check(http.get(f"/models/{model}/count")).json()  # before the file is opened: a refusal leaves it be
        with (
            out.open("ab" if after else "wb") as file,
            tqdm(total=total, unit="urls", desc=f"duplicates {model}") as progress,
        ):
            try:
                while True:
                    answer = check(http.post(f"/models/{model}/duplicates", json=body)).json()
                    file.write(b"".join(orjson.dumps(group) + b"\n" for group in answer["groups"]))
                    file.flush()
                    groups += len(answer["groups"])
                    progress.update(answer["examined"])
                    progress.set_postfix(groups=groups, refresh=False)
                    if answer["cursor"] is None:
                        break
                    body["cursor"] = answer["cursor"]
            except (httpx.HTTPError, SystemExit, KeyboardInterrupt) as exc:
                resume = f"continue with --after '{body['cursor']}'" if body["cursor"] else "run it again"
                raise SystemExit(
                    f"{exc or type(exc).__name__}\nthe groups found so far are in {out}; {resume}"
                ) from None
    print(f"groups of copies: {groups}, in {out}")
    return 0
