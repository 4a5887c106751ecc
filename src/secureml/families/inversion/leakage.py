"""What the grader measures on reconstructions: attack accuracy, MSE and SSIM.

numpy only (plus the evaluation classifier): scikit-image is not a dependency, and SSIM
on small grey images is twenty lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Leakage:
    attack_accuracy: float  # share of reconstructions the evaluator assigns to their class
    mse: float  # mean squared error to the class's mean private training image
    ssim: float  # structural similarity to that mean image (1 = identical)
    per_class_accuracy: dict[int, float]

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


def measure(evaluator, images: np.ndarray, labels: np.ndarray, means: np.ndarray) -> Leakage:
    """Attack accuracy by the independent evaluator, and distances to the class means."""
    import numpy as np

    from secureml import models

    predicted = models.predict(evaluator, images)
    hits = predicted == labels
    targets = means[labels]
    per_class = {int(label): float(hits[labels == label].mean()) for label in np.unique(labels)}
    return Leakage(
        attack_accuracy=float(hits.mean()),
        mse=float(((images - targets) ** 2).mean()),
        ssim=float(ssim(images, targets).mean()),
        per_class_accuracy=per_class,
    )


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
