"""The gradebook's store: GradeRows in one SQLite file, safe against crashes and concurrent graders.

Each `record` commits at once, so a grading run that crashes or is killed loses nothing it
already recorded; the schema grows by numbered migrations. Only the standard library.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any

from secureml.gradebook.row import (
    GradebookError,
    GradebookTooNewError,
    GradeRow,
    InvalidGradeRowError,
    NotAGradebookError,
    Status,
    graded_at_us,
    latest_per_trainee,
    now_utc_iso,
)

# PRAGMA application_id marks the file as ours in its SQLite header, so opening a
# stranger's database fails instead of quietly adding our tables to it.
# 0x53454D4C is "SEML" in ASCII.
_APPLICATION_ID = 0x53454D4C

# How long a writer waits for another process's write lock before giving up.
# One upsert holds the lock for milliseconds (one fsync); 30 s covers a slow disk
# and many grading workers without hanging forever on a stuck process.
_BUSY_TIMEOUT_S = 30.0


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
    # The threat's OWASP ML Top 10 and MITRE ATLAS ids (GradeRow.taxonomy), so that exports
    # can name them. Rows graded before this version keep an empty mapping.
    3: """
        ALTER TABLE grades ADD COLUMN taxonomy_json TEXT NOT NULL DEFAULT '{}';
    """,
}
SCHEMA_VERSION = max(_MIGRATIONS)

_COLUMNS = (
    "scenario_id", "trainee", "submission_sha256", "status", "score", "max_score",
    "parts_json", "metrics_json", "flags_json", "feedback_json", "error", "timings_s_json",
    "seed", "config_sha256", "hidden_variant", "versions_json", "picture_png", "taxonomy_json",
    "graded_at", "graded_at_us",
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
        row.scenario_id, row.trainee, row.submission_sha256, row.status.value, row.score,
        row.max_score, _to_json(row.parts), _to_json(row.metrics), _to_json(list(row.flags)),
        _to_json(list(row.feedback)), row.error, _to_json(row.timings_s), row.seed,
        row.config_sha256, int(row.hidden_variant), _to_json(row.versions), row.picture_png,
        _to_json(row.taxonomy), row.graded_at, graded_at_us(row),
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
        taxonomy=json.loads(record["taxonomy_json"]),
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
            query += " AND status != ?"
            parameters.append(Status.INFRA_ERROR.value)
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
