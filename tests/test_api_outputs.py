"""What an API's output vectors are worth to a client, and what an attacker still reads from
them after an invertible re-encoding. Pure numpy, constructed numbers: no model needed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from secureml.api_outputs import VIEWS, client_distribution, fit_view, label_only, log_loss

LABELS = np.array([0, 1, 2])
PROBABILITIES = np.array(
    [
        [0.90, 0.06, 0.03, 0.01],
        [0.20, 0.70, 0.06, 0.04],
        [0.50, 0.10, 0.35, 0.05],  # wrong: the true class is the runner-up
    ],
    dtype=np.float32,
)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def answers() -> np.ndarray:
    """Softmax vectors of random logits, as varied as a classifier's (runners-up down to 1e-8)."""
    rng = np.random.default_rng(0)
    return _softmax(rng.normal(0, 4, size=(300, 10)))


# --------------------------------------------------------------------------- the client


def test_a_client_reads_unreported_mass_as_spread_evenly_over_the_classes():
    top_one = np.array([[0.7, 0.0, 0.0, 0.0]])
    assert client_distribution(top_one, smoothing=0.0) == pytest.approx(np.array([[0.775, 0.075, 0.075, 0.075]]))


def test_a_client_normalises_scores_that_sum_to_more_than_one_and_mixes_in_uniform_mass():
    assert client_distribution(np.array([[1.0, 1.0]]), smoothing=0.0) == pytest.approx(np.array([[0.5, 0.5]]))
    assert client_distribution(np.array([[1.0, 0.0]]), smoothing=0.1) == pytest.approx(np.array([[0.95, 0.05]]))


def test_log_loss_is_the_mean_negative_log_probability_of_the_true_class():
    expected = -(math.log(0.90) + math.log(0.70) + math.log(0.35)) / 3
    assert log_loss(PROBABILITIES, LABELS, smoothing=1e-12) == pytest.approx(expected, rel=1e-6)


def test_labels_only_keep_the_argmax_but_cost_log_loss_and_one_wrong_answer_costs_at_most_log_c_over_smoothing():
    labels = label_only(PROBABILITIES)
    assert (labels.argmax(axis=1) == PROBABILITIES.argmax(axis=1)).all()
    assert log_loss(labels, LABELS, 0.01) > log_loss(PROBABILITIES, LABELS, 0.01)
    worst = log_loss(labels[2:], LABELS[2:], 0.01)
    assert worst == pytest.approx(math.log(4 / 0.01))


# --------------------------------------------------------------------------- the attacker


def _readings(name: str, attacker: np.ndarray, target: np.ndarray) -> np.ndarray:
    return fit_view(name, attacker)(target)


def _scaled_runners_up(outputs: np.ndarray, factors: np.ndarray) -> np.ndarray:
    rows, winner = np.arange(len(outputs)), outputs.argmax(axis=1)
    scaled = outputs * factors[:, None]
    scaled[rows, winner] = outputs[rows, winner]
    return scaled.astype(np.float32)


def test_log_scores_see_through_a_constant_power_of_the_scores(answers):
    # p -> p^3 multiplies every log score by 3: a constant per feature that the fit undoes.
    plain = _readings("log-scores", answers, answers)
    cubed = answers.astype(np.float64) ** 3
    assert _readings("log-scores", cubed, cubed) == pytest.approx(plain, abs=1e-4)


def test_runner_up_shares_see_through_runners_up_multiplied_by_a_different_tiny_factor_per_answer(answers):
    factors = 10.0 ** np.random.default_rng(1).uniform(-20, -8, size=len(answers))
    plain, hidden = VIEWS["runner-ups"](answers), VIEWS["runner-ups"](_scaled_runners_up(answers, factors))
    classes = answers.shape[1]
    shares = slice(classes, 2 * classes)  # the winner, then the shares, then two totals
    assert hidden[:, shares] == pytest.approx(plain[:, shares], abs=1e-3)


def test_ranks_see_through_any_increasing_remapping_even_one_per_answer(answers):
    rng = np.random.default_rng(2)
    # Chosen to lose no precision in float64: an offset, say, merges the smallest scores.
    powers, factors = rng.uniform(0.3, 3, size=(len(answers), 1)), rng.uniform(1e-3, 1, size=(len(answers), 1))
    remapped = factors * answers.astype(np.float64) ** powers
    assert VIEWS["ranks"](remapped) == pytest.approx(VIEWS["ranks"](answers))


def test_ranks_turn_runners_up_handed_out_in_reverse_order_into_one_minus_their_rank(answers):
    order = np.argsort(-answers, axis=1)
    runners_up, rows = order[:, 1:], np.arange(len(answers))[:, None]
    reversed_ = answers.copy()
    reversed_[rows, runners_up] = answers[rows, runners_up[:, ::-1]]
    classes = answers.shape[1]
    plain, hidden = VIEWS["ranks"](answers)[:, classes:], VIEWS["ranks"](reversed_)[:, classes:]
    assert hidden == pytest.approx(1.0 - plain)


def test_label_only_answers_read_the_same_in_every_view_for_the_same_label():
    labels = label_only(PROBABILITIES[[0, 0, 1]])
    for name in VIEWS:
        features = _readings(name, labels, labels)
        assert features[0] == pytest.approx(features[1])
        assert np.isfinite(features).all() and np.abs(features).max() <= 2.0


def test_an_unknown_view_is_an_error_that_lists_the_known_ones():
    with pytest.raises(ValueError, match="log-scores"):
        fit_view("logits", PROBABILITIES)
