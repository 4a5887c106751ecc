"""The inversion families: an attacker reconstructs private images from a model.

`inversion` (white-box). The trainee's `train(x, y, tools)` returns a model of the victim's
architecture. The child sends back its weights only; the grader loads them into a fresh
model and runs ART's MIFace for every class, from several starts, itself. Leakage is the
share of classes an independent evaluation classifier (trained only on held-out images)
recognises in at least one reconstruction; MSE and SSIM compare the reconstructions with
each class's mean private training image.

`inversion-api` (query-only). The trainee's `protect(model, tools)` returns the prediction
API. The child calls it on one fixed batch of queries the grader chose and sends back the
output vectors only; the grader trains the inversion networks on them in its own process.
Trainee code never runs in the grader's process, and it cannot treat the attacker
differently from ordinary users: the batch is the attacker's auxiliary images and the
users' test images, from one distribution, shuffled together, without labels, and the
outputs that decide usefulness are the very outputs the attacker inverts. Leakage is how
well the reconstructions of users' queries pick out each user's own image among the others
of the same digit, in the class whose users fare worst, for the worst of two attackers
(one without images of the secret classes, one with only those) and of the views it reads
the outputs through; usefulness is the argmax's accuracy and the log loss of the
confidences as a client reads them.
"""

from __future__ import annotations

import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from secureml import models
from secureml.cache import content_key
from secureml.families.base import (
    EXACT,
    Artefact,
    Evaluation,
    Family,
    Handover,
    Inputs,
    ModelFamily,
    Row,
    RunContext,
    Sample,
    Tools,
    handover_of,
    invalid,
    warn_renamed,
)
from secureml.families.inversion.attacks import (
    MIFaceStarts,
    Reconstructions,
    invert,
    miface_starts,
    run_miface,
    train_inversion_net,
)
from secureml.families.inversion.config import InversionApiScenario, InversionScenario
from secureml.families.inversion.leakage import (
    Leakage,
    class_means,
    identification,
    miface_leakage,
    ssim,
    worst_class,
)
from secureml.mitigation import RawResult
from secureml.randomness import derive_seed, generator
from secureml.scoring import Score, inversion_api_calibrated, inversion_calibrated
from secureml.versions import software_key

if TYPE_CHECKING:
    import numpy as np

    from secureml.datasets import Split
    from secureml.families.inversion.config import InversionHints
    from secureml.pictures import Cell


# The grid is three images wide (5.3 in at 110 dpi, 583 px), and a 10 pt title line
# averages 7.6 px a character (measured with matplotlib 3.11): 76 characters fill it
# edge to edge, so lines wrap at 64 to keep a margin.
TITLE_CHARACTERS = 64
# Scores from this up earn the scenario's success hint, unless a flag asks for review.
SUCCESS_SCORE = 80
# The inputs file of the query batch `protect`'s api answers.
QUERIES = "queries"


@dataclass(frozen=True)
class Holdout:
    """The held-out images, shared out: the attacker's (auxiliary), the test set, and for
    the white-box family the evaluation classifier's."""

    x_auxiliary: np.ndarray
    y_auxiliary: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_evaluator: np.ndarray | None = None
    y_evaluator: np.ndarray | None = None

    def evaluator_set(self) -> tuple[np.ndarray, np.ndarray]:
        """The evaluation classifier's images; only the white-box family's holdout has them."""
        if self.x_evaluator is None or self.y_evaluator is None:
            raise ValueError("this holdout has no images for an evaluation classifier (holdout.evaluator)")
        return self.x_evaluator, self.y_evaluator


def closing_hint(score: Score, notes: list[str], flags: list[str], success: str) -> list[str]:
    """The feedback: `notes` as they are, or the success hint alone when the score is high
    and nothing limited it.

    Never beside a flag: a flagged run may owe its score to the attack being blinded, and a
    "well done" next to "needs review" tells the trainee the opposite of the truth.
    """
    if score.total >= SUCCESS_SCORE and not notes and not flags:
        return [success]
    return notes


