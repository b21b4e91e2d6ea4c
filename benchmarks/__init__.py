"""Benchmarks: `python -m benchmarks` (or `make bench`) measures a local stack and writes a report."""

import os
import sys
from pathlib import Path

# The benchmark stack reuses the test suite's process and image-server helpers (tests/stack.py,
# tests/imageserver.py, tests/photos.py) rather than keeping a second copy of them.
TESTS_ON_PATH = str(Path(__file__).resolve().parent.parent / "tests")
if TESTS_ON_PATH not in sys.path:
    sys.path.insert(0, TESTS_ON_PATH)

# The exported ONNX graphs are shared with the test suite's (same seeded weights): exported once.
os.environ.setdefault("IDIOS_ONNX_DIR", str(Path(__file__).resolve().parent.parent / ".cache" / "onnx"))
