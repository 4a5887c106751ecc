"""Print `secureml run poisoning-01` times with an empty and a warm cache.

Targets on a 2-core machine: under 30 s cold, under 8 s warm.
Usage: python bench/bench_poisoning.py [SCENARIO] [MITIGATION]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(scenario: str, mitigation: str | None, cache: str, out: str) -> tuple[float, dict]:
    args = [sys.executable, "-m", "secureml.cli", "run", scenario, "--json", "--out", out]
    if mitigation:
        args += ["--mitigation", mitigation]
    start = time.perf_counter()
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env={**os.environ, "SECUREML_CACHE": cache})
    elapsed = time.perf_counter() - start
    if done.returncode:
        sys.exit(done.stderr)
    return elapsed, json.loads(done.stdout)


def main() -> None:
    scenario = sys.argv[1] if len(sys.argv) > 1 else "poisoning-01"
    mitigation = sys.argv[2] if len(sys.argv) > 2 else str(REPO / "labs" / scenario / "solution.py")
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        cold, first = run(scenario, mitigation, cache, out)
        warm, second = run(scenario, mitigation, cache, out)
        bare, _ = run(scenario, None, cache, out)
    print(f"{scenario} with {Path(mitigation).name}: score {first['score']:.1f}")
    print(f"  cold cache: {cold:6.1f} s wall  (stages: {first['timings_s']})")
    print(f"  warm cache: {warm:6.1f} s wall  (stages: {second['timings_s']})")
    print(f"  warm, no mitigation: {bare:6.1f} s wall")
    print(f"  threads: {first['threads']}")


if __name__ == "__main__":
    main()
