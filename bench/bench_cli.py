"""Print how long the CLI's fast paths take (target: `secureml list` under 0.5 s).

Usage: python bench/bench_cli.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = [["--help"], ["list"], ["show", "poisoning-01"], ["check", "scenarios/poisoning-01.yaml"]]


def timed(args: list[str], repeats: int = 5) -> float:
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "secureml.cli", *args], cwd=REPO, capture_output=True, check=True)
        durations.append(time.perf_counter() - start)
    return statistics.median(durations)


def main() -> None:
    for args in COMMANDS:
        print(f"secureml {' '.join(args):<40} {timed(args):6.3f} s (median of 5)")


if __name__ == "__main__":
    main()
