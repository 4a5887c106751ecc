"""The poisoning family: a backdoored training set, a trainee's `sanitize`, and the grader.

The trainee's `sanitize(x, y, tools)` sees only the (poisoned) training set and a trainer
like the victim's. It returns the indices to keep. The grader retrains the victim on them
with the scenario's own trainer and seed, and measures clean accuracy (CA) on the clean
test set and attack success rate (ASR) on triggered test images, neither of which is
given to the mitigation.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secureml import models
from secureml.cache import content_key
from secureml.errors import ConfigError
from secureml.families.base import (
    Artefact,
    Evaluation,
    Family,
    Handover,
    Inputs,
    Row,
    RunContext,
    Sample,
    Tools,
    handover_of,
    invalid,
)
from secureml.families.poisoning.attacks import ATTACKS, PoisonedSet, trigger_change, triggered_test_set
from secureml.families.poisoning.config import PoisoningScenario
from secureml.families.poisoning.defences import BASELINES
from secureml.mitigation import RawResult
from secureml.randomness import generator
from secureml.scoring import LUCK_FILTERS, LUCK_SD, Score, der_calibrated, luck_can_change
from secureml.versions import software_key

if TYPE_CHECKING:
    import numpy as np

    from secureml.datasets import Split

# A trigger must change an image by at least one full pixel's worth (summed absolute change);
# less is a scenario error, not an attack: e.g. a dark trigger on MNIST's black background.
MIN_TRIGGER_CHANGE = 1.0
# The victim's attack success rate must exceed a poison-free model's by this much. It is
# measured on about 900 triggered test images (standard error below 0.02); working
# backdoors here reach 0.6 (clean-label) to 1.0, failed ones 0.01-0.07.
MIN_BACKDOOR_EFFECT = 0.2


@dataclass(frozen=True)
class Outcome:
    """What a model trained on some subset does: CA on clean test data, ASR on triggered data."""

    clean_accuracy: float
    attack_success_rate: float


@dataclass(frozen=True)
class Filtered:
    """A filter's result: how it was scored and how well it found the poison."""

    outcome: Outcome
    score: Score
    random: Outcome
    kept: int
    poison_removed: float  # share of the poison dropped (recall)
    clean_dropped: float  # share of the clean samples dropped


@dataclass(frozen=True)
class Luck:
    """How far retraining alone moves the attack success rate: models retrained after
    dropping as many samples as there is poison, chosen at random (`scoring.LUCK_FILTERS`)."""

    outcomes: tuple[Outcome, ...]

    @property
    def asr_mean(self) -> float:
        return statistics.fmean(o.attack_success_rate for o in self.outcomes)

    @property
    def asr_sd(self) -> float:
        return statistics.stdev(o.attack_success_rate for o in self.outcomes)

    @property
    def lucky_asr(self) -> float:
        """The ASR of a random filter `LUCK_SD` standard deviations luckier than the mean."""
        return max(0.0, self.asr_mean - LUCK_SD * self.asr_sd)


@dataclass
class PoisoningStage:
    scenario: PoisoningScenario
    split: Split
    poisoned: PoisonedSet
    victim: Any
    x_triggered: np.ndarray
    y_triggered: np.ndarray
    undefended: Outcome
    perfect: Outcome
    key: str
    luck: Luck | None = None
    baselines: dict[str, Filtered] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.poisoned.y)


class PoisoningTools(Tools):
    """Every lab's tools (`Tools`), and tools.features(model, x) -> penultimate-layer
    activations, shape (N, D)."""

    @staticmethod
    def features(model, x: np.ndarray) -> np.ndarray:
        return models.features(model, x)


