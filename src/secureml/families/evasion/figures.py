"""The evasion family's pictures: adversarial examples, and robust accuracy versus epsilon."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from secureml.families.evasion.attacks import SuiteResult


def _magnified(delta: np.ndarray, norm: str, epsilon: float) -> tuple[np.ndarray, float]:
    """Map a perturbation to [0, 1] around grey (0.5) and return the magnification used."""
    import numpy as np

    if norm == "inf":
        scale = 0.5 / epsilon
    else:
        largest = float(np.abs(delta).max())
        scale = 0.5 / largest if largest > 0 else 1.0
    return np.clip(0.5 + delta * scale, 0.0, 1.0), scale


def draw_examples(
    path: Path,
    *,
    title: str,
    class_names,
    undefended: SuiteResult,
    mitigated: SuiteResult,
    predict_undefended: Callable,
    predict_mitigated: Callable,
    norm: str,
    epsilon: float,
    count: int = 8,
) -> Path:
    """Clean images, the suite's strongest adversarial image against each model, and the
    perturbation magnified (grey = unchanged). Red captions: the model was fooled."""
    import numpy as np

    from secureml.pictures import Cell, image_grid

    shown = np.flatnonzero(undefended.clean_correct & mitigated.clean_correct)[:count]
    if not len(shown):
        shown = np.arange(min(count, len(undefended.y)))
    x, y = undefended.x[shown], undefended.y[shown]
    rows = [("clean", [Cell(image, f"true {class_names[t]}") for image, t in zip(x, y, strict=True)])]
    for label, result, predict in (("victim", undefended, predict_undefended), ("yours", mitigated, predict_mitigated)):
        adversarial = result.worst_adversarial()[shown]
        predicted = predict(adversarial)
        rows.append(
            (
                f"attack on\n{label}",
                [
                    Cell(image, f"-> {class_names[p]}", highlight=bool(p != t))
                    for image, p, t in zip(adversarial, predicted, y, strict=True)
                ],
            )
        )
        cells = []
        for image, clean in zip(adversarial, x, strict=True):
            picture, scale = _magnified(image - clean, norm, epsilon)
            size = np.abs(image - clean).max() if norm == "inf" else np.linalg.norm(image - clean)
            # The suite keeps an attack's image only where it fooled the model; elsewhere
            # there is no perturbation to show, and the caption says why.
            caption = f"x{scale:.0f}, |d|={size:.2f}" if size > 0 else "no attack got through"
            cells.append(Cell(picture, caption))
        rows.append((f"perturbation\non {label}", cells))
    return image_grid(rows, path, title=title)


def draw_curve(
    path: Path,
    *,
    title: str,
    epsilons: list[float],
    curves: dict[str, list[float]],
    threat_epsilon: float,
    norm: str,
) -> Path:
    """Robust accuracy (PGD) against epsilon, one line per model, the scenario's epsilon marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    # A style for each of up to three curves: zip stops with the curves.
    for (label, accuracies), style in zip(curves.items(), ("o--", "s-", "^-."), strict=False):
        axis.plot([0.0, *epsilons], accuracies, style, label=label)
    axis.axvline(threat_epsilon, color="grey", linestyle=":", label=f"scenario epsilon {threat_epsilon:g}")
    axis.set_xlabel(f"epsilon ({'L-inf' if norm == 'inf' else 'L2'})")
    axis.set_ylabel("robust accuracy (PGD)")
    axis.set_ylim(-0.02, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
