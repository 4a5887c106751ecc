"""Gradient masking must not pay: the adaptive evaluation sees through it, and flags it.

These run the real family end to end (inputs folder, trainee function, strict result,
grader) on fast digits variants of the shipped scenarios: same schema, smaller numbers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import REPO
from secureml import runner, scenario
from secureml.cache import Cache
from secureml.families.base import RunContext

FAST_SUITE = {
    "subset": 60,
    "batch_size": 64,
    "attacks": [
        {"name": "fgsm"},
        {"name": "pgd", "steps": 10, "step_size": 0.075, "restarts": 1},
        {"name": "autoattack", "steps": 10, "restarts": 1, "losses": ["ce", "dlr"]},
        {"name": "square", "queries": 100},
    ],
    "curve": {"epsilons": [0.1, 0.3, 0.6], "steps": 5},
    "eot_samples": 4,
}


def _digits_variant(tmp_path: Path, scenario_id: str, **changes) -> scenario.ScenarioBase:
    """A shipped evasion scenario on digits with a small suite, written where tests can load it."""
    data = yaml.safe_load((REPO / "scenarios" / f"{scenario_id}.yaml").read_text())
    data.update(
        dataset={"name": "digits", "train_size": 1000, "test_size": 300},
        victim={"arch": "cnn", "epochs": 15, "batch_size": 64, "learning_rate": 0.003, "optimizer": "adam"},
        threat={"norm": "inf", "epsilon": 0.3},
        evaluation=FAST_SUITE,
        expected={},
        **changes,
    )
    for role in ("starter", "solution"):
        data["mitigation"][role] = str(REPO / "labs" / scenario_id / Path(data["mitigation"][role]).name)
    path = tmp_path / f"{scenario_id}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return scenario.load(path)


def _run(loaded, mitigation: Path):
    return runner.run(loaded, mitigation=mitigation, ctx=RunContext(cache=Cache()))


def test_feature_squeezing_alone_loses_most_of_its_apparent_robustness_under_adaptive_evaluation(tmp_path):
    loaded = _digits_variant(tmp_path, "evasion-02")
    defence = tmp_path / "squeeze.py"
    defence.write_text("def preprocess(tools):\n    return [tools.bit_depth(4)]\n")
    metrics = _run(loaded, defence).evaluation.metrics
    apparent = metrics["mitigated.naive_robust_accuracy"]
    adaptive = metrics["mitigated.robust_accuracy"]
    # A naive PGD test through the exact (zero) gradient of the rounding finds nothing ...
    assert apparent >= 0.8 * metrics["mitigated.clean_accuracy"]
    # ... BPDA, EOT and Square take most of that apparent robustness away.
    assert adaptive <= 0.5 * apparent, (apparent, adaptive)
    assert metrics["score"] < 20


def test_scaling_the_logits_is_flagged_and_earns_nothing(tmp_path):
    loaded = _digits_variant(tmp_path, "evasion-01")
    scaled = tmp_path / "scaled.py"
    scaled.write_text(
        "import torch\n\n"
        "def harden(x, y, tools):\n"
        "    model = tools.victim()\n"
        "    with torch.no_grad():\n"
        "        model.head.weight.mul_(1e4)\n"
        "        model.head.bias.mul_(1e4)\n"
        "    return model\n"
    )
    evaluation = _run(loaded, scaled).evaluation
    assert evaluation.metrics["mitigated.zero_gradient_share"] > 0.5
    assert any("zero, NaN or infinite" in flag for flag in evaluation.flags), evaluation.flags
    assert evaluation.score.total < 15


def test_a_preprocess_answer_off_the_menu_is_rejected_with_the_menu(tmp_path):
    from secureml.errors import MitigationError

    loaded = _digits_variant(tmp_path, "evasion-02", menu=["bit-depth"])
    smoothing = tmp_path / "smooth.py"
    smoothing.write_text("def preprocess(tools):\n    return [tools.median(3)]\n")
    with pytest.raises(MitigationError, match="not on this scenario's menu"):
        _run(loaded, smoothing)
