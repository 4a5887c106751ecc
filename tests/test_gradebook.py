"""The gradebook: an instructor grades a workshop, re-runs it, and exports the grades."""

from __future__ import annotations

import csv
import hashlib
import html.parser
import io
import json
import math
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from dataclasses import replace
from pathlib import Path

import pytest

from secureml.gradebook import (
    EXPORT_FORMATS,
    SCHEMA_VERSION,
    STATUSES,
    ExportOptions,
    Gradebook,
    GradebookError,
    GradebookTooNewError,
    GradeRow,
    InvalidGradeRowError,
    NotAGradebookError,
    UnknownExportFormatError,
    export,
    gradescope_results,
    latest_per_trainee,
    render_csv,
    render_gradescope,
    render_html,
    render_json,
    score_histogram,
)
from secureml.roster import Roster, RosterEntry

TESTS_FOLDER = Path(__file__).resolve().parent


def tiny_png(shade: int = 128) -> bytes:
    """A valid 1x1 grey PNG, built by hand so the tests need no imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)  # 1x1, 8-bit greyscale
    pixels = zlib.compress(bytes([0, shade]))  # filter byte 0, one pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_row(
    trainee: str = "alice",
    *,
    scenario_id: str = "poisoning-01",
    submission: str = "v1",
    status: str = "ok",
    score: float | None = 87.5,
    graded_at: str = "2025-03-01T10:00:00+00:00",
    **changes: object,
) -> GradeRow:
    """A realistic row; also imported by the subprocesses the crash tests start."""
    row = GradeRow(
        scenario_id=scenario_id,
        trainee=trainee,
        submission_sha256=sha(f"{trainee}/{submission}"),
        status=status,
        score=score if status == "ok" else None,
        max_score=100.0,
        parts={"der": 0.93, "asr_drop": 0.9, "ca_drop": 0.01},
        metrics={"clean_accuracy": 0.95, "attack_success_rate": 0.03},
        flags=[],
        feedback=["Your filter kept 96% of clean images."],
        error="" if status == "ok" else "ValueError: shapes (3,) and (4,) not aligned",
        timings_s={"mitigation": 3.2, "evaluate": 1.1, "total": 4.5},
        seed=1234,
        config_sha256=sha("poisoning-01.yaml"),
        hidden_variant=False,
        versions={"secureml": "0.1.0", "torch": "2.14.1", "art": "1.20.1", "python": "3.11.7"},
        picture_png=tiny_png(),
        graded_at=graded_at,
        taxonomy={"owasp": "ML02", "owasp_name": "Data Poisoning Attack", "atlas_technique": "AML.T0020",
                  "atlas_technique_name": "Poison Training Data", "atlas_mitigation": "AML.M0007",
                  "atlas_mitigation_name": "Sanitize Training Data"},
    )
    return replace(row, **changes) if changes else row


@pytest.fixture
def gradebook_path(tmp_path: Path) -> Path:
    return tmp_path / "gradebook.sqlite"


def run_writer(gradebook_path: Path, script: str) -> subprocess.Popen[str]:
    """Start a Python process that imports this test module and runs `script`."""
    prelude = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(TESTS_FOLDER)!r})
        from test_gradebook import make_row
        from secureml.gradebook import Gradebook
        path = {str(gradebook_path)!r}
        """
    )
    return subprocess.Popen(
        [sys.executable, "-c", prelude + textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# ---------------------------------------------------------------- storing grades


def test_a_recorded_row_reads_back_exactly(gradebook_path: Path) -> None:
    row = make_row(
        "zoë",
        flags=["needs-review: gradient masking suspected"],
        feedback=["Bien joué ✓", "second hint"],
        hidden_variant=True,
        graded_at="2025-03-01T10:00:00.123456Z",
    )
    with Gradebook.open(gradebook_path) as gradebook:
        gradebook.record(row)
    with Gradebook.open(gradebook_path) as gradebook:
        assert gradebook.rows() == [row]
        assert gradebook.rows()[0].picture_png == tiny_png()


def test_regrading_skips_unchanged_submissions_via_has(gradebook_path: Path) -> None:
    with Gradebook.open(gradebook_path) as gradebook:
        gradebook.record(make_row("alice", submission="v1"))
        config = sha("poisoning-01.yaml")
        assert gradebook.has("poisoning-01", "alice", sha("alice/v1"))
        assert gradebook.has("poisoning-01", "alice", sha("alice/v1"), config_sha256=config)
        # Changed submission, new trainee, other scenario, changed scenario config: grade again.
        assert not gradebook.has("poisoning-01", "alice", sha("alice/v2"))
        assert not gradebook.has("poisoning-01", "bob", sha("bob/v1"))
        assert not gradebook.has("evasion-01", "alice", sha("alice/v1"))
        assert not gradebook.has(
            "poisoning-01", "alice", sha("alice/v1"), config_sha256=sha("edited.yaml")
        )


def test_submissions_the_grader_failed_on_are_graded_again(gradebook_path: Path) -> None:
    with Gradebook.open(gradebook_path) as gradebook:
        gradebook.record(make_row("carol", status="infra-error"))
        assert not gradebook.has("poisoning-01", "carol", sha("carol/v1"))
        assert gradebook.has("poisoning-01", "carol", sha("carol/v1"), count_infra_errors=True)
        # The trainee's own crash is a final grade, not retried.
        gradebook.record(make_row("dave", status="error"))
        assert gradebook.has("poisoning-01", "dave", sha("dave/v1"))


def test_grading_the_same_submission_again_replaces_its_row(gradebook_path: Path) -> None:
    with Gradebook.open(gradebook_path) as gradebook:
        gradebook.record(make_row("carol", status="infra-error"))
        regraded = make_row("carol", score=71.0, graded_at="2025-03-01T11:00:00+00:00")
        gradebook.record(regraded)
        assert gradebook.rows() == [regraded]


def test_latest_row_per_trainee_wins_in_exports(gradebook_path: Path) -> None:
    first = make_row("alice", submission="v1", score=40.0, graded_at="2025-03-01T10:00:00Z")
    # Written earlier than v1 in the file, but graded later: graded_at decides.
    resubmitted = make_row("alice", submission="v2", score=90.0, graded_at="2025-03-01T10:00:00.500000Z")
    bob = make_row("bob", score=55.0)
    with Gradebook.open(gradebook_path) as gradebook:
        for row in (resubmitted, bob, first):
            gradebook.record(row)
        assert len(gradebook.rows("poisoning-01")) == 3
        latest = gradebook.latest("poisoning-01")
        assert latest == [resubmitted, bob]
        all_rows = gradebook.rows()

    # Every export collapses to the newest row per trainee, even when given all rows.
    csv_rows = list(csv.DictReader(io.StringIO(render_csv(all_rows))))
    assert [(r["student_id"], r["score"]) for r in csv_rows] == [("alice", "90.0"), ("bob", "55.0")]
    json_rows = json.loads(render_json(all_rows))
    assert [(r["trainee"], r["score"]) for r in json_rows] == [("alice", 90.0), ("bob", 55.0)]
    assert json.loads(render_gradescope(all_rows)["alice/results.json"])["score"] == 90.0
    assert "40.0" not in render_html(all_rows)


def test_non_finite_scores_are_rejected(gradebook_path: Path) -> None:
    for bad in (
        {"score": math.nan},
        {"score": math.inf},
        {"parts": {"der": math.nan}},
        {"metrics": {"clean_accuracy": -math.inf}},
        {"timings_s": {"total": math.nan}},
    ):
        with pytest.raises(InvalidGradeRowError, match="not a finite number"):
            make_row(**bad)
    with Gradebook.open(gradebook_path) as gradebook:
        assert gradebook.rows() == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"status": "crashed"}, "not a grading status"),
        ({"status": "error", "score": None, "error": "boom", "parts": {}}, None),
        ({"status": "ok", "score": None}, "score is None"),
        ({"score": 101.0}, "outside 0..100"),
        ({"feedback": "a single hint"}, "Wrap a single message in a list"),
        ({"picture_png": b"GIF89a..."}, "PNG signature"),
        ({"graded_at": "2025-03-01T10:00:00"}, "not an ISO-8601 time in UTC"),
        ({"graded_at": "2025-03-01T11:00:00+01:00"}, "not an ISO-8601 time in UTC"),
        ({"submission_sha256": "sha256:abc"}, "64 lowercase hex digits"),
        ({"seed": True}, "seed must be an int"),
        ({"error": "leftover"}, "error must be empty"),
    ],
)
def test_rows_that_cannot_be_stored_honestly_are_rejected_with_a_reason(
    changes: dict[str, object], message: str | None
) -> None:
    if message is None:  # the control case: a valid error row
        assert make_row(**changes).score is None
        return
    with pytest.raises(InvalidGradeRowError, match=message):
        make_row(**changes)


