"""Escalation: what the grader adds on its own when a gradient-masking check fires.

A model whose gradients are flat, huge or misleading blinds every gradient attack of the
suite, and the worst case then rests on one small gradient-free attack, which
overestimates robustness. Measured: CNNs made piecewise-constant purely through their
weights scored 52-61 on evasion-03 and 19 on evasion-01 with robust accuracy at the
victim's level. So on a flagged run (and only then, it costs time) the grader adds:

- transfer from the undefended victim: every adversarial image the suite made against it;
- BPDA through a smoothed surrogate of the submitted model (Athalye, Carlini and Wagner,
  "Obfuscated Gradients Give a False Sense of Security", ICML 2018): the forward pass is
  the submitted model's own, but each ReLU's backward pass is replaced by a smooth
  approximation, sigmoid(z / (T * spread of z)), and the logits are divided by their
  spread, so a steep step (a staircase built from ReLUs with huge weights) and saturated
  logits both pass a useful gradient. PGD with restarts follows it, and so does
  AutoAttack's APGD with the difference-of-logits-ratio loss (Croce and Hein, ICML 2020),
  which only compares logits and so does not saturate where cross-entropy does. The
  deployed model judges every image. Measured on evasion-01's staircase gaming submission
  (tests/gaming/evasion_staircase.py): robust accuracy 0.48 by PGD through the surrogate,
  0.29 by APGD-DLR through it, 0.18 in the worst case over everything (0.21 before
  APGD-DLR); an attack written for that construction (it attacks the pooled step levels
  directly) left 0.19 of the same images robust, so the staircase (eight grey levels) is
  about that robust;
- the suite's gradient-free attack with a much larger budget (Square with >= 5,000
  queries, HopSkipJump with >= 50 iterations), on the images all of the above left robust.

Everything is judged like the suite: inside the ball, on the deployed model, worst case
per image. The masking checks then run again on the escalated evidence; a check that
no longer fires was refuted, and its flag is cleared. After escalation, "the gradient-free
attack beats the white-box ones" means it fools images that every white-box attack,
transfer and surrogate included, left robust; so the escalated gradient-free outcome only
ever counts such images, and its own robust accuracy is not comparable to the suite's.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from secureml.families.evasion import attacks
from secureml.families.evasion.attacks import worst_case
from secureml.randomness import derive_seed

if TYPE_CHECKING:
    import numpy as np

    from secureml.families.evasion.attacks import AttackOutcome, SuiteResult

# Outcome names of the escalated attacks: gradient-free ones carry the suite member's name.
ESCALATED_PREFIX = "escalated-"
SURROGATE_PGD = "surrogate-pgd"
SURROGATE_APGD = "surrogate-apgd"
TRANSFER_FROM_VICTIM = "transfer-victim"


@dataclass(frozen=True)
class EscalationResult:
    """The escalated attacks' outcomes on one model, and what the checks see through the surrogate."""

    outcomes: dict[str, AttackOutcome]
    surrogate_curve: list[float]  # PGD robust accuracy at each curve epsilon, through the surrogate
    surrogate_zero_gradient_share: float
    seconds: float

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {key: array for outcome in self.outcomes.values() for key, array in outcome.to_arrays().items()}

    def summary(self) -> dict[str, Any]:
        return {
            "names": list(self.outcomes),
            "surrogate_curve": self.surrogate_curve,
            "surrogate_zero_gradient_share": self.surrogate_zero_gradient_share,
            "seconds": self.seconds,
        }

    @classmethod
    def load(cls, arrays: Mapping[str, np.ndarray], summary: dict[str, Any]) -> EscalationResult:
        outcomes = {name: attacks.AttackOutcome.from_arrays(name, arrays) for name in summary["names"]}
        return cls(
            outcomes, summary["surrogate_curve"], summary["surrogate_zero_gradient_share"], summary["seconds"]
        )


def is_gradient_free(name: str) -> bool:
    from secureml.families.evasion.config import GRADIENT_FREE

    return name.removeprefix(ESCALATED_PREFIX) in GRADIENT_FREE


@functools.cache
def _smooth_relu_function():
    import torch

    class SmoothReluGradient(torch.autograd.Function):
        """Forward: ReLU, exactly. Backward: the derivative of a softplus as wide as the
        spread of the inputs, sigmoid(z / scale), so units that are off (or steps that are
        steep) still say which way the output would move."""

        @staticmethod
        def forward(ctx, z, scale):
            ctx.save_for_backward(z, scale)
            return z.clamp_min(0.0)

        @staticmethod
        def backward(ctx, grad):
            import torch

            z, scale = ctx.saved_tensors
            return grad * torch.sigmoid(z / scale), None

    return SmoothReluGradient


