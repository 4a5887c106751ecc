"""What every attack family implements, and the objects that pass between the stages.

A family is a sub-package with a light `config.py` (its pydantic scenario schema) and a
heavy `family.py` that implements `Family`. The runner and the grader only ever talk to a
family through this protocol, so a new family changes neither the CLI nor the grader.

The flow for one submission:

    stage = family.prepare(scenario, split, ctx)        # victim + attack, cached, shared
    family.write_inputs(stage, folder)                   # the mitigation's whole view
    raw = family.run_mitigation(module, folder)          # in the (sandboxed) child: RawResult
    outputs = family.check_outputs(stage, raw)           # parent: strict validation
    evaluation = family.evaluate(stage, outputs, ctx)    # parent: metrics, score, feedback

`run_mitigation` runs in the child and sees only `folder`; everything after it runs in the
parent, on data the mitigation never saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from secureml.progress import NO_PROGRESS, Progress

if TYPE_CHECKING:
    from secureml.cache import Cache
    from secureml.datasets import Split
    from secureml.mitigation import RawResult
    from secureml.scenario import ScenarioBase
    from secureml.scoring import Score


@dataclass
class RunContext:
    """Everything a stage needs from the outside world, passed in explicitly."""

    cache: Cache
    data_root: Path | None = None
    device: str = "cpu"
    progress: Progress = NO_PROGRESS
    # Where pictures go; None means do not draw any (grading workers may skip them).
    out_dir: Path | None = None


@dataclass
class Row:
    """One line of the results table: a condition and its metrics."""

    condition: str
    metrics: dict[str, float]
    note: str = ""


@dataclass
class Evaluation:
    """What the grader measured for one mitigation. Nothing here comes from trainee code."""

    metrics: dict[str, float]
    score: Score
    rows: list[Row]
    feedback: list[str]
    flags: list[str] = field(default_factory=list)
    pictures: dict[str, Path] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class Family(Protocol):
    name: str
    # The trainee's function and a one-line signature, shown by `secureml show`.
    function_name: str

    def prepare(self, scenario: ScenarioBase, split: Split, ctx: RunContext) -> Any: ...

    def write_inputs(self, stage: Any, folder: Path) -> None: ...

    def run_mitigation(self, module: Any, folder: Path) -> RawResult: ...

    def no_mitigation(self, stage: Any) -> RawResult: ...

    def check_outputs(self, stage: Any, raw: RawResult) -> Any: ...

    def evaluate(self, stage: Any, outputs: Any, ctx: RunContext) -> Evaluation: ...