def test_a_failed_submission_cannot_carry_a_score() -> None:
    with pytest.raises(InvalidGradeRowError, match=r"score is 50\.0 although status is 'timeout'"):
        replace(make_row(status="timeout"), score=50.0)


def test_rows_written_before_a_crash_survive_kill_9(gradebook_path: Path) -> None:
    writer = run_writer(
        gradebook_path,
        """
        with Gradebook.open(path) as gradebook:
            index = 0
            while True:  # until killed
                gradebook.record(make_row(f"trainee{index:05d}", score=float(index % 101)))
                print(index, flush=True)  # printed only after the commit returned
                index += 1
        """,
    )
    acknowledged: list[int] = []
    deadline = time.monotonic() + 20
    try:
        assert writer.stdout is not None
        while len(acknowledged) < 40 and time.monotonic() < deadline:
            line = writer.stdout.readline()
            if not line:
                break
            acknowledged.append(int(line))
    finally:
        os.kill(writer.pid, signal.SIGKILL)  # a real kill -9, mid-write most likely
        remaining, errors = writer.communicate(timeout=10)
    assert writer.returncode == -signal.SIGKILL
    assert len(acknowledged) >= 40, f"the writer stalled: {errors}"
    acknowledged += [int(line) for line in remaining.split()]

    database = sqlite3.connect(gradebook_path)
    assert database.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    database.close()
    with Gradebook.open(gradebook_path) as gradebook:
        stored = {row.trainee: row for row in gradebook.rows()}
    for index in acknowledged:
        trainee = f"trainee{index:05d}"
        assert stored[trainee] == make_row(trainee, score=float(index % 101))
    # At most the row in flight at the kill went in without being acknowledged.
    assert len(stored) - len(acknowledged) in (0, 1)


