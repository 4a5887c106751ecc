"""The inversion families: an attacker reconstructs what each class looks like from a model.

`inversion` (white-box). The trainee's `train(x, y, tools)` returns a model of the victim's
architecture. The child sends back its weights only; the grader loads them into a fresh
model and runs ART's MIFace for every class itself.

`inversion-api` (query-only). The trainee's `protect(model, tools)` returns the prediction
API. The child calls it on one fixed batch of queries the grader chose and sends back the
output vectors only; the grader trains the inversion network on them in its own process.
Trainee code never runs in the grader's process, and it cannot treat the attacker
differently from ordinary users: the batch is the attacker's auxiliary images and the
utility test images, from one distribution, shuffled together, without labels, and the
outputs that decide utility are the very outputs the attacker inverts.

Leakage is measured the same way in both: an independent evaluation classifier, trained
only on held-out images, classifies every reconstruction (attack accuracy); MSE and SSIM
compare each reconstruction with its class's mean private training image.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secureml import models
from secureml.cache import content_key
from secureml.errors import MitigationError
from secureml.families.base import EXACT, Evaluation, RunContext, Row, Sample, VictimTools, write_victim_inputs
from secureml.families.inversion.attacks import (
    Reconstructions,
    invert_outputs,
    run_miface,
    train_inversion_net,
)
from secureml.families.inversion.leakage import Leakage, class_means, measure
from secureml.mitigation import RawResult, model_from_weights, weights_result
from secureml.randomness import derive_seed, generator
from secureml.scoring import Score, inversion_calibrated
from secureml.versions import software_key

if TYPE_CHECKING:
    import numpy as np

    from secureml.datasets import Split
    from secureml.families.inversion.config import InversionApiScenario, InversionScenario


# The grid is three images wide (5.3 in at 110 dpi, 583 px), and a 10 pt title line
# averages 7.6 px a character (measured with matplotlib 3.11): 76 characters fill it
# edge to edge, so lines wrap at 64 to keep a margin.
TITLE_CHARACTERS = 64


@dataclass(frozen=True)
class Holdout:
    """The held-out images, shared out: evaluator, attacker (auxiliary), utility test."""

    x_evaluator: np.ndarray
    y_evaluator: np.ndarray
    x_auxiliary: np.ndarray
    y_auxiliary: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class Outcome:
    """What one model (or API) gives away, and what it is still good for."""

    utility: float
    leakage: Leakage
    reconstructions: Reconstructions


@dataclass
class InversionStage:
    scenario: Any
    split: Split
    holdout: Holdout
    victim: Any
    evaluator: Any
    means: np.ndarray  # (classes, C, H, W) mean private training image per class
    key: str
    none: Outcome | None = None
    floor: float = 0.0  # the attack accuracy the score is calibrated against
    floor_outcome: Outcome | None = None
    # inversion-api only: the query batch and which rows are whose (the grader's secret).
    queries: np.ndarray | None = None
    auxiliary_rows: np.ndarray | None = None
    test_rows: np.ndarray | None = None
    # Outcomes already computed in this process, by content key (also without a disk cache).
    memo: dict[str, Outcome] = field(default_factory=dict)


def _invalid(problem: str) -> MitigationError:
    return MitigationError(problem, status="invalid-result")


class _InversionFamily:
    """What both inversion families share: data, evaluator, scoring, feedback, picture."""

    name = ""
    function_name = ""
    floor_label = ""

    # ------------------------------------------------------------------ the shared stage

    def _stage(self, scenario, split: Split, ctx: RunContext) -> InversionStage:
        software = software_key("secureml.families.inversion")
        key = content_key(
            f"{self.name}-stage",
            scenario.attack.model_dump(mode="json"),
            scenario.victim.model_dump(mode="json"),
            scenario.evaluator.model_dump(mode="json"),
            scenario.holdout.model_dump(mode="json"),
            split.sha256,
            scenario.seed,
            software,
        )
        holdout = self._holdout(scenario, split)
        victim = models.train_cached(
            ctx.cache,
            scenario.victim,
            split.x_train,
            split.y_train,
            num_classes=split.num_classes,
            seed=scenario.seed,
            device=ctx.device,
            progress=ctx.progress,
            label="training the victim on the private training set",
        )
        evaluator = models.train_cached(
            ctx.cache,
            scenario.evaluator,
            holdout.x_evaluator,
            holdout.y_evaluator,
            num_classes=split.num_classes,
            seed=derive_seed(scenario.seed, "evaluator"),
            device=ctx.device,
            progress=ctx.progress,
            label="training the independent evaluation classifier on held-out images",
        )
        return InversionStage(
            scenario=scenario,
            split=split,
            holdout=holdout,
            victim=victim,
            evaluator=evaluator,
            means=class_means(split.x_train, split.y_train, split.num_classes),
            key=key,
        )

    @staticmethod
    def _holdout(scenario, split: Split) -> Holdout:
        """Seeded, stratified: evaluator images, auxiliary images, and the rest for utility."""
        import numpy as np

        from secureml.datasets import stratified_split

        rng = generator(scenario.seed, "holdout")
        evaluator_rows, auxiliary_rows = stratified_split(
            split.y_test, scenario.holdout.evaluator, scenario.holdout.auxiliary, rng, dataset=split.name
        )
        test_rows = np.setdiff1d(np.arange(len(split.y_test)), np.concatenate([evaluator_rows, auxiliary_rows]))

        def take(rows):
            return np.ascontiguousarray(split.x_test[rows]), np.ascontiguousarray(split.y_test[rows])

        return Holdout(*take(evaluator_rows), *take(auxiliary_rows), *take(test_rows))

    # ------------------------------------------------------------------ grading

    def _score(self, stage: InversionStage, mitigated: Outcome) -> Score:
        return inversion_calibrated(
            attack_accuracy_none=stage.none.leakage.attack_accuracy,
            attack_accuracy_mitigated=mitigated.leakage.attack_accuracy,
            attack_accuracy_floor=stage.floor,
            utility_none=stage.none.utility,
            utility_mitigated=mitigated.utility,
            max_utility_drop=stage.scenario.scoring.max_utility_drop,
        )

    def _evaluation(
        self, stage: InversionStage, mitigated: Outcome, ctx: RunContext, flags: list[str]
    ) -> Evaluation:
        score = self._score(stage, mitigated)
        metrics = {
            "victim.utility": stage.none.utility,
            **stage.none.leakage.metrics("victim"),
            "floor.attack_accuracy": stage.floor,
            "mitigated.utility": mitigated.utility,
            **mitigated.leakage.metrics("mitigated"),
            "score": score.total,
        }
        rows = [Row("no mitigation (victim)", self._row(stage.none))]
        if stage.floor_outcome is not None:
            rows.append(Row(self.floor_label, self._row(stage.floor_outcome), "the score's floor"))
        else:
            rows.append(Row(self.floor_label, {"attack_accuracy": stage.floor}, "the score's floor"))
        rows.append(Row("your mitigation", {**self._row(mitigated), "score": score.total}))
        pictures = {}
        if ctx.out_dir is not None:
            pictures["inversion"] = self._draw(stage, mitigated, ctx.out_dir / "inversion.png")
        return Evaluation(
            metrics=metrics,
            score=score,
            rows=rows,
            feedback=self._feedback(stage, mitigated, score),
            flags=flags,
            pictures=pictures,
            details={
                "scoring": stage.scenario.scoring.model_dump(),
                "per_class_attack_accuracy": {
                    "victim": stage.none.leakage.per_class_accuracy,
                    "mitigated": mitigated.leakage.per_class_accuracy,
                },
            },
            samples={
                **self._samples("victim", stage.none, stage),
                **self._samples("mitigated", mitigated, stage),
                # Chance (white-box) is a constant; the label-only API's floor is measured.
                "floor.attack_accuracy": EXACT
                if stage.floor_outcome is None
                else self._samples("floor", stage.floor_outcome, stage)["floor.attack_accuracy"],
            },
        )

    @staticmethod
    def _samples(prefix: str, outcome: Outcome, stage: InversionStage) -> dict[str, Sample]:
        """What each metric is measured over: the utility test images, the reconstructions."""
        images = len(outcome.reconstructions.labels)
        return {
            f"{prefix}.utility": Sample.rate(len(stage.holdout.y_test), "test images"),
            f"{prefix}.attack_accuracy": Sample.rate(images, "reconstructions"),
            f"{prefix}.mse": Sample.mean(images, "reconstructions"),
            f"{prefix}.ssim": Sample.mean(images, "reconstructions"),
        }

    @staticmethod
    def _row(outcome: Outcome) -> dict[str, float]:
        return {
            "attack_accuracy": outcome.leakage.attack_accuracy,
            "utility": outcome.utility,
            "mse": outcome.leakage.mse,
            "ssim": outcome.leakage.ssim,
        }

    def _feedback(self, stage: InversionStage, mitigated: Outcome, score: Score) -> list[str]:
        """What limited the score, in numbers, followed by the scenario's hint."""
        hints = stage.scenario.hints
        none = stage.none
        notes: list[str] = []
        utility_drop = none.utility - mitigated.utility
        unchanged = (
            abs(mitigated.leakage.attack_accuracy - none.leakage.attack_accuracy) < 1e-9
            and abs(utility_drop) < 1e-9
        )
        if unchanged:
            notes.append(f"Your mitigation leaks exactly as much as the undefended model. {hints.unchanged}")
        elif score.parts["leakage_removed"] < 0.7:
            notes.append(
                f"The evaluator still recognises {100 * mitigated.leakage.attack_accuracy:.0f}% of the "
                f"reconstructions (undefended {100 * none.leakage.attack_accuracy:.0f}%, floor "
                f"{100 * stage.floor:.0f}%). {hints.leakage_remaining}"
            )
        if score.capped_by or utility_drop > 0.02:
            notes.append(
                f"Utility fell {100 * utility_drop:.1f} points ({none.utility:.3f} -> "
                f"{mitigated.utility:.3f}). {hints.utility_lost}"
            )
        if score.total >= 80 and not notes:
            notes.append(hints.success)
        return notes

    # ------------------------------------------------------------------ the picture

    def _picture_rows(self, stage: InversionStage, mitigated: Outcome) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(class, undefended reconstruction, mitigated reconstruction) for each attacked class."""
        raise NotImplementedError

    def _display(self, image: np.ndarray) -> np.ndarray:
        return image

    def _draw(self, stage: InversionStage, mitigated: Outcome, path: Path) -> Path:
        import numpy as np

        from secureml.pictures import Cell, image_grid

        names = stage.split.class_names
        triples = self._picture_rows(stage, mitigated)
        shown = np.stack([image for _, none, mine in triples for image in (none, mine)])
        verdicts = models.predict(stage.evaluator, shown)

        def cell(image, label, verdict, who) -> Cell:
            return Cell(
                self._display(image),
                f"{who}: seen as {names[verdict]}",
                highlight=bool(verdict == label),
            )

        rows = []
        for index, (label, none, mine) in enumerate(triples):
            rows.append(
                (
                    f"class {names[label]}",
                    [
                        Cell(stage.means[label], "class mean"),
                        cell(none, label, verdicts[2 * index], "undefended"),
                        cell(mine, label, verdicts[2 * index + 1], "mitigated"),
                    ],
                )
            )
        # The legend on a line of its own: on one line with the subject, the title was
        # wider than the grid and clipped at both sides.
        lines = [self._picture_title(stage), "(red = the evaluator recognises the class)"]
        title = "\n".join(textwrap.fill(line, TITLE_CHARACTERS) for line in lines)
        return image_grid(rows, path, title=title)

    def _picture_title(self, stage: InversionStage) -> str:
        return f"{stage.scenario.id}: reconstructions"


# =========================================================================== white-box


class TrainTools(VictimTools):
    """What `train` gets besides the data: the victim's architecture and recipe.

    tools.new_model()          -> a freshly initialised model of the victim's architecture
    tools.train(x, y)          -> a model trained exactly like the victim (on the full set you
                                  were given: the deployed victim, at once)
    tools.epochs, tools.batch_size, tools.learning_rate, tools.optimizer, tools.weight_decay
    tools.predict(model, x), tools.accuracy(model, x, y)
    tools.num_classes, tools.input_shape, tools.seed, tools.class_names
    """

    training_label = "training inside train()"

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.input_shape: tuple[int, ...] = tuple(self._task["input_shape"])
        self.arch = self._victim.arch
        self.epochs = self._victim.epochs
        self.batch_size = self._victim.batch_size
        self.learning_rate = self._victim.learning_rate
        self.optimizer = self._victim.optimizer
        self.weight_decay = self._victim.weight_decay

    def new_model(self, seed: int | None = None):
        return models.build(self.arch, self.input_shape, self.num_classes, self.seed if seed is None else seed)

    @staticmethod
    def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
        return models.accuracy(model, x, y)


class WhiteBoxInversionFamily(_InversionFamily):
    name = "inversion"
    function_name = "train"
    signature = "train(x, y, tools) -> a model with the victim's architecture"
    floor_label = "chance"

    def prepare(self, scenario: InversionScenario, split: Split, ctx: RunContext) -> InversionStage:
        """Train the victim and the evaluator, invert the victim. Every step is cached."""
        stage = self._stage(scenario, split, ctx)
        stage.floor = 1.0 / split.num_classes
        stage.none = self._outcome(stage, stage.victim, ctx)
        return stage

    def _outcome(self, stage: InversionStage, model, ctx: RunContext) -> Outcome:
        """MIFace against `model` (cached by its weights) and its test accuracy."""
        weights = models.model_arrays(model)
        key = content_key(stage.key, "miface", *[weights[name] for name in sorted(weights)], sorted(weights))
        if key not in stage.memo:
            reconstructions = self._reconstruct(stage, model, key, ctx)
            stage.memo[key] = Outcome(
                utility=models.accuracy(model, stage.holdout.x_test, stage.holdout.y_test),
                leakage=measure(stage.evaluator, reconstructions.images, reconstructions.labels, stage.means),
                reconstructions=reconstructions,
            )
        return stage.memo[key]

    def _reconstruct(self, stage: InversionStage, model, key: str, ctx: RunContext) -> Reconstructions:
        cached = ctx.cache.load_tensors("inversions", key)
        if cached is not None:
            return Reconstructions(cached["images"], cached["labels"], cached["confidence"])
        reconstructions = run_miface(
            model,
            stage.holdout.x_auxiliary,
            stage.scenario.attack,
            num_classes=stage.split.num_classes,
            seed=stage.scenario.seed,
            progress=ctx.progress,
        )
        ctx.cache.save_tensors(
            "inversions",
            key,
            {
                "images": reconstructions.images,
                "labels": reconstructions.labels,
                "confidence": reconstructions.confidence,
            },
        )
        return reconstructions

    # ------------------------------------------------------------------ the mitigation's view

    def write_inputs(self, stage: InversionStage, folder: Path) -> None:
        """The private training set, the victim's recipe, and its weights (so tools.train is instant)."""
        split = stage.split
        write_victim_inputs(
            folder,
            x=split.x_train,
            y=split.y_train,
            victim_config=stage.scenario.victim,
            victim_model=stage.victim,
            num_classes=split.num_classes,
            class_names=split.class_names,
            seed=stage.scenario.seed,
            input_shape=list(split.shape),
        )

    def run_mitigation(self, module: Any, folder: Path) -> RawResult:
        """In the child: call `train` and send back the returned model's weights only."""
        from safetensors.numpy import load_file

        arrays = load_file(str(folder / "train.safetensors"))
        model = module.train(arrays["x"].copy(), arrays["y"].copy(), TrainTools(folder))
        return weights_result(model, function="train", how_to_build="tools.new_model()")

    def no_mitigation(self, stage: InversionStage) -> RawResult:
        return RawResult(models.model_arrays(stage.victim))

    def check_outputs(self, stage: InversionStage, raw: RawResult):
        """Weights that fit the victim's architecture exactly, float32, loaded into a fresh model."""
        return model_from_weights(
            raw, arch=stage.scenario.victim.arch, input_shape=stage.split.shape, num_classes=stage.split.num_classes
        )

    def evaluate(self, stage: InversionStage, model, ctx: RunContext) -> Evaluation:
        mitigated = self._outcome(stage, model, ctx)
        return self._evaluation(stage, mitigated, ctx, self._flags(stage, mitigated))

    def _flags(self, stage: InversionStage, mitigated: Outcome) -> list[str]:
        """MIFace that could not even raise the model's confidence points at gradient masking."""
        import numpy as np

        reconstructions = mitigated.reconstructions
        best = [
            float(reconstructions.confidence[reconstructions.labels == label].max())
            for label in range(stage.split.num_classes)
        ]
        stuck = int((np.array(best) < 0.5).sum())
        if stuck == 0:
            return []
        return [
            f"MIFace could not push the model's confidence above 0.5 for {stuck} of "
            f"{len(best)} classes from any start. Vanishing gradients (dead or saturated units) "
            "hide leakage from this attack without removing it; an instructor should look at "
            "this model."
        ]

    # ------------------------------------------------------------------ picture

    def _picture_rows(self, stage: InversionStage, mitigated: Outcome):
        rows = []
        for label in range(stage.split.num_classes):
            # The start from zeros: Fredrikson et al.'s own.
            index = int((stage.none.reconstructions.labels == label).argmax())
            rows.append(
                (label, stage.none.reconstructions.images[index], mitigated.reconstructions.images[index])
            )
        return rows

    def _display(self, image: np.ndarray) -> np.ndarray:
        # MIFace images are faint; stretch the contrast so a person sees what the evaluator sees.
        return image / max(float(image.max()), 1e-6)

    def _picture_title(self, stage: InversionStage) -> str:
        return f"{stage.scenario.id}: MIFace reconstructions, contrast stretched"


