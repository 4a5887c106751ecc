"""The membership-inference attacks and their threshold-free metrics.

Every attack computes the model's outputs itself, from the weights the grader loaded, and
returns one membership score per record: the higher, the more likely a member. Nothing
here thresholds; `roc` turns scores into the curve every metric is read from.

One attack per class, settings in `__init__`, the attack in `scores` (as torchattacks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from secureml import models

if TYPE_CHECKING:
    from secureml.families.membership.config import MembershipAttacks


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted_logits = logits - logits.max(axis=1, keepdims=True)
    return shifted_logits - np.log(np.exp(shifted_logits).sum(axis=1, keepdims=True))


def inverse_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The attacker's own temperature scaling (Guo, Pleiss, Sun and Weinberger, ICML 2017):
    the factor on the logits that minimises the log loss on records it holds.

    Dividing the logits by a constant through the weights changes the order of the
    losses (measured: the victim's logits / 1,000 took the loss attack's advantage from
    0.255 to 0.108 at temperature 1); the calibrated factor grows by the same constant,
    so the attacker reads the same probabilities. The log loss is convex in the factor,
    hence unimodal in its logarithm: a bounded scalar search finds it.
    """
    from scipy.optimize import minimize_scalar

    logits = logits.astype(np.float64)
    spread = float(logits.std())
    if not spread > 0:
        return 1.0
    rows = np.arange(len(y))

    def log_loss(log_factor: float) -> float:
        return float(-log_softmax(np.exp(log_factor) * logits)[rows, y].mean())

    # Factors from 1e-3 to 1e3 logit standard deviations per unit: far past any optimum.
    bounds = (np.log(1e-3 / spread), np.log(1e3 / spread))
    return float(np.exp(minimize_scalar(log_loss, bounds=bounds, method="bounded").x))


def log_probabilities(model, x: np.ndarray, factor: float = 1.0) -> np.ndarray:
    """log softmax of the model's logits times `factor`, in float64."""
    return log_softmax(factor * models.logits(model, x).astype(np.float64))


def probabilities(model, x: np.ndarray, factor: float = 1.0) -> np.ndarray:
    return np.exp(log_probabilities(model, x, factor))


