"""The attack suite, from ART: FGSM, PGD with restarts, Carlini-Wagner L2, AutoAttack, Square.

Every attack is ART's; this module only configures it explicitly (ART's defaults are for
notebooks: ART-FACTS pitfall 5), runs it on the images the model classifies correctly,
and judges each adversarial image itself: inside the threat ball, and misclassified by
the deployed model. An image is robust only if no attack of the suite fools it.

Two measured overheads of ART are removed here without changing any attack's maths:
- PGD runs ART's own per-batch routine, so ART's `compute_success` log line (two extra
  forward passes over the whole set) is skipped; restarts are judged on the torch side.
- Carlini-Wagner asks for per-sample class gradients; ART computes one backward pass per
  distinct label, we compute the same numbers in one (images do not interact in eval mode).
"""

from __future__ import annotations

import functools
import sys
import time
import types
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from secureml.art_bridge import one_hot
from secureml.randomness import derive_seed, numpy_global_seed

if TYPE_CHECKING:
    import numpy as np

    from secureml.families.evasion.config import AttackSuite, Curve, ThreatModel

Predict = Callable[["np.ndarray"], "np.ndarray"]

# Tolerance when checking that an adversarial image lies in the ball (float32 round-off).
BALL_SLACK = 1e-5


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class AttackOutcome:
    """One attack's result on the attacked images."""

    name: str
    x_adv: np.ndarray  # adversarial images; the clean image where the attack did not run
    fooled: np.ndarray  # bool: correctly classified before, misclassified after, inside the ball
    norms: np.ndarray  # perturbation size in the threat norm
    seconds: float

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat arrays for the cache (safetensors), under the attack's name."""
        import numpy as np

        return {
            f"{self.name}/x_adv": self.x_adv,
            f"{self.name}/fooled": self.fooled.astype(np.uint8),
            f"{self.name}/norms": self.norms,
            f"{self.name}/seconds": np.array([self.seconds]),
        }

    @classmethod
    def from_arrays(cls, name: str, arrays: Mapping[str, np.ndarray]) -> AttackOutcome:
        return cls(
            name,
            arrays[f"{name}/x_adv"],
            arrays[f"{name}/fooled"].astype(bool),
            arrays[f"{name}/norms"],
            float(arrays[f"{name}/seconds"][0]),
        )


