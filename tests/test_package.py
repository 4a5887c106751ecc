"""The trainee's path: the wheel carries every scenario, handout, starter, picture and the
bundled data, never a solution or a hidden variant; installed into a fresh venv with no
access to the checkout, it lists, hands out and runs the labs, and `verify` says it needs
the instructor material. Also: where content is found, and never silently nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import REPO
from secureml import paths, scenario
from secureml.cli import cli

SCENARIO_IDS = sorted(path.stem for path in (REPO / "scenarios").glob("*.yaml"))
CONTENT = "secureml/_content/"


# --------------------------------------------------------------------------- the archives


def _wheel_names(built) -> list[str]:
    with zipfile.ZipFile(built["wheel"]) as archive:
        return archive.namelist()


def _sdist_names(built) -> list[str]:
    with tarfile.open(built["sdist"]) as archive:
        # "secureml-0.1.0/labs/..." -> "labs/..."
        return [member.name.split("/", 1)[1] for member in archive.getmembers()
                if member.isfile() and "/" in member.name]


def test_the_wheel_carries_every_scenario_handout_starter_picture_and_the_bundled_data(built):
    names = set(_wheel_names(built))
    for scenario_id in SCENARIO_IDS:
        loaded = scenario.load(REPO / "scenarios" / f"{scenario_id}.yaml")
        assert f"{CONTENT}scenarios/{scenario_id}.yaml" in names
        lab = loaded.starter_path.parent.relative_to(REPO).as_posix()
        assert f"{CONTENT}{lab}/README.md" in names
        assert f"{CONTENT}{loaded.starter_path.relative_to(REPO).as_posix()}" in names
    for picture in REPO.glob("labs/*/*.png"):
        assert f"{CONTENT}{picture.relative_to(REPO).as_posix()}" in names
    assert f"{CONTENT}labs/poisoning-01/notebook.ipynb" in names
    assert {f"{CONTENT}datasets/mnist-5k.npz", f"{CONTENT}datasets/mnist-5k.md"} <= names


def test_neither_archive_holds_a_solution_or_a_hidden_variant(built):
    # The checkout holds both, so the test would notice if the build let them through.
    assert list(REPO.glob("labs/*/solution.py")) and list(REPO.glob("scenarios/hidden/*.yaml"))
    for names in (_wheel_names(built), _sdist_names(built)):
        assert not [name for name in names if Path(name).name.startswith("solution")]
        assert not [name for name in names if "scenarios/hidden" in name]


def test_the_sdist_and_the_wheel_hold_the_same_content(built):
    """MANIFEST.in (sdist) and setup.py's hook (wheel) select the same files."""
    wheel = {name[len(CONTENT):] for name in _wheel_names(built) if name.startswith(CONTENT)}
    sdist = {name for name in _sdist_names(built) if name.startswith(("scenarios/", "labs/", "datasets/"))}
    assert wheel == sdist


def test_the_hidden_variant_example_is_a_valid_override():
    loaded = scenario.load("poisoning-01")
    variant = scenario.apply_overrides(loaded, REPO / "scenarios/hidden/poisoning-01.yaml")
    assert variant.seed != loaded.seed and variant.attack.target_class != loaded.attack.target_class


# --------------------------------------------------------------------------- a trainee's venv


@pytest.fixture(scope="session")
def trainee_venv(built, tmp_path_factory) -> Path:
    """A fresh venv holding only the wheel; its dependencies come from this venv through a
    .pth line, which adds the folder but runs none of its own .pth files (so the
    editable install of the checkout stays out of reach)."""
    venv = tmp_path_factory.mktemp("trainee") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "project-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
         "--no-index", str(built["wheel"])],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return venv