class _InversionFamily:
    """What both inversion families share: the victim, the held-out split, the picture."""

    name: ClassVar[str]  # set by each family (see `Family`)

    def _stage_key(self, scenario, split: Split) -> str:
        return content_key(
            f"{self.name}-stage",
            scenario.model_dump(mode="json", include={"attack", "victim", "holdout", "evaluator"}),
            split.sha256,
            scenario.seed,
            software_key("secureml.families.inversion"),
        )

    @staticmethod
    def _victim(scenario, split: Split, ctx: RunContext):
        return models.train_cached(
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

    @staticmethod
    def _holdout(scenario, split: Split) -> Holdout:
        """Seeded, stratified: (evaluator images,) auxiliary images, and the rest for testing."""
        import numpy as np

        from secureml.datasets import stratified_split

        rng = generator(scenario.seed, "holdout")
        sizes = scenario.holdout.model_dump()
        evaluator_rows, auxiliary_rows = stratified_split(
            split.y_test, sizes.get("evaluator", 0), sizes["auxiliary"], rng, dataset=split.name
        )
        test_rows = np.setdiff1d(np.arange(len(split.y_test)), np.concatenate([evaluator_rows, auxiliary_rows]))

        def take(rows):
            return np.ascontiguousarray(split.x_test[rows]), np.ascontiguousarray(split.y_test[rows])

        evaluator = take(evaluator_rows) if len(evaluator_rows) else (None, None)
        return Holdout(*take(auxiliary_rows), *take(test_rows), *evaluator)

    def _draw(self, rows: list[tuple[str, list[Cell]]], title: str, path: Path) -> Path:
        from secureml.pictures import image_grid

        # The legend on a line of its own: on one line with the subject, the title was
        # wider than the grid and clipped at both sides.
        lines = [title, "(red = " + self.picture_legend + ")"]
        return image_grid(rows, path, title="\n".join(textwrap.fill(line, TITLE_CHARACTERS) for line in lines))

    picture_legend = ""


# =========================================================================== white-box


@dataclass(frozen=True)
class Outcome:
    """What MIFace recovers from one model, and the model's test accuracy."""

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
    starts: MIFaceStarts
    start_verdicts: np.ndarray  # the evaluator's class for each start image
    key: str
    # The victim's outcome: `prepare` measures it once the rest of the stage exists.
    undefended: Outcome = field(init=False)
    # Outcomes already computed in this process, by content key (also without a disk cache).
    memo: dict[str, Outcome] = field(default_factory=dict)

    @property
    def floor(self) -> float:
        return 1.0 / self.split.num_classes


class _OptimizerName(str):
    """inversion-01's old `tools.optimizer` was the optimiser's name ("adam"); in every lab it
    now builds the optimiser, `tools.optimizer(model)`. This object is both: calling it is the
    new meaning, comparing it as a name is the old one and says so once."""

    _tools: Tools

    def __new__(cls, name: str, tools: Tools) -> _OptimizerName:
        value = super().__new__(cls, name)
        value._tools = tools
        return value

    def __call__(self, model, learning_rate: float | None = None):
        return Tools.optimizer(self._tools, model, learning_rate)

    def __eq__(self, other: object) -> bool:
        warn_renamed("tools.optimizer as the optimiser's name", "tools.optimizer_name")
        return str(self) == other

    __hash__ = str.__hash__


class InversionTools(Tools):
    """For `train(x, y, tools)`: every lab's tools (`Tools`); tools.new_model() is tools.build()."""

    renamed: ClassVar[dict[str, str]] = {"new_model": "build"}

    @property
    def optimizer(self):
        return _OptimizerName(self.optimizer_name, self)


class WhiteBoxInversionFamily(ModelFamily[InversionStage], _InversionFamily):
    name = "inversion"
    schema = InversionScenario
    tools = InversionTools
    picture_legend = "the evaluator recognises the class"

    def prepare(self, scenario: InversionScenario, split: Split, ctx: RunContext) -> InversionStage:
        """Train the victim and the evaluator, invert the victim. Every step is cached."""
        holdout = self._holdout(scenario, split)
        evaluator = models.train_cached(
            ctx.cache,
            scenario.evaluator,
            *holdout.evaluator_set(),
            num_classes=split.num_classes,
            seed=derive_seed(scenario.seed, "evaluator"),
            device=ctx.device,
            progress=ctx.progress,
            label="training the independent evaluation classifier on held-out images",
        )
        starts = miface_starts(
            scenario.attack, holdout.x_auxiliary, holdout.y_auxiliary, split.num_classes, scenario.seed
        )
        stage = InversionStage(
            scenario=scenario,
            split=split,
            holdout=holdout,
            victim=self._victim(scenario, split, ctx),
            evaluator=evaluator,
            means=class_means(split.x_train, split.y_train, split.num_classes),
            starts=starts,
            start_verdicts=models.predict(evaluator, starts.images),
            key=self._stage_key(scenario, split),
        )
        stage.undefended = self._outcome(stage, stage.victim, ctx)
        return stage

    def _outcome(self, stage: InversionStage, model, ctx: RunContext) -> Outcome:
        """MIFace against `model` (cached by its weights) and its test accuracy."""
        weights = models.model_arrays(model)
        key = content_key(stage.key, "miface", *[weights[name] for name in sorted(weights)], sorted(weights))
        if key not in stage.memo:
            reconstructions = self._reconstruct(stage, model, key, ctx)
            stage.memo[key] = Outcome(
                utility=models.accuracy(model, stage.holdout.x_test, stage.holdout.y_test),
                leakage=miface_leakage(
                    models.predict(stage.evaluator, reconstructions.images),
                    stage.start_verdicts,
                    reconstructions,
                    stage.starts,
                    stage.means,
                    stage.scenario.attack.stuck_below,
                ),
                reconstructions=reconstructions,
            )
        return stage.memo[key]

    def _reconstruct(self, stage: InversionStage, model, key: str, ctx: RunContext) -> Reconstructions:
        return self.cached(
            ctx.cache,
            "inversions",
            key,
            lambda: run_miface(
                model,
                stage.starts,
                stage.holdout.x_auxiliary,
                stage.scenario.attack,
                num_classes=stage.split.num_classes,
                device=ctx.device,
                progress=ctx.progress,
            ),
            store=lambda reconstructions: Artefact(asdict(reconstructions)),
            restore=lambda stored: Reconstructions(**stored.arrays),
        )

    # ------------------------------------------------------------------ the mitigation's view

    def handover(self, stage: InversionStage) -> Handover:
        """The private training set, the victim's recipe, and its weights (so tools.train is instant)."""
        return handover_of(stage, training_set=(stage.split.x_train, stage.split.y_train))

    # ------------------------------------------------------------------ grading

    def evaluate(self, stage: InversionStage, model, ctx: RunContext) -> Evaluation:
        mitigated = self._outcome(stage, model, ctx)
        undefended = stage.undefended
        score = inversion_calibrated(
            attack_accuracy_none=undefended.leakage.attack_accuracy,
            attack_accuracy_mitigated=mitigated.leakage.attack_accuracy,
            attack_accuracy_floor=stage.floor,
            utility_none=undefended.utility,
            utility_mitigated=mitigated.utility,
            max_utility_drop=stage.scenario.scoring.max_utility_drop,
        )
        flags = self._flags(stage, mitigated)
        pictures = {}
        if ctx.out_dir is not None:
            pictures["inversion"] = self._picture(stage, mitigated, ctx.out_dir / "inversion.png")
        return Evaluation(
            metrics={
                "victim.utility": undefended.utility,
                **undefended.leakage.metrics("victim"),
                "floor.attack_accuracy": stage.floor,
                "mitigated.utility": mitigated.utility,
                **mitigated.leakage.metrics("mitigated"),
                "score": score.total,
            },
            score=score,
            rows=[
                Row("no mitigation (victim)", self._row(undefended)),
                Row("chance", {"attack_accuracy": stage.floor}, "the score's floor"),
                Row("your mitigation", {**self._row(mitigated), "score": score.total}),
            ],
            feedback=self._feedback(stage, mitigated, score, flags),
            flags=flags,
            pictures=pictures,
            samples={
                **self._samples("victim", stage),
                **self._samples("mitigated", stage),
                "floor.attack_accuracy": EXACT,  # chance: a constant
            },
            details={
                "scoring": stage.scenario.scoring.model_dump(),
                "per_class_attack_accuracy": {
                    "victim": undefended.leakage.per_class_accuracy,
                    "mitigated": mitigated.leakage.per_class_accuracy,
                },
                "blinded_classes": mitigated.leakage.blinded,
            },
        )

    @staticmethod
    def _samples(prefix: str, stage: InversionStage) -> dict[str, Sample]:
        """What each metric is measured over (for `secureml verify`'s tolerances)."""
        classes = stage.split.num_classes
        return {
            f"{prefix}.utility": Sample.rate(len(stage.holdout.y_test), "test images"),
            f"{prefix}.attack_accuracy": Sample.rate(classes, "classes"),
            f"{prefix}.mse": Sample.mean(classes, "classes"),
            f"{prefix}.ssim": Sample.mean(classes, "classes"),
        }

    @staticmethod
    def _row(outcome: Outcome) -> dict[str, float]:
        return {
            "attack_accuracy": outcome.leakage.attack_accuracy,
            "utility": outcome.utility,
            "mse": outcome.leakage.mse,
            "ssim": outcome.leakage.ssim,
        }

    @staticmethod
    def _flags(stage: InversionStage, mitigated: Outcome) -> list[str]:
        """Neutral starts that could not even raise the model's confidence point at gradient masking."""
        blinded = mitigated.leakage.blinded
        if not blinded:
            return []
        names = ", ".join(stage.split.class_names[label] for label in blinded)
        return [
            f"MIFace could not push the model's confidence above {stage.scenario.attack.stuck_below:g} "
            f"from any blank or noise start for {len(blinded)} of {stage.split.num_classes} classes "
            f"({names}); they count as recovered. Vanishing gradients (dead or saturated units) hide "
            "leakage from this attack without removing it; an instructor should look at this model."
        ]

    @staticmethod
    def _feedback(stage: InversionStage, mitigated: Outcome, score: Score, flags: list[str]) -> list[str]:
        """What limited the score, in numbers, followed by the scenario's hint."""
        hints: InversionHints = stage.scenario.hints
        undefended = stage.undefended
        notes: list[str] = []
        utility_drop = undefended.utility - mitigated.utility
        leaked, leaked_none = mitigated.leakage.attack_accuracy, undefended.leakage.attack_accuracy
        if abs(leaked - leaked_none) < 1e-9 and abs(utility_drop) < 1e-9:
            notes.append(f"Your mitigation leaks exactly as much as the undefended model. {hints.unchanged}")
        elif score.parts["leakage_removed"] < 0.7:
            notes.append(
                f"MIFace still recovers {100 * leaked:.0f}% of the classes (undefended "
                f"{100 * leaked_none:.0f}%, chance {100 * stage.floor:.0f}%). {hints.leakage_remaining}"
            )
        if score.capped_by or utility_drop > 0.02:
            notes.append(
                f"Utility fell {100 * utility_drop:.1f} points ({undefended.utility:.3f} -> "
                f"{mitigated.utility:.3f}). {hints.utility_lost}"
            )
        return closing_hint(score, notes, flags, hints.success)

    def _picture(self, stage: InversionStage, mitigated: Outcome, path: Path) -> Path:
        import numpy as np

        from secureml.pictures import Cell

        names = stage.split.class_names
        undefended = stage.undefended
        shown = np.stack(
            [outcome.reconstructions.images[outcome.leakage.shown] for outcome in (undefended, mitigated)]
        )  # (2, classes, C, H, W)
        verdicts = models.predict(stage.evaluator, shown.reshape(-1, *shown.shape[2:])).reshape(2, -1)

        def cell(image, label, verdict, who) -> Cell:
            # MIFace images are faint; stretch the contrast so a person sees what the evaluator sees.
            stretched = image / max(float(image.max()), 1e-6)
            return Cell(stretched, f"{who}: seen as {names[verdict]}", highlight=bool(verdict == label))

        rows = [
            (
                f"class {names[label]}",
                [
                    Cell(stage.means[label], "class mean"),
                    cell(shown[0, label], label, verdicts[0, label], "undefended"),
                    cell(shown[1, label], label, verdicts[1, label], "mitigated"),
                ],
            )
            for label in range(stage.split.num_classes)
        ]
        title = f"{stage.scenario.id}: MIFace reconstructions (the best start per class), contrast stretched"
        return self._draw(rows, title, path)


# =========================================================================== query-only API


class ProtectTools(Tools):
    """For `protect(model, tools)`: every lab's tools (`Tools`), and
    tools.probabilities(model, x) -> (N, num_classes) softmax vectors: the API as deployed."""

    @staticmethod
    def probabilities(model, x: np.ndarray) -> np.ndarray:
        import numpy as np

        return _softmax(models.logits(model, np.ascontiguousarray(x, dtype=np.float32)))


def _softmax(logits: np.ndarray) -> np.ndarray:
    import numpy as np

    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class Inversion:
    """One attacker (one view of the outputs, one fold of classes) against all users."""

    identification: np.ndarray  # per test query: how well its reconstruction picks out its user
    squared_error: np.ndarray  # per test query: mean squared error to the user's own image
    ssim: np.ndarray  # per test query: structural similarity to it
    pictured: np.ndarray  # the reconstructions of the pictured queries


@dataclass(frozen=True)
class ApiOutcome:
    """What one set of API outputs gives the attacker, and what it is worth to a client."""

    accuracy: float  # of the argmax on the users' test queries
    log_loss: float  # of the client's reading of the outputs on those queries
    # Per view (a way the attacker reads the outputs): the attacker (fold) that identified
    # users best, and its identification in the worst class.
    by_view: dict[str, Inversion]
    identification_by_view: dict[str, float]

    @property
    def worst(self) -> Inversion:
        return self.by_view[max(self.identification_by_view, key=self.identification_by_view.__getitem__)]

    @property
    def identification(self) -> float:
        """The worst case over the views."""
        return max(self.identification_by_view.values())

    def metrics(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}.accuracy": self.accuracy,
            f"{prefix}.log_loss": self.log_loss,
            f"{prefix}.identification": self.identification,
            f"{prefix}.mse": float(self.worst.squared_error.mean()),
            f"{prefix}.ssim": float(self.worst.ssim.mean()),
        }

    def row(self) -> dict[str, float]:
        return {"identification": self.identification, "accuracy": self.accuracy, "log_loss": self.log_loss}


