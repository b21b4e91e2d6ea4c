"""The micro-batcher: batches fill to their size, keys never mix, failures reach their batch only."""

from __future__ import annotations

import asyncio
import time

from idios.batching import MicroBatcher

# MicroBatcher


class Recorder:
    def __init__(self, fail_on: object = None, delay: float = 0.0) -> None:
        self.batches: list[tuple[object, list]] = []
        self.fail_on = fail_on
        self.delay = delay

    async def __call__(self, key: object, items: list) -> list:
        self.batches.append((key, list(items)))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"cannot process {self.fail_on}")
        return [(key, item, "done") for item in items]


async def test_batches_fill_to_max_size_and_answer_each_caller() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_size=4, linger=0.05)
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit("k", i) for i in range(10))), 5)
    assert results == [("k", i, "done") for i in range(10)]
    assert [len(items) for _, items in recorder.batches] == [4, 4, 2]
    assert sorted(i for _, items in recorder.batches for i in items) == list(range(10))


async def test_keys_never_share_a_batch() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_size=3, linger=0.02)
    keys = ["a", "b", "c"]
    submissions = [(keys[i % 3], (keys[i % 3], i)) for i in range(20)]
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(k, item) for k, item in submissions)), 5)
    assert results == [(k, item, "done") for k, item in submissions]
    for key, items in recorder.batches:
        assert items and all(item[0] == key for item in items)
        assert len(items) <= 3
    assert sum(len(items) for _, items in recorder.batches) == 20


async def test_failure_reaches_every_caller_of_its_batch_only() -> None:
    recorder = Recorder(fail_on="bad", delay=0.01)
    batcher = MicroBatcher(recorder, max_size=3, linger=0.02)
    items = ["x1", "bad", "x2", "y1", "y2", "y3"]
    results = await asyncio.wait_for(
        asyncio.gather(*(batcher.submit("k", item) for item in items), return_exceptions=True), 5
    )
    for result in results[:3]:
        assert isinstance(result, ValueError) and "cannot process bad" in str(result)
    assert results[3:] == [("k", item, "done") for item in ("y1", "y2", "y3")]
    # The batcher keeps working afterwards.
    assert await asyncio.wait_for(batcher.submit("k", "later"), 5) == ("k", "later", "done")
    assert await asyncio.wait_for(asyncio.gather(batcher.submit("k", "p"), batcher.submit("j", "q")), 5) == [
        ("k", "p", "done"),
        ("j", "q", "done"),
    ]


async def test_linger_closes_a_partial_batch() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_size=100, linger=0.1)
    started = time.monotonic()
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit("k", i) for i in range(3))), 5)
    elapsed = time.monotonic() - started
    assert results == [("k", i, "done") for i in range(3)]
    assert recorder.batches == [("k", [0, 1, 2])]
    assert 0.08 <= elapsed < 2.0
    # A later item starts a fresh batch with its own linger.
    assert await asyncio.wait_for(batcher.submit("k", 9), 5) == ("k", 9, "done")
    assert recorder.batches[-1] == ("k", [9])
