"""An instructor publishes a graded workshop to Canvas or Moodle with a roster: the exact
columns each platform imports, every trainee listed (none dropped, none given a zero they
did not earn), UTF-8, RFC 4180 quoting and no spreadsheet formulas from trainee text."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from click.testing import CliRunner

from secureml.cli import cli
from secureml.gradebook import (
    CANVAS_STUDENT_COLUMNS,
    MOODLE_STUDENT_COLUMNS,
    ExportOptions,
    Gradebook,
    GradebookError,
    export,
    match_roster,
    render_canvas,
)
from secureml.roster import ROSTER_COLUMNS, load_roster
from test_gradebook import make_row

ROSTER = (
    ",".join(ROSTER_COLUMNS) + "\n"
    'alice,"Liddell, Alice",1234,S-001,aliddell,Section A,alice@example.edu\n'
    "bob,Bob Müller,1235,S-002,bmuller,Section B,bob@example.edu\n"
    "carol,Carol,1236,,,Section A,carol@example.edu\n"
    "dave,Dave,1237,S-004,dave,Section B,dave@example.edu\n"
    "eve,=1+1,1238,S-005,eve,Section B,eve@example.edu\n"
)


@pytest.fixture
def course(tmp_path) -> tuple[Path, Path]:
    """A gradebook of one scenario and its roster: alice scored, bob's code raised, the
    grader failed on carol, dave handed nothing in, eve scored, and "=cmd" (a file name
    that is a formula) is not in the roster."""
    db = tmp_path / "course.db"
    feedback = ["Kept 96% of clean images."]
    rows = [
        make_row("alice", score=87.5, feedback=feedback),
        make_row("bob", status="error", error="ValueError: <b>bad</b> shapes", feedback=["Fix it."]),
        make_row("carol", status="infra-error", error="the sandbox failed", feedback=[]),
        make_row("eve", score=40.0, feedback=[]),
        make_row("=cmd", score=100.0, feedback=[]),
    ]
    with Gradebook.open(db) as book:
        for row in rows:
            book.record(row)
    roster = tmp_path / "roster.csv"
    roster.write_text(ROSTER, encoding="utf-8")
    return db, roster


def run_export(db: Path, roster: Path, fmt: str, output: Path, *extra: str):
    result = CliRunner().invoke(cli, ["gradebook", "--db", str(db), "--export", fmt, "--roster", str(roster),
                                      "--output", str(output), *extra])
    assert result.exit_code == 0, result.output
    return result


def test_canvas_export_has_canvas_columns_points_possible_and_every_trainee(course, tmp_path):
    db, roster = course
    output = tmp_path / "canvas.csv"
    result = run_export(db, roster, "canvas", output, "--assignment-id", "4321", "--points", "20")
    assert output.read_bytes().decode("utf-8") == (
        "Student,ID,SIS User ID,SIS Login ID,Section,poisoning-01 (4321)\r\n"
        "    Points Possible,,,,,20.00\r\n"
        '"Liddell, Alice",1234,S-001,aliddell,Section A,17.50\r\n'
        "Bob Müller,1235,S-002,bmuller,Section B,0.00\r\n"  # the trainee's own failure: 0
        "Carol,1236,,,Section A,\r\n"  # the grader failed: no grade yet
        "Dave,1237,S-004,dave,Section B,\r\n"  # no submission: empty, not a zero
        "'=1+1,1238,S-005,eve,Section B,8.00\r\n"  # a formula is neutralised
        "not in the roster: =cmd,,,,,20.00\r\n"  # graded but not in the roster: listed last
    )
    # The instructor is told who could not be paired (on stderr; stdout stays the table).
    assert "1 graded trainee(s) have no line" in result.output and "=cmd" in result.output
    assert "1 trainee(s) of the roster have no graded submission" in result.output and "dave" in result.output


def test_canvas_export_without_an_assignment_id_names_the_column_by_title(course, tmp_path):
    db, roster = course
    output = tmp_path / "canvas.csv"
    run_export(db, roster, "canvas", output, "--assignment-title", "Lab 1: backdoors")
    header, points_possible = list(csv.reader(io.StringIO(output.read_text(encoding="utf-8"))))[:2]
    assert header == [*CANVAS_STUDENT_COLUMNS, "Lab 1: backdoors"]
    assert points_possible == ["    Points Possible", "", "", "", "", "100.00"]


def test_moodle_export_keeps_each_grade_with_its_feedback(course, tmp_path):
    db, roster = course
    output = tmp_path / "moodle.csv"
    run_export(db, roster, "moodle", output, "--points", "10")
    assert output.read_bytes().decode("utf-8") == (
        "Full name,ID number,Email address,poisoning-01,poisoning-01 (Feedback)\r\n"
        '"Liddell, Alice",S-001,alice@example.edu,8.75,"Score: 87.5 / 100.0\n\nFeedback:\n'
        '- Kept 96% of clean images."\r\n'
        # Moodle shows feedback as HTML: trainee text is escaped, so it reads as typed.
        'Bob Müller,S-002,bob@example.edu,0.00,"Status: error. Score: 0 / 100.0\n\n'
        'ValueError: &lt;b&gt;bad&lt;/b&gt; shapes\n\nFeedback:\n- Fix it."\r\n'
        'Carol,,carol@example.edu,,"The grader failed for reasons unrelated to your submission, '
        'so it has no score yet. Your instructor will grade it again; you do not need to resubmit."\r\n'
        "Dave,S-004,dave@example.edu,,\r\n"
        "'=1+1,S-005,eve@example.edu,4.00,Score: 40.0 / 100.0\r\n"
        # An identity no Moodle user has: Moodle stops the import on it, by name.
        "'=cmd,not in the roster: =cmd,not in the roster: =cmd,10.00,Score: 100.0 / 100.0\r\n"
    )
    assert next(csv.reader(io.StringIO(output.read_text(encoding="utf-8"))))[:3] == list(MOODLE_STUDENT_COLUMNS)


def test_the_unlisted_trainees_name_is_neutralised_where_it_starts_a_cell(tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_text(",".join(ROSTER_COLUMNS) + "\nalice,,,,,,\n", encoding="utf-8")
    text = render_canvas([make_row("@SUM(A1)")], ExportOptions(roster=load_roster(roster)))
    assert text.splitlines()[-1] == "not in the roster: @SUM(A1),,,,,87.50"
    moodle = export([make_row("@SUM(A1)")], "moodle", tmp_path / "m.csv", ExportOptions(roster=load_roster(roster)))
    assert "'@SUM(A1),not in the roster: @SUM(A1)," in moodle[0].read_text(encoding="utf-8")


def test_match_roster_drops_nobody(course):
    db, roster = course
    with Gradebook.open(db) as book:
        matched = match_roster(book.latest("poisoning-01"), load_roster(roster))
    assert [(entry.trainee if entry else None, row.trainee if row else None) for entry, row in matched.lines] == [
        ("alice", "alice"), ("bob", "bob"), ("carol", "carol"), ("dave", None), ("eve", "eve"), (None, "=cmd")]
    assert matched.unlisted == ["=cmd"] and matched.without_submission == ["dave"]


def test_platform_options_are_refused_where_they_would_be_ignored(course, tmp_path):
    db, roster = course
    without_roster = CliRunner().invoke(cli, ["gradebook", "--db", str(db), "--export", "canvas"])
    assert without_roster.exit_code == 6 and "the canvas export needs a roster" in without_roster.output
    for args, message in (
        (["--export", "csv", "--roster", str(roster)], "the csv export takes no roster"),
        (["--export", "moodle", "--roster", str(roster), "--assignment-id", "12"],
         "the moodle export takes no assignment id"),
        (["--export", "canvas", "--roster", str(roster), "--assignment-id", "12a"],
         "the assignment id must be Canvas's number"),
    ):
        result = CliRunner().invoke(cli, ["gradebook", "--db", str(db), "--output", str(tmp_path / "x"), *args])
        assert result.exit_code == 6 and message in result.output and "Traceback" not in result.output, result.output
        assert not (tmp_path / "x").exists()
    no_export = CliRunner().invoke(cli, ["gradebook", "--db", str(db), "--roster", str(roster)])
    assert no_export.exit_code == 2 and "need --export canvas or moodle" in no_export.output
    with pytest.raises(GradebookError, match="points must be a number above 0"):
        export([], "canvas", tmp_path / "y.csv", ExportOptions(roster=load_roster(roster), points=float("nan")))


def test_grade_checks_the_roster_before_it_grades_anything(tmp_path):
    (tmp_path / "submissions").mkdir()
    (tmp_path / "submissions/alice.py").write_text("def sanitize(x, y, tools):\n    return None\n")
    roster = tmp_path / "roster.csv"
    roster.write_text("trainee\nalice\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["grade", "poisoning-01", str(tmp_path / "submissions"), "--db",
                                      str(tmp_path / "g.db"), "--export", "canvas", "--roster", str(roster)])
    assert result.exit_code == 6 and "the header lacks the columns name, lms_id" in result.output
    assert not (tmp_path / "g.db").exists()  # nothing was graded, not even a gradebook made


def test_default_export_paths_come_from_the_format_registry(course, tmp_path, monkeypatch):
    db, roster = course
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["gradebook", "--db", str(db), "--export", "moodle", "--roster", str(roster)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "poisoning-01-moodle.csv").is_file()
