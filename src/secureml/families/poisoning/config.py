"""The poisoning family's scenario schema (light: no torch, no ART)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Union

from pydantic import Field, model_validator

from secureml.scenario import ScenarioBase, StrictModel


class Trigger(StrictModel):
    """A trigger drawn with ART's perturbation functions."""

    kind: Literal["pattern", "pixel", "checker"] = Field(
        default="pattern",
        description="'pattern': ART add_pattern_bd (4 pixels); 'pixel': ART add_single_bd; "
        "'checker': a size x size checkerboard patch",
    )
    size: int = Field(default=5, ge=2, le=12, description="side of the 'checker' patch in pixels")
    corner: Literal["bottom-right", "top-left", "top-right", "bottom-left"] = "bottom-right"
    distance: int = Field(default=2, ge=1, le=10, description="pixels from the corner")
    pixel_value: float = Field(default=1.0, ge=0.0, le=1.0)


class BadNetsAttack(StrictModel):
    """BadNets (Gu et al., 2017): stamp a trigger on a share of the training set, relabel to a target."""

    name: Literal["badnets"]
    target_class: int = Field(ge=0)
    poison_fraction: float = Field(gt=0, le=0.5, description="share of the whole training set")
    trigger: Trigger = Trigger()


class CleanLabelAttack(StrictModel):
    """Clean-label backdoor (Turner et al., 2019): perturb target-class images with PGD, add the
    trigger, keep their correct labels."""

    name: Literal["clean-label"]
    target_class: int = Field(ge=0)
    poison_fraction: float = Field(gt=0, lt=1, description="share of the target class poisoned")
    trigger: Trigger = Trigger()
    eps: float = Field(gt=0, le=1, description="L-inf budget of the PGD step that hides the content")
    eps_step: float = Field(gt=0, le=1)
    max_iter: int = Field(gt=0, le=500)
    # The proxy model the attacker trains to run PGD against (same data, own seed).
    proxy_epochs: int = Field(default=3, gt=0, le=50)


PoisoningAttack = Annotated[Union[BadNetsAttack, CleanLabelAttack], Field(discriminator="name")]


class PoisoningScoring(StrictModel):
    method: Literal["der-calibrated"] = "der-calibrated"
    max_clean_accuracy_drop: float = Field(
        default=0.05, gt=0, le=1, description="larger clean-accuracy losses score 0 (TrojanZoo)"
    )


class PoisoningHints(StrictModel):
    """Texts shown to the trainee after the score, chosen by what limited it."""

    asr_remaining: str = Field(description="the attack still works after the mitigation")
    clean_accuracy_lost: str = Field(description="the mitigation cost too much clean accuracy")
    kept_everything: str = Field(description="the mitigation dropped (almost) nothing")
    dropped_too_much: str = Field(description="many clean samples were dropped")
    success: str = Field(description="shown when the score is high")


class PoisoningScenario(ScenarioBase):
    family: Literal["poisoning"]
    attack: PoisoningAttack
    baselines: list[Literal["activation-defence", "spectral-signature"]] = Field(
        default_factory=lambda: ["activation-defence", "spectral-signature"]
    )
    scoring: PoisoningScoring = PoisoningScoring()
    hints: PoisoningHints

    trainee_function: ClassVar[str] = "sanitize"
    mitigation_signature: ClassVar[str] = (
        "def sanitize(x, y, tools) -> kept indices (int array) or a boolean mask of len(y)\n"
        "  x: float32 (N, C, H, W) in [0, 1], the training set as the attacker left it\n"
        "  y: int64 (N,) labels\n"
        "  tools.train(x, y) -> model trained like the victim (on all of x, y: the victim itself)\n"
        "  tools.features(model, x) -> (N, D) penultimate activations; tools.predict(model, x)\n"
        "  tools.num_classes, tools.seed"
    )

    def scoring_formula(self) -> str:
        from secureml.scoring import DER_CALIBRATED_FORMULA

        return DER_CALIBRATED_FORMULA.format(
            max_clean_accuracy_drop_points=100 * self.scoring.max_clean_accuracy_drop
        )

    @model_validator(mode="after")
    def _target_is_a_class(self) -> "PoisoningScenario":
        from secureml.datasets import DATASETS

        classes = DATASETS[self.dataset.name].num_classes
        if self.attack.target_class >= classes:
            raise ValueError(
                f"attack.target_class must be below the dataset's {classes} classes, "
                f"found {self.attack.target_class}"
            )
        return self
