"""Print each lab's run time with its reference solution: cold (an empty cache) and warm.

Usage: python bench/bench_runs.py [--threads N] [SCENARIO ...]   (default: every shipped lab)

A cold run trains everything the scenario needs (victim, attack stage, baselines) and then
the trainee's part; a warm run finds the scenario's artefacts in the cache and pays only
for the trainee's part and the evaluation. Wall-clock figures depend on the machine's load;
the CPU seconds of the child (user + system, all threads) printed beside them do not.
Targets (issue 13): a new lab under 60 s cold and 15 s warm on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed_run(scenario_id: str, cache: Path, out: Path, threads: int) -> tuple[float, float]:
    """Wall-clock and CPU seconds of `secureml run ID --mitigation <the lab's solution>`."""
    from secureml import loader

    solution = loader.load(scenario_id).solution_path
    argv = [sys.executable, "-m", "secureml.cli", "run", scenario_id, "--mitigation", str(solution),
            "--threads", str(threads), "--json", "--out", str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, cwd=REPO, capture_output=True, check=True, env={**os.environ, "SECUREML_CACHE": str(cache)})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("scenarios", nargs="*")
    arguments = parser.parse_args()
    from secureml import loader

    scenarios = arguments.scenarios or [loaded.id for loaded in loader.load_all()]
    print(f"{'lab':<16}{'cold wall s':>12}{'cold CPU s':>12}{'warm wall s':>12}{'warm CPU s':>12}")
    for scenario_id in scenarios:
        with tempfile.TemporaryDirectory(prefix="secureml-bench-") as folder:
            cache, out = Path(folder) / "cache", Path(folder) / "out"
            cold = timed_run(scenario_id, cache, out, arguments.threads)
            warm = timed_run(scenario_id, cache, out, arguments.threads)
        print(f"{scenario_id:<16}{cold[0]:>12.1f}{cold[1]:>12.1f}{warm[0]:>12.1f}{warm[1]:>12.1f}", flush=True)


if __name__ == "__main__":
    main()
