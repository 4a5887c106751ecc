"""Trainee text never reaches the instructor's terminal as markup or escape codes.

Names, error lines, notes and feedback come from trainees. On a real pseudo-terminal, with a
real `secureml` process that believes it talks to a colour terminal, none of their bytes may
be interpreted: rich markup (`[/]` once made every `secureml gradebook` exit 70, `[link=...]`
made a hyperlink) shows as text, and escape sequences (set title, clear screen, colours) show
as visible `\\x1b` escapes. The gradebook keeps every value exactly as it was.
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import time

import pytest

from conftest import REPO
from secureml.gradebook import Gradebook
from secureml.report import json_for_terminal, safe_markup, safe_text
from secureml.sandbox import isolation_mode
from test_gradebook import make_row

ESC = "\x1b"
TITLE = f"{ESC}]0;pwned{chr(7)}"  # set the window title (OSC), ended by BEL
CLEAR = f"{ESC}[2J{ESC}[H"  # clear the screen, cursor home
RED = f"{ESC}[31m"
LINK = "[link=https://evil.example/]click me[/link]"
# What rich itself writes: colours and styles (SGR), and for progress bars erase-line,
# cursor-up and cursor visibility. Nothing else may reach the terminal.
_RICH_OWN = re.compile(r"\x1b\[(?:[0-9;]*m|[0-9]*[AK]|\?25[lh])")


def run_on_a_terminal(*args: str, timeout_s: float = 600) -> tuple[int, str]:
    """Run `secureml ARGS` with a pseudo-terminal as stdin, stdout and stderr."""
    main, child_end = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "200", "LINES": "50"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen([sys.executable, "-m", "secureml.cli", *args], cwd=REPO, env=env,
                               stdin=child_end, stdout=child_end, stderr=child_end, close_fds=True)
    os.close(child_end)
    output = bytearray()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            output += chunk
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(main)
    return code, output.decode("utf-8", errors="replace")


def assert_nothing_interpreted(output: str) -> None:
    """Only rich's own sequences reach the terminal: no OSC, no BEL, no trainee sequence."""
    assert "\x07" not in output, "a BEL reached the terminal"
    assert f"{ESC}]" not in output, "an OSC sequence (title or hyperlink) reached the terminal"
    assert "\x9b" not in output, "a one-character CSI reached the terminal"
    leftover = _RICH_OWN.sub("", output)
    assert ESC not in leftover, f"an escape sequence rich never writes reached the terminal: {leftover!r}"
    assert f"{RED}gotcha" not in output, "the trainee's own colour reached the terminal"


def plain(output: str) -> str:
    return _RICH_OWN.sub("", output)


def hostile_rows():
    return [
        make_row("alice", status="error", score=None, error="[/]"),
        make_row(f"bob{TITLE}", status="error", score=None, error=f"ValueError: {CLEAR}{RED}gotcha"),
        make_row("carol", status="error", score=None, error=f"{RED}gotcha"),
        make_row(LINK, feedback=[f"[bold]not bold[/bold] {ESC}[5m"]),
        make_row("dave", status="ok", flags=[f"needs-review: {TITLE}masking"]),
    ]


def test_safe_text_and_markup_keep_every_character_visible():
    hostile = f"a{TITLE}b[/]{CLEAR}\u202eevil\x9b2J\tz"
    shown = safe_text(hostile)
    assert ESC not in shown and "\x07" not in shown and "\u202e" not in shown and "\x9b" not in shown
    assert "\\x1b]0;pwned\\x07" in shown and "\\u202e" in shown and "[/]" in shown
    assert safe_markup("[/]") == "\\[/]"
    import json

    dumped = json.dumps({"name": hostile}, ensure_ascii=False)
    assert json.loads(json_for_terminal(dumped))["name"] == hostile  # the same value, escaped


def test_gradebook_on_a_terminal_interprets_no_trainee_byte(tmp_path):
    db = tmp_path / "gradebook.db"
    with Gradebook.open(db) as book:
        for row in hostile_rows():
            book.record(row)
    code, output = run_on_a_terminal("gradebook", "--db", str(db))
    assert code == 0, output
    assert_nothing_interpreted(output)
    shown = plain(output)
    assert "[/]" in shown and "[link=https://evil.example/]click" in shown
    assert "\\x1b]0;pwned\\x07" in shown and "\\x1b[2J" in shown and "\\x1b[31mgotcha" in shown
    # The stored values are intact.
    with Gradebook.open(db) as book:
        stored = {row.trainee: row for row in book.rows()}
    assert stored[f"bob{TITLE}"].error == f"ValueError: {CLEAR}{RED}gotcha"
    assert stored["alice"].error == "[/]"


def test_gradebook_json_on_a_terminal_escapes_control_characters(tmp_path):
    db = tmp_path / "gradebook.db"
    with Gradebook.open(db) as book:
        book.record(make_row(f"bob{TITLE}\u202e", status="error", score=None, error=f"{CLEAR}\x9b"))
    code, output = run_on_a_terminal("gradebook", "--db", str(db), "--json")
    assert code == 0, output
    assert_nothing_interpreted(output)
    assert "\u202e" not in output and "\\u202e" in output


def test_grade_on_a_terminal_shows_hostile_names_errors_and_notes_as_text(tmp_path):
    folder = tmp_path / "submissions"
    folder.mkdir()
    (folder / "mallory.py").write_text(
        f"def sanitize(x, y, tools):\n    raise ValueError({'[/]' + CLEAR + RED + 'gotcha'!r})\n")
    (folder / "[link=https:evil.example]bob.py").write_text(
        f"def sanitize(x, y, tools):\n    raise RuntimeError({LINK!r})\n")
    # Names with control characters are skipped, and the note says so, quoting the name.
    (folder / f"eve{TITLE}.py").write_text("def sanitize(x, y, tools):\n    return list(range(len(y)))\n")
    db = tmp_path / "gradebook.db"
    unsafe = [] if isolation_mode() else ["--unsafe"]  # our own payloads: safe to run bare
    code, output = run_on_a_terminal("grade", "poisoning-01", str(folder), "--db", str(db),
                                     "--timeout", "120", *unsafe)
    assert code == 0, output
    assert_nothing_interpreted(output)
    shown = plain(output)
    assert "skipped eve\\x1b]0;pwned\\x07.py" in shown
    assert "[link=https:evil.example]bob" in shown and "[/]" in shown
    # And the gradebook of that run shows the same way, and exits 0.
    code, output = run_on_a_terminal("gradebook", "--db", str(db))
    assert code == 0, output
    assert_nothing_interpreted(output)
    with Gradebook.open(db) as book:
        errors = {row.trainee: row.error for row in book.rows()}
    assert f"[/]{CLEAR}{RED}gotcha" in errors["mallory"]  # stored exactly as the trainee wrote it


def test_an_error_message_quoting_a_trainee_name_is_printed_without_its_controls(tmp_path):
    folder = tmp_path / "submissions"
    (folder / f"x{TITLE}").mkdir(parents=True)
    (folder / f"x{TITLE}" / "mitigation.py").write_text("x = 1\n")
    (folder / f"x{TITLE}.py").write_text("x = 1\n")
    code, output = run_on_a_terminal("grade", "poisoning-01", str(folder), "--db", str(tmp_path / "g.db"),
                                     "--unsafe", timeout_s=120)
    assert code != 0
    assert_nothing_interpreted(output)


@pytest.fixture(autouse=True)
def _no_color_override(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
