"""The inversion families' scenario schemas (light: no torch, no ART).

Two scenarios, two mitigation interfaces, hence two families that share one sub-package:

- `inversion` (white-box): the attacker has the weights and runs ART's MIFace for every
  class. The trainee writes `train(x, y, tools) -> model`.
- `inversion-api` (query-only): the attacker sees only the prediction API's output
  vectors and trains an inversion network on them. The trainee writes
  `protect(model, tools) -> callable`.

The trainee's function name is a property of a family (the sandboxed worker only learns
the family's name), so two interfaces cannot share one family entry.
"""

from __future__ import annotations

import random
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from secureml.mitigation import TraineeCall
from secureml.scenario import ScenarioBase, StrictModel, VictimConfig, distinct_known


class MIFaceAttack(StrictModel):
    """MIFace (Fredrikson, Jha and Ristenpart, CCS 2015), ART's implementation, every class,
    from several starts; per class, the worst case over the starts decides."""

    name: Literal["miface"]
    # ART-FACTS: MIFace effectively always runs max_iter iterations; its cost is linear in it.
    max_iter: int = Field(gt=0, le=5000)
    learning_rate: float = Field(gt=0, le=100, description="step size of the gradient ascent")
    noise_scales: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: [0.2, 0.5],
        max_length=8,
        description="after the blank start, one start of uniform noise in [0, scale] per scale",
    )
    auxiliary_samples: int = Field(
        default=2, ge=0, le=16,
        description="starts from the attacker's own images of other classes; the mean of all its "
        "images is one more start",
    )  # fmt: skip
    logit_std: float = Field(
        default=3.0,
        gt=0,
        le=50,
        description="before the softmax the attacker rescales the logits to this standard "
        "deviation on its own images, so scaling the output layer hides nothing",
    )
    stuck_below: float = Field(
        default=0.5, gt=0, lt=1,
        description="a start is stuck when MIFace cannot raise the model's confidence in the class "
        "to this; stuck starts recover nothing, and a class whose blank and noise starts are all "
        "stuck counts as leaked (vanishing gradients hide leakage, they do not remove it)",
    )  # fmt: skip


class InversionNetAttack(StrictModel):
    """Training-based inversion (Yang, Zhang, Chang and Liang, CCS 2019): a decoder from the
    API's output vectors back to images, trained on the attacker's auxiliary images."""

    name: Literal["inversion-net"]
    secret_classes: list[int] = Field(
        min_length=1,
        description="classes of which the attacker has no image; a second attacker has images of "
        "these and of no other class, and the one that identifies users better counts",
    )
    epochs: int = Field(gt=0, le=500)
    learning_rate: float = Field(gt=0, le=1)
    batch_size: int = Field(default=64, gt=0, le=4096)
    hidden: list[int] = Field(default_factory=lambda: [256, 512], min_length=1, max_length=4)
    views: list[str] = Field(
        default_factory=lambda: ["log-scores", "runner-ups", "ranks"],
        min_length=1,
        description="what the attacker reads from each output vector (secureml.api_outputs.VIEWS); "
        "one inversion network per view, and the view that identifies most decides",
    )
    query_batch: int = Field(default=100, gt=0, le=10000, description="queries per call of the API")
    decoders: int = Field(
        default=1, gt=0, le=10,
        description="decoders per view, trained from different random starts; the attacker "
        "averages their reconstructions",
    )  # fmt: skip

    @field_validator("views")
    @classmethod
    def _known_views(cls, views: list[str]) -> list[str]:
        from secureml.api_outputs import VIEWS

        return distinct_known(views, VIEWS, "views")


class Holdout(StrictModel):
    """How the held-out images (dataset.test_size) are shared out; the rest is the utility test set."""

    evaluator: int = Field(gt=0, description="images the independent evaluation classifier trains on")
    auxiliary: int = Field(gt=0, description="the attacker's own images")


class ApiHoldout(StrictModel):
    """The held-out images (dataset.test_size): the attacker's, then the other users' queries."""

    auxiliary: int = Field(gt=0, description="the attacker's own images (before removing secret classes)")


class InversionScoring(StrictModel):
    method: Literal["leakage-calibrated"] = "leakage-calibrated"
    max_utility_drop: float = Field(
        default=0.10, gt=0, le=1, description="a utility loss this large (or larger) scores 0"
    )


class ApiInversionScoring(StrictModel):
    """Leakage removed, traded against what a client of a confidence API needs: the right
    argmax, and confidences it can bet on (log loss)."""

    method: Literal["leakage-confidence-calibrated"] = "leakage-confidence-calibrated"
    max_accuracy_drop: float = Field(
        default=0.10, gt=0, le=1, description="an accuracy loss this large (or larger) scores 0"
    )
    confidence_weight: float = Field(
        default=0.5, ge=0, lt=1,
        description="the share of the score that depends on confidences: a label-only API, "
        "which keeps none of them, scores at most 100 * (1 - confidence_weight)",
    )  # fmt: skip
    confidence_target: float = Field(
        default=0.5, gt=0, le=1,
        description="keeping this share of the full API's log-loss advantage over labels alone "
        "earns full marks for confidences",
    )  # fmt: skip
    client_smoothing: float = Field(
        default=0.01, gt=0, lt=1,
        description="the uniform mass a client mixes into every answer before it bets on it "
        "(bounds a confidently wrong answer's log loss)",
    )  # fmt: skip

    def formula_values(self) -> dict[str, float]:
        """The numbers an API scoring formula's text is filled with (scoring.*_FORMULA)."""
        return {
            "max_accuracy_drop": self.max_accuracy_drop,
            "max_accuracy_drop_points": 100 * self.max_accuracy_drop,
            "confidence_weight": self.confidence_weight,
            "confidence_target": self.confidence_target,
            "client_smoothing": self.client_smoothing,
            "label_only_score": 100 * (1 - self.confidence_weight),
        }

    def usefulness_settings(self) -> dict[str, float]:
        """What scoring._api_usefulness takes from the scenario file."""
        return {
            "max_accuracy_drop": self.max_accuracy_drop,
            "confidence_weight": self.confidence_weight,
            "confidence_target": self.confidence_target,
        }


