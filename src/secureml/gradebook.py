"""The gradebook: a SQLite store of grading results, and its exports.

Every trainee's submission for a scenario is run and scored by the grader, which
writes one `GradeRow` per submission as soon as it finishes. The store survives a
crashed or `kill -9`'d grading run, and several grading processes may write to it
at once. Exports turn rows into what instructors upload or read: a CSV for an LMS
gradebook, a JSON dump, Gradescope `results.json` files, a one-file HTML report, and the
gradebook imports of Canvas and Moodle (with a roster, secureml.roster). A new format is
a new entry in EXPORT_FORMATS.

Only the standard library (and secureml.errors, secureml.roster) is used here, so
`secureml grade` and the exports start instantly and work on machines without torch.
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
import secrets
import sqlite3
import statistics
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from secureml.errors import SecuremlError
from secureml.roster import ROSTER_COLUMNS, Roster, RosterEntry

__all__ = [
    "CANVAS_STUDENT_COLUMNS",
    "EXPORT_FORMATS",
    "GRADESCOPE_VISIBILITIES",
    "MOODLE_STUDENT_COLUMNS",
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
    "trainee_error_view",
    "trainee_report",
    "write_text_atomically",
]

# The outcomes of grading one submission, in the order reports list them.
STATUSES: tuple[str, ...] = (
    "ok",  # ran and was scored
    "error",  # the trainee's code raised
    "timeout",  # the trainee's code ran past the scenario's time limit
    "memory",  # the trainee's code ran past the memory limit
    "invalid-result",  # it returned something the evaluator cannot use
    "no-result",  # it returned nothing
    "infra-error",  # the grader itself failed: not the trainee's fault, grade again
)

# Statuses that are the trainee's doing and so earn zero points. "infra-error" is
# not among them: a broken grader must not cost a trainee marks.
_TRAINEE_FAILURE_STATUSES = frozenset(STATUSES) - {"ok", "infra-error"}

# PRAGMA application_id marks the file as ours in its SQLite header, so opening a
# stranger's database fails instead of quietly adding our tables to it.
# 0x53454D4C is "SEML" in ASCII.
_APPLICATION_ID = 0x53454D4C

# How long a writer waits for another process's write lock before giving up.
# One upsert holds the lock for milliseconds (one fsync); 30 s covers a slow disk
# and many grading workers without hanging forever on a stuck process.
_BUSY_TIMEOUT_S = 30.0

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


# --------------------------------------------------------------------------- errors


class GradebookError(SecuremlError):
    """Something about the gradebook or its exports went wrong; the message says how to fix it."""

    # The CLI exits with this code (see secureml.errors for the others).
    exit_code = 6


class NotAGradebookError(GradebookError):
    """The file exists but is not a secureml gradebook."""


class GradebookTooNewError(GradebookError):
    """The gradebook was written by a newer secureml than this one."""


class InvalidGradeRowError(GradebookError, ValueError):
    """A GradeRow field holds a value the gradebook cannot store honestly."""


class UnknownExportFormatError(GradebookError, ValueError):
    """An export format name is not in EXPORT_FORMATS."""


# ------------------------------------------------------------------------ the row


def now_utc_iso() -> str:
    """The current time as an ISO-8601 UTC string, the form `GradeRow.graded_at` expects."""
    return datetime.now(timezone.utc).isoformat()


@dataclass(frozen=True)
class GradeRow:
    """The result of grading one submission of one trainee for one scenario.

    Fields cannot be rebound. Mappings and sequences are copied on creation (to
    dicts and tuples), so later changes to the caller's objects do not leak in;
    plain dicts and tuples keep the row picklable for worker processes.
    """

    scenario_id: str
    trainee: str  # e.g. "alice", from ALICE.py or ALICE/
    submission_sha256: str  # hash of the submission's files, 64 lowercase hex digits
    status: str  # one of STATUSES
    score: float | None  # 0..max_score when status == "ok", else None
    max_score: float  # 100.0
    parts: Mapping[str, float]  # score parts, e.g. {"der": 0.93, "asr_drop": 0.9}
    metrics: Mapping[str, float]  # raw metrics, e.g. {"clean_accuracy": 0.95}
    flags: Sequence[str]  # for instructors, e.g. "needs-review: gradient masking suspected"
    feedback: Sequence[str]  # hints shown to the trainee
    error: str  # truncated exception or detail; "" when status == "ok"
    timings_s: Mapping[str, float]  # e.g. {"mitigation": 3.2, "evaluate": 1.1, "total": 4.5}
    seed: int
    config_sha256: str  # hash of the scenario config the submission was graded under
    hidden_variant: bool  # a hidden override set was used; its contents are never stored
    versions: Mapping[str, str]  # {"secureml": ..., "torch": ..., "art": ..., "python": ...}
    picture_png: bytes | None  # this trainee's picture of the run, PNG bytes
    graded_at: str  # ISO-8601 UTC, e.g. now_utc_iso()

    def __post_init__(self) -> None:
        # Validate once, here, so a bad row fails where the grader built it, and
        # the store and every export can trust what they are given.
        _require_text(self.scenario_id, "scenario_id")
        _require_text(self.trainee, "trainee")
        _require_sha256(self.submission_sha256, "submission_sha256")
        _require_sha256(self.config_sha256, "config_sha256")
        if self.status not in STATUSES:
            raise InvalidGradeRowError(
                f"GradeRow.status is {self.status!r}, which is not a grading status. "
                f"Use one of: {', '.join(STATUSES)}."
            )
        max_score = _finite_number(self.max_score, "max_score")
        if max_score <= 0:
            raise InvalidGradeRowError(
                f"GradeRow.max_score is {max_score!r}, but it must be above 0. Use 100.0."
            )
        object.__setattr__(self, "max_score", max_score)
        if self.status == "ok":
            if self.score is None:
                raise InvalidGradeRowError(
                    "GradeRow.score is None although status is 'ok'. "
                    "Give the score, or use the status that says why there is none."
                )
            score = _finite_number(self.score, "score")
            if not 0.0 <= score <= max_score:
                raise InvalidGradeRowError(
                    f"GradeRow.score is {score!r}, outside 0..{max_score!r}. "
                    "Clip the score in the scoring step before recording it."
                )
            object.__setattr__(self, "score", score)
            if self.error != "":
                raise InvalidGradeRowError(
                    "GradeRow.error must be empty when status is 'ok'. "
                    "Put notes for the trainee in feedback, or for instructors in flags."
                )
        elif self.score is not None:
            raise InvalidGradeRowError(
                f"GradeRow.score is {self.score!r} although status is {self.status!r}. "
                "Only a row with status 'ok' has a score; set score=None."
            )
        if not isinstance(self.error, str):
            raise InvalidGradeRowError(
                f"GradeRow.error must be a string, got {type(self.error).__name__}. "
                "Pass str(exception), or '' when there is none."
            )
        object.__setattr__(self, "parts", _finite_mapping(self.parts, "parts"))
        object.__setattr__(self, "metrics", _finite_mapping(self.metrics, "metrics"))
        timings_s = _finite_mapping(self.timings_s, "timings_s")
        for stage, duration_s in timings_s.items():
            if duration_s < 0:
                raise InvalidGradeRowError(
                    f"GradeRow.timings_s[{stage!r}] is {duration_s!r} s; a duration cannot be "
                    "negative. Measure it with time.monotonic()."
                )
        object.__setattr__(self, "timings_s", timings_s)
        object.__setattr__(self, "flags", _text_sequence(self.flags, "flags"))
        object.__setattr__(self, "feedback", _text_sequence(self.feedback, "feedback"))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InvalidGradeRowError(
                f"GradeRow.seed must be an int, got {self.seed!r}. Pass the seed the run used."
            )
        if not isinstance(self.hidden_variant, bool):
            raise InvalidGradeRowError(
                f"GradeRow.hidden_variant must be True or False, got {self.hidden_variant!r}."
            )
        object.__setattr__(self, "versions", _text_mapping(self.versions, "versions"))
        object.__setattr__(self, "picture_png", _png_or_none(self.picture_png))
        _graded_at_utc(self.graded_at)


def _require_text(value: object, field: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidGradeRowError(
            f"GradeRow.{field} must be a non-empty string, got {value!r}."
        )


def _require_sha256(value: object, field: str) -> None:
    if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value):
        raise InvalidGradeRowError(
            f"GradeRow.{field} must be a SHA-256 digest as 64 lowercase hex digits, got {value!r}. "
            "Use hashlib.sha256(...).hexdigest()."
        )


def _finite_number(value: object, where: str) -> float:
    # bool is an int in Python; True as a score is a bug, not 1.0.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidGradeRowError(
            f"GradeRow.{where} must be a number, got {value!r} ({type(value).__name__})."
        )
    number = float(value)
    if not math.isfinite(number):
        # JSON would write NaN/Infinity, which is not JSON, and an LMS would take
        # "nan" as a grade. Refuse it here, where the cause is still visible.
        raise InvalidGradeRowError(
            f"GradeRow.{where} is {number!r}, which is not a finite number. "
            "Fix the metric or scoring step that produced it, or record the submission "
            "with status 'invalid-result'."
        )
    return number


def _finite_mapping(value: object, field: str) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise InvalidGradeRowError(
            f"GradeRow.{field} must be a mapping of names to numbers, got {type(value).__name__}."
        )
    checked: dict[str, float] = {}
    for key, number in value.items():
        if not isinstance(key, str) or not key:
            raise InvalidGradeRowError(
                f"GradeRow.{field} has the key {key!r}; keys must be non-empty strings."
            )
        checked[key] = _finite_number(number, f"{field}[{key!r}]")
    return checked


def _text_mapping(value: object, field: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(key, str) and isinstance(text, str) for key, text in value.items()
    ):
        raise InvalidGradeRowError(
            f"GradeRow.{field} must map strings to strings, got {value!r}."
        )
    return dict(value)


def _text_sequence(value: object, field: str) -> tuple[str, ...]:
    # A bare string is a Sequence too, and would be stored one character per entry.
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidGradeRowError(
            f"GradeRow.{field} must be a list of strings, got {value!r}. "
            f"Wrap a single message in a list: [{value!r}]."
        )
    if not all(isinstance(text, str) for text in value):
        raise InvalidGradeRowError(f"GradeRow.{field} must hold only strings, got {value!r}.")
    return tuple(value)


def _png_or_none(value: object) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidGradeRowError(
            f"GradeRow.picture_png must be PNG bytes or None, got {type(value).__name__}."
        )
    data = bytes(value)
    if not data.startswith(_PNG_SIGNATURE):
        # The HTML report embeds it as image/png; anything else would show as broken.
        raise InvalidGradeRowError(
            "GradeRow.picture_png does not start with the PNG signature. "
            "Save the figure with format='png' and pass the bytes, or pass None."
        )
    return data


def _graded_at_utc(text: object) -> datetime:
    """Parse `graded_at`; it must be ISO-8601 with a UTC offset of zero."""
    if not isinstance(text, str):
        raise InvalidGradeRowError(f"GradeRow.graded_at must be a string, got {text!r}.")
    # datetime.fromisoformat accepts a trailing "Z" only from Python 3.11 on.
    normalised = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    try:
        moment: datetime | None = datetime.fromisoformat(normalised)
    except ValueError:
        moment = None
    if moment is None or moment.utcoffset() != timedelta(0):  # None when naive
        raise InvalidGradeRowError(
            f"GradeRow.graded_at is {text!r}, which is not an ISO-8601 time in UTC. "
            "Use secureml.gradebook.now_utc_iso(), e.g. '2025-01-31T14:05:00+00:00'."
        )
    return moment


def _graded_at_us(row: GradeRow) -> int:
    """`graded_at` as whole microseconds since the epoch, for ordering rows."""
    moment = _graded_at_utc(row.graded_at)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def latest_per_trainee(rows: Iterable[GradeRow]) -> list[GradeRow]:
    """The newest row (by graded_at) of each trainee in each scenario, sorted by scenario, trainee.

    A trainee who resubmitted has one row per submission; the grade is the newest.
    Ties on graded_at go to the row that comes later in `rows`.
    """
    newest: dict[tuple[str, str], tuple[int, int, GradeRow]] = {}
    for position, row in enumerate(rows):
        key = (row.scenario_id, row.trainee)
        candidate = (_graded_at_us(row), position, row)
        if key not in newest or candidate[:2] > newest[key][:2]:
            newest[key] = candidate
    return [newest[key][2] for key in sorted(newest)]


def gradebook_points(row: GradeRow) -> float | None:
    """The points a row is worth in a course gradebook.

    "ok" rows give their score. A submission that failed through the trainee's own
    code (error, timeout, memory, invalid-result, no-result) is worth 0. An
    "infra-error" is worth None: the grader failed, so there is no grade yet and
    the submission must be graded again.
    """
    if row.status == "ok":
        return row.score
    if row.status in _TRAINEE_FAILURE_STATUSES:
        return 0.0
    return None


# ---------------------------------------------------------------------- the store

# Schema migrations: _MIGRATIONS[n] brings a version n-1 gradebook to version n.
# A new version appends an entry; released entries never change.
_MIGRATIONS: dict[int, str] = {
    1: """
        CREATE TABLE grades (
            id                  INTEGER PRIMARY KEY,
            scenario_id         TEXT    NOT NULL,
            trainee             TEXT    NOT NULL,
            submission_sha256   TEXT    NOT NULL,
            status              TEXT    NOT NULL,
            score               REAL,
            max_score           REAL    NOT NULL,
            parts_json          TEXT    NOT NULL,
            metrics_json        TEXT    NOT NULL,
            flags_json          TEXT    NOT NULL,
            feedback_json       TEXT    NOT NULL,
            error               TEXT    NOT NULL,
            timings_s_json      TEXT    NOT NULL,
            seed                INTEGER NOT NULL,
            config_sha256       TEXT    NOT NULL,
            hidden_variant      INTEGER NOT NULL,
            versions_json       TEXT    NOT NULL,
            picture_png         BLOB,
            graded_at           TEXT    NOT NULL,
            -- graded_at as microseconds since the epoch: ISO strings with and
            -- without fractional seconds do not sort correctly as text.
            graded_at_us        INTEGER NOT NULL,
            UNIQUE (scenario_id, trainee, submission_sha256)
        );
        CREATE INDEX grades_by_trainee ON grades (scenario_id, trainee, graded_at_us);
    """,
    # The grader-only seed of each scenario's automatic variant (secureml.variants): drawn
    # at random the first time a scenario is graded into this file, then kept, so every
    # submission meets the same variant and a re-run reproduces it. No export shows it.
    2: """
        CREATE TABLE variant_seeds (
            scenario_id     TEXT    PRIMARY KEY,
            variant_seed    INTEGER NOT NULL,
            created_at      TEXT    NOT NULL
        );
    """,
}
SCHEMA_VERSION = max(_MIGRATIONS)

_COLUMNS = (
    "scenario_id", "trainee", "submission_sha256", "status", "score", "max_score",
    "parts_json", "metrics_json", "flags_json", "feedback_json", "error", "timings_s_json",
    "seed", "config_sha256", "hidden_variant", "versions_json", "picture_png", "graded_at",
    "graded_at_us",
)  # fmt: skip
_UPSERT = (
    f"INSERT INTO grades ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)}) "
    "ON CONFLICT (scenario_id, trainee, submission_sha256) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in _COLUMNS[3:])
)
_SELECT = f"SELECT {', '.join(_COLUMNS[:-1])} FROM grades"


def _to_json(value: object) -> str:
    # allow_nan=False is a second line behind GradeRow's own check.
    return json.dumps(value, allow_nan=False, sort_keys=True, ensure_ascii=False)


def _row_values(row: GradeRow) -> tuple[Any, ...]:
    return (
        row.scenario_id, row.trainee, row.submission_sha256, row.status, row.score,
        row.max_score, _to_json(row.parts), _to_json(row.metrics), _to_json(list(row.flags)),
        _to_json(list(row.feedback)), row.error, _to_json(row.timings_s), row.seed,
        row.config_sha256, int(row.hidden_variant), _to_json(row.versions), row.picture_png,
        row.graded_at, _graded_at_us(row),
    )  # fmt: skip


def _row_from_record(record: sqlite3.Row) -> GradeRow:
    return GradeRow(
        scenario_id=record["scenario_id"],
        trainee=record["trainee"],
        submission_sha256=record["submission_sha256"],
        status=record["status"],
        score=record["score"],
        max_score=record["max_score"],
        parts=json.loads(record["parts_json"]),
        metrics=json.loads(record["metrics_json"]),
        flags=json.loads(record["flags_json"]),
        feedback=json.loads(record["feedback_json"]),
        error=record["error"],
        timings_s=json.loads(record["timings_s_json"]),
        seed=record["seed"],
        config_sha256=record["config_sha256"],
        hidden_variant=bool(record["hidden_variant"]),
        versions=json.loads(record["versions_json"]),
        picture_png=record["picture_png"],
        graded_at=record["graded_at"],
    )


class Gradebook:
    """A SQLite file of GradeRows, one per (scenario_id, trainee, submission_sha256).

    Open it with `Gradebook.open(path)`, ideally as a context manager. A new file is
    created and initialised. Each `record` commits at once, so a grading run that
    crashes or is killed loses nothing it already recorded. Several processes may
    write to the same file at once; use one Gradebook per process (or thread).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise GradebookError(
                f"{self.path} is a directory, not a gradebook file. "
                "Give a file path such as out/gradebook.sqlite."
            )
        if not self.path.parent.is_dir():
            raise GradebookError(
                f"Cannot create the gradebook {self.path}: the folder {self.path.parent} does not exist. "
                "Create the folder first, or give a path in an existing one."
            )
        try:
            # isolation_level=None: no implicit transactions. Writes open their own
            # BEGIN IMMEDIATE, so the write lock is taken up front and waits on the
            # busy timeout instead of failing half-way through a transaction.
            self._connection = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise GradebookError(
                f"Cannot open the gradebook {self.path}: {exc}. Check the path and its permissions."
            ) from exc
        self._connection.row_factory = sqlite3.Row
        try:
            self._prepare()
        except sqlite3.DatabaseError as exc:
            self._connection.close()
            if "not a database" in str(exc):
                raise NotAGradebookError(
                    f"{self.path} is not a secureml gradebook (SQLite says: {exc}). "
                    "Give the path of a gradebook, or a new file name to start one."
                ) from exc
            if "malformed" in str(exc):
                raise GradebookError(
                    f"The gradebook {self.path} is damaged (SQLite says: {exc}). "
                    "Restore it from a backup, or salvage it with the sqlite3 shell's .recover."
                ) from exc
            raise GradebookError(f"Cannot open the gradebook {self.path}: {exc}.") from exc
        except BaseException:
            self._connection.close()
            raise

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Gradebook:
        """Open the gradebook at `path`, creating it if the file does not exist yet."""
        return cls(path)

    def __enter__(self) -> Gradebook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file. Every recorded row is already committed."""
        self._connection.close()

    # -- opening ----------------------------------------------------------------

    def _prepare(self) -> None:
        # Check the file is ours before changing anything: switching to WAL
        # rewrites the header, which must not happen to a stranger's database.
        self._check_identity()
        # WAL lets readers (exports, the instructor's dashboard) run while grading
        # workers write, and makes each commit one append to the -wal file.
        mode = self._switch_to_wal()
        if mode.lower() != "wal":
            raise GradebookError(
                f"The gradebook {self.path} could not switch to WAL mode (got {mode!r}). "
                "Keep it on a local disk; network file systems do not support WAL."
            )
        # FULL, not NORMAL: in WAL mode NORMAL already survives a killed process,
        # but a power cut or OS crash can lose the last commits. A grading result
        # costs seconds to minutes of compute and a commit's extra fsync costs
        # milliseconds, so durability wins.
        self._connection.execute("PRAGMA synchronous = FULL")
        with self._write_transaction():
            # Checked again under the write lock: another process may have
            # initialised or upgraded the file since the first look.
            version = self._check_identity()
            for target_version in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _split_sql(_MIGRATIONS[target_version]):
                    self._connection.execute(statement)
            if version < SCHEMA_VERSION:
                self._connection.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
                self._connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _switch_to_wal(self) -> str:
        """Set journal_mode=WAL and return the mode SQLite reports."""
        # Converting a new file to WAL needs an exclusive lock, and SQLite answers
        # "database is locked" at once, without its busy handler, when another
        # process holds the file open: two graders starting on a new gradebook hit
        # this. Retry until the busy timeout, as the handler would.
        deadline_s = time.monotonic() + _BUSY_TIMEOUT_S
        while True:
            try:
                return str(self._connection.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline_s:
                    raise
                time.sleep(0.01)

    def _check_identity(self) -> int:
        """Return the file's schema version; raise if it is not a gradebook this code can use."""
        application_id = int(self._connection.execute("PRAGMA application_id").fetchone()[0])
        version = int(self._connection.execute("PRAGMA user_version").fetchone()[0])
        if application_id == 0 and version == 0:
            table_count = self._connection.execute(
                "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'"
            ).fetchone()[0]
            if table_count == 0:
                return 0  # a new, empty file: ours to initialise
        if application_id != _APPLICATION_ID:
            raise NotAGradebookError(
                f"{self.path} is an SQLite database, but not a secureml gradebook "
                f"(application_id {application_id:#x}, expected {_APPLICATION_ID:#x}). "
                "Give the path of a gradebook, or a new file name to start one."
            )
        if version > SCHEMA_VERSION:
            raise GradebookTooNewError(
                f"The gradebook {self.path} has schema version {version}, but this secureml "
                f"only knows versions up to {SCHEMA_VERSION}. Upgrade secureml to read it."
            )
        return version

    def _write_transaction(self) -> _WriteTransaction:
        return _WriteTransaction(self._connection)

    # -- writing and reading ----------------------------------------------------

    def record(self, row: GradeRow) -> None:
        """Store `row`, replacing any row with the same scenario, trainee and submission, and commit."""
        if not isinstance(row, GradeRow):
            raise InvalidGradeRowError(
                f"Gradebook.record takes a GradeRow, got {type(row).__name__}."
            )
        values = _row_values(row)
        with self._write_transaction():
            self._connection.execute(_UPSERT, values)

    def has(
        self,
        scenario_id: str,
        trainee: str,
        submission_sha256: str,
        *,
        config_sha256: str | None = None,
        count_infra_errors: bool = False,
    ) -> bool:
        """Whether this submission already has a grade, so a re-run can skip it.

        config_sha256: when given, only a grade made under this scenario config
            counts, so changing the scenario regrades everyone.
        count_infra_errors: rows with status "infra-error" do not count by
            default, so a re-run retries submissions the grader itself failed on.
        """
        query = "SELECT 1 FROM grades WHERE scenario_id = ? AND trainee = ? AND submission_sha256 = ?"
        parameters: list[object] = [scenario_id, trainee, submission_sha256]
        if config_sha256 is not None:
            query += " AND config_sha256 = ?"
            parameters.append(config_sha256)
        if not count_infra_errors:
            query += " AND status != 'infra-error'"
        return self._connection.execute(query + " LIMIT 1", parameters).fetchone() is not None

    def rows(self, scenario_id: str | None = None) -> list[GradeRow]:
        """Every stored row (of one scenario, if given), oldest first within each trainee."""
        query = _SELECT
        parameters: tuple[str, ...] = ()
        if scenario_id is not None:
            query += " WHERE scenario_id = ?"
            parameters = (scenario_id,)
        query += " ORDER BY scenario_id, trainee, graded_at_us, id"
        return [_row_from_record(record) for record in self._connection.execute(query, parameters)]

    def latest(self, scenario_id: str) -> list[GradeRow]:
        """The newest row of each trainee in `scenario_id`, sorted by trainee: what exports grade."""
        return latest_per_trainee(self.rows(scenario_id))

    def variant_seed(self, scenario_id: str) -> int:
        """The grader-only seed of `scenario_id`'s automatic variant, drawn on first use and kept.

        Drawn from the operating system's randomness, so nobody can derive it from what a
        trainee sees; two graders opening the same file at once agree (the first insert wins).
        """
        with self._write_transaction():
            self._connection.execute(
                "INSERT OR IGNORE INTO variant_seeds (scenario_id, variant_seed, created_at) VALUES (?, ?, ?)",
                (scenario_id, secrets.randbelow(2**62), now_utc_iso()),
            )
        record = self._connection.execute(
            "SELECT variant_seed FROM variant_seeds WHERE scenario_id = ?", (scenario_id,)
        ).fetchone()
        return int(record[0])

    def scenario_ids(self) -> list[str]:
        """The scenarios that have at least one row, sorted."""
        return [
            record[0]
            for record in self._connection.execute(
                "SELECT DISTINCT scenario_id FROM grades ORDER BY scenario_id"
            )
        ]


