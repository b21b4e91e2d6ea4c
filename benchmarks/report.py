"""The benchmark report: a markdown table beside the original Idios's published figures, and PNG plots."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

if TYPE_CHECKING:
    from benchmarks.__main__ import Results
    from benchmarks.scenarios import Latency

MB = 1024 * 1024
# The original Idios's published figures (Xeon Platinum 8370C, 32 GB, no GPU, vit_b32).
ORIGINAL_MEMORY_MB = {"etcd": 379, "Milvus": 2048, "MinIO": 160, "RabbitMQ": 130, "worker": 830, "api": 24}
# A row of the figures table: figure, original, Idios, target, met.
Row = tuple[str, str, str, str, str]


def runtime_table(runtimes: dict[str, dict[str, float]], used: str) -> list[str]:
    """Forward rates of each runtime and quantisation, measured side by side (full profile only)."""
    if not runtimes:
        return []
    return [
        "| runtime, quantisation | batch 1 images/s | batch 16 images/s |",
        "|---|---|---|",
        *(
            f"| {name}{' (used)' if name == used else ''} | {rates['1']:.1f} | {rates['16']:.1f} |"
            for name, rates in runtimes.items()
        ),
        "",
    ]


def forward_table(rate: dict[str, Any]) -> list[str]:
    """Forward rates by batch size, one column per layout of passes, then the stack's own layout
    with preprocessing."""
    layouts = list(rate["forward"])
    own = rate["layout"]
    return [
        "| batch | "
        + " | ".join(f"{layout}{' (used)' if layout == own else ''}" for layout in layouts)
        + " | with preprocessing (used layout) |",
        "|---|" + "---|" * (len(layouts) + 1),
        *(
            f"| {batch} | "
            + " | ".join(f"{rate['forward'][layout][batch]:.1f}" for layout in layouts)
            + f" | {rate['with_preprocessing'].get(batch, 0):.1f} |"
            for batch in rate["forward"][own]
        ),
        "",
    ]


def bracket_table(
    brackets: dict[tuple[str, str], tuple[float, float]], runs: dict[tuple[str, str], float], first: float
) -> list[str]:
    """Each bracketed ingestion run beside the raw rate measured just before and just after it."""
    return [
        "### Ingestion against the raw rate around it",
        "",
        "This host's speed drifts by tens of percent within minutes, so the raw rate is measured again just "
        "before and just after each `idios serve` ingestion run (the fastest of both layouts at batch 8 and 16; "
        "median of 3 measurements in turns, 1 in the quick profile). The ratio divides by the mean of the two.",
        "",
        "| run | raw before | images/s | raw after | ratio | ratio to the first raw rate above |",
        "|---|---|---|---|---|---|",
        *(
            f"| {stack}, {name} | {before:.1f} | {runs[stack, name]:.1f} | {after:.1f} | "
            f"{200 * runs[stack, name] / (before + after):.0f}% | {100 * runs[stack, name] / first:.0f}% |"
            for (stack, name), (before, after) in brackets.items()
        ),
        "",
    ]


def images_per_s(figures: dict[str, Latency]) -> float:
    """Images added per second in a run: add counts one image a request, add_bulk (N urls) N."""
    total = 0.0
    for name, latency in figures.items():
        per_request = int(name.split("(")[1].split()[0]) if name.startswith("add_bulk") else 1
        if name == "add" or name.startswith("add_bulk"):
            ok = 1 - latency.failures / max(1, latency.requests)
            total += latency.rps * ok * per_request
    return total


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _mb(value: int | None) -> str:
    return f"{value / MB:.0f} MB" if value else "-"


def _met(ok: bool | None) -> str:
    return "" if ok is None else ("yes" if ok else "**no**")


def _ms(latency: Latency | None) -> str:
    return f"{latency.p50:.0f} ms" if latency else "-"


def write(results: Results, out: Path, stem: str) -> Path:
    """The report `<stem>.md` and its plots in `out`: one section after another."""
    rate = results.model_rate
    raw = fastest_forward(rate)[0]
    runs = ingestion_runs(results)
    ingest = best_per_stack(results, runs)
    plots = _plots(results, ingest, raw, out, stem)
    lines = [
        *header(results),
        *figures_table(results, runs, ingest),
        *model_rate_section(rate),
        *bracket_table(results.brackets, runs, raw),
        *runtime_table(rate.get("runtimes", {}), rate.get("variant", "")),
        *ingestion_section(results.ingestion),
        *latency_section(results.latency, results.under_ingestion),
        *scale_section(results.scale),
        *memory_section(results.memory, results.disk),
        *plots_section(plots),
        *settings_section(results.settings),
    ]
    path = out / f"{stem}.md"
    path.write_text("\n".join(lines))
    return path


def fastest_forward(rate: dict[str, Any]) -> tuple[float, str, str]:
    """The first, full measurement's best: images/s, layout of passes and batch size."""
    return max(
        (images, layout, batch) for layout, by_batch in rate["forward"].items() for batch, images in by_batch.items()
    )


