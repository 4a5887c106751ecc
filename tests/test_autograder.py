"""An instructor grades on Gradescope: `secureml autograder` builds the bundle, Gradescope
unpacks it in /autograder/source and runs run_autograder for each submission, which grades
with `secureml grade` in its sandbox and writes a results.json Gradescope accepts, also when
the trainee's code (or the grader) fails."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from conftest import REPO, VARIANT_SEED
from secureml import autograder
from secureml.cli import cli
from secureml.gradebook import Gradebook

# Gradescope's results.json, written from its autograder specification
# (gradescope-autograders.readthedocs.io/en/latest/specs/, "Output Format"). Strict: a
# field the specification does not define is a typo that Gradescope would silently ignore.
_VISIBILITY = {"enum": ["hidden", "after_due_date", "after_published", "visible"]}
_FORMAT = {"enum": ["text", "html", "simple_format", "md", "ansi"]}
RESULTS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["score", "tests"],
    "properties": {
        "score": {"type": "number"},
        "execution_time": {"type": "number", "minimum": 0},
        "output": {"type": "string"},
        "output_format": _FORMAT,
        "test_output_format": _FORMAT,
        "test_name_format": _FORMAT,
        "visibility": _VISIBILITY,
        "stdout_visibility": _VISIBILITY,
        "extra_data": {"type": "object"},
        "tests": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "score": {"type": "number"},
                    "max_score": {"type": "number"},
                    "status": {"enum": ["passed", "failed"]},
                    "name": {"type": "string"},
                    "name_format": _FORMAT,
                    "number": {"type": "string"},
                    "output": {"type": "string"},
                    "output_format": _FORMAT,
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "visibility": _VISIBILITY,
                    "extra_data": {"type": "object"},
                },
            },
        },
        "leaderboard": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "value"],
                "properties": {
                    "name": {"type": "string"},
                    "value": {"type": ["number", "string"]},
                    "order": {"enum": ["asc", "desc"]},
                },
            },
        },
    },
}


def check_results(path: Path) -> dict:
    results = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.validate(results, RESULTS_SCHEMA)
    return results


# --------------------------------------------------------------------------- the bundle


def test_the_bundle_holds_setup_run_autograder_the_wheel_the_scenario_and_the_hidden_variant(built, tmp_path):
    out = tmp_path / "autograder.zip"
    hidden = REPO / "scenarios" / "hidden" / "poisoning-01.yaml"
    result = CliRunner().invoke(cli, ["autograder", "poisoning-01", "--out", str(out), "--wheel",
                                      str(built["wheel"]), "--hidden", str(hidden), "--json"])
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(out) as bundle:
        names = bundle.namelist()
        modes = {info.filename: info.external_attr >> 16 for info in bundle.infolist()}
        config = json.loads(bundle.read(autograder.SETTINGS_NAME))
        assert bundle.read(autograder.HIDDEN_NAME) == hidden.read_bytes()
    assert set(names) == {"setup.sh", "run_autograder", built["wheel"].name, "poisoning-01.yaml",
                          autograder.HIDDEN_NAME, autograder.SETTINGS_NAME}
    assert modes["setup.sh"] & 0o111 and modes["run_autograder"] & 0o111  # Gradescope runs them
    assert config["hidden"] == autograder.HIDDEN_NAME and config["visibility"] == "visible"
    assert json.loads(result.output)["size_bytes"] == out.stat().st_size


@pytest.mark.parametrize("script", ["setup.sh", "run_autograder"])
def test_the_bundles_scripts_pass_bash_n_and_shellcheck(script, tmp_path):
    path = tmp_path / script
    path.write_text(autograder.setup_script("secureml-0.1.0-py3-none-any.whl") if script == "setup.sh"
                    else autograder.run_script())
    subprocess.run(["bash", "-n", str(path)], check=True)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (Debian package shellcheck; .ci/run installs it)")
    result = subprocess.run(["shellcheck", "--shell=bash", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# --------------------------------------------------------------------------- the submission


def test_the_trainees_file_is_mitigation_py_or_the_only_python_file(tmp_path):
    upload = tmp_path / "submission"
    (upload / "nested").mkdir(parents=True)
    (upload / "nested" / "defence.py").write_text("x = 1\n")
    (upload / ".hidden.py").write_text("x = 2\n")
    staged = tmp_path / "staged"
    staged.mkdir()
    assert autograder.stage_submission(upload, staged) == "nested/defence.py"
    assert (staged / f"{autograder.TRAINEE}.py").read_text() == "x = 1\n"

    (upload / "nested" / "mitigation.py").write_text("x = 3\n")
    shutil.rmtree(staged)
    staged.mkdir()
    assert autograder.stage_submission(upload, staged) == "nested/"
    assert (staged / autograder.TRAINEE / "mitigation.py").read_text() == "x = 3\n"
    assert not (staged / autograder.TRAINEE / ".hidden.py").exists()


def test_a_broken_bundle_still_ends_in_a_valid_results_json_saying_it_will_be_graded_again(tmp_path):
    (tmp_path / "source").mkdir()
    (tmp_path / "submission").mkdir()
    results = autograder.run(tmp_path)  # no settings in source/: the grader cannot run
    written = check_results(tmp_path / "results" / "results.json")
    assert written == results and results["score"] == 0
    assert "graded again" in results["output"] or "grade it again" in results["output"]
    assert "secureml-autograder.json" in results["extra_data"]["detail"]


def test_the_fallback_of_run_autograder_is_a_valid_results_json(tmp_path):
    """run_autograder writes this when secureml cannot run at all (setup failed, say)."""
    (tmp_path / "results").mkdir()
    script = tmp_path / "run_autograder"
    script.write_text(autograder.run_script().replace(str(autograder.GRADESCOPE_ROOT), str(tmp_path)))
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # no secureml on PATH
    subprocess.run(["bash", str(script)], env=env, check=True, capture_output=True)
    results = check_results(tmp_path / "results" / "results.json")
    assert results["score"] == 0 and "grade" in results["output"]


# --------------------------------------------------------------------------- on Gradescope


@pytest.fixture(scope="module")
def installed(built) -> Path:
    """What setup.sh does, without Gradescope's image: the wheel installed in a fresh venv
    (its dependencies read from this venv through a .pth line), in a folder the sandbox's
    unused uid can read (pytest's own temporary folders are 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="secureml-autograder-venv-"))
    folder.chmod(0o755)
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "project-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "--quiet", "--no-deps", "--no-index", str(built["wheel"])],
                   check=True, capture_output=True)
    yield venv
    shutil.rmtree(folder, ignore_errors=True)


