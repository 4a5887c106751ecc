"""One grading result: `GradeRow`, its statuses, and what a trainee may read of its error.

A row is validated once, where the grader builds it, so that the store and every export
can trust it. Only the standard library (and secureml.errors) is imported here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

from secureml.errors import SecuremlError


class Status(str, Enum):
    """The outcome of grading one submission. A str: stored and exported as its value."""

    OK = "ok"  # ran and was scored
    ERROR = "error"  # the trainee's code raised
    TIMEOUT = "timeout"  # the trainee's code ran past the scenario's time limit
    MEMORY = "memory"  # the trainee's code ran past the memory limit
    INVALID_RESULT = "invalid-result"  # it returned something the evaluator cannot use
    NO_RESULT = "no-result"  # it returned nothing
    INFRA_ERROR = "infra-error"  # the grader itself failed: not the trainee's fault, grade again

    def __str__(self) -> str:
        # str() and format() give the value, as enum.StrEnum (Python 3.11+) does.
        return str(self.value)

    def __format__(self, format_spec: str) -> str:
        return format(str(self.value), format_spec)


# The statuses in the order reports list them.
STATUSES: tuple[Status, ...] = tuple(Status)

# Statuses that are the trainee's doing and so earn zero points. "infra-error" is
# not among them: a broken grader must not cost a trainee marks.
_TRAINEE_FAILURE_STATUSES = frozenset(STATUSES) - {Status.OK, Status.INFRA_ERROR}

# What a trainee reads (their report, Gradescope, Moodle's feedback) when the grader, not
# their code, failed.
INFRA_ERROR_MESSAGE = (
    "The grader failed for reasons unrelated to your submission, so it has no score yet. "
    "Your instructor will grade it again; you do not need to resubmit."
)

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
    status: Status  # a plain str such as "ok" is accepted and converted
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
    # The threat's ids, e.g. {"owasp": "ML02", "atlas_technique": "AML.T0020", ...}
    # (ScenarioBase.taxonomy); empty for rows graded before gradebooks kept them.
    taxonomy: Mapping[str, str] = field(default_factory=dict)

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
        object.__setattr__(self, "status", Status(self.status))
        max_score = _finite_number(self.max_score, "max_score")
        if max_score <= 0:
            raise InvalidGradeRowError(
                f"GradeRow.max_score is {max_score!r}, but it must be above 0. Use 100.0."
            )
        object.__setattr__(self, "max_score", max_score)
        if self.status == Status.OK:
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
                f"GradeRow.score is {self.score!r} although status is {self.status.value!r}. "
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
        object.__setattr__(self, "taxonomy", _text_mapping(self.taxonomy, "taxonomy"))
        object.__setattr__(self, "picture_png", _png_or_none(self.picture_png))
        _graded_at_utc(self.graded_at)

    def to_json(self) -> dict[str, Any]:
        """The row as JSON-ready data, without the picture's bytes (the JSON export, `grade --json`)."""
        return {
            "scenario_id": self.scenario_id,
            "trainee": self.trainee,
            "submission_sha256": self.submission_sha256,
            "status": self.status.value,
            "score": self.score,
            "max_score": self.max_score,
            "gradebook_points": gradebook_points(self),
            "parts": dict(self.parts),
            "metrics": dict(self.metrics),
            "flags": list(self.flags),
            "feedback": list(self.feedback),
            "error": self.error,
            "timings_s": dict(self.timings_s),
            "seed": self.seed,
            "config_sha256": self.config_sha256,
            "hidden_variant": self.hidden_variant,
            "versions": dict(self.versions),
            # The picture itself stays in the gradebook and the HTML report.
            "has_picture": self.picture_png is not None,
            "graded_at": self.graded_at,
            "taxonomy": dict(self.taxonomy),
        }


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


def graded_at_us(row: GradeRow) -> int:
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
        candidate = (graded_at_us(row), position, row)
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
    if row.status == Status.OK:
        return row.score
    if row.status in _TRAINEE_FAILURE_STATUSES:
        return 0.0
    return None


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
    if row.status != Status.ERROR or not row.error:
        return ""
    return f"{error_summary(row.error)} {_HIDDEN_ERROR_NOTE}"
