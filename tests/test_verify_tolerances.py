"""How `verify` turns what a metric is measured over into a tolerance, and how it shows it.

Pure functions on recorded values: no model runs here (test_verify.py runs the scenarios).
"""

from __future__ import annotations

import math
import shutil
import xml.etree.ElementTree as ET

import pytest
import yaml

from conftest import REPO
from secureml import scenario as scenarios
from secureml import verify
from secureml.families.base import EXACT, Sample
from secureml.scenario import ExpectedValue


def test_a_rate_over_100_images_at_0_92_gets_three_binomial_standard_errors():
    expected = verify.expected_for(0.92, Sample.rate(100, "attacked test images"))
    plain = math.sqrt(0.92 * 0.08 / 100)  # 0.027, the example
    # Agresti-Coull: 4.5 successes and failures added, p' = 96.5 / 109.
    adjusted = math.sqrt((96.5 / 109) * (12.5 / 109) / 109)
    assert 3 * adjusted <= expected.tolerance <= 3 * adjusted + 0.001  # rounded up, never down
    assert 3 * plain < expected.tolerance < 4 * plain
    assert expected.n == 100
    assert expected.source == "binomial: 3 SE at p=0.92, n=100 (Agresti-Coull)"


def test_a_rate_of_zero_still_allows_a_few_images():
    # 0 of 100 allows 5.7 images: evasion-02's victim went from 0 to 4 images robust to
    # FGSM between 2 and 1 threads, more than a "rule of three" floor (3 images) allows.
    expected = verify.expected_for(0.0, Sample.rate(100, "attacked test images"))
    assert 0.057 <= expected.tolerance <= 0.058
    assert verify.Check("evasion-02", "victim.robust_accuracy.fgsm", expected, found=0.04).ok
    assert verify.expected_for(1.0, Sample.rate(1000, "test images")).tolerance == pytest.approx(0.0063, abs=1e-4)


def test_a_spread_over_seeds_wider_than_binomial_wins_and_says_so():
    expected = verify.expected_for(0.64, Sample.rate(900, "triggered test images"), verify.Spread(0.05, 5, "5 seeds"))
    assert expected.tolerance == pytest.approx(0.15)
    assert expected.source.startswith("measured: 3 SD over 5 seeds")
    assert "wider than binomial" in expected.source


def test_a_rate_whose_measured_spread_spans_every_possible_rate_is_reported_not_verified():
    # poisoning-01's ActivationDefence ASR over 3 seeds x 2 thread counts: 0.19 to 0.72.
    expected = verify.expected_for(0.64, Sample.rate(900, "triggered test images"), verify.Spread(0.25, 6, "3 seeds"))
    assert expected.tolerance is None
    assert expected.source == "report only: 3 SD over 3 seeds (SD 0.25) spans every possible rate"


def test_a_mean_over_a_few_fooled_images_is_reported_but_not_verified():
    # evasion-01's mean CW perturbation over 8 fooled images moved from 0.144 to 0.105
    # between two machines; no fixed band fits a mean over so few images.
    expected = verify.expected_for(0.144, Sample.mean(8, "images cw-l2 fooled"), verify.Spread(0.002, 5, "5 seeds"))
    assert expected.tolerance is None
    assert expected.source == "report only: mean over 8 images cw-l2 fooled"
    check = verify.Check("evasion-01", "mitigated.mean_perturbation.cw-l2", expected, found=0.105)
    assert check.status == "report" and check.ok


def test_a_mean_whose_items_spread_is_known_gets_three_standard_errors_even_when_seeds_agree():
    # membership-01's floor advantage: a mean over 32 random partitions (SD 0.0117 each).
    # 3 SD over 3 seeds x threads 2,1 was 0.0013, and a new machine moved it 0.0014.
    sample = Sample.mean(32, "random partitions", sd=0.0117)
    seeds = verify.Spread(0.00043, 6, "3 seeds x threads 2,1")
    expected = verify.expected_for(0.0482, sample, seeds)
    assert expected.tolerance == pytest.approx(0.0063)  # 3 * 0.0117 / sqrt(32) = 0.00621, rounded up
    assert expected.n == 32
    assert expected.source == "standard error: 3 SE of a mean over 32 random partitions (SD 0.0117 each)"
    assert verify.Check("membership-01", "floor.advantage", expected, found=0.0482 - 0.0014).ok
    # A record without seeds gives the same band.
    assert verify.expected_for(0.0482, sample).tolerance == expected.tolerance


