"""Gaming holes found and not yet closed, recorded as strict expected failures: each test
asserts what the grader should reach (a score of at most 10), so it fails today, and
passes (XPASS, a failure under strict) once the evaluation is stronger. Then remove the
`xfail` and move the row of tests/gaming/README.md to the closed ones.

Pristine data (found in stop 23): the grader's clean training images, its honest users'
queries and its non-members and test images are the bundled dataset's images exactly as
they are, and a trainee has that dataset (the wheel bundles it, MNIST is public, and a
folder submission may ship 50 MB). A filter or an API that asks "is this input a
pristine image?" separates the attacker's inputs from everyone else's without learning
anything, and a model trained on every pristine image has no non-members left and is
tested on its training set. What would answer it is evaluation data the trainee cannot
hold: records kept by the grader only (not derived from a public set), or every image
the grader uses transformed per run with a grader-only seed, so that no pristine image
matches and an approximate match is as hard as the lab's own problem.
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
    ("poisoning-01", "poisoning_pristine_lookup.py"),
    ("extraction-01", "extraction_pristine_lookup.py"),
    ("membership-01", "membership_pristine_training.py"),
])
def test_a_submission_using_the_pristine_dataset_scores_near_zero(scenario_id, gaming, tmp_path):
    result = secureml("run", scenario_id, "--mitigation", str(GAMING / gaming), "--json", "--out", str(tmp_path))
    if result.returncode != 0:
        pytest.fail(f"the run failed:\n{result.stderr}")
    score = json.loads(result.stdout)["score"]
    assert score <= 10, score
