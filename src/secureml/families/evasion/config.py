"""The evasion family's scenario schemas (light: no torch, no ART).

The preprocessing steps a trainee may choose are declared here too: the parent validates
the trainee's answer with `PreprocessPipeline`, so only these typed, bounded values ever
reach the grader's process.
"""

from __future__ import annotations

import random
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from secureml.mitigation import TraineeCall
from secureml.scenario import ScenarioBase, StrictModel

# --------------------------------------------------------------------------- threat model


class ThreatModel(StrictModel):
    """The attacker's budget: a ball around each test image, in [0, 1] pixel units."""

    norm: Literal["inf", "2"] = Field(description="'inf': L-infinity ball; '2': L2 (Euclidean) ball")
    epsilon: float = Field(gt=0, le=20, description="radius of the ball")


# --------------------------------------------------------------------------- the attack suite


class FgsmAttack(StrictModel):
    """Fast gradient (sign) method (Goodfellow et al., 2015): one step of size epsilon."""

    name: Literal["fgsm"]


class PgdAttack(StrictModel):
    """Projected gradient descent (Madry et al., 2018) from random starts in the ball."""

    name: Literal["pgd"]
    steps: int = Field(gt=0, le=1000)
    step_size: float = Field(gt=0, le=20, description="absolute step length in the threat norm")
    restarts: int = Field(ge=1, le=50, description="random starts; an image falls if any start fools the model")


class CarliniWagnerL2Attack(StrictModel):
    """Carlini & Wagner (2017) L2 attack on the logits. In an L-infinity scenario its examples
    are projected into the ball before they are judged."""

    name: Literal["cw-l2"]
    steps: int = Field(gt=0, le=1000, description="optimiser iterations per binary-search step")
    binary_search_steps: int = Field(gt=0, le=20)
    learning_rate: float = Field(gt=0, le=10)
    initial_const: float = Field(gt=0, le=1000)
    confidence: float = Field(default=0.0, ge=0, le=100)


AutoAttackLoss = Literal["ce", "dlr"]
AUTOATTACK_LOSSES: tuple[AutoAttackLoss, ...] = ("ce", "dlr")
# Through the escalation's surrogate: DLR compares logits only, so it does not saturate where
# cross-entropy does (PGD through the surrogate already follows cross-entropy).
SURROGATE_LOSSES: tuple[AutoAttackLoss, ...] = ("dlr",)


class AutoAttackSuite(StrictModel):
    """ART's AutoAttack (Croce & Hein, 2020) running APGD with the chosen losses.

    Standard AutoAttack also runs the gradient-free Square attack; here Square is a suite
    member of its own, so that it can serve as the gradient-masking check."""

    name: Literal["autoattack"]
    steps: int = Field(gt=0, le=1000, description="APGD iterations per loss")
    restarts: int = Field(ge=1, le=20)
    losses: list[AutoAttackLoss] = Field(default_factory=lambda: list(AUTOATTACK_LOSSES), min_length=1)


class SquareAttackConfig(StrictModel):
    """Square attack (Andriushchenko et al., 2020): gradient-free, so gradient masking cannot stop it."""

    name: Literal["square"]
    queries: int = Field(gt=0, le=20000, description="iterations (one model query per image each)")
    restarts: int = Field(default=1, ge=1, le=10)
    p_init: float = Field(default=0.8, gt=0, le=1, description="initial share of pixels changed per square")


class HopSkipJumpAttack(StrictModel):
    """HopSkipJump (Chen et al., 2020): decision-based, gradient-free. ART's L2 Square attack
    needs images of at least 10x10 pixels; on 8x8 digits this is the masking check."""

    name: Literal["hop-skip-jump"]
    steps: int = Field(gt=0, le=500, description="iterations (max_iter)")
    max_eval: int = Field(gt=0, le=100000, description="queries per gradient estimate, at most")
    init_eval: int = Field(gt=0, le=10000, description="queries per gradient estimate, at first")
    init_size: int = Field(default=100, gt=0, le=10000, description="random tries to find a first adversarial image")