def ingestion_runs(results: Results) -> dict[tuple[str, str], float]:
    """Images/s of each run: each request name of a stack is its own run (add, then add_bulk)."""
    return {
        (stack, name): images_per_s({name: figures})
        for stack, by_name in results.ingestion.items()
        for name, figures in by_name.items()
    }


def best_per_stack(results: Results, runs: dict[tuple[str, str], float]) -> dict[str, float]:
    """A stack's ingestion figure: its best run."""
    return {stack: max(rate for (s, _), rate in runs.items() if s == stack) for stack in results.ingestion}


def header(results: Results) -> list[str]:
    """Title, the machine and what the original figures are."""
    return [
        f"# Idios benchmark: {results.started} on {results.host} ({results.profile} profile)",
        "",
        f"Machine: {_cpu()}, {_cores()} cores, {_ram_gb():.0f} GB RAM, Python {platform.python_version()}. "
        "Model: vit_b32 with random weights (the real architecture, so the real compute). Images: JPEG photos "
        "of 600-2000 px derived from scikit-image's photographs, served on 127.0.0.3.",
        "",
        "Original figures: the original Idios's published table (Xeon Platinum 8370C, 32 GB, no GPU, vit_b32).",
        "",
    ]


def figures_table(results: Results, runs: dict[tuple[str, str], float], ingest: dict[str, float]) -> list[str]:
    """Each figure beside the original's, with its target and whether it was met."""
    rows = [
        *_ingestion_rows(results, runs, ingest),
        *_search_rows(results),
        *_milvus_rows(results.model_rate, results.scale),
        *_memory_rows(results),
    ]
    return [
        "| figure | original | Idios | target | met |",
        "|---|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows),
        "",
    ]


def _ingestion_rows(results: Results, runs: dict[tuple[str, str], float], ingest: dict[str, float]) -> list[Row]:
    worker_rows = [k for k in results.ingestion if k != "serve"]
    one_worker = ingest.get("1 worker(s)")
    most = worker_rows[-1] if worker_rows else None
    serve_add = images_per_s({k: v for k, v in results.ingestion["serve"].items() if k == "add"})
    # The ratio compares each bracketed run with the raw rate measured just before and just after it.
    around = {run: sum(pair) / 2 for run, pair in results.brackets.items()}
    best_run = max(around, key=lambda run: runs[run] / around[run])
    best, best_raw = runs[best_run], around[best_run]
    return [
        (
            "adding images through the API, 1 worker",
            "2.5 images/s",
            f"{one_worker:.1f} images/s" if one_worker else "-",
            "",
            "",
        ),
        (
            f"adding images, {most}" if most else "adding images, most workers",
            "10 images/s (4 workers)",
            f"{ingest[most]:.1f} images/s" if most else "-",
            "",
            "",
        ),
        ("adding images, `idios serve` (one process, no broker)", "-", f"{serve_add:.1f} images/s", "", ""),
        (
            "ingestion / raw batched model rate (same cores)",
            "42% (7.7 of 18.3)",
            f"{100 * best / best_raw:.0f}% ({best:.1f} of {best_raw:.1f}, the raw rate measured just before "
            f"and after the run; {best_run[0]}, {best_run[1]})",
            "at least 80%",
            _met(best >= 0.8 * best_raw),
        ),
    ]


