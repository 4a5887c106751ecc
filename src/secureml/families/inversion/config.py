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

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from secureml.scenario import ScenarioBase, StrictModel, VictimConfig


class MIFaceAttack(StrictModel):
    """MIFace (Fredrikson, Jha and Ristenpart, CCS 2015), ART's implementation, every class."""

    name: Literal["miface"]
    # ART-FACTS: MIFace effectively always runs max_iter iterations; its cost is linear in it.
    max_iter: int = Field(gt=0, le=5000)
    learning_rate: float = Field(gt=0, le=100, description="step size of the gradient ascent")
    restarts: int = Field(
        default=4, ge=1, le=32, description="starting points per class: zeros first, then seeded noise"
    )
    init_noise: float = Field(
        default=0.2, ge=0, le=1, description="later starting points are uniform noise in [0, init_noise]"
    )
    logit_std: float = Field(
        default=3.0,
        gt=0,
        le=50,
        description="before the softmax the attacker rescales the logits to this standard "
        "deviation on its reference images, so scaling the output layer hides nothing",
    )


class InversionNetAttack(StrictModel):
    """Training-based inversion (Yang, Zhang, Chang and Liang, CCS 2019): a decoder from the
    API's output vectors back to images, trained on the attacker's auxiliary images."""

    name: Literal["inversion-net"]
    secret_classes: list[int] = Field(
        min_length=1,
        description="classes with no image in the attacker's auxiliary data: the classes attacked",
    )
    epochs: int = Field(gt=0, le=500)
    learning_rate: float = Field(gt=0, le=1)
    batch_size: int = Field(default=64, gt=0, le=4096)
    hidden: list[int] = Field(default_factory=lambda: [256, 512], min_length=1, max_length=4)
    probability_floor: float = Field(
        default=1e-6, gt=0, lt=0.1, description="the attacker reads log(max(p, floor))"
    )
    query_batch: int = Field(default=100, gt=0, le=10000, description="queries per call of the API")
    decoders: int = Field(
        default=3, gt=0, le=10,
        description="decoders trained from different random starts; leakage is measured over all",
    )


class Holdout(StrictModel):
    """How the held-out images (dataset.test_size) are shared out; the rest is the utility test set."""

    evaluator: int = Field(gt=0, description="images the independent evaluation classifier trains on")
    auxiliary: int = Field(gt=0, description="the attacker's own images (before removing secret classes)")


class InversionScoring(StrictModel):
    method: Literal["leakage-calibrated"] = "leakage-calibrated"
    max_utility_drop: float = Field(
        default=0.10, gt=0, le=1, description="a utility loss this large (or larger) scores 0"
    )


class InversionHints(StrictModel):
    """Texts shown to the trainee after the score, chosen by what limited it."""

    leakage_remaining: str = Field(description="the reconstructions are still recognisable")
    utility_lost: str = Field(description="the mitigation cost too much utility")
    unchanged: str = Field(description="the mitigation changed (almost) nothing")
    success: str = Field(description="shown when the score is high")


class _InversionScenario(ScenarioBase):
    holdout: Holdout
    evaluator: VictimConfig = Field(description="the independent evaluation classifier's recipe")
    scoring: InversionScoring = InversionScoring()
    hints: InversionHints

    # Overridden per family: the one function the trainee writes.
    # What the floor of the score is, for the formula text.
    floor_text: ClassVar[str] = ""
    utility_text: ClassVar[str] = ""

    def scoring_formula(self) -> str:
        from secureml.scoring import INVERSION_FORMULA

        return INVERSION_FORMULA.format(
            max_utility_drop=self.scoring.max_utility_drop,
            max_utility_drop_points=100 * self.scoring.max_utility_drop,
            floor=self.floor_text,
            utility=self.utility_text,
        )

    @model_validator(mode="after")
    def _holdout_fits_and_function_matches(self):
        left = self.dataset.test_size - self.holdout.evaluator - self.holdout.auxiliary
        if left < 100:
            raise ValueError(
                "holdout.evaluator + holdout.auxiliary must leave at least 100 of "
                f"dataset.test_size ({self.dataset.test_size}) for the utility test set, found {left}"
            )
        return self


class InversionScenario(_InversionScenario):
    family: Literal["inversion"]
    attack: MIFaceAttack

    trainee_function: ClassVar[str] = "train"
    floor_text: ClassVar[str] = "is chance (1 / number of classes)"
    utility_text: ClassVar[str] = "the returned model's test accuracy"
    mitigation_signature: ClassVar[str] = (
        "def train(x, y, tools) -> a torch model with the victim's architecture\n"
        "  x: float32 (N, C, H, W) in [0, 1], the private training set; y: int64 (N,) labels\n"
        "  tools.new_model() -> a freshly initialised model of the victim's architecture\n"
        "  tools.train(x, y) -> a model trained exactly like the victim (on all of x, y: the victim)\n"
        "  tools.epochs, tools.batch_size, tools.learning_rate: the victim's recipe\n"
        "  tools.accuracy(model, x, y), tools.predict(model, x), tools.num_classes, tools.seed"
    )


class InversionApiScenario(_InversionScenario):
    family: Literal["inversion-api"]
    attack: InversionNetAttack

    trainee_function: ClassVar[str] = "protect"
    floor_text: ClassVar[str] = (
        "is what the same attack recovers from an API that returns labels only (one-hot vectors)"
    )
    utility_text: ClassVar[str] = "the accuracy of the argmax of your API's outputs on test queries"
    mitigation_signature: ClassVar[str] = (
        "def protect(model, tools) -> api, a callable: api(x) -> outputs\n"
        "  model: the deployed torch classifier (returns logits); x: float32 (B, C, H, W) in [0, 1]\n"
        "  outputs: (B, num_classes) scores in [0, 1]; the predicted class is their argmax\n"
        "  tools.probabilities(model, x) -> the softmax vectors the API returns today\n"
        "  tools.num_classes, tools.seed"
    )

    @model_validator(mode="after")
    def _secret_classes_are_classes(self) -> "InversionApiScenario":
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
