"""Time `secureml grade`: 30 reference solutions and 30 starters of poisoning-01, --jobs 2.

Prints the total time and the seconds per submission, and, as separate figures, the
sandbox's own overhead: a bare `python -c pass` in the sandbox, and a submission that
returns at once (worker start, imports, reading the inputs, parent-side checks).
The shared stage is built (or loaded) first and timed on its own.

Usage: python bench/bench_grade.py [--copies 30] [--jobs 2]
Uses $SECUREML_CACHE when set (a warm cache skips the victim's training), else a
temporary cache that starts cold.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "labs" / "poisoning-01"
RETURNS_AT_ONCE = "import numpy as np\n\n\ndef sanitize(x, y, tools):\n    return np.arange(len(y))\n"


def grade(submissions: Path, db: Path, cache: str, jobs: int) -> tuple[float, dict]:
    command = [sys.executable, "-m", "secureml.cli", "grade", "poisoning-01", str(submissions),
               "--db", str(db), "--jobs", str(jobs), "--json", "--regrade"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "SECUREML_CACHE": cache})
    elapsed = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"secureml grade failed ({done.returncode}):\n{done.stderr}")
    return elapsed, json.loads(done.stdout)


def bare_sandbox_s(repeats: int = 5) -> float:
    from secureml.sandbox import Limits, run_sandboxed

    walls = []
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        for _ in range(repeats):
            result = run_sandboxed([sys.executable, "-c", "pass"], inputs_dir=Path(folder),
                                   limits=Limits(timeout_s=60))
            assert result.outcome == "exited", result
            walls.append(result.wall_s)
    return statistics.median(walls)


def mean_timing(rows: list[dict], prefix: str, stage: str) -> float:
    values = [row["timings_s"].get(stage, 0.0) for row in rows if row["trainee"].startswith(prefix)]
    return statistics.fmean(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()

    from secureml.sandbox import bubblewrap_available

    if not bubblewrap_available():
        sys.exit("bench_grade needs bubblewrap isolation (root, bwrap, setpriv).")
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        cache = os.environ.get("SECUREML_CACHE") or str(work_dir / "cache")

        quick = work_dir / "quick"
        quick.mkdir()
        for index in range(10):
            (quick / f"quick-{index:02d}.py").write_text(RETURNS_AT_ONCE)
        stage_s, _ = grade(quick, work_dir / "warmup.db", cache, 1)  # builds or loads the stage
        quick_s, quick_report = grade(quick, work_dir / "quick.db", cache, 1)

        submissions = work_dir / "submissions"
        submissions.mkdir()
        for index in range(args.copies):
            shutil.copy(LAB / "solution.py", submissions / f"solution-{index:02d}.py")
            shutil.copy(LAB / "mitigation.py", submissions / f"starter-{index:02d}.py")
        total_s, report = grade(submissions, work_dir / "gradebook.db", cache, args.jobs)

    rows = report["graded"]
    count = len(rows)
    scores = {prefix: sorted({row["score"] for row in rows if row["trainee"].startswith(prefix)})
              for prefix in ("solution", "starter")}
    statuses = sorted({row["status"] for row in rows})
    print(f"secureml grade poisoning-01: {args.copies} solutions + {args.copies} starters, --jobs {args.jobs}")
    print(f"  total:               {total_s:7.1f} s wall for {count} submissions "
          f"({total_s / count:.2f} s per submission; statuses {statuses}; scores {scores})")
    for prefix in ("solution", "starter"):
        print(f"  {prefix:9s} per run:   sandbox {mean_timing(rows, prefix, 'sandbox'):5.2f} s, "
              f"evaluate {mean_timing(rows, prefix, 'evaluate'):5.2f} s, "
              f"total {mean_timing(rows, prefix, 'total'):5.2f} s (each, inside a worker)")
    quick_rows = quick_report["graded"]
    print("  sandbox overhead:")
    print(f"    bare `python -c pass` in the sandbox: {bare_sandbox_s():.2f} s")
    print(f"    a submission that returns at once:    sandbox {mean_timing(quick_rows, 'quick', 'sandbox'):.2f} s, "
          f"grader total {mean_timing(quick_rows, 'quick', 'total'):.2f} s "
          f"(10 graded serially in {quick_s:.1f} s wall, including start-up)")
    print(f"  first run (stage built or loaded, then 10 quick submissions): {stage_s:.1f} s")


if __name__ == "__main__":
    main()
