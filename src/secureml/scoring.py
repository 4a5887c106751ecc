"""Scores: pure functions from metrics to a 0-100 total with its parts. No I/O, no randomness.

Each scoring method has a formula text that `secureml show` prints, the README quotes,
and a function that computes it. Families pick a method by name in the scenario file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Score:
    total: float  # 0..100
    parts: dict[str, float]
    method: str
    # Why the total is what it is when a rule (rather than the formula) decided it.
    capped_by: str = ""


# The parts whose product is the score: every method here scores 100 x (what the defence
# gained or removed) x (what it kept), through `_gained_times_kept`; the others (anchors,
# raw drops) explain the factors. Gradescope scores each factor as a test of its own.
# tests/test_scoring.py holds every method to it.
SCORE_FACTORS = frozenset({
    "gained", "kept_clean",  # der-calibrated (poisoning)
    "robust_gained", "clean_kept",  # robust-accuracy-calibrated (evasion)
    "leakage_removed", "utility_kept", "usefulness",  # inversion-calibrated, inversion-api-calibrated
    # advantage-calibrated (membership) scores leakage_removed x utility_kept as well.
    "fidelity_removed",  # fidelity-confidence-calibrated (extraction), with "usefulness"
})


def clip01(value: float) -> float:
    return min(1.0, max(0.0, value))


# --------------------------------------------------------------------------- poisoning


def defence_effectiveness(
    asr_none: float, asr_mitigated: float, ca_none: float, ca_mitigated: float
) -> float:
    """DER, from 0 to 1: 0.5 means nothing changed; ASR drops raise it, CA drops lower it."""
    asr_drop = max(0.0, asr_none - asr_mitigated)
    ca_drop = max(0.0, ca_none - ca_mitigated)
    return (asr_drop - ca_drop + 1.0) / 2.0


DER_CALIBRATED_FORMULA = (
    "DER        = [max(0, ASR_none - ASR_mit) - max(0, CA_none - CA_mit) + 1] / 2\n"
    "gained     = clip((DER_mit - DER_random) / (DER_perfect - DER_random), 0, 1)\n"
    "kept_clean = clip(1 - clean_dropped / {max_clean_dropped:g}, 0, 1)\n"
    "score = 100 * gained * kept_clean\n"
    "where 'random' drops as many samples as you did, chosen at random. Retraining is noisy, so its "
    "DER counts as at least 1/2 (no filter's) and at least that of a lucky random filter: one whose "
    "ASR is {luck_sd:g} SD below the mean of {luck_filters} random filters that drop as many samples as there "
    "is poison (one random filter in about 40 is luckier), but this never takes more than half of "
    "the way from random to perfect (so it is measured only when your DER lies between random's and "
    "perfect's). 'perfect' drops exactly the "
    "poison, and clean_dropped is the share of the clean (unpoisoned) training samples you dropped: "
    "dropping {max_clean_dropped_percent:g}% of them scores 0; a clean-accuracy drop of more than "
    "{max_clean_accuracy_drop_points:g} points scores 0"
)


# The DER of keeping everything: no drop in attack success, none in clean accuracy.
NO_FILTER_DER = 0.5
# How lucky a random filter may be before a mitigation's lower attack success counts: this
# many standard deviations of the retrained models' ASR below their mean (one-sided, about
# 1 in 40 for a normal spread). The share of the headroom the luck may take is bounded.
LUCK_SD = 2.0
MAX_LUCK_SHARE = 0.5
# How many random filters the grader retrains to measure that spread, once per lab (or variant).
LUCK_FILTERS = 5


def der_calibrated(
    *,
    asr_none: float,
    ca_none: float,
    asr_mitigated: float,
    ca_mitigated: float,
    asr_random: float,
    ca_random: float,
    asr_perfect: float,
    ca_perfect: float,
    clean_dropped: float,
    max_clean_dropped: float,
    max_clean_accuracy_drop: float,
    asr_lucky: float | None = None,
) -> Score:
    """Score a poisoning defence against a random and a perfect filter (Armory-style calibration),
    times the share of the clean training data it kept.

    The clean-accuracy cap follows TrojanZoo's practice of discarding defences that cost
    more than 5 points of clean accuracy. On redundant data such as MNIST, dropping a third
    of the clean samples costs only a few points of accuracy, so the clean data itself is
    paid for too (the kept-clean factor): a perfect filter drops none and keeps 100.

    `asr_lucky`: the attack success rate of a random filter as lucky as `LUCK_SD` standard
    deviations, from several random filters the grader retrained (None: not measured).
    """
    der_mitigated = defence_effectiveness(asr_none, asr_mitigated, ca_none, ca_mitigated)
    # The random filter's model is retrained once, and a training run can go badly by chance:
    # on a variant, one dropped 4% of the data at random and came out at clean accuracy 0.786
    # against the victim's 0.912, which made a filter that removed 4% of the poison score 18.7.
    # A mitigation must beat no filter (DER 1/2) as well as a random one, so the random
    # filter's DER is never taken below no filter's.
    der_random = max(defence_effectiveness(asr_none, asr_random, ca_none, ca_random), NO_FILTER_DER)
    der_perfect = defence_effectiveness(asr_none, asr_perfect, ca_none, ca_perfect)
    # Retraining alone moves the attack success rate: on poisoning-02 (a weak clean-label
    # backdoor, victim ASR 0.566) twelve models retrained after dropping 4% at random ranged
    # from 0.35 to 0.63, and a filter that dropped 4% at random scored 0-40.8 (mean 21 over 8
    # seeds) against one random filter. An ASR drop counts only beyond what a lucky random
    # filter achieves, but the luck never takes more than MAX_LUCK_SHARE of the headroom, so
    # that a filter short of perfect is still scored on a lab whose backdoor is weak.
    der_lucky = NO_FILTER_DER
    if asr_lucky is not None:
        der_lucky = defence_effectiveness(asr_none, asr_lucky, ca_none, ca_none)
        der_random = max(der_random, min(der_lucky, der_random + MAX_LUCK_SHARE * (der_perfect - der_random)))
    headroom = der_perfect - der_random
    ca_drop = ca_none - ca_mitigated
    gained = clip01((der_mitigated - der_random) / headroom) if headroom > 1e-9 else 0.0
    kept_clean = _share_kept(clean_dropped, max_clean_dropped)
    parts = {
        "der_mitigated": der_mitigated,
        "der_random": der_random,
        "der_lucky": der_lucky,
        "der_perfect": der_perfect,
        "gained": gained,
        "kept_clean": kept_clean,
        "asr_drop": asr_none - asr_mitigated,
        "ca_drop": ca_drop,
        "clean_dropped": clean_dropped,
    }
    _require_finite(parts)
    if ca_drop > max_clean_accuracy_drop + 1e-12:
        return Score(
            0.0,
            parts,
            "der-calibrated",
            capped_by=f"clean accuracy fell {100 * ca_drop:.1f} points "
            f"(more than {100 * max_clean_accuracy_drop:g})",
        )
    return _gained_times_kept(
        "der-calibrated",
        parts,
        gained=gained,
        kept=kept_clean,
        headroom=headroom,
        # The perfect filter is no better than a random one: the attack did not take hold,
        # so there is nothing to defend and no fair way to score.
        no_headroom="the attack had no effect to remove",
        lost="the clean training data you kept",
        drop=clean_dropped,
        max_drop=max_clean_dropped,
    )


def luck_can_change(score: Score) -> bool:
    """Whether measuring the luck of retraining (`der_calibrated`'s `asr_lucky`) could change
    `score`, scored without it.

    The luck only raises DER_random, and never past half the way to DER_perfect. So a
    mitigation no better than a random filter gains 0 with or without it, one at least as good
    as the perfect filter gains 1 either way, and a capped score stays 0: only a gain strictly
    between 0 and 1 can move. The grader retrains the random filters only then.
    """
    if score.capped_by:
        return False
    return 0.0 < score.parts.get("gained", 0.0) < 1.0


def capped_for_review(score: Score, cap: float, because: str) -> Score:
    """`score`, at most `cap`, when the evaluation left a doubt that only a person can settle.

    The measured figure is not certified then, so it does not count in full; the text says
    what it would have been, for the reviewer who clears the doubt.
    """
    if score.total <= cap:
        return score
    restore = f"measured {score.total:.1f}; an instructor's review may restore it"
    return Score(cap, score.parts, score.method, capped_by=f"{because} ({restore})")


def _require_finite(values: dict[str, float]) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            raise ValueError(f"score part '{name}' is not finite: {value}")


# --------------------------------------------------------------------------- inversion

INVERSION_FORMULA = (
    "AA = attack accuracy: the share of classes MIFace recovers from at least one of its starts\n"
    "     (an independent evaluation classifier assigns the reconstruction to the class); a class\n"
    "     whose blank and noise starts are all stuck (vanishing gradients) counts as recovered\n"
    "leakage_removed = clip((AA_none - AA_mit) / (AA_none - AA_floor), 0, 1)\n"
    "utility_kept    = clip(1 - max(0, U_none - U_mit) / {max_utility_drop:g}, 0, 1)\n"
    "score = 100 * leakage_removed * utility_kept\n"
    "where U is the returned model's test accuracy and the floor is chance (1 / number of\n"
    "classes); losing {max_utility_drop_points:g} points of utility scores 0"
)


def inversion_calibrated(
    *,
    attack_accuracy_none: float,
    attack_accuracy_mitigated: float,
    attack_accuracy_floor: float,
    utility_none: float,
    utility_mitigated: float,
    max_utility_drop: float,
) -> Score:
    """Score an inversion defence: the share of the leakage above the floor it removed,
    scaled down linearly by the utility it cost.

    The floor is what the attack recovers when the model reveals nothing it need not
    (chance for the white-box attack). Attack accuracy by an independent evaluation
    classifier is the standard leakage metric of the inversion literature (e.g. Zhang et
    al., CVPR 2020, "The secret revealer").
    """
    headroom = attack_accuracy_none - attack_accuracy_floor
    utility_drop = utility_none - utility_mitigated
    leakage_removed = _share_removed(attack_accuracy_none, attack_accuracy_mitigated, headroom)
    utility_kept = _share_kept(utility_drop, max_utility_drop)
    parts = {
        "leakage_removed": leakage_removed,
        "utility_kept": utility_kept,
        "attack_accuracy_drop": attack_accuracy_none - attack_accuracy_mitigated,
        "utility_drop": utility_drop,
    }
    _require_finite(
        {
            "attack_accuracy_mitigated": attack_accuracy_mitigated,
            "attack_accuracy_floor": attack_accuracy_floor,
            "utility_none": utility_none,
        }
    )
    return _gained_times_kept(
        "leakage-calibrated",
        parts,
        gained=leakage_removed,
        kept=utility_kept,
        headroom=headroom,
        # The undefended model leaks no more than the floor: nothing to defend, no fair score.
        no_headroom="the attack recovered nothing above the floor",
        lost="utility",
        drop=utility_drop,
        max_drop=max_utility_drop,
    )


INVERSION_API_FORMULA = (
    "ID = identification: the chance that the attacker's reconstruction of a user's query is closer\n"
    "     to that user's own image than to another user's image of the same digit (0.5 is chance),\n"
    "     in the class whose users it identifies best\n"
    "LL = log loss of the client's reading of your outputs: probabilities, unreported mass spread\n"
    "     evenly, {client_smoothing:g} of uniform mass mixed in\n"
    "leakage_removed = min over the attacker's views v of\n"
    "                  clip((ID_none,v - ID_mit,v) / (ID_none,v - ID_label_only,v), 0, 1)\n"
    "accuracy_kept   = clip(1 - max(0, ACC_none - ACC_mit) / {max_accuracy_drop:g}, 0, 1)\n"
    "confidence_kept = clip((LL_label_only - LL_mit) / (LL_label_only - LL_none), 0, 1)\n"
    "usefulness      = accuracy_kept * (1 - {confidence_weight:g} + {confidence_weight:g} * "
    "min(1, confidence_kept / {confidence_target:g}))\n"
    "score = 100 * leakage_removed * usefulness\n"
    "where 'none' is the full probability vector, 'label_only' a one-hot label and ACC the accuracy\n"
    "of your argmax; a label-only API scores {label_only_score:g}, and losing {max_accuracy_drop_points:g} "
    "points of accuracy scores 0"
)

# A view of the outputs whose identification on the full API is within this of labels
# alone learned nothing from the scores: it cannot say how much a defence removed. The
# spread of one view's identification over decoder starts was 0.002-0.009 (inversion-02).
MIN_VIEW_HEADROOM = 0.02
# A reading of the answers whose copy on the undefended API is within this of the floor
# learned nothing from the queries: it cannot say how much a defence removed. Fidelity over
# 1,990 test images (extraction-01) has a binomial standard error of about 0.01; between
# seeds the undefended fidelity moved by an SD of 0.034.
MIN_READING_HEADROOM = 0.03


def inversion_api_calibrated(
    *,
    identification_none: Mapping[str, float],
    identification_mitigated: Mapping[str, float],
    identification_label_only: Mapping[str, float],
    accuracy_none: float,
    accuracy_mitigated: float,
    log_loss_none: float,
    log_loss_mitigated: float,
    log_loss_label_only: float,
    max_accuracy_drop: float,
    confidence_weight: float,
    confidence_target: float,
) -> Score:
    """Score a prediction API: leakage removed, times what it is still worth to a client.

    identification_*: per view of the outputs (a way the attacker reads them), the
    identification its reconstructions reach. Each view is calibrated against itself, and
    the view the defence removes least from decides: a re-encoding that blinds one view
    while another sees straight through it removes nothing.

    Calibrated at both ends by the same model: the full probability vector is what leaks
    most and what a client values most; a label-only answer leaks least and keeps only the
    argmax. A defence earns its score by removing what the first leaks while keeping what
    clients bet on (log loss, a proper scoring rule: only calibrated confidences lower it),
    so "labels only" is a floor of leakage, not of the score.
    """
    return _worst_reading_times_usefulness(
        "leakage-confidence-calibrated",
        "leakage_removed",
        none=identification_none,
        mitigated=identification_mitigated,
        floor=identification_label_only,
        min_headroom=MIN_VIEW_HEADROOM,
        no_headroom="the full API let the attacker identify users no better than labels alone",
        usefulness=_api_usefulness(
            accuracy_none=accuracy_none,
            accuracy_mitigated=accuracy_mitigated,
            log_loss_none=log_loss_none,
            log_loss_mitigated=log_loss_mitigated,
            log_loss_label_only=log_loss_label_only,
            max_accuracy_drop=max_accuracy_drop,
            confidence_weight=confidence_weight,
            confidence_target=confidence_target,
        ),
        max_accuracy_drop=max_accuracy_drop,
    )


def _worst_reading_times_usefulness(
    method: str,
    factor: str,
    *,
    none: Mapping[str, float],
    mitigated: Mapping[str, float],
    floor: Mapping[str, float],
    min_headroom: float,
    no_headroom: str,
    usefulness: dict[str, float],
    max_accuracy_drop: float,
) -> Score:
    """A prediction API's score: what it removed, for the reading of its outputs (a view, a
    way to train a copy) it removed least from, times what it is still worth to a client.

    Each reading is calibrated against its own floor; a reading whose undefended value is
    within `min_headroom` of its floor measures only noise and is left out."""
    headrooms = {reading: value - floor[reading] for reading, value in none.items()}
    removed = {
        reading: _share_removed(none[reading], mitigated[reading], headroom)
        for reading, headroom in headrooms.items()
        if headroom > min_headroom
    }
    share_removed = min(removed.values(), default=0.0)
    parts = {
        factor: share_removed,
        **usefulness,
        **{f"{factor}.{reading}": value for reading, value in removed.items()},
    }
    return _gained_times_kept(
        method,
        parts,
        gained=share_removed,
        kept=usefulness["usefulness"],
        headroom=max((headrooms[reading] for reading in removed), default=0.0),
        no_headroom=no_headroom,
        lost="accuracy",
        drop=usefulness["accuracy_drop"],
        max_drop=max_accuracy_drop,
    )


def _api_usefulness(
    *,
    accuracy_none: float,
    accuracy_mitigated: float,
    log_loss_none: float,
    log_loss_mitigated: float,
    log_loss_label_only: float,
    max_accuracy_drop: float,
    confidence_weight: float,
    confidence_target: float,
) -> dict[str, float]:
    """What a prediction API is still worth to a client: the accuracy of its argmax kept,
    and the share of the full API's log-loss advantage over labels alone it kept."""
    accuracy_drop = accuracy_none - accuracy_mitigated
    accuracy_kept = _share_kept(accuracy_drop, max_accuracy_drop)
    advantage = log_loss_label_only - log_loss_none
    # A full API no better than labels in log loss: there is no confidence left to lose.
    confidence_kept = clip01((log_loss_label_only - log_loss_mitigated) / advantage) if advantage > 1e-9 else 1.0
    confidence_factor = 1.0 - confidence_weight + confidence_weight * min(1.0, confidence_kept / confidence_target)
    return {
        "accuracy_kept": accuracy_kept,
        "confidence_kept": confidence_kept,
        "usefulness": accuracy_kept * confidence_factor,
        "accuracy_drop": accuracy_drop,
        "log_loss_rise": log_loss_mitigated - log_loss_none,
    }


