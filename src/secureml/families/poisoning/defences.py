"""Built-in baselines from ART that trainees compete against.

Both detectors read the last top-level layer of the classifier they are given, so they
get a view of the victim's `features` block: the penultimate representation, not the
logits (ART-FACTS pitfall 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from secureml.art_bridge import art_classifier, one_hot
from secureml.randomness import derive_seed, numpy_global_seed

if TYPE_CHECKING:
    import numpy as np


def _feature_view(victim, input_shape, num_classes, device: str):
    import copy

    # A copy, so freezing it for ART leaves the victim untouched.
    return art_classifier(
        copy.deepcopy(victim.features), input_shape=input_shape, num_classes=num_classes, device=device
    )


def activation_defence(
    victim, x, y, *, num_classes: int, seed: int, poison_fraction: float, device: str = "cpu"
) -> np.ndarray:
    """ART ActivationDefence (Chen et al., 2018): 2-means on PCA-10 activations per class,
    the smaller cluster flagged. Returns the kept indices."""
    import numpy as np
    from art.defences.detector.poison import ActivationDefence

    defence = ActivationDefence(
        _feature_view(victim, x.shape[1:], num_classes, device), x, one_hot(y, num_classes)
    )
    with numpy_global_seed(derive_seed(seed, "activation-defence")):
        _, is_clean = defence.detect_poison(
            nb_clusters=2, nb_dims=10, reduce="PCA", cluster_analysis="smaller"
        )
    return np.flatnonzero(np.asarray(is_clean) == 1)


def spectral_signature(
    victim, x, y, *, num_classes: int, seed: int, poison_fraction: float, device: str = "cpu"
) -> np.ndarray:
    """ART SpectralSignatureDefense (Tran et al., 2018), told the true poison share."""
    import numpy as np
    from art.defences.detector.poison import SpectralSignatureDefense

    defence = SpectralSignatureDefense(
        _feature_view(victim, x.shape[1:], num_classes, device),
        x,
        one_hot(y, num_classes),
        batch_size=128,
        eps_multiplier=1.5,  # ART's default: remove 1.5x the expected poison share per class
        expected_pp_poison=max(poison_fraction, 1e-3),
    )
    with numpy_global_seed(derive_seed(seed, "spectral-signature")):
        _, is_clean = defence.detect_poison()
    return np.flatnonzero(np.asarray(is_clean) == 1)


BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "activation-defence": activation_defence,
    "spectral-signature": spectral_signature,
}
