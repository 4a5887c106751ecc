"""The gradebook: grading results, their SQLite store, and their exports.

    row.py      GradeRow (validated once, where the grader builds it), Status, points
    store.py    Gradebook: the SQLite file every grading run records into at once
    exports.py  the ExportFormat registry: csv, json, gradescope, html, canvas, moodle

Every trainee's submission for a scenario is run and scored by the grader, which writes
one `GradeRow` per submission as soon as it finishes. The store survives a crashed or
`kill -9`'d grading run, and several grading processes may write to it at once.

Only the standard library (and secureml.errors, secureml.files, secureml.roster) is used
here, so `secureml grade`, the exports and `--help` start instantly and work on machines
without torch.
"""

from __future__ import annotations

from secureml.gradebook.exports import (
    CANVAS_STUDENT_COLUMNS,
    EXPORT_FORMATS,
    GRADESCOPE_VISIBILITIES,
    MOODLE_STUDENT_COLUMNS,
    ExportFormat,
    ExportOptions,
    RosterMatch,
    export,
    gradescope_grader_failure,
    gradescope_results,
    match_roster,
    render_canvas,
    render_csv,
    render_gradescope,
    render_html,
    render_json,
    render_moodle,
    score_histogram,
    trainee_report,
)
from secureml.gradebook.row import (
    INFRA_ERROR_MESSAGE,
    STATUSES,
    GradebookError,
    GradebookTooNewError,
    GradeRow,
    InvalidGradeRowError,
    NotAGradebookError,
    Status,
    UnknownExportFormatError,
    error_kind,
    error_summary,
    gradebook_points,
    latest_per_trainee,
    now_utc_iso,
    trainee_error_view,
)
from secureml.gradebook.store import SCHEMA_VERSION, Gradebook

__all__ = [
    "CANVAS_STUDENT_COLUMNS",
    "EXPORT_FORMATS",
    "GRADESCOPE_VISIBILITIES",
    "INFRA_ERROR_MESSAGE",
    "MOODLE_STUDENT_COLUMNS",
    "SCHEMA_VERSION",
    "STATUSES",
    "ExportFormat",
    "ExportOptions",
    "GradeRow",
    "Gradebook",
    "GradebookError",
    "GradebookTooNewError",
    "InvalidGradeRowError",
    "NotAGradebookError",
    "RosterMatch",
    "Status",
    "UnknownExportFormatError",
    "error_kind",
    "error_summary",
    "export",
    "gradebook_points",
    "gradescope_grader_failure",
    "gradescope_results",
    "latest_per_trainee",
    "match_roster",
    "now_utc_iso",
    "render_canvas",
    "render_csv",
    "render_gradescope",
    "render_html",
    "render_json",
    "render_moodle",
    "score_histogram",
    "trainee_error_view",
    "trainee_report",
]
