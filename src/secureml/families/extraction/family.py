"""The extraction family: an attacker steals the deployed classifier through its API.

The trainee's `protect(model, tools)` returns the prediction API. The child calls it on
one fixed batch of queries the grader chose, 100 at a time, and sends back the output
vectors only; the grader trains the copies on them in its own process. The batch is the
attacker's queries (held-out handwriting read by another, low-resolution scanner and
upscaled: another distribution) and honest users' test images, shuffled together, unlabelled, without a
client id: the API judges each query on its own.

The attacker has read the defence: it sends its pages four ways (as scanned, binarised,
ink-matched to its own labelled digits, sharpened; `attacks.PRESENTATIONS`), each an
attacker of its own with the whole budget in the same stream. It (ART's Copycat CNN)
trains a copy on its own few labelled images and the answers to its queries, once per
view: a presentation of the pages with a reading of the answers (the labels, the soft
answer). The copy that agrees most with the victim on held-out test images, which never
pass through the API, decides. The floor is a copy trained on the attacker's labelled
images alone. Usefulness is the argmax's accuracy on the honest users' queries and the log loss
of the confidences as a client reads them (secureml.api_outputs), as in inversion-02.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secureml import models
from secureml.cache import content_key
from secureml.families.base import (
    EXACT,
    Evaluation,
    Family,
    Handover,
    Row,
    RunContext,
    Sample,
    handover_of,
)
from secureml.families.extraction.attacks import PRESENTATIONS, as_the_attacker_sends_them, rescanned, steal
from secureml.families.extraction.config import ExtractionScenario
from secureml.families.inversion.family import ProtectTools, QueryInversionFamily, closing_hint
from secureml.randomness import derive_seed, generator
from secureml.scoring import Score, extraction_calibrated
from secureml.versions import software_key

if TYPE_CHECKING:
    import numpy as np

    from secureml.datasets import Split
    from secureml.families.extraction.config import ExtractionHints

# The inputs file of the query batch `protect`'s api answers.
QUERIES = "queries"


class ExtractionTools(ProtectTools):
    """For `protect(model, tools)`: every lab's tools, tools.probabilities(model, x) (the
    API as deployed) and tools.training_set() -> (x, y), the model owner's own data."""

    def training_set(self) -> tuple[np.ndarray, np.ndarray]:
        return self._inputs.training_set()


def view_name(presentation: str, reading: str) -> str:
    """One attacker: its pages presented one way, the answers read one way. The pages as
    scanned keep the plain reading's name."""
    return reading if presentation == "as-scanned" else f"{reading} ({presentation})"


def read_answers(reading: str, outputs: np.ndarray) -> np.ndarray:
    """The class distributions the attacker trains on: "labels" one-hot argmaxes, "soft"
    the answer as a client reads it (renormalised, unreported mass spread evenly)."""
    import numpy as np

    from secureml.api_outputs import client_distribution, label_only

    if reading == "labels":
        return label_only(outputs)
    return client_distribution(outputs, smoothing=0.0).astype(np.float32)


@dataclass(frozen=True)
class Copy:
    """One copy, judged on the held-out test images."""

    fidelity: float  # agreement with the victim's argmax
    accuracy: float  # against the true labels


@dataclass(frozen=True)
class ApiOutcome:
    """What one set of API outputs gives the attacker, and what it is worth to a client."""

    accuracy: float  # of the argmax on honest users' queries
    log_loss: float  # of the client's reading of the outputs on those queries
    # Per view (presentation of the pages and reading of the answers, `view_name`), per
    # number of queries used (the first ones of the budget): the copy trained on them. The
    # attacker keeps its most faithful copy.
    copies: dict[str, dict[int, Copy]]

    def best(self, reading: str) -> tuple[int, Copy]:
        """The most faithful copy of one reading, and the queries it used."""
        return max(self.copies[reading].items(), key=lambda item: item[1].fidelity)

    @property
    def worst(self) -> tuple[int, Copy]:
        """The most faithful copy of all (the attacker keeps the best one it made)."""
        return max((self.best(reading) for reading in self.copies), key=lambda item: item[1].fidelity)

    def fidelity_by_reading(self) -> dict[str, float]:
        return {reading: self.best(reading)[1].fidelity for reading in self.copies}

    def metrics(self, prefix: str) -> dict[str, float]:
        queries, copy = self.worst
        return {
            f"{prefix}.accuracy": self.accuracy,
            f"{prefix}.log_loss": self.log_loss,
            f"{prefix}.fidelity": copy.fidelity,
            f"{prefix}.copy_accuracy": copy.accuracy,
            f"{prefix}.queries_used": float(queries),
        }

    def row(self) -> dict[str, float]:
        queries, copy = self.worst
        return {
            "fidelity": copy.fidelity,
            "copy acc": copy.accuracy,
            "queries": float(queries),
            "accuracy": self.accuracy,
            "log_loss": self.log_loss,
        }


