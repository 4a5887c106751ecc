"""The evasion families: adversarial examples against a digit classifier, evaluated adaptively.

`evasion` (harden). The trainee's `harden(x, y, tools)` returns a model of the victim's
architecture, e.g. after adversarial training. The child sends back its weights only; the
grader loads them into a fresh model of the scenario's architecture and attacks it itself.

`evasion-preprocess` (preprocess). The trainee's `preprocess(tools)` returns a list of
steps from a menu of ART preprocessors. Only that declarative list travels back (strict
JSON, validated by pydantic in the parent); the grader builds the pipeline in front of the
fixed victim and attacks the whole of it with BPDA and EOT (see `pipeline.py`). Trainee
code never runs in the grader's process.

Both are judged the same way: every attack of the scenario's suite runs on the attacked
test images the model classifies correctly; an image is robust only if no attack fools
it (worst case). Victim results are cached by content hash, and so are the results of
any model with the same weights, so a warm rerun only runs the trainee's function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    Output,
    Row,
    RunContext,
    Sample,
    handover_of,
    invalid,
)
from secureml.families.evasion import attacks, checks
from secureml.families.evasion.attacks import SuiteResult
from secureml.families.evasion.config import EvasionPreprocessScenario, EvasionScenario, PreprocessPipeline
from secureml.families.evasion.escalation import EscalationResult, escalate, is_gradient_free
from secureml.families.evasion.tools import VALIDATION, HardeningTools, PreprocessTools, pipeline_from
from secureml.mitigation import RawResult
from secureml.randomness import derive_seed, generator
from secureml.scoring import capped_for_review, robust_accuracy_calibrated
from secureml.versions import software_key

if TYPE_CHECKING:
    import numpy as np

    from secureml.datasets import Split

# The checks whose firing makes the grader escalate (see escalation.py). A randomised model
# is not masking by itself: EOT already averages over its draws.
MASKING_CHECKS = frozenset({"gradient-free-beats-white-box", "bad-gradients", "accuracy-does-not-fall"})

# Validation images handed to `preprocess` for its own checks (from the training split).
VALIDATION_IMAGES = 500


@dataclass
class Subject:
    """A model under evaluation: what the attacks differentiate, and what decides."""

    identity: list[Any]  # cache-key parts that pin down the model exactly
    attack_model: Any  # torch model the attacks see (BPDA, EOT)
    judges: list[Callable]  # the deployed model's predict; two draws if it is randomised
    naive_model: Any | None = None  # exact gradients, no EOT: what a naive test sees
    randomised: bool = False


@dataclass
class Report:
    """Everything the grader measured on one model."""

    clean_accuracy: float  # on the whole test split
    suite: SuiteResult  # on the attacked subset
    curve: list[float]  # PGD robust accuracy at each curve epsilon
    zero_gradient_share: float
    naive_robust_accuracy: float | None = None


@dataclass
class EvasionStage:
    scenario: Any
    split: Split
    victim: Any
    x_attack: np.ndarray
    y_attack: np.ndarray
    # The victim's report: `prepare` measures it once the rest of the stage exists.
    undefended: Report = field(init=False)


def attacked_indices(test_size: int, evaluation) -> np.ndarray:
    """Which test images the suite attacks: the first `subset`, or a seeded draw of them."""
    import numpy as np

    if evaluation.subset_seed is None:
        return np.arange(evaluation.subset)
    rng = generator(evaluation.subset_seed, "evaluation-subset")
    return np.sort(rng.choice(test_size, size=evaluation.subset, replace=False))


def _perturbations(norms: np.ndarray, items: str) -> Sample:
    """A mean perturbation's sample: the fooled images, and the spread of their norms."""
    return Sample.mean(len(norms), items, sd=float(norms.std(ddof=1)) if len(norms) > 1 else None)


def weights_identity(model) -> list[Any]:
    arrays = models.model_arrays(model)
    names = sorted(arrays)
    return ["weights", names, content_key(*[arrays[name] for name in names])]


