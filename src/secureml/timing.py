"""Wall-clock time of a run's stages. Only the standard library."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class Stopwatch:
    """Time spent in named stages (a stage entered twice adds up), and since creation."""

    def __init__(self) -> None:
        self.durations: dict[str, float] = {}
        self._started = time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.durations[name] = self.durations.get(name, 0.0) + time.perf_counter() - start

    def total(self) -> dict[str, float]:
        """Each stage's seconds, and "total": the seconds since the stopwatch was made."""
        return {**self.durations, "total": time.perf_counter() - self._started}
