"""Terminal tables, progress and results files. Only rich and the stdlib: this runs on the CLI's fast path."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from secureml.files import write_atomically
from secureml.text import truncate

if TYPE_CHECKING:
    from rich.progress import TaskID

    from secureml.gradebook import GradeRow
    from secureml.grading import GradeReport
    from secureml.runner import RunResult, SeedSummary
    from secureml.scenario import ScenarioBase

# Column order and headers for row metrics; unknown metrics follow in their own order.
COLUMNS = {
    "clean_accuracy": "clean acc",
    "attack_success_rate": "ASR",
    "robust_accuracy": "robust acc",
    "attack_accuracy": "attack acc",
    "utility": "utility",
    "kept": "kept",
    "poison_removed": "poison removed",
    "score": "score",
}


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


# --------------------------------------------------------------------------- trainee text

# What a terminal may act on instead of showing: C0 controls but tab and newline (ESC
# starts colour, title, clear-screen and hyperlink sequences; BEL, BS and CR rewrite the
# line), DEL, C1 controls (U+009B is a one-character CSI on some terminals), and the
# bidirectional marks, overrides and isolates that reorder what is shown ("Trojan Source",
# CVE-2021-42574). Trainee names, error lines and notes may hold any of them.
_TERMINAL_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _visible_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(text: str) -> str:
    """A trainee's string as characters a terminal only shows.

    Control characters and bidi overrides become visible escapes (ESC -> `\\x1b`), so an
    instructor sees that they were there; tabs become spaces. Stored values stay intact:
    apply this only where text is printed.
    """
    return _TERMINAL_UNSAFE.sub(_visible_escape, str(text).replace("\t", " "))


def safe_markup(text: str) -> str:
    """`safe_text`, escaped for rich markup: `[/]` or `[link=...]` print as themselves."""
    return escape(safe_text(text))


def safe_cell(text: str, style: str = "") -> Text:
    """A table cell of trainee text: a rich Text is never parsed as markup."""
    return Text(safe_text(text), style=style)


def json_for_terminal(text: str) -> str:
    """JSON text whose strings cannot act on a terminal. json.dumps escapes C0 controls but
    not DEL, C1 controls or bidi overrides (with ensure_ascii=False); this escapes those too.
    They can only appear inside strings, where \\uXXXX is the same value."""
    return _TERMINAL_UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def scenario_table(scenarios: Sequence[ScenarioBase]) -> Table:
    table = Table(title="secureml scenarios", title_justify="left")
    # The threat ids only: their names make the table too wide for a terminal (`show` and
    # `list --json` give them).
    for header in ("id", "family", "title", "difficulty", "OWASP ML", "ATLAS"):
        table.add_column(header, no_wrap=header in ("id", "OWASP ML", "ATLAS"))
    for scenario in scenarios:
        table.add_row(
            scenario.id, scenario.family, scenario.title, scenario.difficulty, scenario.owasp, scenario.atlas.technique
        )
    return table


def scenario_summary(scenario: ScenarioBase) -> dict[str, Any]:
    return {
        "id": scenario.id,
        "family": scenario.family,
        "title": scenario.title,
        "difficulty": scenario.difficulty,
        "owasp": scenario.owasp,
        "owasp_name": scenario.owasp_name,
        "atlas_technique": scenario.atlas.technique,
        "atlas_technique_name": scenario.atlas.technique_name,
        "atlas_mitigation": scenario.atlas.mitigation,
        "file": str(scenario.source) if scenario.source else None,
    }


def format_metric(name: str, value: float) -> str:
    if name == "kept":
        return f"{int(value)}"
    if name == "score":
        return f"{value:.1f}"
    return f"{value:.3f}"


def metric_columns(rows: Iterable[Mapping[str, float]]) -> list[str]:
    """The metric columns of a results table: known ones in COLUMNS order, then the rest."""
    rows = list(rows)
    names: list[str] = [name for name in COLUMNS if any(name in row for row in rows)]
    names += [n for row in rows for n in row if n not in names and n not in COLUMNS]
    return list(dict.fromkeys(names))


def results_table(result: RunResult) -> Table:
    rows = result.evaluation.rows
    names = metric_columns(row.metrics for row in rows)
    table = Table(title=f"{result.scenario.id}: {result.scenario.title}", title_justify="left")
    table.add_column("condition")
    for name in names:
        table.add_column(COLUMNS.get(name, name.replace("_", " ")), justify="right")
    table.add_column("note", style="dim")
    for row in rows:
        cells = [format_metric(name, row.metrics[name]) if name in row.metrics else "" for name in names]
        style = "bold" if row.condition == "your mitigation" else None
        table.add_row(row.condition, *cells, row.note, style=style)
    return table


def print_result(result: RunResult, out: Console) -> None:
    evaluation = result.evaluation
    out.print(results_table(result))
    score = evaluation.score
    parts = ", ".join(f"{name} {value:.3f}" for name, value in score.parts.items())
    out.print(f"\n[bold]Score: {score.total:.1f} / 100[/bold]  ({score.method}: {parts})")
    if score.capped_by:
        out.print(f"[yellow]Score set to {score.total:.0f} because {score.capped_by}.[/yellow]")
    for flag in evaluation.flags:
        out.print(f"[red]needs review:[/red] {flag}")
    for note in evaluation.feedback:
        out.print(f"  - {note}")
    for name, path in evaluation.pictures.items():
        out.print(f"[dim]picture ({name}): {path}[/dim]")
    timings = ", ".join(f"{name} {value:.1f}s" for name, value in result.timings_s.items())
    out.print(f"[dim]seed {result.scenario.seed}, {result.threads} threads, {timings}[/dim]")


def print_seed_summary(summary: SeedSummary, out: Console, names: Iterable[str] | None = None) -> None:
    table = Table(title=f"over seeds {summary.seeds}", title_justify="left")
    table.add_column("metric")
    table.add_column("mean ± std", justify="right")
    for name in names or summary.mean:
        table.add_row(name, f"{summary.mean[name]:.3f} ± {summary.std[name]:.3f}")
    out.print(table)


def write_json(path: Path, payload: Any) -> Path:
    """Write JSON atomically, so an interrupted run never leaves half a results file."""
    return write_atomically(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")


# --------------------------------------------------------------------------- grading
# Nothing here imports secureml.gradebook or secureml.grading but for type checking, not
# even inside a function: this module is part of the code behind every cached victim
# (secureml.api writes results with it), and the cache key follows imports
# (versions.source_hash). Rows and reports come in as arguments; a status is compared by
# its text (gradebook.Status is a str).


class RichGradeProgress:
    """One bar on stderr: done / total, with running and failed counts."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bars = Progress(
            TextColumn("grading"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[state]}"), TimeElapsedColumn(),
            console=Console(stderr=True), transient=False,
        )
        self._task: TaskID | None = None
        self._failed = 0
        self._done = 0

    def _state(self, running: int) -> str:
        failed = f"[red]{self._failed} failed[/red]" if self._failed else "0 failed"
        return f"done {self._done} · running {running} · {failed}"

    def start(self, total: int, workers: int) -> None:
        # Started here, not around the whole run: rich shows one live display at a time,
        # and the stage's own progress bars come first.
        self._bars.start()
        self._task = self._bars.add_task("grading", total=total, state=self._state(min(workers, total)))

    def stop(self) -> None:
        self._bars.stop()

    def finished(self, row: GradeRow, running: int) -> None:
        self._done += 1
        if row.status != "ok":
            self._failed += 1
        assert self._task is not None, "finished() before start()"
        self._bars.update(self._task, advance=1, state=self._state(running))