def test_two_processes_writing_at_once_lose_no_rows(gradebook_path: Path) -> None:
    rows_per_writer = 150
    # Both start on a file that does not exist yet, so they also race to create it.
    writers = [
        run_writer(
            gradebook_path,
            f"""
            with Gradebook.open(path) as gradebook:
                for index in range({rows_per_writer}):
                    row = make_row(f"w{name}-{{index:03d}}")
                    gradebook.record(row)
                    assert gradebook.has(row.scenario_id, row.trainee, row.submission_sha256)
            """,
        )
        for name in ("a", "b")
    ]
    for writer in writers:
        _, errors = writer.communicate(timeout=60)
        assert writer.returncode == 0, errors
    with Gradebook.open(gradebook_path) as gradebook:
        trainees = sorted(row.trainee for row in gradebook.rows())
    expected = sorted(f"w{name}-{index:03d}" for name in "ab" for index in range(rows_per_writer))
    assert trainees == expected


def test_opening_a_file_that_is_not_a_gradebook_fails_clearly_and_leaves_it_alone(
    tmp_path: Path,
) -> None:
    grades_csv = tmp_path / "grades.csv"
    grades_csv.write_text("student_id,score\nalice,90\n")
    with pytest.raises(NotAGradebookError, match="not a secureml gradebook"):
        Gradebook.open(grades_csv)
    assert grades_csv.read_text() == "student_id,score\nalice,90\n"

    other_app = tmp_path / "other.sqlite"
    database = sqlite3.connect(other_app)
    database.execute("CREATE TABLE notes (text TEXT)")
    database.commit()
    database.close()
    before = other_app.read_bytes()
    with pytest.raises(NotAGradebookError, match="SQLite database, but not a secureml gradebook"):
        Gradebook.open(other_app)
    assert other_app.read_bytes() == before


