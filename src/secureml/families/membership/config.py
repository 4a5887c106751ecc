"""The membership family's scenario schema (light: no torch, no numpy, no ART).

The trainee writes `train(x, y, tools) -> model`: x, y are the members (the private
training set); the grader attacks the returned weights with a suite of membership
inference attacks on members and non-members the trainee's code is never given.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from secureml.mitigation import TraineeCall
from secureml.scenario import VARIANT_DISTORTION, ScenarioBase, StrictModel, distinct_known

# The attacks of the suite, by name (the implementations: membership/attacks.py ATTACKS).
ATTACK_NAMES = ("loss", "augmented-loss", "black-box", "label-only")


class Holdout(StrictModel):
    """How the held-out pool (dataset.test_size) is shared out; the rest is the test set."""

    nonmembers: int = Field(
        gt=0,
        description="non-members the attacks are measured on (never handed over); as many members, "
        "drawn from the training set, stand against them",
    )
    attacker: int = Field(
        gt=1,
        description="the attacker's own labelled records: half train its shadow model, half are the "
        "shadow's non-members",
    )
    floor: int = Field(
        gt=0,
        description="records a floor model is trained on with the victim's recipe: to it both "
        "evaluation groups are non-members, so what the attacks find there is noise",
    )
    draw: int = Field(
        default=0, ge=0, lt=2**31,
        description="which held-out records play which part (a hidden variant draws another)",
    )  # fmt: skip


class MembershipAttacks(StrictModel):
    """The suite; every attack runs on the returned model and on the undefended victim, and
    the attack that finds the most (the highest advantage) decides."""

    suite: list[str] = Field(default_factory=lambda: list(ATTACK_NAMES), min_length=1)
    shift_pixels: int = Field(
        default=2, ge=1, le=4,
        description="augmented-loss averages the true class's log-probability over every shift "
        "of up to this many pixels (Choquette-Choo et al. 2021)",
    )  # fmt: skip
    attack_model: Literal["rf", "nn"] = Field(
        default="rf", description="ART MembershipInferenceBlackBox's attack model, fitted on a shadow model"
    )
    low_fpr: float = Field(default=0.01, gt=0, lt=0.5, description="the FPR at which TPR is reported")

    @field_validator("suite")
    @classmethod
    def _known_attacks(cls, suite: list[str]) -> list[str]:
        return distinct_known(suite, ATTACK_NAMES, "attacks")


class MembershipScoring(StrictModel):
    method: Literal["advantage-calibrated"] = "advantage-calibrated"
    max_accuracy_drop: float = Field(
        default=0.05, gt=0, le=1, description="a test-accuracy loss this large (or larger) scores 0"
    )


class MembershipHints(StrictModel):
    """Texts shown to the trainee after the score, chosen by what limited it."""

    leakage_remaining: str = Field(description="an attack still tells members from non-members")
    utility_lost: str = Field(description="the mitigation cost too much accuracy")
    unchanged: str = Field(description="the mitigation changed (almost) nothing")
    success: str = Field(description="shown when the score is high")


class MembershipScenario(ScenarioBase):
    family: Literal["membership"]
    holdout: Holdout
    attack: MembershipAttacks = MembershipAttacks()
    scoring: MembershipScoring = MembershipScoring()
    hints: MembershipHints

    trainee_call: ClassVar[TraineeCall] = TraineeCall(
        "train",
        ("x", "y", "tools"),
        "a torch model with the victim's architecture (from tools.build())",
        "  x: float32 (N, C, H, W) in [0, 1], the members (the private training set); y: int64 (N,)\n"
        "  (on all of x, y, tools.train returns the victim itself)",
    )
    variant_distortion: ClassVar[Mapping[str, float] | None] = VARIANT_DISTORTION

    def scoring_formula(self) -> str:
        from secureml.scoring import MEMBERSHIP_FORMULA

        return MEMBERSHIP_FORMULA.format(
            max_accuracy_drop=self.scoring.max_accuracy_drop,
            max_accuracy_drop_points=100 * self.scoring.max_accuracy_drop,
        )

    @model_validator(mode="after")
    def _holdout_fits(self) -> MembershipScenario:
        holdout = self.holdout
        left = self.dataset.test_size - holdout.nonmembers - holdout.attacker - holdout.floor
        if left < 100:
            raise ValueError(
                "holdout.nonmembers + holdout.attacker + holdout.floor must leave at least 100 of "
                f"dataset.test_size ({self.dataset.test_size}) for the test set, found {left}"
            )
        if holdout.nonmembers > self.dataset.train_size:
            raise ValueError(
                f"holdout.nonmembers ({holdout.nonmembers}) must be at most dataset.train_size "
                f"({self.dataset.train_size}): as many members stand against them"
            )
        return self

    def variant_overrides(self, rng: random.Random) -> dict[str, Any]:
        """Another share-out of the held-out pool (the seed, drawn by the caller, already
        changes which records are members)."""
        return {"holdout": {"draw": rng.randrange(2**31)}}