# --------------------------------------------------------------------------- extraction


EXTRACTION_FORMULA = (
    "F  = fidelity: the share of held-out test images on which the attacker's copy gives the\n"
    "     victim's answer; one copy per view r: its pages presented one way (as scanned,\n"
    "     binarised, ink matched to its own digits) and your answers read one way (labels,\n"
    "     soft); the most faithful decides\n"
    "LL = log loss of the client's reading of your outputs on honest users' queries:\n"
    "     probabilities, unreported mass spread evenly, {client_smoothing:g} of uniform mass mixed in\n"
    "fidelity_removed = min over the views r of clip((F_none,r - F_mit,r) / (F_none,r - F_floor), 0, 1)\n"
    "accuracy_kept    = clip(1 - max(0, ACC_none - ACC_mit) / {max_accuracy_drop:g}, 0, 1)\n"
    "confidence_kept  = clip((LL_label_only - LL_mit) / (LL_label_only - LL_none), 0, 1)\n"
    "usefulness       = accuracy_kept * (1 - {confidence_weight:g} + {confidence_weight:g} * "
    "min(1, confidence_kept / {confidence_target:g}))\n"
    "score = 100 * fidelity_removed * usefulness\n"
    "where 'none' is the undefended API (full probabilities), 'floor' a copy trained on the\n"
    "attacker's own labelled images alone, ACC the accuracy of your argmax on honest users'\n"
    "queries; the undefended API scores 0, a label-only API at most {label_only_score:g}, and losing\n"
    "{max_accuracy_drop_points:g} points of accuracy scores 0"
)