class _WriteTransaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back if the body raises."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def __enter__(self) -> None:
        self._connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            if exc_type is None:
                self._connection.execute("COMMIT")
        finally:
            # After a failed body or a failed COMMIT (disk full, say), leave no
            # transaction open, or the next BEGIN would fail. SQLite rolls some
            # errors back by itself, hence the check.
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")


def _split_sql(script: str) -> list[str]:
    # executescript() would COMMIT our open transaction first; run statements one
    # by one instead so a migration is all-or-nothing. The schema has no ';'
    # inside literals, so splitting on it is safe.
    return [statement.strip() for statement in script.split(";") if statement.strip()]


# ------------------------------------------------------------------------ exports


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
    review, "; "-separated, e.g. suspected gradient masking), then `part:<name>` and
    `metric:<name>` columns in sorted order (empty where a row lacks one). The
    score column holds `gradebook_points`: 0 for the trainee's own failures, empty
    for infra-errors. Text cells that a spreadsheet would run as a formula get a
    leading quote; numbers are written by us and left alone, so -0.5 stays a number.
    """
    latest_rows = latest_per_trainee(rows)
    _require_one_scenario(latest_rows, "csv")
    part_names = sorted({name for row in latest_rows for name in row.parts})
    metric_names = sorted({name for row in latest_rows for name in row.metrics})
    header = ["student_id", "score", "max_score", "status", "flags"]
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
    return "" if points is None else f"{points / row.max_score * options.points:.2f}"


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


def _row_as_json(row: GradeRow) -> dict[str, Any]:
    return {
        "scenario_id": row.scenario_id,
        "trainee": row.trainee,
        "submission_sha256": row.submission_sha256,
        "status": row.status,
        "score": row.score,
        "max_score": row.max_score,
        "gradebook_points": gradebook_points(row),
        "parts": dict(row.parts),
        "metrics": dict(row.metrics),
        "flags": list(row.flags),
        "feedback": list(row.feedback),
        "error": row.error,
        "timings_s": dict(row.timings_s),
        "seed": row.seed,
        "config_sha256": row.config_sha256,
        "hidden_variant": row.hidden_variant,
        "versions": dict(row.versions),
        # The picture itself stays in the gradebook and the HTML report.
        "has_picture": row.picture_png is not None,
        "graded_at": row.graded_at,
    }


def render_json(rows: Iterable[GradeRow]) -> str:
    """A JSON list of the newest row of each trainee (any number of scenarios), without picture bytes."""
    return (
        json.dumps(
            [_row_as_json(row) for row in latest_per_trainee(rows)],
            allow_nan=False,
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )


# Gradescope's visibility values, from its autograder specification
# (gradescope-autograders.readthedocs.io/en/latest/specs/, "Controlling Test Case Visibility").
GRADESCOPE_VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")

# What a trainee reads on Gradescope when the grader, not their code, failed.
_INFRA_ERROR_MESSAGE = (
    "The grader failed for reasons unrelated to your submission, so it has no score yet. "
    "Your instructor will grade it again; you do not need to resubmit."
)


# What secureml.mitigation.describe_exception writes: "sanitize raised ValueError: message
# (mitigation.py, line 12)"; a file that does not even parse says "syntax error at line 3".
_ERROR_KIND = re.compile(r"\braised ([A-Za-z_][A-Za-z0-9_.]{0,79})")
_ERROR_LOCATION = re.compile(r"\(([A-Za-z0-9_.-]{1,100}\.py), line (\d{1,7})\)")
_SYNTAX_ERROR = re.compile(r"\bsyntax error at line (\d{1,7})")

_HIDDEN_ERROR_NOTE = "Its message is withheld: you were graded on a hidden variant of the scenario."


def error_kind(error: str) -> str | None:
    """The exception class an error row names ("ValueError"), or None."""
    first_line = error.split("\n", 1)[0]
    if _SYNTAX_ERROR.search(first_line):
        return "SyntaxError"
    found = _ERROR_KIND.search(first_line)
    return found.group(1) if found else None


def error_summary(error: str) -> str:
    """An error's kind and the trainee's own line, without its free text.

    The message of an exception may quote what only a hidden variant knows (its seed, a
    target guessed from the data), and stderr may print anything: neither is kept. The
    kind comes first in our own wording and the location last, so a message cannot fake
    either.
    """
    syntax = _SYNTAX_ERROR.search(error.split("\n", 1)[0])
    if syntax:
        return f"SyntaxError at line {syntax.group(1)} of your file"
    kind = error_kind(error)
    locations = _ERROR_LOCATION.findall(error)
    where = f" ({locations[-1][0]}, line {locations[-1][1]})" if locations else ""
    return f"Your code raised {kind}{where}." if kind else "Your code raised an error."


def trainee_error_view(row: GradeRow) -> str:
    """The part of `row.error` a trainee may see: all of it, except under a hidden variant,
    where only an error's kind and line are shown (other statuses say enough by name)."""
    if not row.hidden_variant:
        return row.error
    if row.status != "error" or not row.error:
        return ""
    return f"{error_summary(row.error)} {_HIDDEN_ERROR_NOTE}"