def smoothed_surrogate(model, temperature: float):
    """A copy of `model` whose forward pass is unchanged, with BPDA-smoothed ReLUs and logits
    divided by their spread (argmax, hence every prediction, is unchanged)."""
    import copy

    import torch
    from torch import nn

    smooth = _smooth_relu_function()

    def spread(z):
        # Per image, so one image's gradient never depends on the others in its batch.
        return z.detach().flatten(1).std(dim=1).clamp_min(1e-12).view(-1, *([1] * (z.dim() - 1)))

    class SmoothRelu(nn.Module):
        def forward(self, z):
            return smooth.apply(z, temperature * spread(z))

    class Surrogate(nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            logits = self.inner(x)
            return logits / spread(logits)

    surrogate = copy.deepcopy(model)
    for module in list(surrogate.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU):
                setattr(module, name, SmoothRelu())
    with torch.no_grad():
        return Surrogate(surrogate).eval()


def escalate(
    *,
    model,
    victim_suite: SuiteResult,
    suite: SuiteResult,
    judges,
    scenario,
    input_shape,
    num_classes: int,
    seed: int,
    device: str = "cpu",
    progress,
) -> EscalationResult:
    """Run the escalated attacks on `model` (the torch model the suite attacked) and judge
    them with `judges` (the deployed model). `suite` is this model's own suite result."""
    import numpy as np

    from secureml.families.evasion.config import AutoAttackSuite, PgdAttack

    started = time.perf_counter()
    threat, evaluation, config = scenario.threat, scenario.evaluation, scenario.escalation
    x, y, clean_correct = suite.x, suite.y, suite.clean_correct
    common = dict(
        clean_correct=clean_correct, threat=threat, batch_size=evaluation.batch_size, judges=judges, progress=progress
    )
    outcomes: dict[str, AttackOutcome] = {}

    # 1. Transfer: the victim's adversarial images, judged on this model.
    with progress.task("escalating: transfer from the undefended victim"):
        outcomes[TRANSFER_FROM_VICTIM] = _transfer(victim_suite, clean_correct, judges, threat)

    # 2. BPDA-PGD through the smoothed surrogate, judged on this model.
    surrogate = attacks.classifier(
        smoothed_surrogate(model, config.surrogate_temperature),
        input_shape=input_shape,
        num_classes=num_classes,
        device=device,
    )
    steps = config.surrogate_steps
    pgd = PgdAttack(name="pgd", steps=steps, step_size=2.5 * threat.epsilon / steps, restarts=config.surrogate_restarts)
    outcomes[SURROGATE_PGD], _ = attacks.attack_and_judge(
        SURROGATE_PGD, surrogate, pgd, x, y, seed=derive_seed(seed, "surrogate"), label="escalating", **common
    )
    apgd = AutoAttackSuite(
        name="autoattack", steps=steps, restarts=config.surrogate_restarts, losses=config.surrogate_losses
    )
    outcomes[SURROGATE_APGD], _ = attacks.attack_and_judge(
        SURROGATE_APGD, surrogate, apgd, x, y, seed=derive_seed(seed, "surrogate-apgd"), label="escalating", **common
    )
    with progress.task("escalating: robust accuracy vs epsilon through the surrogate"):
        curve = attacks.robust_accuracy_curve(
            surrogate,
            x,
            y,
            norm=threat.norm,
            curve=evaluation.curve,
            batch_size=evaluation.batch_size,
            seed=derive_seed(seed, "surrogate-curve"),
            judge=judges[0],
        )

    # 3. The gradient-free attack with a much larger budget, on the images everything else
    # left robust: an image already fooled cannot become less robust, and on a masked model
    # this is most of them (the slow part of escalation, HopSkipJump above all, shrinks).
    survivors = worst_case(clean_correct, {name: o.fooled for name, o in {**suite.outcomes, **outcomes}.items()})
    estimator = attacks.classifier(model, input_shape=input_shape, num_classes=num_classes, device=device)
    for attack in evaluation.attacks:
        if is_gradient_free(attack.name):
            name = ESCALATED_PREFIX + attack.name
            outcomes[name], _ = attacks.attack_and_judge(
                name, estimator, _stronger(attack, config), x, y,
                seed=derive_seed(seed, "escalation"), label="escalating", **{**common, "clean_correct": survivors},
            )
    checked = np.flatnonzero(clean_correct)[: scenario.masking.gradient_check_samples]
    zero_share = attacks.zero_gradient_share(surrogate, x[checked], y[checked])
    return EscalationResult(outcomes, curve, zero_share, time.perf_counter() - started)


def _stronger(attack, config):
    """The suite's gradient-free attack with the escalation's budget, never a smaller one."""
    if attack.name == "square":
        return attack.model_copy(update={"queries": max(attack.queries, config.square_queries)})
    return attack.model_copy(update={"steps": max(attack.steps, config.hop_skip_jump_steps)})


def _transfer(victim_suite: SuiteResult, clean_correct, judges, threat) -> AttackOutcome:
    """Each image falls if any of the victim's adversarial versions of it fools this model;
    the smallest such perturbation is kept."""
    import numpy as np

    started = time.perf_counter()
    x, y = victim_suite.x, victim_suite.y
    best = x.copy()
    fooled = np.zeros(len(y), dtype=bool)
    norms = np.zeros(len(y), dtype=np.float32)
    for name, outcome in victim_suite.outcomes.items():
        judged, _ = attacks.judge_outcome(
            name, x, y, outcome.x_adv, clean_correct=clean_correct, judges=judges, threat=threat, started=started
        )
        better = judged.fooled & (~fooled | (judged.norms < norms))
        best[better] = outcome.x_adv[better]
        norms[better] = judged.norms[better]
        fooled |= judged.fooled
    return attacks.AttackOutcome(TRANSFER_FROM_VICTIM, best, fooled, norms, time.perf_counter() - started)