def test_results_json_keeps_the_items_sd_only_where_the_family_reports_one():
    assert Sample.mean(40, "images pgd fooled", sd=0.05).to_json() == {
        "kind": "mean", "n": 40, "items": "images pgd fooled", "sd": 0.05
    }
    assert Sample.rate(1000, "test images").to_json() == {"kind": "rate", "n": 1000, "items": "test images"}


def test_a_mean_that_seeds_move_more_than_its_standard_error_takes_the_wider_band():
    sample = Sample.mean(86, "images hop-skip-jump fooled", sd=0.05)
    expected = verify.expected_for(0.80, sample, verify.Spread(0.02, 6, "3 seeds x threads 2,1"))
    assert expected.tolerance == pytest.approx(0.06)
    assert expected.source.startswith("measured: 3 SD over 3 seeds x threads 2,1 (SD 0.02), wider than standard error")
    # Recorded again without seeds, the measured band holds.
    again = verify.expected_for(0.81, sample, previous=expected)
    assert (again.tolerance, again.source) == (expected.tolerance, expected.source)


def test_a_mean_of_identical_items_or_too_few_follows_the_other_rules():
    pinned = verify.expected_for(0.2, Sample.mean(90, "images pgd fooled", sd=0.0), verify.Spread(0.0, 6, "6 runs"))
    assert pinned.tolerance is None and pinned.source.startswith("report only: identical over 6 runs")
    few = verify.expected_for(0.13, Sample.mean(3, "images cw-l2 fooled", sd=0.05))
    assert few.tolerance is None and few.source == "report only: mean over 3 images cw-l2 fooled"


def test_a_derived_metric_takes_three_sd_measured_over_seeds_and_keeps_it_when_recorded_again():
    measured = verify.expected_for(86.9, None, verify.Spread(4.0, 5, "5 seeds"))
    assert measured.tolerance == 12.0 and measured.source.startswith("measured: 3 SD over 5 seeds")
    again = verify.expected_for(88.0, None, previous=measured)
    assert (again.value, again.tolerance, again.source) == (88.0, 12.0, measured.source)
    unmeasured = verify.expected_for(88.0, None, previous=ExpectedValue(value=86.9, tolerance=10.0))
    assert unmeasured.tolerance is None and "--seeds" in unmeasured.source


def test_a_derived_metric_identical_in_every_run_is_reported_not_given_a_zero_band():
    # A score clipped at 100 in every run measured no spread; 0 +- 0 would fail on the
    # first machine that rounds differently.
    expected = verify.expected_for(100.0, None, verify.Spread(0.0, 6, "3 seeds x threads 2,1"))
    assert expected.tolerance is None
    assert expected.source.startswith("report only: identical over 3 seeds x threads 2,1")
    # An attack pinned at its budget: its mean perturbation is epsilon up to float32 rounding.
    for value, sd in ((0.3, 2.5e-8), (0.99997, 5.4e-6)):
        pinned = verify.expected_for(value, Sample.mean(94, "images fooled"), verify.Spread(sd, 6, "3 seeds"))
        assert pinned.tolerance is None and pinned.source.startswith("report only: identical")


def test_counts_and_constants_must_reproduce_exactly():
    expected = verify.expected_for(0.0, EXACT)
    assert expected.tolerance == 0.0 and expected.source.startswith("exact")
    assert verify.Check("s", "mitigated.flags", expected, 0.0).ok
    assert verify.Check("s", "mitigated.flags", expected, 1.0).status == "drift"


def test_drift_names_metric_expected_found_tolerance_and_source():
    expected = verify.expected_for(0.92, Sample.rate(100, "attacked test images"))
    check = verify.Check("evasion-01", "mitigated.robust_accuracy", expected, found=0.80)
    assert check.status == "drift"
    text = check.describe()
    expected_parts = (
        "evasion-01", "mitigated.robust_accuracy", "0.92", "± 0.092", "binomial: 3 SE at p=0.92, n=100", "0.8", "-0.12"
    )
    for part in expected_parts:
        assert part in text, part


def test_a_metric_no_longer_produced_is_missing_and_fails():
    check = verify.Check("s", "gone", ExpectedValue(value=1.0, tolerance=0.1), found=None)
    assert check.status == "missing" and not check.ok
    assert "no longer produced" in check.describe()


