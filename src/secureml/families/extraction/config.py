"""The extraction family's scenario schema (light: no torch, no ART).

An attacker steals the deployed classifier through its prediction API: it sends its own
images, trains a copy on the answers (ART's Copycat CNN) and keeps it. The trainee writes
`protect(model, tools) -> api`, the API every query goes through.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from secureml.families.inversion.config import ApiInversionScoring, InversionApiScenario
from secureml.mitigation import TraineeCall
from secureml.scenario import VARIANT_DISTORTION, ScenarioBase, StrictModel, distinct_known

# How the attacker reads the API's answers before it trains on them: "labels" (the argmax,
# one-hot) and "soft" (the answer as a client reads it: renormalised, unreported mass
# spread evenly). Rounding, temperature, ReverseSigmoid and top-1 leave the labels as they
# were, so the "labels" reading sees straight through them.
READINGS = ("labels", "soft")
# How the attacker presents its pages (secureml.families.extraction.attacks.PRESENTATIONS):
# as its scanner read them, binarised, with its ink matched to its own labelled images, and
# sharpened before that ink matching.
PRESENTATIONS = ("as-scanned", "binarised", "ink-matched", "sharpened")
# Sides the attacker's scanned digits are upscaled to in automatic variants (the public
# scenario's 20 is MNIST's own digit box); all fit a 28x28 frame.
VARIANT_SIDES = (16, 18, 20, 22, 24)
# The attacker's scanner in automatic variants: its resolution and grey levels (the public
# scenario's 8x8 at 17 levels is scikit-learn's digits). A detector tuned to one scanner
# meets another. The lab's premise is a scanner coarser than the users': at 12x12 and 33
# levels the reference removed only 77% of what the binarised pages taught a copy (score
# 75.7, seed 1234); at 6-10 pixels it scored 99.
VARIANT_SCANS = (6, 7, 8, 9, 10)
VARIANT_LEVELS = (9, 17, 33)


class CopycatAttack(StrictModel):
    """Copycat CNN (Correia-Silva et al., IJCNN 2018), ART's implementation: the attacker
    queries the API with images from another distribution and trains a copy on the answers,
    together with the few labelled images it owns."""

    name: Literal["copycat"]
    budget: int = Field(
        gt=0, description="queries the attacker sends: held-out digits of its own, read by another scanner"
    )
    digit_side: int = Field(
        default=20, ge=8, le=28, description="the attacker's scans are upscaled to this side, centred"
    )
    scan: int = Field(default=8, ge=4, le=16, description="the attacker's scanner reads scan x scan pixels")
    levels: int = Field(default=17, ge=2, le=256, description="grey levels of the attacker's scanner")
    copy_arch: str = Field(default="cnn", description="the copy's architecture (secureml.models)")
    epochs: int = Field(gt=0, le=200)
    learning_rate: float = Field(gt=0, le=1)
    batch_size: int = Field(default=64, gt=0, le=4096)
    readings: list[str] = Field(
        default_factory=lambda: list(READINGS),
        min_length=1,
        description="how the attacker reads the answers; one copy per reading, the most faithful decides",
    )
    presentations: list[str] = Field(
        default_factory=lambda: list(PRESENTATIONS),
        min_length=1,
        description="how the attacker presents its pages; each is an attacker of its own with the whole "
        "budget, and the most faithful copy of any of them counts",
    )
    query_batch: int = Field(default=100, gt=0, le=10000, description="queries per call of the API")
    curve: list[float] = Field(
        default_factory=lambda: [0.25, 0.5],
        max_length=8,
        description="shares of the budget (its first queries) the attacker also trains copies on; with "
        "the whole budget and every reading, its most faithful copy counts",
    )

    @field_validator("readings")
    @classmethod
    def _known_readings(cls, readings: list[str]) -> list[str]:
        return distinct_known(readings, READINGS, "readings")

    @field_validator("presentations")
    @classmethod
    def _known_presentations(cls, presentations: list[str]) -> list[str]:
        return distinct_known(presentations, PRESENTATIONS, "presentations")

    @field_validator("copy_arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        from secureml.models import ARCHITECTURES

        if arch not in ARCHITECTURES:
            raise ValueError(f"one of {', '.join(ARCHITECTURES)}; found '{arch}'")
        return arch

    @field_validator("curve")
    @classmethod
    def _shares(cls, curve: list[float]) -> list[float]:
        if any(not 0 < share < 1 for share in curve):
            raise ValueError(f"shares strictly between 0 and 1; found {curve}")
        return sorted(set(curve))


class ExtractionHoldout(StrictModel):
    """The held-out images (dataset.test_size): the attacker's, the honest users', and the
    rest for measuring the copies (never sent through the API)."""

    labelled: int = Field(gt=0, description="in-distribution images the attacker owns, with their labels")
    users: int = Field(gt=0, description="honest users' queries (the API's usefulness is measured on them)")


class ExtractionScoring(ApiInversionScoring):
    """Fidelity removed, traded against what a client of a confidence API needs: the right
    argmax, and confidences it can bet on (log loss). Usefulness is inversion-02's."""

    method: Literal["fidelity-confidence-calibrated"] = "fidelity-confidence-calibrated"  # type: ignore[assignment]


