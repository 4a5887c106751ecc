"""The poisoning family's scenario schema (light: no torch, no ART)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from secureml.mitigation import TraineeCall
from secureml.scenario import MILD_VARIANT_DISTORTION, ScenarioBase, StrictModel


class _Trigger(StrictModel):
    """Where a trigger sits: its box's top-left pixel. Any position where the box fits."""

    if TYPE_CHECKING:
        # Each trigger class declares its own `kind: Literal[...]`, the union's discriminator.
        # For the type checker only: a field here would move `kind` in the schema's order.
        kind: str

    row: int = Field(ge=0, description="top edge of the trigger's box, in pixels from the top")
    col: int = Field(ge=0, description="left edge of the trigger's box, in pixels from the left")

    def box(self) -> tuple[int, int]:
        """(height, width) of the trigger's box in pixels."""
        raise NotImplementedError

    def describe(self) -> str:
        height, width = self.box()
        look = ", ".join(
            f"{name} {value:g}" for name, value in self.model_dump().items() if name in ("pixel_value", "alpha")
        )
        return f"{self.kind} {height}x{width} at row {self.row}, column {self.col} ({look})"


class PatternTrigger(_Trigger):
    """ART's add_pattern_bd: four pixels in a 3x3 box (BadNets, Gu et al., 2017)."""

    kind: Literal["pattern"]
    pixel_value: float = Field(default=1.0, ge=0.0, le=1.0, description="1 bright, 0.5 mid-grey, 0 dark")

    def box(self) -> tuple[int, int]:
        return (3, 3)


class PixelTrigger(_Trigger):
    """ART's add_single_bd: one pixel."""

    kind: Literal["pixel"]
    pixel_value: float = Field(default=1.0, ge=0.0, le=1.0, description="1 bright, 0.5 mid-grey, 0 dark")

    def box(self) -> tuple[int, int]:
        return (1, 1)


class SquareTrigger(_Trigger):
    """A solid size x size patch (the BadNets square)."""

    kind: Literal["square"]
    size: int = Field(ge=2, le=12, description="side of the patch in pixels")
    pixel_value: float = Field(ge=0.0, le=1.0, description="1 bright, 0.5 mid-grey, 0 dark")

    def box(self) -> tuple[int, int]:
        return (self.size, self.size)


class CheckerTrigger(_Trigger):
    """A size x size checkerboard of pixel_value and black."""

    kind: Literal["checker"]
    size: int = Field(default=5, ge=2, le=12, description="side of the patch in pixels")
    pixel_value: float = Field(default=1.0, gt=0.0, le=1.0, description="the checkerboard's light squares")

    def box(self) -> tuple[int, int]:
        return (self.size, self.size)


class BlendTrigger(_Trigger):
    """A fixed noise pattern blended into a size x size box: x' = (1 - alpha) x + alpha * noise
    (the blended injection of Chen et al., 2017, "Targeted Backdoor Attacks on Deep Learning
    Systems Using Data Poisoning"). It changes every pixel of the box a little."""

    kind: Literal["blend"]
    size: int = Field(ge=4, le=64, description="side of the blended box in pixels (the image's side: everywhere)")
    alpha: float = Field(ge=0.05, le=0.5, description="weight of the noise pattern")
    pattern_seed: int = Field(default=0, ge=0, lt=2**31, description="seed of the noise pattern")

    def box(self) -> tuple[int, int]:
        return (self.size, self.size)


Trigger = Annotated[
    PatternTrigger | PixelTrigger | SquareTrigger | CheckerTrigger | BlendTrigger, Field(discriminator="kind")
]


