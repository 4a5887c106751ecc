"""The gradebook's exports: what instructors upload or read, from GradeRows.

A CSV for an LMS gradebook, a JSON dump, Gradescope `results.json` files, a one-file HTML
report, and the gradebook imports of Canvas and Moodle (with a roster, secureml.roster).
A new format is a new entry in EXPORT_FORMATS. Every export uses the newest row of each
trainee, and each file is written whole or not at all (secureml.files). Only the
standard library.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
import io
import json
import math
import os
import re
import statistics
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secureml.files import write_atomically
from secureml.gradebook.row import (
    INFRA_ERROR_MESSAGE,
    STATUSES,
    GradebookError,
    GradeRow,
    Status,
    UnknownExportFormatError,
    gradebook_points,
    graded_at_us,
    latest_per_trainee,
    trainee_error_view,
)
from secureml.roster import ROSTER_COLUMNS, Roster, RosterEntry
from secureml.scoring import SCORE_FACTORS


def _require_one_scenario(rows: Sequence[GradeRow], fmt: str) -> str | None:
    scenario_ids = sorted({row.scenario_id for row in rows})
    if len(scenario_ids) > 1:
        raise GradebookError(
            f"The {fmt} export covers one scenario, but the rows come from {len(scenario_ids)}: "
            f"{', '.join(scenario_ids)}. Export each with gradebook.latest(scenario_id)."
        )
    return scenario_ids[0] if scenario_ids else None


def _format_number(number: float | None) -> str:
    # repr gives the shortest text that reads back as the same float.
    return "" if number is None else repr(float(number))


# Cells starting with these are run as formulas by Excel, LibreOffice and Sheets.
# The list is OWASP's "CSV injection" one: = + - @, tab and carriage return.
_FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def _csv_text(text: str) -> str:
    """Neutralise spreadsheet formulas in a text cell: a trainee names their own file."""
    return "'" + text if text.startswith(_FORMULA_TRIGGERS) else text


def render_csv(rows: Iterable[GradeRow]) -> str:
    """A CSV for LMS gradebook imports, from the newest row of each trainee of one scenario.

    Columns: student_id, score, max_score, status, flags (what an instructor should
    review, "; "-separated, e.g. suspected gradient masking), owasp and atlas (the
    threat's OWASP ML Top 10 and MITRE ATLAS technique ids), then `part:<name>` and
    `metric:<name>` columns in sorted order (empty where a row lacks one). The
    score column holds `gradebook_points`: 0 for the trainee's own failures, empty
    for infra-errors. Text cells that a spreadsheet would run as a formula get a
    leading quote; numbers are written by us and left alone, so -0.5 stays a number.
    """
    latest_rows = latest_per_trainee(rows)
    _require_one_scenario(latest_rows, "csv")
    part_names = sorted({name for row in latest_rows for name in row.parts})
    metric_names = sorted({name for row in latest_rows for name in row.metrics})
    header = ["student_id", "score", "max_score", "status", "flags", "owasp", "atlas"]
    header += [f"part:{name}" for name in part_names]
    header += [f"metric:{name}" for name in metric_names]
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # RFC 4180: quoted where needed, CRLF line ends
    writer.writerow([_csv_text(cell) for cell in header])
    for row in latest_rows:
        writer.writerow(
            [
                _csv_text(row.trainee),
                _format_number(gradebook_points(row)),
                _format_number(row.max_score),
                _csv_text(row.status),
                _csv_text("; ".join(row.flags)),
                row.taxonomy.get("owasp", ""),
                row.taxonomy.get("atlas_technique", ""),
                *(_format_number(row.parts.get(name)) for name in part_names),
                *(_format_number(row.metrics.get(name)) for name in metric_names),
            ]
        )
    return buffer.getvalue()


# ------------------------------------------------------------- LMS imports (roster)


@dataclass(frozen=True)
class ExportOptions:
    """Settings of the exports that a learning platform imports (canvas, moodle).

    roster: who each trainee is on the platform (secureml.roster.load_roster).
    assignment_title: the assignment's name in the gradebook; by default the scenario id.
    assignment_id: Canvas's id of the assignment (digits), which Canvas matches first.
    points: what the assignment is worth; a score of 87.5 / 100 becomes 0.875 * points.
    """

    roster: Roster | None = None
    assignment_title: str | None = None
    assignment_id: str | None = None
    points: float = 100.0


@dataclass(frozen=True)
class RosterMatch:
    """Roster lines paired with graded rows.

    lines: every roster entry in the roster's order, with its row or None (no submission),
        then every graded row that no roster entry names, with None, sorted by trainee.
    """

    lines: list[tuple[RosterEntry | None, GradeRow | None]]

    @property
    def unlisted(self) -> list[str]:
        """Trainees graded but absent from the roster."""
        return [row.trainee for entry, row in self.lines if entry is None and row is not None]

    @property
    def without_submission(self) -> list[str]:
        """Roster trainees with no graded submission."""
        return [entry.trainee for entry, row in self.lines if entry is not None and row is None]


def match_roster(rows: Iterable[GradeRow], roster: Roster) -> RosterMatch:
    """Pair the newest row of each trainee with the roster; nothing of either is dropped."""
    by_trainee = {row.trainee: row for row in latest_per_trainee(rows)}
    lines: list[tuple[RosterEntry | None, GradeRow | None]] = [
        (entry, by_trainee.pop(entry.trainee, None)) for entry in roster.entries
    ]
    lines += [(None, by_trainee[trainee]) for trainee in sorted(by_trainee)]
    return RosterMatch(lines)


def _lms_rows(rows: Iterable[GradeRow], options: ExportOptions, fmt: str) -> tuple[str, RosterMatch]:
    """The assignment's title and the roster match of one scenario's rows."""
    if options.roster is None:
        raise GradebookError(f"the {fmt} export needs a roster", fix="pass ExportOptions(roster=...)")
    latest_rows = latest_per_trainee(rows)
    scenario_id = _require_one_scenario(latest_rows, fmt)
    title = options.assignment_title or scenario_id or "secureml"
    return title, match_roster(latest_rows, options.roster)


def _lms_points(row: GradeRow | None, options: ExportOptions) -> str:
    """The row's points on the assignment's scale, two decimals as Canvas exports them; empty
    when there is no grade (no submission, or the grader failed): the instructor decides."""
    points = None if row is None else gradebook_points(row)
    if row is None or points is None:
        return ""
    return f"{points / row.max_score * options.points:.2f}"


def _unlisted_identity(row: GradeRow) -> str:
    """What identity cells of a submission without a roster line hold: a value no platform
    user has, so that an import stops on it by name instead of guessing (Moodle gives a
    line with an empty identity the previous line's student)."""
    return f"not in the roster: {row.trainee}"


# Canvas's gradebook import (lib/gradebook_importer.rb): the student columns in the order
# Canvas's own export writes them, one column per assignment named "TITLE (ID)", then a
# row whose first cell says "Points Possible".
CANVAS_STUDENT_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
CANVAS_POINTS_POSSIBLE = "    Points Possible"  # with the indent Canvas's export gives it


def render_canvas(rows: Iterable[GradeRow], options: ExportOptions) -> str:
    """A CSV for Canvas's gradebook import (Grades, Import), one line per roster trainee.

    Canvas matches a line by ID, then SIS User ID, then SIS Login ID, then the name.
    A submission without a roster line is listed last as "not in the roster: NAME" with
    empty ids, which Canvas's import preview shows as a student to match by hand; a
    roster trainee without a submission gets an empty grade, not a zero.
    """
    title, matched = _lms_rows(rows, options, "canvas")
    column = f"{title} ({options.assignment_id})" if options.assignment_id else title
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # RFC 4180: quoted where needed, CRLF line ends
    writer.writerow([*CANVAS_STUDENT_COLUMNS, _csv_text(column)])
    writer.writerow([CANVAS_POINTS_POSSIBLE, "", "", "", "", f"{options.points:.2f}"])
    for entry, row in matched.lines:
        if entry is None:
            assert row is not None
            identities = [_unlisted_identity(row), "", "", "", ""]
        else:
            identities = [entry.name or entry.trainee, entry.lms_id, entry.sis_user_id,
                          entry.sis_login_id, entry.section]
        writer.writerow([*(_csv_text(cell) for cell in identities), _lms_points(row, options)])
    return buffer.getvalue()


# Moodle's CSV grade import (grade/import/csv): the instructor maps one column to the user
# (by e-mail or ID number), the grade column to a grade item and the feedback column to
# that item's feedback. Both always go together: importing feedback alone wipes that
# item's grades (MoodleDocs, Grade import, note 3).
MOODLE_STUDENT_COLUMNS = ("Full name", "ID number", "Email address")


def render_moodle(rows: Iterable[GradeRow], options: ExportOptions) -> str:
    """A CSV for Moodle's grade import (Grades, Import, CSV file): grade and feedback.

    The feedback is what the trainee may read of the run (as on Gradescope), HTML-escaped
    because Moodle shows feedback as HTML. A submission without a roster line is listed
    last with "not in the roster: NAME" as its ID number and e-mail, which Moodle refuses
    by name; a roster trainee without a submission gets an empty grade, not a zero.
    """
    title, matched = _lms_rows(rows, options, "moodle")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*MOODLE_STUDENT_COLUMNS, _csv_text(title), _csv_text(f"{title} (Feedback)")])
    for entry, row in matched.lines:
        if entry is None:
            assert row is not None
            identities = [row.trainee, _unlisted_identity(row), _unlisted_identity(row)]
        else:
            identities = [entry.name or entry.trainee, entry.sis_user_id, entry.email]
        feedback = "" if row is None else html.escape(trainee_report(row, detailed=False), quote=False)
        writer.writerow([*(_csv_text(cell) for cell in identities), _lms_points(row, options),
                         _csv_text(feedback)])
    return buffer.getvalue()


