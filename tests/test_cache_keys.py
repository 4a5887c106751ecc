"""A warm cache never stands in for a re-run: every key carries a hash of the code behind it.

The package version stays at 0.1.0 across code changes, so a key of config, data, seed and
versions alone let a run reuse results computed by older code (issue 14).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

from conftest import REPO
from secureml import versions

# Trains a small victim on real digits through the cached trainer and prints the cache's
# hits and misses. Runs against whichever copy of secureml is first on PYTHONPATH.
TRAIN_A_VICTIM = textwrap.dedent(
    """
    import json, sys
    from secureml import models
    from secureml.cache import Cache
    from secureml.datasets import load_split
    from secureml.scenario import DatasetConfig, VictimConfig

    split = load_split(DatasetConfig(name="digits", train_size=300, test_size=100), seed=3)
    cache = Cache(sys.argv[1])
    victim = VictimConfig(arch="mlp", epochs=1, batch_size=64, learning_rate=0.01)
    models.train_cached(cache, victim, split.x_train, split.y_train, num_classes=10, seed=3)
    print(json.dumps(cache.summary()["victims"]))
    """
)


def _copy_of_the_package(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(REPO / "src" / "secureml", source / "secureml", ignore=shutil.ignore_patterns("__pycache__"))
    return source / "secureml"


def _train(package, cache) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", TRAIN_A_VICTIM, str(cache)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(package.parent)},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_editing_the_trainer_in_a_copy_of_the_package_makes_the_next_run_train_again(tmp_path):
    package = _copy_of_the_package(tmp_path)
    cache = tmp_path / "cache"
    assert _train(package, cache) == {"hits": 0, "misses": 1}
    assert _train(package, cache) == {"hits": 1, "misses": 0}, "same code: the victim comes from the cache"

    # Code the victim does not depend on: the cache stays valid.
    (package / "gradebook" / "store.py").write_text((package / "gradebook" / "store.py").read_text() + "\n# an edit\n")
    assert _train(package, cache) == {"hits": 1, "misses": 0}, "an edit to the gradebook keeps the victim"

    # A change that alters what training computes, as an edit to the trainer would.
    trainer = package / "models.py"
    text = trainer.read_text()
    assert "optimizer.step()" in text
    trainer.write_text(text.replace("optimizer.step()", "optimizer.step()\n                optimizer.step()"))
    assert _train(package, cache) == {"hits": 0, "misses": 1}, "edited trainer: the stale victim is not reused"


def test_source_hash_follows_imports_inside_functions_but_not_type_checking_ones():
    evasion = {
        path.relative_to(versions.PACKAGE_DIR).as_posix() for path in versions.source_files("secureml.families.evasion")
    }
    # Every file of the named package, and what they import lazily (art_bridge, randomness).
    assert {"families/evasion/attacks.py", "families/evasion/pipeline.py", "art_bridge.py", "randomness.py"} <= evasion
    assert {"models.py", "cache.py", "datasets.py", "scoring.py", "__init__.py", "families/__init__.py"} <= evasion
    # Not what only the CLI and the grader use, nor the other families' code.
    elsewhere = {"cli.py", "grading/job.py", "gradebook/store.py", "sandbox.py", "families/poisoning/family.py"}
    assert not elsewhere & evasion


def test_every_cached_artefact_key_names_the_code_that_computes_it():
    # Each cache writer builds its key with software_key(...) of its own code: a new kind
    # of artefact that forgets it shows up here.
    writers = {
        "models.py": "secureml.models",
        "families/poisoning/family.py": "secureml.families.poisoning",
        "families/evasion/family.py": "secureml.families.evasion",
        "families/inversion/family.py": "secureml.families.inversion",
    }
    for path in sorted(versions.PACKAGE_DIR.rglob("*.py")):
        name = path.relative_to(versions.PACKAGE_DIR).as_posix()
        text = path.read_text()
        if ".save_tensors(" in text or ".save_json(" in text:
            if name in ("cache.py", "families/base.py"):  # the cache itself; base ships a victim under models' key
                continue
            assert f'software_key("{writers[name]}")' in text, name


def test_reading_the_cpu_imports_no_torch():
    code = (
        "import sys; from secureml import versions; c = versions.cpu(); "
        "print('torch' in sys.modules, bool(c['model']))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["False", "True"], result.stderr


def test_the_trainee_gets_the_deployed_victim_whatever_thread_count_the_child_runs_at(tmp_path):
    """The trainee's `tools.train` on the deployed victim's own training set returns that
    victim at once, recognised by what it was asked to do (recipe, data, seed), not by where
    it ran: the sandboxed child may run at another thread count than the parent."""
    import numpy as np
    import torch

    from secureml import models
    from secureml.families.base import Handover, Inputs, Tools
    from secureml.scenario import VictimConfig

    recipe = VictimConfig(arch="mlp", epochs=1, batch_size=32, learning_rate=0.01)
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 1, 8, 8), dtype=np.float32), (np.arange(64) % 10).astype(np.int64)
    before = torch.get_num_threads()
    try:
        keys = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            keys[threads] = models.recipe_key(recipe, x, y, num_classes=10, seed=3)
        assert keys[1] == keys[2]
        torch.set_num_threads(2)
        victim = models.build("mlp", (1, 8, 8), 10, 3)
        Handover(victim=victim, victim_config=recipe, num_classes=10, class_names=[str(c) for c in range(10)],
                 input_shape=(1, 8, 8), seed=3, training_set=(x, y)).write(tmp_path / "inputs")
        torch.set_num_threads(1)  # the child
        returned = Tools(Inputs.read(tmp_path / "inputs")).train(x, y)
        assert all(torch.equal(returned.state_dict()[name], value) for name, value in victim.state_dict().items())
    finally:
        torch.set_num_threads(before)
