"""The notebook API: `secureml.run_lab` takes the function a trainee just defined, goes the
same way as `secureml run`, and shows its result in a real Jupyter kernel."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import secureml
from conftest import REPO, run_json
from secureml.api import LabResult
from secureml.errors import ConfigError, MitigationError


def test_import_secureml_loads_no_torch():
    probe = "import sys, secureml; secureml.run_lab; print('torch' in sys.modules, 'numpy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_list_labs_is_what_list_json_prints():
    from click.testing import CliRunner

    from secureml.cli import cli

    assert secureml.list_labs() == json.loads(CliRunner().invoke(cli, ["list", "--json"]).output)


# --------------------------------------------------------------------------- bad input, before any training


def test_a_function_with_the_wrong_name_is_one_clear_error(tmp_path):
    def sanitise(x, y, tools):
        return list(range(len(y)))

    with pytest.raises(MitigationError) as caught:
        secureml.run_lab("poisoning-01", sanitise, out_dir=tmp_path)
    message = caught.value.message()
    assert "the function is named 'sanitise', and this scenario calls 'sanitize'" in message
    assert "rename it to sanitize" in message


@pytest.mark.parametrize("mitigation", [42, ["sanitize"]], ids=["a number", "a list"])
def test_a_mitigation_that_is_not_callable_is_one_clear_error(tmp_path, mitigation):
    with pytest.raises(MitigationError, match="neither a function nor a file"):
        secureml.run_lab("poisoning-01", mitigation, out_dir=tmp_path)


def test_a_missing_mitigation_file_is_one_clear_error(tmp_path):
    with pytest.raises(MitigationError, match="mitigation file not found"):
        secureml.run_lab("poisoning-01", tmp_path / "nope.py", out_dir=tmp_path)


def test_an_unknown_scenario_is_one_clear_error():
    with pytest.raises(ConfigError, match="no scenario with id 'poisoning-1'"):
        secureml.run_lab("poisoning-1", None)


def test_the_html_view_escapes_what_a_trainee_wrote(tmp_path):
    payload = {
        "scenario": "poisoning-01", "title": "<b>t</b>", "mitigation": "function sanitize (<script>)",
        "score": 12.5, "score_parts": {"der": 0.5}, "score_method": "der-calibrated", "score_capped_by": None,
        "metrics": {"score": 12.5},
        "rows": [{"condition": "your mitigation", "note": "<img src=x onerror=alert(1)>", "score": 12.5}],
        "feedback": ["raised ValueError: <script>alert(1)</script>"], "flags": ["<iframe>"],
        "pictures": {}, "seed": 1,
    }
    html = LabResult(payload, tmp_path / "results.json")._repr_html_()
    assert "<script>" not in html and "<iframe>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "needs review: &lt;iframe&gt;" in html
    assert "<td>12.5</td>" in html


# --------------------------------------------------------------------------- real runs


def _solution_function():
    spec = importlib.util.spec_from_file_location("poisoning_solution", REPO / "labs/poisoning-01/solution.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.sanitize


@pytest.mark.slow
def test_run_lab_with_a_function_scores_exactly_as_secureml_run_with_the_file(tmp_path):
    result = secureml.run_lab("poisoning-01", _solution_function(), out_dir=tmp_path / "api")
    assert result.score >= 80
    assert result.to_json() == json.loads((tmp_path / "api/results.json").read_text())
    assert set(result.pictures) == {"triggers"} and result.pictures["triggers"].is_file()
    assert result.metrics["mitigated.poison_removed"] > 0.9 and result.feedback
    cli = run_json("poisoning-01", "--mitigation", str(REPO / "labs/poisoning-01/solution.py"), out=tmp_path / "cli")
    same = ("score", "score_parts", "metrics", "rows", "feedback", "flags", "seed", "config_sha256", "data_sha256")
    assert {key: result.to_json()[key] for key in same} == {key: cli[key] for key in same}


def _kernel(tmp_path: Path, monkeypatch) -> str:
    """A kernelspec that runs this venv's interpreter, whatever else is installed."""
    folder = tmp_path / "jupyter" / "kernels" / "secureml-test"
    folder.mkdir(parents=True)
    (folder / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "secureml test", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "secureml-test"


def _outputs(cell) -> str:
    texts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            texts.append(output["text"])
        elif output["output_type"] in ("execute_result", "display_data"):
            texts.append(output["data"].get("text/html", "") + output["data"].get("text/plain", ""))
        elif output["output_type"] == "error":
            texts.append("\n".join(output["traceback"]))
    return "\n".join(texts)


@pytest.mark.slow
def test_the_example_notebook_runs_in_a_real_kernel_and_shows_its_score(tmp_path, monkeypatch):
    import nbformat
    from click.testing import CliRunner
    from nbclient import NotebookClient

    from secureml.cli import cli

    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(cli, ["lab", "poisoning-01", "lab"]).exit_code == 0
    notebook = nbformat.read(tmp_path / "lab/notebook.ipynb", as_version=4)
    shipped = len(notebook.cells)
    notebook.cells += [
        nbformat.v4.new_code_cell(
            "def sanitise(x, y, tools):\n    return x\n\nsecureml.run_lab('poisoning-01', sanitise)"
        ),
        # run_lab draws NotebookProgress bars where in_notebook(); whether the run above drew
        # any depends on what the session's cache already held, so check both parts here.
        nbformat.v4.new_code_cell(
            "from secureml.progress import NotebookProgress, in_notebook\n"
            "print('in notebook:', in_notebook())\n"
            "with NotebookProgress() as bars, bars.task('a long step', total=3) as task:\n"
            "    for _ in range(3):\n"
            "        task.advance()"
        ),
        nbformat.v4.new_code_cell("import sys; print(sys.executable)"),
    ]
    NotebookClient(notebook, timeout=1800, kernel_name=_kernel(tmp_path, monkeypatch), allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path / "lab")}}).execute()

    shown = [_outputs(cell) for cell in notebook.cells if cell.cell_type == "code"]
    errors = [o for cell in notebook.cells[:shipped] for o in cell.get("outputs", []) if o["output_type"] == "error"]
    assert errors == []
    everything = "\n".join(shown)
    score = float(re.search(r"score (\d+\.\d) / 100", everything).group(1))
    assert score <= 10  # the shipped notebook defines the starter's sanitize
    assert "<table>" in everything and "your mitigation" in everything
    assert "data:image/png;base64," in everything  # the trigger picture, inline
    # The notebook shows the score to one decimal: CI once saw the starter's 0.9552 as 1.0.
    assert round(json.loads((tmp_path / "lab/out/poisoning-01/results.json").read_text())["score"], 1) == score
    wrong_name, progress, executable = shown[-3:]
    assert "error: " in wrong_name and "the function is named 'sanitise'" in wrong_name
    assert "Traceback" not in wrong_name
    assert "in notebook: True" in progress and '<progress value="3" max="3"></progress>' in progress
    assert "✓ a long step" in progress
    assert Path(executable.strip()) == Path(sys.executable)
