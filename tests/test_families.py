"""The family contract: one declared trainee call, one Tools, one inputs folder, one base.

These tests build no scenario stage of a shipped lab: a handover of a tiny untrained victim
and a few digits is all the trainee's side needs, and the toy family trains in seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pytest
from click.testing import CliRunner

from secureml.families import FAMILIES, FamilySpec
from secureml.families.base import Evaluation, Handover, ModelFamily, RenamedToolWarning, Row, Tools, handover_of
from secureml.mitigation import TraineeCall, load_module
from secureml.scenario import ScenarioBase, StrictModel, VictimConfig

RECIPE = VictimConfig(arch="mlp", epochs=1, batch_size=32, learning_rate=0.002)


def _handover(folder: Path, **extras: Any) -> Path:
    """An inputs folder as a family writes it: 64 random 8x8 images and an untrained MLP."""
    from secureml import models

    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 8, 8), dtype=np.float32)
    y = (np.arange(64) % 10).astype(np.int64)
    Handover(
        victim=models.build("mlp", (1, 8, 8), 10, 3),
        victim_config=RECIPE,
        num_classes=10,
        class_names=[str(label) for label in range(10)],
        input_shape=(1, 8, 8),
        seed=3,
        training_set=(x, y),
        extras=extras,
    ).write(folder)
    return folder


def _inputs(folder: Path):
    from secureml.families.base import Inputs

    return Inputs.read(folder)


def _trainee_file(folder: Path, name: str, body: str) -> types.ModuleType:
    path = folder / f"{name}.py"
    path.write_text(body)
    return load_module(path, "train")


# --------------------------------------------------------------------------- the declared call


def test_every_family_declares_its_trainee_call_once_on_its_schema_and_the_family_reads_it():
    for name, spec in FAMILIES.items():
        family = spec.load()
        assert family.schema is spec.schema, name
        assert family.function_name == spec.schema.trainee_call.name, name
        # No second declaration on the family object, and no old attributes left behind.
        for stale in ("signature", "mitigation_signature", "trainee_function"):
            assert not hasattr(family, stale) and not hasattr(spec.schema, stale), (name, stale)


def test_show_prints_the_declared_signature_and_the_tools_every_lab_shares():
    from secureml.cli import cli

    result = CliRunner().invoke(cli, ["show", "inversion-02", "--json"])
    assert result.exit_code == 0, result.output
    interface = json.loads(result.output)["interface"]
    assert interface.startswith("def protect(model, tools) -> api")
    assert "tools.build()" in interface and "tools.victim()" in interface


def test_the_grader_passes_the_arguments_the_declaration_names(tmp_path):
    from secureml.families.inversion.family import FAMILY

    folder = _handover(tmp_path / "inputs")
    seen = {}

    def train(x, y, tools):
        seen.update(x=x.shape, y=y.shape, tools=type(tools).__name__)
        return tools.build()

    module = types.ModuleType("trainee")
    module.train = train
    raw = FAMILY.run_mitigation(module, folder)
    assert seen == {"x": (64, 1, 8, 8), "y": (64,), "tools": "InversionTools"}
    assert set(raw.arrays) == set(FAMILY.tools(_inputs(folder)).build().state_dict())


def test_unseeded_draws_in_the_trainee_code_depend_on_the_scenario_seed_not_on_the_process(tmp_path):
    """In-process runs (`run`, `verify`) follow earlier work in the same process: a layer built
    from torch's global generator must come out the same whatever ran before, as it does in
    the grader's fresh child. The caller's generators are left where they were."""
    import random

    import torch

    from secureml.families.inversion.family import FAMILY

    folder = _handover(tmp_path / "inputs")

    def train(x, y, tools):
        model = tools.build()
        with torch.no_grad():
            model[-1].weight.add_(torch.randn_like(model[-1].weight) + float(np.random.rand()) + random.random())
        return model

    module = types.ModuleType("trainee")
    module.train = train
    drawn = []
    for leftover in (0, 1):
        torch.manual_seed(leftover)
        np.random.seed(leftover)
        random.seed(leftover)
        raw = FAMILY.run_mitigation(module, folder)
        drawn.append({name: np.array(value) for name, value in raw.arrays.items()})
        after = (torch.rand(1).item(), np.random.rand(), random.random())
        torch.manual_seed(leftover)
        np.random.seed(leftover)
        random.seed(leftover)
        assert after == (torch.rand(1).item(), np.random.rand(), random.random())
    assert drawn[0].keys() == drawn[1].keys()
    assert all(np.array_equal(drawn[0][name], drawn[1][name]) for name in drawn[0])


def test_trainee_code_that_imports_torch_itself_draws_from_the_scenario_seed():
    """global_seeds does not import torch (a poisoning filter's forks would carry its memory):
    a fresh interpreter's torch, imported inside the call, is seeded as it loads."""
    code = ("import sys\n"
            "from secureml.randomness import global_seeds\n"
            "assert 'torch' not in sys.modules\n"
            "finders = list(sys.meta_path)\n"
            "with global_seeds(int(sys.argv[1])):\n"
            "    import torch\n"
            "    drawn = torch.rand(3).tolist()\n"
            "assert sys.meta_path == finders\n"
            "print(drawn)\n")
    drawn = [subprocess.run([sys.executable, "-c", code, seed], capture_output=True, text=True,
                            check=True).stdout for seed in ("5", "5", "6")]
    assert drawn[0] == drawn[1] != drawn[2]


# --------------------------------------------------------------------------- one Tools


def test_the_same_tool_names_mean_the_same_in_every_family(tmp_path):
    from secureml.families.evasion.tools import HardeningTools
    from secureml.families.inversion.family import InversionTools, ProtectTools
    from secureml.families.poisoning.family import PoisoningTools

    inputs = _inputs(_handover(tmp_path / "inputs", norm="inf", epsilon=0.1, budget_s=60.0))
    x, y = inputs.training_set()
    victim_weights = inputs.victim().state_dict()
    for kind in (PoisoningTools, HardeningTools, InversionTools, ProtectTools):
        tools = kind(inputs)
        assert isinstance(tools, Tools)
        assert (tools.num_classes, tools.seed, tools.input_shape, tools.epochs) == (10, 3, (1, 8, 8), 1)
        fresh = tools.build()
        assert type(fresh).__name__ == "Sequential"
        # On the training set handed over, train is the deployed victim itself, at once.
        trained = tools.train(x, y)
        assert all(np.array_equal(trained.state_dict()[k], v) for k, v in victim_weights.items()), kind
        assert tools.predict(trained, x).shape == (64,)
        assert 0.0 <= tools.accuracy(trained, x, y) <= 1.0
        assert type(tools.optimizer(fresh)).__name__ == "Adam"


OLD_NAMES = """
import torch
from torch import nn


def train(x, y, tools):
    model = tools.new_model()
    assert tools.optimizer == "adam"
    optimizer = torch.optim.Adam(model.parameters(), lr=tools.learning_rate)
    for _ in range(3):
        for start in range(0, len(x), tools.batch_size):
            xb, yb = torch.from_numpy(x[start:start + 32]), torch.from_numpy(y[start:start + 32])
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
    return model.eval()
"""


def test_a_trainee_file_with_the_old_tool_names_returns_the_same_model_and_is_told_once(tmp_path):
    """inversion-01's old `tools.new_model()` and `tools.optimizer == "adam"`: the same weights
    as the new names give (so the same score: the grader is deterministic), one warning each."""
    from secureml.families import base
    from secureml.families.inversion.family import FAMILY

    folder = _handover(tmp_path / "inputs")
    old = _trainee_file(tmp_path, "old", OLD_NAMES)
    new_names = OLD_NAMES.replace("tools.new_model()", "tools.build()")
    new_names = new_names.replace("tools.optimizer ==", "tools.optimizer_name ==")
    new = _trainee_file(tmp_path, "new", new_names)
    base._ALREADY_SAID.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old_weights = FAMILY.run_mitigation(old, folder).arrays
        FAMILY.run_mitigation(old, folder)  # a second call in the same process says nothing more
    said = [str(warning.message) for warning in caught if issubclass(warning.category, RenamedToolWarning)]
    assert len(said) == 2, said
    assert any("tools.new_model is now tools.build" in text for text in said)
    assert any("tools.optimizer_name" in text for text in said)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RenamedToolWarning)
        new_weights = FAMILY.run_mitigation(new, folder).arrays
    assert set(old_weights) == set(new_weights)
    assert all(np.array_equal(old_weights[name], new_weights[name]) for name in old_weights)


