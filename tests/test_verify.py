"""`secureml verify`: recorded results reproduce, drift is caught, `--record` writes them.

This file runs after the end-to-end runs of every family (pytest takes files in name
order), so the victims and attack stages it needs are already in the session's cache.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
import yaml

from conftest import REPO, run_json, secureml


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
    good = secureml("verify", str(path), "--junit", str(junit), "--json")
    assert good.returncode == 0, good.stdout + good.stderr
    checks = json.loads(good.stdout)["checks"]
    accuracy = next(c for c in checks if c["metric"] == "victim.clean_accuracy")
    assert accuracy["n"] == 1000 and accuracy["source"].startswith("binomial: 3 SE")
    assert {c["status"] for c in checks} <= {"ok", "report"}
    suite = ET.parse(junit).getroot()
    assert int(suite.get("tests")) > 10 and suite.get("failures") == "0"

    data = yaml.safe_load(path.read_text())
    data["expected"]["victim.clean_accuracy"]["value"] -= 0.2
    text = path.read_text()
    head = text[: text.index("expected:")]
    path.write_text(head + yaml.safe_dump({"expected": data["expected"]}, width=1000))
    bad = secureml("verify", str(path), "--junit", str(junit))
    assert bad.returncode == 5
    # The drift names the metric, what was expected and found, the tolerance and its source.
    found, perturbed = accuracy["found"], accuracy["expected"] - 0.2
    expected_line = (
        f"poisoning-01 victim.clean_accuracy: expected {perturbed:.4g} ± {accuracy['tolerance']:.3g} "
        f"({accuracy['source']}), found {found:.4g}, difference {found - perturbed:+.3g}"
    )
    assert expected_line in " ".join(bad.stderr.split()), bad.stderr
    failures = ET.parse(junit).getroot().findall("testcase/failure")
    assert len(failures) == 1 and "n=1000" in failures[0].text
    # This run reused the cached stage (filled by the runs before it), and says so.
    assert "cache: reused" in " ".join(bad.stdout.split())


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
    expected = yaml.safe_load(new_text)["expected"]
    assert expected["score"]["value"] >= 80
    # Without --seeds nothing measured the spread of a derived number: reported, not verified.
    assert expected["score"]["tolerance"] is None
    assert expected["victim.attack_success_rate"]["n"] == 900
    assert secureml("verify", str(path)).returncode == 0


@pytest.mark.slow
def test_results_json_records_the_cpu_the_torch_build_and_each_metric_sample_size(tmp_path):
    payload = run_json("poisoning-01", out=tmp_path)
    environment = payload["environment"]
    assert environment["cpu"]["model"] and "flags" in environment["cpu"]
    assert environment["torch"]["build"] in ("cpu",) or environment["torch"]["build"].startswith("cuda")
    assert environment["torch"]["deterministic_algorithms"] in (True, False)
    assert environment["threads"] == payload["threads"]
    assert len(environment["source_sha256"]) == 64
    assert payload["samples"]["victim.clean_accuracy"] == {"kind": "rate", "n": 1000, "items": "test images"}
    assert "score" not in payload["samples"]  # derived


def _small_poisoning_scenario(tmp_path):
    """poisoning-01 on 1,000 images, 2 epochs and no ART baselines: seconds per run."""
    path = _copy_scenario(tmp_path, "poisoning-01")
    data = yaml.safe_load(path.read_text())
    data.pop("expected")
    data["dataset"].update(train_size=1000, test_size=200)
    data["victim"]["epochs"] = 2
    data["baselines"] = []
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.slow
def test_record_measures_the_spread_over_seeds_and_thread_counts_and_verify_checks_each_count(tmp_path):
    path = _small_poisoning_scenario(tmp_path)
    recorded = secureml("verify", str(path), "--record", "--seeds", "2", "--threads", "2", "--threads", "1", "--json")
    assert recorded.returncode == 0, recorded.stderr
    runs = json.loads(recorded.stdout)["runs"]
    assert sorted((run["seed"], run["threads"]) for run in runs) == [(1234, 1), (1234, 2), (1235, 1), (1235, 2)]
    expected = yaml.safe_load(path.read_text())["expected"]
    assert expected["victim.clean_accuracy"]["n"] == 200
    measured = [e["source"] for e in expected.values() if e["source"].startswith("measured")]
    assert measured and all("over 2 seeds x threads 2,1" in source for source in measured)
    assert expected["mitigated.kept"]["source"].split(":")[0] in ("measured", "report only")

    checked = secureml("verify", str(path), "--threads", "2", "--threads", "1", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    checks = json.loads(checked.stdout)["checks"]
    assert {check["threads"] for check in checks} == {1, 2}
    assert len(checks) == 2 * len(expected)
    # Recorded at 2 threads: that count reproduces every value exactly.
    # (The file keeps 6 significant digits: a score of 44.44444 is recorded as 44.4444.)
    differing = [c for c in checks if c["threads"] == 2 and c["found"] != pytest.approx(c["expected"], rel=1e-5)]
    assert not differing, differing
