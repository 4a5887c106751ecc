"""Progress reporting that library code can call without knowing who is watching.

Library functions take a `Progress` and call `progress.task(label, total)`; the CLI passes
one that draws rich progress bars on stderr, `secureml.run_lab` in a notebook one that
draws them in the cell's output, tests and `--json` runs pass `NO_PROGRESS`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Task(Protocol):
    def advance(self, steps: int = 1) -> None: ...


class Progress(Protocol):
    def task(self, label: str, total: int | None = None): ...


class _NullTask:
    def advance(self, steps: int = 1) -> None:
        pass


class NullProgress:
    def __enter__(self) -> NullProgress:
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

    def __enter__(self) -> RichProgress:
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


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython with a kernel attached)."""
    import sys

    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None) is not None


class NotebookProgress:
    """Bars in a notebook cell's output: one HTML line per long step, updated in place.

    rich's live display needs ipywidgets in a notebook (rich 15's Live only warns
    'install "ipywidgets"' without it); an updatable display (`display(..., display_id=True)`)
    works in every Jupyter front end without widgets.
    """

    # Redraw at most this often: every redraw is a message to the front end.
    min_interval_s = 0.25

    def __enter__(self) -> NotebookProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None

    @contextmanager
    def task(self, label: str, total: int | None = None) -> Iterator[Task]:
        import html
        import time

        from IPython.display import HTML, display

        started = time.monotonic()

        def render(done: int, mark: str = "…") -> HTML:
            if total:
                done = min(done, total)
                bar = f'<progress value="{done}" max="{total}"></progress> {done}/{total}'
            else:  # no total: an indeterminate bar until the step ends
                bar = '<progress value="1" max="1"></progress>' if mark == "✓" else "<progress></progress>"
            elapsed = f"{time.monotonic() - started:.1f} s"
            return HTML(f"<div><code>{mark} {html.escape(label)}</code> {bar} {elapsed}</div>")

        handle = display(render(0), display_id=True)
        done, drawn = 0, started

        class _Task:
            def advance(self, steps: int = 1) -> None:
                nonlocal done, drawn
                done += steps
                now = time.monotonic()
                if now - drawn >= NotebookProgress.min_interval_s:
                    drawn = now
                    handle.update(render(done))

        try:
            yield _Task()
        except BaseException:
            handle.update(render(done, mark="✗"))
            raise
        handle.update(render(total or 0, mark="✓"))
