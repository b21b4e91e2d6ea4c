"""What every embedding model offers; concrete models live beside this file.

Each model's static description is its spec (`idios.specs`), which the API uses without
importing this package; model modules import torch and friends lazily (inside `load`).
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from idios.errors import Invalid
from idios.keypoint_data import Match
from idios.specs import ModelSpec

if TYPE_CHECKING:
    from PIL.Image import Image

    from idios.config import Settings


class PassSlots:
    """Forward passes that run at once: up to `parallel` bulk batches, and as many interactive passes.

    An interactive pass never waits for bulk batches: it runs beside those in progress,
    its thread at normal priority against their bulk priority (`idios.niceness`), instead of
    waiting up to a whole batch's time. A bulk batch does not start while an interactive pass
    runs or waits.
    """

    def __init__(self, parallel: int = 1) -> None:
        self.parallel = max(1, parallel)
        self._condition = threading.Condition()
        self._running = {True: 0, False: 0}  # by urgency
        self._interactive = 0  # interactive passes waiting or running

    @contextmanager
    def hold(self, interactive: bool = False) -> Iterator[None]:
        with self._condition:
            self._interactive += interactive
            while self._running[interactive] >= self.parallel or (not interactive and self._interactive):
                self._condition.wait()
            self._running[interactive] += 1
        try:
            yield
        finally:
            with self._condition:
                self._running[interactive] -= 1
                self._interactive -= interactive
                self._condition.notify_all()


def model_cores(settings: Settings) -> int:
    """Cores the forward passes use in all (IDIOS_MODEL_THREADS, for either runtime); 0 means every core."""
    return settings.model_threads or os.cpu_count() or 1


def pass_threads(settings: Settings) -> int:
    """Threads of each forward pass (IDIOS_PASS_THREADS); 0 means all of `model_cores`."""
    return min(settings.pass_threads or model_cores(settings), model_cores(settings))


def parallel_passes(settings: Settings) -> int:
    """How many bulk batches run their forward passes side by side."""
    return max(1, model_cores(settings) // pass_threads(settings))


class ModelUnavailable(Exception):
    """The model cannot be loaded here (missing weights or packages); the message says why."""


@dataclass(frozen=True)
class Comparison:
    """How alike two images are (0-100) and, for a copy detection model, where they match."""

    similarity: float
    match: Match | None = None


class EmbeddingModel(ABC):
    """A loaded model that turns images (and maybe text) into stored-form vectors, and queries."""

    spec: ClassVar[ModelSpec]
    # The shortest side of an image the model takes; None: IDIOS_MIN_IMAGE_SIDE.
    smallest_side: ClassVar[int | None] = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pass_slots = PassSlots(parallel_passes(settings))

    @abstractmethod
    def load(self) -> None:
        """Build the network and its weights; raise ModelUnavailable with the reason when impossible."""

    @abstractmethod
    def embed_images(self, images: list[Image], interactive: bool = False) -> list[Any]:
        """One stored-form vector per image, computed in one batch; `interactive` for a search or compare."""

    def embed_texts(self, texts: list[str]) -> list[Any]:
        raise Invalid(f"model {self.spec.name} has no text tower; search it by image", type="no_text_tower")

    def decode_side(self, query: bool) -> int | None:
        """The shorter side a large JPEG may be decoded down to for this model (a query's or a stored
        image's), where it needs more than IDIOS_DECODE_MIN_SIDE; None: that setting serves."""
        return None

    def embed_queries(self, images: list[Image]) -> list[Any]:
        """What a search or a compare uses of each image: its stored-form vector, for most models."""
        return self.embed_images(images, interactive=True)

    def stored_query(self, stored: Any) -> Any:
        """A stored vector as a query (a search or compare by a stored url)."""
        return stored

    def compare(self, first: Any, second: Any) -> Comparison:
        """Two queries (`embed_queries`, `stored_query`) compared."""
        return Comparison(self.spec.compare(first, second))