_NOTE_CHARS = 48  # fits the table in an 80-column terminal


def rows_table(rows: Iterable[GradeRow], title: str, *, show_graded_at: bool = False) -> Table:
    """A rich table, one line per row: trainee, status, score, time and the first note.

    Names, errors and notes come from trainees: every cell is a rich Text (never parsed as
    markup) with control characters made visible (`safe_text`).
    """
    rows = sorted(rows, key=lambda r: (r.scenario_id, r.trainee))
    table = Table(title=safe_text(title), title_justify="left")
    # Every column but the note keeps its full width; the note is cut to what is left.
    table.add_column("trainee", no_wrap=True,
                     min_width=max([7, *(len(safe_text(r.trainee)) for r in rows)]))
    table.add_column("status", no_wrap=True,
                     min_width=max([6, *(len(r.status) + 9 * r.hidden_variant for r in rows)]))
    table.add_column("score", justify="right", no_wrap=True, min_width=5)
    table.add_column("time (s)", justify="right", no_wrap=True, min_width=8)
    if show_graded_at:
        table.add_column("graded at (UTC)", no_wrap=True, min_width=19)
    table.add_column("note", no_wrap=True, overflow="ellipsis", max_width=_NOTE_CHARS)
    for row in rows:
        status = row.status + (" (hidden)" if row.hidden_variant else "")
        score = "" if row.score is None else f"{row.score:.1f}"
        note = (row.error or (row.feedback[0] if row.feedback else "")).strip().splitlines()
        if row.flags:
            # A flagged score (e.g. suspected gradient masking) is not final until a person looks.
            note = [f"needs review: {row.flags[0]}"]
        cells: list[Text | str] = [safe_cell(row.trainee), Text(status, style="" if row.status == "ok" else "red"),
                                   score, f"{row.timings_s.get('total', 0.0):.1f}"]
        if show_graded_at:
            cells.append(row.graded_at[:19].replace("T", " "))
        text = safe_text(note[0]) if note else ""  # cut after escaping: what the eye sees
        cells.append(Text(truncate(text, _NOTE_CHARS, "…")))
        table.add_row(*cells)
    return table


def report_json(report: GradeReport, *, gradebook_path: Path | None = None,
                exported: Sequence[Path] = ()) -> dict[str, Any]:
    return {
        "scenario": report.scenario_id,
        "hidden_variant": report.hidden_variant,
        "automatic_variant": report.automatic_variant,
        "isolation": report.isolation,
        "gradebook": str(gradebook_path) if gradebook_path else None,
        "counts": report.counts(),
        "graded": [row.to_json() for row in sorted(report.graded, key=lambda r: (r.scenario_id, r.trainee))],
        "skipped": [submission.trainee for submission in report.skipped],
        "notes": list(report.notes),
        "exported": [str(path) for path in exported],
        "wall_s": round(report.wall_s, 3),
    }