def extraction_calibrated(
    *,
    fidelity_none: Mapping[str, float],
    fidelity_mitigated: Mapping[str, float],
    fidelity_floor: float,
    accuracy_none: float,
    accuracy_mitigated: float,
    log_loss_none: float,
    log_loss_mitigated: float,
    log_loss_label_only: float,
    max_accuracy_drop: float,
    confidence_weight: float,
    confidence_target: float,
) -> Score:
    """Score a prediction API against model extraction: the copy's fidelity removed, from
    the undefended API down to what the attacker's own labelled images give it alone, times
    what the API is still worth to honest clients.

    fidelity_*: per reading of the answers (labels, soft). Each reading is calibrated
    against the same floor, and the one the defence removes least from decides: rounding
    or flattening the scores leaves the labels, and a copy trained on labels, as they were.
    """
    return _worst_reading_times_usefulness(
        "fidelity-confidence-calibrated",
        "fidelity_removed",
        none=fidelity_none,
        mitigated=fidelity_mitigated,
        floor=dict.fromkeys(fidelity_none, fidelity_floor),
        min_headroom=MIN_READING_HEADROOM,
        no_headroom="the undefended API taught the copy no more than the attacker's own labelled images",
        usefulness=_api_usefulness(
            accuracy_none=accuracy_none,
            accuracy_mitigated=accuracy_mitigated,
            log_loss_none=log_loss_none,
            log_loss_mitigated=log_loss_mitigated,
            log_loss_label_only=log_loss_label_only,
            max_accuracy_drop=max_accuracy_drop,
            confidence_weight=confidence_weight,
            confidence_target=confidence_target,
        ),
        max_accuracy_drop=max_accuracy_drop,
    )