EvasionAttack = Annotated[
    FgsmAttack | PgdAttack | CarliniWagnerL2Attack | AutoAttackSuite | SquareAttackConfig | HopSkipJumpAttack,
    Field(discriminator="name"),
]

# Attacks that use no gradient; at least one is required as the masking check.
GRADIENT_FREE = frozenset({"square", "hop-skip-jump"})


class Curve(StrictModel):
    """Robust accuracy versus epsilon, by PGD, for the picture and the monotonicity check."""

    epsilons: list[float] = Field(min_length=3, max_length=12)
    steps: int = Field(gt=0, le=500)
    restarts: int = Field(default=1, ge=1, le=10)

    @model_validator(mode="after")
    def _increasing(self) -> Curve:
        # Each epsilon with the next: the [1:] copy is one shorter on purpose.
        pairs = zip(self.epsilons, self.epsilons[1:], strict=False)
        if any(e <= 0 for e in self.epsilons) or any(b <= a for a, b in pairs):
            raise ValueError(f"epsilons must be positive and increasing, found {self.epsilons}")
        return self


class AttackSuite(StrictModel):
    subset: int = Field(gt=0, le=10000, description="test images attacked: the first N of the test split")
    subset_seed: int | None = Field(
        default=None,
        ge=0,
        lt=2**31,
        description="draw the attacked test images with this seed instead of taking the first N "
        "(automatic variants do)",
    )
    batch_size: int = Field(default=128, gt=0, le=4096)
    attacks: list[EvasionAttack] = Field(min_length=1)
    curve: Curve
    eot_samples: int = Field(
        default=8, ge=1, le=64, description="random draws averaged per gradient for randomised pipelines (EOT)"
    )

    @model_validator(mode="after")
    def _names_unique_and_a_gradient_free_check(self) -> AttackSuite:
        names = [attack.name for attack in self.attacks]
        if len(set(names)) != len(names):
            raise ValueError(f"each attack may appear once, found {names}")
        if not GRADIENT_FREE & set(names):
            raise ValueError(
                f"the suite needs a gradient-free attack ({', '.join(sorted(GRADIENT_FREE))}) "
                "as the gradient-masking check"
            )
        return self


class MaskingChecks(StrictModel):
    """Thresholds of the gradient-masking flags (after RobustBench's list of red flags)."""

    black_box_margin: float = Field(
        default=0.02, ge=0, le=1,
        description="flag when the gradient-free attack leaves this much less robust accuracy "
        "than all white-box attacks together",
    )
    gradient_check_samples: int = Field(default=50, gt=0, le=1000)
    zero_gradient_share: float = Field(
        default=0.1, ge=0, le=1, description="flag when more of the checked images have zero, NaN or infinite gradients"
    )
    curve_tolerance: float = Field(
        default=0.03, ge=0, le=1, description="how much robust accuracy may rise between two epsilons of the curve"
    )
    largest_epsilon_accuracy: float = Field(
        default=0.1, ge=0, le=1, description="robust accuracy allowed at the curve's largest epsilon"
    )
    randomness_tolerance: float = Field(
        default=0.01, ge=0, le=1, description="flag when two evaluations of the same adversarial images differ more"
    )


