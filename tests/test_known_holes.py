"""Gaming holes found and not yet closed, recorded as strict expected failures: each test
asserts what the grader should reach (a score of at most 10), so it fails today, and
passes (XPASS, a failure under strict) once the evaluation is stronger. Then remove the
`xfail` and move the row of tests/gaming/README.md to the closed ones.

Pristine data (found in stop 23): the grader's images are the bundled dataset's, which a
trainee has (the wheel bundles mnist-5k, MNIST is public, and a folder submission may ship
50 MB). The automatic variants of poisoning, extraction and membership now distort every
image afresh (`secureml.scenario.Distortion`), and a graded run scores the lower of the
public lab and the variant, so poisoning's and extraction's lookups are answered
(tests/test_variants.py). Two stay open:
- poisoning: a filter that drops every image whose label differs from its nearest shipped
  image's finds the original of almost every image (poisoning's distortion is mild, alpha
  8, because its reference judges images by their pixels), so dirty-label poison stands
  out without learning what poison looks like;
- membership: its non-members and test images are distorted copies of shipped images,
  and a model trained on the shipped images and on copies distorted alike has nearly seen
  them.
What would answer both is evaluation data the trainee cannot hold: records kept by the
grader only, not derived from a public set.
"""

from __future__ import annotations

import json

import pytest

from conftest import REPO, secureml

GAMING = REPO / "tests" / "gaming"


@pytest.mark.slow
# raises=AssertionError: only the score's assertion is the expected failure; a run that
# crashes fails the test.
@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="known hole: the pristine dataset (tests/gaming/README.md)")
@pytest.mark.parametrize(("scenario_id", "gaming"), [
    ("poisoning-01", "poisoning_pristine_label_check.py"),
    # The stronger of the two membership files (83.5 against 48.1; tests/gaming/README.md).
    ("membership-01", "membership_pristine_augmented.py"),
])
def test_a_defence_using_the_pristine_dataset_scores_near_zero_on_a_variant(scenario_id, gaming, tmp_path):
    result = secureml("run", scenario_id, "--mitigation", str(GAMING / gaming), "--variant", "auto", "--json",
                      "--out", str(tmp_path))
    if result.returncode != 0:
        pytest.fail(f"the run failed:\n{result.stderr}")
    score = json.loads(result.stdout)["score"]
    assert score <= 10, score
