"""Look for the test set, the gradebook, the cache and other trainees' files."""

import os
from pathlib import Path

import numpy as np

PARAMS = {}


def sanitize(x, y, tools):
    inputs = Path(__file__).resolve().parent.parent / "task"
    if not (inputs / "train.safetensors").is_file():
        raise RuntimeError("cannot see my own inputs, the test proves nothing")
    leaks = [path for path in PARAMS["secret_paths"] if os.path.exists(path)]
    unexpected = sorted(set(os.listdir(inputs)) - set(PARAMS["allowed_inputs"]))
    env = sorted(name for name in os.environ if name.startswith("SECUREML") and name != "SECUREML_RESULT_FD"
                 and name != "SECUREML_THREADS")
    if leaks or unexpected or env:
        raise RuntimeError(f"LEAK: paths {leaks}, extra inputs {unexpected}, environment {env}")
    return np.arange(len(y))