class Escalation(StrictModel):
    """The stronger evaluation the grader runs on its own when a gradient-masking check fires
    (and only then): a much larger budget for the gradient-free attack, transfer attacks from
    the undefended victim, and BPDA through a smoothed surrogate of the submitted model
    (Athalye et al., 2018; Tramer et al., "On Adaptive Attacks to Adversarial Example
    Defenses", 2020). The worst case over the suite and the escalation decides."""

    square_queries: int = Field(
        default=5000, gt=0, le=100000, description="Square attack queries (the suite's, if larger)"
    )
    hop_skip_jump_steps: int = Field(
        default=50, gt=0, le=1000, description="HopSkipJump iterations (the suite's, if larger)"
    )
    surrogate_steps: int = Field(default=50, gt=0, le=1000, description="PGD steps through the smoothed surrogate")
    surrogate_restarts: int = Field(default=2, ge=1, le=20)
    surrogate_losses: list[AutoAttackLoss] = Field(
        default_factory=lambda: list(SURROGATE_LOSSES),
        min_length=1,
        description="APGD losses (AutoAttack's) run through the surrogate beside its PGD",
    )
    surrogate_temperature: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="width of each ReLU's smoothed backward pass, in units of the spread of its inputs",
    )
    # A flag that even the escalation leaves standing means the gradients still mislead: the
    # worst case found is then a bound the grader cannot vouch for (Carlini et al., 2019,
    # section 5: a defence whose evaluation shows masking is not shown robust). The rule
    # for inversion-01 applies: scored as needing review, and capped.
    score_cap_if_flags_stand: float = Field(
        default=10,
        ge=0,
        le=100,
        description="the most a run scores while a gradient-masking flag stands after the escalation "
        "(until an instructor reviews it)",
    )


class EvasionScoring(StrictModel):
    method: Literal["robust-accuracy-calibrated"] = "robust-accuracy-calibrated"
    target_robust_accuracy: float = Field(
        gt=0, le=1, description="worst-case robust accuracy that earns full marks (measured, see the file)"
    )
    max_clean_accuracy_drop: float = Field(
        gt=0, le=1, description="a clean-accuracy loss this large (or larger) scores 0"
    )


class EvasionHints(StrictModel):
    """Texts shown to the trainee after the score, chosen by what limited it."""

    not_robust: str = Field(description="worst-case robust accuracy is far from the target")
    clean_accuracy_lost: str = Field(description="the mitigation cost clean accuracy")
    masking: str = Field(description="shown with gradient-masking flags")
    success: str = Field(description="shown when the score is high")


class Budget(StrictModel):
    """What `harden` may spend. The grader's sandbox enforces its own time limit."""

    time_s: float = Field(gt=0, le=3600, description="wall-clock budget of harden on a 2-core CPU")


# --------------------------------------------------------------------------- preprocessing menu


class BitDepthStep(StrictModel):
    """ART FeatureSqueezing: round every pixel to 2**bits levels (Xu et al., 2018)."""

    name: Literal["bit-depth"]
    bits: int = Field(ge=1, le=8)


class MedianStep(StrictModel):
    """ART SpatialSmoothing: a median filter over window x window pixels."""

    name: Literal["median"]
    window: int = Field(ge=2, le=7)


class JpegStep(StrictModel):
    """ART JpegCompression at the given quality (Dziugaite et al., 2016)."""

    name: Literal["jpeg"]
    quality: int = Field(ge=5, le=95)


class GaussianNoiseStep(StrictModel):
    """ART GaussianAugmentation at prediction time: fresh noise on every call (randomised)."""

    name: Literal["gaussian-noise"]
    sigma: float = Field(gt=0, le=1)


PreprocessStep = Annotated[
    BitDepthStep | MedianStep | JpegStep | GaussianNoiseStep, Field(discriminator="name")
]
StepName = Literal["bit-depth", "median", "jpeg", "gaussian-noise"]
STEP_NAMES: tuple[StepName, ...] = ("bit-depth", "median", "jpeg", "gaussian-noise")
RANDOMISED_STEPS = frozenset({"gaussian-noise"})


class PreprocessPipeline(StrictModel):
    """A trainee's answer in evasion-preprocess: steps applied in order before the victim."""

    steps: list[PreprocessStep] = Field(default_factory=list, max_length=8)

    @property
    def randomised(self) -> bool:
        return any(step.name in RANDOMISED_STEPS for step in self.steps)

    def describe(self) -> str:
        if not self.steps:
            return "no preprocessing"
        return " -> ".join(
            f"{step.name}({', '.join(f'{k}={v}' for k, v in step.model_dump().items() if k != 'name')})"
            for step in self.steps
        )


