"""Model inversion, as a trainee meets it: the attacks draw recognisable digits from an
undefended model, a defence lowers what they recover, and the grader takes only results
it can check.

The fast tests run the real family in this process (inputs folder, trainee function,
strict result, grader) on digits variants of the shipped scenarios: same schema, 8x8
images, smaller numbers. The shipped scenarios run end to end through the CLI (slow).
"""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import REPO, VARIANT_SEED, run_json
from secureml import runner, scenario
from secureml.cache import Cache
from secureml.errors import MitigationError
from secureml.families.base import RunContext
from secureml.families.inversion.family import closing_hint
from secureml.scoring import Score

SHIPPED = ["inversion-01", "inversion-02"]
GAMING = REPO / "tests" / "gaming"

# The digits variants: same schema, 8x8 images, smaller numbers. inversion-01's evaluator is
# trained once per session (its cache key is images + recipe).
DIGITS = {
    "inversion-01": {
        "dataset": {"name": "digits", "train_size": 900, "test_size": 897},
        # 400 + 300 held out leave 197 digits for the test set (the schema wants 100).
        "holdout": {"evaluator": 400, "auxiliary": 300},
        "evaluator": {"arch": "cnn", "epochs": 30, "batch_size": 64, "learning_rate": 0.003, "optimizer": "adam"},
    },
    "inversion-02": {
        "dataset": {"name": "digits", "train_size": 900, "test_size": 897},
        # 300 for the attacker (about 150 once the secret classes are gone), 597 users' queries.
        "holdout": {"auxiliary": 300},
    },
}
# What each variant changes in the shipped attack, to keep it to seconds.
FASTER_ATTACK = {
    # 8x8 digits need far fewer steps than 28x28 ones.
    "inversion-01": {"max_iter": 100},
    # About 150 known digits: batches of 32 give the decoder 5 steps an epoch, not 3.
    "inversion-02": {"batch_size": 32},
}
CHANCE = 0.1  # ten digit classes


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread for the in-process runs: 8x8 models gain nothing from a second one,
    and on a shared 2-core machine two OpenMP threads per process made the fast tests of
    this file 19 times slower (280 s against 15 s, measured at a load average of 5)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _digits_variant(folder: Path, scenario_id: str, **changes) -> scenario.ScenarioBase:
    """A shipped inversion scenario on scikit-learn's digits, written where tests can load it."""
    data = yaml.safe_load((REPO / "scenarios" / f"{scenario_id}.yaml").read_text())
    data.update(DIGITS[scenario_id])
    data["attack"].update(FASTER_ATTACK[scenario_id])
    data.update(changes)
    for role in ("starter", "solution"):
        data["mitigation"][role] = str(REPO / "labs" / scenario_id / Path(data["mitigation"][role]).name)
    path = folder / f"{scenario_id}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return scenario.load(path)


@pytest.fixture(scope="module")
def white_box(tmp_path_factory) -> scenario.ScenarioBase:
    return _digits_variant(tmp_path_factory.mktemp("white-box"), "inversion-01")


@pytest.fixture(scope="module")
def query_only(tmp_path_factory) -> scenario.ScenarioBase:
    return _digits_variant(tmp_path_factory.mktemp("query-only"), "inversion-02")


def _mitigation(folder: Path, source: str) -> Path:
    path = folder / "mine.py"
    path.write_text(textwrap.dedent(source))
    return path


def _run(loaded, mitigation: Path | None = None, *, cache: Cache | None = None) -> runner.RunResult:
    return runner.run(loaded, mitigation=mitigation, ctx=RunContext(cache=cache or Cache()))


# --------------------------------------------------------------------------- white-box: MIFace


def test_miface_recovers_every_digit_from_an_undefended_model(white_box):
    evaluation = _run(white_box).evaluation
    # Measured 1.0 on this variant (and on inversion-01 itself); chance is 0.1.
    assert evaluation.metrics["victim.attack_accuracy"] >= 6 * CHANCE
    assert evaluation.metrics["victim.utility"] > 0.9
    assert evaluation.score.total == 0, "no mitigation earns nothing"
    assert not evaluation.flags, "MIFace must reach high confidence on an undefended model"


def test_a_model_whose_units_are_dead_at_the_blank_start_scores_near_zero_and_is_flagged(white_box):
    # Its first-layer units are all off on blank and faintly noisy images: MIFace's usual
    # starts. It kept its accuracy and scored 97.5 when those were the only starts.
    evaluation = _run(white_box, GAMING / "inversion_dead_units.py").evaluation
    assert evaluation.metrics["mitigated.utility"] >= evaluation.metrics["victim.utility"] - 0.02
    assert evaluation.score.total <= 10
    assert evaluation.flags and "count as recovered" in evaluation.flags[0]
    assert evaluation.details["blinded_classes"], "the classes MIFace could not move on are named"
    assert white_box.hints.success not in evaluation.feedback, "no success hint beside a flag"