def _search_rows(results: Results) -> list[Row]:
    lat, under = results.latency, results.under_ingestion
    new_idle, new_busy = lat.get("search by new url"), under.get("search by new url")
    stored_idle, stored_busy = lat.get("search by stored url"), under.get("search by stored url")
    return [
        (
            "similarity search (stored url: lookup + 10-NN)",
            "about 0.5 s",
            _ms(stored_idle),
            "under 20 ms p50",
            _met(stored_idle.p50 < 20 if stored_idle else None),
        ),
        ("similarity search while adding", "about 1.5 s", _ms(stored_busy), "", ""),
        (
            "search by url (original: downloads again)",
            "about 400 ms",
            _ms(stored_idle),
            "under 20 ms p50",
            _met(stored_idle.p50 < 20 if stored_idle else None),
        ),
        (
            "download + embed one new image (search by new url)",
            "about 200 ms",
            _ms(new_idle),
            "under 150 ms p50",
            _met(new_idle.p50 < 150 if new_idle else None),
        ),
        (
            "search by new url while ingestion saturates the worker",
            "-",
            _ms(new_busy),
            f"under {2 * new_idle.p50:.0f} ms (2x idle)" if new_idle else "",
            _met(new_busy.p50 < 2 * new_idle.p50 if new_idle and new_busy else None),
        ),
    ]


def _milvus_rows(rate: dict[str, Any], scale: dict[str, Any]) -> list[Row]:
    return [
        (
            "inserting one image into Milvus",
            "about 4 ms",
            f"{1000 * rate['insert_singles_s'] / rate['insert_count']:.1f} ms" if "insert_singles_s" in rate else "-",
            "",
            "",
        ),
        (
            "1,000 single inserts / one 1,000-row insert",
            "7 s / 100 ms",
            f"{rate['insert_singles_s']:.2f} s / {1000 * rate['insert_batch_s']:.0f} ms"
            if "insert_batch_s" in rate
            else "-",
            "",
            "",
        ),
        (
            f"{rate['embed_count']} single embeddings / one batch of {rate['embed_count']}",
            "9.3 s / 6.7 s (100)",
            f"{rate['embed_singles_s']:.1f} s / {rate['embed_batch_s']:.1f} s",
            "",
            "",
        ),
        (
            f"count at {scale['entries']:,} entries",
            "1 s at 100,000 (enumerates)",
            f"{scale['count_ms']:.0f} ms",
            "",
            "",
        ),
        (
            f"dump ({scale['dump']['entries']:,} entries)",
            "368 entries/s (471,838 in about an hour)",
            f"{scale['dump']['per_s']:,.0f} entries/s",
            "at least 10,000/s",
            _met(scale["dump"]["per_s"] >= 10_000),
        ),
        (
            "restore through the API",
            "about 500 entries/s (2 s per 1,000)",
            f"{scale['restore_per_s']:,.0f} entries/s",
            "at least 5,000/s",
            _met(scale["restore_per_s"] >= 5_000),
        ),
    ]


def _memory_rows(results: Results) -> list[Row]:
    scale = results.scale
    memory_moment = next((k for k in results.memory if "peak while ingesting" in k and "api" in k), None)
    dist_memory = results.memory.get(memory_moment or "", {})
    serve_peak = results.memory.get("serve, peak while ingesting", {})
    scale_memory = next((v for k, v in results.memory.items() if k.endswith("entries")), {})
    worker_rss = max((v for k, v in dist_memory.items() if k.startswith("worker")), default=None)
    return [
        (
            "worker memory (vit_b32), peak while ingesting",
            "830 MB (889 at 471,838)",
            _mb(worker_rss),
            "below 830 MB",
            _met(worker_rss < 830 * MB if worker_rss else None),
        ),
        ("`idios serve` memory (API + worker), peak while ingesting", "-", _mb(serve_peak.get("serve")), "", ""),
        (
            "api memory",
            "24 / 71 MB",
            _mb(dist_memory.get("api")),
            "below 100 MB",
            _met(dist_memory["api"] < 100 * MB if dist_memory.get("api") else None),
        ),
        (
            f"Milvus memory at {scale['entries']:,} entries",
            "2 GB (168,803) / 3 GB (471,838), + etcd 379/126 MB, + MinIO 160/135 MB",
            _mb(scale_memory.get("milvus")) + " (standalone, etcd embedded, no MinIO)",
            "",
            "",
        ),
        ("RabbitMQ memory", "130 MB", _mb(scale_memory.get("rabbitmq") or dist_memory.get("rabbitmq")), "", ""),
        (
            f"Milvus disk at {scale['entries']:,} entries",
            "680 MB + MinIO 1.6 GB (168,803)",
            _mb(next(iter(results.disk.values()), None)),
            "",
            "",
        ),
    ]


