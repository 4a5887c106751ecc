"""End to end: `secureml run` on the poisoning labs, as a trainee would type it."""

from __future__ import annotations

import json

import pytest

from conftest import REPO, run_json, secureml

LAB = REPO / "labs" / "poisoning-01"


def _tiny_variant(tmp_path) -> str:
    """poisoning-01 shrunk to seconds: fewer images, two epochs, no ART baselines."""
    text = (REPO / "scenarios" / "poisoning-01.yaml").read_text()
    text = text.replace("../labs/", f"{REPO}/labs/")
    text = text.replace("train_size: 4000", "train_size: 1200").replace("test_size: 1000", "test_size: 300")
    text = text.replace("epochs: 6", "epochs: 2").replace(
        "baselines: [activation-defence, spectral-signature]", "baselines: []"
    )
    path = tmp_path / "poisoning-01.yaml"
    path.write_text(text[: text.index("expected:")])
    return str(path)


@pytest.mark.slow
def test_run_poisoning_01_without_mitigation_scores_near_zero(tmp_path):
    payload = run_json("poisoning-01", out=tmp_path)
    assert payload["score"] <= 2.0
    metrics = payload["metrics"]
    assert metrics["victim.attack_success_rate"] > 0.9, "the backdoor must take hold"
    assert metrics["victim.clean_accuracy"] > 0.9


@pytest.mark.slow
def test_run_poisoning_01_with_the_reference_solution_scores_high(tmp_path):
    payload = run_json("poisoning-01", "--mitigation", str(LAB / "solution.py"), out=tmp_path)
    assert payload["score"] >= 80
    assert payload["metrics"]["mitigated.attack_success_rate"] < 0.05
    assert (tmp_path / "triggers.png").stat().st_size > 10_000
    # Provenance recorded with every result.
    for key in ("seed", "config_sha256", "data_sha256", "versions", "threads", "timings_s"):
        assert payload[key], key
    assert payload["versions"]["torch"] and payload["versions"]["art"]
    # The baselines trainees compete against are in the table.
    conditions = [row["condition"] for row in payload["rows"]]
    assert "ART activation-defence" in conditions and "ART spectral-signature" in conditions


@pytest.mark.slow
def test_run_poisoning_01_starter_runs_and_scores_low(tmp_path):
    payload = run_json("poisoning-01", "--mitigation", str(LAB / "mitigation.py"), out=tmp_path)
    assert payload["score"] < 20
    assert payload["feedback"], "a low score must come with feedback"


@pytest.mark.slow
def test_run_poisoning_02_reference_beats_starter(tmp_path):
    lab = REPO / "labs" / "poisoning-02"
    solution = run_json("poisoning-02", "--mitigation", str(lab / "solution.py"), out=tmp_path / "s")
    starter = run_json("poisoning-02", "--mitigation", str(lab / "mitigation.py"), out=tmp_path / "m")
    none = run_json("poisoning-02", out=tmp_path / "n")
    assert solution["score"] >= 80
    assert starter["score"] < 20
    assert none["score"] <= 2.0


@pytest.mark.slow
def test_second_run_reuses_the_cached_victim(tmp_path, fresh_cache):
    first = run_json("poisoning-01", out=tmp_path / "a")
    second = run_json("poisoning-01", out=tmp_path / "b")
    assert first["cache"]["victims"]["misses"] > 0
    assert second["cache"]["victims"]["misses"] == 0, "nothing may be retrained on a warm cache"
    assert second["cache"]["poisoned"]["hits"] == 1
    assert second["timings_s"]["prepare"] < first["timings_s"]["prepare"]
    assert second["metrics"] == first["metrics"]


def test_same_seed_twice_gives_identical_metrics_without_cache(tmp_path):
    scenario = _tiny_variant(tmp_path)
    first = run_json(scenario, "--no-cache", "--seed", "7", out=tmp_path / "a")
    second = run_json(scenario, "--no-cache", "--seed", "7", out=tmp_path / "b")
    assert first["metrics"] == second["metrics"]
    assert first["seed"] == 7 and first["data_sha256"] == second["data_sha256"]


def test_seeds_option_reports_mean_and_std(tmp_path):
    scenario = _tiny_variant(tmp_path)
    payload = run_json(scenario, "--seeds", "2", "--mitigation", str(LAB / "solution.py"), out=tmp_path)
    assert payload["seeds"] == [1234, 1235]
    assert set(payload["mean"]) == set(payload["std"])
    assert len(payload["runs"]) == 2
    assert [run["seed"] for run in payload["runs"]] == [1234, 1235]
    assert payload["runs"][0]["metrics"] != payload["runs"][1]["metrics"]