def trainee_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("SECUREML_HOME", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return env


def as_trainee(venv: Path, folder: Path, *args: str, timeout_s: float = 900) -> subprocess.CompletedProcess:
    """The installed `secureml` command, run from `folder`, as a trainee would."""
    return subprocess.run([str(venv / "bin" / "secureml"), *args], cwd=folder, env=trainee_env(),
                          capture_output=True, text=True, timeout=timeout_s)


def in_trainee_python(venv: Path, folder: Path, code: str) -> str:
    result = subprocess.run([str(venv / "bin" / "python"), "-c", textwrap.dedent(code)], cwd=folder,
                            env=trainee_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_trainee_venv_imports_the_wheel_and_cannot_see_the_checkout(trainee_venv, tmp_path):
    seen = json.loads(in_trainee_python(trainee_venv, tmp_path, """
        import json, sys
        import secureml, torch
        from secureml import paths
        root = paths.content_root()
        editable = [name for name in sys.modules if "editable" in name]
        print(json.dumps({"secureml": secureml.__file__, "torch": torch.__file__, "path": sys.path,
                          "editable": editable, "origin": root.origin, "root": str(root.path)}))
    """))
    assert Path(seen["secureml"]).is_relative_to(trainee_venv)
    # The project venv is on the path (for torch and the rest), its editable finder is not.
    search_path = [Path(entry).resolve() for entry in seen["path"] if entry]
    assert Path(sysconfig.get_path("purelib")).resolve() in search_path
    assert REPO not in search_path and REPO / "src" not in search_path and seen["editable"] == []
    assert seen["origin"] == "package" and Path(seen["root"]).is_relative_to(trainee_venv)
    assert Path(seen["torch"]).is_relative_to(Path(sysconfig.get_path("purelib")))


def test_a_trainee_lists_gets_and_runs_a_lab_from_the_wheel_but_cannot_verify(trainee_venv, tmp_path):
    listed = as_trainee(trainee_venv, tmp_path, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(row["id"] for row in json.loads(listed.stdout)) == SCENARIO_IDS

    lab = as_trainee(trainee_venv, tmp_path, "lab", "poisoning-01", "my-lab")
    assert lab.returncode == 0, lab.stderr
    assert "secureml run poisoning-01 --mitigation my-lab/mitigation.py" in lab.stdout
    written = sorted(path.name for path in (tmp_path / "my-lab").iterdir())
    assert written == ["README.md", "mitigation.py", "notebook.ipynb", "triggers.png"]
    assert (tmp_path / "my-lab/mitigation.py").read_bytes() == (REPO / "labs/poisoning-01/mitigation.py").read_bytes()

    verify = as_trainee(trainee_venv, tmp_path, "verify")
    assert verify.returncode == paths.InstructorMaterialMissing.exit_code, verify.stderr
    assert "needs the instructor material" in verify.stderr and "--instructor" in verify.stderr
    assert "Traceback" not in verify.stderr and verify.stdout == ""


@pytest.mark.slow
def test_the_starter_from_the_wheel_runs_and_scores_low(trainee_venv, tmp_path):
    assert as_trainee(trainee_venv, tmp_path, "lab", "poisoning-01").returncode == 0
    result = as_trainee(trainee_venv, tmp_path, "run", "poisoning-01", "--mitigation",
                        "poisoning-01/mitigation.py", "--json", timeout_s=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout)
    assert payload["score"] <= 10
    assert payload["mitigation"] == "poisoning-01/mitigation.py"
    assert json.loads((tmp_path / "out/poisoning-01/results.json").read_text()) == payload


def test_instructor_material_comes_from_instructor_dir_in_a_wheel_install(trainee_venv, tmp_path):
    found = in_trainee_python(trainee_venv, tmp_path, f"""
        from secureml import paths, scenario
        paths.use_instructor_dir({str(REPO)!r})
        print(paths.require_solution(scenario.load("poisoning-01")))
    """)
    assert Path(found.strip()) == REPO / "labs/poisoning-01/solution.py"


def test_the_grading_sandbox_cannot_read_the_wheels_content(trainee_venv, tmp_path):
    """The wheel's package holds the pristine datasets; the sandbox must not show them."""
    from secureml.sandbox import bubblewrap_available

    if not bubblewrap_available():
        pytest.skip("bubblewrap isolation unavailable here (needs bwrap, setpriv and root)")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    inputs.chmod(0o755)
    seen = json.loads(in_trainee_python(trainee_venv, tmp_path, f"""
        import json, sys
        from pathlib import Path
        import secureml
        from secureml.sandbox import Limits, run_sandboxed
        content = Path(secureml.__file__).parent / "_content"
        probe = "import os, sys; print(sorted(os.listdir(sys.argv[1])))"
        result = run_sandboxed([sys.executable, "-c", probe, str(content)],
                               inputs_dir=Path({str(inputs)!r}), limits=Limits(timeout_s=60))
        print(json.dumps({{"host": sorted(p.name for p in content.iterdir()),
                           "sandbox": result.stdout.strip(), "outcome": result.outcome}}))
    """).splitlines()[-1])
    assert seen["host"] == ["datasets", "labs", "scenarios"]
    assert seen["outcome"] == "exited" and seen["sandbox"] == "[]"


# --------------------------------------------------------------------------- where content is found


def test_secureml_home_wins_over_the_checkout(tmp_path, monkeypatch):
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios/poisoning-01.yaml").write_text((REPO / "scenarios/poisoning-01.yaml").read_text())
    monkeypatch.setenv("SECUREML_HOME", str(tmp_path))
    assert paths.content_root().origin == "SECUREML_HOME"
    assert [path.stem for path in paths.scenario_files()] == ["poisoning-01"]


def test_the_checkout_is_found_without_secureml_home(monkeypatch):
    monkeypatch.delenv("SECUREML_HOME", raising=False)
    root = paths.content_root()
    assert (root.origin, root.path) == ("checkout", REPO)


def test_no_scenario_anywhere_says_where_it_looked_and_how_to_fix_it(tmp_path):
    result = subprocess.run([sys.executable, "-m", "secureml.cli", "list"], cwd=tmp_path,
                            env={**os.environ, "SECUREML_HOME": str(tmp_path)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no scenario files found" in result.stderr
    assert str(tmp_path / "scenarios") in result.stderr and "SECUREML_HOME" in result.stderr


def _content_without_solutions(home: Path) -> Path:
    """What a wheel holds, laid out as a SECUREML_HOME: scenarios and labs, no solutions."""
    for relative in paths.trainee_content(REPO):
        (home / relative).parent.mkdir(parents=True, exist_ok=True)
        (home / relative).write_bytes((REPO / relative).read_bytes())
    return home


def test_verify_without_the_reference_solutions_says_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("SECUREML_HOME", str(_content_without_solutions(tmp_path / "home")))
    result = CliRunner().invoke(cli, ["verify", "poisoning-01"])
    assert result.exit_code == 9, result.output
    assert "scenario 'poisoning-01' needs the instructor material" in result.output
    assert "solution.py is missing" in result.output and "--instructor DIR" in result.output


def test_an_instructor_folder_without_scenarios_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(cli, ["verify", "--instructor", str(tmp_path)])
    assert result.exit_code == 9
    assert "the instructor folder has no scenarios/" in result.output


def test_show_names_no_solution_where_the_content_holds_none(tmp_path, monkeypatch):
    monkeypatch.setenv("SECUREML_HOME", str(_content_without_solutions(tmp_path / "home")))
    shown = json.loads(CliRunner().invoke(cli, ["show", "poisoning-01", "--json"]).output)
    assert shown["solution"] is None and Path(shown["starter"]).is_file()