class InversionHints(StrictModel):
    """Texts shown to the trainee after the score, chosen by what limited it."""

    leakage_remaining: str = Field(description="the reconstructions are still recognisable")
    utility_lost: str = Field(description="the mitigation cost too much utility")
    unchanged: str = Field(description="the mitigation changed (almost) nothing")
    success: str = Field(description="shown when the score is high")


class _InversionScenario(ScenarioBase):
    hints: InversionHints

    @model_validator(mode="after")
    def _holdout_leaves_a_test_set(self):
        held_out = sum(self.holdout.model_dump().values())
        left = self.dataset.test_size - held_out
        if left < 100:
            fields = " + ".join(f"holdout.{name}" for name in self.holdout.model_dump())
            raise ValueError(
                f"{fields} must leave at least 100 of dataset.test_size ({self.dataset.test_size}) "
                f"for the test set, found {left}"
            )
        return self


class InversionScenario(_InversionScenario):
    family: Literal["inversion"]
    holdout: Holdout
    evaluator: VictimConfig = Field(description="the independent evaluation classifier's recipe")
    attack: MIFaceAttack
    scoring: InversionScoring = InversionScoring()

    trainee_call: ClassVar[TraineeCall] = TraineeCall(
        "train",
        ("x", "y", "tools"),
        "a torch model with the victim's architecture (from tools.build())",
        "  x: float32 (N, C, H, W) in [0, 1], the private training set; y: int64 (N,) labels\n"
        "  (on all of x, y, tools.train returns the victim itself)",
    )

    def variant_overrides(self, rng: random.Random) -> dict[str, Any]:
        """MIFace from other starts and with another step: a model shaped around the public
        attack's noise scales or step size (units dead at exactly those starts) meets others.
        The scales stay within [0.1, 0.6]: noise in [0, 1] left MIFace stuck on half of the
        undefended victim's classes (measured on inversion-01)."""
        low, high = round(rng.uniform(0.1, 0.3), 2), round(rng.uniform(0.4, 0.6), 2)
        return {"attack": {"noise_scales": [low, high], "learning_rate": rng.choice([0.05, 0.1, 0.2]),
                           "auxiliary_samples": rng.choice([2, 3])}}

    def scoring_formula(self) -> str:
        from secureml.scoring import INVERSION_FORMULA

        return INVERSION_FORMULA.format(
            max_utility_drop=self.scoring.max_utility_drop,
            max_utility_drop_points=100 * self.scoring.max_utility_drop,
        )


class InversionApiScenario(_InversionScenario):
    family: Literal["inversion-api"]
    holdout: ApiHoldout
    attack: InversionNetAttack
    scoring: ApiInversionScoring = ApiInversionScoring()

    trainee_call: ClassVar[TraineeCall] = TraineeCall(
        "protect",
        ("model", "tools"),
        "api, a callable: api(x) -> outputs",
        "  model: the deployed torch classifier (returns logits); x: float32 (B, C, H, W) in [0, 1]\n"
        "  outputs: (B, num_classes) scores in [0, 1]; the predicted class is their argmax; a client\n"
        "    reads them as probabilities, unreported mass (1 - sum) spread evenly over the classes\n"
        "  tools.probabilities(model, x) -> the softmax vectors the API returns today",
    )

    def scoring_formula(self) -> str:
        from secureml.scoring import INVERSION_API_FORMULA

        return INVERSION_API_FORMULA.format(**self.scoring.formula_values())

    @model_validator(mode="after")
    def _secret_classes_are_classes(self) -> InversionApiScenario:
        from secureml.datasets import DATASETS

        classes = DATASETS[self.dataset.name].num_classes
        secret = self.attack.secret_classes
        if len(set(secret)) != len(secret) or min(secret) < 0 or max(secret) >= classes:
            raise ValueError(
                f"attack.secret_classes must be distinct classes in [0, {classes}), found {secret}"
            )
        if len(secret) >= classes:
            raise ValueError("attack.secret_classes must leave the attacker at least one class of images")
        return self

    def variant_overrides(self, rng: random.Random) -> dict[str, Any]:
        """Other secret classes, as many as before: an API that hides only the public ones
        leaks the new ones."""
        from secureml.datasets import DATASETS

        classes = DATASETS[self.dataset.name].num_classes
        count = len(self.attack.secret_classes)
        return {"attack": {"secret_classes": sorted(rng.sample(range(classes), count))}}
