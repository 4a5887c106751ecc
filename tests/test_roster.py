"""An instructor writes a roster (who each trainee is on Canvas or Moodle); every mistake
in it is one clear message naming the file, the line and the fix, before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from secureml.cli import cli
from secureml.roster import ROSTER_COLUMNS, RosterError, load_roster

HEADER = ",".join(ROSTER_COLUMNS)


def write(tmp_path: Path, text: str | bytes, name: str = "roster.csv") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def test_a_roster_maps_each_trainee_to_the_platforms_identities(tmp_path):
    path = write(tmp_path, (
        "\ufeff" + HEADER + "\r\n"  # a byte-order mark, as spreadsheets write UTF-8 CSV
        'alice,"Liddell, Alice",1234,S-001,aliddell,Section A,alice@example.edu\r\n'
        ",,,,,,\r\n"  # a line of empty cells, as spreadsheets leave at the end
        "bob,,,,,,\r\n"
        '"zoë ""z""","Zoë\nMüller",99,,,,zoe@example.edu\r\n'  # quotes and a line break in a cell
    ))
    roster = load_roster(path)
    alice, bob, zoe = roster.entries
    assert (alice.trainee, alice.name, alice.lms_id, alice.sis_user_id, alice.sis_login_id, alice.section,
            alice.email, alice.line) == ("alice", "Liddell, Alice", "1234", "S-001", "aliddell",
                                         "Section A", "alice@example.edu", 2)
    assert (bob.trainee, bob.name, bob.email, bob.line) == ("bob", "", "", 4)
    assert (zoe.trainee, zoe.name, zoe.line) == ('zoë "z"', "Zoë\nMüller", 5)


def test_columns_may_come_in_any_order_and_case(tmp_path):
    path = write(tmp_path, "Email, Trainee ,name,section,SIS_LOGIN_ID,sis_user_id,lms_id\na@b.c,alice,,,,,\n")
    (alice,) = load_roster(path).entries
    assert (alice.trainee, alice.email) == ("alice", "a@b.c")


BAD_ROSTERS = {
    "an empty file": ("", "roster.csv: the roster is empty", "write the file by hand in that shape"),
    "blank lines only": ("\n , ,\n\n", "roster.csv: the roster is empty", "export the class list"),
    "a missing column": (
        "trainee,name,lms_id,sis_user_id,section,email\nalice,,,,,\n",
        "roster.csv:1: the header lacks the column sis_login_id",
        "add the missing columns",
    ),
    "an unknown column": (
        HEADER + ",e-mail\nalice,,,,,,,\n",
        "roster.csv:1: the header names an unknown column 'e-mail' (did you mean 'email'?)",
        "rename or delete that column",
    ),
    "a duplicate name": (
        HEADER + "\nalice,,1,,,,\nbob,,2,,,,\nalice,,3,,,,\n",
        "roster.csv:4: trainee 'alice' appears twice, on lines 2 and 4",
        "keep one line per trainee",
    ),
    "two trainees with one e-mail": (
        HEADER + "\nalice,,,,,,x@example.edu\nbob,,,,,,x@example.edu\n",
        "roster.csv:3: email 'x@example.edu' appears twice, on lines 2 and 3",
        "two trainees cannot be one student",
    ),
    "a header only": (HEADER + "\n", "roster.csv: the roster has a header but no trainee", "add one line"),
    "a short line": (
        HEADER + "\nalice,Liddell, Alice,1,,,,\n",
        "roster.csv:2: this line has 8 cells, but the header has 7",
        'quote cells that hold a comma ("Liddell, Alice")',
    ),
    "an empty trainee": (HEADER + "\n,Alice,1,,,,\n", "roster.csv:2: the 'trainee' cell is empty",
                         "give the name of this trainee's submission"),
    "an unclosed quote": (HEADER + '\nalice,"Alice,1,,,,\n', "roster.csv:", "close every opened quote"),
    "Latin-1 bytes": (HEADER.encode() + b"\nalice,M\xfcller,,,,,\n", "roster.csv:2: the roster is not UTF-8 text",
                      'save it as "CSV UTF-8"'),
}


@pytest.mark.parametrize("case", sorted(BAD_ROSTERS))
def test_a_bad_roster_is_one_message_naming_the_file_the_line_and_the_fix(tmp_path, case):
    text, where_and_what, fix = BAD_ROSTERS[case]
    path = write(tmp_path, text)
    with pytest.raises(RosterError) as raised:
        load_roster(path)
    message = raised.value.message()
    assert message.startswith(str(tmp_path / where_and_what)), message
    assert fix in message.split("fix:", 1)[1], message


def test_the_cli_reads_the_roster_before_anything_else_and_fails_without_a_traceback(tmp_path):
    path = write(tmp_path, "trainee,name\nalice,Alice\n")
    # No gradebook exists: the roster's problem is still the one reported, and first.
    result = CliRunner().invoke(cli, ["gradebook", "--db", str(tmp_path / "none.db"), "--export", "canvas",
                                      "--roster", str(path)])
    assert result.exit_code == RosterError.exit_code == 6, result.output
    assert f"error: {path}:1: the header lacks the columns lms_id, sis_user_id" in result.output
    assert "Traceback" not in result.output
    missing = CliRunner().invoke(cli, ["gradebook", "--export", "moodle", "--roster", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 6 and "the roster file does not exist" in missing.output
