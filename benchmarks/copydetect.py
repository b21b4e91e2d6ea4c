"""The copy-detection benchmark: find the original of a copy among many distractors, with copydetect,
phash and vit_b32 side by side, and write `benchmarks/results/<date>-<host>-copydetect.md`.

    python -m benchmarks.copydetect [--distractors 100000] [--per-family 3] [--unrelated 400]
                                    [--models copydetect,phash,vit_b32] [--milvus-uri URI] [--out DIR]

What it does, on one `idios serve` (seeded random weights for vit_b32: the compute, not the quality):
- indexes the distractors (`benchmarks.copies`: textures, mosaics of patches of held-out photos,
  application screenshots, shapes) through `POST /restore`, their stored vectors computed as a
  worker computes them (`benchmarks.copy_features`), and the held-out originals through `add_bulk`
  from an image server, one model at a time, measuring Milvus's memory and disk for each;
- searches each model with copies of every indexed original, `per-family` of each query family,
  uploaded as JPEG (`flip` for the mirrored family): top-1 per family, the IoU of a crop's match box
  with the true region (copydetect), and the latency;
- searches with unrelated queries, which have no copy in the index: the same copies of the originals
  held out of the index (`HELD_OUT`), and `unrelated` distractors that were not indexed, of the kinds
  that share nothing by construction (textures and shapes; mosaics reuse patches of the same photos
  and screenshots the same interface, so a fresh one is a partial copy of indexed ones): the share of
  true copies that score above the 99th percentile of their best scores;
- adds `ingest` fresh distractors through `add_bulk` from the image server (downloads, decoding,
  the model and Milvus, with the collection at its full size): images/s.

A run of some of the models adds them to the day's report of the same corpus; `--milvus-uri` and
`--prefix` reuse collections a run left in a Milvus of its own (`--milvus-data`: its directory).
"""

from __future__ import annotations

import argparse
import datetime
import json
import socket
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from benchmarks import copy_features
from benchmarks.copies import (
    FAMILIES,
    ORIGINALS,
    Query,
    distractor,
    distractor_kind,
    encode_jpeg,
    make_query,
    original,
)
from benchmarks.corpus import IMAGE_HOST
from benchmarks.localstack import LocalStack
from benchmarks.memory import directory_bytes, find_pid, process_rss

from tests.support.imageserver import ImageServer

# The models compared, and the rows of each restore request (about 6 MB of JSON).
MODELS = ("copydetect", "phash", "vit_b32")
RESTORE_BATCH = {"copydetect": 500, "phash": 5000, "vit_b32": 1000}
QUERY_LIMIT = 10
CROPS = ("crop50", "crop25", "crop12")
# Originals left out of the index: their copies are unrelated queries, transformed as the others are.
HELD_OUT = ORIGINALS[3::4]
INDEXED = tuple(name for name in ORIGINALS if name not in HELD_OUT)
UNRELATED_KINDS = ("texture", "shapes")
# The image server's port, fixed: a run reusing the collections of an earlier one (`--prefix`) adds
# the originals under the same urls again rather than beside them.
IMAGE_PORT = 8301


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def distractor_url(index: int) -> str:
    return f"http://{IMAGE_HOST}/distractor/{index:07d}.jpg"


def restore_distractors(client: httpx.Client, model: str, count: int) -> float:
    """Restore the first `count` distractors' stored vectors; seconds taken."""
    from idios.specs import SPECS

    spec, batch = SPECS[model], RESTORE_BATCH[model]
    started = time.perf_counter()

    def send(rows: list[dict[str, Any]]) -> None:
        body = orjson.dumps(rows, option=orjson.OPT_SERIALIZE_NUMPY)
        answer = client.post(f"/models/{model}/restore", content=body, headers={"Content-Type": "application/json"})
        answer.raise_for_status()

    with ThreadPoolExecutor(max_workers=2) as senders:
        pending = []
        for chunk, path in enumerate(copy_features.chunks(model, count, log=log)):
            start = chunk * copy_features.CHUNK
            vectors, kinds = copy_features.load_vectors(path)
            rows = [
                {"url": distractor_url(start + i), "metadata": {"kind": str(kinds[i])}, "embedding": spec.to_public(v)}
                for i, v in enumerate(vectors[: count - start])
            ]
            for first in range(0, len(rows), batch):
                pending.append(senders.submit(send, rows[first : first + batch]))
            while len(pending) > 4:
                pending.pop(0).result()
        for future in pending:
            future.result()
    return time.perf_counter() - started