# --------------------------------------------------------------------------- membership

MEMBERSHIP_FORMULA = (
    "ADV = membership advantage: max over thresholds of |TPR - FPR| on members and non-members\n"
    "      you never see, for the attack of the suite that finds the most\n"
    "leakage_removed = clip((ADV_none - ADV_mit) / (ADV_none - ADV_floor), 0, 1)\n"
    "utility_kept    = clip(1 - max(0, ACC_none - ACC_mit) / {max_accuracy_drop:g}, 0, 1)\n"
    "score = 100 * leakage_removed * utility_kept\n"
    "where 'none' is the undefended victim, 'floor' the same attacks against a model trained on\n"
    "other records (to it both groups are non-members: what they find there is noise), ACC the\n"
    "test accuracy; losing {max_accuracy_drop_points:g} points of accuracy scores 0"
)


def membership_calibrated(
    *,
    advantage_none: float,
    advantage_mitigated: float,
    advantage_floor: float,
    accuracy_none: float,
    accuracy_mitigated: float,
    max_accuracy_drop: float,
) -> Score:
    """Score a membership-inference defence: the share of the advantage above the noise floor
    it removed, times the test accuracy it kept.

    The advantage (Yeom et al., CSF 2018: TPR - FPR, here in either direction) is a worst case over attacks and
    thresholds, so it is positive even for a model that leaks nothing; the floor is that
    same worst case against a model to which neither group belongs.
    """
    headroom = advantage_none - advantage_floor
    accuracy_drop = accuracy_none - accuracy_mitigated
    leakage_removed = _share_removed(advantage_none, advantage_mitigated, headroom)
    utility_kept = _share_kept(accuracy_drop, max_accuracy_drop)
    parts = {
        "leakage_removed": leakage_removed,
        "utility_kept": utility_kept,
        "advantage_drop": advantage_none - advantage_mitigated,
        "accuracy_drop": accuracy_drop,
    }
    _require_finite({"advantage_floor": advantage_floor, "accuracy_none": accuracy_none})
    return _gained_times_kept(
        "advantage-calibrated",
        parts,
        gained=leakage_removed,
        kept=utility_kept,
        headroom=headroom,
        # The victim leaks no more than a model that never saw either group: nothing to defend.
        no_headroom="the attacks found no more membership in the victim than the noise floor",
        lost="test accuracy",
        drop=accuracy_drop,
        max_drop=max_accuracy_drop,
    )


