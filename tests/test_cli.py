"""The CLI's fast paths and its verify command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import REPO
from secureml.cli import cli

HEAVY = ("torch", "torchvision", "art", "matplotlib", "sklearn")


@pytest.mark.parametrize(
    "args",
    [["--help"], ["list"], ["list", "--json"], ["show", "poisoning-01"], ["check", "scenarios/poisoning-01.yaml"],
     ["--version"]],
)
def test_fast_commands_import_no_torch_or_art(args):
    """`--help`, `list`, `show` and `check` must stay instant (bench/bench_cli.py times them)."""
    probe = (
        "import sys\n"
        "from secureml.cli import main\n"
        f"sys.argv = ['secureml', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "sys.stderr.write('HEAVY=' + ','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert "HEAVY=" in result.stderr, result.stderr
    assert result.stderr.rsplit("HEAVY=", 1)[1].strip() == "", result.stderr


def test_list_shows_id_family_title_difficulty_owasp_and_atlas():
    result = CliRunner().invoke(cli, ["list", "--json"])
    assert result.exit_code == 0
    rows = {row["id"]: row for row in json.loads(result.output)}
    assert rows["poisoning-01"]["family"] == "poisoning"
    assert rows["poisoning-01"]["atlas_technique"] == "AML.T0020"
    assert (rows["poisoning-01"]["owasp"], rows["poisoning-01"]["owasp_name"]) == ("ML02", "Data Poisoning Attack")
    table = CliRunner().invoke(cli, ["list"]).output
    assert "OWASP ML" in table and "ML02" in table and "AML.T0020" in table
    assert "OWASP ML Top 10: ML02 Data Poisoning Attack" in CliRunner().invoke(cli, ["show", "poisoning-01"]).output
    assert {"title", "difficulty"} <= set(rows["poisoning-01"])


def test_show_gives_threat_model_task_interface_and_formula():
    result = CliRunner().invoke(cli, ["show", "poisoning-01"])
    assert result.exit_code == 0
    for heading in ("Threat model", "Your task", "Mitigation interface", "Scoring"):
        assert heading in result.output
    assert "def sanitize(x, y, tools)" in result.output
    assert "DER_perfect - DER_random" in result.output


def test_show_accepts_a_path_too():
    result = CliRunner().invoke(cli, ["show", str(REPO / "scenarios/poisoning-01.yaml"), "--json"])
    assert json.loads(result.output)["id"] == "poisoning-01"


def test_help_has_examples():
    result = CliRunner().invoke(cli, ["run", "--help"])
    assert "Examples:" in result.output and "--mitigation" in result.output