# --------------------------------------------------------------------------- variants' triggers
#
# What a variant's trigger may look like. Each look took hold at 10% BadNets poison on
# mnist-5k (victim ASR >= 0.95 after 6 epochs; ART-FACTS pitfall 9 for why the share
# matters), measured with a 4x4 box unless said otherwise:
#   bright checkerboard: 0.99 in the middle of the digit, where a bright 4-pixel pattern
#     got only 0.24 (it vanishes on the ink) and a mid-grey one 0.05;
#   mid-grey or bright pattern or checkerboard near an edge (on the background): 0.95-0.98;
#   blended noise, alpha 0.2, over the whole image: 1.00 (so variants blend 0.2 or 0.25);
#   dark square over the middle of the digit: 0.51 with 4x4, 0.84 with 6x6 (0.82 at 15%
#     poison), 0.91 with 7x7, so dark ones are 7x7; the rest miss digits with no ink there.
# The clean-label attack is weaker (0.60 with its public 5x5 bright checkerboard in the
# bottom-right corner; 0.006 with it at row 5, column 11, over the top of the digits), so
# its variants only move a checkerboard, and only on the background near an edge. At 5x5
# there, 7 of variants 0-7 did not take hold (ASR 0.05-0.21); at 7x7 the same 7 targets and
# places reached ASR 0.25-0.49 (effect over the poison-free model 0.24-0.46) on 6 of them,
# and 0.11 on the seventh (target 4, bottom-left), so clean-label variants are 7x7.
#
# Automatic variants draw only looks the lab's reference finds. poisoning-01's reference
# (a pixel k-NN vote, and activation clustering on the victim's activations and on the
# pixels, each cluster judged by how evenly its look-alikes spread over the other labels)
# scored 87.2-99.7 at full size on 12 variants of each look below (48 in all; seeds,
# targets and positions drawn as a variant draws them) and 96.8-97.5 on the public trigger
# over 3 seeds. The k-NN vote alone scored 0 on every dark square and every blend: the
# poison's nearest neighbours were each other.
LOOKS = {
    "badnets": ("bright-checker", "edge-mark", "blended", "dark-square"),
    "clean-label": ("clean-label-checker",),
}


