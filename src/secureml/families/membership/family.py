"""The membership family: is this record in the training set? (OWASP ML04)

The trainee's `train(x, y, tools)` gets the members (the private training set) and returns
a model of the victim's architecture. Only its weights leave the child; the grader loads
them into a fresh model and runs every attack of the suite (loss threshold, loss over
shifts, ART's shadow-model black-box attack, ART's label-only gap attack) on members and
non-members the trainee's code is never given, computing the model's outputs itself. The attack
that finds the most (the highest membership advantage) decides, for the returned model
and for the undefended victim alike. The floor is the same worst case against a model
trained with the victim's recipe on other records: to it both groups are non-members.

Held-out pool (dataset.test_size), drawn per seed and `holdout.draw`, stratified:
evaluation non-members | the attacker's own records | the floor model's | the test set.
Evaluation members: as many records, drawn from the training set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secureml import models
from secureml.cache import content_key
from secureml.families.base import (
    Evaluation,
    Family,
    Handover,
    ModelFamily,
    Row,
    RunContext,
    Sample,
    handover_of,
    invalid,
)
from secureml.families.membership.attacks import ATTACKS, Roc, Shadow, build_suite, null_advantages, roc
from secureml.families.membership.config import MembershipScenario
from secureml.randomness import derive_seed, generator
from secureml.scoring import Score, membership_calibrated
from secureml.versions import software_key

if TYPE_CHECKING:
    import numpy as np

    from secureml.datasets import Split

# Scores from this up earn the scenario's success hint.
SUCCESS_SCORE = 80
# Random partitions the noise floor is averaged over. One partition's worst-case advantage
# on the floor model ranged 0.023-0.039 between runs of membership-01 (the black-box
# attack's forest is the noisiest part); the mean of 32 was 0.047-0.049 on seeds 1234-1236
# and the trainee's variant.
NULL_DRAWS = 32


@dataclass(frozen=True)
class Pools:
    """The records each party holds: evaluation members and non-members (the grader's),
    the attacker's, the floor model's training set, and the test set."""

    x_eval: np.ndarray  # members first, then as many non-members
    y_eval: np.ndarray
    members: int
    x_attacker: np.ndarray
    y_attacker: np.ndarray
    x_floor: np.ndarray
    y_floor: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass
class Outcome:
    """What the suite finds in one model, and the model's test accuracy."""

    accuracy: float
    scores: dict[str, np.ndarray]  # per attack: the members' scores, then the non-members'
    members: int
    rocs: dict[str, Roc] = field(init=False)

    def __post_init__(self) -> None:
        members = self.members
        self.rocs = {name: roc(values[:members], values[members:]) for name, values in self.scores.items()}

    @property
    def worst(self) -> str:
        """The attack that finds the most (first in suite order on a tie)."""
        return max(self.rocs, key=lambda name: self.rocs[name].advantage)

    @property
    def advantage(self) -> float:
        return self.rocs[self.worst].advantage

    def metrics(self, prefix: str, low_fpr: float) -> dict[str, float]:
        rocs = self.rocs.values()
        return {
            f"{prefix}.accuracy": self.accuracy,
            f"{prefix}.advantage": self.advantage,
            f"{prefix}.auc": max(curve.auc for curve in rocs),
            f"{prefix}.tpr_low_fpr": max(curve.tpr_at(low_fpr) for curve in rocs),
            **{f"{prefix}.advantage.{name}": curve.advantage for name, curve in self.rocs.items()},
        }

    def row(self, low_fpr: float) -> dict[str, float]:
        metrics = self.metrics("row", low_fpr)
        return {name: metrics[f"row.{name}"] for name in ("accuracy", "advantage", "auc", "tpr_low_fpr")}


@dataclass
class MembershipStage:
    scenario: MembershipScenario
    split: Split
    pools: Pools
    victim: Any
    suite: dict[str, Any]
    key: str
    undefended: Outcome = field(init=False)
    floor: Outcome = field(init=False)
    # The noise floor: the floor model's worst-case advantage, per random partition; its
    # mean is the floor.
    floor_advantages: np.ndarray = field(init=False)
    # Outcomes already computed in this process, by content key (also without a disk cache).
    memo: dict[str, Outcome] = field(default_factory=dict)

    @property
    def floor_advantage(self) -> float:
        return float(self.floor_advantages.mean())


class MembershipFamily(ModelFamily[MembershipStage]):
    name = "membership"
    schema = MembershipScenario

    def prepare(self, scenario: MembershipScenario, split: Split, ctx: RunContext) -> MembershipStage:
        """The victim, the attacker's shadow model and the floor model (each cached), the
        suite, and what it finds in the victim and in the floor model."""
        pools = self._pools(scenario, split)
        half = len(pools.y_attacker) // 2

        def train(x, y, role: str, label: str):
            seed = scenario.seed if role == "victim" else derive_seed(scenario.seed, role)
            return models.train_cached(
                ctx.cache, scenario.victim, x, y, num_classes=split.num_classes, seed=seed,
                device=ctx.device, progress=ctx.progress, label=label,
            )  # fmt: skip

        shadow = Shadow(
            train(pools.x_attacker[:half], pools.y_attacker[:half], "shadow", "the attacker trains its shadow model"),
            pools.x_attacker[:half], pools.y_attacker[:half], pools.x_attacker[half:], pools.y_attacker[half:],
        )  # fmt: skip
        stage = MembershipStage(
            scenario=scenario,
            split=split,
            pools=pools,
            victim=train(split.x_train, split.y_train, "victim", "training the victim on the members"),
            suite=build_suite(scenario.attack, shadow, derive_seed(scenario.seed, "attack-model")),
            key=content_key(
                "membership-stage",
                scenario.model_dump(mode="json", include={"attack", "victim", "holdout"}),
                split.sha256,
                scenario.seed,
                software_key("secureml.families.membership"),
            ),
        )
        floor_model = train(pools.x_floor, pools.y_floor, "floor", "training the floor model on other records")
        stage.undefended = self._outcome(stage, stage.victim, ctx)
        stage.floor = self._outcome(stage, floor_model, ctx)
        stage.floor_advantages = null_advantages(
            stage.floor.scores, pools.members, generator(scenario.seed, "null-partitions"), NULL_DRAWS
        )
        return stage

    @staticmethod
    def _pools(scenario: MembershipScenario, split: Split) -> Pools:
        import numpy as np

        from secureml.datasets import stratified_split

        holdout = scenario.holdout
        rng = generator(scenario.seed, "holdout", holdout.draw)
        nonmembers, attacker = stratified_split(
            split.y_test, holdout.nonmembers, holdout.attacker, rng, dataset=split.name
        )
        rest = np.setdiff1d(np.arange(len(split.y_test)), np.concatenate([nonmembers, attacker]))
        floor_in_rest, _ = stratified_split(split.y_test[rest], holdout.floor, 0, rng, dataset=split.name)
        floor = rest[floor_in_rest]
        test = np.setdiff1d(rest, floor)
        members, _ = stratified_split(split.y_train, holdout.nonmembers, 0, rng, dataset=split.name)

        def take(x, y, rows):
            return np.ascontiguousarray(x[rows]), np.ascontiguousarray(y[rows])

        x_members, y_members = take(split.x_train, split.y_train, members)
        x_nonmembers, y_nonmembers = take(split.x_test, split.y_test, nonmembers)
        return Pools(
            np.concatenate([x_members, x_nonmembers]),
            np.concatenate([y_members, y_nonmembers]),
            len(members),
            *take(split.x_test, split.y_test, attacker),
            *take(split.x_test, split.y_test, floor),
            *take(split.x_test, split.y_test, test),
        )

    def _outcome(self, stage: MembershipStage, model, ctx: RunContext) -> Outcome:
        """The suite's scores on the evaluation records (cached by the model's weights)."""
        import numpy as np

        weights = models.model_arrays(model)
        key = content_key(stage.key, "membership", *[weights[name] for name in sorted(weights)], sorted(weights))
        if key not in stage.memo:
            pools = stage.pools

            def attack() -> dict[str, np.ndarray]:
                with ctx.progress.task("membership attacks", total=len(stage.suite)) as task:
                    scores = {}
                    for name, suite_attack in stage.suite.items():
                        scores[name] = suite_attack.scores(model, pools.x_eval, pools.y_eval)
                        task.advance()
                accuracy = models.accuracy(model, pools.x_test, pools.y_test)
                return {**scores, "accuracy": np.array([accuracy])}

            arrays = Family.cached_arrays(ctx.cache, "membership", key, attack)
            stage.memo[key] = Outcome(
                accuracy=float(arrays["accuracy"][0]),
                scores={name: arrays[name] for name in stage.suite},
                members=pools.members,
            )
        return stage.memo[key]

    # ------------------------------------------------------------------ the mitigation's view

    def handover(self, stage: MembershipStage) -> Handover:
        """The members and the victim's recipe and weights (so tools.train is instant)."""
        return handover_of(stage, training_set=(stage.split.x_train, stage.split.y_train))

    def check_outputs(self, stage: MembershipStage, raw) -> Any:
        """The victim's architecture, and finite outputs on every record the grader asks about."""
        import numpy as np

        model = super().check_outputs(stage, raw)
        for name, x in (("evaluation", stage.pools.x_eval), ("test", stage.pools.x_test)):
            if not np.isfinite(models.logits(model, x)).all():
                raise invalid(
                    f"the returned model's outputs are not finite (inf or NaN) on some {name} records; "
                    "check the training loop for a diverging loss"
                )
        return model

    # ------------------------------------------------------------------ grading

    def evaluate(self, stage: MembershipStage, model, ctx: RunContext) -> Evaluation:
        mitigated = self._outcome(stage, model, ctx)
        undefended, floor = stage.undefended, stage.floor
        scenario = stage.scenario
        low_fpr = scenario.attack.low_fpr
        score = membership_calibrated(
            advantage_none=undefended.advantage,
            advantage_mitigated=mitigated.advantage,
            advantage_floor=stage.floor_advantage,
            accuracy_none=undefended.accuracy,
            accuracy_mitigated=mitigated.accuracy,
            max_accuracy_drop=scenario.scoring.max_accuracy_drop,
        )
        pictures = {}
        if ctx.out_dir is not None:
            pictures["roc"] = self._picture(stage, mitigated, ctx.out_dir / "roc.png")
        title = ATTACKS[mitigated.worst].title
        return Evaluation(
            metrics={
                **undefended.metrics("victim", low_fpr),
                "floor.accuracy": floor.accuracy,
                "floor.advantage": stage.floor_advantage,
                **mitigated.metrics("mitigated", low_fpr),
                "score": score.total,
            },
            score=score,
            rows=[
                Row("no mitigation (victim)", undefended.row(low_fpr), f"worst: {ATTACKS[undefended.worst].title}"),
                Row(
                    "floor (other records)",
                    {"accuracy": floor.accuracy, "advantage": stage.floor_advantage},
                    f"noise: mean of {NULL_DRAWS} partitions",
                ),
                Row("your mitigation", {**mitigated.row(low_fpr), "score": score.total}, f"worst: {title}"),
            ],
            feedback=self._feedback(stage, mitigated, score),
            pictures=pictures,
            # The advantages, AUCs and TPRs are worst cases over attacks and thresholds:
            # derived, their tolerances measured over seeds (`verify --record --seeds N`).
            # The floor is a mean over random partitions: its standard error bounds its band.
            samples={
                **{
                    f"{prefix}.accuracy": Sample.rate(len(stage.pools.y_test), "test images")
                    for prefix in ("victim", "floor", "mitigated")
                },
                "floor.advantage": Sample.mean(
                    len(stage.floor_advantages),
                    "random partitions of the evaluation records (the floor model saw none)",
                    sd=float(stage.floor_advantages.std(ddof=1)),
                ),
            },
            details={
                "scoring": scenario.scoring.model_dump(),
                "evaluation_records": {
                    "members": stage.pools.members,
                    "nonmembers": len(stage.pools.y_eval) - stage.pools.members,
                },
                "worst_attack": {"victim": undefended.worst, "floor": floor.worst, "mitigated": mitigated.worst},
            },
        )

    @staticmethod
    def _feedback(stage: MembershipStage, mitigated: Outcome, score: Score) -> list[str]:
        """What limited the score, in numbers, followed by the scenario's hint."""
        hints = stage.scenario.hints
        undefended = stage.undefended
        notes: list[str] = []
        unchanged = abs(mitigated.advantage - undefended.advantage) < 1e-9
        if unchanged and abs(mitigated.accuracy - undefended.accuracy) < 1e-9:
            notes.append(f"Your model leaks exactly as much as the victim. {hints.unchanged}")
        elif score.parts["leakage_removed"] < 0.7:
            notes.append(
                f"The {ATTACKS[mitigated.worst].title} attack still tells members from non-members with an "
                f"advantage of {mitigated.advantage:.3f} (victim {undefended.advantage:.3f}, noise floor "
                f"{stage.floor_advantage:.3f}). {hints.leakage_remaining}"
            )
        if score.capped_by or score.parts["utility_kept"] < 0.9:
            notes.append(
                f"Test accuracy {mitigated.accuracy:.3f} against the victim's {undefended.accuracy:.3f}. "
                f"{hints.utility_lost}"
            )
        if score.total >= SUCCESS_SCORE and not notes:
            return [hints.success]
        return notes

    @staticmethod
    def _picture(stage: MembershipStage, mitigated: Outcome, path: Path) -> Path:
        """ROC curves of the worst attack (victim, mitigated, floor): linear axes, where the
        advantage is the widest vertical gap to the diagonal, and log-log axes, where the
        TPR at a low FPR shows (Carlini et al. 2022)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        nonmembers = len(stage.pools.y_eval) - stage.pools.members
        lowest = 0.5 / nonmembers  # below one false positive: where the log axes start
        figure, axes = plt.subplots(1, 2, figsize=(9.5, 4.4))
        curves = [
            ("no mitigation", stage.undefended, "-"),
            ("your mitigation", mitigated, "-"),
            ("floor model (this partition)", stage.floor, ":"),
        ]
        for axis, log in zip(axes, (False, True), strict=True):
            low = lowest if log else 0.0
            for label, outcome, style in curves:
                curve = outcome.rocs[outcome.worst]
                axis.plot(
                    curve.fpr.clip(low), curve.tpr.clip(low), style,
                    label=f"{label}: {ATTACKS[outcome.worst].title}, adv {curve.advantage:.3f}",
                )  # fmt: skip
            axis.plot([low, 1], [low, 1], color="grey", linewidth=0.8, linestyle="--", label="chance")
            if log:
                axis.axvline(stage.scenario.attack.low_fpr, color="grey", linewidth=0.8, linestyle=":")
                axis.set_xscale("log")
                axis.set_yscale("log")
            axis.set_xlim(low, 1)
            axis.set_ylim(low, 1)
            axis.set_xlabel(f"false positive rate ({nonmembers} non-members)")
            axis.set_ylabel("true positive rate (members)")
            axis.grid(alpha=0.3, which="both")
        axes[0].legend(fontsize=7, loc="lower right")
        figure.suptitle(f"{stage.scenario.id}: membership inference, ROC of the worst attack", fontsize=10)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return path


FAMILY = MembershipFamily()
