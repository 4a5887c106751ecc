"""The poisoning score is a pure function; test it exhaustively on constructed numbers."""

from __future__ import annotations

import itertools
import math

import pytest

from secureml.scoring import clip01, defence_effectiveness, der_calibrated, luck_can_change

BASE = dict(
    asr_none=0.99, ca_none=0.94,
    asr_random=0.99, ca_random=0.94,
    asr_perfect=0.0, ca_perfect=0.95,
    clean_dropped=0.0, max_clean_dropped=0.25,
    max_clean_accuracy_drop=0.05,
)  # fmt: skip


def score(**changes):
    return der_calibrated(**{**BASE, **changes})


def test_no_mitigation_scores_zero():
    result = score(asr_mitigated=0.99, ca_mitigated=0.94)
    assert result.total == 0.0
    assert result.parts["der_mitigated"] == pytest.approx(0.5)


def test_perfect_filtering_scores_100():
    assert score(asr_mitigated=0.0, ca_mitigated=0.95).total == pytest.approx(100.0)


def test_halving_the_attack_scores_about_half():
    assert score(asr_mitigated=0.495, ca_mitigated=0.94).total == pytest.approx(50.0, abs=1.0)


def test_losing_more_than_five_points_of_clean_accuracy_scores_zero():
    result = score(asr_mitigated=0.0, ca_mitigated=0.94 - 0.051)
    assert result.total == 0.0 and "clean accuracy fell" in result.capped_by


def test_losing_exactly_five_points_is_still_scored():
    assert score(asr_mitigated=0.0, ca_mitigated=0.89).total > 0


def test_a_mitigation_no_better_than_random_dropping_scores_zero():
    result = score(asr_random=0.6, ca_random=0.93, asr_mitigated=0.6, ca_mitigated=0.93)
    assert result.total == 0.0


def test_a_random_filter_whose_model_came_out_worse_than_no_filter_gives_no_credit():
    # Measured on a variant: the random filter's retrained model fell to clean accuracy
    # 0.786 by chance, and a filter that removed 4% of the poison scored 18.7 against it.
    unlucky = dict(asr_none=0.95, ca_none=0.912, asr_random=0.998, ca_random=0.786, asr_perfect=0.071,
                   ca_perfect=0.935, clean_dropped=0.04)
    assert score(**unlucky, asr_mitigated=0.95, ca_mitigated=0.92).total == 0.0
    result = score(**unlucky, asr_mitigated=0.852, ca_mitigated=0.923)
    assert result.parts["der_random"] == 0.5 and result.total < 10


def test_an_asr_drop_within_the_noise_of_retraining_earns_little():
    # Measured on poisoning-02: a filter that dropped 4% of the samples at random retrained
    # to ASR 0.288 by chance and scored 40.8 against one random filter (ASR 0.573). Twelve
    # random retrains had ASR 0.476 +- 0.081, so a random filter 2 SD luckier has ASR 0.314.
    lucky_drop = dict(asr_none=0.566, ca_none=0.946, asr_random=0.573, ca_random=0.95, asr_perfect=0.001,
                      ca_perfect=0.94, clean_dropped=0.04, asr_mitigated=0.288, ca_mitigated=0.94)
    assert score(**lucky_drop).total > 40
    result = score(**lucky_drop, asr_lucky=0.314)
    assert result.total < 10 and result.parts["der_random"] == result.parts["der_lucky"]
    # A filter that removes the poison still scores what it kept.
    perfect = score(**{**lucky_drop, "asr_mitigated": 0.001, "clean_dropped": 0.0}, asr_lucky=0.314)
    assert perfect.total == pytest.approx(100)


def test_the_luck_of_retraining_takes_at_most_half_the_headroom():
    # A weak backdoor whose random retrains scatter down to ASR 0: the band stops halfway, so
    # a filter that halves the ASR beyond random's is still scored, and perfect is still 100.
    weak = dict(asr_none=0.3, ca_none=0.94, asr_random=0.3, ca_random=0.94, asr_perfect=0.0, ca_perfect=0.94,
                clean_dropped=0.0, asr_lucky=0.0)
    result = score(**weak, asr_mitigated=0.0, ca_mitigated=0.94)
    assert result.total == pytest.approx(100)
    assert result.parts["der_random"] == pytest.approx(0.5 + 0.5 * 0.15)
    assert score(**weak, asr_mitigated=0.075, ca_mitigated=0.94).total == pytest.approx(50)