@dataclass(frozen=True)
class SuiteResult:
    """The suite's verdict on one model, image by image."""

    x: np.ndarray
    y: np.ndarray
    clean_correct: np.ndarray
    outcomes: dict[str, AttackOutcome]
    # Share of images whose verdict changed between two evaluations (randomised models).
    disagreement: float = 0.0

    @property
    def robust(self) -> np.ndarray:
        return worst_case(self.clean_correct, {name: o.fooled for name, o in self.outcomes.items()})

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.mean())

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.mean())

    def attack_robust_accuracy(self, name: str) -> float:
        return float((self.clean_correct & ~self.outcomes[name].fooled).mean())

    def robust_of(self, names) -> np.ndarray:
        """Per image: robust to a part of the suite (e.g. the white-box attacks only)."""
        fooled_by = {name: self.outcomes[name].fooled for name in names if name in self.outcomes}
        return worst_case(self.clean_correct, fooled_by)

    def robust_accuracy_of(self, names) -> float:
        """Worst case over a part of the suite (e.g. the white-box attacks only)."""
        return float(self.robust_of(names).mean())

    def successful_norms(self, name: str | None = None) -> np.ndarray:
        """The sizes of the successful perturbations: of one attack, or the smallest per image."""
        import numpy as np

        if name is not None:
            outcome = self.outcomes[name]
            return outcome.norms[outcome.fooled]
        smallest = self.smallest_successful_norms()
        return smallest[np.isfinite(smallest)]

    def mean_perturbation(self, name: str | None = None) -> float:
        """Mean size of the successful perturbations: of one attack, or the smallest per image."""
        norms = self.successful_norms(name)
        return float(norms.mean()) if len(norms) else 0.0

    def smallest_successful_norms(self) -> np.ndarray:
        import numpy as np

        norms = np.full(len(self.y), np.inf, dtype=np.float64)
        for outcome in self.outcomes.values():
            norms = np.where(outcome.fooled, np.minimum(norms, outcome.norms), norms)
        return norms

    def worst_adversarial(self) -> np.ndarray:
        """Per image, the smallest successful adversarial image of the suite (the clean one if none)."""
        import numpy as np

        best = self.x.copy()
        norms = np.full(len(self.y), np.inf)
        for outcome in self.outcomes.values():
            better = outcome.fooled & (outcome.norms < norms)
            best[better] = outcome.x_adv[better]
            norms[better] = outcome.norms[better]
        return best

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat arrays for the cache (safetensors)."""
        import numpy as np

        arrays = {"clean_correct": self.clean_correct.astype(np.uint8), "disagreement": np.array([self.disagreement])}
        for outcome in self.outcomes.values():
            arrays.update(outcome.to_arrays())
        return arrays

    @classmethod
    def from_arrays(cls, x, y, arrays: Mapping[str, np.ndarray], names) -> SuiteResult:
        outcomes = {name: AttackOutcome.from_arrays(name, arrays) for name in names}
        return cls(x, y, arrays["clean_correct"].astype(bool), outcomes, float(arrays["disagreement"][0]))


def worst_case(clean_correct: np.ndarray, fooled_by: dict[str, np.ndarray]) -> np.ndarray:
    """Robust images: classified correctly, and fooled by no attack of the suite."""
    robust = clean_correct.astype(bool).copy()
    for fooled in fooled_by.values():
        robust &= ~fooled.astype(bool)
    return robust


def perturbation_norms(x: np.ndarray, x_adv: np.ndarray, norm: str) -> np.ndarray:
    import numpy as np

    delta = (x_adv.astype(np.float64) - x.astype(np.float64)).reshape(len(x), -1)
    if norm == "inf":
        return np.abs(delta).max(axis=1) if delta.size else np.zeros(len(x))
    return np.linalg.norm(delta, axis=1)


def project(x: np.ndarray, x_adv: np.ndarray, threat: ThreatModel) -> np.ndarray:
    """Move adversarial images back into the threat ball and the [0, 1] box."""
    import numpy as np

    delta = x_adv.astype(np.float32) - x
    # An attack that produced NaN or inf for an image (ART's L2 Square on tiny images) failed on it.
    delta[~np.isfinite(delta).reshape(len(x), -1).all(axis=1)] = 0.0
    if threat.norm == "inf":
        delta = np.clip(delta, -threat.epsilon, threat.epsilon)
    else:
        norms = np.linalg.norm(delta.reshape(len(x), -1), axis=1)
        scale = np.minimum(1.0, threat.epsilon / np.maximum(norms, 1e-12)).astype(np.float32)
        delta = delta * scale.reshape((-1,) + (1,) * (x.ndim - 1))
    return np.clip(x + delta, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- ART estimator


@functools.cache
def _classifier_class():
    import numpy as np
    from art.estimators.classification import PyTorchClassifier

    class SuiteClassifier(PyTorchClassifier):
        """ART's PyTorchClassifier, leaner where the suite calls it in a loop: per-sample class
        gradients in one backward pass, the loss gradient of a torch batch without format
        conversions, and float32 queries whatever the attack computes in."""

        def loss_gradient(self, x, y, training_mode=False, **kwargs):
            """The cross-entropy gradient on a torch batch, as ART's PyTorch PGD asks for it
            at every step, without ART's per-call label checks and format conversions.

            Measured with bench/bench_evasion_pgd.py: PGD-10 through ART's own loss_gradient
            ran at 1.18x the time of a plain torch loop. Anything else (numpy input,
            preprocessing, gradients at a layer) goes through ART unchanged.
            """
            import torch

            plain = (
                isinstance(x, torch.Tensor)
                and isinstance(y, torch.Tensor)
                and not self.preprocessing_operations
                and self._layer_idx_gradients < 0
            )
            if not plain:
                return super().loss_gradient(x, y, training_mode=training_mode, **kwargs)
            self._model.train(mode=training_mode)
            inputs = x.detach().to(self._device).requires_grad_(True)
            labels = y.to(self._device)
            if labels.ndim == 2:
                labels = labels.argmax(dim=1)
            loss = self._loss(self._model(inputs)[-1], labels)
            (gradient,) = torch.autograd.grad(loss, inputs)
            return gradient

        def predict(self, x, batch_size=128, training_mode=False, **kwargs):
            # HopSkipJump does its arithmetic in float64 and queries with it; the model is
            # float32 and torch refuses to mix the two.
            x = np.asarray(x, dtype=np.float32)
            return super().predict(x, batch_size=batch_size, training_mode=training_mode, **kwargs)

        def class_gradient(self, x, label=None, training_mode=False, **kwargs):
            import torch

            per_sample = isinstance(label, (list, np.ndarray)) and np.asarray(label).ndim == 1
            if not per_sample or not self.all_framework_preprocessing or self._layer_idx_gradients >= 0:
                return super().class_gradient(x, label=label, training_mode=training_mode, **kwargs)
            label = np.asarray(label)
            if len(label) != len(x) or (label >= self.nb_classes).any() or (label < 0).any():
                raise ValueError(f"Label {label} is out of range.")
            self._model.train(mode=training_mode)
            inputs = torch.from_numpy(np.ascontiguousarray(x)).to(self._device).requires_grad_(True)
            preprocessed, _ = self._apply_preprocessing(inputs, y=None, fit=False, no_grad=False)
            logits = self._model(preprocessed)[-1]
            chosen = torch.from_numpy(label.astype(np.int64)).to(self._device).view(-1, 1)
            # Each image's logit depends on that image only, so the gradient of the sum is
            # every image's own gradient: ART's loop over distinct labels, in one pass.
            (grads,) = torch.autograd.grad(logits.gather(1, chosen).sum(), inputs)
            return grads.detach().cpu().numpy()[:, None, ...]

    return SuiteClassifier


def classifier(model, *, input_shape, num_classes: int, device: str = "cpu"):
    """A frozen ART classifier over `model` (inputs in [0, 1], no extra standardisation).

    Freezing the weights stops every `loss_gradient` from also computing weight gradients
    (ART-FACTS: about half of ART's overhead over plain torch PGD).
    """
    import torch

    from secureml.art_bridge import art_device_type

    model.eval()
    model.requires_grad_(False)
    return _classifier_class()(
        model=model,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=tuple(input_shape),
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
        preprocessing=None,
        device_type=art_device_type(device),
    )


def _art_norm(threat: ThreatModel):
    import numpy as np

    return np.inf if threat.norm == "inf" else 2


# --------------------------------------------------------------------------- the attacks


def run_fgsm(estimator, x, y, *, threat, config, batch_size, seed, judge) -> np.ndarray:
    from art.attacks.evasion import FastGradientMethod

    attack = FastGradientMethod(
        estimator,
        norm=_art_norm(threat),
        eps=threat.epsilon,
        eps_step=threat.epsilon,
        targeted=False,
        num_random_init=0,
        batch_size=batch_size,
        minimal=False,
        summary_writer=False,
    )
    return attack.generate(x, y=one_hot(y, estimator.nb_classes))


def pgd(
    estimator,
    x: np.ndarray,
    y: np.ndarray,
    *,
    norm: str,
    epsilon: float,
    step_size: float,
    steps: int,
    restarts: int,
    batch_size: int,
    seed: int,
    judge: Predict,
    random_start: bool = True,
) -> np.ndarray:
    """ART's PyTorch PGD, batch by batch, keeping the first restart that fools `judge`.

    random_start=False starts once from the clean image, as a naive first test would.

    ART's own `generate` does the same but always adds `compute_success` for a log line
    (two forward passes over all images, ~10% of PGD-10; ART-FACTS), and judges restarts
    with two more predictions each. Restarts stop once every image of a batch has fallen.
    """
    import numpy as np
    import torch
    from art.attacks.evasion.projected_gradient_descent.projected_gradient_descent_pytorch import (
        ProjectedGradientDescentPyTorch,
    )

    attack = ProjectedGradientDescentPyTorch(
        estimator,
        norm=np.inf if norm == "inf" else 2,
        eps=epsilon,
        eps_step=step_size,
        decay=None,
        max_iter=steps,
        targeted=False,
        num_random_init=restarts if random_start else 0,
        batch_size=batch_size,
        random_eps=False,
        summary_writer=False,
        verbose=False,
    )
    x = np.ascontiguousarray(x, dtype=np.float32)
    targets = one_hot(y, estimator.nb_classes)
    adversarial = x.copy()
    for start in range(0, len(x), batch_size):
        rows = slice(start, start + batch_size)
        batch = torch.from_numpy(x[rows])
        batch_targets = torch.from_numpy(targets[rows])
        fallen = np.zeros(len(batch), dtype=bool)
        tries = restarts if random_start else 1
        for restart in range(tries):
            # ART draws the random start from numpy's global generator.
            with numpy_global_seed(derive_seed(seed, "pgd", start, restart)):
                candidate = attack._generate_batch(batch, batch_targets, None, epsilon, step_size)
            if tries == 1:
                adversarial[rows] = candidate
                break  # nothing to choose between: the suite judges the images itself
            fooled = judge(candidate) != y[rows]
            new = fooled & ~fallen
            if restart == 0:
                adversarial[rows] = candidate
            else:
                adversarial[rows][new] = candidate[new]
            fallen |= fooled
            if fallen.all():
                break
    return adversarial


def run_pgd(estimator, x, y, *, threat, config, batch_size, seed, judge) -> np.ndarray:
    return pgd(
        estimator,
        x,
        y,
        norm=threat.norm,
        epsilon=threat.epsilon,
        step_size=config.step_size,
        steps=config.steps,
        restarts=config.restarts,
        batch_size=batch_size,
        seed=seed,
        judge=judge,
    )


def run_cw_l2(estimator, x, y, *, threat, config, batch_size, seed, judge) -> np.ndarray:
    from art.attacks.evasion import CarliniL2Method

    attack = CarliniL2Method(
        estimator,
        confidence=config.confidence,
        targeted=False,
        learning_rate=config.learning_rate,
        binary_search_steps=config.binary_search_steps,
        max_iter=config.steps,
        initial_const=config.initial_const,
        max_halving=5,
        max_doubling=5,
        batch_size=batch_size,
        verbose=False,
    )
    return attack.generate(x, y=one_hot(y, estimator.nb_classes))


def _allow_autoattack_without_multiprocess() -> None:
    """ART 1.20's AutoAttack.generate imports `multiprocess` even when it runs serially
    (parallel_pool_size=0), and ART does not depend on it. We always run serially, so an
    empty placeholder module is enough when the package is not installed."""
    try:
        import multiprocess  # noqa: F401
    except ImportError:
        sys.modules.setdefault("multiprocess", types.ModuleType("multiprocess"))


def run_autoattack(estimator, x, y, *, threat, config, batch_size, seed, judge) -> np.ndarray:
    from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent

    _allow_autoattack_without_multiprocess()
    losses = {"ce": "cross_entropy", "dlr": "difference_logits_ratio"}
    # The initial APGD step is 2 * epsilon (Croce & Hein, 2020, section 3.2).
    step = 2 * threat.epsilon
    members = [
        AutoProjectedGradientDescent(
            estimator,
            norm=_art_norm(threat),
            eps=threat.epsilon,
            eps_step=step,
            max_iter=config.steps,
            targeted=False,
            nb_random_init=config.restarts,
            batch_size=batch_size,
            loss_type=losses[loss],
            verbose=False,
        )
        for loss in config.losses
    ]
    attack = AutoAttack(
        estimator,
        norm=_art_norm(threat),
        eps=threat.epsilon,
        eps_step=step,
        attacks=members,
        batch_size=batch_size,
        targeted=False,
        parallel_pool_size=0,
    )
    return attack.generate(x, y=one_hot(y, estimator.nb_classes))


def run_square(estimator, x, y, *, threat, config, batch_size, seed, judge) -> np.ndarray:
    from art.attacks.evasion import SquareAttack

    attack = SquareAttack(
        estimator,
        norm=_art_norm(threat),
        adv_criterion=None,
        loss=None,
        max_iter=config.queries,
        eps=threat.epsilon,
        p_init=config.p_init,
        nb_restarts=config.restarts,
        batch_size=batch_size,
        verbose=False,
    )
    return attack.generate(x, y=one_hot(y, estimator.nb_classes))


def decision_starts(estimator, x: np.ndarray, *, tries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A first misclassified image for each of `x`, drawn from our own seeded generator, then
    moved towards the original by bisection until it sits on the decision boundary.

    This is what HopSkipJump does itself when it is given no start, except that ART draws
    from a fresh, unseeded `np.random.RandomState()` (ART 1.20.1, hop_skip_jump.py), so its
    results changed from run to run. Returns the starts and which images have one.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    clean = estimator.predict(x).argmax(axis=1)
    starts = x.copy()
    found = np.zeros(len(x), dtype=bool)
    for _ in range(tries):
        missing = np.flatnonzero(~found)
        if not len(missing):
            break
        noise = rng.uniform(0.0, 1.0, size=(len(missing), *x.shape[1:])).astype(np.float32)
        fooled = estimator.predict(noise).argmax(axis=1) != clean[missing]
        starts[missing[fooled]] = noise[fooled]
        found[missing[fooled]] = True
    # Bisection on the blend (1 - t) * start + t * x: t = 0 is misclassified, t = 1 is not.
    low, high = np.zeros(len(x), dtype=np.float32), np.ones(len(x), dtype=np.float32)
    shape = (-1,) + (1,) * (x.ndim - 1)
    for _ in range(BOUNDARY_BISECTIONS):
        middle = (low + high) / 2
        blend = (1 - middle.reshape(shape)) * starts + middle.reshape(shape) * x
        fooled = estimator.predict(blend).argmax(axis=1) != clean
        low = np.where(fooled, middle, low)
        high = np.where(fooled, high, middle)
    starts = (1 - low.reshape(shape)) * starts + low.reshape(shape) * x
    return np.ascontiguousarray(starts, dtype=np.float32), found


# Halving the distance 12 times puts the start within 1/4096 of the boundary's blend weight.
BOUNDARY_BISECTIONS = 12


def run_hop_skip_jump(estimator, x, y, *, threat, config, batch_size, seed, judge) -> np.ndarray:
    """HopSkipJump (Chen et al., 2020): decision-based, it only reads predicted labels.

    It starts from our seeded `decision_starts`; an image with no misclassified start in
    `init_size` tries is left as it is (the attack failed on it), rather than handed to
    ART's unseeded search.
    """
    from art.attacks.evasion import HopSkipJump

    starts, found = decision_starts(estimator, x, tries=config.init_size, seed=seed)
    attack = HopSkipJump(
        estimator,
        batch_size=batch_size,
        targeted=False,
        norm=_art_norm(threat),
        max_iter=config.steps,
        max_eval=config.max_eval,
        init_eval=config.init_eval,
        init_size=config.init_size,
        verbose=False,
    )
    adversarial = x.copy()
    if found.any():
        adversarial[found] = attack.generate(
            x[found], y=one_hot(y[found], estimator.nb_classes), x_adv_init=starts[found]
        )
    return adversarial


ATTACKS: dict[str, Callable[..., Any]] = {
    "fgsm": run_fgsm,
    "pgd": run_pgd,
    "cw-l2": run_cw_l2,
    "autoattack": run_autoattack,
    "square": run_square,
    "hop-skip-jump": run_hop_skip_jump,
}


# --------------------------------------------------------------------------- running the suite


@contextmanager
def _python_random_seed(seed: int) -> Iterator[None]:
    """ART's L2 Square attack also draws from Python's `random`; seed it, then restore it."""
    import random

    saved = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(saved)


def run_suite(
    estimator,
    x: np.ndarray,
    y: np.ndarray,
    *,
    threat: ThreatModel,
    suite: AttackSuite,
    seed: int,
    judges: list[Predict],
    progress,
    label: str,
) -> SuiteResult:
    """Every attack of the suite on the images that `judges` all classify correctly.

    judges: the deployed model's predict function(s). A randomised model gets two, with
    different draws: an image is correct, or robust, only if it is so in both.
    """
    import numpy as np

    x = np.ascontiguousarray(x, dtype=np.float32)
    clean_correct = np.ones(len(y), dtype=bool)
    for judge in judges:
        clean_correct &= judge(x) == y
    outcomes: dict[str, AttackOutcome] = {}
    disagreement = 0.0
    for config in suite.attacks:
        outcome, changed = attack_and_judge(
            config.name,
            estimator,
            config,
            x,
            y,
            clean_correct=clean_correct,
            threat=threat,
            batch_size=suite.batch_size,
            seed=seed,
            judges=judges,
            progress=progress,
            label=label,
        )
        disagreement = max(disagreement, changed)
        outcomes[config.name] = outcome
    return SuiteResult(x, y, clean_correct, outcomes, disagreement)


def attack_and_judge(
    name: str,
    estimator,
    config,
    x: np.ndarray,
    y: np.ndarray,
    *,
    clean_correct: np.ndarray,
    threat: ThreatModel,
    batch_size: int,
    seed: int,
    judges: list[Predict],
    progress,
    label: str,
) -> tuple[AttackOutcome, float]:
    """One attack (`config`, seeded from `seed` and its name) on the correctly classified
    images, projected into the ball, judged on the deployed model (see `judge_outcome`)."""
    import numpy as np

    started = time.perf_counter()
    attacked = np.flatnonzero(clean_correct)
    x_adv = x.copy()
    with progress.task(f"{label}: {name} on {len(attacked)} images"):
        if len(attacked):
            with numpy_global_seed(derive_seed(seed, "attack", config.name)), _python_random_seed(
                derive_seed(seed, "attack-python", config.name)
            ):
                generated = ATTACKS[config.name](
                    estimator,
                    x[attacked],
                    y[attacked],
                    threat=threat,
                    config=config,
                    batch_size=batch_size,
                    seed=derive_seed(seed, config.name),
                    judge=judges[0],
                )
            x_adv[attacked] = project(x[attacked], np.asarray(generated, dtype=np.float32), threat)
    return judge_outcome(name, x, y, x_adv, clean_correct=clean_correct, judges=judges, threat=threat, started=started)


def judge_outcome(
    name: str, x, y, x_adv, *, clean_correct, judges: list[Predict], threat: ThreatModel, started: float
) -> tuple[AttackOutcome, float]:
    """Judge adversarial images on the deployed model: an image is fooled if it was classified
    correctly, lies inside the ball, and some judge misclassifies it. Also returns the share of
    attacked images on which two judges (a randomised model's draws) disagree."""
    import numpy as np

    verdicts = [judge(x_adv) != y for judge in judges]
    disagreement = 0.0
    if len(verdicts) > 1 and clean_correct.any():
        disagreement = float((verdicts[0] != verdicts[1])[clean_correct].mean())
    norms = perturbation_norms(x, x_adv, threat.norm)
    fooled = clean_correct & np.logical_or.reduce(verdicts)
    fooled &= norms <= threat.epsilon * (1 + BALL_SLACK) + BALL_SLACK
    outcome = AttackOutcome(name, x_adv, fooled, norms.astype(np.float32), time.perf_counter() - started)
    return outcome, disagreement


def robust_accuracy_curve(
    estimator,
    x: np.ndarray,
    y: np.ndarray,
    *,
    norm: str,
    curve: Curve,
    batch_size: int,
    seed: int,
    judge: Predict,
) -> list[float]:
    """PGD robust accuracy at each epsilon of the curve, with step 2.5 * epsilon / steps
    (Madry et al., 2018)."""
    import numpy as np

    x = np.ascontiguousarray(x, dtype=np.float32)
    correct = judge(x) == y
    accuracies = []
    for epsilon in curve.epsilons:
        if not correct.any():
            accuracies.append(0.0)
            continue
        adversarial = pgd(
            estimator,
            x[correct],
            y[correct],
            norm=norm,
            epsilon=epsilon,
            step_size=2.5 * epsilon / curve.steps,
            steps=curve.steps,
            restarts=curve.restarts,
            batch_size=batch_size,
            seed=derive_seed(seed, "curve", epsilon),
            judge=judge,
        )
        survived = judge(adversarial) == y[correct]
        accuracies.append(float(survived.sum()) / len(y))
    return accuracies


def zero_gradient_share(estimator, x: np.ndarray, y: np.ndarray) -> float:
    """Share of images whose loss gradient is all zero, or has NaN or infinite entries
    (ART's loss_gradient_check)."""
    from art.metrics import loss_gradient_check

    if not len(x):
        return 0.0
    bad = loss_gradient_check(estimator, x, one_hot(y, estimator.nb_classes), verbose=False)
    return float(bad.any(axis=1).mean())
