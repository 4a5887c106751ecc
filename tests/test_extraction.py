"""Model extraction, as a trainee meets it: ART's Copycat CNN copies an undefended API from
answers to out-of-distribution queries, transforms that keep the labels stop nothing, and
a defence that changes the labels the attacker's queries get keeps honest users' answers.

The fast tests run the real family in this process (inputs folder, trainee function,
strict result, grader) on a smaller attack: fewer queries, fewer copies, fewer steps. The
shipped scenario runs end to end through the CLI (slow).
"""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_json
from secureml import runner, scenario
from secureml.cache import Cache
from secureml.errors import MitigationError
from secureml.families.base import RunContext

GAMING = REPO / "tests" / "gaming"
LAB = REPO / "labs" / "extraction-01"
# The shipped victim (shared with the CLI tests through the session cache); a smaller attack:
# the shipped budget and steps (fewer made the copy on labels no better than the floor, 0.48
# against 0.46, once the queries were held-out scans), but copies on the whole budget only
# (eight views: four presentations of the pages, two readings of the answers).
FASTER_ATTACK = {"curve": []}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread: on a shared 2-core machine two OpenMP threads per process made
    the copies several times slower (inversion tests measured 19x at a load of 5)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _variant(folder: Path, **attack) -> scenario.ScenarioBase:
    data = yaml.safe_load((REPO / "scenarios" / "extraction-01.yaml").read_text())
    data["attack"].update({**FASTER_ATTACK, **attack})
    for role in ("starter", "solution"):
        data["mitigation"][role] = str(LAB / Path(data["mitigation"][role]).name)
    path = folder / "extraction-01.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return scenario.load(path)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> scenario.ScenarioBase:
    return _variant(tmp_path_factory.mktemp("extraction"))


def _run(loaded, mitigation: Path | None = None) -> runner.RunResult:
    return runner.run(loaded, mitigation=mitigation, ctx=RunContext(cache=Cache()))


def test_an_undefended_api_lets_the_copy_agree_with_the_model_far_above_its_own_labels(small):
    evaluation = _run(small).evaluation
    metrics = evaluation.metrics
    # Measured on the shipped scenario (floor, labels, soft): 0.466, 0.677 and 0.788.
    assert metrics["victim.fidelity"] >= metrics["floor.fidelity"] + 0.05
    fidelity = evaluation.details["fidelity_by_reading"]["victim"]
    assert fidelity["labels"] >= metrics["floor.fidelity"] + 0.03, "labels alone must teach the copy"
    assert evaluation.score.total == 0, "no mitigation earns nothing"
    assert evaluation.score.capped_by == "", "the 0 is measured, not capped"


def test_the_reference_answers_the_attackers_queries_with_wrong_labels_and_scores_high(small):
    evaluation = _run(small, LAB / "solution.py").evaluation
    metrics = evaluation.metrics
    assert evaluation.score.total >= 80
    assert metrics["mitigated.fidelity"] <= metrics["floor.fidelity"]
    assert metrics["mitigated.accuracy"] >= metrics["victim.accuracy"] - 0.02
    assert small.hints.success in evaluation.feedback


@pytest.mark.parametrize(
    "gaming",
    [
        pytest.param("extraction_constant.py", id="constant-answer"),
        pytest.param("extraction_untrained_model.py", id="untrained-model"),
        pytest.param("extraction_reverse_sigmoid.py", id="ART-reverse-sigmoid"),
        pytest.param(LAB / "mitigation.py", id="starter-rounded-top-1"),
        pytest.param("extraction_grey_ink.py", id="one-statistic-of-the-attackers-pages"),
        pytest.param("extraction_jitter.py", id="tiny-jitter-luck-of-retraining"),
    ],
)
def test_an_api_that_is_useless_or_keeps_the_labels_scores_near_zero(small, gaming):
    evaluation = _run(small, GAMING / gaming).evaluation
    # Measured 0.0 for each on the shipped scenario.
    assert evaluation.score.total <= 10
    assert evaluation.feedback, "a low score comes with feedback"


def test_the_attacker_presents_its_pages_four_ways_each_with_the_whole_budget(small):
    """An attacker who has read the defence changes what it keys on: binarised pages have no
    grey left, ink-matched pages have the users' grey levels in their own shapes."""
    import numpy as np

    from secureml.families.extraction.attacks import INK, PRESENTATIONS

    stage = runner.prepare_stage(small, RunContext(cache=Cache()))[2]
    rows = stage.attacker_rows
    assert list(rows) == ["as-scanned", "binarised", "ink-matched", "sharpened"] == list(PRESENTATIONS)
    assert all(len(part) == small.attack.budget for part in rows.values())
    assert len(np.unique(np.concatenate([*rows.values(), stage.user_rows]))) == len(stage.queries)
    binarised = stage.queries[rows["binarised"]]
    assert set(np.unique(binarised)) <= {0.0, 1.0}
    matched, own = stage.queries[rows["ink-matched"]], stage.x_labelled
    # The same ink pixels as the pages as scanned, at the attacker's own digits' ink levels.
    assert np.array_equal(matched > INK, stage.queries[rows["as-scanned"]] > INK)
    assert abs(np.median(matched[matched > INK]) - np.median(own[own > INK])) < 0.05
    # Sharpened pages are ink-matched too: the attacker's own digits' ink levels.
    sharpened = stage.queries[rows["sharpened"]]
    assert abs(np.median(sharpened[sharpened > INK]) - np.median(own[own > INK])) < 0.05
    assert len(stage.views) == 8