# Score parts where a smaller value is the better defence: what it cost (the `*_drop` of
# an accuracy or utility the defence must keep, in secureml.scoring). Gradescope ranks a
# leaderboard entry "desc" (higher is better) unless told otherwise.
_SMALLER_IS_BETTER_PARTS = frozenset({"ca_drop", "clean_accuracy_drop", "utility_drop"})


def trainee_report(row: GradeRow, *, detailed: bool = True) -> str:
    """What a trainee reads about their row: score or status, the error they may see, and
    the feedback; with `detailed`, the score's parts and (not under a hidden variant) the
    metrics too. Plain text: every platform must show it as text, never as markup."""
    points = gradebook_points(row) or 0.0
    lines: list[str] = []
    if row.status == "ok":
        lines.append(f"Score: {points:.1f} / {row.max_score:.1f}")
        if detailed and row.parts:
            lines.append("Score parts:")
            lines += [f"  {name}: {value:.3f}" for name, value in sorted(row.parts.items())]
        if detailed and row.metrics and not row.hidden_variant:
            lines.append("Metrics:")
            lines += [f"  {name}: {value:.4f}" for name, value in sorted(row.metrics.items())]
    elif row.status == "infra-error":
        lines.append(_INFRA_ERROR_MESSAGE)
    else:
        lines.append(f"Status: {row.status}. Score: 0 / {row.max_score:.1f}")
        error = trainee_error_view(row)
        if error:
            lines += ["", error]
    if row.feedback:
        lines += ["", "Feedback:"]
        lines += [f"- {hint}" for hint in row.feedback]
    return "\n".join(lines)