def model_rate_section(rate: dict[str, Any]) -> list[str]:
    """The raw batched model rate: the forward table and the stack's own model."""
    raw, raw_layout, raw_batch = fastest_forward(rate)
    return [
        "## Raw model rate (batched forward passes, no I/O, same cores, Milvus idle beside it; forward: median of 5 "
        "measurements taken in turns, 3 in the quick profile)",
        "",
        *forward_table(rate),
        f"The stack's model: vit_b32 on {rate.get('variant', 'torch int8')} (IDIOS_RUNTIME, IDIOS_QUANTIZE), "
        f"{rate['layout']} side by side (IDIOS_MODEL_THREADS / IDIOS_PASS_THREADS). Fastest: {raw:.1f} images/s, "
        f"batch {raw_batch} in {raw_layout}.",
        "",
    ]


def ingestion_section(ingestion: dict[str, dict[str, Latency]]) -> list[str]:
    """Every ingestion run of every stack."""
    return [
        "## Ingestion",
        "",
        "| stack | request | requests | failures | requests/s | p50 ms | p95 ms | p99 ms | images/s |",
        "|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {stack} | {name} | {f.requests} | {f.failures} | {f.rps:.2f} | {f.p50:.0f} | {f.p95:.0f} | "
            f"{f.p99:.0f} | {images_per_s({name: f}):.1f} |"
            for stack, figures in ingestion.items()
            for name, f in figures.items()
        ),
        "",
    ]


def latency_section(idle: dict[str, Latency], under: dict[str, Latency]) -> list[str]:
    """Request latencies of `idios serve`, idle and beside ingestion."""
    return [
        "## Latency (`idios serve`, one user at a time, idle; then beside ingestion users)",
        "",
        "| request | when | requests | failures | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {name} | {when} | {f.requests} | {f.failures} | {f.p50:.0f} | {f.p95:.0f} | {f.p99:.0f} |"
            for when, figures in (("idle", idle), ("while ingesting", under))
            for name, f in figures.items()
        ),
        "",
    ]


def scale_section(scale: dict[str, Any]) -> list[str]:
    """Restore, count, search, pagination and dump at the scale scenario's size."""
    return [
        f"## Scale: {scale['entries']:,} entries",
        "",
        f"- restore through the API: {scale['restore_per_s']:,.0f} entries/s (2,500 rows a request, 2 in flight)",
        f"- count: {scale['count_ms']:.1f} ms p50",
        f"- search by stored url: {scale['search_stored_ms']:.1f} ms p50; "
        f"by new url: {scale['search_new_ms']:.0f} ms p50",
        f"- urls pagination to the end (pages of 10,000): {scale['urls']['entries']:,} urls at "
        f"{scale['urls']['per_s']:,.0f}/s, {scale['urls']['page_ms']:.0f} ms a page",
        f"- full dump with `idios dump` (one streamed response, written to JSON Lines files of 10,000): "
        f"{scale['dump']['entries']:,} entries at {scale['dump']['per_s']:,.0f}/s",
        f"- the same rows paged through `POST /dump` (pages of 10,000, each parsed): "
        f"{scale['dump_pages']['entries']:,} entries at {scale['dump_pages']['per_s']:,.0f}/s, "
        f"{scale['dump_pages']['page_ms']:.0f} ms a page",
        "- Milvus builds each sealed segment's HNSW index in the background, so the figures above ran "
        "beside that work: "
        + "; ".join(
            f"{indexed:,} of {total:,} sealed rows indexed when the {moment} ended"
            for moment, (indexed, total) in scale["indexed"].items()
        ),
        "",
    ]


def memory_section(memory: dict[str, dict[str, int]], disk: dict[str, int]) -> list[str]:
    """Resident memory of each component at each moment, then the disk figures."""
    components = _components(memory)
    return [
        "## Memory (resident set, MB)",
        "",
        "| moment | " + " | ".join(components) + " |",
        "|---|" + "---|" * len(components),
        *(
            f"| {moment} | " + " | ".join(_mb(values.get(c)).removesuffix(" MB") for c in components) + " |"
            for moment, values in memory.items()
        ),
        "",
        *(f"Disk: {what}: {_mb(size)}" for what, size in disk.items()),
        "",
    ]