class PoisoningFamily(Family[PoisoningStage, "np.ndarray"]):
    name = "poisoning"
    schema = PoisoningScenario
    tools = PoisoningTools

    # ------------------------------------------------------------------ stage

    def prepare(self, scenario: PoisoningScenario, split: Split, ctx: RunContext) -> PoisoningStage:
        """Poison the data, train the victim, run the baselines. Every step is cached."""
        software = software_key("secureml.families.poisoning")
        key = content_key(
            "poisoning-stage",
            scenario.attack.model_dump(mode="json"),
            scenario.victim.model_dump(mode="json"),
            split.sha256,
            scenario.seed,
            software,
        )
        # First, so that a trigger that cannot take hold fails before any poisoning or training.
        x_triggered, y_triggered = self._triggered(scenario, split, key, ctx)
        poisoned = self._poison(scenario, split, key, ctx)
        victim = models.train_cached(
            ctx.cache,
            scenario.victim,
            poisoned.x,
            poisoned.y,
            num_classes=split.num_classes,
            seed=scenario.seed,
            device=ctx.device,
            progress=ctx.progress,
            label="training the victim on the poisoned set",
        )
        stage = PoisoningStage(
            scenario=scenario,
            split=split,
            poisoned=poisoned,
            victim=victim,
            x_triggered=x_triggered,
            y_triggered=y_triggered,
            undefended=Outcome(0.0, 0.0),
            perfect=Outcome(0.0, 0.0),
            key=key,
        )
        stage.undefended = self._measure(stage, victim)
        import numpy as np

        clean_rows = np.flatnonzero(~poisoned.poison_mask)
        stage.perfect = self._measure(
            stage, self._retrain(stage, clean_rows, ctx, "training the perfect filter's model")
        )
        self._require_a_backdoor(stage)
        for name in scenario.baselines:
            kept = self._baseline_kept(stage, name, ctx)
            stage.baselines[name] = self._filtered(stage, kept, ctx, f"baseline {name}")
        return stage

    @staticmethod
    def _require_a_backdoor(stage: PoisoningStage) -> None:
        """A backdoor that did not take hold leaves nothing to defend: the score would only
        measure noise, so the scenario (or variant) is refused, loudly."""
        effect = stage.undefended.attack_success_rate - stage.perfect.attack_success_rate
        if effect < MIN_BACKDOOR_EFFECT:
            scenario = stage.scenario
            raise ConfigError(
                f"the backdoor did not take hold: the victim's attack success rate is "
                f"{stage.undefended.attack_success_rate:.3f}, and {stage.perfect.attack_success_rate:.3f} "
                "without any poison, so there is nothing to defend",
                file=str(scenario.source or scenario.id),
                field="attack",
                expected=f"a victim attack success rate at least {MIN_BACKDOOR_EFFECT:g} above the poison-free model's",
                found=f"{effect:+.3f} (target {scenario.attack.target_class}, {scenario.attack.trigger.describe()})",
                fix="poison more of the data (at 2% a BadNets trigger did not take hold), make the trigger "
                "more visible, or pick another target; for an automatic variant, another --variant-seed",
            )

    def _triggered(self, scenario, split, key: str, ctx: RunContext):
        """The triggered test set, cached so that a warm run never imports ART (~1.2 s)."""
        triggered = self.cached_arrays(ctx.cache, "triggered", key, lambda: self._trigger(scenario, split))
        return triggered["x"], triggered["y"]

    @staticmethod
    def _trigger(scenario: PoisoningScenario, split: Split) -> dict[str, np.ndarray]:
        x_triggered, y_triggered = triggered_test_set(split, scenario.attack)
        change = trigger_change(split.x_test[split.y_test != scenario.attack.target_class], x_triggered)
        if change < MIN_TRIGGER_CHANGE:
            raise ConfigError(
                f"the trigger barely changes the images it is stamped on (by {change:.2f} on average, "
                "summed over pixels), so no backdoor can take hold",
                file=str(scenario.source or scenario.id),
                field="attack.trigger",
                expected=f"a trigger that changes each image by at least {MIN_TRIGGER_CHANGE:g}",
                found=scenario.attack.trigger.describe(),
                fix="a dark trigger is invisible on a dark background: move it where the images have ink "
                "(e.g. the centre), or give it a brighter pixel_value",
            )
        return {"x": x_triggered, "y": y_triggered}

    def _poison(self, scenario, split, key: str, ctx: RunContext) -> PoisonedSet:
        return self.cached(
            ctx.cache,
            "poisoned",
            key,
            lambda: ATTACKS[scenario.attack.name](
                split,
                scenario.attack,
                seed=scenario.seed,
                victim=scenario.victim,
                progress=ctx.progress,
                device=ctx.device,
            ),
            store=lambda poisoned: Artefact(
                {"x": poisoned.x, "y": poisoned.y, "poison_mask": poisoned.poison_mask.astype("uint8")}
            ),
            restore=lambda stored: PoisonedSet(
                stored.arrays["x"], stored.arrays["y"], stored.arrays["poison_mask"].astype(bool)
            ),
        )

    def _baseline_kept(self, stage: PoisoningStage, name: str, ctx: RunContext) -> np.ndarray:
        def run() -> dict[str, np.ndarray]:
            with ctx.progress.task(f"running ART baseline {name}"):
                kept = BASELINES[name](
                    stage.victim,
                    stage.poisoned.x,
                    stage.poisoned.y,
                    num_classes=stage.split.num_classes,
                    seed=stage.scenario.seed,
                    poison_fraction=float(stage.poisoned.poison_mask.mean()),
                    device=ctx.device,
                )
            return {"kept_indices": kept.astype("int64")}

        key = content_key(stage.key, "baseline", name)
        return self.cached_arrays(ctx.cache, "baselines", key, run)["kept_indices"]

    # ------------------------------------------------------------------ the mitigation's view

    def handover(self, stage: PoisoningStage) -> Handover:
        """The training set as the attacker left it, the victim's recipe, and its weights."""
        return handover_of(stage, training_set=(stage.poisoned.x, stage.poisoned.y))

    def encode(self, returned: Any, inputs: Inputs) -> RawResult:
        """In the child: the kept indices `sanitize` returned (or its boolean mask's)."""
        import numpy as np

        _, y = inputs.training_set()
        kept = np.asarray(returned)
        if kept.dtype == bool:
            if kept.shape != y.shape:
                raise ValueError(
                    f"{self.function_name} returned a boolean mask of shape {kept.shape}; expected {y.shape}"
                )
            kept = np.flatnonzero(kept)
        if kept.dtype.kind not in "iu":
            raise TypeError(
                f"{self.function_name} must return integer indices or a boolean mask, got dtype {kept.dtype}"
            )
        return RawResult({"kept_indices": kept.astype(np.int64).reshape(-1)})

    def no_mitigation(self, stage: PoisoningStage) -> RawResult:
        import numpy as np

        return RawResult({"kept_indices": np.arange(stage.size, dtype=np.int64)})

    def check_outputs(self, stage: PoisoningStage, raw: RawResult) -> np.ndarray:
        """Kept indices: 1-D integers in range; duplicates are merged; every class kept."""
        import numpy as np

        if set(raw.arrays) != {"kept_indices"} or raw.config:
            raise invalid(f"expected one output 'kept_indices', got {sorted(raw.arrays)}")
        kept = raw.arrays["kept_indices"]
        if kept.ndim != 1 or kept.dtype.kind not in "iu":
            raise invalid(f"kept indices must be a 1-D integer array, got {kept.dtype} {kept.shape}")
        if len(kept) and (kept.min() < 0 or kept.max() >= stage.size):
            raise invalid(f"kept indices must lie in [0, {stage.size}), got {kept.min()}..{kept.max()}")
        kept = np.unique(kept)
        missing = set(range(stage.split.num_classes)) - set(np.unique(stage.poisoned.y[kept]).tolist())
        if missing:
            raise invalid(
                f"the kept samples contain no example of class(es) {sorted(missing)}; "
                "a model cannot be retrained without them"
            )
        return kept

    # ------------------------------------------------------------------ grading

    def evaluate(self, stage: PoisoningStage, kept: np.ndarray, ctx: RunContext) -> Evaluation:
        filtered = self._filtered(stage, kept, ctx, "your mitigation")
        scenario = stage.scenario
        metrics = {
            "victim.clean_accuracy": stage.undefended.clean_accuracy,
            "victim.attack_success_rate": stage.undefended.attack_success_rate,
            "perfect.clean_accuracy": stage.perfect.clean_accuracy,
            "perfect.attack_success_rate": stage.perfect.attack_success_rate,
            "random.clean_accuracy": filtered.random.clean_accuracy,
            "random.attack_success_rate": filtered.random.attack_success_rate,
            "mitigated.clean_accuracy": filtered.outcome.clean_accuracy,
            "mitigated.attack_success_rate": filtered.outcome.attack_success_rate,
            "mitigated.poison_removed": filtered.poison_removed,
            "mitigated.clean_dropped": filtered.clean_dropped,
            "mitigated.kept": float(filtered.kept),
            "score": filtered.score.total,
        }
        if stage.luck is not None:
            metrics["lucky.attack_success_rate"] = stage.luck.lucky_asr
            metrics["lucky.attack_success_rate_mean"] = stage.luck.asr_mean
            metrics["lucky.attack_success_rate_sd"] = stage.luck.asr_sd
        for name, baseline in stage.baselines.items():
            metrics[f"baseline.{name}.clean_accuracy"] = baseline.outcome.clean_accuracy
            metrics[f"baseline.{name}.attack_success_rate"] = baseline.outcome.attack_success_rate
            metrics[f"baseline.{name}.score"] = baseline.score.total
        rows = [
            Row("no mitigation (victim)", self._row(stage.undefended, None, stage.size)),
            *[
                Row(f"ART {name}", self._row(b.outcome, b, b.kept), "baseline")
                for name, b in stage.baselines.items()
            ],
            Row(
                "random filter",
                self._row(filtered.random, None, filtered.kept),
                f"drops {stage.size - filtered.kept} at random",
            ),
            Row(
                "perfect filter",
                self._row(stage.perfect, None, int((~stage.poisoned.poison_mask).sum())),
                "drops exactly the poison",
            ),
            Row("your mitigation", self._row(filtered.outcome, filtered, filtered.kept)),
        ]
        pictures = {}
        if ctx.out_dir is not None:
            mitigated = self._retrain(stage, kept, ctx, "")
            pictures["triggers"] = self._draw(stage, mitigated, ctx.out_dir / "triggers.png")
        return Evaluation(
            metrics=metrics,
            score=filtered.score,
            rows=rows,
            feedback=self._feedback(stage, filtered),
            pictures=pictures,
            details={"scoring": scenario.scoring.model_dump(), "poisoned_rows": int(stage.poisoned.poison_mask.sum())},
            samples=self._samples(stage),
        )

    def _samples(self, stage: PoisoningStage) -> dict[str, Sample]:
        """What each rate is a rate over; the score and the kept count are derived."""
        poison = int(stage.poisoned.poison_mask.sum())
        samples = {
            "mitigated.poison_removed": Sample.rate(poison, "poisoned training samples"),
            "mitigated.clean_dropped": Sample.rate(stage.size - poison, "clean training samples"),
        }
        for prefix in ("victim", "perfect", "random", "mitigated", *(f"baseline.{b}" for b in stage.baselines)):
            samples[f"{prefix}.clean_accuracy"] = Sample.rate(len(stage.split.y_test), "test images")
            samples[f"{prefix}.attack_success_rate"] = Sample.rate(len(stage.y_triggered), "triggered test images")
        return samples

    def _row(self, outcome: Outcome, filtered: Filtered | None, kept: int) -> dict[str, float]:
        row = {
            "clean_accuracy": outcome.clean_accuracy,
            "attack_success_rate": outcome.attack_success_rate,
            "kept": float(kept),
        }
        if filtered is not None:
            row["poison_removed"] = filtered.poison_removed
            row["score"] = filtered.score.total
        return row

    def _filtered(self, stage: PoisoningStage, kept: np.ndarray, ctx: RunContext, label: str) -> Filtered:
        import numpy as np

        outcome = self._measure(stage, self._retrain(stage, kept, ctx, f"retraining on {label}'s kept samples"))
        random = self._random_filter(stage, stage.size - len(kept), ctx)
        mask = stage.poisoned.poison_mask
        dropped = np.ones(stage.size, dtype=bool)
        dropped[kept] = False
        clean_dropped = float(dropped[~mask].mean())

        def scored(luck: Luck | None) -> Score:
            return der_calibrated(
                asr_none=stage.undefended.attack_success_rate,
                ca_none=stage.undefended.clean_accuracy,
                asr_mitigated=outcome.attack_success_rate,
                ca_mitigated=outcome.clean_accuracy,
                asr_random=random.attack_success_rate,
                ca_random=random.clean_accuracy,
                asr_perfect=stage.perfect.attack_success_rate,
                ca_perfect=stage.perfect.clean_accuracy,
                clean_dropped=clean_dropped,
                max_clean_dropped=stage.scenario.scoring.max_clean_dropped,
                max_clean_accuracy_drop=stage.scenario.scoring.max_clean_accuracy_drop,
                asr_lucky=luck.lucky_asr if luck else None,
            )

        score = scored(stage.luck)
        if stage.luck is None and luck_can_change(score):
            # The random filters' retrains cost about 30 s on a cold cache, so they are paid
            # only when the luck can change the score (and then once per stage).
            stage.luck = self._luck(stage, ctx)
            score = scored(stage.luck)
        return Filtered(
            outcome=outcome,
            score=score,
            random=random,
            kept=len(kept),
            poison_removed=float(dropped[mask].mean()) if mask.any() else 0.0,
            clean_dropped=clean_dropped,
        )

    def _luck(self, stage: PoisoningStage, ctx: RunContext) -> Luck:
        """Retrain `LUCK_FILTERS` random filters that drop as many samples as there is poison,
        each from its own seed: their spread is the noise a mitigation's ASR drop must beat."""
        drop = int(stage.poisoned.poison_mask.sum())
        return Luck(
            tuple(
                self._random_filter(
                    stage, drop, ctx, ("lucky-filter", index),
                    f"retraining random filter {index + 1} of {LUCK_FILTERS} (the noise of retraining)",
                )
                for index in range(LUCK_FILTERS)
            )
        )  # fmt: skip

    def _random_filter(
        self, stage: PoisoningStage, drop: int, ctx: RunContext, draw: tuple = (), label: str = "random filter"
    ) -> Outcome:
        """A model retrained after dropping `drop` samples chosen at random, seeded by the
        scenario's seed and `draw` (by default the count: the filter a mitigation is scored against)."""
        import numpy as np

        if drop <= 0:
            return stage.undefended
        rng = generator(stage.scenario.seed, *(draw or ("random-filter", drop)))
        kept = np.sort(rng.choice(stage.size, size=stage.size - drop, replace=False))
        return self._measure(stage, self._retrain(stage, kept, ctx, label))

    def _retrain(self, stage: PoisoningStage, kept: np.ndarray, ctx: RunContext, label: str):
        import numpy as np

        if len(kept) == stage.size:
            return stage.victim
        kept = np.asarray(kept)
        return models.train_cached(
            ctx.cache,
            stage.scenario.victim,
            np.ascontiguousarray(stage.poisoned.x[kept]),
            np.ascontiguousarray(stage.poisoned.y[kept]),
            num_classes=stage.split.num_classes,
            seed=stage.scenario.seed,
            device=ctx.device,
            progress=ctx.progress,
            label=label or "retraining",
        )

    def _measure(self, stage: PoisoningStage, model) -> Outcome:
        target = stage.scenario.attack.target_class
        clean = models.accuracy(model, stage.split.x_test, stage.split.y_test)
        attacked = float((models.predict(model, stage.x_triggered) == target).mean())
        return Outcome(clean, attacked)

    # ------------------------------------------------------------------ feedback and pictures

    def _feedback(self, stage: PoisoningStage, filtered: Filtered) -> list[str]:
        """What limited the score, in numbers, followed by the scenario's hint."""
        hints = stage.scenario.hints
        target = stage.scenario.attack.target_class
        outcome = filtered.outcome
        notes: list[str] = []
        ca_drop = stage.undefended.clean_accuracy - outcome.clean_accuracy
        if filtered.kept >= stage.size * 0.995:
            notes.append(f"You kept {filtered.kept} of {stage.size} samples. {hints.kept_everything}")
        if outcome.attack_success_rate > max(0.1, stage.perfect.attack_success_rate + 0.05):
            notes.append(
                f"ASR still {outcome.attack_success_rate:.2f}: the trigger survives in class {target} "
                f"(you removed {100 * filtered.poison_removed:.0f}% of the poison). {hints.asr_remaining}"
            )
        if filtered.score.capped_by or ca_drop > 0.02:
            notes.append(
                f"Clean accuracy fell {100 * ca_drop:.1f} points "
                f"({stage.undefended.clean_accuracy:.3f} -> {outcome.clean_accuracy:.3f}). {hints.clean_accuracy_lost}"
            )
        kept_clean = filtered.score.parts["kept_clean"]
        if kept_clean < 0.9:
            notes.append(
                f"You dropped {100 * filtered.clean_dropped:.0f}% of the clean samples: that keeps "
                f"{100 * kept_clean:.0f}% of your score (dropping "
                f"{100 * stage.scenario.scoring.max_clean_dropped:g}% scores 0). {hints.dropped_too_much}"
            )
        if filtered.score.total >= 80 and not notes:
            notes.append(hints.success)
        return notes

    def _draw(self, stage: PoisoningStage, mitigated, path: Path) -> Path:
        from secureml.pictures import Cell, image_grid

        target = stage.scenario.attack.target_class
        names = stage.split.class_names
        count = min(8, len(stage.y_triggered))
        clean_x = stage.split.x_test[stage.split.y_test != target][:count]
        triggered_x = stage.x_triggered[:count]
        truth = stage.y_triggered[:count]

        def cells(model, images):
            predicted = models.predict(model, images)
            return [
                Cell(image, f"true {names[t]} -> {names[p]}", highlight=bool(p == target and t != target))
                for image, t, p in zip(images, truth, predicted, strict=True)
            ]

        return image_grid(
            [
                ("clean\nvictim", cells(stage.victim, clean_x)),
                ("triggered\nvictim", cells(stage.victim, triggered_x)),
                ("triggered\nmitigated", cells(mitigated, triggered_x)),
            ],
            path,
            title=f"{stage.scenario.id}: trigger samples (red = classified as target {names[target]})",
        )


FAMILY = PoisoningFamily()