def test_an_unknown_tool_names_what_to_read(tmp_path):
    tools = Tools(_inputs(_handover(tmp_path / "inputs")))
    with pytest.raises(AttributeError, match=r"no 'fetaures'.*secureml show"):
        tools.fetaures  # noqa: B018


# --------------------------------------------------------------------------- a new family


class ToyScoring(StrictModel):
    target_accuracy: float = 0.5


class ToyScenario(ScenarioBase):
    family: Literal["toy"]
    scoring: ToyScoring = ToyScoring()
    trainee_call: ClassVar[TraineeCall] = TraineeCall("fit", ("x", "y", "tools"), "a model (tools.build())")

    def scoring_formula(self) -> str:
        return "score = 100 * min(1, accuracy / target_accuracy)"


# ---- the whole of a minimal family: prepare, handover, evaluate (ModelFamily does the rest)
class ToyFamily(ModelFamily[Any]):
    name = "toy"
    schema = ToyScenario

    def prepare(self, scenario, split, ctx):
        from secureml import models

        victim = models.train_cached(ctx.cache, scenario.victim, split.x_train, split.y_train,
                                     num_classes=split.num_classes, seed=scenario.seed)
        return types.SimpleNamespace(scenario=scenario, split=split, victim=victim)

    def handover(self, stage):
        return handover_of(stage, training_set=(stage.split.x_train, stage.split.y_train))

    def evaluate(self, stage, model, ctx):
        from secureml import models
        from secureml.scoring import Score

        accuracy = models.accuracy(model, stage.split.x_test, stage.split.y_test)
        score = Score(100 * min(1.0, accuracy / stage.scenario.scoring.target_accuracy), {}, "toy")
        return Evaluation({"mitigated.accuracy": accuracy}, score, [Row("yours", {"accuracy": accuracy})], [])