def render_json(rows: Iterable[GradeRow]) -> str:
    """A JSON list of the newest row of each trainee (any number of scenarios), without picture bytes."""
    return (
        json.dumps(
            [row.to_json() for row in latest_per_trainee(rows)],
            allow_nan=False,
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )


# Gradescope's visibility values, from its autograder specification
# (gradescope-autograders.readthedocs.io/en/latest/specs/, "Controlling Test Case Visibility").
GRADESCOPE_VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")

# an accuracy or utility the defence must keep, in secureml.scoring). Gradescope ranks a
# leaderboard entry "desc" (higher is better) unless told otherwise.
_SMALLER_IS_BETTER_PARTS = frozenset({"ca_drop", "clean_accuracy_drop", "utility_drop"})



def trainee_report(row: GradeRow, *, detailed: bool = True) -> str:
    """What a trainee reads about their row: score or status, the error they may see, and
    the feedback; with `detailed`, the score's parts and (not under a hidden variant) the
    metrics too. Plain text: every platform must show it as text, never as markup."""
    points = gradebook_points(row) or 0.0
    lines: list[str] = []
    if row.status == Status.OK:
        lines.append(f"Score: {points:.1f} / {row.max_score:.1f}")
        if detailed and row.parts:
            lines.append("Score parts:")
            lines += [f"  {name}: {value:.3f}" for name, value in sorted(row.parts.items())]
        if detailed and row.metrics and not row.hidden_variant:
            lines.append("Metrics:")
            lines += [f"  {name}: {value:.4f}" for name, value in sorted(row.metrics.items())]
    elif row.status == Status.INFRA_ERROR:
        lines.append(INFRA_ERROR_MESSAGE)
    else:
        lines.append(f"Status: {row.status}. Score: 0 / {row.max_score:.1f}")
        error = trainee_error_view(row)
        if error:
            lines += ["", error]
    if row.feedback:
        lines += ["", "Feedback:"]
        lines += [f"- {hint}" for hint in row.feedback]
    return "\n".join(lines)


def taxonomy_tags(row: GradeRow) -> list[str]:
    """The threat's catalogue ids as short tags, e.g. ["OWASP ML02", "ATLAS AML.T0020"]."""
    tags = []
    if row.taxonomy.get("owasp"):
        tags.append(f"OWASP {row.taxonomy['owasp']}")
    if row.taxonomy.get("atlas_technique"):
        tags.append(f"ATLAS {row.taxonomy['atlas_technique']}")
    return tags


def _taxonomy_line(rows: Sequence[GradeRow]) -> str:
    """One line naming the threat, from the newest row that knows it ("" if none does)."""
    known = [row.taxonomy for row in rows if row.taxonomy.get("owasp")]
    if not known:
        return ""
    taxonomy = known[-1]
    return (
        f"OWASP Machine Learning Security Top 10: {taxonomy['owasp']} {taxonomy.get('owasp_name', '')}. "
        f"MITRE ATLAS: {taxonomy.get('atlas_technique', '')} {taxonomy.get('atlas_technique_name', '')}, "
        f"mitigation {taxonomy.get('atlas_mitigation', '')} {taxonomy.get('atlas_mitigation_name', '')}."
    )


def gradescope_results(row: GradeRow, *, visibility: str = "visible",
                       execution_time_s: float | None = None) -> dict[str, Any]:
    """One trainee's row as a Gradescope autograder `results.json` object.

    The form follows Gradescope's "Autograder Specifications" (output format): a
    top-level `score`, which overrides the sum of the tests; the trainee's report as the
    top-level `output`; one test with the score and the full report; then one test per
    factor of the score (the score is 100 times their product) scored by its share out of
    1, one informational test per other part (no score of its own: the spec's
    "informational checks"), and the score and its parts as `leaderboard` entries. The
    top-level score overrides the tests' sum, as the spec says. Every text field is
    marked `"text"` format, because Gradescope renders the top-level output as HTML by
    default and feedback may quote the trainee's own strings. Flags, hashes and versions
    go to `extra_data`, which the spec describes only as data to be stored, not shown. An
    infra-error scores 0 on Gradescope, which has no "no grade" value; its output says the
    submission will be graded again. Under a hidden variant the output holds no free text
    of the run: an error's kind and line only, and no metrics (their names carry the
    variant's settings, e.g. an epsilon).

    visibility: when students see the results, one of hidden, after_due_date,
        after_published, visible.
    execution_time_s: the run's time; by default the row's own total.
    """
    if visibility not in GRADESCOPE_VISIBILITIES:
        raise GradebookError(
            f"Gradescope visibility {visibility!r} is not one Gradescope knows. "
            f"Use one of: {', '.join(GRADESCOPE_VISIBILITIES)}."
        )
    points = gradebook_points(row) or 0.0
    test: dict[str, Any] = {
        "name": f"{row.scenario_id} ({row.status})",
        "name_format": "text",
        "score": points,
        "max_score": row.max_score,
        "status": "passed" if row.status == Status.OK else "failed",
        "output": trainee_report(row),
        "output_format": "text",
        "visibility": visibility,
        "tags": taxonomy_tags(row),
    }
    factors = sorted(name for name in row.parts if name in SCORE_FACTORS)
    product = " x ".join(["100", *factors])
    part_tests = [_gradescope_part_test(row, name, value, factors, product, visibility)
                  for name, value in sorted(row.parts.items())]
    leaderboard = [{"name": "score", "value": points, "order": "desc"}]
    leaderboard += [
        {"name": name, "value": round(value, 6),
         "order": "asc" if name in _SMALLER_IS_BETTER_PARTS else "desc"}
        for name, value in sorted(row.parts.items())
    ]
    results: dict[str, Any] = {
        "score": points,
        "output": trainee_report(row, detailed=False),
        "output_format": "text",
        "test_output_format": "text",
        "test_name_format": "text",
        "visibility": visibility,
        # Our own prints go to stdout and may mention hidden-variant settings.
        "stdout_visibility": "hidden",
        "tests": [test, *part_tests],
        "leaderboard": leaderboard,
        "extra_data": {
            "secureml_status": row.status,
            "flags": list(row.flags),
            "submission_sha256": row.submission_sha256,
            "config_sha256": row.config_sha256,
            "seed": row.seed,
            "hidden_variant": row.hidden_variant,
            "versions": dict(row.versions),
            "graded_at": row.graded_at,
            "taxonomy": dict(row.taxonomy),
        },
    }
    if execution_time_s is None:
        execution_time_s = row.timings_s.get("total")
    if execution_time_s is not None:
        results["execution_time"] = round(execution_time_s)  # whole seconds, as in the spec
    return results


def _gradescope_part_test(row: GradeRow, name: str, value: float, factors: list[str], product: str,
                          visibility: str) -> dict[str, Any]:
    """A factor of the score as a test scored by its share (0..1, the score is their product
    times 100); any other part as an informational test with no score of its own."""
    test: dict[str, Any] = {"name_format": "text", "output_format": "text", "visibility": visibility}
    if name in factors:
        share = min(1.0, max(0.0, value))
        test.update(
            name=f"score factor {name}: {share:.3f} of 1",
            score=round(share, 4),
            max_score=1.0,
            output=f"score = {product}; {name} = {share:.4f} of 1 (`secureml show {row.scenario_id}` "
                   f"shows how it is measured).",
        )
    else:
        test.update(
            name=f"score part {name} = {value:.4f}",
            output=f"{name} = {value:.6g}: what the score's factors are made of (`secureml show "
                   f"{row.scenario_id}` shows the formula).",
        )
    return test


def gradescope_grader_failure(detail: str, *, execution_time_s: float | None = None) -> dict[str, Any]:
    """A Gradescope `results.json` object for a run the grader itself could not finish.

    The trainee reads that the grader failed and the submission will be graded again
    (Gradescope has no "no grade" value: the score is 0 until then); `detail`, the cause,
    goes to `extra_data`, which only the instructor's tools see.
    """
    results: dict[str, Any] = {
        "score": 0.0,
        "output": INFRA_ERROR_MESSAGE,
        "output_format": "text",
        "test_output_format": "text",
        "test_name_format": "text",
        "stdout_visibility": "hidden",
        "tests": [{"name": "secureml (the grader failed)", "score": 0.0, "max_score": 100.0,
                   "status": "failed", "output": INFRA_ERROR_MESSAGE}],
        "extra_data": {"secureml_status": Status.INFRA_ERROR.value, "detail": detail},
    }
    if execution_time_s is not None:
        results["execution_time"] = round(execution_time_s)
    return results


def _path_segment(trainee: str) -> str:
    """A trainee name as one safe folder name: percent-encoded, never '.' or '..'."""
    segment = urllib.parse.quote(trainee, safe="-_.")
    if segment.startswith("."):
        segment = "%2E" + segment[1:]
    return segment


def render_gradescope(rows: Iterable[GradeRow]) -> dict[str, str]:
    """Gradescope results for the newest row of each trainee of one scenario.

    Returns {"<trainee>/results.json": JSON text}, the trainee name percent-encoded
    so that it is one safe folder name.
    """
    latest_rows = latest_per_trainee(rows)
    _require_one_scenario(latest_rows, "gradescope")
    return {
        f"{_path_segment(row.trainee)}/results.json": json.dumps(
            gradescope_results(row), allow_nan=False, indent=2, ensure_ascii=False
        )
        + "\n"
        for row in latest_rows
    }


# The histogram's bins are 10 points wide; the last one, 90..100, includes 100.
_HISTOGRAM_BIN_WIDTH = 10.0


def score_histogram(rows: Iterable[GradeRow]) -> list[int]:
    """Counts of "ok" scores in 10-point bins of the 0..100 scale (as a share of max_score)."""
    bin_count = int(100 / _HISTOGRAM_BIN_WIDTH)
    counts = [0] * bin_count
    for row in rows:
        if row.status == Status.OK and row.score is not None:
            percent = 100.0 * row.score / row.max_score
            counts[min(int(percent // _HISTOGRAM_BIN_WIDTH), bin_count - 1)] += 1
    return counts


def _histogram_svg(counts: Sequence[int]) -> str:
    # Plain SVG drawn here: no plotting library, no script, scales with the page.
    width, height = 440, 200
    left, bottom, top = 30, 30, 20
    bar_width = (width - left - 10) / len(counts)
    tallest = max(max(counts), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-labelledby="histogram-title">',
        '<title id="histogram-title">Number of trainees per 10-point score band</title>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#444"/>',
    ]
    for index, count in enumerate(counts):
        bar_height = (height - bottom - top) * count / tallest
        x = left + index * bar_width
        y = height - bottom - bar_height
        low = int(index * _HISTOGRAM_BIN_WIDTH)
        label = f"{low}-{low + int(_HISTOGRAM_BIN_WIDTH)}"
        parts.append(
            f'<rect class="bar" x="{x + 2:.1f}" y="{y:.1f}" width="{bar_width - 4:.1f}" '
            f'height="{bar_height:.1f}" fill="#3b6ea5" data-bin="{label}" data-count="{count}">'
            f"<title>{label}: {count}</title></rect>"
        )
        parts.append(
            f'<text x="{x + bar_width / 2:.1f}" y="{y - 4:.1f}" text-anchor="middle" '
            f'font-size="11">{count}</text>'
        )
        parts.append(
            f'<text x="{x + bar_width / 2:.1f}" y="{height - bottom + 14:.1f}" '
            f'text-anchor="middle" font-size="10">{label}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


_HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; vertical-align: top; text-align: left; }
th { background: #f0f0f0; }
td.number { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.parts { white-space: nowrap; font-variant-numeric: tabular-nums; }
ul { margin: 0; padding-left: 1.2em; }
pre { white-space: pre-wrap; max-width: 40em; margin: 0; font-size: 0.85em; }
img { max-width: 320px; }
.status-ok { color: #1a7f37; }
.status-infra-error { color: #9a6700; }
.flag { color: #b35900; }
"""

# Only inline styles and data: images may load: even a missed escape cannot pull
# a script or a tracking pixel into the instructor's browser.
_HTML_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _html_list(items: Iterable[str], css_class: str = "") -> str:
    class_attribute = f' class="{css_class}"' if css_class else ""
    rendered = "".join(f"<li{class_attribute}>{html.escape(item)}</li>" for item in items)
    return f"<ul>{rendered}</ul>" if rendered else ""


def render_html(rows: Iterable[GradeRow]) -> str:
    """A one-file HTML report of one scenario: score histogram, status counts, a row per trainee.

    Self-contained: no scripts, and no assets from the network; pictures are data
    URIs. Every string a trainee can influence is escaped.
    """
    latest_rows = latest_per_trainee(rows)
    scenario_id = _require_one_scenario(latest_rows, "html")
    title = f"Gradebook: {scenario_id}" if scenario_id else "Gradebook: no submissions"
    scores = [row.score for row in latest_rows if row.status == Status.OK and row.score is not None]
    status_counts = dict.fromkeys(STATUSES, 0)
    for row in latest_rows:
        status_counts[row.status] += 1

    body = [f"<h1>{html.escape(title)}</h1>"]
    taxonomy = _taxonomy_line(sorted(latest_rows, key=graded_at_us))
    if taxonomy:
        body.append(f'<p class="taxonomy">{html.escape(taxonomy)}</p>')
    summary = f"{len(latest_rows)} trainees, {len(scores)} scored"
    if scores:
        summary += (
            f"; mean {statistics.fmean(scores):.1f}, median {statistics.median(scores):.1f}"
        )
    body.append(f"<p>{html.escape(summary)}. Each trainee's newest submission counts.</p>")
    body.append("<h2>Score distribution</h2>")
    body.append(_histogram_svg(score_histogram(latest_rows)))
    body.append(
        f"<p>Scores of the {len(scores)} scored submissions in 10-point bands "
        "(90-100 includes 100). Submissions that did not run to a score are counted below.</p>"
    )
    body.append('<table class="statuses"><tr><th>Status</th><th>Trainees</th></tr>')
    body += [
        f'<tr><td class="status-{status}">{status}</td><td class="number">{count}</td></tr>'
        for status, count in status_counts.items()
    ]
    body.append("</table>")

    body.append("<h2>Trainees</h2>")
    body.append(
        '<table class="trainees"><tr><th>Trainee</th><th>Status</th><th>Score</th>'
        "<th>Parts</th><th>Flags</th><th>Feedback</th><th>Picture</th></tr>"
    )
    for row in latest_rows:
        points = gradebook_points(row)
        # The same points as the CSV: 0 for the trainee's own failures, none yet for infra-errors.
        score_text = "not graded" if points is None else f"{points:.1f} / {row.max_score:.0f}"
        parts_text = [f"{name}: {value:.3f}" for name, value in sorted(row.parts.items())]
        feedback_cell = _html_list(row.feedback)
        if row.error:
            feedback_cell += f"<pre>{html.escape(row.error)}</pre>"
        if row.picture_png is not None:
            encoded = base64.b64encode(row.picture_png).decode("ascii")
            picture_cell = (
                f'<img src="data:image/png;base64,{encoded}" '
                f'alt="{html.escape(row.trainee)}: picture of the run">'
            )
        else:
            picture_cell = ""
        body.append(
            "<tr>"
            f"<td>{html.escape(row.trainee)}</td>"
            f'<td class="status-{html.escape(row.status)}">{html.escape(row.status)}</td>'
            f'<td class="number">{score_text}</td>'
            f'<td class="parts">{_html_list(parts_text)}</td>'
            f"<td>{_html_list(row.flags, 'flag')}</td>"
            f"<td>{feedback_cell}</td>"
            f"<td>{picture_cell}</td>"
            "</tr>"
        )
    body.append("</table>")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_HTML_CSP}">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_HTML_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


_Writer = Callable[[Sequence[GradeRow], Path, ExportOptions], list[Path]]


def _write_single_file(render: Callable[[Sequence[GradeRow], ExportOptions], str]) -> _Writer:
    def write(rows: Sequence[GradeRow], output_path: Path, options: ExportOptions) -> list[Path]:
        if output_path.is_dir():
            raise GradebookError(
                f"{output_path} is a folder, but this export writes one file. Give a file name."
            )
        write_atomically(output_path, render(rows, options))
        return [output_path]

    return write


def _without_options(render: Callable[[Sequence[GradeRow]], str]) -> Callable[[Sequence[GradeRow], ExportOptions], str]:
    return lambda rows, _options: render(rows)


def _write_gradescope(rows: Sequence[GradeRow], output_folder: Path, _options: ExportOptions) -> list[Path]:
    if output_folder.exists() and not output_folder.is_dir():
        raise GradebookError(
            f"{output_folder} is a file, but the gradescope export writes a folder with one "
            "<trainee>/results.json per trainee. Give a folder path."
        )
    output_folder.mkdir(parents=True, exist_ok=True)
    written = []
    for relative_path, text in render_gradescope(rows).items():
        path = output_folder / relative_path
        write_atomically(path, text)
        written.append(path)
    return written


@dataclass(frozen=True)
class ExportFormat:
    """One export format: what it writes, the function that writes it, where by default.

    default_output: the path when none is given; {scenario} is the scenario id, or "all".
    options: the ExportOptions fields it reads; a platform's import needs the roster.
    """

    description: str
    write: _Writer
    default_output: str
    options: frozenset[str] = frozenset()


EXPORT_FORMATS: dict[str, ExportFormat] = {
    "csv": ExportFormat("one CSV file for LMS gradebook imports",
                        _write_single_file(_without_options(render_csv)), "{scenario}-grades.csv"),
    "json": ExportFormat("one JSON file listing the rows, without pictures",
                         _write_single_file(_without_options(render_json)), "{scenario}-grades.json"),
    "gradescope": ExportFormat(
        "a folder with <trainee>/results.json in Gradescope's autograder format", _write_gradescope,
        "{scenario}-gradescope",
    ),
    "html": ExportFormat("one self-contained HTML report",
                         _write_single_file(_without_options(render_html)), "{scenario}-grades.html"),
    "canvas": ExportFormat("one CSV file for Canvas's gradebook import (needs a roster)",
                           _write_single_file(render_canvas), "{scenario}-canvas.csv",
                           frozenset({"roster", "assignment_title", "assignment_id", "points"})),
    "moodle": ExportFormat("one CSV file of grades and feedback for Moodle's grade import (needs a roster)",
                           _write_single_file(render_moodle), "{scenario}-moodle.csv",
                           frozenset({"roster", "assignment_title", "points"})),
}


def export(rows: Iterable[GradeRow], fmt: str, output_path: str | os.PathLike[str],
           options: ExportOptions = ExportOptions()) -> list[Path]:
    """Write `rows` in format `fmt` to `output_path`; return the files written.

    Every format uses the newest row of each trainee. Only json covers several scenarios.
    For "gradescope", output_path is a folder that receives one <trainee>/results.json per
    trainee. canvas and moodle need `options.roster`; each format refuses options it does
    not use, so that a setting meant for one platform is never silently dropped.
    """
    if fmt not in EXPORT_FORMATS:
        known = ", ".join(f"{name} ({spec.description})" for name, spec in EXPORT_FORMATS.items())
        raise UnknownExportFormatError(f"Unknown export format {fmt!r}. Known formats: {known}.")
    spec = EXPORT_FORMATS[fmt]
    _check_options(fmt, spec, options)
    return spec.write(list(rows), Path(output_path), options)


def _check_options(fmt: str, spec: ExportFormat, options: ExportOptions) -> None:
    defaults = ExportOptions()
    for field in dataclasses.fields(ExportOptions):
        if field.name not in spec.options and getattr(options, field.name) != getattr(defaults, field.name):
            takers = [name for name, each in EXPORT_FORMATS.items() if field.name in each.options]
            raise GradebookError(f"the {fmt} export takes no {field.name.replace('_', ' ')}",
                                 fix=f"leave it out: only {' and '.join(takers)} use it")
    if "roster" in spec.options and options.roster is None:
        raise GradebookError(
            f"the {fmt} export needs a roster: who each trainee is on the platform",
            fix="pass --roster FILE.csv (columns: " + ",".join(ROSTER_COLUMNS) + ")",
        )
    if not (isinstance(options.points, (int, float)) and math.isfinite(options.points) and options.points > 0):
        raise GradebookError(f"the assignment's points must be a number above 0, got {options.points!r}",
                             fix="pass --points 100, or what the assignment is worth")
    if options.assignment_id is not None and not re.fullmatch(r"[0-9]{1,20}", options.assignment_id):
        # Canvas reads "TITLE (ID)" with digits only; anything else would create a new assignment.
        raise GradebookError(f"the assignment id must be Canvas's number, got {options.assignment_id!r}",
                             fix="copy the number from the assignment's address: .../assignments/12345")
