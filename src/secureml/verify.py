"""`secureml verify`: does each scenario still reproduce the metrics recorded in its file?

Each recorded metric carries its value, a tolerance, the sample size `n` behind it and the
source of the tolerance. The tolerance follows from what the metric is (the family says,
with a `Sample` per metric), never from a hand-picked band:

- **rate** (accuracy, ASR, robust accuracy, attack accuracy): a share of n images, so its
  spread is binomial. Tolerance: Z standard errors. Near 0 and 1 the plain SE,
  sqrt(p(1-p)/n), vanishes, so it is taken at the Agresti-Coull estimate: Z^2/2 = 4.5
  successes and failures added, p' = (k + 4.5) / (n + 9), SE = sqrt(p'(1-p') / (n + 9))
  (Agresti and Coull, The American Statistician, 1998). A recorded 0 of 100 then allows
  5.7 images; clamping p to 1/n instead (the "rule of three", 3 images) was too tight:
  evasion-02's victim went from 0 to 4 images robust to FGSM between 2 and 1 threads.
  Where the spread measured over seeds and thread counts is wider (clustered samples,
  e.g. MIFace restarts of one class, or an ART baseline that re-clusters features: its
  ASR moved by 0.20 between 2 and 1 threads), the measured spread wins.
- **mean** of a continuous value over n items (the perturbation of the images an attack
  fooled, the SSIM of the reconstructions) and **derived** numbers (scores, the number
  of samples kept): Z standard deviations measured over seeds and thread counts
  (`--record --seeds 3 --threads 2 --threads 1`). Unmeasured, identical in every run
  (nothing to measure a spread from), or a mean over fewer than MIN_MEAN_ITEMS items, they
  are reported without being verified: one image more or less moved evasion-01's mean CW
  perturbation, a mean over 8 images, from 0.144 to 0.105 between two machines
  (ART-FACTS, evaluation 4).
- **exact**: counts and constants that must reproduce exactly (masking flags raised on the
  reference solution, the chance level).

Measured when recording (README, "Reproducibility"): between 2 and 1 threads at the
recorded seed, 84 of 174 metrics moved, by at most 74% of their tolerance; over 3 seeds x
2 thread counts a rate's SD was a median 0.56 of its binomial SE (a seed also redraws the
train/test split).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree

from rich.markup import escape
from rich.table import Table

from secureml import runner
from secureml.errors import ConfigError, SecuremlError
from secureml.files import write_atomically
from secureml.scenario import ExpectedValue, ScenarioBase
from secureml.versions import set_threads, thread_count

if TYPE_CHECKING:
    from secureml.families.base import Sample

# Standard errors (or measured standard deviations) a value may move. A scenario records
# about 10-40 metrics; at 3 SE a single true binomial check fails by chance 0.27% of the
# time, and between machines the test set stays the same, so the real spread is smaller.
Z = 3.0
# A mean over fewer items than this is reported, not verified: one item more or less
# moves it by up to 1/MIN_MEAN_ITEMS of the items' range.
MIN_MEAN_ITEMS = 30
# Float comparisons: a value read back from YAML (6 significant digits) must still match.
SLACK = 1e-6
# A spread below this share of the value is float32 rounding, not statistics: an attack
# pinned at its budget moves by that much (evasion-03's L2 AutoAttack perturbation: 0.99997,
# SD 5e-6 over seeds and thread counts).
ROUNDING = 1e-4
# How to record with measured spreads: six runs per scenario (README, "Reproducibility").
MEASURE = "secureml verify --record --seeds 3 --threads 2 --threads 1"


# --------------------------------------------------------------------------- tolerances


@dataclass(frozen=True)
class Spread:
    """A metric's standard deviation over several runs of one scenario (seeds, thread counts)."""

    sd: float
    runs: int
    over: str  # what varied: "5 seeds", "3 seeds x threads 1,2"

    @classmethod
    def of(cls, values: list[float], over: str = "") -> Spread:
        return cls(statistics.stdev(values) if len(values) > 1 else 0.0, len(values), over or f"{len(values)} runs")


