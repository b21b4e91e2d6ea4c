"""Bulk work yields the CPU to interactive work: bulk threads run at a lower priority (nice 10).

Linux schedules threads, and a thread's nice value is its own (inherited by the threads it
starts): a thread that lowers its own priority leaves the rest of the process as it is. A busy
nice-10 thread gets about a tenth of a core against a busy nice-0 one, and the whole core when
nothing else wants it, so ingestion keeps its rate on an idle worker, while a search arriving in
the middle of a batch runs almost as fast as on an idle worker.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

BULK_NICENESS = 10


def lower_this_thread() -> None:
    """Give the calling thread (and the threads it starts from now on) bulk priority."""
    if sys.platform != "linux":  # elsewhere the call would lower the whole process
        return
    with contextlib.suppress(OSError):  # not allowed here: bulk work keeps the same priority as the rest
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BULK_NICENESS)


def this_thread_niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
