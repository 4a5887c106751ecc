"""Gaming holes found and not yet closed, recorded as strict expected failures: each test
asserts what the grader should reach (a score of at most 10), so it fails today, and
passes (XPASS, a failure under strict) once the evaluation is stronger. Then remove the
`xfail` and move the row of tests/gaming/README.md to the closed ones.

Pristine data (found in stop 23): the grader's images are the bundled dataset's, which a
trainee has (the wheel bundles mnist-5k, MNIST is public, and a folder submission may ship
50 MB). Automatic variants now distort every image afresh (`secureml.scenario.Distortion`),
so a lookup of the inputs finds nothing (tests/test_variants.py), and a graded run scores
the lower of the public lab and the variant. Membership stays open: its non-members and
test images are distorted copies of shipped images, and a model trained on the shipped
images, or on copies distorted alike, has nearly seen them. What would answer it is
evaluation data the trainee cannot hold: records kept by the grader only, not derived
from a public set.
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
def test_a_membership_model_trained_on_the_pristine_dataset_scores_near_zero_on_a_variant(tmp_path):
    # The stronger of the two membership files (85.7 against 45.1; tests/gaming/README.md).
    gaming = GAMING / "membership_pristine_augmented.py"
    result = secureml("run", "membership-01", "--mitigation", str(gaming), "--variant", "auto",
                      "--json", "--out", str(tmp_path))
    if result.returncode != 0:
        pytest.fail(f"the run failed:\n{result.stderr}")
    score = json.loads(result.stdout)["score"]
    assert score <= 10, score
