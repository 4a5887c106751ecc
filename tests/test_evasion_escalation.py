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


def _attack_the_levels(model, thresholds, x, y, epsilon: float, *, restarts: int = 5, steps: int = 100) -> torch.Tensor:
    """An attack written for the staircase's construction (an adaptive attack in the sense of
    Tramer et al., 2020): which images it fools. The first block computes, per 2x2 block of
    pixels, which thresholds the block's brightest pixel reaches. Inside an L-inf ball of
    `epsilon` that pixel's value m moves freely in [max - epsilon, max + epsilon], and blocks
    share no pixels, so the attack runs margin-loss PGD on m through sigmoid steps
    (temperatures 0.05, 0.02, 0.01) and the exact rest of the network, and judges each step's
    image (the block's pixels above m lowered to m, its brightest set to m) on the model."""
    import torch.nn.functional as F

    features, levels = model.features, torch.tensor(thresholds).view(1, -1, 1, 1)

    def rest(z):
        hidden = F.conv2d(z, features[3].weight[:, 0::2], features[3].bias, padding=1)
        for layer in list(features)[4:]:
            hidden = layer(hidden)
        return model.head(hidden)

    def image(m):
        blocks = x.unfold(2, 2, 2).unfold(3, 2, 2)  # (n, 1, h/2, w/2, 2, 2)
        flat = torch.minimum(blocks, m[..., None, None]).flatten(-2)
        flat.scatter_(-1, blocks.flatten(-2).argmax(-1, keepdim=True), m.unsqueeze(-1))
        return flat.view(blocks.shape).permute(0, 1, 2, 4, 3, 5).reshape(x.shape)

    brightest = F.max_pool2d(x, 2)
    low, high = (brightest - epsilon).clamp(0, 1), (brightest + epsilon).clamp(0, 1)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
        # Same decisions; the logits agree up to float rounding (1e-4 seen on one machine:
        # a pixel on a step's steep ramp, or another summation order).
        rebuilt, original = model(image(brightest)), model(x)
        assert torch.equal(rebuilt.argmax(1), original.argmax(1)), "the block maxima alone decide"
        assert torch.allclose(rebuilt, original, atol=1e-3), "the block maxima alone decide"
    fooled = ~correct
    for restart in range(restarts):
        for temperature in (0.05, 0.02, 0.01):
            m = brightest.clone() if restart == 0 else low + (high - low) * torch.rand(low.shape, generator=generator)
            for _ in range(steps):
                m.requires_grad_(True)
                logits = rest(torch.sigmoid((m - levels) / temperature))
                true = logits.gather(1, y[:, None]).squeeze(1)
                other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
                (gradient,) = torch.autograd.grad((other - true).sum(), m)
                with torch.no_grad():
                    m = torch.minimum(torch.maximum(m + 0.02 * gradient.sign(), low), high)
                    adversarial = image(m)
                    assert (adversarial - x).abs().max() <= epsilon + 1e-6
                    fooled |= model(adversarial).argmax(1) != y
    return fooled


@pytest.mark.slow
def test_the_staircase_keeps_no_more_robustness_than_an_attack_written_for_it_finds():
    """A known result to hold the escalation to. The staircase's eight levels (as many as the
    victim's first layer has room for) are real, if weak, robustness: a pixel must cross a
    threshold to matter. An attack written for the construction measured 0.19 on the graded
    images (a greedy search over the levels, 60 moves from each survivor, fooled none more);
    the escalated grader measured 0.18. Before APGD-DLR through the surrogate it measured 0.21
    (score 26.1); now 0.18 (score 22.2). The flags stand, so the run needs review and its score
    is capped at the scenario's score_cap_if_flags_stand (10)."""
    import importlib.util
    from types import SimpleNamespace

    from secureml import models
    from secureml.datasets import load_split

    loaded = scenario.load("evasion-01")
    evaluation = _run(loaded, GAMING / "evasion_staircase.py")
    metrics = evaluation.metrics
    assert metrics["mitigated.escalated"] == 1.0

    # The same submission, trained as the grader trains it (the scenario's split and recipe).
    spec = importlib.util.spec_from_file_location("staircase", GAMING / "evasion_staircase.py")
    staircase = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(staircase)
    split, victim = load_split(loaded.dataset, loaded.seed), loaded.victim
    tools = SimpleNamespace(
        build=lambda: models.build(victim.arch, split.shape, split.num_classes, loaded.seed), seed=loaded.seed,
        epochs=victim.epochs, batch_size=victim.batch_size, learning_rate=victim.learning_rate,
    )
    model = staircase.harden(split.x_train, split.y_train, tools)
    subset = loaded.evaluation.subset  # the public lab attacks the first `subset` test images
    x, y = torch.from_numpy(split.x_test[:subset]), torch.from_numpy(split.y_test[:subset]).long()
    robust = 1 - _attack_the_levels(model, staircase.THRESHOLDS, x, y, loaded.threat.epsilon).float().mean().item()

    # Paired on the same images: the grader's worst case may exceed the written attack's by
    # at most 3 of the 100 images (measured: 1 below it).
    assert metrics["mitigated.robust_accuracy"] <= robust + 0.03, (metrics["mitigated.robust_accuracy"], robust)
    assert robust <= 0.3, "the written attack itself must work"
    assert evaluation.score.total <= 100 * (robust + 0.03 - metrics["victim.robust_accuracy"]) / (
        loaded.scoring.target_robust_accuracy - metrics["victim.robust_accuracy"]
    )
    # The gradients still mislead after the escalation: needs review, and no more than the cap.
    assert evaluation.flags, "Square still fools images every white-box attack leaves robust"
    assert evaluation.score.total <= loaded.escalation.score_cap_if_flags_stand
    assert "still stands after the escalation" in evaluation.score.capped_by
    assert any("until an instructor reviews the run" in note for note in evaluation.feedback)