def test_the_luck_is_measured_only_when_it_can_change_the_score():
    # The grader retrains its random filters (about 30 s cold) only when `luck_can_change`
    # says so; everywhere else the score must be the same with and without the luck.
    grid = itertools.product(
        (0.2, 0.566, 0.99),  # asr_none
        (0.0, 0.3, 0.6, 1.0),  # asr_random
        (0.0, 0.05, 0.4),  # asr_perfect
        (0.0, 0.1, 0.3, 0.5, 0.99),  # asr_mitigated
        (0.94, 0.92, 0.85),  # ca_mitigated
        (0.0, 0.1, 0.3),  # asr_lucky
    )
    checked = 0
    for asr_none, asr_random, asr_perfect, asr_mitigated, ca_mitigated, asr_lucky in grid:
        case = dict(asr_none=asr_none, asr_random=asr_random, asr_perfect=asr_perfect, asr_mitigated=asr_mitigated,
                    ca_mitigated=ca_mitigated, clean_dropped=0.02)
        without = score(**case)
        if not luck_can_change(without):
            checked += 1
            assert score(**case, asr_lucky=asr_lucky).total == pytest.approx(without.total, abs=1e-9), case
    assert checked > 500
    # The measured lucky drop on poisoning-02 needs it; the reference and no filter do not.
    lucky_drop = dict(asr_none=0.566, ca_none=0.946, asr_random=0.573, ca_random=0.95, asr_perfect=0.001,
                      ca_perfect=0.94, clean_dropped=0.04, ca_mitigated=0.94)
    assert luck_can_change(score(**lucky_drop, asr_mitigated=0.288))
    assert not luck_can_change(score(**{**lucky_drop, "clean_dropped": 0.0}, asr_mitigated=0.001))
    assert not luck_can_change(score(**lucky_drop, asr_mitigated=0.566))


def test_an_attack_that_never_took_hold_cannot_be_scored_and_scores_zero():
    result = score(asr_none=0.05, asr_random=0.05, asr_perfect=0.05, asr_mitigated=0.0, ca_mitigated=0.94)
    assert result.total == 0.0 and "no effect" in result.capped_by


def test_a_perfect_filter_that_drops_no_clean_sample_still_scores_100():
    result = score(asr_mitigated=0.0, ca_mitigated=0.95, clean_dropped=0.0)
    assert result.total == pytest.approx(100.0) and result.parts["kept_clean"] == 1.0


def test_every_clean_sample_dropped_costs_score_even_when_accuracy_holds():
    # The measured hole: dropping 36% of the clean data cost 3.6 points of accuracy and
    # still scored 96.6. The kept-clean factor pays for the data itself.
    perfect_asr = dict(asr_mitigated=0.0, ca_mitigated=0.94 - 0.036)
    assert score(**perfect_asr, clean_dropped=0.36).total == 0.0
    assert "clean training data" in score(**perfect_asr, clean_dropped=0.36).capped_by
    assert score(asr_mitigated=0.0, ca_mitigated=0.95, clean_dropped=0.05).total == pytest.approx(80.0)
    totals = [score(asr_mitigated=0.0, ca_mitigated=0.95, clean_dropped=d).total for d in (0.0, 0.01, 0.1, 0.2, 0.25)]
    assert totals == sorted(totals, reverse=True) and totals[-1] == 0.0


def test_der_rewards_asr_drops_and_penalises_ca_drops():
    assert defence_effectiveness(1.0, 0.0, 0.9, 0.9) == 1.0
    assert defence_effectiveness(1.0, 1.0, 0.9, 0.9) == 0.5
    assert defence_effectiveness(1.0, 1.0, 0.9, 0.8) == pytest.approx(0.45)
    # An ASR increase is not a negative drop: max(0, ...).
    assert defence_effectiveness(0.5, 0.9, 0.9, 0.9) == 0.5