def plots_section(plots: dict[str, Path]) -> list[str]:
    """Links to the PNG plots, written beside the report."""
    return ["## Plots", "", *(f"![{name}]({path.name})" for name, path in plots.items()), ""]


def settings_section(settings: dict[str, str]) -> list[str]:
    """The IDIOS_* variables the run was started with."""
    return [
        "## Settings",
        "",
        "IDIOS_* variables of the run (the stacks add IDIOS_WEIGHTS=random and per-stack ports, prefixes and "
        "IDIOS_MODEL_THREADS = cores / workers): " + (", ".join(f"`{k}={v}`" for k, v in settings.items()) or "none"),
        "",
    ]


def _components(memory: dict[str, dict[str, int]]) -> list[str]:
    names: list[str] = []
    for values in memory.values():
        names += [n for n in values if n not in names]
    return names


def _cores() -> int:
    import os

    return os.cpu_count() or 1


def _ram_gb() -> float:
    import psutil

    return psutil.virtual_memory().total / 1024**3


def _plots(results: Results, ingest: dict[str, float], raw: float, out: Path, stem: str) -> dict[str, Path]:
    paths = {}

    paths["throughput"] = throughput_plot(ingest, raw, out / f"{stem}-throughput.png")

    figure, axes = plt.subplots(figsize=(8, 4.5))
    groups = [(f"{n}\n(idle)", f) for n, f in results.latency.items()]
    groups += [(f"{n}\n(ingesting)", f) for n, f in results.under_ingestion.items() if not n.startswith("add")]
    x = range(len(groups))
    for offset, (label, attr) in enumerate((("p50", "p50"), ("p95", "p95"), ("p99", "p99"))):
        axes.bar([i + offset * 0.27 for i in x], [getattr(f, attr) for _, f in groups], width=0.27, label=label)
    axes.set_xticks([i + 0.27 for i in x], [g for g, _ in groups], fontsize=7, rotation=30, ha="right")
    axes.set_yscale("log")
    axes.set_ylabel("ms (log)")
    axes.set_title("Latency percentiles, idios serve")
    axes.legend()
    paths["latency"] = _save(figure, out / f"{stem}-latency.png")

    figure, axes = plt.subplots(figsize=(8, 4.5))
    moments = list(results.memory)
    components = _components(results.memory)
    width = 0.8 / max(1, len(moments))
    for i, moment in enumerate(moments):
        values = [results.memory[moment].get(c, 0) / MB for c in components]
        axes.bar([j + i * width for j in range(len(components))], values, width=width, label=moment)
    axes.set_xticks([j + 0.4 - width / 2 for j in range(len(components))], components, fontsize=8)
    axes.scatter(
        [components.index(c) + 0.4 - width / 2 for c in ("worker1", "api") if c in components],
        [ORIGINAL_MEMORY_MB["worker" if c == "worker1" else c] for c in ("worker1", "api") if c in components],
        marker="_",
        s=800,
        color="black",
        label="original (worker 830, api 24)",
        zorder=3,
    )
    axes.set_ylabel("resident MB")
    axes.set_title("Memory per component")
    axes.legend(fontsize=7)
    paths["memory"] = _save(figure, out / f"{stem}-memory.png")
    return paths


def throughput_plot(ingest: dict[str, float], raw: float, path: Path) -> Path:
    """Images/s of each stack against the raw batched model rate."""
    figure, axes = plt.subplots(figsize=(7, 4))
    names = list(ingest)
    axes.bar(names, [ingest[n] for n in names], color="#4C72B0")
    axes.axhline(raw, color="#C44E52", linestyle="--", label=f"raw batched model rate, first measurement ({raw:.1f})")
    axes.axhline(0.8 * raw, color="#DD8452", linestyle=":", label="80% of raw")
    axes.axhline(2.5, color="grey", linestyle="-.", label="original, 1 worker (2.5)")
    axes.set_ylabel("images/s")
    axes.set_title("Ingestion throughput against workers (2 cores in all)")
    axes.legend(fontsize=8)
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
