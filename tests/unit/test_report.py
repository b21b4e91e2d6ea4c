"""The benchmark report rendered from saved results: the published markdown, section by section.

tests/data/bench-results-2026-11-30-vm.json holds the figures of benchmarks/results/2026-11-30-vm.md
(the full-profile run on the 2-core VM) as `benchmarks.__main__.Results` carries them; rendered on the
same machine facts, they must give that file byte for byte.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.__main__ import Results
from benchmarks.scenarios import Latency

ROOT = Path(__file__).resolve().parents[2]

FIXTURE = ROOT / "tests" / "data" / "bench-results-2026-11-30-vm.json"
PUBLISHED = ROOT / "benchmarks" / "results" / "2026-11-30-vm.md"
STEM = "2026-11-30-vm"
HEADINGS = [
    "# Idios benchmark: 2026-11-30T00:05:51 on vm (full profile)",
    "| figure | original | Idios | target | met |",
    "## Raw model rate",
    "### Ingestion against the raw rate around it",
    "| runtime, quantisation |",
    "## Ingestion",
    "## Latency",
    "## Scale: 502,808 entries",
    "## Memory (resident set, MB)",
    "## Plots",
    "## Settings",
]


def load_results(path: Path) -> Results:
    """Results from the JSON form: latencies as objects, bracket keys as (stack, request) pairs."""
    data = json.loads(path.read_text())

    def latencies(by_name: dict[str, dict]) -> dict[str, Latency]:
        return {name: Latency(name=name, **figures) for name, figures in by_name.items()}

    return Results(
        profile=data["profile"],
        host=data["host"],
        started=data["started"],
        settings=data["settings"],
        model_rate=data["model_rate"],
        brackets={(b["stack"], b["request"]): (b["before"], b["after"]) for b in data["brackets"]},
        ingestion={stack: latencies(by_name) for stack, by_name in data["ingestion"].items()},
        latency=latencies(data["latency"]),
        under_ingestion=latencies(data["under_ingestion"]),
        scale={**data["scale"], "indexed": {k: tuple(v) for k, v in data["scale"]["indexed"].items()}},
        memory=data["memory"],
        disk=data["disk"],
    )


@pytest.fixture
def vm(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine facts the published report was written on."""
    monkeypatch.setattr(report, "_cpu", lambda: "AMD EPYC")
    monkeypatch.setattr(report, "_cores", lambda: 2)
    monkeypatch.setattr(report, "_ram_gb", lambda: 24.0)
    monkeypatch.setattr(platform, "python_version", lambda: "3.11.7")


@pytest.mark.usefixtures("vm")
def test_report_is_the_published_one(tmp_path: Path) -> None:
    path = report.write(load_results(FIXTURE), tmp_path, STEM)
    assert path == tmp_path / f"{STEM}.md"
    # IDIOS_TORCH_THREADS, as the published report names it, is IDIOS_MODEL_THREADS since.
    assert path.read_text() == PUBLISHED.read_text().replace("IDIOS_TORCH_THREADS", "IDIOS_MODEL_THREADS")
    for plot in ("throughput", "latency", "memory"):
        assert (tmp_path / f"{STEM}-{plot}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot


@pytest.mark.usefixtures("vm")
def test_every_section_in_order(tmp_path: Path) -> None:
    """Each section function's lines stand in the report as one block, headed as the reader sees it."""
    results = load_results(FIXTURE)
    lines = report.write(results, tmp_path, STEM).read_text().split("\n")
    rate = results.model_rate
    runs = report.ingestion_runs(results)
    plots = {name: tmp_path / f"{STEM}-{name}.png" for name in ("throughput", "latency", "memory")}
    sections = [
        report.header(results),
        report.figures_table(results, runs, report.best_per_stack(results, runs)),
        report.model_rate_section(rate),
        report.bracket_table(results.brackets, runs, report.fastest_forward(rate)[0]),
        report.runtime_table(rate["runtimes"], rate["variant"]),
        report.ingestion_section(results.ingestion),
        report.latency_section(results.latency, results.under_ingestion),
        report.scale_section(results.scale),
        report.memory_section(results.memory, results.disk),
        report.plots_section(plots),
        report.settings_section(results.settings),
    ]
    assert len(sections) == len(HEADINGS)
    at = 0
    for heading, section in zip(HEADINGS, sections, strict=True):
        assert section[0].startswith(heading), (heading, section[0])
        starts = [i for i in range(at, len(lines)) if lines[i : i + len(section)] == section]
        assert starts, f"section {heading!r} is not in the report after line {at}"
        at = starts[0] + len(section)
    assert at == len(lines), "the report has lines no section wrote"