@pytest.mark.parametrize(
    "asr_mitigated, ca_mitigated, clean_dropped",
    list(itertools.product([0.0, 0.1, 0.5, 0.9, 1.0], [0.80, 0.89, 0.92, 0.94, 0.99], [0.0, 0.1, 0.5, 1.0])),
)
def test_score_is_always_within_0_and_100_and_finite(asr_mitigated, ca_mitigated, clean_dropped):
    total = score(asr_mitigated=asr_mitigated, ca_mitigated=ca_mitigated, clean_dropped=clean_dropped).total
    assert 0.0 <= total <= 100.0 and math.isfinite(total)


def test_score_never_rewards_a_worse_attack_outcome():
    totals = [score(asr_mitigated=asr, ca_mitigated=0.94).total for asr in (0.0, 0.2, 0.4, 0.6, 0.8)]
    assert totals == sorted(totals, reverse=True)


def test_non_finite_metrics_are_rejected():
    with pytest.raises(ValueError, match="not finite"):
        score(asr_mitigated=float("nan"), ca_mitigated=0.9)


def test_clip01():
    assert [clip01(v) for v in (-1, 0.3, 2)] == [0.0, 0.3, 1.0]


# --------------------------------------------------------------------------- inversion (white-box)

from secureml.scoring import inversion_api_calibrated, inversion_calibrated  # noqa: E402

WHITE_BOX = dict(attack_accuracy_none=1.0, attack_accuracy_floor=0.1, utility_none=0.91, max_utility_drop=0.1)


def test_inversion_no_mitigation_scores_zero_and_reaching_chance_at_full_utility_scores_100():
    assert inversion_calibrated(**WHITE_BOX, attack_accuracy_mitigated=1.0, utility_mitigated=0.91).total == 0.0
    assert inversion_calibrated(**WHITE_BOX, attack_accuracy_mitigated=0.1, utility_mitigated=0.91).total == 100.0


def test_inversion_losing_the_whole_utility_allowance_scores_zero_and_says_why():
    result = inversion_calibrated(**WHITE_BOX, attack_accuracy_mitigated=0.1, utility_mitigated=0.80)
    assert result.total == 0.0 and "utility fell" in result.capped_by


# --------------------------------------------------------------------------- inversion (query-only API)

VIEWS = ("log-scores", "runner-ups", "ranks")
API = dict(
    identification_none=dict.fromkeys(VIEWS, 0.75),
    identification_label_only=dict.fromkeys(VIEWS, 0.50),
    accuracy_none=0.95,
    log_loss_none=0.17,
    log_loss_label_only=0.33,
    max_accuracy_drop=0.1,
    confidence_weight=0.5,
    confidence_target=0.5,
)


def api_score(identification=0.75, accuracy=0.95, log_loss=0.17, **views):
    mitigated = {**dict.fromkeys(VIEWS, identification), **views}
    return inversion_api_calibrated(
        **API, identification_mitigated=mitigated, accuracy_mitigated=accuracy, log_loss_mitigated=log_loss
    )


def test_the_full_probability_api_scores_zero():
    assert api_score().total == 0.0


def test_a_label_only_api_leaks_least_but_keeps_no_confidence_and_scores_half():
    result = api_score(identification=0.50, log_loss=0.33)
    assert result.parts["leakage_removed"] == 1.0 and result.parts["confidence_kept"] == 0.0
    assert result.total == pytest.approx(50.0)


def test_the_label_with_a_confidence_keeping_half_the_log_loss_advantage_scores_100():
    assert api_score(identification=0.50, log_loss=0.25).total == pytest.approx(100.0)


def test_a_reencoding_that_blinds_one_view_while_another_sees_through_removes_nothing():
    result = api_score(identification=0.75, **{"log-scores": 0.50})
    assert result.parts["leakage_removed.log-scores"] == 1.0
    assert result.total == 0.0


def test_each_view_is_calibrated_against_itself():
    # A weaker view (less headroom above labels) is judged on its own scale.
    result = inversion_api_calibrated(
        **{**API, "identification_none": {"log-scores": 0.75, "ranks": 0.65}},
        identification_mitigated={"log-scores": 0.50, "ranks": 0.65},
        accuracy_mitigated=0.95,
        log_loss_mitigated=0.25,
    )
    assert result.parts["leakage_removed.ranks"] == 0.0 and result.total == 0.0