def test_broken_submission_gets_one_readable_message(tmp_path):
    broken = tmp_path / "mine.py"
    broken.write_text("def sanitize(x, y, tools):\n    return x[\n")
    result = secureml("run", "poisoning-01", "--mitigation", str(broken), "--out", str(tmp_path))
    assert result.returncode == 4
    assert "syntax error at line" in result.stderr and str(broken) in result.stderr
    assert "Traceback" not in result.stderr


def test_submission_without_the_function_names_it(tmp_path):
    wrong = tmp_path / "mine.py"
    wrong.write_text("def clean(x, y):\n    return []\n")
    result = secureml("run", "poisoning-01", "--mitigation", str(wrong), "--out", str(tmp_path))
    assert result.returncode == 4
    assert "does not define a function 'sanitize'" in result.stderr and "clean" in result.stderr


def test_submission_that_raises_shows_its_line(tmp_path):
    crashing = tmp_path / "mine.py"
    crashing.write_text("def sanitize(x, y, tools):\n    raise ValueError('oops')\n")
    result = secureml("run", "poisoning-01", "--mitigation", str(crashing), "--out", str(tmp_path))
    assert result.returncode == 4
    assert "ValueError: oops (mine.py, line 2)" in result.stderr
    assert "Traceback" not in result.stderr


def test_submission_returning_garbage_is_an_invalid_result(tmp_path):
    garbage = tmp_path / "mine.py"
    garbage.write_text("def sanitize(x, y, tools):\n    return [10**9]\n")
    result = secureml("run", "poisoning-01", "--mitigation", str(garbage), "--out", str(tmp_path), "--json")
    assert result.returncode == 4
    assert "must lie in" in json.loads(result.stdout)["error"]


def test_missing_mitigation_file_is_a_clear_error(tmp_path):
    result = secureml("run", "poisoning-01", "--mitigation", str(tmp_path / "nope.py"))
    assert result.returncode == 4 and "mitigation file not found" in result.stderr


def test_show_states_what_dropping_clean_data_costs():
    from click.testing import CliRunner

    from secureml.cli import cli

    result = CliRunner().invoke(cli, ["show", "poisoning-01"])
    assert result.exit_code == 0
    assert "kept_clean = clip(1 - clean_dropped / 0.25, 0, 1)" in result.output
    assert "dropping 25% of them scores 0" in result.output


GAMING = REPO / "tests" / "gaming"


def _small_variant(scenario_id: str, variant_seed: int):
    """An automatic variant of a shipped lab at half size, without the ART baselines (they
    only fill the table): its backdoor still takes hold, in a quarter of the time."""
    from secureml import scenario, variants
    from secureml.scenario import merge_overrides

    variant = variants.draw_variant(scenario.load(scenario_id), variant_seed)
    smaller = {"baselines": [], "dataset": {"train_size": 2000, "test_size": 500}, "victim": {"epochs": 4}}
    return merge_overrides(variant, smaller, origin="test")


def _score(loaded, mitigation):
    from secureml import runner
    from secureml.cache import Cache
    from secureml.families.base import RunContext

    return runner.run(loaded, mitigation=mitigation, ctx=RunContext(cache=Cache())).evaluation


# Automatic variants of poisoning-01 at half size, one per kind of look, their images
# distorted (alpha 8): 4 is a bright 4x4 checkerboard at the bottom edge, mid-width, in no
# corner (target 5); 1 is noise blended into the whole image at alpha 0.2 (target 2); 8 is a
# dark 7x7 square over the middle of the digit (target 6). At half size the backdoors are
# weaker than at full size (the squares of variants 7 and 11 took hold at 0.54), and a weak
# backdoor makes the retrained models' ASR noisy: the corner filter, which removed 4.5% of
# the poison, scored 22.7 on variant 10's square (victim ASR 0.78), and 0 on variants 4, 7,
# 8 and 11. Undistorted, it had scored 12.8 on variant 8 and 0-4.5 on variants 1, 10, 11 and
# 13: which variant the noise favours changes with the data.
VARIANTS = {4: "checker", 1: "blend", 8: "square"}


def _variant(variant_seed: int):
    loaded = _small_variant("poisoning-01", variant_seed)
    assert loaded.attack.trigger.kind == VARIANTS[variant_seed]
    return loaded


@pytest.mark.slow
@pytest.mark.parametrize("variant_seed", list(VARIANTS))
def test_gaming_filters_score_near_zero_on_a_variant(variant_seed):
    loaded = _variant(variant_seed)
    for gaming in ("poisoning_corner_filter.py", "poisoning_public_trigger.py", "poisoning_drop_clean.py"):
        evaluation = _score(loaded, GAMING / gaming)
        assert evaluation.metrics["victim.attack_success_rate"] > 0.7, "the variant's backdoor must take hold"
        assert evaluation.score.total <= 10, (gaming, evaluation.metrics)


