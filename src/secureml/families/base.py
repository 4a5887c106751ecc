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
from typing import TYPE_CHECKING, Any, Literal, Protocol

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


@dataclass(frozen=True)
class Sample:
    """What a metric is measured over, so that `secureml verify` can give it a tolerance.

    kind "rate": the share of `n` items that something happened to (binomial spread);
    "mean": the average of a continuous value over `n` items (e.g. the images an attack
    fooled); "exact": a count or a constant that must reproduce exactly.
    A metric without a Sample (a score, a count of kept samples) is derived from others.
    """

    kind: Literal["rate", "mean", "exact"]
    n: int | None = None
    items: str = ""  # what the n are: "test images", "fooled images", ...

    @classmethod
    def rate(cls, n: int, items: str) -> Sample:
        return cls("rate", int(n), items)

    @classmethod
    def mean(cls, n: int, items: str) -> Sample:
        return cls("mean", int(n), items)


EXACT = Sample("exact")


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
    # metric name -> what it is measured over (see Sample); derived metrics are absent.
    samples: dict[str, Sample] = field(default_factory=dict)


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


class VictimTools:
    """The part of a trainee's `tools` that every family shares: the victim's recipe, read
    from the inputs folder, and a trainer that follows it.

    tools.train(x, y)       -> a torch model trained exactly as the victim is (on the full set
                               the family handed over: the deployed victim, at once)
    tools.predict(model, x) -> predicted labels, shape (N,)
    tools.num_classes, tools.seed, tools.class_names
    Runs in the (sandboxed) child and reads nothing but `folder`.
    """

    # Shown on the progress bar while `train` runs.
    training_label = "training inside your function"

    def __init__(self, folder: Path) -> None:
        import json

        from secureml.cache import Cache
        from secureml.scenario import VictimConfig

        task = json.loads((folder / "task.json").read_text())
        self.num_classes: int = task["num_classes"]
        self.seed: int = task["seed"]
        self.class_names: list[str] = task["class_names"]
        self._task = task
        self._victim = VictimConfig.model_validate(task["victim"])
        # The victim's weights ship in the inputs as a read-only cache entry.
        self._cache = Cache(folder / "cache", read_only=True)

    def train(self, x, y):
        import numpy as np

        from secureml import models

        return models.train_cached(
            self._cache,
            self._victim,
            np.ascontiguousarray(x, dtype=np.float32),
            np.asarray(y, dtype=np.int64),
            num_classes=self.num_classes,
            seed=self.seed,
            label=self.training_label,
        )

    @staticmethod
    def predict(model, x):
        from secureml import models

        return models.predict(model, x)


def write_victim_inputs(
    folder: Path, *, x, y, victim_config, victim_model, num_classes: int, class_names, seed: int, **task_extra: Any
) -> None:
    """Write what `VictimTools` reads: the training set (`train.safetensors`), the task, and
    the victim's weights as a cache entry, so that `tools.train(x, y)` on the full set is
    instant and gives back exactly the deployed victim."""
    import json

    from safetensors.numpy import save_file

    from secureml import models
    from secureml.cache import Cache

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"x": x, "y": y}, str(folder / "train.safetensors"))
    task = {
        "num_classes": num_classes,
        "class_names": list(class_names),
        "seed": seed,
        "victim": victim_config.model_dump(mode="json"),
        **task_extra,
    }
    (folder / "task.json").write_text(json.dumps(task))
    key = models.victim_key(victim_config, x, y, num_classes=num_classes, seed=seed)
    Cache(folder / "cache").save_tensors("victims", key, models.model_arrays(victim_model))
