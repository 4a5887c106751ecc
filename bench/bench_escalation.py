"""Print what the evasion labs' escalation costs on a flagged run (issue 11).

Usage: python bench/bench_escalation.py [--threads N] [SCENARIO ...]   (default: evasion-01, evasion-03)

evasion-02 takes a menu of preprocessing steps, not weights: the staircase does not apply.

Per lab, three warm runs (the scenario's stage is built first and cached): the reference
solution (never flagged, never escalated), the staircase gaming submission (weights that
make the CNN piecewise constant: masking checks fire, the escalation's attacks decide) and
the same staircase with one step at 0.5 (MNIST binarised inside the weights: flagged, and
the escalation refutes the flag). For each: wall and CPU seconds of `secureml run`, and the
escalation's own wall seconds (`details.escalation.seconds` of results.json). Wall clock
depends on the machine's load; the CPU seconds of the child do not.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAIRCASE = REPO / "tests" / "gaming" / "evasion_staircase.py"


def timed_run(scenario_id: str, mitigation: Path, cache: Path, out: Path, threads: int) -> tuple[float, float, dict]:
    argv = [sys.executable, "-m", "secureml.cli", "run", scenario_id, "--mitigation", str(mitigation),
            "--threads", str(threads), "--json", "--out", str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=True,
                          env={**os.environ, "SECUREML_CACHE": str(cache)})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("scenarios", nargs="*", default=["evasion-01", "evasion-03"])
    arguments = parser.parse_args()
    from secureml import loader

    print(f"{'lab':<12}{'submission':<12}{'wall s':>8}{'CPU s':>8}{'escalation s':>14}{'score':>7}  flags")
    with tempfile.TemporaryDirectory(prefix="secureml-bench-") as folder:
        binarising = Path(folder) / "binarise_in_weights.py"
        binarising.write_text(re.sub(r"^THRESHOLDS = .*$", "THRESHOLDS = [0.5]", STAIRCASE.read_text(), flags=re.M))
        for scenario_id in arguments.scenarios:
            cache, out = Path(folder) / "cache", Path(folder) / "out"
            reference = loader.load(scenario_id).solution_path
            timed_run(scenario_id, reference, cache, out, arguments.threads)  # builds the stage
            for name, mitigation in (("reference", reference), ("staircase", STAIRCASE), ("binarising", binarising)):
                wall, cpu, payload = timed_run(scenario_id, mitigation, cache, out, arguments.threads)
                escalation = payload.get("details", {}).get("escalation")
                seconds = f"{escalation['seconds']:.1f}" if escalation else "-"
                print(f"{scenario_id:<12}{name:<12}{wall:>8.1f}{cpu:>8.1f}{seconds:>14}{payload['score']:>7.1f}  "
                      f"{len(payload.get('flags', []))}", flush=True)


if __name__ == "__main__":
    main()