# ---- end of the minimal family: 26 lines, its schema included


FAMILY = ToyFamily()


def test_a_new_family_is_its_own_module_and_one_registry_line(tmp_path, monkeypatch):
    from secureml import runner
    from secureml.cache import Cache
    from secureml.families.base import RunContext

    monkeypatch.setitem(FAMILIES, "toy", FamilySpec("toy", ToyScenario, f"{__name__}:FAMILY"))
    scenario = ToyScenario.model_validate({
        "id": "toy-01", "title": "A toy", "family": "toy", "difficulty": "beginner",
        "atlas": {"technique": "AML.T0043", "technique_name": "t", "mitigation": "AML.M0003", "mitigation_name": "m"},
        "owasp": "ML01",
        "summary": "s", "threat_model": "t", "task": "t", "interface": "i", "seed": 1,
        "dataset": {"name": "digits", "train_size": 600, "test_size": 200},
        "victim": RECIPE.model_dump(), "mitigation": {"starter": "s.py", "solution": "s.py"},
    })

    def fit(x, y, tools):
        return tools.train(x, y)  # the victim itself

    result = runner.run(scenario, mitigation=fit, ctx=RunContext(cache=Cache(tmp_path / "cache")))
    assert result.evaluation.metrics["mitigated.accuracy"] > 0.3
    assert result.to_json()["details"] == {}
    with pytest.raises(Exception, match=r"named 'wrong'.*calls 'fit'"):
        def wrong(x, y, tools):
            return None

        runner.run(scenario, mitigation=wrong, ctx=RunContext(cache=Cache(tmp_path / "cache")))


# --------------------------------------------------------------------------- the device


def test_device_is_a_choice_on_the_command_line():
    from secureml.cli import cli

    result = CliRunner().invoke(cli, ["run", "poisoning-01", "--device", "gpu"])
    assert result.exit_code == 2
    assert "'gpu' is not one of 'cpu', 'cuda', 'auto'" in result.output


def test_cuda_without_a_gpu_is_one_clear_error_before_any_work():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    from conftest import secureml

    result = secureml("run", "poisoning-01", "--device", "cuda")
    assert result.returncode == 1
    assert "--device cuda" in result.stderr and "--device cpu" in result.stderr
    assert "Traceback" not in result.stderr
