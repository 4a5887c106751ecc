"""Gradient masking earns nothing: when a masking check fires, the grader escalates on its
own (a much larger gradient-free budget, transfer from the victim, BPDA through a smoothed
surrogate), the worst case over everything decides, and a flag the escalation refutes is
cleared. The gaming submissions live in tests/gaming/.

The fast tests use small digits variants of the shipped scenarios (same schema, smaller
numbers and budgets); the slow ones run the shipped scenarios with their real budgets.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO
from secureml import runner, scenario
from secureml.cache import Cache
from secureml.families.base import RunContext
from secureml.families.evasion.escalation import smoothed_surrogate
from test_evasion_masking import FAST_SUITE

GAMING = REPO / "tests" / "gaming"

# Escalation budgets for the small variants; the shipped scenarios use 5,000 queries and
# 50 HopSkipJump iterations (test_shipped_scenarios_escalate_with_at_least_the_issues_budgets).
SMALL_ESCALATION = {"square_queries": 400, "hop_skip_jump_steps": 20, "surrogate_steps": 20, "surrogate_restarts": 1}

LINF_SUITE = {**FAST_SUITE, "eot_samples": 1}  # deterministic models: one draw is enough
L2_SUITE = {
    "subset": 60,
    "batch_size": 64,
    "attacks": [
        {"name": "fgsm"},
        {"name": "pgd", "steps": 10, "step_size": 0.25, "restarts": 1},
        {"name": "autoattack", "steps": 10, "restarts": 1, "losses": ["ce", "dlr"]},
        {"name": "hop-skip-jump", "steps": 5, "max_eval": 100, "init_eval": 10, "init_size": 30},
    ],
    "curve": {"epsilons": [0.5, 1.0, 4.0], "steps": 5},
    "eot_samples": 1,
}


def _digits_variant(tmp_path: Path, scenario_id: str, threat: dict, suite: dict) -> scenario.ScenarioBase:
    data = yaml.safe_load((REPO / "scenarios" / f"{scenario_id}.yaml").read_text())
    data.update(
        dataset={"name": "digits", "train_size": 1000, "test_size": 300},
        victim={"arch": "cnn", "epochs": 15, "batch_size": 64, "learning_rate": 0.003, "optimizer": "adam"},
        threat=threat,
        evaluation=suite,
        escalation=SMALL_ESCALATION,
        expected={},
    )
    for role in ("starter", "solution"):
        data["mitigation"][role] = str(REPO / "labs" / scenario_id / Path(data["mitigation"][role]).name)
    path = tmp_path / f"{scenario_id}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return scenario.load(path)


def _run(loaded, mitigation: Path | None):
    return runner.run(loaded, mitigation=mitigation, ctx=RunContext(cache=Cache())).evaluation


def _binarising(tmp_path: Path) -> Path:
    """The staircase with one step at 0.5: MNIST binarised inside the weights."""
    text = (GAMING / "evasion_staircase.py").read_text()
    text, count = re.subn(r"^THRESHOLDS = .*$", "THRESHOLDS = [0.5]", text, flags=re.M)
    assert count == 1
    path = tmp_path / "binarise_in_weights.py"
    path.write_text(text)
    return path


def test_the_smoothed_surrogate_predicts_like_the_model_and_passes_gradients_through_steps():
    from secureml import models

    model = models.build("cnn", (1, 8, 8), 10, seed=0)
    with torch.no_grad():
        model.features[0].weight.mul_(1e4)  # steep first layer: ReLUs become steps
        model.head.weight.mul_(1e4)  # saturated softmax
    x = torch.rand(16, 1, 8, 8)
    surrogate = smoothed_surrogate(model, temperature=1.0)
    assert torch.equal(model(x).argmax(1), surrogate(x).argmax(1))
    x.requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(surrogate(x), torch.zeros(16, dtype=torch.long))
    (gradient,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(gradient).all() and (gradient.flatten(1).abs().sum(1) > 0).all()
    assert isinstance(model.features[1], torch.nn.ReLU), "the submitted model itself is left as it was"


def test_staircase_weights_are_flagged_escalated_and_score_about_zero_linf(tmp_path):
    loaded = _digits_variant(tmp_path, "evasion-01", {"norm": "inf", "epsilon": 0.3}, LINF_SUITE)
    evaluation = _run(loaded, GAMING / "evasion_staircase.py")
    metrics = evaluation.metrics
    assert metrics["mitigated.escalated"] == 1.0
    assert evaluation.details["escalation"]["because"], "a masking check must have fired"
    # The staircase blinds PGD: the suite's own PGD leaves far more than the worst case.
    assert metrics["mitigated.robust_accuracy.pgd"] >= metrics["mitigated.robust_accuracy"] + 0.2
    # Worst case over the suite and the escalation: robust accuracy at the victim's level. Whether the
    # suite's gradient-free members already got there (Square reached 0 in CI) or only the escalation
    # did varies from machine to machine; the escalation never raises it.
    assert metrics["mitigated.robust_accuracy"] <= metrics["victim.robust_accuracy"] + 0.1
    assert metrics["mitigated.robust_accuracy"] <= metrics["mitigated.robust_accuracy_before_escalation"]
    assert evaluation.score.total <= 10
    assert "escalation" in evaluation.details and evaluation.details["escalation"]["seconds"] > 0
    assert any("escalated on its own" in note for note in evaluation.feedback)
    assert loaded.hints.success not in evaluation.feedback


def test_staircase_weights_score_about_zero_under_the_l2_threat_with_hop_skip_jump(tmp_path):
    loaded = _digits_variant(tmp_path, "evasion-03", {"norm": "2", "epsilon": 1.0}, L2_SUITE)
    evaluation = _run(loaded, GAMING / "evasion_staircase.py")
    assert evaluation.metrics["mitigated.escalated"] == 1.0
    assert "mitigated.robust_accuracy.escalated-hop-skip-jump" in evaluation.metrics
    assert evaluation.score.total <= 10


def test_an_unflagged_model_is_never_escalated(tmp_path):
    loaded = _digits_variant(tmp_path, "evasion-01", {"norm": "inf", "epsilon": 0.3}, LINF_SUITE)
    evaluation = _run(loaded, None)
    assert evaluation.flags == []
    assert "mitigated.escalated" not in evaluation.metrics
    assert "escalation" not in evaluation.details


def test_shipped_scenarios_escalate_with_at_least_the_issues_budgets():
    for scenario_id in ("evasion-01", "evasion-02", "evasion-03"):
        loaded = scenario.load(scenario_id)
        assert loaded.escalation.square_queries >= 5000
        assert loaded.escalation.hop_skip_jump_steps >= 50


@pytest.mark.slow
def test_binarising_mnist_inside_the_weights_is_robust_and_the_escalation_clears_its_flags(tmp_path):
    evaluation = runner.run(
        scenario.load("evasion-01"), mitigation=_binarising(tmp_path), ctx=RunContext(cache=Cache())
    ).evaluation
    metrics = evaluation.metrics
    assert metrics["mitigated.escalated"] == 1.0, "zero gradients everywhere: a masking check must fire"
    escalation = evaluation.details["escalation"]
    assert escalation["refuted_flags"], "the escalation must refute the masking flags"
    assert evaluation.flags == [], evaluation.flags
    # A real robustness figure: the worst case over the suite and the escalated attacks.
    assert metrics["mitigated.robust_accuracy"] >= 0.6, metrics["mitigated.robust_accuracy"]
    # Full robustness credit and no cap from a flag: all it loses is for its clean accuracy
    # (2.7 and 3.5 points in two runs, scoring 73 and 65), a real cost of binarising.
    assert evaluation.score.parts["robust_gained"] == 1.0 and not evaluation.score.capped_by
    assert evaluation.score.total == pytest.approx(100 * evaluation.score.parts["clean_kept"])
