"""Gaming holes found and not yet closed, recorded as strict expected failures: each test
asserts what the grader should reach (a score of at most 10), so it fails today, and
passes (XPASS, a failure under strict) once the evaluation is stronger. Then remove the
`xfail` and move the row of tests/gaming/README.md to the closed ones.

Pristine-data lookup (found in stop 23): the grader's clean images, and the honest users'
queries, are the bundled dataset's images exactly as they are, and a trainee has that
dataset. A filter or API that asks "is this input a pristine image?" separates the
attacker's inputs from everyone else's without learning anything. What would answer it
is data the trainee cannot hold a pristine copy of: every image the grader uses
transformed per run (a seeded deformation and noise), so that no pristine image matches
and an approximate match is as hard as the lab's own problem.
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
                   reason="known hole: lookup against the pristine dataset (tests/gaming/README.md)")
@pytest.mark.parametrize(("scenario_id", "gaming"), [
    ("poisoning-01", "poisoning_pristine_lookup.py"),
    ("extraction-01", "extraction_pristine_lookup.py"),
])
def test_a_lookup_against_the_pristine_dataset_scores_near_zero(scenario_id, gaming, tmp_path):
    result = secureml("run", scenario_id, "--mitigation", str(GAMING / gaming), "--json", "--out", str(tmp_path))
    if result.returncode != 0:
        pytest.fail(f"the run failed:\n{result.stderr}")
    score = json.loads(result.stdout)["score"]
    assert score <= 10, score