def binomial(value: float, n: int) -> tuple[float, str]:
    """Z binomial standard errors of a rate `value` over n items (Agresti-Coull, see the
    module docstring), and where that came from."""
    adjusted = (value * n + Z**2 / 2) / (n + Z**2)
    tolerance = Z * math.sqrt(adjusted * (1.0 - adjusted) / (n + Z**2))
    return _round_up(tolerance), f"binomial: {Z:g} SE at p={value:.3g}, n={n} (Agresti-Coull)"


# Sources of a tolerance that a multi-seed, multi-thread record measured.
_MEASURED_SOURCES = ("measured:", f"report only: {Z:g} SD over", "report only: identical over")


def expected_for(
    value: float,
    sample: Sample | None,
    spread: Spread | None = None,
    previous: ExpectedValue | None = None,
) -> ExpectedValue:
    """The recorded form of one metric: its value with a tolerance, n and the source.

    sample: what the metric is measured over (None: derived from other metrics).
    spread: its SD measured over seeds and thread counts (`--record --seeds N --threads ...`).
    previous: what was recorded before; what a multi-seed record measured (a band, or a
        spread too wide to verify) is kept when nothing new was measured.
    """
    value = float(value)
    n = sample.n if sample is not None else None
    # A spread from one run measured nothing.
    measured = spread if spread is not None and spread.runs > 1 else None
    if sample is not None and sample.kind == "report":
        return ExpectedValue(value=value, tolerance=None, source=f"report only: {sample.items}")
    if sample is not None and sample.kind == "mean" and sample.sd is not None and (n or 0) >= MIN_MEAN_ITEMS:
        standard = standard_error(value, sample, measured, previous)
        if standard is not None:
            return standard
    if measured is None and previous is not None and previous.source.startswith(_MEASURED_SOURCES):
        # What seeds and thread counts were measured to move (a band wider than the
        # binomial's, or a spread over every possible rate) holds until measured again.
        return ExpectedValue(value=value, tolerance=previous.tolerance, n=n, source=previous.source)
    if sample is not None and sample.kind == "exact":
        return ExpectedValue(value=value, tolerance=0.0, source="exact: a count or a constant")
    if sample is not None and sample.kind == "rate" and n:
        tolerance, source = binomial(value, n)
        if measured is not None and _round_up(Z * measured.sd) > tolerance:
            tolerance = _round_up(Z * measured.sd)
            if tolerance >= max(value, 1.0 - value):
                # ART's ActivationDefence re-clusters features: over 3 seeds its ASR on
                # poisoning-01 ran from 0.19 to 0.72. A band over all of [0, 1] checks nothing.
                source = f"report only: {Z:g} SD over {measured.over} (SD {measured.sd:.3g}) spans every possible rate"
                return ExpectedValue(value=value, tolerance=None, n=n, source=source)
            source = f"measured: {Z:g} SD over {measured.over} (SD {measured.sd:.3g}), wider than {source}"
        return ExpectedValue(value=value, tolerance=tolerance, n=n, source=source)
    what = f"mean over {n} {sample.items}" if sample is not None else "derived from other metrics"
    if sample is not None and (n or 0) < MIN_MEAN_ITEMS:
        return ExpectedValue(value=value, tolerance=None, n=n, source=f"report only: {what}")
    if measured is not None and measured.sd <= ROUNDING * max(1.0, abs(value)):
        # The same value in every run, up to float rounding (an attack that always uses its
        # whole budget, a score clipped at 100): nothing measured a spread, and a band as
        # narrow as the rounding would fail on the first machine that rounds differently.
        source = f"report only: identical over {measured.over}; {what}"
        return ExpectedValue(value=value, tolerance=None, n=n, source=source)
    if measured is not None:
        source = f"measured: {Z:g} SD over {measured.over} (SD {measured.sd:.3g}); {what}"
        return ExpectedValue(value=value, tolerance=_round_up(Z * measured.sd), n=n, source=source)
    return ExpectedValue(
        value=value, tolerance=None, n=n, source=f"report only: {what}; `{MEASURE}` measures it"
    )


