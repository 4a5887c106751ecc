"""`secureml verify`: does each scenario still reproduce the metrics recorded in its file?"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from secureml.errors import ConfigError
from secureml.scenario import ExpectedValue, ScenarioBase


@dataclass(frozen=True)
class Check:
    scenario: str
    metric: str
    expected: float | None
    found: float | None
    tolerance: float

    @property
    def ok(self) -> bool:
        if self.expected is None or self.found is None:
            return False
        return abs(self.found - self.expected) <= self.tolerance + 1e-9

    @property
    def difference(self) -> float:
        if self.expected is None or self.found is None:
            return math.nan
        return self.found - self.expected


def compare(scenario: ScenarioBase, metrics: dict[str, float]) -> list[Check]:
    """One check per recorded metric; a metric that is no longer produced fails."""
    return [
        Check(scenario.id, name, expected.value, metrics.get(name), expected.tolerance)
        for name, expected in scenario.expected.items()
    ]


def default_tolerance(name: str, value: float) -> float:
    """Room for the drift of retraining on another machine or thread count.

    Measured: repeated runs on one machine are identical; accuracies moved by up to 0.01
    between thread counts. Scores amplify that, hence their wider band. The ART baselines
    cluster the features of a retrained model and amplify it further: between two 2-core
    machines, a 0.002 change in poisoning-01's victim accuracy moved ActivationDefence's
    ASR by 0.05.
    """
    if name == "score" or name.endswith(".score"):
        return 10.0
    if name.startswith("baseline."):
        return 0.1
    if name.endswith("attack_accuracy"):
        # MIFace makes one reconstruction per class: a single class is 0.1 of this metric.
        return 0.1
    if "robust_accuracy" in name or "pgd_curve" in name or name.endswith(".ssim"):
        # Robust accuracy counts images of a 100-200 image subset, after adversarial
        # training that a different CPU rounds differently: a few images either way.
        return 0.05
    if "mean_perturbation" in name:
        # An average over only the images an attack fooled, in the norm's own units.
        return round(max(0.03, 0.1 * abs(value)), 3)
    if name.endswith(".kept"):
        return max(2.0, round(0.02 * value))
    return 0.03


def record(scenario: ScenarioBase, metrics: dict[str, float]) -> Path:
    """Rewrite the file's trailing `expected:` block with these metrics; comments elsewhere stay."""
    path = scenario.source
    if path is None:
        raise ConfigError("cannot record: the scenario was not loaded from a file")
    old = scenario.expected
    lines = ["expected:"]
    for name in sorted(metrics):
        value = float(metrics[name])
        tolerance = old[name].tolerance if name in old else default_tolerance(name, value)
        lines.append(f'  "{name}": {{value: {value:.6g}, tolerance: {tolerance:g}}}')
    text = path.read_text()
    match = re.search(r"^expected:.*\Z", text, flags=re.MULTILINE | re.DOTALL)
    if match and not _only_expected_after(text[match.start() :]):
        raise ConfigError(
            "cannot record: 'expected:' must be the last top-level key",
            file=str(path),
            field="expected",
            fix="move the expected: block to the end of the file",
        )
    head = text[: match.start()] if match else text.rstrip("\n") + "\n\n"
    path.write_text(head + "\n".join(lines) + "\n")
    return path


def _only_expected_after(block: str) -> bool:
    top_level = [line for line in block.splitlines()[1:] if line and not line[0].isspace() and not line.startswith("#")]
    return not top_level


def expected_from(metrics: dict[str, float]) -> dict[str, ExpectedValue]:
    return {
        name: ExpectedValue(value=value, tolerance=default_tolerance(name, value))
        for name, value in metrics.items()
    }


def junit_xml(checks: list[Check], errors: dict[str, str]) -> str:
    """A JUnit report: one test case per scenario metric, plus one per scenario that errored."""
    suite = ElementTree.Element(
        "testsuite",
        name="secureml verify",
        tests=str(len(checks) + len(errors)),
        failures=str(sum(not check.ok for check in checks)),
        errors=str(len(errors)),
    )
    for check in checks:
        case = ElementTree.SubElement(suite, "testcase", classname=check.scenario, name=check.metric)
        if not check.ok:
            failure = ElementTree.SubElement(case, "failure", message="metric drifted")
            failure.text = (
                f"expected {check.expected} ± {check.tolerance}, found {check.found}"
            )
    for scenario_id, message in errors.items():
        case = ElementTree.SubElement(suite, "testcase", classname=scenario_id, name="run")
        ElementTree.SubElement(case, "error", message="the scenario did not run").text = message
    return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True)
