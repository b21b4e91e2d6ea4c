"""The fuzz targets of tests/e2e/fuzz/ in the test suite: the checked-in corpus replayed in-process, and a short
coverage-guided run (atheris) of every target in one process.

`make fuzz` runs each target for minutes and adds what it finds to the corpus.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.fuzz.targets import TARGETS, fuzzed

FUZZ = Path(__file__).resolve().parent / "fuzz"
CORPUS = FUZZ / "corpus"


def corpus_files(name: str) -> list[Path]:
    return sorted(path for path in (CORPUS / name).iterdir() if path.is_file())


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's, about the corrupt images it reads
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_checked_in_corpus_replays_cleanly(name: str) -> None:
    files = corpus_files(name)
    assert files, f"tests/e2e/fuzz/corpus/{name} is empty"
    target = fuzzed(name)
    failures = []
    for path in files:
        try:
            target(path.read_bytes())
        except Exception as exc:  # any escape is a defect, the assertion names the inputs
            failures.append(f"{path.name}: {type(exc).__name__}: {exc}"[:300])
    assert not failures, "\n".join(failures)


def test_short_coverage_guided_run(tmp_path: Path) -> None:
    """Every target from its corpus, a few thousand inputs in all, with a fixed seed (the same inputs on
    every run); libFuzzer stops at the first input that escapes, hangs 10 s or takes the process over 1 GiB."""
    pytest.importorskip("atheris")
    seeds, found = tmp_path / "seeds", tmp_path / "found"
    seeds.mkdir()
    found.mkdir()
    for index, name in enumerate(TARGETS):  # the `all` target's first byte picks the target
        for path in corpus_files(name):
            (seeds / f"{name}-{path.name}").write_bytes(bytes([index]) + path.read_bytes())
    options = ["-seed=1", "-runs=3000", "-timeout=10", "-rss_limit_mb=1024", "-max_len=8192"]
    command = [sys.executable, FUZZ / "fuzz.py", "run", "all", *options, f"-artifact_prefix={tmp_path}/", found, seeds]
    result = subprocess.run(
        # Through a shell that forks: a process started straight from this one begins with this one's peak
        # memory as its own (Linux keeps the peak across fork and exec), and libFuzzer's limit reads that peak:
        # after the rest of the suite, over 1.5 GB.
        ["sh", "-c", '"$0" "$@"; exit $?', *map(str, command)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    broke = [path.name for path in tmp_path.iterdir() if path.is_file()]
    assert result.returncode == 0, f"{broke}\n" + "\n".join(result.stderr.splitlines()[-40:])
    assert "DONE" in result.stderr
