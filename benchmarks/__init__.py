"""Benchmarks: `python -m benchmarks` (or `make bench`) measures a local stack and writes a report.

Run from the repository root: the benchmark stack reuses the test suite's process and image-server
helpers (tests.support) rather than keeping a second copy of them.
"""

import os
from pathlib import Path

# The exported ONNX graphs are shared with the test suite's (same seeded weights): exported once.
os.environ.setdefault("IDIOS_ONNX_DIR", str(Path(__file__).resolve().parent.parent / ".cache" / "onnx"))