def test_a_gradebook_from_a_newer_secureml_is_refused(gradebook_path: Path) -> None:
    with Gradebook.open(gradebook_path) as gradebook:
        gradebook.record(make_row())
    database = sqlite3.connect(gradebook_path)
    database.execute("PRAGMA user_version = 99")
    database.close()
    with pytest.raises(GradebookTooNewError, match=r"schema version 99.*Upgrade secureml"):
        Gradebook.open(gradebook_path)


def test_the_automatic_variants_seed_is_drawn_once_per_scenario_kept_and_never_exported(tmp_path: Path) -> None:
    with Gradebook.open(tmp_path / "a.db") as book:
        first = book.variant_seed("poisoning-01")
        book.record(make_row())
        assert book.variant_seed("poisoning-01") == first
        other_scenario = book.variant_seed("evasion-01")
        rows = book.latest(make_row().scenario_id)
    with Gradebook.open(tmp_path / "a.db") as book:
        assert book.variant_seed("poisoning-01") == first
    with Gradebook.open(tmp_path / "b.db") as book:
        another_book = book.variant_seed("poisoning-01")
    # 62 random bits each: equal only by a broken generator.
    assert len({first, other_scenario, another_book}) == 3
    assert str(first) not in render_json(rows) + render_csv(rows)


def _old_gradebook(path: Path, version: int) -> None:
    """A gradebook as secureml wrote it at schema `version`, with one row of make_row()."""
    from secureml.gradebook import store

    database = sqlite3.connect(path)
    for number in range(1, version + 1):
        database.executescript(store._MIGRATIONS[number])
    row = make_row()
    values = store._row_values(row)
    columns = [column for column in store._COLUMNS if column != "taxonomy_json"]
    values = [value for column, value in zip(store._COLUMNS, values, strict=True) if column != "taxonomy_json"]
    database.execute(f"INSERT INTO grades ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})", values)
    database.execute(f"PRAGMA application_id = {store._APPLICATION_ID}")
    database.execute(f"PRAGMA user_version = {version}")
    database.commit()
    database.close()


@pytest.mark.parametrize("version", [1, 2])
def test_an_old_gradebook_is_upgraded_and_keeps_its_rows(tmp_path: Path, version: int) -> None:
    path = tmp_path / "old.db"
    _old_gradebook(path, version)
    with Gradebook.open(path) as book:
        (row,) = book.rows()
        assert row.trainee == "alice" and row.score == 87.5
        assert row.taxonomy == {}  # graded before rows kept the threat's ids: exports leave them blank
        assert book.variant_seed("poisoning-01") >= 0
        book.record(make_row("bob"))
        assert {row.trainee: row.taxonomy.get("owasp") for row in book.rows()} == {"alice": None, "bob": "ML02"}
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_opening_a_gradebook_in_a_missing_folder_says_so(tmp_path: Path) -> None:
    with pytest.raises(GradebookError, match="does not exist"):
        Gradebook.open(tmp_path / "no-such-folder" / "gradebook.sqlite")


# ----------------------------------------------------------------------- exports