def test_no_success_hint_is_ever_given_beside_a_flag():
    high = Score(100.0, {}, "leakage-calibrated")
    assert closing_hint(high, [], [], "Well done.") == ["Well done."]
    assert closing_hint(high, [], ["MIFace was stuck"], "Well done.") == []
    assert closing_hint(Score(50.0, {}, "leakage-calibrated"), [], [], "Well done.") == []


# --------------------------------------------------------------------------- query-only: the inversion network


def test_the_inversion_network_identifies_users_from_full_probabilities(query_only):
    metrics = _run(query_only).evaluation.metrics
    # Measured on this variant, in the worst class: 0.95 from full probabilities, 0.63 from
    # labels alone (chance is 0.5; a label also gives away the users the model misreads).
    assert metrics["victim.identification"] >= metrics["label_only.identification"] + 0.15
    assert metrics["score"] == 0, "no mitigation earns nothing"


@pytest.mark.parametrize(
    "gaming",
    [
        pytest.param("inversion_scaled_runner_ups.py", id="runners-up-times-1e-12"),
        pytest.param("inversion_shifted_scores.py", id="uniform-shift"),
        pytest.param("inversion_permuted_runner_ups.py", id="runners-up-in-reverse-order"),
    ],
)
def test_reencoding_the_outputs_in_a_way_the_attacker_can_undo_scores_no_better_than_undefended(
    query_only, gaming
):
    evaluation = _run(query_only, GAMING / gaming).evaluation
    # Measured 0.0 for all three on this variant; the runners-up times 1e-12 scored 100 when
    # the attacker read log(max(p, 1e-6)) alone.
    assert evaluation.score.total <= 10
    assert evaluation.score.parts["leakage_removed"] <= 0.1, "some reading sees straight through it"


def test_a_label_only_api_scores_clearly_below_the_reference_that_keeps_confidences(query_only):
    label_only = _run(query_only, GAMING / "inversion_label_only.py").evaluation
    reference = _run(query_only, query_only.solution_path).evaluation
    # Measured 50.0 and 100.0 on this variant. Both leak no more than labels; only the
    # reference keeps what clients bet on.
    assert label_only.score.parts["leakage_removed"] == pytest.approx(1.0)
    assert label_only.score.parts["confidence_kept"] == pytest.approx(0.0)
    assert label_only.score.total <= 100 * (1 - query_only.scoring.confidence_weight) + 1e-9
    assert reference.score.total >= 80
    assert reference.score.total >= label_only.score.total + 25
    assert reference.metrics["mitigated.accuracy"] == reference.metrics["victim.accuracy"]


def test_automatic_variants_draw_other_secret_classes_that_always_validate(tmp_path):
    public = scenario.load("inversion-02")
    drawn = set()
    for seed in range(50):
        overrides = public.variant_overrides(random.Random(seed))
        secret = overrides["attack"]["secret_classes"]
        assert len(secret) == len(public.attack.secret_classes) == len(set(secret))
        path = tmp_path / f"variant-{seed}.yaml"
        path.write_text(yaml.safe_dump(overrides))
        assert scenario.apply_overrides(public, path).attack.secret_classes == secret
        drawn.add(tuple(secret))
    assert len(drawn) > 10, "variants must not keep returning the public secret classes"


def test_an_api_that_hides_only_the_public_secret_classes_scores_near_zero_here_and_on_a_variant(
    query_only, tmp_path
):
    # Labels only for the public secret classes, full probabilities for every other answer:
    # the other classes' users stay exposed, to this attacker and to one that lacks them.
    overrides = tmp_path / "variant.yaml"
    overrides.write_text("attack:\n  secret_classes: [5, 6, 7, 8, 9]\n")
    for loaded in (query_only, scenario.apply_overrides(query_only, overrides)):
        evaluation = _run(loaded, GAMING / "inversion_hard_coded_secret_classes.py").evaluation
        # Measured 3.4 on the public variant.
        assert evaluation.score.total <= 10


# --------------------------------------------------------------------------- strict results


@pytest.mark.parametrize(
    ("api", "problem"),
    [
        pytest.param("np.full((len(x), tools.num_classes), np.nan)", "NaN", id="nan"),
        pytest.param("model(torch.from_numpy(x))", r"in \[0, 1\]", id="logits"),
        pytest.param("tools.probabilities(model, x).argmax(axis=1)", r"got float32 \(100,\)", id="labels-not-vectors"),
        pytest.param("tools.probabilities(model, x)[:, :3]", r"got float32 \(100, 3\)", id="too-few-classes"),
    ],
)
def test_an_api_answering_nan_logits_or_the_wrong_shape_is_an_invalid_result(query_only, tmp_path, api, problem):
    broken = _mitigation(
        tmp_path,
        f"""
        import numpy as np
        import torch

        def protect(model, tools):
            return lambda x: {api}
        """,
    )
    with pytest.raises(MitigationError, match=problem) as raised:
        _run(query_only, broken)
    assert raised.value.status == "invalid-result"


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        pytest.param(
            "nn.Sequential(nn.Flatten(), nn.Linear(64, tools.num_classes))", "architecture", id="a-linear-model"
        ),
        pytest.param("tools.build().double()", "float64", id="double-precision"),
    ],
)
def test_train_returning_a_model_the_victim_architecture_cannot_load_is_an_invalid_result(
    white_box, tmp_path, model, problem
):
    other = _mitigation(
        tmp_path,
        f"""
        from torch import nn

        def train(x, y, tools):
            return {model}
        """,
    )
    with pytest.raises(MitigationError, match=problem) as raised:
        _run(white_box, other)
    assert raised.value.status == "invalid-result"


