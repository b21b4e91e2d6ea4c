"""Resident memory of every process of the stack, sampled in the background."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil


def process_rss(pid: int) -> int:
    """Bytes resident in `pid` now; 0 once it has exited."""
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.NoSuchProcess:
        return 0


def find_pid(name: str, cmdline_part: str = "") -> int | None:
    """The first process called `name` (and whose command line holds `cmdline_part`)."""
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if process.info["name"] == name and cmdline_part in cmdline:
            return process.pid
    return None


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


@dataclass
class MemorySampler:
    """Samples each named pid's resident memory every `interval` seconds; keeps the peak and the last."""

    interval: float = 0.5
    pids: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def watch(self, name: str, pid: int | None) -> None:
        if pid is not None:
            with self._lock:
                self.pids[name] = pid

    def forget(self, name: str) -> None:
        with self._lock:
            for values in (self.pids, self.peak, self.last):
                values.pop(name, None)

    def sample(self) -> dict[str, int]:
        with self._lock:
            pids = dict(self.pids)
        now = {name: process_rss(pid) for name, pid in pids.items()}
        with self._lock:
            for name, rss in now.items():
                if rss:
                    self.last[name] = rss
                    self.peak[name] = max(self.peak.get(name, 0), rss)
        return now

    def reset_peaks(self) -> None:
        with self._lock:
            self.peak = dict(self.last)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def wait_for_pid(name: str, cmdline_part: str, timeout: float = 30.0) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = find_pid(name, cmdline_part)
        if pid is not None:
            return pid
        time.sleep(0.5)
    return None


def wait_until_quiet(pid: int | None, *, below: float = 0.25, seconds: float = 5.0, timeout: float = 300.0) -> float:
    """Wait until process `pid` has used under `below` cores over `seconds`; returns the wait in seconds.

    Milvus keeps building indexes and compacting after a bulk load: a measurement started meanwhile
    would count its background work against the stack being measured."""
    start = time.monotonic()
    if pid is None:
        return 0.0
    process = psutil.Process(pid)
    while time.monotonic() - start < timeout:
        if process.cpu_percent(interval=seconds) / 100 < below:
            break
    return time.monotonic() - start