def wait_indexed(stack: LocalStack, model: str, timeout: float = 6 * 3600) -> float:
    """Flush the model's collections and wait until Milvus has indexed every row; seconds waited."""
    from pymilvus import MilvusClient

    prefix = stack.env["IDIOS_COLLECTION_PREFIX"] + model
    client = MilvusClient(stack.env["IDIOS_MILVUS_URI"])
    started = time.perf_counter()
    try:
        names = [name for name in client.list_collections() if name == prefix or name.startswith(prefix + "_")]
        for name in names:
            client.flush(name)
        while time.perf_counter() - started < timeout:
            states = [client.describe_index(name, "vector") for name in names]
            if all(int(s["indexed_rows"]) >= int(s["total_rows"]) and not int(s["pending_index_rows"]) for s in states):
                return time.perf_counter() - started
            time.sleep(5)
        raise TimeoutError(f"Milvus did not index {model} in {timeout:.0f} s")
    finally:
        client.close()


def search(client: httpx.Client, model: str, image: bytes, *, flip: bool) -> tuple[list[dict[str, Any]], float, str]:
    """The hits, the seconds taken and the error of a refused query (a miss: phash and the CLIP models
    refuse images under 150 pixels, copydetect under 32)."""
    started = time.perf_counter()
    answer = client.post(
        f"/models/{model}/search/upload",
        files={"file": ("query.jpg", image, "image/jpeg")},
        data={"limit": str(QUERY_LIMIT), "flip": "true" if flip else "false"},
    )
    elapsed = time.perf_counter() - started
    if answer.status_code == 422:
        return [], elapsed, answer.json()["detail"][0]["type"]
    answer.raise_for_status()
    return answer.json(), elapsed, ""