@dataclass(frozen=True)
class Fold:
    """One attacker's knowledge: its images of every class but `secret`."""

    secret: list[int]
    rows: np.ndarray  # where its images sit in the query batch
    images: np.ndarray


@dataclass
class ApiStage:
    scenario: Any
    split: Split
    holdout: Holdout
    victim: Any
    key: str
    # The query batch and which rows are whose (the grader's secret).
    queries: np.ndarray
    test_rows: np.ndarray
    folds: list[Fold]
    pictured: np.ndarray  # test queries drawn in the picture: the first user of each secret class
    # The full API's and the label-only API's outcomes: `prepare` measures them once the
    # rest of the stage exists.
    undefended: ApiOutcome = field(init=False)
    label_only: ApiOutcome = field(init=False)
    memo: dict[str, ApiOutcome] = field(default_factory=dict)


class QueryInversionFamily(Family[ApiStage, "np.ndarray"], _InversionFamily):
    name = "inversion-api"
    schema = InversionApiScenario
    tools = ProtectTools
    picture_legend = "closer to the user's own image than to 9 in 10 other users' images of the digit"

    def prepare(self, scenario: InversionApiScenario, split: Split, ctx: RunContext) -> ApiStage:
        """Victim and the query batch; invert the full API and the label-only one."""
        import numpy as np

        from secureml.api_outputs import label_only

        holdout = self._holdout(scenario, split)
        auxiliary = len(holdout.y_auxiliary)
        # One batch, shuffled: the API cannot tell the attacker's queries from users'.
        order = generator(scenario.seed, "queries").permutation(auxiliary + len(holdout.y_test))
        position = np.argsort(order)
        secret = list(scenario.attack.secret_classes)
        others = [label for label in range(split.num_classes) if label not in secret]
        folds = []
        # Two attackers: one without images of the secret classes, one without the others.
        # Each inverts every user's answer, and per view the one that identifies more
        # decides. An API that answers some classes with labels only (the public secret
        # classes, say) leaves the other classes' users exposed to the first attacker, and
        # one that starves the first attacker's training queries (labels only for the
        # classes it holds) feeds the second.
        for hidden in (secret, others):
            known = np.flatnonzero(~np.isin(holdout.y_auxiliary, hidden))
            folds.append(Fold(hidden, position[known], holdout.x_auxiliary[known]))
        y_test = holdout.y_test
        stage = ApiStage(
            scenario=scenario,
            split=split,
            holdout=holdout,
            victim=self._victim(scenario, split, ctx),
            key=self._stage_key(scenario, split),
            queries=np.ascontiguousarray(np.concatenate([holdout.x_auxiliary, holdout.x_test])[order]),
            test_rows=position[auxiliary:],
            folds=folds,
            pictured=np.array([int(np.flatnonzero(y_test == label)[0]) for label in secret]),
        )
        probabilities = ProtectTools.probabilities(stage.victim, stage.queries)
        stage.undefended = self._outcome(stage, probabilities, ctx)
        stage.label_only = self._outcome(stage, label_only(probabilities), ctx)
        return stage

    def _outcome(self, stage: ApiStage, outputs: np.ndarray, ctx: RunContext) -> ApiOutcome:
        """Per view of the outputs and per fold, train inversion networks on the attacker's
        own queries and invert every user's answer. Per view, the class whose
        users are identified best stands for the API: an API that protects some classes'
        users and not others has not protected its users."""
        from secureml.api_outputs import log_loss

        key = content_key(stage.key, "inversion-net", outputs)
        if key not in stage.memo:
            test_outputs = outputs[stage.test_rows]
            y_test = stage.holdout.y_test
            by_view, identification_by_view = {}, {}
            for view in stage.scenario.attack.views:
                judged = [
                    (worst_class(inversion.identification, y_test), inversion)
                    for inversion in (self._invert(stage, outputs, view, fold, key, ctx) for fold in stage.folds)
                ]
                identification_by_view[view], by_view[view] = max(judged, key=lambda pair: pair[0])
            stage.memo[key] = ApiOutcome(
                accuracy=float((test_outputs.argmax(axis=1) == y_test).mean()),
                log_loss=log_loss(test_outputs, y_test, stage.scenario.scoring.client_smoothing),
                by_view=by_view,
                identification_by_view=identification_by_view,
            )
        return stage.memo[key]

    @staticmethod
    def _invert(stage: ApiStage, outputs: np.ndarray, view: str, fold: Fold, key: str, ctx: RunContext) -> Inversion:
        """One attacker: `attack.decoders` inversion networks trained through one view on the
        answers to its own images, their mean reconstruction of every user's query, judged.

        The mean makes the measure less dependent on one draw of the weights. Judged by
        identification it hardly is: between starts it moved by 0.002 to 0.009 on
        inversion-02. (Judged by class-level attack accuracy, the label-only API's result
        was 0.58, 0.00 and 0.37 on three seeds with one decoder: a one-hot input the decoder
        never saw is decoded by its random initial weights.)
        """
        return Family.cached(
            ctx.cache,
            "inversions",
            content_key(key, view, fold.secret),
            lambda: QueryInversionFamily._attack(stage, outputs, view, fold, ctx),
            store=lambda inversion: Artefact(asdict(inversion)),
            restore=lambda stored: Inversion(**stored.arrays),
        )

    @staticmethod
    def _attack(stage: ApiStage, outputs: np.ndarray, view: str, fold: Fold, ctx: RunContext) -> Inversion:
        import numpy as np

        from secureml.api_outputs import fit_view

        attack = stage.scenario.attack
        reads = fit_view(view, outputs[fold.rows])
        training, answers = reads(outputs[fold.rows]), reads(outputs[stage.test_rows])
        images = np.mean(
            [
                invert(
                    train_inversion_net(
                        training,
                        fold.images,
                        attack,
                        seed=stage.scenario.seed,
                        progress=ctx.progress,
                        start=start,
                        view=view,
                        device=ctx.device,
                    ),
                    answers,
                )
                for start in range(attack.decoders)
            ],
            axis=0,
        ).astype(np.float32)
        users = stage.holdout.x_test
        return Inversion(
            identification=identification(images, users, stage.holdout.y_test).astype(np.float32),
            squared_error=((images - users) ** 2).reshape(len(users), -1).mean(axis=1).astype(np.float32),
            ssim=ssim(images, users).astype(np.float32),
            pictured=images[stage.pictured],
        )

    # ------------------------------------------------------------------ the mitigation's view

    def handover(self, stage: ApiStage) -> Handover:
        """The deployed model's weights and the query batch (images only, no labels)."""
        return handover_of(
            stage,
            arrays={QUERIES: {"x": stage.queries}},
            extras={"query_batch": stage.scenario.attack.query_batch},
        )

    def encode(self, returned: Any, inputs: Inputs) -> RawResult:
        """In the child: the api `protect` returned, asked the query batch; only its outputs leave."""
        import numpy as np

        api = returned
        if not callable(api):
            raise TypeError(f"{self.function_name} must return a callable api(x) -> outputs, got {type(api).__name__}")
        queries = inputs.arrays(QUERIES)["x"]
        batch_size = inputs.extras["query_batch"]
        answers = []
        for start in range(0, len(queries), batch_size):
            batch = queries[start : start + batch_size]
            outputs = _as_array(api(batch.copy())).astype(np.float32)
            if outputs.shape != (len(batch), inputs.num_classes):
                # Sent back as it is: an unusable result is for the parent's check_outputs to
                # reject (status invalid-result); raising here would report it as a crash.
                return RawResult({"outputs": np.ascontiguousarray(outputs)})
            answers.append(outputs)
        return RawResult({"outputs": np.ascontiguousarray(np.concatenate(answers))})

    def no_mitigation(self, stage: ApiStage) -> RawResult:
        return RawResult({"outputs": ProtectTools.probabilities(stage.victim, stage.queries)})

    def check_outputs(self, stage: ApiStage, raw: RawResult) -> np.ndarray:
        """One score vector per query, every score in [0, 1]."""
        import numpy as np

        if set(raw.arrays) != {"outputs"} or raw.config:
            raise invalid(f"expected one output 'outputs', got {sorted(raw.arrays)}")
        outputs = raw.arrays["outputs"]
        expected = (len(stage.queries), stage.split.num_classes)
        if outputs.shape != expected or outputs.dtype.kind != "f":
            batch = stage.scenario.attack.query_batch
            raise invalid(
                f"the api must return one row of {expected[1]} float scores per query: shape {expected} "
                f"for the {expected[0]} queries (sent {batch} at a time), got {outputs.dtype} {outputs.shape}"
            )
        # 1e-6: float32 rounding in a wrapper that renormalises.
        if outputs.size and (outputs.min() < -1e-6 or outputs.max() > 1 + 1e-6):
            raise invalid(
                f"outputs must be scores in [0, 1], found {outputs.min():.3g}..{outputs.max():.3g}; "
                "return probabilities (rounded, truncated or noisy), not logits"
            )
        return np.clip(outputs, 0.0, 1.0).astype(np.float32)

    # ------------------------------------------------------------------ grading

    def evaluate(self, stage: ApiStage, outputs: np.ndarray, ctx: RunContext) -> Evaluation:
        mitigated = self._outcome(stage, outputs, ctx)
        undefended, label_only = stage.undefended, stage.label_only
        scoring = stage.scenario.scoring
        score = inversion_api_calibrated(
            identification_none=undefended.identification_by_view,
            identification_mitigated=mitigated.identification_by_view,
            identification_label_only=label_only.identification_by_view,
            accuracy_none=undefended.accuracy,
            accuracy_mitigated=mitigated.accuracy,
            log_loss_none=undefended.log_loss,
            log_loss_mitigated=mitigated.log_loss,
            log_loss_label_only=label_only.log_loss,
            **scoring.usefulness_settings(),
        )
        view = self._deciding_view(stage, score)
        pictures = {}
        if ctx.out_dir is not None:
            pictures["inversion"] = self._picture(stage, mitigated, view, ctx.out_dir / "inversion.png")
        return Evaluation(
            metrics={
                **undefended.metrics("victim"),
                "label_only.identification": label_only.identification,
                "label_only.log_loss": label_only.log_loss,
                **mitigated.metrics("mitigated"),
                "score": score.total,
            },
            score=score,
            rows=[
                Row("full probabilities (victim)", undefended.row()),
                Row("label-only API", label_only.row(), "the leakage floor"),
                Row("your API", {**mitigated.row(), "score": score.total}, f"decided by the {view} view"),
            ],
            feedback=self._feedback(stage, mitigated, score, view),
            pictures=pictures,
            # Identification is a worst case over classes, attackers and views: derived,
            # its tolerance measured over seeds (`verify --record --seeds N`).
            samples={
                **self._samples("victim", stage),
                "label_only.log_loss": Sample.mean(len(stage.holdout.y_test), "test queries"),
                **self._samples("mitigated", stage),
            },
            details={
                "scoring": scoring.model_dump(),
                "identification_by_view": {
                    "victim": undefended.identification_by_view,
                    "label_only": label_only.identification_by_view,
                    "mitigated": mitigated.identification_by_view,
                },
            },
        )

    @staticmethod
    def _samples(prefix: str, stage: ApiStage) -> dict[str, Sample]:
        """What each metric is measured over (for `secureml verify`'s tolerances)."""
        queries = len(stage.holdout.y_test)
        return {
            f"{prefix}.accuracy": Sample.rate(queries, "test queries"),
            f"{prefix}.log_loss": Sample.mean(queries, "test queries"),
            f"{prefix}.mse": Sample.mean(queries, "test queries"),
            f"{prefix}.ssim": Sample.mean(queries, "test queries"),
        }

    @staticmethod
    def _deciding_view(stage: ApiStage, score: Score) -> str:
        """The view the defence removed least from (the one that decided the score)."""
        removed = {
            view: score.parts.get(f"leakage_removed.{view}", 1.0) for view in stage.scenario.attack.views
        }
        return min(removed, key=removed.__getitem__)

    @staticmethod
    def _feedback(stage: ApiStage, mitigated: ApiOutcome, score: Score, view: str) -> list[str]:
        """What limited the score, in numbers, followed by the scenario's hint."""
        hints: InversionHints = stage.scenario.hints
        undefended, label_only = stage.undefended, stage.label_only
        notes: list[str] = []
        same_leak = abs(mitigated.identification - undefended.identification) < 1e-9
        if same_leak and abs(mitigated.log_loss - undefended.log_loss) < 1e-9:
            notes.append(f"Your API leaks exactly as much as the full probabilities. {hints.unchanged}")
        elif score.parts["leakage_removed"] < 0.7:
            notes.append(
                f"Read as {view}, your outputs still let the attacker pick a user's image out of the "
                f"others {100 * mitigated.identification_by_view[view]:.0f}% of the time (full probabilities "
                f"{100 * undefended.identification_by_view[view]:.0f}%, labels only "
                f"{100 * label_only.identification_by_view[view]:.0f}%, "
                f"chance 50%). {hints.leakage_remaining}"
            )
        if score.capped_by or score.parts["usefulness"] < 0.9:
            notes.append(
                f"Clients lost {100 * (undefended.accuracy - mitigated.accuracy):.1f} points of accuracy and keep "
                f"{100 * score.parts['confidence_kept']:.0f}% of what confidences add over labels (log loss "
                f"{mitigated.log_loss:.3f}; full probabilities {undefended.log_loss:.3f}, labels only "
                f"{label_only.log_loss:.3f}). {hints.utility_lost}"
            )
        return closing_hint(score, notes, [], hints.success)

    def _picture(self, stage: ApiStage, mitigated: ApiOutcome, view: str, path: Path) -> Path:
        from secureml.pictures import Cell

        names = stage.split.class_names

        def cell(outcome: ApiOutcome, row: int, who: str) -> Cell:
            inversion = outcome.by_view[view]
            chance = float(inversion.identification[stage.pictured[row]])
            return Cell(inversion.pictured[row], f"{who}: closer than {100 * chance:.0f}%", highlight=chance >= 0.9)

        rows = [
            (
                f"a user's {names[label]}",
                [
                    Cell(stage.holdout.x_test[query], "the user's image"),
                    cell(stage.undefended, row, "full API"),
                    cell(mitigated, row, "your API"),
                ],
            )
            for row, (label, query) in enumerate(zip(stage.scenario.attack.secret_classes, stage.pictured, strict=True))
        ]
        title = f"{stage.scenario.id}: users' digits drawn from the API's answers, read as {view}"
        return self._draw(rows, title, path)


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