def draw_trigger(rng: random.Random, height: int, width: int, looks) -> dict[str, Any]:
    """A trigger of a look drawn from `looks`, at a position drawn where that look shows."""
    look = rng.choice(looks)
    small = max(2, round(height / 7))  # 4 on 28x28 images
    trigger: dict[str, Any]
    if look == "bright-checker":
        trigger, region = {"kind": "checker", "size": small, "pixel_value": 1.0}, "anywhere"
    elif look == "clean-label-checker":
        trigger, region = {"kind": "checker", "size": max(2, height // 4), "pixel_value": 1.0}, "edge"
    elif look == "edge-mark":
        kind = rng.choice(["pattern", "checker", "square"])
        trigger = {"kind": kind, "pixel_value": rng.choice([0.5, 1.0])}
        if kind != "pattern":
            trigger["size"] = max(2, small - 1)
        region = "edge"
    elif look == "blended":
        trigger = {
            "kind": "blend",
            "size": height,
            "alpha": rng.choice([0.2, 0.25]),
            "pattern_seed": rng.randrange(2**31),
        }
        region = "anywhere"
    else:  # dark-square
        trigger, region = {"kind": "square", "size": max(2, height // 4), "pixel_value": 0.0}, "middle"
    box = {"pattern": 3}.get(trigger["kind"], trigger.get("size", 1))
    trigger["row"], trigger["col"] = _position(rng, region, box, height, width)
    return trigger


def _position(rng: random.Random, region: str, box: int, height: int, width: int) -> tuple[int, int]:
    """A top-left corner for a box x box trigger: anywhere it fits, in the middle third of
    the image (where digits have ink), or wholly within a quarter of the image from an edge
    (on the background: a mid-grey square reaching 5 pixels further in got ASR 0.37)."""
    if region == "middle":
        return rng.randint(height // 3, height - height // 3 - box), rng.randint(width // 3, width - width // 3 - box)
    rows, cols = range(height - box + 1), range(width - box + 1)
    if region == "anywhere":
        return rng.choice(rows), rng.choice(cols)
    band_rows, band_cols = height // 4, width // 4
    near_edge = [
        (row, col)
        for row in rows
        for col in cols
        if row + box <= band_rows or col + box <= band_cols or row >= height - band_rows or col >= width - band_cols
    ]
    return rng.choice(near_edge)


class BadNetsAttack(StrictModel):
    """BadNets (Gu et al., 2017): stamp a trigger on a share of the training set, relabel to a target."""

    name: Literal["badnets"]
    target_class: int = Field(ge=0)
    poison_fraction: float = Field(gt=0, le=0.5, description="share of the whole training set")
    trigger: Trigger


class CleanLabelAttack(StrictModel):
    """Clean-label backdoor (Turner et al., 2019): perturb target-class images with PGD, add the
    trigger, keep their correct labels."""

    name: Literal["clean-label"]
    target_class: int = Field(ge=0)
    poison_fraction: float = Field(gt=0, lt=1, description="share of the target class poisoned")
    trigger: Trigger
    eps: float = Field(gt=0, le=1, description="L-inf budget of the PGD step that hides the content")
    eps_step: float = Field(gt=0, le=1)
    max_iter: int = Field(gt=0, le=500)
    # The proxy model the attacker trains to run PGD against (same data, own seed).
    proxy_epochs: int = Field(default=3, gt=0, le=50)


PoisoningAttack = Annotated[BadNetsAttack | CleanLabelAttack, Field(discriminator="name")]


class PoisoningScoring(StrictModel):
    method: Literal["der-calibrated"] = "der-calibrated"
    max_clean_accuracy_drop: float = Field(
        default=0.05, gt=0, le=1, description="larger clean-accuracy losses score 0 (TrojanZoo)"
    )
    max_clean_dropped: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="share of the clean training samples whose loss scores 0; dropping fewer "
        "costs proportionally (the kept-clean factor)",
    )


class PoisoningHints(StrictModel):
    """Texts shown to the trainee after the score, chosen by what limited it."""

    asr_remaining: str = Field(description="the attack still works after the mitigation")
    clean_accuracy_lost: str = Field(description="the mitigation cost too much clean accuracy")
    kept_everything: str = Field(description="the mitigation dropped (almost) nothing")
    dropped_too_much: str = Field(description="many clean samples were dropped")
    success: str = Field(description="shown when the score is high")


Baseline = Literal["activation-defence", "spectral-signature"]
DEFAULT_BASELINES: tuple[Baseline, ...] = ("activation-defence", "spectral-signature")


class PoisoningScenario(ScenarioBase):
    family: Literal["poisoning"]
    attack: PoisoningAttack
    baselines: list[Baseline] = Field(default_factory=lambda: list(DEFAULT_BASELINES))
    scoring: PoisoningScoring = PoisoningScoring()
    hints: PoisoningHints

    trainee_call: ClassVar[TraineeCall] = TraineeCall(
        "sanitize",
        ("x", "y", "tools"),
        "kept indices (int array) or a boolean mask of len(y)",
        "  x: float32 (N, C, H, W) in [0, 1], the training set as the attacker left it\n"
        "  y: int64 (N,) labels (on all of x, y, tools.train returns the victim itself)\n"
        "  tools.features(model, x) -> (N, D) penultimate activations",
    )
    variant_distortion: ClassVar[Mapping[str, float] | None] = MILD_VARIANT_DISTORTION

    def scoring_formula(self) -> str:
        from secureml.scoring import DER_CALIBRATED_FORMULA, LUCK_FILTERS, LUCK_SD

        return DER_CALIBRATED_FORMULA.format(
            luck_filters=LUCK_FILTERS,
            luck_sd=LUCK_SD,
            max_clean_accuracy_drop_points=100 * self.scoring.max_clean_accuracy_drop,
            max_clean_dropped=self.scoring.max_clean_dropped,
            max_clean_dropped_percent=100 * self.scoring.max_clean_dropped,
        )

    @model_validator(mode="after")
    def _target_is_a_class_and_the_trigger_fits(self) -> PoisoningScenario:
        from secureml.datasets import DATASETS

        spec = DATASETS[self.dataset.name]
        if self.attack.target_class >= spec.num_classes:
            raise ValueError(
                f"attack.target_class must be below the dataset's {spec.num_classes} classes, "
                f"found {self.attack.target_class}"
            )
        trigger = self.attack.trigger
        (height, width), (_, image_height, image_width) = trigger.box(), spec.shape
        if trigger.row + height > image_height or trigger.col + width > image_width:
            raise ValueError(
                f"attack.trigger must fit inside the {image_height}x{image_width} images of "
                f"{self.dataset.name}: its {height}x{width} box at row {trigger.row}, column {trigger.col} "
                f"needs row <= {image_height - height} and col <= {image_width - width}"
            )
        return self

    def variant_overrides(self, rng: random.Random) -> dict[str, Any]:
        """Another target class and a trigger of a kind, colour and position drawn afresh."""
        from secureml.datasets import DATASETS

        spec = DATASETS[self.dataset.name]
        others = [label for label in range(spec.num_classes) if label != self.attack.target_class]
        _, height, width = spec.shape
        return {
            "attack": {
                "target_class": rng.choice(others),
                "trigger": draw_trigger(rng, height, width, LOOKS[self.attack.name]),
            }
        }
