"""The notebook API: `secureml.run_lab(...)` and `secureml.list_labs()`.

The same code path as the command line: `run_lab` loads the scenario as `secureml run`
does, hands the mitigation (a function object, a file, or None) to `runner.run` (the same
validation, result channel, evaluation and scoring) and writes the same `results.json`.

    import secureml

    def sanitize(x, y, tools):
        ...

    result = secureml.run_lab("poisoning-01", sanitize)
    result            # in Jupyter: the results table, the feedback and the pictures
    result.score, result.metrics, result.to_json()

Importing this module imports no torch; `run_lab` does, when it runs.
"""

from __future__ import annotations

import base64
import copy
import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def list_labs() -> list[dict[str, Any]]:
    """Every scenario: what `secureml list --json` prints."""
    from secureml import loader, report

    return [report.scenario_summary(each) for each in loader.load_all()]


def run_lab(
    scenario_id_or_path: str | Path,
    mitigation: Callable | str | Path | None = None,
    *,
    seed: int | None = None,
    out_dir: str | Path | None = None,
) -> LabResult:
    """Run a lab as `secureml run` does and return what it measured.

    mitigation: your function (e.g. the `sanitize` defined in a cell; it must have the
        name the scenario calls), the path of a mitigation file, or None for no mitigation.
    seed: override the scenario's seed.
    out_dir: where results.json and pictures go [default: out/ID].
    Bad input raises a secureml error whose message says what to fix; Jupyter shows it
    without a traceback.
    """
    from secureml import loader, report, runner
    from secureml.cache import Cache
    from secureml.families.base import RunContext
    from secureml.progress import NotebookProgress, RichProgress, in_notebook

    loaded = loader.load(scenario_id_or_path)
    if seed is not None:
        loaded = loaded.with_seed(seed)
    folder = Path(out_dir) if out_dir is not None else Path("out") / loaded.id
    progress = NotebookProgress() if in_notebook() else RichProgress()
    ctx = RunContext(cache=Cache(), out_dir=folder, progress=progress)
    with progress:
        # runner.run takes a str path too (load_mitigation reads it), though its annotation says Path.
        result = runner.run(loaded, mitigation=mitigation, ctx=ctx)  # type: ignore[arg-type]
    payload = result.to_json()
    path = report.write_json(folder / "results.json", payload)
    return LabResult(payload, path)


@dataclass(frozen=True)
class LabResult:
    """One run of a lab. `to_json()` is exactly what its results.json holds."""

    results: dict[str, Any]
    path: Path

    @property
    def scenario(self) -> str:
        return self.results["scenario"]

    @property
    def score(self) -> float:
        return self.results["score"]

    @property
    def parts(self) -> dict[str, float]:
        return dict(self.results["score_parts"])

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.results["metrics"])

    @property
    def feedback(self) -> list[str]:
        return list(self.results["feedback"])

    @property
    def flags(self) -> list[str]:
        return list(self.results["flags"])

    @property
    def pictures(self) -> dict[str, Path]:
        return {name: Path(path) for name, path in self.results["pictures"].items()}

    def to_json(self) -> dict[str, Any]:
        return copy.deepcopy(self.results)

    def __repr__(self) -> str:
        return f"<LabResult {self.scenario}: score {self.score:.1f} / 100, results in {self.path}>"

    def _repr_html_(self) -> str:
        """The results table, the score, flags, feedback and pictures; every string escaped
        (feedback and the mitigation's label may quote trainee text)."""
        from secureml import report

        e = html.escape
        results = self.results
        rows = results["rows"]
        names = report.metric_columns({k: v for k, v in row.items() if k not in ("condition", "note")} for row in rows)
        head = "".join(f"<th>{e(report.COLUMNS.get(name, name.replace('_', ' ')))}</th>" for name in names)
        body = []
        for row in rows:
            cells = "".join(
                f"<td>{e(report.format_metric(name, row[name]))}</td>" if name in row else "<td></td>"
                for name in names
            )
            weight = ' style="font-weight:bold"' if row["condition"] == "your mitigation" else ""
            body.append(f"<tr{weight}><td>{e(row['condition'])}</td>{cells}<td>{e(row['note'])}</td></tr>")
        parts = ", ".join(f"{e(name)} {value:.3f}" for name, value in results["score_parts"].items())
        out = [
            f"<h4>{e(results['scenario'])}: {e(results['title'])}</h4>",
            f'<table><tr><th>condition</th>{head}<th>note</th></tr>{"".join(body)}</table>',
            f"<p><b>Score: {self.score:.1f} / 100</b> ({e(results['score_method'])}: {parts})</p>",
        ]
        if results["score_capped_by"]:
            out.append(f"<p>Score set to {self.score:.0f} because {e(results['score_capped_by'])}.</p>")
        out += [f'<p style="color:#b00">needs review: {e(flag)}</p>' for flag in self.flags]
        if self.feedback:
            out.append("<ul>" + "".join(f"<li>{e(note)}</li>" for note in self.feedback) + "</ul>")
        for name, path in self.pictures.items():
            out.append(f"<p>{e(name)}</p>{_inline_png(path)}")
        out.append(f"<p><small>seed {results['seed']}, results in {e(str(self.path))}</small></p>")
        return "\n".join(out)


def _inline_png(path: Path) -> str:
    """An <img> carrying the picture itself, so the notebook shows it wherever it is opened."""
    try:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return f"<p>(picture missing: {html.escape(str(path))})</p>"
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%">'
