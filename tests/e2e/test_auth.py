"""`idios api` refuses to start with guest/guest on a remote broker."""

from __future__ import annotations


def test_api_refuses_to_start_with_guest_on_a_remote_broker() -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "IDIOS_AMQP_URL": "amqp://guest:guest@192.0.2.10:5672/"}
    result = subprocess.run([sys.executable, "-m", "idios", "api"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "guest/guest" in result.stderr
