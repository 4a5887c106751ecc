"""End to end: `secureml run` on the evasion labs, as a trainee would type it.

The attack suite runs in full here (the shipped scenarios, not variants), so these are
the long runs: about 20-40 s each on two cores with a cold cache.
"""

from __future__ import annotations

import pytest

from conftest import REPO, run_json


def _lab(scenario_id: str, name: str) -> str:
    return str(REPO / "labs" / scenario_id / name)


@pytest.mark.slow
def test_run_evasion_01_without_mitigation_scores_near_zero(tmp_path):
    payload = run_json("evasion-01", out=tmp_path)
    assert payload["score"] <= 2.0
    metrics = payload["metrics"]
    assert metrics["victim.clean_accuracy"] > 0.9
    assert metrics["victim.robust_accuracy"] < 0.1, "the white-box suite must break the victim"
    # Worst case over the suite: never above any single attack's robust accuracy.
    per_attack = [value for name, value in metrics.items() if name.startswith("victim.robust_accuracy.")]
    assert len(per_attack) == 5 and metrics["victim.robust_accuracy"] <= min(per_attack)


@pytest.mark.slow
def test_run_evasion_01_with_the_reference_solution_scores_high(tmp_path):
    payload = run_json("evasion-01", "--mitigation", _lab("evasion-01", "solution.py"), out=tmp_path)
    assert payload["score"] >= 70
    assert payload["flags"] == [], "adversarial training must not look like gradient masking"
    metrics = payload["metrics"]
    assert metrics["mitigated.robust_accuracy"] > metrics["victim.robust_accuracy"] + 0.4
    # results.json carries the per-attack figures and the curve.
    for attack in ("fgsm", "pgd", "cw-l2", "autoattack", "square"):
        assert f"mitigated.robust_accuracy.{attack}" in metrics
        assert f"mitigated.mean_perturbation.{attack}" in metrics
    assert "mitigated.pgd_curve@0.4" in metrics
    for picture in ("adversarial-examples.png", "robust-accuracy-curve.png"):
        assert (tmp_path / picture).stat().st_size > 10_000, picture


@pytest.mark.slow
def test_run_evasion_01_starter_runs_and_scores_low(tmp_path):
    payload = run_json("evasion-01", "--mitigation", _lab("evasion-01", "mitigation.py"), out=tmp_path)
    assert payload["score"] < 30


@pytest.mark.slow
def test_run_evasion_02_binarising_survives_the_adaptive_attacks_and_scores_high(tmp_path):
    none = run_json("evasion-02", out=tmp_path / "none")
    assert none["score"] <= 2.0
    solution = run_json("evasion-02", "--mitigation", _lab("evasion-02", "solution.py"), out=tmp_path / "sol")
    assert solution["score"] >= 70
    metrics = solution["metrics"]
    # BPDA/EOT find more than a naive PGD through the exact gradient does.
    assert metrics["mitigated.robust_accuracy"] <= metrics["mitigated.naive_robust_accuracy"]


@pytest.mark.slow
def test_run_evasion_03_l2_on_digits_reference_scores_high_and_none_scores_zero(tmp_path):
    none = run_json("evasion-03", out=tmp_path / "none")
    assert none["score"] <= 2.0
    assert "victim.robust_accuracy.hop-skip-jump" in none["metrics"]
    solution = run_json("evasion-03", "--mitigation", _lab("evasion-03", "solution.py"), out=tmp_path / "sol")
    assert solution["score"] >= 70
    assert solution["flags"] == []


@pytest.mark.slow
def test_run_evasion_03_starter_scores_what_its_handout_says(tmp_path):
    # labs/evasion-03/README.md and mitigation.py: "scores about 20 (measured 21.7)".
    payload = run_json("evasion-03", "--mitigation", _lab("evasion-03", "mitigation.py"), out=tmp_path)
    assert 10 <= payload["score"] <= 35, payload["score"]
    assert payload["metrics"]["mitigated.robust_accuracy"] < 0.15
