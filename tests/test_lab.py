"""`secureml lab ID [DIR]`: a trainee gets a lab folder to work in, never the answers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import REPO
from secureml.cli import cli

HEAVY = ("torch", "torchvision", "art", "matplotlib", "sklearn", "numpy")


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_lab_writes_the_handout_starter_pictures_and_notebook_and_prints_the_next_command(in_tmp):
    result = CliRunner().invoke(cli, ["lab", "poisoning-01"])
    assert result.exit_code == 0, result.output
    folder = in_tmp / "poisoning-01"
    written = sorted(path.name for path in folder.iterdir())
    assert written == ["README.md", "mitigation.py", "notebook.ipynb", "triggers.png"]
    for name in ("README.md", "mitigation.py", "triggers.png", "notebook.ipynb"):
        assert (folder / name).read_bytes() == (REPO / "labs/poisoning-01" / name).read_bytes()
    assert "secureml run poisoning-01 --mitigation poisoning-01/mitigation.py" in result.output
    assert "jupyter lab poisoning-01/notebook.ipynb" in result.output


@pytest.mark.parametrize("scenario_id", sorted(path.stem for path in (REPO / "scenarios").glob("*.yaml")))
def test_lab_never_hands_out_the_solution(in_tmp, scenario_id):
    result = CliRunner().invoke(cli, ["lab", scenario_id, "work", "--json"])
    assert result.exit_code == 0, result.output
    written = json.loads(result.output)
    names = sorted(path.name for path in (in_tmp / "work").iterdir())
    assert "solution.py" not in names and {"README.md", "mitigation.py"} <= set(names)
    assert written["next"] == f"secureml run {scenario_id} --mitigation work/mitigation.py"
    assert sorted(written["files"]) == sorted(f"work/{name}" for name in names)


def test_lab_refuses_to_overwrite_a_trainees_work_unless_forced(in_tmp):
    assert CliRunner().invoke(cli, ["lab", "poisoning-01", "mine"]).exit_code == 0
    (in_tmp / "mine/mitigation.py").write_text("# my work\n")
    refused = CliRunner().invoke(cli, ["lab", "poisoning-01", "mine"])
    assert refused.exit_code == 1
    assert "already holds 4 of the lab's files" in refused.output and "--force" in refused.output
    assert (in_tmp / "mine/mitigation.py").read_text() == "# my work\n"
    forced = CliRunner().invoke(cli, ["lab", "poisoning-01", "mine", "--force"])
    assert forced.exit_code == 0
    assert (in_tmp / "mine/mitigation.py").read_bytes() == (REPO / "labs/poisoning-01/mitigation.py").read_bytes()


def test_lab_into_a_file_is_one_clear_error(in_tmp):
    (in_tmp / "notes.txt").write_text("mine\n")
    result = CliRunner().invoke(cli, ["lab", "poisoning-01", "notes.txt"])
    assert result.exit_code == 1
    assert "notes.txt: the lab folder is a file" in result.output and "pick another folder" in result.output
    assert (in_tmp / "notes.txt").read_text() == "mine\n"


def test_lab_with_an_unknown_id_suggests_the_right_one(in_tmp):
    result = CliRunner().invoke(cli, ["lab", "poisoning-1"])
    assert result.exit_code == 2
    assert "no scenario with id 'poisoning-1'" in result.output and "did you mean 'poisoning-01'" in result.output
    assert list(in_tmp.iterdir()) == []


def test_lab_without_an_id_lists_the_labs_like_list():
    listed = CliRunner().invoke(cli, ["list", "--json"])
    labs = CliRunner().invoke(cli, ["lab", "--json"])
    assert labs.exit_code == 0 and json.loads(labs.output) == json.loads(listed.output)
    assert "poisoning-01" in CliRunner().invoke(cli, ["lab"]).output


def test_the_lab_folder_does_not_hide_the_scenario_of_the_same_name(in_tmp):
    """After `secureml lab poisoning-01`, ./poisoning-01 is a folder: the id still works."""
    assert CliRunner().invoke(cli, ["lab", "poisoning-01"]).exit_code == 0
    shown = CliRunner().invoke(cli, ["show", "poisoning-01", "--json"])
    assert shown.exit_code == 0 and json.loads(shown.output)["id"] == "poisoning-01"


def test_lab_imports_no_torch_or_numpy(tmp_path):
    """`secureml lab` stays instant (bench/bench_lab.py times it)."""
    probe = (
        "import sys\n"
        "from secureml.cli import main\n"
        "sys.argv = ['secureml', 'lab', 'poisoning-01', 'probe']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "sys.stderr.write('HEAVY=' + ','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert (tmp_path / "probe/mitigation.py").is_file(), result.stderr
    assert result.stderr.rsplit("HEAVY=", 1)[1].strip() == "", result.stderr
