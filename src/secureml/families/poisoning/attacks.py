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


# Axes to flip so that ART's bottom-right trigger lands in another corner (NCHW input).
_CORNER_FLIPS = {
    "bottom-right": (),
    "top-left": (2, 3),
    "top-right": (2,),
    "bottom-left": (3,),
}


def apply_trigger(x: np.ndarray, trigger: Trigger) -> np.ndarray:
    """Stamp the trigger on NCHW images with ART's perturbation functions."""
    import numpy as np
    from art.attacks.poisoning.perturbations import add_pattern_bd, add_single_bd

    flips = _CORNER_FLIPS[trigger.corner]
    images = np.flip(x, axis=flips) if flips else x
    if trigger.kind == "pattern":
        stamped = add_pattern_bd(
            images, distance=trigger.distance, pixel_value=trigger.pixel_value, channels_first=True
        )
    elif trigger.kind == "checker":
        stamped = _checker(images, trigger)
    else:
        # add_single_bd ignores channels_first and would paint a whole row of NCHW input
        # (ART-FACTS pitfall 3), so give it channels-last.
        stamped = add_single_bd(
            np.ascontiguousarray(images.transpose(0, 2, 3, 1)),
            distance=trigger.distance,
            pixel_value=trigger.pixel_value,
        ).transpose(0, 3, 1, 2)
    stamped = np.flip(stamped, axis=flips) if flips else stamped
    return np.ascontiguousarray(stamped, dtype=np.float32)


def _checker(images: np.ndarray, trigger: Trigger) -> np.ndarray:
    """A size x size checkerboard in the bottom-right corner, `distance` pixels in.

    ART's 4-pixel pattern is too faint for a clean-label backdoor on MNIST: measured on
    mnist-5k, ASR stayed below 0.08 at eps 0.3-0.5, against 0.29 with a 5x5 checkerboard.
    """
    import numpy as np

    stamped = images.copy()
    size, inset = trigger.size, trigger.distance - 1
    height, width = images.shape[2:]
    checker = (np.indices((size, size)).sum(axis=0) % 2).astype(np.float32) * trigger.pixel_value
    top, left = height - inset - size, width - inset - size
    stamped[:, :, top : top + size, left : left + size] = checker
    return stamped


def backdoor(trigger: Trigger):
    from art.attacks.poisoning import PoisoningAttackBackdoor

    return PoisoningAttackBackdoor(lambda images: apply_trigger(images, trigger))


def poison_badnets(
    split: Split, attack: BadNetsAttack, *, seed: int, victim: VictimConfig, progress
) -> PoisonedSet:
    """Stamp the trigger on a random share of non-target images and relabel them."""
    import numpy as np

    rng = generator(seed, "badnets")
    count = int(round(attack.poison_fraction * len(split.y_train)))
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
    split: Split, attack: CleanLabelAttack, *, seed: int, victim: VictimConfig, progress
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
        progress=progress,
        label="training the attacker's proxy model",
    )
    classifier = art_classifier(proxy, input_shape=split.shape, num_classes=split.num_classes)
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
    with progress.task("crafting clean-label poison (PGD on the proxy)"):
        # ART draws the poisoned rows with np.random.choice (with replacement).
        with numpy_global_seed(derive_seed(seed, "clean-label")):
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