@pytest.mark.slow
@pytest.mark.parametrize("variant_seed", list(VARIANTS))
def test_the_reference_still_scores_high_on_a_variant(variant_seed):
    # Nothing in it depends on the trigger's look, place or target: a plurality vote and an
    # outlier cut among the labels, and clusters judged by how evenly they resemble the
    # other labels. Its k-NN vote alone scored 0 on blends and dark squares (measured: 89.7,
    # 88.0 and 95.8 on these three at half size).
    reference = _score(_variant(variant_seed), LAB / "solution.py")
    assert reference.metrics["mitigated.poison_removed"] > 0.9, reference.metrics
    assert reference.score.total >= 80, reference.metrics


@pytest.mark.slow
def test_dropping_a_third_of_the_clean_data_scores_zero_on_the_public_lab(tmp_path):
    payload = run_json("poisoning-01", "--mitigation", str(GAMING / "poisoning_drop_clean.py"), out=tmp_path)
    metrics = payload["metrics"]
    assert metrics["mitigated.clean_dropped"] > 0.3
    assert payload["score"] <= 10
    assert payload["score_parts"]["kept_clean"] == 0.0


@pytest.mark.slow
def test_dropping_at_random_earns_nothing_for_the_noise_of_retraining(tmp_path):
    # poisoning-02's clean-label backdoor is weak (victim ASR about 0.57), and this file's
    # random 4% drop retrained to ASR 0.288 by chance: 40.8 against one random filter. The
    # grader's random filters measure that noise (the lucky.* metrics), and only an ASR drop
    # beyond a lucky one counts.
    payload = run_json("poisoning-02", "--mitigation", str(GAMING / "poisoning_random_drop.py"), out=tmp_path)
    metrics = payload["metrics"]
    assert metrics["lucky.attack_success_rate_sd"] > 0.02, "retraining moves this backdoor's ASR"
    assert metrics["lucky.attack_success_rate"] < metrics["lucky.attack_success_rate_mean"]
    assert payload["score"] <= 10, metrics


def test_every_trigger_kind_lands_in_its_box_wherever_it_is():
    import numpy as np
    from art.attacks.poisoning.perturbations import add_pattern_bd
    from pydantic import TypeAdapter

    from secureml import scenario
    from secureml.families.poisoning.attacks import apply_trigger
    from secureml.families.poisoning.config import Trigger

    grey = np.full((3, 1, 28, 28), 0.3, dtype=np.float32)
    # The public trigger is ART's own distance-2 pattern, so recorded results still hold.
    public = scenario.load("poisoning-01").attack.trigger
    arts_pattern = add_pattern_bd(grey, distance=2, pixel_value=1.0, channels_first=True)
    assert np.array_equal(apply_trigger(grey, public), arts_pattern)
    for kind, extra in [("pattern", {}), ("pixel", {}), ("square", {"size": 3, "pixel_value": 0.0}),
                        ("checker", {"size": 4}), ("blend", {"size": 6, "alpha": 0.2})]:
        trigger = TypeAdapter(Trigger).validate_python({"kind": kind, "row": 9, "col": 13, **extra})
        stamped = apply_trigger(grey, trigger)
        height, width = trigger.box()
        changed = np.argwhere((stamped != grey).any(axis=(0, 1)))
        assert len(changed), kind
        assert changed.min(axis=0).tolist() >= [9, 13], kind
        assert changed.max(axis=0).tolist() <= [8 + height, 12 + width], kind


def test_a_dark_trigger_on_the_black_background_is_a_scenario_error_before_any_training(tmp_path):
    tiny = tmp_path / "poisoning-01.yaml"
    text = (REPO / "scenarios" / "poisoning-01.yaml").read_text().replace("../labs/", f"{REPO}/labs/")
    text = text.replace("    pixel_value: 1.0", "    pixel_value: 0.0")
    text = text.replace("    row: 24\n    col: 24", "    row: 0\n    col: 0")
    tiny.write_text(text[: text.index("expected:")])
    result = secureml("run", str(tiny), "--no-cache", "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert "attack.trigger" in result.stderr and "barely changes the images" in result.stderr
    assert "Traceback" not in result.stderr and "training" not in result.stderr


def test_a_backdoor_that_did_not_take_hold_is_refused_not_scored(tmp_path):
    scenario_file = _tiny_variant(tmp_path)
    path = tmp_path / "poisoning-01.yaml"
    path.write_text(path.read_text().replace("poison_fraction: 0.1", "poison_fraction: 0.003"))
    result = secureml("run", scenario_file, "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert "the backdoor did not take hold" in result.stderr and "field 'attack'" in result.stderr
    assert "Traceback" not in result.stderr
