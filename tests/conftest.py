"""The whole suite's configuration: light on purpose, it starts nothing.

The layers (unit/, integration/, e2e/, deploy/) each have a conftest of their own that marks their
tests; the fixtures more than one layer uses are in tests/support/fixtures.py and start only when a
test asks for them (the ONNX export runs for the integration and e2e layers).
"""

from __future__ import annotations

import os
from pathlib import Path

pytest_plugins = ["tests.support.fixtures"]

# Every model load of the suite, in-process or in a started worker, shares one set of exported
# ONNX graphs: the first load exports them (about 30 s), the others reuse them.
os.environ.setdefault("IDIOS_ONNX_DIR", str(Path(__file__).resolve().parent.parent / ".cache" / "onnx"))