def standard_error(
    value: float, sample: Sample, measured: Spread | None, previous: ExpectedValue | None
) -> ExpectedValue | None:
    """A mean whose items' SD the family knows: Z standard errors (sd / sqrt(n)) bound its
    tolerance from below, as the binomial does a rate's; a wider spread measured over seeds
    and thread counts (or recorded so before) widens it. None when the standard error is
    float rounding (then the other rules apply).

    Why: three seeds on one machine measure how a mean moves with the seed, not with the
    items a new machine draws. membership-01's floor advantage (a mean over 32 random
    partitions, SD 0.0117 each) had 3 SD over 3 seeds x 2 thread counts of 0.0013; a new
    machine moved it 0.0014. Its 3 SE are 0.0062."""
    assert sample.n and sample.sd is not None
    floor = _round_up(Z * sample.sd / math.sqrt(sample.n))
    if floor <= ROUNDING * max(1.0, abs(value)):
        return None
    source = f"standard error: {Z:g} SE of a mean over {sample.n} {sample.items} (SD {sample.sd:.3g} each)"
    if measured is not None and _round_up(Z * measured.sd) > floor:
        wider = f"measured: {Z:g} SD over {measured.over} (SD {measured.sd:.3g}), wider than {source}"
        return ExpectedValue(value=value, tolerance=_round_up(Z * measured.sd), n=sample.n, source=wider)
    # A wider band a multi-seed record measured holds until measured again.
    if measured is None and previous is not None and previous.source.startswith("measured:") and (
        (previous.tolerance or 0.0) > floor
    ):
        return ExpectedValue(value=value, tolerance=previous.tolerance, n=sample.n, source=previous.source)
    return ExpectedValue(value=value, tolerance=floor, n=sample.n, source=source)


def _round_up(tolerance: float) -> float:
    """Two significant digits, rounded up so the written tolerance never shrinks."""
    if tolerance <= 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(tolerance)) - 1)
    return math.ceil(tolerance / scale - 1e-9) * scale


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class Check:
    scenario: str
    metric: str
    expected: ExpectedValue
    found: float | None
    spread: Spread | None = None  # measured over seeds (and thread counts), with `verify --seeds N`
    threads: int | None = None  # set when one verify checked several thread counts

    @property
    def status(self) -> str:
        """ok, drift, missing (no longer produced), or report (shown, never verified)."""
        tolerance = self.expected.tolerance
        if self.found is None:
            return "missing"
        if tolerance is None:  # not verified
            return "report"
        within = abs(self.found - self.expected.value) <= tolerance + SLACK * max(1.0, abs(self.found))
        return "ok" if within else "drift"

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "report")

    @property
    def difference(self) -> float:
        return math.nan if self.found is None else self.found - self.expected.value

    @property
    def covered(self) -> bool | None:
        """Does the tolerance cover Z SD of the spread measured over seeds and thread counts?
        None if unmeasured."""
        tolerance = self.expected.tolerance
        if self.spread is None or self.spread.runs < 2 or tolerance is None:
            return None
        return tolerance + SLACK >= Z * self.spread.sd

    @property
    def name(self) -> str:
        """The metric, and the thread count when one run checked several."""
        return self.metric if self.threads is None else f"{self.metric} [{self.threads} threads]"

    def describe(self) -> str:
        """One line: the metric, expected ± tolerance (source), found, difference."""
        expected = self.expected
        band = f"± {expected.tolerance:.3g}" if expected.verified else "(not verified)"
        found = "nothing (the metric is no longer produced)" if self.found is None else f"{self.found:.4g}"
        text = f"{self.scenario} {self.name}: expected {expected.value:.4g} {band} ({expected.source}), found {found}"
        if self.found is not None:
            text += f", difference {self.difference:+.3g}"
        return text

    def to_json(self) -> dict[str, Any]:
        expected = self.expected
        payload = {
            "scenario": self.scenario,
            "metric": self.metric,
            "expected": expected.value,
            "found": self.found,
            "difference": None if self.found is None else self.difference,
            "tolerance": expected.tolerance,
            "n": expected.n,
            "source": expected.source,
            "status": self.status,
            "ok": self.ok,
        }
        if self.threads is not None:
            payload["threads"] = self.threads
        if self.spread is not None:
            payload.update(spread_sd=self.spread.sd, spread_over=self.spread.over, covered=self.covered)
        return payload