def test_an_api_answering_logits_or_the_wrong_shape_is_an_invalid_result(small, tmp_path):
    for api, problem in (
        ("model(torch.from_numpy(x))", r"in \[0, 1\]"),
        ("tools.probabilities(model, x)[:, :3]", "shape"),
    ):
        broken = tmp_path / "broken.py"
        broken.write_text(
            textwrap.dedent(f"""
            import torch

            def protect(model, tools):
                return lambda x: {api}
            """)
        )
        with pytest.raises(MitigationError, match=problem) as raised:
            _run(small, broken)
        assert raised.value.status == "invalid-result"


def test_automatic_variants_draw_another_digit_size_and_scanner_that_always_validate(tmp_path):
    public = scenario.load("extraction-01")
    sides, scanners = set(), set()
    for seed in range(30):
        overrides = public.variant_overrides(random.Random(seed))
        attack = overrides["attack"]
        assert attack["digit_side"] != public.attack.digit_side
        assert (attack["scan"], attack["levels"]) != (public.attack.scan, public.attack.levels)
        path = tmp_path / f"variant-{seed}.yaml"
        path.write_text(yaml.safe_dump(overrides))
        drawn = scenario.apply_overrides(public, path).attack
        assert (drawn.digit_side, drawn.scan, drawn.levels) == (attack["digit_side"], attack["scan"], attack["levels"])
        sides.add(drawn.digit_side)
        scanners.add((drawn.scan, drawn.levels))
    assert len(sides) > 2 and len(scanners) > 5


def test_an_attacker_drawing_its_digits_too_large_for_the_images_is_refused(tmp_path):
    from secureml.errors import ConfigError

    with pytest.raises(ConfigError, match="digit_side"):
        _variant(tmp_path, digit_side=30)
    with pytest.raises(ConfigError, match=r"attack\.scan"):
        _variant(tmp_path, digit_side=10, scan=12)


# --------------------------------------------------------------------------- end to end, CLI


@pytest.mark.slow
def test_run_extraction_with_the_reference_solution_scores_high_and_draws_the_fidelity_per_view(tmp_path):
    payload = run_json("extraction-01", "--mitigation", str(LAB / "solution.py"), out=tmp_path)
    assert payload["score"] >= 80
    assert (tmp_path / "fidelity.png").stat().st_size > 10_000


@pytest.mark.slow
def test_run_extraction_reference_on_a_hidden_variant_still_scores_high(tmp_path):
    # Variant seed 2: another seed, other labelled images and queries, another digit size (16)
    # and another scanner (6x6 pixels, 33 grey levels).
    payload = run_json("extraction-01", "--variant-seed", "2", "--mitigation", str(LAB / "solution.py"), out=tmp_path)
    assert payload["score"] >= 80


# --------------------------------------------------------------------------- the score (pure)

UNDEFENDED = {"labels": 0.63, "soft": 0.72}
FULL_USE = {
    "fidelity_floor": 0.48,
    "accuracy_none": 0.95,
    "log_loss_none": 0.17,
    "log_loss_label_only": 0.33,
    "max_accuracy_drop": 0.1,
    "confidence_weight": 0.5,
    "confidence_target": 0.5,
}


def _score(mitigated: dict[str, float], accuracy: float = 0.95, log_loss: float = 0.17):
    from secureml.scoring import extraction_calibrated

    return extraction_calibrated(
        fidelity_none=UNDEFENDED,
        fidelity_mitigated=mitigated,
        accuracy_mitigated=accuracy,
        log_loss_mitigated=log_loss,
        **FULL_USE,
    )


def test_the_score_is_zero_undefended_and_100_at_the_floor_with_every_answer_kept():
    assert _score(UNDEFENDED).total == 0
    assert _score({"labels": 0.48, "soft": 0.40}).total == pytest.approx(100)


def test_hiding_the_confidences_while_the_labels_still_teach_the_copy_removes_nothing():
    # Top-1 or ReverseSigmoid: the soft copy falls to the labels' level, the labels copy stays.
    score = _score({"labels": 0.63, "soft": 0.63}, log_loss=0.33)
    assert score.parts["fidelity_removed.soft"] > 0.3
    assert score.parts["fidelity_removed"] == 0 == score.total


def test_the_extraction_score_is_100_times_the_product_of_its_two_factors():
    import math

    from secureml.scoring import SCORE_FACTORS

    score = _score({"labels": 0.55, "soft": 0.6}, accuracy=0.93, log_loss=0.25)
    factors = [value for name, value in score.parts.items() if name in SCORE_FACTORS]
    assert len(factors) == 2 and 0 < score.total < 100
    assert score.total == pytest.approx(100 * math.prod(factors))
