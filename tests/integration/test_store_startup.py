"""Importing the store, in a fresh process, loads what pymilvus would otherwise load racily."""

from __future__ import annotations

import subprocess
import sys


def test_the_store_loads_scipy_sparse_before_any_thread_can_race_for_it() -> None:
    """pymilvus loads scipy.sparse by hand, without a lock, on its first insert, search or query;
    two threads doing it at once failed a search with 'deadlock detected' (a 503). Importing the
    store does it once, in a fresh process, before any request."""
    code = (
        "import sys\n"
        "import idios.store\n"
        "from pymilvus.client.utils import SciPyHelper\n"
        "assert SciPyHelper._checked and 'scipy.sparse' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
