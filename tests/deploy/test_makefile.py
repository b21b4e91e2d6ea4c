"""The Makefile: `make help` lists the main targets."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_make_help_lists_the_main_targets() -> None:
    result = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    targets = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    assert {"run", "test", "doc"} <= targets, f"`make help` lists {sorted(targets)}"