def test_csv_export_has_lms_columns_first_then_sorted_parts_and_metrics() -> None:
    rows = [
        make_row("bob", parts={"zeta": 0.5, "alpha": 0.25}, metrics={"m": -0.5}),
        make_row("alice", status="timeout"),
        make_row("carol", status="infra-error"),
    ]
    text = render_csv(rows)
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == [
        "student_id", "score", "max_score", "status", "flags", "owasp", "atlas",
        "part:alpha", "part:asr_drop", "part:ca_drop", "part:der", "part:zeta",
        "metric:attack_success_rate", "metric:clean_accuracy", "metric:m",
    ]  # fmt: skip
    by_trainee = {line[0]: line for line in table[1:]}
    assert [line[0] for line in table[1:]] == ["alice", "bob", "carol"]
    assert by_trainee["bob"][:4] == ["bob", "87.5", "100.0", "ok"]
    assert by_trainee["bob"][5:7] == ["ML02", "AML.T0020"]
    assert by_trainee["bob"][7] == "0.25" and by_trainee["bob"][-1] == "-0.5"  # numbers stay numbers
    assert by_trainee["alice"][1:4] == ["0.0", "100.0", "timeout"]  # the trainee's own failure: 0
    assert by_trainee["carol"][1:4] == ["", "100.0", "infra-error"]  # the grader's failure: no grade
    text.encode("utf-8")


def test_csv_export_protects_against_formula_injection() -> None:
    hostile_names = ['=HYPERLINK("http://evil","x")', "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "alice"]
    text = render_csv([make_row(name) for name in hostile_names])
    cells = {line[0] for line in list(csv.reader(io.StringIO(text)))[1:]}
    assert cells == {
        "'=HYPERLINK(\"http://evil\",\"x\")", "'+1+1", "'-2+3", "'@SUM(A1)", "'\tTAB", "alice",
    }  # fmt: skip


def test_json_export_omits_picture_bytes_but_says_whether_one_exists() -> None:
    rows = [make_row("alice"), make_row("bob", picture_png=None)]
    exported = json.loads(render_json(rows))
    assert [(r["trainee"], r["has_picture"]) for r in exported] == [("alice", True), ("bob", False)]
    assert all("picture_png" not in r for r in exported)
    assert exported[0]["parts"] == {"der": 0.93, "asr_drop": 0.9, "ca_drop": 0.01}
    assert exported[0]["hidden_variant"] is False


def test_gradescope_results_have_required_fields() -> None:
    results = gradescope_results(make_row("alice", feedback=["<b>not html</b>"]))
    assert results["score"] == 87.5
    assert results["execution_time"] == 4  # whole seconds, from timings_s["total"]
    # Trainee-influenced text must never be rendered as HTML by Gradescope.
    assert results["output_format"] == "text"
    assert results["test_output_format"] == results["test_name_format"] == "text"
    assert results["stdout_visibility"] == "hidden"
    test, *part_tests = results["tests"]
    assert test["score"] == 87.5 and test["max_score"] == 100.0 and test["status"] == "passed"
    assert test["name"] == "poisoning-01 (ok)"
    assert "der: 0.930" in test["output"] and "<b>not html</b>" in test["output"]
    assert "<b>not html</b>" in results["output"] and "Score: 87.5 / 100.0" in results["output"]
    # One informational test per score part (no score of its own), and the parts on the leaderboard.
    assert [t["name"] for t in part_tests] == [
        "score part asr_drop = 0.9000", "score part ca_drop = 0.0100", "score part der = 0.9300"]
    assert not any("score" in t or "max_score" in t for t in part_tests)
    assert results["leaderboard"] == [
        {"name": "score", "value": 87.5, "order": "desc"},
        {"name": "asr_drop", "value": 0.9, "order": "desc"},
        {"name": "ca_drop", "value": 0.01, "order": "asc"},  # a smaller cost is better
        {"name": "der", "value": 0.93, "order": "desc"},
    ]
    assert test["visibility"] in {"hidden", "after_due_date", "after_published", "visible"}
    # Instructor-only details travel in extra_data, which students do not see.
    flagged = gradescope_results(make_row(flags=["needs-review: gradient masking suspected"]))
    assert flagged["extra_data"]["flags"] == ["needs-review: gradient masking suspected"]
    assert "gradient masking" not in json.dumps(flagged["tests"]) + flagged["output"]
    json.dumps(results, allow_nan=False)  # it is plain JSON

    crashed = gradescope_results(make_row(status="error", parts={}))
    assert crashed["score"] == 0.0 and crashed["tests"][0]["status"] == "failed"
    assert len(crashed["tests"]) == 1 and crashed["leaderboard"] == [{"name": "score", "value": 0.0, "order": "desc"}]
    assert "ValueError: shapes" in crashed["tests"][0]["output"]
    broken_grader = gradescope_results(make_row(status="infra-error", error="/srv/secret/path"))
    assert "grade it again" in broken_grader["tests"][0]["output"]
    assert "/srv/secret/path" not in json.dumps(broken_grader["tests"]) + broken_grader["output"]

    with pytest.raises(GradebookError, match="after_due_date"):
        gradescope_results(make_row(), visibility="later")


def test_gradescope_gives_each_factor_of_the_score_a_test_scored_by_its_share() -> None:
    from secureml import scoring

    score = scoring.der_calibrated(asr_none=0.99, ca_none=0.95, asr_mitigated=0.05, ca_mitigated=0.94,
                                   asr_random=0.98, ca_random=0.94, asr_perfect=0.01, ca_perfect=0.95,
                                   clean_dropped=0.02, max_clean_dropped=0.3, max_clean_accuracy_drop=0.05)
    row = make_row(score=score.total, parts=score.parts)
    results = gradescope_results(row)
    factors = {t["name"]: t for t in results["tests"] if "max_score" in t and t["max_score"] == 1.0}
    assert set(factors) == {f"score factor gained: {score.parts['gained']:.3f} of 1",
                            f"score factor kept_clean: {score.parts['kept_clean']:.3f} of 1"}
    shares = [t["score"] for t in factors.values()]
    assert results["score"] == pytest.approx(100 * shares[0] * shares[1], abs=0.05)
    assert all("score = 100 x gained x kept_clean" in t["output"] for t in factors.values())
    # The anchors and raw drops stay informational: no points of their own.
    others = [t for t in results["tests"][1:] if t not in factors.values()]
    assert len(others) == len(score.parts) - 2 and not any("score" in t for t in others)


def test_gradescope_export_writes_one_results_json_per_trainee(tmp_path: Path) -> None:
    rows = [make_row("alice"), make_row(".."), make_row("eve/../../x")]
    written = export(rows, "gradescope", tmp_path / "gradescope")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "gradescope/%2E./results.json",
        "gradescope/alice/results.json",
        "gradescope/eve%2F..%2F..%2Fx/results.json",
    ]
    assert all(path.resolve().is_relative_to((tmp_path / "gradescope").resolve()) for path in written)
    assert json.loads((tmp_path / "gradescope/alice/results.json").read_text())["score"] == 87.5