class _EvasionFamily(Family[EvasionStage, Output]):
    """What both evasion families share: the victim, the suite, the flags, score and pictures."""

    # ------------------------------------------------------------------ stage

    def prepare(self, scenario, split: Split, ctx: RunContext) -> EvasionStage:
        """Train the victim and evaluate it with the full suite. Both are cached."""
        victim = models.train_cached(
            ctx.cache,
            scenario.victim,
            split.x_train,
            split.y_train,
            num_classes=split.num_classes,
            seed=scenario.seed,
            device=ctx.device,
            progress=ctx.progress,
            label="training the victim",
        )
        attacked = attacked_indices(len(split.y_test), scenario.evaluation)
        stage = EvasionStage(
            scenario=scenario,
            split=split,
            victim=victim,
            x_attack=split.x_test[attacked],
            y_attack=split.y_test[attacked],
        )
        stage.undefended = self._report(stage, self._victim_subject(stage), ctx, "victim")
        return stage

    def _victim_subject(self, stage: EvasionStage) -> Subject:
        victim = stage.victim
        return Subject(weights_identity(victim), victim, [lambda x: models.predict(victim, x)])

    def _report_key(self, stage: EvasionStage, subject: Subject) -> str:
        scenario = stage.scenario
        return content_key(
            "evasion-report",
            subject.identity,
            scenario.threat.model_dump(mode="json"),
            scenario.evaluation.model_dump(mode="json"),
            scenario.masking.gradient_check_samples,
            stage.split.sha256,
            scenario.seed,
            software_key("secureml.families.evasion"),
        )

    def _report(self, stage: EvasionStage, subject: Subject, ctx: RunContext, label: str) -> Report:
        """Run (or load) the suite, the curve and the gradient check on one model."""
        names = [attack.name for attack in stage.scenario.evaluation.attacks]
        return self.cached(
            ctx.cache,
            "evasion-reports",
            self._report_key(stage, subject),
            lambda: self._attack(stage, subject, ctx, label),
            store=lambda report: Artefact(
                report.suite.to_arrays(),
                {
                    "clean_accuracy": report.clean_accuracy,
                    "curve": report.curve,
                    "zero_gradient_share": report.zero_gradient_share,
                    "naive_robust_accuracy": report.naive_robust_accuracy,
                },
            ),
            restore=lambda stored: Report(
                stored.summary["clean_accuracy"],
                SuiteResult.from_arrays(stage.x_attack, stage.y_attack, stored.arrays, names),
                stored.summary["curve"],
                stored.summary["zero_gradient_share"],
                stored.summary["naive_robust_accuracy"],
            ),
            summary=True,
        )

    def _attack(self, stage: EvasionStage, subject: Subject, ctx: RunContext, label: str) -> Report:
        import numpy as np

        scenario = stage.scenario
        suite_config = scenario.evaluation
        input_shape, num_classes = stage.split.shape, stage.split.num_classes
        estimator = attacks.classifier(
            subject.attack_model, input_shape=input_shape, num_classes=num_classes, device=ctx.device
        )
        seed = derive_seed(scenario.seed, "evasion-suite")
        suite = attacks.run_suite(
            estimator,
            stage.x_attack,
            stage.y_attack,
            threat=scenario.threat,
            suite=suite_config,
            seed=seed,
            judges=subject.judges,
            progress=ctx.progress,
            label=f"attacking the {label}",
        )
        with ctx.progress.task(f"attacking the {label}: robust accuracy vs epsilon"):
            curve = attacks.robust_accuracy_curve(
                estimator,
                stage.x_attack,
                stage.y_attack,
                norm=scenario.threat.norm,
                curve=suite_config.curve,
                batch_size=suite_config.batch_size,
                seed=seed,
                judge=subject.judges[0],
            )
        checked = np.flatnonzero(suite.clean_correct)[: scenario.masking.gradient_check_samples]
        zero_share = attacks.zero_gradient_share(estimator, stage.x_attack[checked], stage.y_attack[checked])
        naive = None
        if subject.naive_model is not None:
            naive = self._naive_robust_accuracy(stage, subject, suite, seed, ctx.device)
        with ctx.progress.task(f"clean accuracy of the {label}"):
            clean = float((subject.judges[0](stage.split.x_test) == stage.split.y_test).mean())
        return Report(clean, suite, curve, zero_share, naive)

    def _naive_robust_accuracy(
        self, stage: EvasionStage, subject: Subject, suite: SuiteResult, seed: int, device: str
    ) -> float:
        """PGD from the clean image through the pipeline's exact gradients, with no EOT: the
        robustness a non-adaptive evaluation would report."""
        import numpy as np

        scenario = stage.scenario
        config = next((a for a in scenario.evaluation.attacks if a.name == "pgd"), None)
        steps = config.steps if config else scenario.evaluation.curve.steps
        step_size = config.step_size if config else 2.5 * scenario.threat.epsilon / steps
        estimator = attacks.classifier(
            subject.naive_model, input_shape=stage.split.shape, num_classes=stage.split.num_classes, device=device
        )
        correct = np.flatnonzero(suite.clean_correct)
        if not len(correct):
            return 0.0
        adversarial = attacks.pgd(
            estimator,
            stage.x_attack[correct],
            stage.y_attack[correct],
            norm=scenario.threat.norm,
            epsilon=scenario.threat.epsilon,
            step_size=step_size,
            steps=steps,
            restarts=1,
            batch_size=scenario.evaluation.batch_size,
            seed=derive_seed(seed, "naive"),
            judge=subject.judges[0],
            random_start=False,
        )
        survived = subject.judges[0](adversarial) == stage.y_attack[correct]
        return float(survived.sum()) / len(stage.y_attack)

    # ------------------------------------------------------------------ grading

    def _evaluate(self, stage: EvasionStage, subject: Subject, ctx: RunContext, details: dict) -> Evaluation:
        scenario = stage.scenario
        undefended = stage.undefended
        if subject.identity == self._victim_subject(stage).identity:
            mitigated = undefended
        else:
            mitigated = self._report(stage, subject, ctx, "mitigated model")
        flags = fired = self._flags(stage, mitigated, subject)
        final, escalation, refuted = mitigated, None, {}
        if set(fired) & MASKING_CHECKS:
            escalation = self._escalation(stage, subject, mitigated, ctx)
            final = self._escalated(mitigated, escalation)
            escalated_flags = self._flags(stage, final, subject, escalated=True)
            # The escalation refutes a flag only when the model is robust under its stronger
            # attacks: clearly above the victim, and no lower than the suite found. Otherwise
            # the flag stays, to say why gradient attacks stalled (scaled logits keep their
            # zero gradients, although the surrogate's are fine and the score is 0).
            margin = scenario.masking.black_box_margin
            robust = final.suite.robust_accuracy
            confirmed = (
                robust <= undefended.suite.robust_accuracy + margin
                or robust < mitigated.suite.robust_accuracy - margin
            )
            if confirmed:
                flags = {**fired, **escalated_flags}
            else:
                refuted = {check: text for check, text in flags.items() if check not in escalated_flags}
                flags = escalated_flags
        score = robust_accuracy_calibrated(
            ra_none=undefended.suite.robust_accuracy,
            ra_mitigated=final.suite.robust_accuracy,
            ca_none=undefended.clean_accuracy,
            ca_mitigated=final.clean_accuracy,
            target_robust_accuracy=scenario.scoring.target_robust_accuracy,
            max_clean_accuracy_drop=scenario.scoring.max_clean_accuracy_drop,
        )
        standing = sorted(set(flags) & MASKING_CHECKS) if escalation is not None else []
        measured_score = score.total
        if standing:
            score = capped_for_review(
                score,
                scenario.escalation.score_cap_if_flags_stand,
                f"a gradient-masking flag ({', '.join(standing)}) still stands after the escalation",
            )
        metrics = {
            **self._metrics("victim", undefended, scenario),
            **self._metrics("mitigated", final, scenario),
            "mitigated.zero_gradient_share": mitigated.zero_gradient_share,
            "mitigated.flags": float(len(flags)),
            "score": score.total,
        }
        if mitigated.naive_robust_accuracy is not None:
            metrics["mitigated.naive_robust_accuracy"] = mitigated.naive_robust_accuracy
        rows = [Row("no mitigation (victim)", self._row(undefended), "")]
        if mitigated.naive_robust_accuracy is not None:
            rows.append(
                Row(
                    "naive PGD on yours",
                    {"robust_accuracy": mitigated.naive_robust_accuracy},
                    "exact gradients, no BPDA/EOT: what a non-adaptive test reports",
                )
            )
        if escalation is not None:
            metrics["mitigated.escalated"] = 1.0
            metrics["mitigated.robust_accuracy_before_escalation"] = mitigated.suite.robust_accuracy
            metrics["mitigated.surrogate_zero_gradient_share"] = escalation.surrogate_zero_gradient_share
            rows.append(
                Row(
                    "yours, suite only",
                    {"robust_accuracy": mitigated.suite.robust_accuracy},
                    "before the escalation a masking check triggered",
                )
            )
            details["escalation"] = {
                "because": sorted(set(fired) & MASKING_CHECKS),
                "seconds": round(escalation.seconds, 2),
                "robust_accuracy_before": mitigated.suite.robust_accuracy,
                "robust_accuracy_after": final.suite.robust_accuracy,
                "refuted_flags": list(refuted.values()),
            }
        rows.append(Row("your mitigation", {**self._row(final), "score": score.total}, details.get("note", "")))
        pictures = {}
        if ctx.out_dir is not None:
            pictures = self._draw(stage, final, subject, ctx.out_dir)
        details = {
            **details,
            "threat": scenario.threat.model_dump(mode="json"),
            "attack_seconds": {name: round(o.seconds, 2) for name, o in final.suite.outcomes.items()},
            "curve_epsilons": list(scenario.evaluation.curve.epsilons),
        }
        samples = {
            **self._samples("victim", undefended, stage),
            **self._samples("mitigated", mitigated, stage),
            "mitigated.zero_gradient_share": Sample.rate(
                min(scenario.masking.gradient_check_samples, int(mitigated.suite.clean_correct.sum())), "images checked"
            ),
            "mitigated.flags": EXACT,
            "mitigated.naive_robust_accuracy": Sample.rate(len(stage.y_attack), "attacked test images"),
        }
        return Evaluation(
            metrics=metrics,
            score=score,
            rows=rows,
            feedback=self._feedback(
                stage, final, score, flags, escalation=escalation, before=mitigated, refuted=refuted, standing=standing,
                measured_score=measured_score,
            ),
            flags=list(flags.values()),
            pictures=pictures,
            details=details,
            samples={name: sample for name, sample in samples.items() if name in metrics},
        )

    def _samples(self, prefix: str, report: Report, stage: EvasionStage) -> dict[str, Sample]:
        """What each metric of `_metrics` is measured over."""
        suite = report.suite
        attacked = Sample.rate(len(stage.y_attack), "attacked test images")
        samples = {
            f"{prefix}.clean_accuracy": Sample.rate(len(stage.split.y_test), "test images"),
            f"{prefix}.robust_accuracy": attacked,
            f"{prefix}.mean_perturbation": _perturbations(suite.successful_norms(), "images some attack fooled"),
        }
        for name in suite.outcomes:
            samples[f"{prefix}.robust_accuracy.{name}"] = attacked
            samples[f"{prefix}.mean_perturbation.{name}"] = _perturbations(
                suite.successful_norms(name), f"images {name} fooled"
            )
        for epsilon in stage.scenario.evaluation.curve.epsilons:
            samples[f"{prefix}.pgd_curve@{epsilon:g}"] = attacked
        return samples

    def _escalation(
        self, stage: EvasionStage, subject: Subject, mitigated: Report, ctx: RunContext
    ) -> EscalationResult:
        """Run (or load) the escalated attacks on a flagged model."""
        scenario = stage.scenario
        # The cap scores the result; it does not change what the attacks find.
        attacks_config = scenario.escalation.model_dump(mode="json", exclude={"score_cap_if_flags_stand"})
        key = content_key(self._report_key(stage, subject), "escalation", attacks_config)
        return self.cached(
            ctx.cache,
            "evasion-escalations",
            key,
            lambda: escalate(
                model=subject.attack_model,
                victim_suite=stage.undefended.suite,
                suite=mitigated.suite,
                judges=subject.judges,
                scenario=scenario,
                input_shape=stage.split.shape,
                num_classes=stage.split.num_classes,
                seed=derive_seed(scenario.seed, "evasion-suite"),
                device=ctx.device,
                progress=ctx.progress,
            ),
            store=lambda result: Artefact(result.to_arrays(), result.summary()),
            restore=lambda stored: EscalationResult.load(stored.arrays, stored.summary),
            summary=True,
        )

    @staticmethod
    def _escalated(mitigated: Report, escalation: EscalationResult) -> Report:
        """The report with the escalated attacks in the worst case, the lower curve at each
        epsilon, and the gradient check through the surrogate the attacks followed."""
        suite = mitigated.suite
        merged = SuiteResult(
            suite.x, suite.y, suite.clean_correct, {**suite.outcomes, **escalation.outcomes}, suite.disagreement
        )
        curve = [min(a, b) for a, b in zip(mitigated.curve, escalation.surrogate_curve, strict=True)]
        return Report(
            mitigated.clean_accuracy,
            merged,
            curve,
            escalation.surrogate_zero_gradient_share,
            mitigated.naive_robust_accuracy,
        )

    def _metrics(self, prefix: str, report: Report, scenario) -> dict[str, float]:
        suite = report.suite
        metrics = {
            f"{prefix}.clean_accuracy": report.clean_accuracy,
            f"{prefix}.robust_accuracy": suite.robust_accuracy,
            f"{prefix}.mean_perturbation": suite.mean_perturbation(),
        }
        for name in suite.outcomes:
            metrics[f"{prefix}.robust_accuracy.{name}"] = suite.attack_robust_accuracy(name)
            metrics[f"{prefix}.mean_perturbation.{name}"] = suite.mean_perturbation(name)
        for epsilon, accuracy in zip(scenario.evaluation.curve.epsilons, report.curve, strict=True):
            metrics[f"{prefix}.pgd_curve@{epsilon:g}"] = accuracy
        return metrics

    def _row(self, report: Report) -> dict[str, float]:
        suite = report.suite
        row = {"clean_accuracy": report.clean_accuracy, "robust_accuracy": suite.robust_accuracy}
        for name in suite.outcomes:
            row[f"vs_{name}"] = suite.attack_robust_accuracy(name)
        row["mean_perturbation"] = suite.mean_perturbation()
        return row

    def _flags(self, stage: EvasionStage, report: Report, subject: Subject, escalated: bool = False) -> dict[str, str]:
        """The red flags that fire on a report: check name -> text. After escalation the
        gradient-free check asks whether it fools images every white-box attack missed."""
        masking = stage.scenario.masking
        suite = report.suite
        white_box = [name for name in suite.outcomes if not is_gradient_free(name)]
        gradient_free = [name for name in suite.outcomes if is_gradient_free(name)]
        if not (white_box and gradient_free):
            beaten = None
        elif escalated:
            missed = suite.robust_of(white_box) & ~suite.robust_of(gradient_free)
            beaten = checks.gradient_free_still_finds_more(float(missed.mean()), masking.black_box_margin)
        else:
            beaten = checks.gradient_free_beats_white_box(
                suite.robust_accuracy_of(white_box), suite.robust_accuracy_of(gradient_free), masking.black_box_margin
            )
        found = {
            "gradient-free-beats-white-box": beaten,
            "bad-gradients": checks.bad_gradients(report.zero_gradient_share, masking.zero_gradient_share),
            "randomised": checks.randomness_changes_results(report.suite.disagreement, masking.randomness_tolerance)
            if subject.randomised
            else None,
            "accuracy-does-not-fall": checks.accuracy_does_not_fall(
                stage.scenario.evaluation.curve.epsilons,
                report.curve,
                tolerance=masking.curve_tolerance,
                largest_epsilon_accuracy=masking.largest_epsilon_accuracy,
            ),
        }
        return {check: text for check, text in found.items() if text}

    def _feedback(
        self,
        stage: EvasionStage,
        report: Report,
        score,
        flags: dict[str, str],
        *,
        escalation: EscalationResult | None = None,
        before: Report | None = None,
        refuted: dict[str, str] | None = None,
        standing: Sequence[str] = (),
        measured_score: float | None = None,
    ) -> list[str]:
        """What limited the score, in numbers, followed by the scenario's hint. The success
        hint only ever comes alone: never beside a flag or another note."""
        scenario = stage.scenario
        hints = scenario.hints
        suite = report.suite
        notes: list[str] = []
        target = scenario.scoring.target_robust_accuracy
        if score.parts["robust_gained"] < 0.9:
            strongest = min(suite.outcomes, key=suite.attack_robust_accuracy)
            notes.append(
                f"Worst-case robust accuracy {suite.robust_accuracy:.3f} at {scenario.threat_text()} "
                f"(full marks at {target:g}); the strongest single attack was {strongest} "
                f"({suite.attack_robust_accuracy(strongest):.3f}). {hints.not_robust}"
            )
        drop = stage.undefended.clean_accuracy - report.clean_accuracy
        if drop > 0.01:
            notes.append(
                f"Clean accuracy fell {100 * drop:.1f} points ({stage.undefended.clean_accuracy:.3f} -> "
                f"{report.clean_accuracy:.3f}). {hints.clean_accuracy_lost}"
            )
        if report.naive_robust_accuracy is not None and report.naive_robust_accuracy > suite.robust_accuracy + 0.1:
            notes.append(
                f"A naive PGD test (exact gradients) reports {report.naive_robust_accuracy:.3f}; the adaptive "
                f"evaluation finds {suite.robust_accuracy:.3f}, and only that counts: the gap is what a "
                f"masked gradient hides from a naive test."
            )
        if escalation is not None and before is not None:
            notes.append(self._escalation_note(scenario, escalation, before, report, refuted or {}))
        if standing:
            measured = "" if measured_score is None else f" (measured: {measured_score:.1f})"
            notes.append(
                f"A masking flag still stands after the escalation ({', '.join(standing)}): the gradients "
                f"still mislead, so the grader cannot vouch for the figure above. The score is at most "
                f"{scenario.escalation.score_cap_if_flags_stand:g}{measured} until an instructor reviews the run."
            )
        if flags:
            notes.append(hints.masking)
        if score.total >= 80 and not flags and not notes:
            notes.append(hints.success)
        return notes

    @staticmethod
    def _escalation_note(scenario, escalation: EscalationResult, before: Report, after: Report, refuted) -> str:
        config = scenario.escalation
        budgets = ", ".join(
            f"Square with {max(a.queries, config.square_queries)} queries"
            if a.name == "square"
            else f"HopSkipJump with {max(a.steps, config.hop_skip_jump_steps)} iterations"
            for a in scenario.evaluation.attacks
            if is_gradient_free(a.name)
        )
        text = (
            f"A gradient-masking check fired, so the grader escalated on its own ({escalation.seconds:.0f} s): "
            f"{budgets}, transfer from the undefended victim, and BPDA (PGD and APGD) through a smoothed copy of your "
            f"model. Robust accuracy {before.suite.robust_accuracy:.3f} with the suite, "
            f"{after.suite.robust_accuracy:.3f} with the escalation; the score uses the lower."
        )
        if refuted:
            text += (
                f" The escalation refutes {len(refuted)} flag(s) ({', '.join(sorted(refuted))}): "
                "attacks that see through the masking confirm the figure, so they are cleared."
            )
        return text

    def _draw(self, stage: EvasionStage, mitigated: Report, subject: Subject, out_dir: Path) -> dict[str, Path]:
        from secureml.families.evasion.figures import draw_curve, draw_examples

        scenario = stage.scenario
        victim = stage.victim
        examples = draw_examples(
            out_dir / "adversarial-examples.png",
            title=f"{scenario.id}: strongest attack per image, {scenario.threat_text()} (red = fooled)",
            class_names=stage.split.class_names,
            undefended=stage.undefended.suite,
            mitigated=mitigated.suite,
            predict_undefended=lambda x: models.predict(victim, x),
            predict_mitigated=subject.judges[0],
            norm=scenario.threat.norm,
            epsilon=scenario.threat.epsilon,
        )
        curve = draw_curve(
            out_dir / "robust-accuracy-curve.png",
            title=f"{scenario.id}: robust accuracy vs epsilon (PGD-{scenario.evaluation.curve.steps})",
            epsilons=list(scenario.evaluation.curve.epsilons),
            curves={
                "victim (no mitigation)": [stage.undefended.suite.clean_accuracy, *stage.undefended.curve],
                "your mitigation": [mitigated.suite.clean_accuracy, *mitigated.curve],
            },
            threat_epsilon=scenario.threat.epsilon,
            norm=scenario.threat.norm,
        )
        return {"examples": examples, "curve": curve}

    # ------------------------------------------------------------------ the mitigation's view

    def _handover(self, stage: EvasionStage, extras: dict[str, Any], **kwargs: Any) -> Handover:
        """The victim, its recipe and weights, and the threat model; a family adds its own."""
        threat = stage.scenario.threat
        return handover_of(stage, extras={"norm": threat.norm, "epsilon": threat.epsilon, **extras}, **kwargs)