# --------------------------------------------------------------------------- reproducibility


def test_same_seed_twice_gives_identical_inversion_metrics_without_cache(tmp_path):
    loaded = _digits_variant(tmp_path, "inversion-02", seed=7)
    # Everything retrained both times: the victim and every inversion network.
    first = _run(loaded, cache=Cache(enabled=False)).evaluation
    second = _run(loaded, cache=Cache(enabled=False)).evaluation
    assert first.metrics == second.metrics
    assert first.details == second.details


# --------------------------------------------------------------------------- end to end, CLI


@pytest.mark.slow
@pytest.mark.parametrize("scenario_id", SHIPPED)
def test_run_inversion_without_mitigation_scores_near_zero(scenario_id, tmp_path):
    payload = run_json(scenario_id, out=tmp_path)
    assert payload["score"] <= 5
    # Not capped: the attack recovered something above the floor, so the 0 is measured.
    assert payload["score_capped_by"] == ""


@pytest.mark.slow
@pytest.mark.parametrize("scenario_id", SHIPPED)
def test_run_inversion_with_the_reference_solution_scores_high(scenario_id, tmp_path):
    payload = run_json(scenario_id, "--mitigation", str(REPO / "labs" / scenario_id / "solution.py"), out=tmp_path)
    assert payload["score"] >= 80
    assert not payload["flags"]
    assert (tmp_path / "inversion.png").stat().st_size > 10_000


@pytest.mark.slow
def test_run_inversion_01_reference_scores_high_on_an_automatic_variant(tmp_path):
    """A graded score is the lower of the public run and the variant's. Variant 2 changes the
    seed and MIFace's starts and step (noise in [0, 0.12] and [0, 0.47], step 0.05, 3 of the
    attacker's images): measured 100 (attack accuracy 0.0, test accuracy 0.941 -> 0.954). The
    trapdoor reference before (blends 0.1-0.3) scored 62-72 on other variants' seeds."""
    payload = run_json("inversion-01", "--mitigation", str(REPO / "labs" / "inversion-01" / "solution.py"),
                       "--variant-seed", str(VARIANT_SEED), out=tmp_path)
    assert payload["score"] >= 80
    assert not payload["flags"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "scenario_id",
    [
        "inversion-01",
        "inversion-02",
    ],
)
def test_run_inversion_starter_runs_and_scores_low(scenario_id, tmp_path):
    payload = run_json(scenario_id, "--mitigation", str(REPO / "labs" / scenario_id / "mitigation.py"), out=tmp_path)
    assert payload["score"] < 30
    assert payload["feedback"], "a low score must come with feedback"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scenario_id", "gaming"),
    [
        pytest.param("inversion-01", "inversion_dead_units.py", id="inversion-01-dead-units"),
        pytest.param("inversion-02", "inversion_scaled_runner_ups.py", id="inversion-02-runners-up-times-1e-12"),
        pytest.param("inversion-02", "inversion_shifted_scores.py", id="inversion-02-uniform-shift"),
        pytest.param("inversion-02", "inversion_permuted_runner_ups.py", id="inversion-02-runners-up-reversed"),
    ],
)
def test_run_inversion_gaming_submission_scores_near_zero(scenario_id, gaming, tmp_path):
    # The two submissions issue 11 found scoring 97.5 (flagged) and 100 on the public labs,
    # and two more re-encodings the attacker can undo (measured 0.6 and 0.3 on the shipped lab).
    payload = run_json(scenario_id, "--mitigation", str(GAMING / gaming), out=tmp_path)
    assert payload["score"] <= 10
    hints = yaml.safe_load((REPO / "scenarios" / f"{scenario_id}.yaml").read_text())["hints"]
    assert hints["success"].strip() not in [note.strip() for note in payload["feedback"]]


@pytest.mark.slow
def test_run_inversion_02_label_only_scores_clearly_below_the_reference(tmp_path):
    label_only = run_json("inversion-02", "--mitigation", str(GAMING / "inversion_label_only.py"), out=tmp_path)
    reference = run_json("inversion-02", "--mitigation", str(REPO / "labs" / "inversion-02" / "solution.py"),
                         out=tmp_path)
    assert label_only["score"] <= 50.0 + 1e-6
    assert reference["score"] >= label_only["score"] + 25