# =========================================================================== query-only API


class ProtectTools:
    """What `protect` gets besides the model.

    tools.probabilities(model, x) -> (N, num_classes) softmax vectors: the API as deployed
    tools.num_classes, tools.seed, tools.class_names
    """

    def __init__(self, task: dict) -> None:
        self.num_classes: int = task["num_classes"]
        self.seed: int = task["seed"]
        self.class_names: list[str] = task["class_names"]

    @staticmethod
    def probabilities(model, x: np.ndarray) -> np.ndarray:
        import numpy as np

        return _softmax(models.logits(model, np.ascontiguousarray(x, dtype=np.float32)))


def _softmax(logits: np.ndarray) -> np.ndarray:
    import numpy as np

    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


class QueryInversionFamily(_InversionFamily):
    name = "inversion-api"
    function_name = "protect"
    signature = "protect(model, tools) -> api; api(x) -> output vectors"
    floor_label = "label-only API"

    def prepare(self, scenario: InversionApiScenario, split: Split, ctx: RunContext) -> InversionStage:
        """Victim, evaluator, the query batch; invert the undefended and the label-only API."""
        import numpy as np

        stage = self._stage(scenario, split, ctx)
        holdout = stage.holdout
        # The attacker's images: its share of the holdout, minus every image of a secret class.
        # With examples of a class in hand, "what the class looks like" needs no model at all.
        known = ~np.isin(holdout.y_auxiliary, scenario.attack.secret_classes)
        auxiliary = np.ascontiguousarray(holdout.x_auxiliary[known])
        stage.holdout = Holdout(
            holdout.x_evaluator, holdout.y_evaluator, auxiliary, holdout.y_auxiliary[known],
            holdout.x_test, holdout.y_test,
        )  # fmt: skip
        # One batch, shuffled: the API cannot tell the attacker's queries from users'.
        order = generator(scenario.seed, "queries").permutation(len(auxiliary) + len(holdout.y_test))
        stage.queries = np.ascontiguousarray(np.concatenate([auxiliary, holdout.x_test])[order])
        position = np.argsort(order)
        stage.auxiliary_rows = position[: len(auxiliary)]
        stage.test_rows = position[len(auxiliary) :]
        probabilities = ProtectTools.probabilities(stage.victim, stage.queries)
        stage.none = self._outcome(stage, probabilities, ctx)
        label_only = np.eye(split.num_classes, dtype=np.float32)[probabilities.argmax(axis=1)]
        stage.floor_outcome = self._outcome(stage, label_only, ctx)
        stage.floor = stage.floor_outcome.leakage.attack_accuracy
        return stage

    def _outcome(self, stage: InversionStage, outputs: np.ndarray, ctx: RunContext) -> Outcome:
        """Train the inversion network on the auxiliary rows, invert the secret-class test rows."""
        import numpy as np

        attack = stage.scenario.attack
        key = content_key(stage.key, "inversion-net", outputs)
        if key in stage.memo:
            return stage.memo[key]
        y_test = stage.holdout.y_test
        test_outputs = outputs[stage.test_rows]
        targets = np.isin(y_test, attack.secret_classes)
        labels = y_test[targets]
        cached = ctx.cache.load_tensors("inversions", key)
        if cached is not None:
            images = cached["images"]
        else:
            # Several decoders from different random starts, every reconstruction judged.
            # An output the attacker's queries never exercised (a class the API only ever
            # names by its label) decodes through weights still at their random start: with
            # one decoder, inversion-02's label-only floor was 0.58, 0.00 and 0.37 on three
            # seeds. Averaging over starts measures the API, not one draw of the weights.
            images = np.concatenate([
                invert_outputs(
                    train_inversion_net(
                        outputs[stage.auxiliary_rows],
                        stage.holdout.x_auxiliary,
                        attack,
                        seed=stage.scenario.seed,
                        progress=ctx.progress,
                        start=start,
                    ),
                    test_outputs[targets],
                    attack,
                )
                for start in range(attack.decoders)
            ])  # fmt: skip
            ctx.cache.save_tensors("inversions", key, {"images": images})
        labels = np.tile(labels, attack.decoders)
        stage.memo[key] = Outcome(
            utility=float((test_outputs.argmax(axis=1) == y_test).mean()),
            leakage=measure(stage.evaluator, images, labels, stage.means),
            reconstructions=Reconstructions(images, labels),
        )
        return stage.memo[key]

    # ------------------------------------------------------------------ the mitigation's view

    def write_inputs(self, stage: InversionStage, folder: Path) -> None:
        """The deployed model's weights and the query batch (images only, no labels)."""
        from safetensors.numpy import save_file

        folder.mkdir(parents=True, exist_ok=True)
        split = stage.split
        save_file(models.model_arrays(stage.victim), str(folder / "model.safetensors"))
        save_file({"x": stage.queries}, str(folder / "queries.safetensors"))
        task = {
            "num_classes": split.num_classes,
            "class_names": list(split.class_names),
            "input_shape": list(split.shape),
            "seed": stage.scenario.seed,
            "arch": stage.scenario.victim.arch,
            "query_batch": stage.scenario.attack.query_batch,
        }
        (folder / "task.json").write_text(json.dumps(task))

    def run_mitigation(self, module: Any, folder: Path) -> RawResult:
        """In the child: build the API with `protect`, answer the query batch, send the outputs."""
        import numpy as np
        from safetensors.numpy import load_file

        task = json.loads((folder / "task.json").read_text())
        model = models.build(task["arch"], tuple(task["input_shape"]), task["num_classes"], 0)
        models.load_arrays(model, load_file(str(folder / "model.safetensors")))
        api = module.protect(model.eval(), ProtectTools(task))
        if not callable(api):
            raise TypeError(f"protect must return a callable api(x) -> outputs, got {type(api).__name__}")
        queries = load_file(str(folder / "queries.safetensors"))["x"]
        answers = []
        for start in range(0, len(queries), task["query_batch"]):
            batch = queries[start : start + task["query_batch"]]
            outputs = _as_array(api(batch.copy())).astype(np.float32)
            if outputs.shape != (len(batch), task["num_classes"]):
                # Sent back as it is: an unusable result is for the parent's check_outputs to
                # reject (status invalid-result); raising here would report it as a crash.
                return RawResult({"outputs": np.ascontiguousarray(outputs)})
            answers.append(outputs)
        return RawResult({"outputs": np.ascontiguousarray(np.concatenate(answers))})

    def no_mitigation(self, stage: InversionStage) -> RawResult:
        return RawResult({"outputs": ProtectTools.probabilities(stage.victim, stage.queries)})

    def check_outputs(self, stage: InversionStage, raw: RawResult) -> np.ndarray:
        """One score vector per query, every score in [0, 1]."""
        import numpy as np

        if set(raw.arrays) != {"outputs"} or raw.config:
            raise _invalid(f"expected one output 'outputs', got {sorted(raw.arrays)}")
        outputs = raw.arrays["outputs"]
        expected = (len(stage.queries), stage.split.num_classes)
        if outputs.shape != expected or outputs.dtype.kind != "f":
            batch = stage.scenario.attack.query_batch
            raise _invalid(
                f"the api must return one row of {expected[1]} float scores per query: shape {expected} "
                f"for the {expected[0]} queries (sent {batch} at a time), got {outputs.dtype} {outputs.shape}"
            )
        # 1e-6: float32 rounding in a wrapper that renormalises.
        if outputs.size and (outputs.min() < -1e-6 or outputs.max() > 1 + 1e-6):
            raise _invalid(
                f"outputs must be scores in [0, 1], found {outputs.min():.3g}..{outputs.max():.3g}; "
                "return probabilities (rounded, truncated or noisy), not logits"
            )
        return np.clip(outputs, 0.0, 1.0).astype(np.float32)

    def evaluate(self, stage: InversionStage, outputs: np.ndarray, ctx: RunContext) -> Evaluation:
        return self._evaluation(stage, self._outcome(stage, outputs, ctx), ctx, [])

    # ------------------------------------------------------------------ picture

    def _picture_rows(self, stage: InversionStage, mitigated: Outcome):
        import numpy as np

        labels = stage.none.reconstructions.labels
        rows = []
        for label in stage.scenario.attack.secret_classes:
            # The first test query of the class: the same query in both columns.
            index = int(np.flatnonzero(labels == label)[0])
            rows.append((label, stage.none.reconstructions.images[index], mitigated.reconstructions.images[index]))
        return rows

    def _picture_title(self, stage: InversionStage) -> str:
        return f"{stage.scenario.id}: classes the attacker never saw, from API outputs"


def _as_array(outputs) -> np.ndarray:
    import numpy as np

    if hasattr(outputs, "detach"):  # a torch tensor
        outputs = outputs.detach().cpu().numpy()
    array = np.asarray(outputs)
    if array.dtype.kind not in "fiub":
        raise TypeError(f"the api must return numbers, got an array of {array.dtype}")
    return array


FAMILY = WhiteBoxInversionFamily()
API_FAMILY = QueryInversionFamily()
