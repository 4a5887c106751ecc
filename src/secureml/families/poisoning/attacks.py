"""Poisoning attacks, from ART: BadNets and the clean-label backdoor.

Each attack takes the clean training split and returns the poisoned training set the
victim (and the trainee) will see, plus the grader's secret: which rows are poison.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from secureml.art_bridge import art_classifier, one_hot
from secureml.randomness import derive_seed, generator, numpy_global_seed

if TYPE_CHECKING:
    import numpy as np

    from secureml.datasets import Split
    from secureml.families.poisoning.config import BadNetsAttack, CleanLabelAttack, Trigger
    from secureml.scenario import VictimConfig


@dataclass(frozen=True)
class PoisonedSet:
    x: np.ndarray
    y: np.ndarray
    poison_mask: np.ndarray  # the grader's secret: True where a row is poison


def apply_trigger(x: np.ndarray, trigger: Trigger) -> np.ndarray:
    """Stamp the trigger on NCHW images, inside its box (see `Trigger.box`), wherever that is."""
    import numpy as np

    stamped = np.array(x, dtype=np.float32, copy=True)
    height, width = trigger.box()
    rows, cols = slice(trigger.row, trigger.row + height), slice(trigger.col, trigger.col + width)
    stamped[:, :, rows, cols] = _STAMPS[trigger.kind](np.ascontiguousarray(stamped[:, :, rows, cols]), trigger)
    return stamped


def _pattern(box: np.ndarray, trigger) -> np.ndarray:
    """ART's add_pattern_bd, given only the 3x3 box: with distance 1 it fills the box exactly,
    so the pattern lands wherever the box is (ART alone only measures from the bottom-right)."""
    from art.attacks.poisoning.perturbations import add_pattern_bd

    return add_pattern_bd(box, distance=1, pixel_value=trigger.pixel_value, channels_first=True)


def _pixel(box: np.ndarray, trigger) -> np.ndarray:
    """ART's add_single_bd on the 1x1 box. It ignores channels_first and would paint a whole
    row of NCHW input (ART-FACTS pitfall 3), so it gets channels-last."""
    from art.attacks.poisoning.perturbations import add_single_bd

    return add_single_bd(box.transpose(0, 2, 3, 1), distance=1, pixel_value=trigger.pixel_value).transpose(0, 3, 1, 2)


def _square(box: np.ndarray, trigger) -> np.ndarray:
    box[...] = trigger.pixel_value
    return box


def _checker(box: np.ndarray, trigger) -> np.ndarray:
    """A checkerboard of pixel_value and black.

    ART's 4-pixel pattern is too faint for a clean-label backdoor on MNIST: measured on
    mnist-5k, ASR stayed below 0.08 at eps 0.3-0.5, against 0.29 with a 5x5 checkerboard.
    """
    import numpy as np

    size = trigger.size
    box[...] = (np.indices((size, size)).sum(axis=0) % 2).astype(np.float32) * trigger.pixel_value
    return box


def _blend(box: np.ndarray, trigger) -> np.ndarray:
    """Blended injection (Chen et al., 2017): a fixed uniform-noise pattern mixed into the box."""
    import numpy as np

    noise = np.random.default_rng(trigger.pattern_seed).uniform(0.0, 1.0, size=box.shape[1:]).astype(np.float32)
    return (1.0 - trigger.alpha) * box + trigger.alpha * noise


_STAMPS: dict[str, Callable[[np.ndarray, Trigger], np.ndarray]] = {
    "pattern": _pattern,
    "pixel": _pixel,
    "square": _square,
    "checker": _checker,
    "blend": _blend,
}


def trigger_change(clean: np.ndarray, stamped: np.ndarray) -> float:
    """How much the trigger changes an image, on average: the sum of absolute pixel changes."""
    if not len(clean):
        return 0.0
    return float(abs(stamped - clean).reshape(len(clean), -1).sum(axis=1).mean())


def backdoor(trigger: Trigger):
    from art.attacks.poisoning import PoisoningAttackBackdoor

    return PoisoningAttackBackdoor(lambda images: apply_trigger(images, trigger))


def poison_badnets(
    split: Split, attack: BadNetsAttack, *, seed: int, victim: VictimConfig, progress, device: str = "cpu"
) -> PoisonedSet:
    """Stamp the trigger on a random share of non-target images and relabel them."""
    import numpy as np

    rng = generator(seed, "badnets")
    count = round(attack.poison_fraction * len(split.y_train))
    candidates = np.flatnonzero(split.y_train != attack.target_class)
    chosen = np.sort(rng.choice(candidates, size=min(count, len(candidates)), replace=False))
    # ART wants a one-hot target when broadcasting (ART-FACTS pitfall 4).
    target = one_hot(np.array([attack.target_class]), split.num_classes)[0]
    stamped, _ = backdoor(attack.trigger).poison(split.x_train[chosen], y=target, broadcast=True)
    x = split.x_train.copy()
    y = split.y_train.copy()
    x[chosen] = stamped
    y[chosen] = attack.target_class
    mask = np.zeros(len(y), dtype=bool)
    mask[chosen] = True
    return PoisonedSet(x, y, mask)


def poison_clean_label(
    split: Split, attack: CleanLabelAttack, *, seed: int, victim: VictimConfig, progress, device: str = "cpu"
) -> PoisonedSet:
    """ART's PoisoningAttackCleanLabelBackdoor against a proxy model the attacker trains."""
    import numpy as np
    from art.attacks.poisoning import PoisoningAttackCleanLabelBackdoor

    from secureml.models import train

    proxy_config = victim.model_copy(update={"epochs": attack.proxy_epochs})
    proxy = train(
        proxy_config,
        split.x_train,
        split.y_train,
        num_classes=split.num_classes,
        seed=derive_seed(seed, "proxy"),
        device=device,
        progress=progress,
        label="training the attacker's proxy model",
    )
    classifier = art_classifier(proxy, input_shape=split.shape, num_classes=split.num_classes, device=device)
    target = one_hot(np.array([attack.target_class]), split.num_classes)[0]
    clean_label = PoisoningAttackCleanLabelBackdoor(
        backdoor=backdoor(attack.trigger),
        proxy_classifier=classifier,
        target=target,
        pp_poison=attack.poison_fraction,
        norm=np.inf,
        eps=attack.eps,
        eps_step=attack.eps_step,
        max_iter=attack.max_iter,
        num_random_init=0,
    )
    clean_label.attack.set_params(verbose=False)  # ART's PGD defaults to a notebook progress bar
    # ART draws the poisoned rows with np.random.choice (with replacement).
    with (
        progress.task("crafting clean-label poison (PGD on the proxy)"),
        numpy_global_seed(derive_seed(seed, "clean-label")),
    ):
        x, _ = clean_label.poison(split.x_train, y=one_hot(split.y_train, split.num_classes))
    x = np.ascontiguousarray(x, dtype=np.float32)
    mask = np.any(x.reshape(len(x), -1) != split.x_train.reshape(len(x), -1), axis=1)
    return PoisonedSet(x, split.y_train.copy(), mask)


ATTACKS: dict[str, Callable[..., PoisonedSet]] = {
    "badnets": poison_badnets,
    "clean-label": poison_clean_label,
}


def triggered_test_set(split: Split, attack) -> tuple[np.ndarray, np.ndarray]:
    """Test images whose true class is not the target, with the trigger: the ASR's denominator."""
    keep = split.y_test != attack.target_class
    return apply_trigger(split.x_test[keep], attack.trigger), split.y_test[keep]
