"""The roster: who each trainee is on the course's learning platform.

`secureml grade` knows a trainee by the name of their submission (ALICE for ALICE.py or
ALICE/). Canvas and Moodle know a student by their own identities. A roster is a CSV file
with one line per trainee that maps the one to the other:

    trainee,name,lms_id,sis_user_id,sis_login_id,section,email
    alice,"Liddell, Alice",1234,S-001,aliddell,Section A,alice@example.edu

Every column must be present (in any order); only `trainee` must be filled in. What each
platform reads (see the exports in secureml.gradebook):

    trainee       the submission's name, ALICE for ALICE.py
    name          the student's name as the platform shows it (Canvas: Student)
    lms_id        the platform's own user id (Canvas: ID)
    sis_user_id   the institution's student id (Canvas: SIS User ID; Moodle: ID number)
    sis_login_id  the login (Canvas: SIS Login ID)
    section       the course section (Canvas: Section)
    email         the e-mail address (Moodle: Email address)

A roster is read once, checked whole, and every problem is one message naming the file,
the line and the fix. Only the standard library is used.
"""

from __future__ import annotations

import csv
import difflib
import io
from dataclasses import dataclass
from pathlib import Path

from secureml.errors import SecuremlError

__all__ = ["IDENTITY_COLUMNS", "ROSTER_COLUMNS", "Roster", "RosterEntry", "RosterError", "load_roster"]

ROSTER_COLUMNS: tuple[str, ...] = (
    "trainee", "name", "lms_id", "sis_user_id", "sis_login_id", "section", "email",
)  # fmt: skip
# Columns that name one student on the platform: two trainees must never share a value, or
# the platform would give one student two grades and keep whichever it read last.
IDENTITY_COLUMNS: tuple[str, ...] = ("lms_id", "sis_user_id", "sis_login_id", "email")

# A roster is a class list: far below this. The bound keeps a wrong file (a gradebook
# export, a dataset) from being read whole into memory.
MAX_ROSTER_BYTES = 10 * 1024 * 1024

_HEADER_EXAMPLE = ",".join(ROSTER_COLUMNS)


class RosterError(SecuremlError):
    """The roster file cannot be used as it is; the message names the file, the line and the fix."""

    exit_code = 6  # a gradebook export's input, as the gradebook's own errors


@dataclass(frozen=True)
class RosterEntry:
    """One trainee's identities on the platform (empty strings where the roster has none)."""

    trainee: str
    name: str
    lms_id: str
    sis_user_id: str
    sis_login_id: str
    section: str
    email: str
    line: int  # where it is in the roster file, for messages


@dataclass(frozen=True)
class Roster:
    """The trainees of a course, in the roster's order."""

    source: Path
    entries: tuple[RosterEntry, ...]


def load_roster(path: str | Path) -> Roster:
    """Read and check a roster CSV file (UTF-8, RFC 4180); raise RosterError on any problem."""
    path = Path(path)
    text = _read_text(path)
    # Lines of blanks or bare commas (spreadsheets leave them) hold nothing, anywhere.
    rows = [(line, cells) for line, cells in _parse(path, text) if any(cell.strip() for cell in cells)]
    if not rows:
        raise RosterError(
            "the roster is empty",
            file=str(path),
            expected=f"a header line ({_HEADER_EXAMPLE}), then one line per trainee",
            fix="export the class list from the platform and add the trainee column, "
                "or write the file by hand in that shape",
        )
    header_line, header = rows[0]
    positions = _header_positions(path, header_line, header)
    entries: list[RosterEntry] = []
    for line, cells in rows[1:]:
        if len(cells) != len(header):
            raise RosterError(
                f"this line has {len(cells)} cells, but the header has {len(header)}",
                file=f"{path}:{line}",
                fix="quote cells that hold a comma (\"Liddell, Alice\"), and give every line "
                    "one cell per column, empty ones included",
            )
        values = {column: cells[index].strip() for column, index in positions.items()}
        if not values["trainee"]:
            raise RosterError(
                "the 'trainee' cell is empty",
                file=f"{path}:{line}",
                fix="give the name of this trainee's submission (ALICE for ALICE.py or ALICE/), "
                    "or delete the line",
            )
        entries.append(RosterEntry(**values, line=line))
    if not entries:
        raise RosterError(
            "the roster has a header but no trainee",
            file=str(path),
            fix="add one line per trainee under the header",
        )
    _refuse_duplicates(path, entries)
    return Roster(path, tuple(entries))


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_ROSTER_BYTES:
            raise RosterError(
                f"the roster is {size} bytes, more than the {MAX_ROSTER_BYTES} a class list needs",
                file=str(path),
                fix="check that this is the roster and not a gradebook or a dataset",
            )
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise RosterError("the roster file does not exist", file=str(path),
                          fix="check the path given to --roster") from error
    except IsADirectoryError as error:
        raise RosterError("the roster is a folder, not a CSV file", file=str(path),
                          fix="give the path of the roster's .csv file") from error
    except OSError as error:
        raise RosterError(f"cannot read the roster ({error.strerror})", file=str(path),
                          fix="check the path and its permissions") from error
    try:
        # utf-8-sig: spreadsheets often start a UTF-8 CSV with a byte-order mark.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise RosterError(
            "the roster is not UTF-8 text",
            file=f"{path}:{line}",
            fix="save it as \"CSV UTF-8\" (in a spreadsheet: Save As, CSV UTF-8)",
        ) from error


def _parse(path: Path, text: str) -> list[tuple[int, list[str]]]:
    """Each record with the line it starts on; a quoted cell may span lines (RFC 4180)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, list[str]]] = []
    try:
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return rows
            rows.append((start, cells))
    except csv.Error as error:
        raise RosterError(
            f"this line is not valid CSV ({error})",
            file=f"{path}:{reader.line_num}",
            fix="close every opened quote, and double a quote inside a quoted cell (\"\")",
        ) from error


def _header_positions(path: Path, line: int, header: list[str]) -> dict[str, int]:
    where = f"{path}:{line}"
    names = [cell.strip().lower() for cell in header]
    positions: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in positions:
            raise RosterError(f"the column '{name}' appears twice in the header", file=where,
                              fix="keep one of them")
        if name not in ROSTER_COLUMNS:
            close = difflib.get_close_matches(name, ROSTER_COLUMNS, n=1)
            raise RosterError(
                f"the header names an unknown column '{header[index].strip()}'"
                + (f" (did you mean '{close[0]}'?)" if close else ""),
                file=where,
                expected=_HEADER_EXAMPLE,
                fix="rename or delete that column",
            )
        positions[name] = index
    missing = [name for name in ROSTER_COLUMNS if name not in positions]
    if missing:
        raise RosterError(
            f"the header lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
            file=where,
            expected=_HEADER_EXAMPLE,
            found=",".join(cell.strip() for cell in header),
            fix="add the missing columns (in any order); their cells may stay empty",
        )
    return positions


def _refuse_duplicates(path: Path, entries: list[RosterEntry]) -> None:
    for column in ("trainee", *IDENTITY_COLUMNS):
        first_line: dict[str, int] = {}
        for entry in entries:
            value = getattr(entry, column)
            if not value:
                continue
            if value in first_line:
                raise RosterError(
                    f"{column} '{value}' appears twice, on lines {first_line[value]} and {entry.line}",
                    file=f"{path}:{entry.line}",
                    fix="keep one line per trainee, each with their own identities"
                        if column == "trainee" else
                        "two trainees cannot be one student on the platform; correct one of the lines",
                )
            first_line[value] = entry.line
