"""What the grader measures on reconstructions: attack accuracy (white-box), identification
(query-only), MSE and SSIM.

numpy only: the evaluation classifier's verdicts come in as arrays. scikit-image is not a
dependency, and SSIM on small grey images is twenty lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Leakage:
    """What MIFace recovered from a model, class by class (white-box)."""

    attack_accuracy: float  # share of classes recovered (worst case over the starts)
    mse: float  # mean squared error of each class's shown reconstruction to the class's mean image
    ssim: float  # structural similarity to that mean image (1 = identical)
    per_class_accuracy: dict[int, float]  # 1.0 for a recovered class
    shown: np.ndarray  # per class, the index of the reconstruction to show: a recovering one if any
    blinded: list[int]  # classes whose neutral starts were all stuck (counted as recovered)

    def metrics(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}.attack_accuracy": self.attack_accuracy,
            f"{prefix}.mse": self.mse,
            f"{prefix}.ssim": self.ssim,
        }


def class_means(x: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    """The mean image of each class: what an attacker who recovers a class "looks like" gets."""
    import numpy as np

    return np.stack([x[y == label].mean(axis=0) for label in range(num_classes)]).astype(np.float32)


def miface_leakage(
    verdicts: np.ndarray,
    start_verdicts: np.ndarray,
    reconstructions,
    starts,
    means: np.ndarray,
    stuck_below: float,
) -> Leakage:
    """Per class, the worst case over MIFace's starts.

    verdicts, start_verdicts: the independent evaluator's class for each reconstruction and
    for the image it started from. A start recovers its class when the evaluator sees the
    class in the reconstruction and the model's confidence reached `stuck_below` (a stuck
    start recovered nothing, it merely did not move). A start that the evaluator already
    saw as the class proves nothing and never counts, blank and noise starts included: the
    evaluator reads a blank image as some digit, and a model that reaches full confidence
    while leaving the blank as it was (trapdoors) would otherwise leak that digit for free
    (measured on inversion-01: on each of three seeds, one of the 2-4 classes the old
    trapdoor reference leaked came from a blank start the evaluator read as that digit).
    A class is
    recovered when any start recovers it, or when all its neutral starts (blank, noise)
    are stuck: a gradient that vanishes where the attack begins hides leakage without
    removing it, so the grader assumes the worst.
    """
    import numpy as np

    labels = reconstructions.labels
    moved = reconstructions.confidence >= stuck_below
    proof = start_verdicts != labels
    recovers = (verdicts == labels) & moved & proof
    num_classes = len(means)
    recovered, shown, blinded = [], [], []
    for label in range(num_classes):
        rows = np.flatnonzero(labels == label)
        neutral = rows[starts.neutral[rows]]
        blind = not moved[neutral].any()
        hits = rows[recovers[rows]]
        recovered.append(bool(len(hits)) or blind)
        # The first start is the blank one: Fredrikson et al.'s own, shown when nothing recovers.
        shown.append(int(hits[0]) if len(hits) else int(rows[0]))
        if blind:
            blinded.append(label)
    shown_images = reconstructions.images[shown]
    return Leakage(
        attack_accuracy=float(np.mean(recovered)),
        mse=float(((shown_images - means) ** 2).mean()),
        ssim=float(ssim(shown_images, means).mean()),
        per_class_accuracy={label: float(value) for label, value in enumerate(recovered)},
        shown=np.array(shown),
        blinded=blinded,
    )


def identification(reconstructions: np.ndarray, originals: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per query, the chance that its reconstruction is closer (squared error) to the query's
    own image than to another query's image of the same class; ties count half.

    0.5 is chance: an attacker who draws the same picture for every query of a class (all a
    label tells it) is exactly as close to each of them on average. 1.0 picks every user's
    image out of the others of the same digit.
    """
    import numpy as np

    flat_reconstructions = reconstructions.reshape(len(reconstructions), -1).astype(np.float64)
    flat_originals = originals.reshape(len(originals), -1).astype(np.float64)
    chances = np.full(len(labels), 0.5)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        if len(rows) < 2:
            continue
        mine, theirs = flat_reconstructions[rows], flat_originals[rows]
        # distance[i, j] = |r_i - x_j|^2, without an (n, n, pixels) array.
        distance = (mine**2).sum(1)[:, None] + (theirs**2).sum(1)[None, :] - 2 * mine @ theirs.T
        own = np.diag(distance)[:, None]
        farther = (distance > own + 1e-9) + 0.5 * (np.abs(distance - own) <= 1e-9)
        np.fill_diagonal(farther, 0.0)
        chances[rows] = farther.sum(axis=1) / (len(rows) - 1)
    return chances


def worst_class(per_query: np.ndarray, labels: np.ndarray) -> float:
    """The highest mean of `per_query` over the queries of one class."""
    import numpy as np

    return float(max(per_query[labels == label].mean() for label in np.unique(labels)))


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
    import numpy as np

    offsets = np.arange(size) - (size - 1) / 2
    line = np.exp(-(offsets**2) / (2 * sigma**2))
    window = np.outer(line, line)
    return window / window.sum()


def ssim(a: np.ndarray, b: np.ndarray, *, window: int = 7, sigma: float = 1.5) -> np.ndarray:
    """Mean SSIM of each image pair (Wang, Bovik, Sheikh and Simoncelli, 2004), images in [0, 1].

    a, b: (N, C, H, W). A Gaussian window (sigma 1.5, as in the paper) of `window` pixels,
    7 by default as in scikit-image, because 28x28 digits leave too few positions for the
    paper's 11; it shrinks to fit smaller images. Returns (N,).
    """
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim needs two (N, C, H, W) arrays of one shape, got {a.shape} and {b.shape}")
    size = min(window, a.shape[2], a.shape[3])
    size -= 1 - size % 2  # odd
    kernel = _gaussian_window(size, sigma)

    def local_mean(image: np.ndarray) -> np.ndarray:
        patches = sliding_window_view(image, (size, size), axis=(2, 3))
        return np.tensordot(patches, kernel, axes=([4, 5], [0, 1]))

    c1, c2 = 0.01**2, 0.03**2  # the paper's K1 = 0.01, K2 = 0.03 for a dynamic range of 1
    mean_a, mean_b = local_mean(a), local_mean(b)
    var_a = local_mean(a * a) - mean_a**2
    var_b = local_mean(b * b) - mean_b**2
    covariance = local_mean(a * b) - mean_a * mean_b
    index = ((2 * mean_a * mean_b + c1) * (2 * covariance + c2)) / (
        (mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2)
    )
    return index.reshape(len(a), -1).mean(axis=1)
