"""Grading a workshop: each trainee's mitigation in its own sandbox, scored by the parent.

    submissions.py  discover_submissions(SUBMISSIONS, unpack_dir) -> Discovery  (a folder, or a zip unpacked safely)
    job.py          grade_submission(GradeJob) -> GradeRow                     (one submission; never raises)
    executors.py    SerialExecutor, LocalPool (--jobs N), executor_for        (how jobs run)
    workshop.py     grade_workshop(scenario, SUBMISSIONS, ...) -> GradeReport  (skip, fan out, record each row)

Presentation (the rows table, the progress bar, the JSON report) is in secureml.report.
"""

from __future__ import annotations

from secureml.grading.executors import Executor, LocalPool, SerialExecutor, executor_for
from secureml.grading.job import (
    DEFAULT_CHILD_THREADS,
    HIDDEN_VARIANT_FEEDBACK,
    MAX_SCORE,
    VARIANT_FEEDBACK,
    GradeJob,
    grade_submission,
    graded_config_sha256,
)
from secureml.grading.submissions import (
    MITIGATION_NAME,
    Discovery,
    Submission,
    SubmissionsError,
    discover_submissions,
)
from secureml.grading.workshop import (
    NO_GRADE_PROGRESS,
    GradeProgress,
    GradeReport,
    GraderUnavailable,
    GradeSettings,
    GradingIncomplete,
    IsolationUnavailable,
    automatic_variant,
    grade_workshop,
    preflight,
    resolve_isolation,
    sweep_leftovers,
)

__all__ = [
    "DEFAULT_CHILD_THREADS", "HIDDEN_VARIANT_FEEDBACK", "MAX_SCORE", "MITIGATION_NAME",
    "NO_GRADE_PROGRESS", "VARIANT_FEEDBACK",
    "Discovery", "Executor", "GradeJob", "GradeProgress", "GradeReport", "GradeSettings",
    "GraderUnavailable", "GradingIncomplete", "IsolationUnavailable", "LocalPool",
    "SerialExecutor", "Submission", "SubmissionsError",
    "automatic_variant", "discover_submissions", "executor_for", "grade_submission",
    "grade_workshop", "graded_config_sha256", "preflight", "resolve_isolation", "sweep_leftovers",
]
