"""The one family contract: what every attack family implements, and what it inherits.

A family is a sub-package with a light `config.py` (its pydantic scenario schema, which
declares the trainee's function once: `trainee_call`) and a heavy `family.py` with a
subclass of `Family[Stage, Output]`. The runner and the grader only ever talk to a family
through this class, so a new family changes neither the CLI nor the grader.

The flow for one submission:

    stage = family.prepare(scenario, split, ctx)        # victim + attack, cached, shared
    family.write_inputs(stage, folder)                   # the mitigation's whole view
    raw = family.run_mitigation(module, folder)          # in the (sandboxed) child: RawResult
    outputs = family.check_outputs(stage, raw)           # parent: strict validation
    evaluation = family.evaluate(stage, outputs, ctx)    # parent: metrics, score, feedback

The base owns the trainee call (`run_mitigation`), the inputs folder (`Handover` written,
`Inputs` read, in this module only), the trainee's `Tools`, cache get-or-compute and the
invalid-output error; `ModelFamily` adds the "the trainee returns a model" contract. A
family keeps what is its own: prepare, its handover, what the returned value becomes,
evaluate, feedback and pictures.

`run_mitigation` runs in the child and sees only `folder`; everything after it runs in the
parent, on data the mitigation never saw.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Protocol, TypeVar

from secureml.errors import MitigationError
from secureml.progress import NO_PROGRESS, Progress
from secureml.randomness import derive_seed, global_seeds

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from secureml.cache import Cache
    from secureml.datasets import Split
    from secureml.mitigation import RawResult, TraineeCall
    from secureml.scenario import ScenarioBase, VictimConfig
    from secureml.scoring import Score

    Arrays = Mapping[str, NDArray[Any]]


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
    fooled), with `sd` the items' standard deviation when the family knows it (its standard
    error then bounds the tolerance from below, as the binomial does a rate's);
    "exact": a count or a constant that must reproduce exactly; "report": shown
    by `verify`, never checked, because it is a pick among a few discrete options (which
    budget share made the best copy) and any band wide enough to hold would check nothing.
    A metric without a Sample (a score, a count of kept samples) is derived from others.
    """

    kind: Literal["rate", "mean", "exact", "report"]
    n: int | None = None
    items: str = ""  # what the n are: "test images", "fooled images", ...
    sd: float | None = None  # of a mean: the items' standard deviation

    @classmethod
    def rate(cls, n: int, items: str) -> Sample:
        return cls("rate", int(n), items)

    @classmethod
    def mean(cls, n: int, items: str, sd: float | None = None) -> Sample:
        return cls("mean", int(n), items, None if sd is None else float(sd))

    @classmethod
    def report(cls, why: str) -> Sample:
        return cls("report", None, why)

    def to_json(self) -> dict[str, Any]:
        """As results.json keeps it: the items' SD only where the family reports one."""
        data = {"kind": self.kind, "n": self.n, "items": self.items}
        return data if self.sd is None else {**data, "sd": self.sd}


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
    # Written to results.json under "details" (made JSON-safe there): e.g. the escalation.
    details: dict[str, Any] = field(default_factory=dict)
    # metric name -> what it is measured over (see Sample); derived metrics are absent.
    samples: dict[str, Sample] = field(default_factory=dict)


def invalid(problem: str) -> MitigationError:
    """What the trainee returned cannot be used: the gradebook status `invalid-result`."""
    return MitigationError(problem, status="invalid-result")


# --------------------------------------------------------------------------- the inputs folder
#
#   task.json            what every family writes (Handover) plus the family's own `extras`
#   victim.safetensors   the deployed victim's weights
#   train.safetensors    x, y: the training set, when the family hands it over
#   NAME.safetensors     the family's own arrays (e.g. queries, validation images)

TASK_FILE = "task.json"
VICTIM_FILE = "victim.safetensors"
TRAINING_SET = "train"
LAYOUT = "secureml-inputs/1"