# --------------------------------------------------------------------------- scenarios


class _EvasionScenario(ScenarioBase):
    threat: ThreatModel
    evaluation: AttackSuite
    masking: MaskingChecks = MaskingChecks()
    escalation: Escalation = Escalation()
    scoring: EvasionScoring
    hints: EvasionHints

    # Overridden per family: the one function the trainee writes.

    def scoring_formula(self) -> str:
        from secureml.scoring import ROBUST_ACCURACY_FORMULA

        return ROBUST_ACCURACY_FORMULA.format(
            target=self.scoring.target_robust_accuracy,
            max_clean_accuracy_drop=self.scoring.max_clean_accuracy_drop,
            max_clean_accuracy_drop_points=100 * self.scoring.max_clean_accuracy_drop,
            threat=self.threat_text(),
            attacks=", ".join(attack.name for attack in self.evaluation.attacks),
            flag_cap=self.escalation.score_cap_if_flags_stand,
        )

    def variant_overrides(self, rng: random.Random) -> dict[str, Any]:
        """Other attacked test images (the variant's new seed also retrains the victim)."""
        return {"evaluation": {"subset_seed": rng.randrange(2**31)}}

    def threat_text(self) -> str:
        norm = "L-inf" if self.threat.norm == "inf" else "L2"
        return f"{norm} epsilon {self.threat.epsilon:g}"

    @model_validator(mode="after")
    def _consistent(self):
        if self.evaluation.subset > self.dataset.test_size:
            raise ValueError(
                f"evaluation.subset ({self.evaluation.subset}) must not exceed dataset.test_size "
                f"({self.dataset.test_size})"
            )
        if self.evaluation.curve.epsilons[-1] <= self.threat.epsilon:
            raise ValueError(
                "evaluation.curve.epsilons must reach beyond threat.epsilon "
                f"({self.threat.epsilon:g}) for the 'accuracy must fall' check"
            )
        return self


class EvasionScenario(_EvasionScenario):
    """evasion: the trainee hardens the model itself (e.g. adversarial training)."""

    family: Literal["evasion"]
    budget: Budget

    trainee_call: ClassVar[TraineeCall] = TraineeCall(
        "harden",
        ("x", "y", "tools"),
        "a torch model with the victim's architecture (from tools.build())",
        "  x: float32 (N, C, H, W) in [0, 1], the training set; y: int64 (N,) labels\n"
        "  tools.norm, tools.epsilon: the threat model; tools.budget_s, tools.time_left_s()\n"
        "  tools.pgd(model, x, y, epsilon=..., steps=..., step_size=...) -> adversarial torch batch\n"
        "  tools.robust_accuracy(model, x, y) -> a quick PGD check",
    )


class EvasionPreprocessScenario(_EvasionScenario):
    """evasion-preprocess: the trainee chooses input transforms placed in front of the victim."""

    family: Literal["evasion-preprocess"]
    menu: list[StepName] = Field(default_factory=lambda: list(STEP_NAMES), min_length=1)
    max_steps: int = Field(default=3, ge=1, le=8)

    trainee_call: ClassVar[TraineeCall] = TraineeCall(
        "preprocess",
        ("tools",),
        "a list of steps, applied in order before the fixed victim",
        "  tools.bit_depth(bits) | tools.median(window) | tools.jpeg(quality) | tools.gaussian_noise(sigma)\n"
        "  tools.evaluate(steps) -> quick clean and BPDA-PGD accuracy on validation images\n"
        "  tools.x_val, tools.y_val: validation images\n"
        "  tools.norm, tools.epsilon, tools.menu, tools.max_steps",
    )