def gradescope_results(row: GradeRow, *, visibility: str = "visible",
                       execution_time_s: float | None = None) -> dict[str, Any]:
    """One trainee's row as a Gradescope autograder `results.json` object.

    The form follows Gradescope's "Autograder Specifications" (output format): a
    top-level `score`, which overrides the sum of the tests; the trainee's report as the
    top-level `output`; one test with the score and the full report; then one
    informational test per score part (no score of its own: the spec's "informational
    checks"), and the score and its parts as `leaderboard` entries. Every text field is
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
        "status": "passed" if row.status == "ok" else "failed",
        "output": trainee_report(row),
        "output_format": "text",
        "visibility": visibility,
    }
    part_tests = [
        {
            "name": f"score part {name} = {value:.4f}",
            "name_format": "text",
            "output": f"{name} = {value:.6g}: one part of the score (`secureml show "
                      f"{row.scenario_id}` shows how the parts make the score).",
            "output_format": "text",
            "visibility": visibility,
        }
        for name, value in sorted(row.parts.items())
    ]
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
        },
    }
    if execution_time_s is None:
        execution_time_s = row.timings_s.get("total")
    if execution_time_s is not None:
        results["execution_time"] = round(execution_time_s)  # whole seconds, as in the spec
    return results


def gradescope_grader_failure(detail: str, *, execution_time_s: float | None = None) -> dict[str, Any]:
    """A Gradescope `results.json` object for a run the grader itself could not finish.

    The trainee reads that the grader failed and the submission will be graded again
    (Gradescope has no "no grade" value: the score is 0 until then); `detail`, the cause,
    goes to `extra_data`, which only the instructor's tools see.
    """
    results: dict[str, Any] = {
        "score": 0.0,
        "output": _INFRA_ERROR_MESSAGE,
        "output_format": "text",
        "test_output_format": "text",
        "test_name_format": "text",
        "stdout_visibility": "hidden",
        "tests": [{"name": "secureml (the grader failed)", "score": 0.0, "max_score": 100.0,
                   "status": "failed", "output": _INFRA_ERROR_MESSAGE}],
        "extra_data": {"secureml_status": "infra-error", "detail": detail},
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
        if row.status == "ok" and row.score is not None:
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
    scores = [row.score for row in latest_rows if row.status == "ok" and row.score is not None]
    status_counts = {status: 0 for status in STATUSES}
    for row in latest_rows:
        status_counts[row.status] += 1

    body = [f"<h1>{html.escape(title)}</h1>"]
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


def write_text_atomically(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` whole or not at all: a temporary file beside it is
    renamed over it, so nobody uploads a half-written export from an interrupted run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as temporary:
            temporary.write(text)
            temporary.flush()
            os.fsync(temporary.fileno())
        os.replace(temporary_name, path)
    except BaseException:
        Path(temporary_name).unlink(missing_ok=True)
        raise


_Writer = Callable[[Sequence[GradeRow], Path, ExportOptions], list[Path]]


def _write_single_file(render: Callable[[Sequence[GradeRow], ExportOptions], str]) -> _Writer:
    def write(rows: Sequence[GradeRow], output_path: Path, options: ExportOptions) -> list[Path]:
        if output_path.is_dir():
            raise GradebookError(
                f"{output_path} is a folder, but this export writes one file. Give a file name."
            )
        write_text_atomically(output_path, render(rows, options))
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
        write_text_atomically(path, text)
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