def shifted(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The images moved by (dy, dx) pixels, the uncovered border filled with 0 (background)."""
    height, width = x.shape[-2:]
    out = np.zeros_like(x)
    out[..., max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = x[
        ..., max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return out


@dataclass(frozen=True)
class Shadow:
    """What the attacker holds: its own labelled records, none of them the target's members,
    and a shadow model it trained with the victim's recipe on `x_in`, so it knows the
    shadow's members (`x_in`) and non-members (`x_out`)."""

    model: Any
    x_in: np.ndarray
    y_in: np.ndarray
    x_out: np.ndarray
    y_out: np.ndarray

    def factor(self, model) -> float:
        """The attacker's inverse temperature for a target model, on all its own records."""
        x, y = np.concatenate([self.x_in, self.x_out]), np.concatenate([self.y_in, self.y_out])
        return inverse_temperature(models.logits(model, x), y)


class Attack:
    """One attack of the suite: settings from the scenario and what the attacker holds in
    `__init__`, the attack in `scores` (higher: more likely a member)."""

    name: ClassVar[str]
    title: ClassVar[str]

    def __init__(self, config: MembershipAttacks, shadow: Shadow, seed: int) -> None:
        self.config = config
        self.shadow = shadow
        self.seed = seed

    def scores(self, model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class LossAttack(Attack):
    """Loss threshold (Yeom, Giacomelli, Fredrikson and Jha, CSF 2018): members have a
    lower loss. Score: the log-probability of the true class (minus the cross-entropy), at
    the attacker's own temperature (`inverse_temperature`)."""

    name: ClassVar[str] = "loss"
    title: ClassVar[str] = "loss threshold"

    def scores(self, model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return log_probabilities(model, x, self.shadow.factor(model))[np.arange(len(y)), y]


class AugmentedLossAttack(Attack):
    """Augmentation-aware loss (Choquette-Choo, Tramer, Carlini and Papernot, ICML 2021,
    "Label-only membership inference attacks", their data-augmentation attack): the mean
    log-probability of the true class over every shift of up to `shift_pixels` pixels. A
    model trained on shifted copies of its members fits them at every shift: the plain
    loss misses that (ART-FACTS: shifted training, advantage 0.042 plain, 0.082 here; on
    membership-01, shifts of up to 2 pixels: 0.05-0.06 plain, 0.078-0.098 here)."""

    name: ClassVar[str] = "augmented-loss"
    title: ClassVar[str] = "loss over shifts"

    def scores(self, model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        pixels = self.config.shift_pixels
        rows, reach = np.arange(len(y)), range(-pixels, pixels + 1)
        factor, total = self.shadow.factor(model), np.zeros(len(y))
        for dy in reach:
            for dx in reach:
                total += log_probabilities(model, shifted(x, dy, dx), factor)[rows, y]
        return total / len(reach) ** 2


def _art_classifier(model, x: np.ndarray, num_classes: int):
    from art.estimators.classification import PyTorchClassifier
    from torch import nn

    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
    )


class BlackBoxAttack(Attack):
    """ART's MembershipInferenceBlackBox (Shokri, Stronati, Song and Shmatikov, S&P 2017):
    an attack model on (probabilities, label), fitted on the attacker's shadow model, its
    own members against its own non-members, then asked about the target's outputs.

    ART-FACTS: PyTorchClassifier.predict returns our models' logits; the attack is given
    the softmax explicitly (`pred=`), at fit and at infer, or it scores chance. Both the
    shadow's and the target's are at the attacker's own temperature (`inverse_temperature`,
    the shadow's fitted on its own non-members), so a rescaled output layer looks the same.
    """

    name: ClassVar[str] = "black-box"
    title: ClassVar[str] = "ART black-box (shadow model)"

    def __init__(self, config: MembershipAttacks, shadow: Shadow, seed: int) -> None:
        super().__init__(config, shadow, seed)
        self._fitted: Any = None

    def _attack(self, num_classes: int):
        if self._fitted is None:
            from art.attacks.inference.membership_inference import MembershipInferenceBlackBox

            from secureml.randomness import numpy_global_seed

            shadow = self.shadow
            factor = inverse_temperature(models.logits(shadow.model, shadow.x_out), shadow.y_out)
            attack = MembershipInferenceBlackBox(
                _art_classifier(shadow.model, shadow.x_in, num_classes), attack_model_type=self.config.attack_model
            )
            # The random forest draws from numpy's global state (random_state=None); the
            # nn attack model from torch's, which `numpy_global_seed` leaves alone: seed both.
            import torch

            with numpy_global_seed(self.seed), torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                attack.fit(
                    y=_one_hot(shadow.y_in, num_classes),
                    test_y=_one_hot(shadow.y_out, num_classes),
                    pred=probabilities(shadow.model, shadow.x_in, factor),
                    test_pred=probabilities(shadow.model, shadow.x_out, factor),
                )
            self._fitted = attack
        return self._fitted

    def scores(self, model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        num_classes = int(models.logits(model, x[:1]).shape[1])
        inferred = self._attack(num_classes).infer(
            None, _one_hot(y, num_classes), pred=probabilities(model, x, self.shadow.factor(model)), probabilities=True
        )
        return np.asarray(inferred, dtype=np.float64).reshape(-1)


class LabelOnlyAttack(Attack):
    """ART's LabelOnlyGapAttack (Yeom et al. 2018's gap attack; Choquette-Choo et al. 2021's
    baseline): a record is a member when the model classifies it correctly. It sees only
    labels, so no rescaling or rounding of the outputs hides the train-test gap from it."""

    name: ClassVar[str] = "label-only"
    title: ClassVar[str] = "ART label-only gap"

    def scores(self, model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        from art.attacks.inference.membership_inference import LabelOnlyGapAttack

        num_classes = int(models.logits(model, x[:1]).shape[1])
        attack = LabelOnlyGapAttack(_art_classifier(model, x, num_classes))
        return np.asarray(attack.infer(x, _one_hot(y, num_classes)), dtype=np.float64).reshape(-1)


ATTACKS: dict[str, type[Attack]] = {
    attack.name: attack for attack in (LossAttack, AugmentedLossAttack, BlackBoxAttack, LabelOnlyAttack)
}


def build_suite(config: MembershipAttacks, shadow: Shadow, seed: int) -> dict[str, Attack]:
    """The scenario's attacks, by name, ready to score any model."""
    return {name: ATTACKS[name](config, shadow, seed) for name in config.suite}


def _one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[labels]


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Roc:
    """The ROC curve of one attack: members are the positives."""

    fpr: np.ndarray
    tpr: np.ndarray
    auc: float

    @property
    def advantage(self) -> float:
        """max over thresholds of |TPR - FPR| (Yeom et al. 2018's membership advantage, in
        either direction: a model whose members score *lower* than strangers, say one made
        unsure of its exact training images, gives them away just as well; reading the
        scores the other way round turns FPR - TPR into TPR - FPR)."""
        return float(np.max(np.abs(self.tpr - self.fpr)))

    def tpr_at(self, fpr: float) -> float:
        """The highest TPR at an FPR of at most `fpr` (Carlini et al., S&P 2022)."""
        return float(self.tpr[self.fpr <= fpr + 1e-12].max())


def roc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> Roc:
    """Every threshold between distinct scores; ties move both rates at once."""
    scores = np.concatenate([member_scores, nonmember_scores])
    is_member = np.concatenate([np.ones(len(member_scores)), np.zeros(len(nonmember_scores))])
    order = np.argsort(-scores, kind="stable")
    scores, is_member = scores[order], is_member[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tpr = np.r_[0.0, np.cumsum(is_member)[last_of_tie] / len(member_scores)]
    fpr = np.r_[0.0, np.cumsum(1 - is_member)[last_of_tie] / len(nonmember_scores)]
    return Roc(fpr=fpr, tpr=tpr, auc=float(np.trapezoid(tpr, fpr)))


def null_advantages(
    scores: dict[str, np.ndarray], members: int, rng: np.random.Generator, draws: int
) -> np.ndarray:
    """The worst case over attacks of the membership advantage when no record is a member,
    once per random partition of the records into groups of `members` and the rest (`draws`
    of them). `scores` come from a model that saw none of the records (the floor model), so
    every partition is as good as the real one: their mean is the noise level a model that
    leaks nothing reaches in expectation, where one partition is a draw of it, and their
    spread is that draw's."""
    advantages = np.empty(draws)
    for draw in range(draws):
        order = rng.permutation(len(next(iter(scores.values()))))
        first, rest = order[:members], order[members:]
        advantages[draw] = max(roc(values[first], values[rest]).advantage for values in scores.values())
    return advantages