def test_seeds_show_whether_a_tolerance_covers_the_measured_spread():
    expected = verify.expected_for(0.92, Sample.rate(100, "attacked test images"))
    assert verify.Check("s", "m", expected, 0.92, verify.Spread(0.02, 5, "5 seeds")).covered is True
    assert verify.Check("s", "m", expected, 0.92, verify.Spread(0.04, 5, "5 seeds")).covered is False
    assert verify.Check("s", "m", expected, 0.92).covered is None


def test_junit_report_carries_the_environment_tolerance_and_source(tmp_path):
    rate = verify.expected_for(0.92, Sample.rate(100, "attacked test images"))
    mean = verify.expected_for(0.144, Sample.mean(8, "images cw-l2 fooled"))
    checks = [
        verify.Check("evasion-01", "mitigated.robust_accuracy", rate, 0.80),
        verify.Check("evasion-01", "mitigated.clean_accuracy", rate, 0.93),
        verify.Check("evasion-01", "mitigated.mean_perturbation.cw-l2", mean, 0.105),
    ]
    environment = {"threads": 2, "cpu": {"model": "AMD EPYC", "flags": "avx avx2"}, "torch": {"build": "cpu"}}
    suite = ET.fromstring(verify.junit_xml(checks, {"inversion-01": "boom"}, environment))
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["cpu.model"] == "AMD EPYC" and properties["torch.build"] == "cpu"
    assert properties["threads"] == "2"
    counts = tuple(suite.get(name) for name in ("tests", "failures", "errors", "skipped"))
    assert counts == ("4", "1", "1", "1")
    failure = suite.find("testcase[@name='mitigated.robust_accuracy']/failure")
    assert "binomial: 3 SE at p=0.92, n=100 (Agresti-Coull)" in failure.text and "found 0.8" in failure.text
    skipped = suite.find("testcase[@name='mitigated.mean_perturbation.cw-l2']/skipped")
    assert skipped.get("message") == "report only: mean over 8 images cw-l2 fooled"


def test_record_writes_value_tolerance_n_and_source_that_load_back(tmp_path):
    path = tmp_path / "evasion-01.yaml"
    shutil.copy(REPO / "scenarios" / "evasion-01.yaml", path)
    loaded = scenarios.load(path)
    metrics = {"victim.clean_accuracy": 0.955, "mitigated.mean_perturbation.cw-l2": 0.144, "score": 86.86}
    samples = {
        "victim.clean_accuracy": Sample.rate(1000, "test images"),
        "mitigated.mean_perturbation.cw-l2": Sample.mean(8, "images cw-l2 fooled"),
    }
    verify.record(loaded, metrics, samples, {"score": verify.Spread(3.1, 5, "5 seeds")})
    again = scenarios.load(path)
    assert again.expected["victim.clean_accuracy"] == ExpectedValue(
        value=0.955, tolerance=0.021, n=1000, source="binomial: 3 SE at p=0.955, n=1000 (Agresti-Coull)"
    )
    assert again.expected["mitigated.mean_perturbation.cw-l2"].tolerance is None
    assert again.expected["score"].tolerance == pytest.approx(9.3)
    text = path.read_text()
    assert text.startswith("# White-box")  # comments above the block stay
    assert yaml.safe_load(text)["expected"]["score"]["source"].startswith("measured: 3 SD over 5 seeds")


@pytest.mark.parametrize("path", sorted((REPO / "scenarios").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_recorded_value_says_where_its_tolerance_came_from(path):
    for name, expected in scenarios.load(path).expected.items():
        assert expected.source.split(":")[0] in ("binomial", "standard error", "measured", "report only", "exact"), name
        if expected.source.startswith(("binomial", "standard error")):
            assert expected.n, name


def test_a_pick_among_a_few_options_is_reported_even_when_seeds_measured_a_spread():
    # extraction-01's queries_used: which of 250, 500 or 1,000 answers made the best copy.
    # Over 3 seeds x threads 2,1 its SD was 258, so 3 SD held every share and checked nothing.
    sample = Sample.report("the budget share whose copy was most faithful, a pick among 3 shares")
    expected = verify.expected_for(500, sample, verify.Spread(258, 6, "3 seeds x threads 2,1"))
    assert expected.tolerance is None
    assert expected.source == "report only: the budget share whose copy was most faithful, a pick among 3 shares"
