"""What a copydetect restore request costs the API before its job is sent: the job carries the rows'
keypoints as sent (base64), so a small body makes a small job, whatever the rows hold."""

from __future__ import annotations

import base64
import tracemalloc

import numpy as np
import orjson

from idios import specs
from idios.api.routes import _restore_args
from idios.config import Settings
from idios.keypoint_data import Keypoints, pack
from idios.protocol import Job
from idios.transport.queues import encode_job

from tests.support.stacks import IMAGE_HOST


def test_a_small_restore_request_makes_a_small_job() -> None:
    settings = Settings(_env_file=None)
    no_corners = Keypoints(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8), 400, 300)
    embedding = base64.b64encode(pack(no_corners)).decode()
    rows = [{"url": f"http://{IMAGE_HOST}/plain/{i:05d}.png", "embedding": embedding} for i in range(10_000)]
    body = orjson.dumps(rows)
    assert len(body) < 1024 * 1024

    tracemalloc.start()
    try:
        args = _restore_args(specs.COPYDETECT, body, settings.max_restore_rows)
        job = len(encode_job(Job.of(args, "copydetect", 600.0).to_wire()))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert job <= settings.max_message_bytes, f"a {len(body):,}-byte request makes a {job:,}-byte job"
    assert peak < 64 * 1024 * 1024, f"a {len(body):,}-byte request took {peak / 2**20:.0f} MiB to turn into a job"