def compare(
    scenario: ScenarioBase,
    metrics: dict[str, float],
    spreads: dict[str, Spread] | None = None,
    threads: int | None = None,
) -> list[Check]:
    """One check per recorded metric; a metric that is no longer produced fails."""
    spreads = spreads or {}
    return [
        Check(scenario.id, name, expected, metrics.get(name), spreads.get(name), threads)
        for name, expected in scenario.expected.items()
    ]


def spreads_of(runs: list[dict[str, float]], over: str = "") -> dict[str, Spread]:
    """Each metric's SD over several runs (seeds, thread counts) of one scenario."""
    return {name: Spread.of([run[name] for run in runs if name in run], over) for name in runs[0]}


@dataclass
class Outcome:
    """What one `secureml verify` found: the checks, the scenarios that failed to run, the
    files it recorded."""

    checks: list[Check]
    errors: dict[str, str]
    recorded: list[Path]
    # Every run: {"scenario", "seed", "threads", "metrics", "samples"}, for `--json`.
    runs: list[dict[str, Any]]


def verify_scenarios(
    scenarios: list[ScenarioBase],
    ctx,
    *,
    seeds: int = 1,
    thread_counts: tuple[int | None, ...] = (None,),
    record_values: bool = False,
) -> Outcome:
    """Run each scenario's reference solution at its seed (and the next seeds - 1), at each
    thread count, then compare with (or, with `record_values`, record) its expected values.

    The checks compare each thread count's run at the recorded seed; the spread pools every
    run. `--record` writes the values of the first thread count. ctx: the RunContext; with
    several thread counts its cache must not be read (a result computed at one count would
    stand in for the other).
    """
    outcome = Outcome([], {}, [], [])
    several = len(thread_counts) > 1
    varied = [f"{seeds} seeds"] if seeds > 1 else []
    varied += ["threads " + ",".join(map(str, thread_counts))] if several else []
    over = " x ".join(varied)
    for scenario in scenarios:
        seed_list = runner.seeds_for(scenario, seeds)
        runs: dict[int | None, list] = {}
        try:
            for threads in thread_counts:
                set_threads(threads)
                runs[threads] = [
                    runner.run(scenario.with_seed(seed), mitigation=scenario.solution_path, ctx=ctx).evaluation
                    for seed in seed_list
                ]
        except SecuremlError as error:
            outcome.errors[scenario.id] = error.message()
            continue
        outcome.runs += [
            {
                "scenario": scenario.id,
                "seed": seed,
                "threads": threads or thread_count(),
                "metrics": evaluation.metrics,
                "samples": {name: sample.to_json() for name, sample in evaluation.samples.items()},
            }
            for threads, evaluations in runs.items()
            for seed, evaluation in zip(seed_list, evaluations, strict=True)
        ]
        every = [evaluation.metrics for evaluations in runs.values() for evaluation in evaluations]
        spreads = spreads_of(every, over) if len(every) > 1 else None
        if record_values:
            first = runs[thread_counts[0]][0]
            outcome.recorded.append(record(scenario, first.metrics, first.samples, spreads))
            continue
        if not scenario.expected:
            outcome.errors[scenario.id] = f"no expected values recorded; run `{MEASURE} {scenario.id}`"
        for threads, evaluations in runs.items():
            outcome.checks += compare(scenario, evaluations[0].metrics, spreads, threads if several else None)
    return outcome


# --------------------------------------------------------------------------- recording


def record(
    scenario: ScenarioBase,
    metrics: dict[str, float],
    samples: dict[str, Sample],
    spreads: dict[str, Spread] | None = None,
) -> Path:
    """Rewrite the file's trailing `expected:` block with these metrics; comments elsewhere stay."""
    path = scenario.source
    if path is None:
        raise ConfigError("cannot record: the scenario was not loaded from a file")
    spreads = spreads or {}
    lines = ["expected:"]
    for name in sorted(metrics):
        entry = expected_for(metrics[name], samples.get(name), spreads.get(name), scenario.expected.get(name))
        lines.append(f"  {json.dumps(name)}: {_flow(entry)}")
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
    return write_atomically(path, head + "\n".join(lines) + "\n")