def test_a_view_that_learned_nothing_from_the_scores_does_not_decide():
    result = inversion_api_calibrated(
        **{**API, "identification_none": {"log-scores": 0.75, "ranks": 0.51}},
        identification_mitigated={"log-scores": 0.50, "ranks": 0.51},
        accuracy_mitigated=0.95,
        log_loss_mitigated=0.25,
    )
    assert "leakage_removed.ranks" not in result.parts
    assert result.total == pytest.approx(100.0)


def test_an_api_whose_full_vector_leaks_no_more_than_labels_cannot_be_scored():
    result = inversion_api_calibrated(
        **{**API, "identification_none": dict.fromkeys(VIEWS, 0.505)},
        identification_mitigated=dict.fromkeys(VIEWS, 0.5),
        accuracy_mitigated=0.95,
        log_loss_mitigated=0.25,
    )
    assert result.total == 0.0 and "no better than labels" in result.capped_by


def test_an_api_losing_the_whole_accuracy_allowance_scores_zero():
    result = api_score(identification=0.50, accuracy=0.84, log_loss=0.25)
    assert result.total == 0.0 and "accuracy fell" in result.capped_by


@pytest.mark.parametrize(
    "identification, log_loss",
    list(itertools.product([0.4, 0.5, 0.6, 0.75, 0.9], [0.1, 0.17, 0.25, 0.33, 2.0])),
)
def test_api_score_is_always_within_0_and_100_and_finite(identification, log_loss):
    total = api_score(identification=identification, log_loss=log_loss).total
    assert 0.0 <= total <= 100.0 and math.isfinite(total)


def test_api_score_never_rewards_more_leakage_or_a_worse_log_loss():
    by_leakage = [api_score(identification=value, log_loss=0.25).total for value in (0.5, 0.55, 0.6, 0.7, 0.75)]
    by_log_loss = [api_score(identification=0.5, log_loss=value).total for value in (0.2, 0.25, 0.3, 0.33, 0.5)]
    assert by_leakage == sorted(by_leakage, reverse=True)
    assert by_log_loss == sorted(by_log_loss, reverse=True)


# --------------------------------------------------------------------------- every method


def test_every_method_scores_100_times_the_product_of_its_factors_which_gradescope_shows():
    from secureml.scoring import SCORE_FACTORS, membership_calibrated, robust_accuracy_calibrated

    scores = [
        score(asr_mitigated=0.2, ca_mitigated=0.93, clean_dropped=0.05),
        robust_accuracy_calibrated(ra_none=0.05, ra_mitigated=0.6, ca_none=0.98, ca_mitigated=0.96,
                                   target_robust_accuracy=0.9, max_clean_accuracy_drop=0.1),
        inversion_calibrated(**WHITE_BOX, attack_accuracy_mitigated=0.4, utility_mitigated=0.88),
        api_score(identification=0.6, accuracy=0.93, log_loss=0.3),
        membership_calibrated(advantage_none=0.2, advantage_mitigated=0.08, advantage_floor=0.04,
                              accuracy_none=0.9, accuracy_mitigated=0.88, max_accuracy_drop=0.05),
    ]
    for result in scores:
        factors = [value for name, value in result.parts.items() if name in SCORE_FACTORS]
        assert len(factors) == 2, (result.method, sorted(result.parts))
        assert 0 < result.total < 100
        assert result.total == pytest.approx(100 * math.prod(factors)), result.method


from secureml.scoring import Score, capped_for_review  # noqa: E402


def test_a_doubt_left_for_review_caps_the_score_and_says_what_was_measured():
    measured = Score(22.2, {"robust_gained": 0.26, "clean_kept": 0.85}, "robust-accuracy-calibrated")
    capped = capped_for_review(measured, 10, "a gradient-masking flag still stands")
    assert capped.total == 10 and capped.parts == measured.parts and capped.method == measured.method
    assert capped.capped_by.startswith("a gradient-masking flag still stands") and "measured 22.2" in capped.capped_by
    # A score already under the cap is what it is: the cap never raises one, and says nothing.
    low = Score(4.0, {}, "robust-accuracy-calibrated")
    assert capped_for_review(low, 10, "doubt") is low