def run_on_gradescope(bundle: Path, submission: Path, venv: Path, tmp_path: Path) -> Path:
    """Lay out /autograder as Gradescope does and run run_autograder there; return results.json.

    bubblewrap binds the tree at /autograder in a new mount namespace and shares the rest
    of the machine (`--dev-bind / /`: the host's /proc and /dev, root's capabilities, no
    user namespace). That is what lets `grade`'s own sandbox start inside it as root: a new
    /proc can only be mounted where the whole host /proc is visible, and a user namespace
    would leave setpriv no unused uid to drop to."""
    root = tmp_path / "autograder"
    (root / "source").mkdir(parents=True)
    (root / "results").mkdir()
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(root / "source")
    for script in ("setup.sh", "run_autograder"):
        (root / "source" / script).chmod(0o755)
    shutil.copytree(submission, root / "submission")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "SECUREML_CACHE": os.environ["SECUREML_CACHE"],
           "HOME": str(tmp_path)}
    result = subprocess.run(
        ["bwrap", "--dev-bind", "/", "/", "--bind", str(root), "/autograder", "--chdir", "/autograder",
         "--die-with-parent", "--clearenv", *[arg for key, value in env.items() for arg in ("--setenv", key, value)],
         "/autograder/source/run_autograder"],
        capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root / "results" / "results.json"


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("bwrap") is None,
                    reason="binding a tree at /autograder needs root and bubblewrap")
def test_run_autograder_grades_reference_starter_and_a_syntax_error_like_secureml_grade(
        built, installed, tmp_path):
    bundle = tmp_path / "autograder.zip"
    result = CliRunner().invoke(cli, ["autograder", "poisoning-01", "--out", str(bundle),
                                      "--wheel", str(built["wheel"]), "--variant-seed", str(VARIANT_SEED)])
    assert result.exit_code == 0, result.output
    lab = REPO / "labs" / "poisoning-01"
    uploads = {"reference": lab / "solution.py", "starter": lab / "mitigation.py"}
    results = {}
    for name, source in uploads.items():
        (tmp_path / name).mkdir()
        shutil.copyfile(source, tmp_path / name / "mitigation.py")
    (tmp_path / "syntax").mkdir()
    (tmp_path / "syntax" / "my_defence.py").write_text("def mitigate(:\n")  # the only .py file
    for name in ("reference", "starter", "syntax"):
        results[name] = check_results(run_on_gradescope(bundle, tmp_path / name, installed, tmp_path / f"run-{name}"))
    print(json.dumps(results, indent=2))  # the closing note shows one

    # The same score as `secureml grade` gives the reference.
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    shutil.copyfile(lab / "solution.py", submissions / "reference.py")
    graded = subprocess.run([str(installed / "bin" / "secureml"), "grade", "poisoning-01", str(submissions),
                             "--db", str(tmp_path / "grade.db"), "--variant-seed", str(VARIANT_SEED), "--json"],
                            capture_output=True, text=True, timeout=1800)
    assert graded.returncode == 0, graded.stderr[-3000:]
    with Gradebook.open(tmp_path / "grade.db") as book:
        (row,) = book.latest("poisoning-01")
    assert results["reference"]["score"] == row.score > 50
    assert results["reference"]["tests"][0]["status"] == "passed"
    assert results["reference"]["leaderboard"][0] == {"name": "score", "value": row.score, "order": "desc"}

    assert results["starter"]["score"] < results["reference"]["score"]
    syntax = results["syntax"]
    assert syntax["score"] == 0 and syntax["tests"][0]["status"] == "failed"
    assert "syntax" in syntax["tests"][0]["output"].lower()
    for each in results.values():
        assert isinstance(each["execution_time"], int) and each["visibility"] == "visible"
