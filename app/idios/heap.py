"""The C heap of a worker process: fewer glibc arenas, and freed memory handed back.

glibc gives each thread that allocates at the same time as another its own arena, up to eight
per core, and keeps freed memory in them. A worker's decode, forward-pass and store threads each
allocate a batch's buffers, so the peaks of every arena add up in the resident set: 16 concurrent
adds grew `idios serve` by about 220 MB with the default and by about 100 MB with two arenas, at the
same speed. Both calls are no-ops without glibc (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger("idios.heap")

M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h
ARENAS = 2


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:  # pragma: no cover - no C library to talk to
        return None


def limit_arenas(count: int = ARENAS) -> None:
    """At most `count` malloc arenas from now on (what MALLOC_ARENA_MAX sets before a process starts)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt") and not libc.mallopt(M_ARENA_MAX, count):
        log.debug("mallopt(M_ARENA_MAX) refused")


def release_memory() -> None:
    """Collect garbage, then hand freed heap pages back to the kernel (`malloc_trim(0)`): after the
    float32 weights are dropped, or a checkpoint's state dict freed, hundreds of MB would otherwise
    stay resident until reused."""
    gc.collect()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
