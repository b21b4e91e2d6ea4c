"""The benchmark runner's quick profile works end to end and writes its report and plots.

The figures themselves are benchmark results, not test assertions; this checks the runner.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.server, pytest.mark.amqp]


@pytest.mark.timeout(900)
def test_quick_benchmark_writes_report_and_plots(milvus_uri: str, tmp_path: Path, artifacts: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--milvus-uri", milvus_uri, "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,
    )
    (artifacts / "bench-quick.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stderr[-3000:]
    [report] = tmp_path.glob("*-quick.md")
    text = report.read_text()
    (artifacts / report.name).write_text(text)
    ours = {cells[1].strip(): cells[3].strip() for line in text.splitlines() if (cells := line.split("|"))[1:4]}
    for figure in (
        "adding images through the API, 1 worker",
        "ingestion / raw batched model rate",
        "similarity search (stored url",
        "download + embed one new image",
        "search by new url while ingestion",
        "inserting one image into Milvus",
        "dump (",
        "restore through the API",
        "worker memory (vit_b32)",
        "api memory",
    ):
        [value] = [value for name, value in ours.items() if name.startswith(figure)]
        assert re.match(r"[\d,.]+[ %]", value), f"{figure}: {value!r}"
    assert re.search(r"[\d,]+ of [\d,]+ sealed rows indexed when the restore ended", text)
    plots = sorted(tmp_path.glob("*.png"))
    assert [p.name.rsplit("-", 1)[1] for p in plots] == ["latency.png", "memory.png", "throughput.png"]
    for plot in plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