def iou(a: list[float] | tuple[float, ...], b: list[float] | tuple[float, ...]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def run_queries(
    client: httpx.Client,
    model: str,
    queries: list[tuple[Query, bytes]],
    unrelated: list[tuple[str, bytes, bool]],
    urls: dict[str, str],
) -> dict[str, Any]:
    """Every copy query and every unrelated query (what it is, its JPEG, whether mirrored) against one model."""
    copies = []
    for query, image in queries:
        hits, seconds, refused = search(client, model, image, flip=query.mirrored)
        wanted = urls[query.original]
        found = next((hit for hit in hits if hit["url"] == wanted), None)
        box = found["match"]["target_box"] if found and found.get("match") and query.region else None
        copies.append(
            {
                "family": query.family,
                "original": query.original,
                "top1": bool(hits) and hits[0]["url"] == wanted,
                "score": found["similarity"] if found else 0.0,
                "iou": iou(box, query.region) if box and query.region else None,
                "seconds": seconds,
                "refused": refused,
            }
        )
    best_unrelated = []
    for what, image, mirrored in unrelated:
        hits, seconds, refused = search(client, model, image, flip=mirrored)
        best = hits[0] if hits else {"url": None, "similarity": 0.0}
        best_unrelated.append(
            {"query": what, "score": best["similarity"], "best": best["url"], "seconds": seconds, "refused": refused}
        )
    return {"copies": copies, "unrelated": best_unrelated}


def ingest(client: httpx.Client, model: str, urls: list[str]) -> float:
    """Images/s of `add_bulk` (two requests of 16 urls in flight) over `urls`."""
    batches = [urls[first : first + 16] for first in range(0, len(urls), 16)]

    def send(batch: list[str]) -> None:
        answer = client.post(f"/models/{model}/add_bulk", json=[{"url": url} for url in batch])
        answer.raise_for_status()
        failed = answer.json()["failed"]
        if failed:
            raise RuntimeError(f"add_bulk failed: {failed[:3]}")

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as senders:
        list(senders.map(send, batches))
    return len(urls) / (time.perf_counter() - started)


def summarise(model: str, found: dict[str, Any]) -> dict[str, Any]:
    copies, unrelated = found["copies"], found["unrelated"]
    threshold = float(np.percentile([u["score"] for u in unrelated], 99)) if unrelated else 0.0
    families = {}
    for family in FAMILIES:
        mine = [c for c in copies if c["family"] == family]
        ious = [c["iou"] for c in mine if c["iou"] is not None]
        families[family] = {
            "queries": len(mine),
            "top1": sum(c["top1"] for c in mine) / len(mine) if mine else None,
            "above": sum(c["score"] > threshold for c in mine) / len(mine) if mine else None,
            "iou": statistics.median(ious) if ious else None,
            "refused": sum(bool(c["refused"]) for c in mine),
        }
    seconds = sorted(c["seconds"] for c in copies) + sorted(u["seconds"] for u in unrelated)
    return {
        "families": families,
        "unrelated_p99": threshold,
        "separated": sum(c["score"] > threshold for c in copies) / len(copies),
        "search_p50_ms": 1000 * float(np.percentile(seconds, 50)),
        "search_p99_ms": 1000 * float(np.percentile(seconds, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distractors", type=int, default=100_000)
    parser.add_argument("--per-family", type=int, default=3)
    parser.add_argument("--unrelated", type=int, default=400)
    parser.add_argument("--ingest", type=int, default=1000)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--milvus-uri", help="a running Milvus instead of a bundled one started for the run")
    parser.add_argument("--milvus-data", help="that Milvus's data directory, for its disk figures")
    parser.add_argument(
        "--prefix", help="collection prefix; collections it already holds, with the distractors, are not restored again"
    )
    parser.add_argument("--out", default=str(copy_features.ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    models = args.models.split(",")
    host = socket.gethostname()
    results: dict[str, Any] = {
        "host": host,
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "distractors": args.distractors,
        "per_family": args.per_family,
        "models": {},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{datetime.date.today().isoformat()}-{host}-copydetect"
    earlier = out / f"{stem}.json"
    if earlier.exists():  # the day's earlier run of other models with the same corpus: one report of all
        kept = json.loads(earlier.read_text())
        if (kept["distractors"], kept["per_family"]) == (args.distractors, args.per_family):
            results["models"] = {name: kept["models"][name] for name in kept["models"] if name not in models}
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="idios-copies-")))
        milvus_dir: Path | None
        if args.milvus_uri:
            milvus_uri = args.milvus_uri
            milvus_dir = Path(args.milvus_data) if args.milvus_data else None
        else:
            from idios.embedded import milvus_uri as bundled

            milvus_dir = work / "data"
            milvus_uri = stack.enter_context(bundled("embedded", milvus_dir))
        milvus_pid = find_pid("milvus", str(milvus_dir)) if milvus_dir else find_pid("milvus")

        images = stack.enter_context(ImageServer(host=IMAGE_HOST, port=IMAGE_PORT))
        urls = {name: images.add(f"/original/{name}.jpg", encode_jpeg(original(name), 92)) for name in INDEXED}
        fresh = range(args.distractors + 2 * args.unrelated, args.distractors + 2 * args.unrelated + args.ingest)
        ingest_urls = [images.add(f"/fresh/{i:07d}.jpg", encode_jpeg(distractor(i), 88)) for i in fresh]
        log(f"{len(INDEXED)} originals and {len(ingest_urls)} fresh distractors served on {IMAGE_HOST}")

        def copies_of(names: tuple[str, ...]) -> list[tuple[Query, bytes]]:
            made = [
                make_query(name, family, seed)
                for name in names
                for family in FAMILIES
                for seed in range(args.per_family)
            ]
            return [(query, encode_jpeg(query.image, 90)) for query in made]

        queries = copies_of(INDEXED)
        unrelated = [(f"held-out {q.family}", image, q.mirrored) for q, image in copies_of(HELD_OUT)]
        fresh_unrelated = range(args.distractors, args.distractors + 2 * args.unrelated)
        kinds = [i for i in fresh_unrelated if distractor_kind(i) in UNRELATED_KINDS][: args.unrelated]
        unrelated += [(f"distractor {distractor_kind(i)}", encode_jpeg(distractor(i), 88), False) for i in kinds]
        log(f"{len(queries)} copy queries, {len(unrelated)} unrelated queries")
        # Stored vectors first (hours for 100,000 the first time), before any stack holds memory.
        copy_features.prepare(args.distractors, log=log)
        for model in models:
            for _ in copy_features.chunks(model, args.distractors, log=log):
                pass

        local = LocalStack(milvus_uri, work / "logs", workers=0, models=",".join(models), prefix=args.prefix)
        stack.callback(local.stop)
        client = stack.enter_context(httpx.Client(base_url=local.url, timeout=600))
        for model in models:
            log(f"{model}: restoring {args.distractors:,} distractors")
            before = {"rss": process_rss(milvus_pid) if milvus_pid else 0, "disk": _disk(milvus_dir)}
            restored = client.get(f"/models/{model}/count").json() >= args.distractors
            restore_seconds = 0.0 if restored else restore_distractors(client, model, args.distractors)
            added = client.post(f"/models/{model}/add_bulk", json=[{"url": url} for url in urls.values()])
            added.raise_for_status()
            assert not added.json()["failed"], added.json()["failed"]
            index_seconds = wait_indexed(local, model)
            count = client.get(f"/models/{model}/count").json()
            after = {"rss": process_rss(milvus_pid) if milvus_pid else 0, "disk": _disk(milvus_dir)}
            log(f"{model}: {count:,} images, restored in {restore_seconds:.0f} s, indexed {index_seconds:.0f} s later")
            found = run_queries(client, model, queries, unrelated, urls)
            summary = summarise(model, found)
            log(f"{model}: {json.dumps(summary)}")
            rate = ingest(client, model, ingest_urls)
            log(f"{model}: add_bulk {rate:.1f} images/s")
            results["models"][model] = {
                **summary,
                "count": count,
                "restore_seconds": restore_seconds,
                "index_seconds": index_seconds,
                "ingest_images_per_s": rate,
                "milvus_rss_bytes": after["rss"] - before["rss"],
                "milvus_disk_bytes": after["disk"] - before["disk"],
                "raw": found,
            }
            (out / f"{stem}.json").write_text(json.dumps(results, indent=1))
    path = write_report(results, out, stem)
    log(f"wrote {path}")


def _disk(milvus_dir: Path | None) -> int:
    return directory_bytes(milvus_dir) if milvus_dir else 0


def write_report(results: dict[str, Any], out: Path, stem: str) -> Path:
    models = [name for name in MODELS if name in results["models"]]
    lines = [
        f"# Copy detection: {results['distractors']:,} distractors, {results['host']}, {results['started']}",
        "",
        "Generated by `python -m benchmarks.copydetect` (benchmarks/copydetect.py says what it does). "
        "vit_b32 runs with seeded random weights: its figures are the compute, not the quality.",
        "",
        f"Indexed: the distractors and the originals {', '.join(INDEXED)}. Queries: {results['per_family']} copies "
        "of each indexed original in each family, uploaded as JPEG (quality 90). Unrelated queries (no copy "
        f"indexed): the same copies of {', '.join(HELD_OUT)}, held out of the index, and distractors of the "
        f"kinds {' and '.join(UNRELATED_KINDS)} that were not indexed. A query a model refuses (an image "
        "under its smallest side) counts as a miss, and the table says how many were.",
        "",
        "## Top-1 by query family (share of queries whose first hit is the original)",
        "",
        "| family | queries | " + " | ".join(models) + " |",
        "|---|---|" + "---|" * len(models),
    ]
    for family in FAMILIES:
        figures = [results["models"][m]["families"][family] for m in models]
        cells = [
            (f"{f['top1']:.2f}" if f["top1"] is not None else "")
            + (f" ({f['refused']} refused)" if f["refused"] else "")
            for f in figures
        ]
        lines.append(f"| {family} | {figures[0]['queries']} | " + " | ".join(cells) + " |")
    rows = [
        ("copies scoring above the unrelated p99", lambda f: f"{f['separated']:.3f}"),
        ("unrelated queries' best score, p99", lambda f: f"{f['unrelated_p99']:.1f}"),
        ("crop match box IoU, median (50/25/12%)", _ious),
        ("search p50 / p99, ms (upload, limit 10)", lambda f: f"{f['search_p50_ms']:.0f} / {f['search_p99_ms']:.0f}"),
        ("add_bulk, images/s at full size", lambda f: f"{f['ingest_images_per_s']:.1f}"),
        ("images indexed", lambda f: f"{f['count']:,}"),
        ("restore, s; index caught up, s later", lambda f: f"{f['restore_seconds']:.0f}; {f['index_seconds']:.0f}"),
        ("Milvus memory, growth (MB; per image, KB)", lambda f: _per_image(f, "milvus_rss_bytes")),
        ("Milvus disk, growth (MB; per image, KB)", lambda f: _per_image(f, "milvus_disk_bytes")),
    ]
    lines += ["", "## Figures", "", "| | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for label, cell in rows:
        lines.append(f"| {label} | " + " | ".join(cell(results["models"][m]) for m in models) + " |")
    path = out / f"{stem}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _ious(figures: dict[str, Any]) -> str:
    values = [figures["families"][family]["iou"] for family in CROPS]
    return " / ".join(f"{value:.2f}" if value is not None else "-" for value in values)


def _per_image(figures: dict[str, Any], key: str) -> str:
    grown = figures[key]
    return f"{grown / 1e6:,.0f}; {grown / figures['count'] / 1024:.1f}"


if __name__ == "__main__":
    main()