class ExtractionHints(StrictModel):
    """Texts shown to the trainee after the score, chosen by what limited it."""

    copy_remaining: str = Field(description="the copy still agrees with the model")
    utility_lost: str = Field(description="the mitigation cost honest users too much")
    unchanged: str = Field(description="the mitigation changed (almost) nothing")
    success: str = Field(description="shown when the score is high")


class ExtractionScenario(ScenarioBase):
    family: Literal["extraction"]
    holdout: ExtractionHoldout
    attack: CopycatAttack
    scoring: ExtractionScoring = ExtractionScoring()
    hints: ExtractionHints

    trainee_call: ClassVar[TraineeCall] = TraineeCall(
        "protect",
        ("model", "tools"),
        InversionApiScenario.trainee_call.returns,
        # inversion-02's API, and the owner's own data to fit a detector on.
        InversionApiScenario.trainee_call.help
        + "\n  tools.training_set() -> (x, y), the images and labels the model was trained on",
    )
    variant_distortion: ClassVar[Mapping[str, float] | None] = VARIANT_DISTORTION

    def scoring_formula(self) -> str:
        from secureml.scoring import EXTRACTION_FORMULA

        return EXTRACTION_FORMULA.format(**self.scoring.formula_values())

    @model_validator(mode="after")
    def _holdout_leaves_a_test_set(self) -> ExtractionScenario:
        left = self.dataset.test_size - self.holdout.labelled - self.holdout.users - self.attack.budget
        if left < 100:
            raise ValueError(
                f"holdout.labelled + holdout.users + attack.budget must leave at least 100 of dataset.test_size "
                f"({self.dataset.test_size}) to measure the copies on, found {left}"
            )
        return self

    @model_validator(mode="after")
    def _digits_fit_the_images(self) -> ExtractionScenario:
        from secureml.datasets import DATASETS

        channels, height, width = DATASETS[self.dataset.name].shape
        if channels != 1 or self.attack.digit_side > min(height, width):
            raise ValueError(
                f"attack.digit_side ({self.attack.digit_side}) must fit the dataset's one-channel images; "
                f"{self.dataset.name} has shape {(channels, height, width)}"
            )
        if self.attack.scan > self.attack.digit_side:
            raise ValueError(
                f"attack.scan ({self.attack.scan}) must be at most attack.digit_side ({self.attack.digit_side}): "
                "the attacker's scanner is coarser than the frame its digits are drawn in"
            )
        return self

    def variant_overrides(self, rng: random.Random) -> dict[str, Any]:
        """Another size of the attacker's digits and another scanner (the new seed already
        draws other labelled images and other queries): a detector tuned to one size of
        query, or to one scanner's resolution and grey levels, meets another."""
        attack = self.attack
        side = rng.choice([side for side in VARIANT_SIDES if side != attack.digit_side])
        scanners = [(scan, levels) for scan in VARIANT_SCANS for levels in VARIANT_LEVELS]
        scan, levels = rng.choice([pair for pair in scanners if pair != (attack.scan, attack.levels)])
        return {"attack": {"digit_side": side, "scan": scan, "levels": levels}}