@dataclass(frozen=True)
class Handover:
    """What a family hands the trainee's function (written by `Family.write_inputs`).

    training_set: (x, y), the data the victim was trained on; `tools.train` on exactly it
    returns the victim at once. arrays: the family's own files, name -> tensors.
    extras: the family's own task fields (JSON), read back as `Inputs.extras`.
    """

    victim: Any
    victim_config: VictimConfig
    num_classes: int
    class_names: list[str]
    input_shape: tuple[int, ...]
    seed: int
    training_set: tuple[NDArray[Any], NDArray[Any]] | None = None
    arrays: Mapping[str, Arrays] = field(default_factory=dict)
    extras: Mapping[str, Any] = field(default_factory=dict)

    def write(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        from secureml import models

        folder.mkdir(parents=True, exist_ok=True)
        victim_key = None
        if self.training_set is not None:
            x, y = self.training_set
            save_file({"x": x, "y": y}, str(folder / f"{TRAINING_SET}.safetensors"))
            victim_key = models.recipe_key(self.victim_config, x, y, num_classes=self.num_classes, seed=self.seed)
        save_file(models.model_arrays(self.victim), str(folder / VICTIM_FILE))
        for name, arrays in self.arrays.items():
            save_file(dict(arrays), str(folder / f"{name}.safetensors"))
        task = {
            "layout": LAYOUT,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "input_shape": list(self.input_shape),
            "seed": self.seed,
            "victim": self.victim_config.model_dump(mode="json"),
            "victim_key": victim_key,
            "extras": dict(self.extras),
        }
        (folder / TASK_FILE).write_text(json.dumps(task))


@dataclass(frozen=True)
class Inputs:
    """The inputs folder as the child reads it: the one reader of `task.json`."""

    folder: Path
    num_classes: int
    class_names: list[str]
    input_shape: tuple[int, ...]
    seed: int
    victim_config: VictimConfig
    # models.recipe_key of the victim's recipe on the handed-over training set (None: none handed).
    victim_key: str | None
    extras: dict[str, Any]

    @classmethod
    def read(cls, folder: Path) -> Inputs:
        from secureml.scenario import VictimConfig

        task = json.loads((folder / TASK_FILE).read_text())
        return cls(
            folder=folder,
            num_classes=int(task["num_classes"]),
            class_names=list(task["class_names"]),
            input_shape=tuple(task["input_shape"]),
            seed=int(task["seed"]),
            victim_config=VictimConfig.model_validate(task["victim"]),
            victim_key=task["victim_key"],
            extras=dict(task["extras"]),
        )

    def arrays(self, name: str) -> dict[str, NDArray[Any]]:
        from safetensors.numpy import load_file

        loaded: dict[str, NDArray[Any]] = load_file(str(self.folder / f"{name}.safetensors"))
        return loaded

    def training_set(self) -> tuple[NDArray[Any], NDArray[Any]]:
        arrays = self.arrays(TRAINING_SET)
        return arrays["x"], arrays["y"]

    def victim(self) -> Any:
        """A fresh copy of the deployed victim, in eval mode."""
        from secureml import models

        model = models.build(self.victim_config.arch, self.input_shape, self.num_classes, self.seed)
        models.load_arrays(model, self.arrays(VICTIM_FILE.removesuffix(".safetensors")))
        return model.eval()


# --------------------------------------------------------------------------- the trainee's tools

# Old names of the tools, said once per process each (a trainee's loop may call them
# thousands of times). A FutureWarning, because it is meant for end users: Python shows
# it by default, where a DeprecationWarning in a trainee's module would stay hidden.
_ALREADY_SAID: set[str] = set()


class RenamedToolWarning(FutureWarning):
    """A trainee's file uses an old name of a tool; it still works."""


def warn_renamed(old: str, new: str) -> None:
    if old in _ALREADY_SAID:
        return
    _ALREADY_SAID.add(old)
    import warnings

    warnings.warn(
        RenamedToolWarning(f"{old} is now {new}; the old name still works (said once)"), stacklevel=3
    )


class Tools:
    """What a trainee's function gets as `tools`: the same names mean the same in every lab.

    tools.build(seed=None)       -> a fresh model of the victim's architecture (scenario seed)
    tools.victim()               -> a copy of the deployed, undefended victim
    tools.train(x, y)            -> a model trained exactly as the victim was (on the training
                                    set handed over, that is the victim itself, at once)
    tools.optimizer(model, learning_rate=None) -> the victim's optimiser over `model`
    tools.recipe                 -> the victim's recipe; also tools.arch, tools.epochs,
                                    tools.batch_size, tools.learning_rate, tools.weight_decay,
                                    tools.optimizer_name
    tools.predict(model, x)      -> predicted labels (N,); tools.accuracy(model, x, y)
    tools.num_classes, tools.class_names, tools.input_shape, tools.seed
    A family adds its own extras. Runs in the (sandboxed) child and reads only its folder.
    """

    # Old name -> new name: each old name still works and says so once.
    renamed: ClassVar[dict[str, str]] = {}

    def __init__(self, inputs: Inputs) -> None:
        self._inputs = inputs
        self.num_classes = inputs.num_classes
        self.class_names = inputs.class_names
        self.input_shape = inputs.input_shape
        self.seed = inputs.seed
        self.recipe = inputs.victim_config
        self.arch = self.recipe.arch
        self.epochs = self.recipe.epochs
        self.batch_size = self.recipe.batch_size
        self.learning_rate = self.recipe.learning_rate
        self.weight_decay = self.recipe.weight_decay
        self.optimizer_name = self.recipe.optimizer

    def __getattr__(self, name: str) -> Any:
        # Only reached for names the object does not have: the old ones.
        renamed = type(self).renamed
        if name in renamed:
            warn_renamed(f"tools.{name}", f"tools.{renamed[name]}")
            return getattr(self, renamed[name])
        raise AttributeError(f"tools has no '{name}'; see the lab's README or `secureml show ID`")

    def build(self, seed: int | None = None) -> Any:
        from secureml import models

        return models.build(self.arch, self.input_shape, self.num_classes, self.seed if seed is None else seed)

    def victim(self) -> Any:
        return self._inputs.victim()

    def train(self, x: Any, y: Any) -> Any:
        import numpy as np

        from secureml import models

        x = np.ascontiguousarray(x, dtype=np.float32)
        y = np.asarray(y, dtype=np.int64)
        key = models.recipe_key(self.recipe, x, y, num_classes=self.num_classes, seed=self.seed)
        if key == self._inputs.victim_key:
            return self.victim()
        return models.train(self.recipe, x, y, num_classes=self.num_classes, seed=self.seed)

    def optimizer(self, model: Any, learning_rate: float | None = None) -> Any:
        from secureml import models

        return models.make_optimizer(model, self.recipe, learning_rate=learning_rate)

    @staticmethod
    def predict(model: Any, x: Any) -> Any:
        from secureml import models

        return models.predict(model, x)

    @staticmethod
    def accuracy(model: Any, x: Any, y: Any) -> float:
        from secureml import models

        return models.accuracy(model, x, y)


# --------------------------------------------------------------------------- the family

Stage = TypeVar("Stage")
Output = TypeVar("Output")
T = TypeVar("T")


@dataclass(frozen=True)
class Artefact:
    """What the cache stores for one computed thing: tensors, and optionally a JSON summary."""

    arrays: Mapping[str, Any]
    summary: Any = None


class Family(ABC, Generic[Stage, Output]):
    """One attack family: a stage shared by all trainees, the trainee's call, the grader.

    Subclasses set `name` and `schema` (whose `trainee_call` says what the trainee writes)
    and, when they add extras, `tools`.
    """

    name: ClassVar[str]
    schema: ClassVar[type[ScenarioBase]]
    tools: ClassVar[type[Tools]] = Tools

    @property
    def call(self) -> TraineeCall:
        return self.schema.trainee_call

    @property
    def function_name(self) -> str:
        return self.call.name

    # ------------------------------------------------------------------ the family's own

    @abstractmethod
    def prepare(self, scenario: Any, split: Split, ctx: RunContext) -> Stage:
        """The victim and the attack, shared by every trainee (cached)."""

    @abstractmethod
    def handover(self, stage: Stage) -> Handover:
        """What the trainee's function may see."""

    @abstractmethod
    def encode(self, returned: Any, inputs: Inputs) -> RawResult:
        """In the child: what the trainee's function returned, as raw outputs."""

    @abstractmethod
    def no_mitigation(self, stage: Stage) -> RawResult:
        """The raw outputs of doing nothing (the undefended condition)."""

    @abstractmethod
    def check_outputs(self, stage: Stage, raw: RawResult) -> Output:
        """In the parent: validate raw outputs strictly; raise `invalid(...)`."""

    @abstractmethod
    def evaluate(self, stage: Stage, outputs: Output, ctx: RunContext) -> Evaluation:
        """In the parent: metrics, score, feedback, pictures."""

    # ------------------------------------------------------------------ owned by the base

    def write_inputs(self, stage: Stage, folder: Path) -> None:
        self.handover(stage).write(folder)

    def run_mitigation(self, module: Any, folder: Path) -> RawResult:
        """In the child: call the trainee's function, as its schema declares, and encode."""
        inputs = Inputs.read(folder)
        tools = self.tools(inputs)
        arguments: dict[str, Any] = {"tools": tools}
        if {"x", "y"} & set(self.call.parameters):
            x, y = inputs.training_set()
            arguments.update(x=x.copy(), y=y.copy())
        if "model" in self.call.parameters:
            arguments["model"] = tools.victim()
        function = getattr(module, self.call.name)
        # Unseeded draws in the trainee's code (a layer built from torch's global generator,
        # np.random.choice) take the scenario's seed, not whatever ran before in this process:
        # in-process runs (`run`, `verify`) then agree with the grader's fresh children.
        with global_seeds(derive_seed(inputs.seed, "mitigation")):
            return self.encode(function(*[arguments[name] for name in self.call.parameters]), inputs)

    @staticmethod
    def cached(
        cache: Cache,
        kind: str,
        key: str,
        compute: Callable[[], T],
        *,
        store: Callable[[T], Artefact],
        restore: Callable[[Artefact], T],
        summary: bool = False,
    ) -> T:
        """`compute()`, or what an earlier `compute()` stored under `kind`/`key`.

        store/restore turn the value into tensors (and, with `summary`, a JSON summary) and back.
        """
        arrays = cache.load_tensors(kind, key)
        stored = cache.load_json(kind, key) if summary and arrays is not None else None
        if arrays is not None and (stored is not None or not summary):
            return restore(Artefact(arrays, stored))
        value = compute()
        artefact = store(value)
        cache.save_tensors(kind, key, artefact.arrays)
        if summary:
            cache.save_json(kind, key, artefact.summary)
        return value

    @classmethod
    def cached_arrays(
        cls, cache: Cache, kind: str, key: str, compute: Callable[[], dict[str, NDArray[Any]]]
    ) -> dict[str, NDArray[Any]]:
        """`cached` for a value that is already a dict of tensors."""
        return cls.cached(cache, kind, key, compute, store=Artefact, restore=lambda stored: dict(stored.arrays))


class VictimStage(Protocol):
    """A stage with the deployed victim, its scenario and its data."""

    @property
    def victim(self) -> Any: ...

    @property
    def scenario(self) -> Any: ...

    @property
    def split(self) -> Split: ...


VStage = TypeVar("VStage", bound=VictimStage)


class ModelFamily(Family[VStage, Any]):
    """A family whose trainee returns a model of the victim's architecture.

    Only its weights leave the child; the parent loads them into a fresh model.
    """

    def encode(self, returned: Any, inputs: Inputs) -> RawResult:
        from torch import nn

        from secureml import models
        from secureml.mitigation import RawResult

        if not isinstance(returned, nn.Module):
            raise TypeError(
                f"{self.call.name} must return a torch model (tools.build() makes one), got {type(returned).__name__}"
            )
        return RawResult(models.model_arrays(returned))

    def no_mitigation(self, stage: VStage) -> RawResult:
        from secureml import models
        from secureml.mitigation import RawResult

        return RawResult(models.model_arrays(stage.victim))

    def check_outputs(self, stage: VStage, raw: RawResult) -> Any:
        """Weights that fit the victim's architecture exactly, float32, in a fresh model."""
        from secureml import models

        arch = stage.scenario.victim.arch
        if raw.config:
            raise invalid("expected only the model's weights, got a config as well")
        for name, array in raw.arrays.items():
            if array.dtype.name != "float32":
                raise invalid(f"weight '{name}' is {array.dtype}; the victim's weights are float32")
        model = models.build(arch, stage.split.shape, stage.split.num_classes, 0)
        try:
            models.load_arrays(model, raw.arrays)
        except ValueError as error:
            raise invalid(f"the returned model is not the victim's architecture '{arch}': {error}") from error
        return model.eval()


def handover_of(stage: VictimStage, **kwargs: Any) -> Handover:
    """The handover every family starts from: the victim, its recipe and the dataset's shape."""
    split = stage.split
    return Handover(
        victim=stage.victim,
        victim_config=stage.scenario.victim,
        num_classes=split.num_classes,
        class_names=list(split.class_names),
        input_shape=tuple(split.shape),
        seed=stage.scenario.seed,
        **kwargs,
    )

