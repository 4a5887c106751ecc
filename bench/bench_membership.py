"""Print `secureml run membership-01` times with an empty and a warm cache, and CPU time.

Targets on a 2-core machine: under 60 s cold, under 15 s warm (issue 13).
Usage: python bench/bench_membership.py [MITIGATION]
Each pair runs at 1 and at 2 torch threads (OMP_NUM_THREADS). Wall time on a shared machine
depends on the neighbours' load (printed with the figures), and so does CPU time at 2
threads: OpenMP threads spin at barriers while a neighbour holds the other core.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
from pathlib import Path

from bench_poisoning import REPO, run

SCENARIO = "membership-01"


def child_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    mitigation = sys.argv[1] if len(sys.argv) > 1 else str(REPO / "labs" / SCENARIO / "solution.py")
    print(f"{SCENARIO} with {Path(mitigation).name}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for threads in ("1", "2"):
        os.environ["OMP_NUM_THREADS"] = threads
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
            for label in ("cold cache", "warm cache"):
                cpu_before = child_cpu_s()
                wall, result = run(SCENARIO, mitigation, cache, out)
                print(
                    f"  {label}: {wall:5.1f} s wall, {child_cpu_s() - cpu_before:5.1f} s CPU, "
                    f"score {result['score']:5.1f}, threads {result['threads']}, stages {result['timings_s']}"
                )
        print(f"  load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
