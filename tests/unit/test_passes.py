"""Forward passes: bulk priority per thread, the pass layout the settings give, the pass slots."""

from __future__ import annotations

import os
import threading
import time


def test_bulk_priority_lowers_only_the_calling_thread_and_what_it_starts() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from idios import niceness

    def child_niceness() -> int:
        seen: list[int] = []
        thread = threading.Thread(target=lambda: seen.append(niceness.this_thread_niceness()))
        thread.start()
        thread.join()
        return seen[0]

    before = niceness.this_thread_niceness()
    with ThreadPoolExecutor(max_workers=1, initializer=niceness.lower_this_thread) as bulk:
        assert bulk.submit(niceness.this_thread_niceness).result() == niceness.BULK_NICENESS
        assert bulk.submit(child_niceness).result() == niceness.BULK_NICENESS  # a session's pool threads
    assert niceness.this_thread_niceness() == before == child_niceness()


def test_forward_pass_layout_follows_the_settings() -> None:
    from idios.config import Settings
    from idios.models.base import parallel_passes, pass_threads

    def layout(**fields: int) -> tuple[int, int]:
        settings = Settings(**fields)
        return parallel_passes(settings), pass_threads(settings)

    assert layout(model_threads=4) == (4, 1)  # the default: one thread per pass, a pass per core
    assert layout(model_threads=4, pass_threads=2) == (2, 2)
    assert layout(model_threads=4, pass_threads=0) == (1, 4)  # one pass at a time on every core
    assert layout(model_threads=4, pass_threads=3) == (1, 3)
    assert layout(model_threads=2, pass_threads=8) == (1, 2)  # never more threads than cores
    assert layout(pass_threads=0) == (1, os.cpu_count())


def test_pass_slots_run_bulk_batches_side_by_side_and_never_make_a_search_wait() -> None:
    from idios.models.base import PassSlots

    slots = PassSlots(parallel=2)
    inside: list[str] = []
    release = {name: threading.Event() for name in ("bulk1", "bulk2", "bulk3", "search")}

    def run(name: str, interactive: bool) -> threading.Thread:
        def body() -> None:
            with slots.hold(interactive):
                inside.append(name)
                release[name].wait(10)
                inside.remove(name)

        thread = threading.Thread(target=body)
        thread.start()
        return thread

    def settle() -> list[str]:
        time.sleep(0.2)
        return sorted(inside)

    threads = [run("bulk1", False), run("bulk2", False)]
    assert settle() == ["bulk1", "bulk2"]  # two bulk batches at once
    threads.append(run("bulk3", False))
    assert settle() == ["bulk1", "bulk2"]  # the third waits for a free slot
    threads.append(run("search", True))
    assert settle() == ["bulk1", "bulk2", "search"]  # a search starts at once, beside them
    release["bulk1"].set()
    assert settle() == ["bulk2", "search"]  # no bulk batch starts while a search runs
    release["search"].set()
    assert settle() == ["bulk2", "bulk3"]
    for event in release.values():
        event.set()
    for thread in threads:
        thread.join(10)
    assert inside == []
