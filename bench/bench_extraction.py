"""Print `secureml run extraction-01` times: an empty cache, a warm cache, and a new
mitigation on a warm stage (what a trainee trying one idea after another waits for: the
copies on its answers are new each time).

Targets on a 2-core machine: cold under 60 s, warm under 15 s.
Usage: python bench/bench_extraction.py [--threads N]

Wall-clock figures depend on the machine's load (printed before and after); the CPU
seconds of the child do much less, and with --threads 1 hardly at all.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "labs" / "extraction-01"


def run(mitigation: Path, cache: str, out: str, threads: int | None) -> tuple[float, float, dict]:
    """Wall-clock seconds, CPU seconds of the child, and its results."""
    args = [
        sys.executable,
        "-m",
        "secureml.cli",
        "run",
        "extraction-01",
        "--mitigation",
        str(mitigation),
        "--json",
        "--out",
        out,
    ]
    if threads:
        args += ["--threads", str(threads)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env={**os.environ, "SECUREML_CACHE": cache})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        sys.exit(done.stderr)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: secureml's)")
    threads = parser.parse_args().threads
    print(f"load average before: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        for label, mitigation in (
            ("cold cache, reference solution:", LAB / "solution.py"),
            ("warm cache, reference solution:", LAB / "solution.py"),
            ("warm stage, the starter (new copies):", LAB / "mitigation.py"),
        ):
            wall, cpu, result = run(mitigation, cache, out, threads)
            print(
                f"  {label:<40} {wall:5.1f} s wall {cpu:5.1f} s CPU  score {result['score']:5.1f}  "
                f"threads {result['threads']}  stages {result['timings_s']}"
            )
    print(f"load average after:  {' '.join(f'{value:.1f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    main()