# =========================================================================== harden


class HardenFamily(ModelFamily[EvasionStage], _EvasionFamily):
    name = "evasion"
    schema = EvasionScenario
    tools = HardeningTools

    def handover(self, stage: EvasionStage) -> Handover:
        """The training set, the victim's recipe and weights, the threat model and the budget."""
        return self._handover(
            stage,
            training_set=(stage.split.x_train, stage.split.y_train),
            extras={"budget_s": stage.scenario.budget.time_s},
        )

    def evaluate(self, stage: EvasionStage, model, ctx: RunContext) -> Evaluation:
        subject = Subject(weights_identity(model), model, [lambda x: models.predict(model, x)])
        return self._evaluate(stage, subject, ctx, {})


# =========================================================================== preprocess


class PreprocessFamily(_EvasionFamily[PreprocessPipeline]):
    name = "evasion-preprocess"
    schema = EvasionPreprocessScenario
    tools = PreprocessTools

    def handover(self, stage: EvasionStage) -> Handover:
        """The victim, the menu, and validation images from the training split."""
        scenario = stage.scenario
        count = min(VALIDATION_IMAGES, len(stage.split.y_train))
        return self._handover(
            stage,
            extras={"menu": list(scenario.menu), "max_steps": scenario.max_steps},
            arrays={VALIDATION: {"x": stage.split.x_train[:count], "y": stage.split.y_train[:count]}},
        )

    def encode(self, returned: Any, inputs: Inputs) -> RawResult:
        """In the child: the validated list of steps, as JSON."""
        return RawResult({}, pipeline_from(returned).model_dump(mode="json"))

    def no_mitigation(self, stage: EvasionStage) -> RawResult:
        return RawResult({}, {"steps": []})

    def check_outputs(self, stage: EvasionStage, raw: RawResult) -> PreprocessPipeline:
        """Strictly re-validate the steps in the parent: known names, bounded values, the menu."""
        from pydantic import ValidationError

        if raw.arrays:
            raise invalid(f"expected only a list of steps, got arrays {sorted(raw.arrays)}")
        try:
            pipeline = PreprocessPipeline.model_validate(raw.config)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise invalid(f"invalid preprocessing steps ({where}: {first['msg']})") from error
        scenario = stage.scenario
        if len(pipeline.steps) > scenario.max_steps:
            raise invalid(f"{len(pipeline.steps)} steps; this scenario allows at most {scenario.max_steps}")
        off_menu = [step.name for step in pipeline.steps if step.name not in scenario.menu]
        if off_menu:
            raise invalid(f"step(s) {off_menu} are not on this scenario's menu: {scenario.menu}")
        return pipeline

    def evaluate(self, stage: EvasionStage, pipeline: PreprocessPipeline, ctx: RunContext) -> Evaluation:
        subject = self._pipeline_subject(stage, pipeline) if pipeline.steps else self._victim_subject(stage)
        return self._evaluate(stage, subject, ctx, {"note": pipeline.describe(), "pipeline": pipeline.model_dump()})

    def _pipeline_subject(self, stage: EvasionStage, pipeline: PreprocessPipeline) -> Subject:
        from secureml.families.evasion.pipeline import defended_model

        scenario = stage.scenario
        draws = scenario.evaluation.eot_samples if pipeline.randomised else 1
        seed = derive_seed(scenario.seed, "pipeline")
        attacked = defended_model(stage.victim, pipeline, seed=seed, mode="bpda", eot_samples=draws)
        deployed = defended_model(stage.victim, pipeline, seed=seed, mode="bpda", eot_samples=1)

        def judge(draw_seed: int) -> Callable:
            def predict(x):
                deployed.reseed(draw_seed)
                return models.predict(deployed, x)

            return predict

        judges = [judge(derive_seed(seed, "judge", 0))]
        if pipeline.randomised:
            judges.append(judge(derive_seed(seed, "judge", 1)))
        return Subject(
            identity=["pipeline", weights_identity(stage.victim), pipeline.model_dump(mode="json"), draws],
            attack_model=attacked,
            judges=judges,
            naive_model=defended_model(stage.victim, pipeline, seed=seed, mode="exact"),
            randomised=pipeline.randomised,
        )


FAMILY = HardenFamily()
PREPROCESS_FAMILY = PreprocessFamily()
