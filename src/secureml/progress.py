"""Progress reporting that library code can call without knowing who is watching.

Library functions take a `Progress` and call `progress.task(label, total)`; the CLI passes
one that draws rich progress bars on stderr, tests and `--json` runs pass `NO_PROGRESS`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Protocol


class Task(Protocol):
    def advance(self, steps: int = 1) -> None: ...


class Progress(Protocol):
    def task(self, label: str, total: int | None = None): ...


class _NullTask:
    def advance(self, steps: int = 1) -> None:
        pass


class NullProgress:
    def __enter__(self) -> "NullProgress":
        return self

    def __exit__(self, *exc) -> None:
        return None

    @contextmanager
    def task(self, label: str, total: int | None = None) -> Iterator[Task]:
        yield _NullTask()


NO_PROGRESS = NullProgress()


class RichProgress:
    """Bars on stderr, one per long step; a finished step leaves its line and duration."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as RichBars

        self._bars = RichBars(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )

    def __enter__(self) -> "RichProgress":
        self._bars.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._bars.__exit__(*exc)

    @contextmanager
    def task(self, label: str, total: int | None = None) -> Iterator[Task]:
        task_id = self._bars.add_task(label, total=total)
        bars = self._bars

        class _Task:
            def advance(self, steps: int = 1) -> None:
                bars.advance(task_id, steps)

        try:
            yield _Task()
        finally:
            if total is not None:
                bars.update(task_id, completed=total)
            else:
                bars.update(task_id, total=1, completed=1)