class _AssetFinder(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in {"src", "href", "xlink:href", "action"} and not (value or "").startswith("data:"):
                self.external.append(f"{tag} {name}={value}")


def test_every_export_names_the_threat_by_its_owasp_and_atlas_ids() -> None:
    rows = [make_row("alice"), make_row("bob", taxonomy={})]  # bob was graded before rows kept them
    table = list(csv.reader(io.StringIO(render_csv(rows))))
    assert [line[5:7] for line in table[1:]] == [["ML02", "AML.T0020"], ["", ""]]
    assert json.loads(render_json(rows))[0]["taxonomy"]["owasp"] == "ML02"
    results = gradescope_results(rows[0])
    assert results["extra_data"]["taxonomy"]["atlas_technique"] == "AML.T0020"
    assert results["tests"][0]["tags"] == ["OWASP ML02", "ATLAS AML.T0020"]
    assert gradescope_results(rows[1])["tests"][0]["tags"] == []
    assert "ML02 Data Poisoning Attack" in render_html(rows) and "AML.T0020 Poison Training Data" in render_html(rows)


def test_a_graded_row_carries_its_scenarios_ids() -> None:
    from secureml import scenario

    for loaded in scenario.load_all():
        taxonomy = loaded.taxonomy()
        assert taxonomy["owasp"] == loaded.owasp and taxonomy["atlas_technique"] == loaded.atlas.technique
        assert make_row(taxonomy=taxonomy).taxonomy == taxonomy


def test_html_report_is_self_contained_and_escapes_names() -> None:
    hostile = '<script>alert("pwned")</script>'
    rows = [
        make_row(
            hostile, feedback=["<img src=x onerror=alert(1)>"], flags=["<b>flag</b>"], picture_png=None
        ),
        make_row("bob", picture_png=tiny_png(7), status="error", error="</pre><script>x</script>"),
    ]
    report = render_html(rows)
    finder = _AssetFinder()
    finder.feed(report)
    assert "script" not in finder.tags and finder.external == []
    assert "<script>" not in report
    assert html.escape(hostile) in report
    assert "&lt;img src=x onerror=alert(1)&gt;" in report
    assert finder.tags.count("img") == 1  # bob's picture only: the hostile <img> is text
    assert "data:image/png;base64," in report
    assert "Content-Security-Policy" in report
    assert "<title>Gradebook: poisoning-01</title>" in report
    assert "svg" in finder.tags


def test_html_histogram_bins_scores_by_ten_points() -> None:
    scores = [0.0, 9.99, 10.0, 55.0, 59.0, 99.0, 100.0]
    rows = [make_row(f"t{index}", score=score) for index, score in enumerate(scores)]
    rows.append(make_row("crashed", status="error"))
    assert score_histogram(rows) == [2, 1, 0, 0, 0, 2, 0, 0, 0, 2]
    report = render_html(rows)
    assert 'data-bin="50-60" data-count="2"' in report
    assert 'data-bin="90-100" data-count="2"' in report
    assert '<td class="status-error">error</td><td class="number">1</td>' in report
    for status in STATUSES:
        assert f">{status}</td>" in report


def test_every_export_format_writes_files(tmp_path: Path) -> None:
    rows = [make_row("alice"), make_row("bob", status="memory")]
    roster = Roster(tmp_path / "roster.csv", (RosterEntry("alice", "Alice", "1", "", "", "", "a@b.c", 2),))
    for fmt, spec in EXPORT_FORMATS.items():
        suffix = "" if fmt == "gradescope" else f".{fmt}"
        options = ExportOptions(roster=roster) if "roster" in spec.options else ExportOptions()
        written = export(iter(rows), fmt, tmp_path / "out" / f"grades{suffix}", options)
        assert written and all(path.is_file() for path in written)
    assert not list((tmp_path / "out").glob(".*.tmp"))  # no temporary files left behind


def test_unknown_export_format_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownExportFormatError, match=r"csv.*json.*gradescope.*html"):
        export([make_row()], "xlsx", tmp_path / "grades.xlsx")


def test_one_scenario_exports_refuse_rows_from_several_scenarios(tmp_path: Path) -> None:
    rows = [make_row("alice"), make_row("alice", scenario_id="evasion-01")]
    for fmt in ("csv", "gradescope", "html"):
        with pytest.raises(GradebookError, match=r"evasion-01, poisoning-01.*latest"):
            export(rows, fmt, tmp_path / f"out-{fmt}")
    assert len(json.loads(render_json(rows))) == 2  # JSON is happy to hold several


def test_latest_per_trainee_breaks_ties_by_order() -> None:
    first = make_row("alice", submission="v1")
    second = make_row("alice", submission="v2")
    assert latest_per_trainee([first, second]) == [second]
    assert latest_per_trainee([second, first]) == [first]


def test_an_empty_gradebook_still_exports(tmp_path: Path) -> None:
    assert render_csv([]) == "student_id,score,max_score,status,flags,owasp,atlas\r\n"
    assert json.loads(render_json([])) == []
    assert "Gradebook: no submissions" in render_html([])
    assert export([], "gradescope", tmp_path / "gradescope") == []
    assert (tmp_path / "gradescope").is_dir()