# --------------------------------------------------------------------------- evasion


ROBUST_ACCURACY_FORMULA = (
    "RA = worst-case robust accuracy at {threat}: an attacked test image counts only if the model\n"
    "     classifies it correctly and no attack of the suite ({attacks}) fools it\n"
    "robust = clip((RA_mit - RA_none) / ({target:g} - RA_none), 0, 1)\n"
    "clean = clip(1 - max(0, CA_none - CA_mit) / {max_clean_accuracy_drop:g}, 0, 1)\n"
    "score = 100 * robust * clean\n"
    "where 'none' is the undefended victim, CA the clean test accuracy, and {target:g} the robust\n"
    "accuracy that earns full marks; a clean-accuracy drop of {max_clean_accuracy_drop_points:g} "
    "points or more scores 0.\n"
    "If a gradient-masking flag still stands after the grader's escalation, the score is at most\n"
    "{flag_cap:g} until an instructor reviews the run"
)


def robust_accuracy_calibrated(
    *,
    ra_none: float,
    ra_mitigated: float,
    ca_none: float,
    ca_mitigated: float,
    target_robust_accuracy: float,
    max_clean_accuracy_drop: float,
) -> Score:
    """Score an evasion defence: robust accuracy gained towards a target, times clean accuracy kept.

    Robust accuracy is the worst case over an attack suite, as RobustBench and AutoAttack
    report it; the undefended victim anchors 0, so a defence is paid only for what it adds.
    """
    headroom = target_robust_accuracy - ra_none
    ca_drop = ca_none - ca_mitigated
    robust_gained = clip01((ra_mitigated - ra_none) / headroom) if headroom > 1e-9 else 0.0
    clean_kept = _share_kept(ca_drop, max_clean_accuracy_drop)
    parts = {
        "robust_gained": robust_gained,
        "clean_kept": clean_kept,
        "robust_accuracy_gain": ra_mitigated - ra_none,
        "clean_accuracy_drop": ca_drop,
    }
    return _gained_times_kept(
        "robust-accuracy-calibrated",
        parts,
        gained=robust_gained,
        kept=clean_kept,
        headroom=headroom,
        # The undefended victim already reaches the target: nothing to defend, no fair score.
        no_headroom="the undefended victim already reaches the target",
        lost="clean accuracy",
        drop=ca_drop,
        max_drop=max_clean_accuracy_drop,
    )


# --------------------------------------------------------------------------- shared


def _share_removed(none: float, mitigated: float, headroom: float) -> float:
    """The share of `headroom` (how far `none` is above its floor) by which `mitigated` is lower."""
    return clip01((none - mitigated) / headroom) if headroom > 1e-9 else 0.0


def _share_kept(drop: float, max_drop: float) -> float:
    """1 with nothing lost, falling linearly to 0 at a loss of `max_drop` (gains count as 0)."""
    return clip01(1.0 - max(0.0, drop) / max_drop)


def _gained_times_kept(
    method: str,
    parts: dict[str, float],
    *,
    gained: float,
    kept: float,
    headroom: float,
    no_headroom: str,
    lost: str,
    drop: float,
    max_drop: float,
) -> Score:
    """score = 100 * gained * kept, saying what capped it when it is 0 for a reason."""
    _require_finite(parts)
    if headroom <= 1e-9:
        return Score(0.0, parts, method, capped_by=no_headroom)
    if kept == 0.0:
        return Score(
            0.0, parts, method, capped_by=f"{lost} fell {100 * drop:.1f} points ({100 * max_drop:g} or more scores 0)"
        )
    return Score(100.0 * gained * kept, parts, method)
