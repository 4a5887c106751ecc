"""`secureml verify`: recorded results reproduce, drift is caught, `--record` writes them.

This file runs after the end-to-end runs of every family (pytest takes files in name
order), so the victims and attack stages it needs are already in the session's cache.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
import yaml

from conftest import REPO, secureml


def _copy_scenario(tmp_path, scenario_id: str):
    """The scenario with its lab paths made absolute, in a folder of its own."""
    path = tmp_path / f"{scenario_id}.yaml"
    text = (REPO / "scenarios" / f"{scenario_id}.yaml").read_text()
    path.write_text(text.replace("../labs/", f"{REPO}/labs/"))
    return path


@pytest.mark.slow
def test_verify_passes_on_recorded_values_and_fails_on_a_perturbed_one(tmp_path):
    path = _copy_scenario(tmp_path, "poisoning-01")
    junit = tmp_path / "verify.xml"
    good = secureml("verify", str(path), "--junit", str(junit))
    assert good.returncode == 0, good.stdout + good.stderr
    suite = ET.parse(junit).getroot()
    assert int(suite.get("tests")) > 10 and suite.get("failures") == "0"

    data = yaml.safe_load(path.read_text())
    data["expected"]["victim.clean_accuracy"]["value"] -= 0.2
    text = path.read_text()
    head = text[: text.index("expected:")]
    path.write_text(head + yaml.safe_dump({"expected": data["expected"]}))
    bad = secureml("verify", str(path), "--junit", str(junit), "--json")
    assert bad.returncode == 5
    checks = json.loads(bad.stdout)["checks"]
    drifted = [c["metric"] for c in checks if not c["ok"]]
    assert drifted == ["victim.clean_accuracy"]
    assert ET.parse(junit).getroot().get("failures") == "1"


@pytest.mark.slow
def test_verify_record_writes_expected_values_and_keeps_comments(tmp_path):
    path = _copy_scenario(tmp_path, "poisoning-01")
    text = path.read_text()
    path.write_text(text[: text.index("expected:")])
    assert secureml("verify", str(path)).returncode == 5, "no expected values yet"
    recorded = secureml("verify", str(path), "--record")
    assert recorded.returncode == 0, recorded.stderr
    new_text = path.read_text()
    assert new_text.startswith("# A BadNets backdoor")
    assert yaml.safe_load(new_text)["expected"]["score"]["value"] >= 80
    assert secureml("verify", str(path)).returncode == 0


@pytest.mark.slow
def test_verify_reproduces_the_recorded_evasion_and_inversion_results():
    # The two quickest scenarios of the families that came after poisoning; `make test`
    # runs the rest of their end-to-end paths in test_run_evasion.py and test_inversion.py.
    result = secureml("verify", "evasion-02", "inversion-02", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = json.loads(result.stdout)["checks"]
    assert {check["scenario"] for check in checks} == {"evasion-02", "inversion-02"}
    assert all(check["ok"] for check in checks)
