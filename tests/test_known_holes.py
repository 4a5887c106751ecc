"""Gaming holes found and not yet closed, recorded as strict expected failures: each test
asserts what the grader should reach (a score of at most 10), so it fails today, and
passes (XPASS, a failure under strict) once the evaluation is stronger. Then remove the
`xfail` and move the row of tests/gaming/README.md to the closed ones.

Pristine data (found in stop 23): the grader's images are the bundled dataset's, which a
trainee has (the wheel bundles mnist-5k, MNIST is public, and a folder submission may ship
50 MB). Extraction's and membership's automatic variants now distort every image afresh
(`secureml.scenario.Distortion`), and a graded run scores the lower of the public lab and
the variant, so extraction's lookup is answered (tests/test_variants.py). Two stay open:
- poisoning: its variants are not distorted, because poisoning-01's reference did not hold
  on distorted ones (17.4 on one), so the lookup scores 100 in `grade` too;
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
@pytest.mark.parametrize(("scenario_id", "gaming", "options"), [
    # Poisoning's variants are not distorted, so the public lab stands for both.
    ("poisoning-01", "poisoning_pristine_lookup.py", ()),
    # The stronger of the two membership files (83.5 against 48.1; tests/gaming/README.md).
    ("membership-01", "membership_pristine_augmented.py", ("--variant", "auto")),
])
def test_a_submission_using_the_pristine_dataset_scores_near_zero(scenario_id, gaming, options, tmp_path):
    result = secureml("run", scenario_id, "--mitigation", str(GAMING / gaming), *options,
                      "--json", "--out", str(tmp_path))
    if result.returncode != 0:
        pytest.fail(f"the run failed:\n{result.stderr}")
    score = json.loads(result.stdout)["score"]
    assert score <= 10, score
