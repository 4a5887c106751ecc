"""Prediction-API output vectors: what they are worth to a client, and what an attacker reads.

Shared by every family whose trainee returns an API that answers queries with score vectors
(query-only model inversion today, model extraction next). numpy only: no torch, no family.

Two halves, one per side of the trade-off such a defence makes:

- The client. `client_distribution` is how a client reads a vector of scores as class
  probabilities, and `log_loss` scores that reading against the true labels (a proper scoring
  rule: it rewards calibrated confidences, not just the right argmax). A label-only API
  keeps the argmax and loses exactly what log loss measures, so "labels only" is not free.
- The attacker. `fit_view` turns output vectors into the features an attacker learns from.
  Each view is blind to a family of invertible per-vector re-encodings: a defence that
  scales, shifts, reorders or re-maps scores monotonically hides nothing from the view that
  undoes it, and the grader takes the worst case over all views.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# The smallest positive float32 (a subnormal, 1.4e-45): outputs reach the grader as float32,
# so every score an API sends above 0 is at least this, and its logarithm stays finite.
SMALLEST_SCORE = 1e-45
# Standardised features are clipped at this many standard deviations: a column that was
# (nearly) constant on the attacker's own queries must not blow up on a new query.
CLIP_SD = 6.0


# --------------------------------------------------------------------------- the client


def client_distribution(outputs: np.ndarray, smoothing: float) -> np.ndarray:
    """Class probabilities as a client reads an API's score vectors.

    Scores that sum to more than 1 are normalised; mass a vector leaves unreported
    (1 - sum) is spread evenly over all classes, so "top-1 at 0.7" means 0.7 for that class
    and 0.3 / C for each class. Then `smoothing` of uniform mass is mixed in: a client never
    bets everything on one class, which bounds one confidently wrong answer's log loss at
    log(C / smoothing).
    """
    import numpy as np

    scores = np.clip(np.asarray(outputs, dtype=np.float64), 0.0, None)
    classes = scores.shape[1]
    total = scores.sum(axis=1, keepdims=True)
    probabilities = np.where(total > 1.0, scores / np.maximum(total, 1e-300), scores + (1.0 - total) / classes)
    return (1.0 - smoothing) * probabilities + smoothing / classes


def log_loss(outputs: np.ndarray, labels: np.ndarray, smoothing: float) -> float:
    """Mean negative log-probability the client's reading gives the true class (nats)."""
    import numpy as np

    probabilities = client_distribution(outputs, smoothing)
    return float(-np.log(probabilities[np.arange(len(labels)), labels]).mean())


def label_only(outputs: np.ndarray) -> np.ndarray:
    """The same answers with nothing but the label: a one-hot vector of each argmax."""
    import numpy as np

    outputs = np.asarray(outputs)
    return np.eye(outputs.shape[1], dtype=np.float32)[outputs.argmax(axis=1)]


# --------------------------------------------------------------------------- the attacker


def _log_scores(outputs: np.ndarray) -> np.ndarray:
    """log of every score: small probabilities of other classes carry what the model
    learned about them ("dark knowledge", Hinton, Vinyals and Dean, 2015), however small."""
    import numpy as np

    return np.log(np.maximum(outputs.astype(np.float64), SMALLEST_SCORE))


def _runner_ups(outputs: np.ndarray) -> np.ndarray:
    """The winner (one-hot), its log score, the log of the runners-up's total, and each
    runner-up's log share of that total. Multiplying the runners-up by any factor, one per
    vector, changes only the total: the shares are exactly what they were."""
    import numpy as np

    outputs = outputs.astype(np.float64)
    rows = np.arange(len(outputs))
    winner = outputs.argmax(axis=1)
    rest = outputs.copy()
    rest[rows, winner] = 0.0
    total = rest.sum(axis=1, keepdims=True)
    shares = np.log(np.maximum(rest / np.maximum(total, SMALLEST_SCORE), SMALLEST_SCORE))
    shares[rows, winner] = 0.0
    return np.concatenate(
        [
            np.eye(outputs.shape[1])[winner],
            shares,
            _log_scores(outputs[rows, winner])[:, None],
            _log_scores(total),
        ],
        axis=1,
    )


def _ranks(outputs: np.ndarray) -> np.ndarray:
    """The winner (one-hot), and each runner-up's rank among the runners-up (ties share the
    mean rank), scaled to [0, 1]; the winner's own slot holds the middle rank.

    Any strictly increasing re-mapping of the scores, even a different one per vector,
    leaves the ranks as they were; a decreasing one of the runners-up (handing out their
    values in reverse order) turns each rank r into 1 - r, which a network's first layer
    undoes with one weight per feature.
    """
    import numpy as np

    rows = np.arange(len(outputs))
    winner = outputs.argmax(axis=1)
    rest = outputs.astype(np.float64)
    # The winner sorts below every runner-up and is left out of their ranks.
    rest[rows, winner] = -np.inf
    below = (rest[:, None, :] < rest[:, :, None]).sum(axis=2) - 1
    tied = (rest[:, None, :] == rest[:, :, None]).sum(axis=2) - 1
    ranks = (below + tied / 2.0) / max(outputs.shape[1] - 2, 1)
    ranks[rows, winner] = 0.5
    return np.concatenate([np.eye(outputs.shape[1])[winner], ranks], axis=1)


VIEWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "log-scores": _log_scores,
    "runner-ups": _runner_ups,
    "ranks": _ranks,
}


@dataclass(frozen=True)
class FittedView:
    """A view standardised on the attacker's own queries: each feature minus its mean, over
    its standard deviation there. A constant re-scaling or shift of a feature (what a fixed
    monotone re-encoding does to log scores) is undone by the fit."""

    name: str
    mean: np.ndarray
    scale: np.ndarray

    def __call__(self, outputs: np.ndarray) -> np.ndarray:
        import numpy as np

        standardised = (VIEWS[self.name](np.asarray(outputs)) - self.mean) / self.scale
        # Scaled to about [-2, 2]: the range a network's first layer trains well on.
        return (np.clip(standardised, -CLIP_SD, CLIP_SD) / (CLIP_SD / 2)).astype(np.float32)


def fit_view(name: str, attacker_outputs: np.ndarray) -> FittedView:
    """Fit view `name` (a key of VIEWS) on the outputs the API gave the attacker's queries."""
    import numpy as np

    if name not in VIEWS:
        raise ValueError(f"unknown attacker view '{name}'; known: {', '.join(VIEWS)}")
    features = VIEWS[name](np.asarray(attacker_outputs))
    # 1e-6: a feature that never varied on the attacker's queries (e.g. a class no query
    # ever ranked first) still maps a new value to a bounded, clipped input.
    return FittedView(name, features.mean(axis=0), np.maximum(features.std(axis=0), 1e-6))