def _flow(entry: ExpectedValue) -> str:
    """One YAML flow mapping; the source as a JSON string, which YAML reads back unchanged."""
    tolerance = "null" if entry.tolerance is None else f"{entry.tolerance:.6g}"
    n = "" if entry.n is None else f", n: {entry.n}"
    return f"{{value: {entry.value:.6g}, tolerance: {tolerance}{n}, source: {json.dumps(entry.source)}}}"


def _only_expected_after(block: str) -> bool:
    top_level = [line for line in block.splitlines()[1:] if line and not line[0].isspace() and not line.startswith("#")]
    return not top_level


# --------------------------------------------------------------------------- reports


def junit_xml(checks: list[Check], errors: dict[str, str], properties: dict[str, Any]) -> str:
    """A JUnit report: one test case per scenario metric, plus one per scenario that errored.

    Metrics reported without verification are `skipped`, with their reason. The suite's
    properties carry the environment (CPU, torch build, threads, versions), so that two
    reports from two machines can be compared.
    """
    suite = ElementTree.Element(
        "testsuite",
        name="secureml verify",
        tests=str(len(checks) + len(errors)),
        failures=str(sum(not check.ok for check in checks)),
        errors=str(len(errors)),
        skipped=str(sum(check.status == "report" for check in checks)),
    )
    listed = ElementTree.SubElement(suite, "properties")
    for name, value in _flatten(properties):
        ElementTree.SubElement(listed, "property", name=name, value=str(value))
    for check in checks:
        case = ElementTree.SubElement(suite, "testcase", classname=check.scenario, name=check.name)
        if check.status == "report":
            ElementTree.SubElement(case, "skipped", message=check.expected.source)
        elif not check.ok:
            ElementTree.SubElement(case, "failure", message=f"metric {check.status}").text = check.describe()
        ElementTree.SubElement(case, "system-out").text = check.describe()
    for scenario_id, message in errors.items():
        case = ElementTree.SubElement(suite, "testcase", classname=scenario_id, name="run")
        ElementTree.SubElement(case, "error", message="the scenario did not run").text = message
    return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True)


def _flatten(properties: dict[str, Any], prefix: str = ""):
    for name, value in properties.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value


STATUS_STYLE = {"ok": "green", "report": "dim", "drift": "red", "missing": "red"}


def checks_table(checks: list[Check]) -> Table:
    """The terminal table: every check with its tolerance, n, source and (with --seeds) spread."""
    table = Table(title="secureml verify", title_justify="left")
    measured = any(check.spread is not None for check in checks)
    headers = ["scenario", "metric", "expected", "found", "diff", "tolerance", "n", "source"]
    headers += ["spread SD", "covers"] if measured else []
    numeric = ("expected", "found", "diff", "tolerance", "n", "spread SD")
    for header in [*headers, ""]:
        table.add_column(header, justify="right" if header in numeric else "left")
    for check in checks:
        expected = check.expected
        cells = [
            check.scenario,
            check.name,
            f"{expected.value:.4g}",
            "missing" if check.found is None else f"{check.found:.4g}",
            _difference(check),
            f"{expected.tolerance:.3g}" if expected.verified else "-",
            "" if expected.n is None else str(expected.n),
            expected.source,
        ]
        if measured:
            covered = {True: "yes", False: "[yellow]NO[/yellow]", None: ""}[check.covered]
            cells += ["" if check.spread is None else f"{check.spread.sd:.3g}", covered]
        style = STATUS_STYLE[check.status]
        label = {"report": "report", "ok": "ok"}.get(check.status, check.status.upper())
        # The first 8 cells are text from the scenario file; the rest is our own markup.
        safe = [escape(cell) if index < 8 else cell for index, cell in enumerate(cells)]
        table.add_row(*safe, f"[{style}]{label}[/{style}]")
    return table


def _difference(check: Check) -> str:
    if check.found is None:
        return ""
    # Values are recorded to 6 significant digits: a difference below that is none.
    within = abs(check.difference) <= SLACK * max(1.0, abs(check.found))
    return f"{0.0 if within else check.difference:+.3g}"