@dataclass
class ExtractionStage:
    scenario: Any
    split: Split
    victim: Any
    key: str
    x_labelled: np.ndarray  # the attacker's own labelled images
    y_labelled: np.ndarray
    # The query batch and which rows are whose (the grader's secret). attacker_rows, per
    # presentation, are in the attacker's own order: a curve point on a share of the budget
    # takes the first ones.
    queries: np.ndarray
    attacker_rows: dict[str, np.ndarray]
    user_rows: np.ndarray
    y_users: np.ndarray
    x_test: np.ndarray  # never sent through the API: the copies are judged on them
    y_test: np.ndarray
    victim_test: np.ndarray  # the victim's argmax on x_test
    floor: Copy = field(init=False)
    undefended: ApiOutcome = field(init=False)
    label_only_log_loss: float = field(init=False)
    memo: dict[str, ApiOutcome] = field(default_factory=dict)

    @property
    def views(self) -> dict[str, tuple[str, str]]:
        """Every attacker: view name -> (presentation, reading)."""
        attack = self.scenario.attack
        return {
            view_name(presentation, reading): (presentation, reading)
            for presentation in attack.presentations
            for reading in attack.readings
        }


class ExtractionFamily(Family[ExtractionStage, "np.ndarray"]):
    name = "extraction"
    schema = ExtractionScenario
    tools = ExtractionTools

    # The API's contract is inversion-02's: called in the child on the query batch, its
    # outputs checked in the parent (shape, finite scores in [0, 1]). Those methods read
    # only what both stages have: queries, split, victim and scenario.attack.query_batch.
    encode = QueryInversionFamily.encode
    no_mitigation = QueryInversionFamily.no_mitigation  # type: ignore[assignment]
    check_outputs = QueryInversionFamily.check_outputs  # type: ignore[assignment]

    def prepare(self, scenario: ExtractionScenario, split: Split, ctx: RunContext) -> ExtractionStage:
        """The victim, the attacker's images, the shuffled query batch; then the floor and
        the undefended API's copies (each cached)."""
        import numpy as np

        from secureml.api_outputs import label_only, log_loss
        from secureml.datasets import stratified_split

        attack, holdout = scenario.attack, scenario.holdout
        labelled_rows, user_rows = stratified_split(
            split.y_test, holdout.labelled, holdout.users, generator(scenario.seed, "holdout"), dataset=split.name
        )
        rest = np.setdiff1d(np.arange(len(split.y_test)), np.concatenate([labelled_rows, user_rows]))
        rest = rest[generator(scenario.seed, "attacker-queries").permutation(len(rest))]
        # The attacker's unlabelled pages: held-out digits, read by another scanner; the rest
        # of the pool measures the copies. Neither is passed to the trainee's code (though
        # both are mnist-5k images, which a trainee holds: tests/test_known_holes.py).
        scanned_rows, test_rows = rest[: attack.budget], np.sort(rest[attack.budget :])
        attacker_queries = as_the_attacker_sends_them(
            rescanned(split.x_test[scanned_rows], attack.digit_side, scan=attack.scan, levels=attack.levels),
            generator(scenario.seed, "attacker-jitter"),
            shift=min(2, (min(split.shape[-2:]) - attack.digit_side) // 2),  # never across the frame's edge
        )
        x_labelled = np.ascontiguousarray(split.x_test[labelled_rows])
        # Each presentation of the pages is an attacker of its own, in the same stream.
        presented = [PRESENTATIONS[name](attacker_queries, x_labelled) for name in attack.presentations]
        batch = np.concatenate([*presented, split.x_test[user_rows]])
        order = generator(scenario.seed, "query-order").permutation(len(batch))
        position = np.argsort(order)  # where each query ended up in the shuffled batch
        attacker_rows = {
            name: position[index * attack.budget : (index + 1) * attack.budget]
            for index, name in enumerate(attack.presentations)
        }
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
        x_test = np.ascontiguousarray(split.x_test[test_rows])
        stage = ExtractionStage(
            scenario=scenario,
            split=split,
            victim=victim,
            key=content_key(
                "extraction-stage",
                scenario.model_dump(mode="json", include={"attack", "victim", "holdout"}),
                split.sha256,
                scenario.seed,
                software_key("secureml.families.extraction"),
            ),
            x_labelled=x_labelled,
            y_labelled=split.y_test[labelled_rows],
            queries=np.ascontiguousarray(batch[order]),
            attacker_rows=attacker_rows,
            user_rows=position[len(presented) * attack.budget :],
            y_users=split.y_test[user_rows],
            x_test=x_test,
            y_test=split.y_test[test_rows],
            victim_test=models.predict(victim, x_test),
        )
        stage.floor = self._copy(stage, None, next(iter(stage.views)), 0, ctx)
        probabilities = ProtectTools.probabilities(stage.victim, stage.queries)
        stage.undefended = self._outcome(stage, probabilities, ctx)
        stage.label_only_log_loss = log_loss(
            label_only(probabilities[stage.user_rows]), stage.y_users, scenario.scoring.client_smoothing
        )
        return stage

    def _outcome(self, stage: ExtractionStage, outputs: np.ndarray, ctx: RunContext) -> ApiOutcome:
        """Per reading of the answers, one copy per share of the budget; and the users' view."""
        from secureml.api_outputs import log_loss

        key = content_key(stage.key, "outcome", outputs)
        if key not in stage.memo:
            users = outputs[stage.user_rows]
            stage.memo[key] = ApiOutcome(
                accuracy=float((users.argmax(axis=1) == stage.y_users).mean()),
                log_loss=log_loss(users, stage.y_users, stage.scenario.scoring.client_smoothing),
                copies={
                    view: {count: self._copy(stage, outputs, view, count, ctx) for count in self._counts(stage)}
                    for view in stage.views
                },
            )
        return stage.memo[key]

    @staticmethod
    def _counts(stage: ExtractionStage) -> list[int]:
        """How many of its queries the attacker trains a copy on: shares of the budget, and
        all of it. Fewer answers can make a better copy (at the same number of steps, the
        10 labelled images weigh more): measured 0.63 from 250 answers read as labels,
        0.59 from 1,000 (seed 1234)."""
        attack = stage.scenario.attack
        return sorted({*(max(1, round(share * attack.budget)) for share in attack.curve), attack.budget})

    def _copy(
        self, stage: ExtractionStage, outputs: np.ndarray | None, view: str, queries: int, ctx: RunContext
    ) -> Copy:
        """The copy trained on the attacker's labelled images and the answers to its first
        `queries` queries, presented and read as `view` says (cached by those answers)."""
        import numpy as np

        presentation, reading = stage.views[view]
        rows = stage.attacker_rows[presentation][:queries]
        answers = (
            read_answers(reading, outputs[rows])
            if outputs is not None and queries
            else np.zeros((0, stage.split.num_classes), dtype=np.float32)
        )
        # A zero-size array has no bytes to hash: the floor is keyed by name. The same
        # answers to other pages make another copy: the presentation is part of the key.
        key = content_key(stage.key, "copy", presentation, answers) if len(answers) else content_key(
            stage.key, "copy", "no queries"
        )
        predictions = self.cached_arrays(
            ctx.cache,
            "extraction-copies",
            key,
            lambda: {"predictions": self._steal(stage, answers, rows, ctx)},
        )["predictions"]
        return Copy(
            fidelity=float((predictions == stage.victim_test).mean()),
            accuracy=float((predictions == stage.y_test).mean()),
        )

    @staticmethod
    def _steal(stage: ExtractionStage, answers: np.ndarray, rows: np.ndarray, ctx: RunContext) -> np.ndarray:
        import numpy as np

        split, attack = stage.split, stage.scenario.attack
        own = np.eye(split.num_classes, dtype=np.float32)[stage.y_labelled]
        # Every copy takes as many optimiser steps as the one on the whole budget: a copy
        # on fewer images is not undertrained. With the same 10 epochs, the copy on 100
        # labelled images alone agreed 0.45 with the victim, and 0.80 after as many steps
        # as the copy on 1,100 images took (seed 1234): the old floor was a training artefact.
        queries = len(rows)
        images = len(own) + queries
        steps = attack.epochs * -(-(len(own) + attack.budget) // attack.batch_size)
        copy = steal(
            np.concatenate([stage.x_labelled, stage.queries[rows]]),
            np.concatenate([own, answers]),
            attack.model_copy(update={"epochs": -(-steps // -(-images // attack.batch_size))}),
            input_shape=split.shape,
            num_classes=split.num_classes,
            # One seed for every copy: two copies differ only by the answers they learned from.
            seed=derive_seed(stage.scenario.seed, "copy"),
            progress=ctx.progress,
            label=f"copying the model from {queries} answers (ART Copycat CNN)",
        )
        return models.predict(copy, stage.x_test).astype(np.int64)

    # ------------------------------------------------------------------ the mitigation's view

    def handover(self, stage: ExtractionStage) -> Handover:
        """The deployed model, its training set (the owner's own data, to fit a detector on)
        and the query batch (images only, no labels, no client ids)."""
        return handover_of(
            stage,
            training_set=(stage.split.x_train, stage.split.y_train),
            arrays={QUERIES: {"x": stage.queries}},
            extras={"query_batch": stage.scenario.attack.query_batch},
        )

    # ------------------------------------------------------------------ grading

    def evaluate(self, stage: ExtractionStage, outputs: np.ndarray, ctx: RunContext) -> Evaluation:
        mitigated = self._outcome(stage, outputs, ctx)
        undefended = stage.undefended
        scoring = stage.scenario.scoring
        score = extraction_calibrated(
            fidelity_none=undefended.fidelity_by_reading(),
            fidelity_mitigated=mitigated.fidelity_by_reading(),
            fidelity_floor=stage.floor.fidelity,
            accuracy_none=undefended.accuracy,
            accuracy_mitigated=mitigated.accuracy,
            log_loss_none=undefended.log_loss,
            log_loss_mitigated=mitigated.log_loss,
            log_loss_label_only=stage.label_only_log_loss,
            **scoring.usefulness_settings(),
        )
        reading = self._deciding_reading(stage, score)
        pictures = {}
        if ctx.out_dir is not None:
            pictures["fidelity"] = self._picture(stage, mitigated, reading, ctx.out_dir / "fidelity.png")
        budget = stage.scenario.attack.budget
        return Evaluation(
            metrics={
                **undefended.metrics("victim"),
                "floor.fidelity": stage.floor.fidelity,
                "floor.copy_accuracy": stage.floor.accuracy,
                "label_only.log_loss": stage.label_only_log_loss,
                **mitigated.metrics("mitigated"),
                "budget": float(budget),
                "score": score.total,
            },
            score=score,
            rows=[
                Row("full probabilities (victim)", undefended.row()),
                Row(
                    "attacker's own labels only",
                    {"fidelity": stage.floor.fidelity, "copy acc": stage.floor.accuracy},
                    f"the floor: {len(stage.y_labelled)} labelled images, no query",
                ),
                Row("your API", {**mitigated.row(), "score": score.total}, f"decided by the {reading} reading"),
            ],
            feedback=self._feedback(stage, mitigated, score, reading),
            pictures=pictures,
            samples={
                **self._samples("victim", stage),
                "floor.fidelity": Sample.rate(len(stage.y_test), "test images"),
                "floor.copy_accuracy": Sample.rate(len(stage.y_test), "test images"),
                "label_only.log_loss": Sample.mean(len(stage.y_users), "users' queries"),
                **self._samples("mitigated", stage),
                "budget": EXACT,
            },
            details={
                "scoring": scoring.model_dump(),
                "fidelity_by_reading": {
                    "victim": undefended.fidelity_by_reading(),
                    "mitigated": mitigated.fidelity_by_reading(),
                },
            },
        )

    @staticmethod
    def _samples(prefix: str, stage: ExtractionStage) -> dict[str, Sample]:
        """What each metric is measured over (for `secureml verify`'s tolerances). The
        fidelity is the most faithful of the readings' copies: derived, its tolerance
        measured over seeds (`verify --record --seeds N`)."""
        users = len(stage.y_users)
        shares = len(ExtractionFamily._counts(stage))
        return {
            f"{prefix}.accuracy": Sample.rate(users, "users' queries"),
            f"{prefix}.log_loss": Sample.mean(users, "users' queries"),
            # With shares of the budget, recorded over 3 seeds x threads 2,1 its SD was 129
            # (mitigated) and 258 (victim): 3 SD spanned every share. Without, it is the budget.
            f"{prefix}.queries_used": EXACT if shares == 1 else Sample.report(
                f"the budget share whose copy was most faithful, a pick among {shares} shares"
            ),
        }

    @staticmethod
    def _deciding_reading(stage: ExtractionStage, score: Score) -> str:
        """The reading the defence removed least from (the one that decided the score); of
        readings tied there, the one the undefended API taught most."""
        undefended = stage.undefended.fidelity_by_reading()
        return min(
            stage.views,
            key=lambda view: (score.parts.get(f"fidelity_removed.{view}", 1.0), -undefended[view]),
        )

    @staticmethod
    def _feedback(stage: ExtractionStage, mitigated: ApiOutcome, score: Score, reading: str) -> list[str]:
        """What limited the score, in numbers, followed by the scenario's hint."""
        hints: ExtractionHints = stage.scenario.hints
        undefended = stage.undefended
        notes: list[str] = []
        same = mitigated.copies == undefended.copies
        if same and abs(mitigated.log_loss - undefended.log_loss) < 1e-9:
            notes.append(f"The copy is exactly as good as against the full probabilities. {hints.unchanged}")
        elif score.parts["fidelity_removed"] < 0.7:
            notes.append(
                f"Trained on your answers read as {reading}, the attacker's copy agrees with your model on "
                f"{100 * mitigated.best(reading)[1].fidelity:.0f}% of unseen images (full probabilities "
                f"{100 * undefended.best(reading)[1].fidelity:.0f}%, its own {len(stage.y_labelled)} labelled "
                f"images alone {100 * stage.floor.fidelity:.0f}%). {hints.copy_remaining}"
            )
        if score.capped_by or score.parts["usefulness"] < 0.9:
            notes.append(
                f"Honest users lost {100 * (undefended.accuracy - mitigated.accuracy):.1f} points of accuracy and "
                f"keep {100 * score.parts['confidence_kept']:.0f}% of what confidences add over labels (log loss "
                f"{mitigated.log_loss:.3f}; full probabilities {undefended.log_loss:.3f}, labels only "
                f"{stage.label_only_log_loss:.3f}). {hints.utility_lost}"
            )
        return closing_hint(score, notes, [], hints.success)

    def _picture(self, stage: ExtractionStage, mitigated: ApiOutcome, reading: str, path: Path) -> Path:
        """Per view (presentation of the pages, reading of the answers), the most faithful
        copy's agreement with the model, undefended and mitigated, over the floor."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        views = list(stage.views)
        at = np.arange(len(views))
        figure, axis = plt.subplots(figsize=(max(5.6, 1.1 * len(views) + 1.5), 3.8))
        for offset, label, outcome in (
            (-0.2, "full probabilities (undefended)", stage.undefended),
            (0.2, "your API", mitigated),
        ):
            fidelity = outcome.fidelity_by_reading()
            axis.bar(at + offset, [fidelity[view] for view in views], width=0.4, label=label)
        axis.axhline(stage.floor.fidelity, color="grey", linestyle=":", label="own labelled images alone")
        axis.set_xticks(at, [view.replace(" (", "\n(") for view in views], fontsize=8)
        axis.set_ylabel("copy's agreement with the model")
        axis.set_ylim(0, 1.2)  # room for the legend above the bars
        axis.set_yticks(np.linspace(0, 1, 6))
        axis.grid(alpha=0.3, axis="y")
        axis.legend(fontsize=8, loc="upper center", ncol=3)
        axis.set_title(f"{stage.scenario.id}: ART Copycat CNN per view; {reading} decided", fontsize=10)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return path


FAMILY = ExtractionFamily()
