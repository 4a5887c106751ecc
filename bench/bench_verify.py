"""Print what CI's reproducibility check costs: `secureml verify --no-cache` on every
scenario at 1 and at 2 threads, as tests/test_ci_verify.py runs it (two concurrent
processes), or one after the other with --sequential. Budget: the whole suite, this
included, under about 15 minutes on a 2-core machine.

CPU seconds are printed next to wall seconds: on a shared machine the wall time grows with
the others' load, the CPU time of the 1-thread run much less.

Usage: python bench/bench_verify.py [--sequential] [ID...]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def start(threads: int, ids: list[str], cache: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "secureml.cli", "verify", *ids, "--no-cache", "--threads", str(threads), "--json"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "SECUREML_CACHE": str(cache)},  # as tests/test_ci_verify.py
    )


def finish(process: subprocess.Popen, started: float) -> tuple[int, float, float]:
    """Exit code, wall seconds and CPU seconds (user + system) of one child."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def main() -> None:
    sequential = "--sequential" in sys.argv
    ids = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as folder:
        began = time.perf_counter()
        results = {}
        if sequential:
            for threads in (1, 2):
                results[threads] = finish(start(threads, ids, Path(folder) / str(threads)), time.perf_counter())
        else:
            processes = {threads: start(threads, ids, Path(folder) / str(threads)) for threads in (1, 2)}
            results = {threads: finish(process, began) for threads, process in processes.items()}
        total = time.perf_counter() - began
    for threads, (code, wall, cpu) in results.items():
        print(f"verify --no-cache --threads {threads}: exit {code}, {wall:6.0f} s wall, {cpu:6.0f} s CPU")
    print(f"{'sequential' if sequential else 'concurrent'}, both thread counts: {total:.0f} s wall "
          f"(load average after: {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
