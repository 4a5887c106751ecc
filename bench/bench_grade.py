"""Time `secureml grade`: the sandbox's per-submission overhead with the new limits next to
the old ones, then (optionally) a whole workshop.

Overhead, three ways of limiting a run, interleaved so that machine load hits them alike:
  old         memory and pids cgroups only, no CPU share or quota, no supervisor ticks
              (the limits before issue 9);
  new         what grading uses here now: cgroups where writable (memory, pids, CPU weight
              and quota), the supervisor's clock every tick;
  supervisor  no cgroup at all: rlimits and the supervisor (what a normal user gets where no
              cgroup is delegated).
For each: a bare `python -c pass` in the sandbox, and a submission that returns at once,
graded in this process (worker start, imports, the inputs, the parent's checks). The
figures are medians; the grader's own CPU time per run does not depend on load.

Usage: python bench/bench_grade.py [--repeats 7] [--copies 0] [--jobs 2]
  --copies N also grades N reference solutions and N starters of poisoning-01 with --jobs.
Uses $SECUREML_CACHE when set (a warm cache skips the victim's training), else a temporary
cache that starts cold. Run it as root and as a normal user to see both isolation modes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
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
VARIANTS = ("old", "new", "supervisor")


@contextlib.contextmanager
def limits_variant(name: str):
    """Run the sandbox with one variant's limits (patched in this process only)."""
    from secureml import isolation, sandbox
    from secureml.cgroups import CgroupPlan

    saved = (sandbox._cgroup_plan, sandbox._TICK_S)
    plan = isolation.capabilities().cgroup_plan
    try:
        if name == "old":
            if plan is None:
                raise LookupError("no writable cgroup here: the old limits needed root")
            kept = {"memory", "pids", "cpuacct", "unified"}
            old_plan = CgroupPlan(plan.version, {c: p for c, p in plan.parents.items() if c in kept},
                                  plan.controllers - {"cpu"}, plan.grader_leaf, plan.create_parent)
            sandbox._cgroup_plan = lambda found: (old_plan, "")
            sandbox._TICK_S = 3600.0  # one look at the start, then none: the old wait
        elif name == "supervisor":
            sandbox._cgroup_plan = lambda found: (None, "the benchmark's supervisor variant")
        yield
    finally:
        sandbox._cgroup_plan, sandbox._TICK_S = saved


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def overhead(repeats: int, cache: str) -> dict[str, dict[str, list[float]]]:
    """Per variant: wall time of a bare sandbox, of a quick graded submission, and the
    grader's own CPU time per bare run."""
    os.environ["SECUREML_CACHE"] = cache
    from secureml import grading, scenario
    from secureml.cache import Cache
    from secureml.families.base import RunContext
    from secureml.grading.job import STAGES
    from secureml.sandbox import Limits, run_sandboxed

    loaded = scenario.load("poisoning-01")
    STAGES.get(loaded, RunContext(cache=Cache(Path(cache))))  # build or load it once
    figures: dict[str, dict[str, list[float]]] = {v: {"bare": [], "graded": [], "sandbox": [], "cpu": []}
                                                 for v in VARIANTS}
    with tempfile.TemporaryDirectory() as work:
        inputs = Path(work, "inputs")
        inputs.mkdir(mode=0o755)
        inputs.chmod(0o755)
        folder = Path(work, "submissions")
        folder.mkdir()
        (folder / "quick.py").write_text(RETURNS_AT_ONCE)
        submission = grading.discover_submissions(folder, Path(work, "unpacked")).submissions[0]
        job = grading.GradeJob(scenario=loaded, submission=submission, limits=Limits(timeout_s=120),
                               cache_dir=Path(cache), pictures=False)
        for _ in range(repeats):
            for variant in VARIANTS:
                try:
                    with limits_variant(variant):
                        before = own_cpu_s()
                        bare = run_sandboxed([sys.executable, "-c", "pass"], inputs_dir=inputs,
                                             limits=Limits(timeout_s=60))
                        figures[variant]["cpu"].append(own_cpu_s() - before)
                        row = grading.grade_submission(job)
                except LookupError:
                    continue
                assert bare.outcome == "exited" and row.status == "ok", (bare, row.error)
                figures[variant]["bare"].append(bare.wall_s)
                figures[variant]["graded"].append(row.timings_s["total"])
                figures[variant]["sandbox"].append(row.timings_s["sandbox"])
    return figures


def workshop(copies: int, jobs: int, cache: str) -> None:
    with tempfile.TemporaryDirectory() as work:
        submissions = Path(work, "submissions")
        submissions.mkdir()
        for index in range(copies):
            shutil.copy(LAB / "solution.py", submissions / f"solution-{index:02d}.py")
            shutil.copy(LAB / "mitigation.py", submissions / f"starter-{index:02d}.py")
        command = [sys.executable, "-m", "secureml.cli", "grade", "poisoning-01", str(submissions),
                   "--db", str(Path(work, "gradebook.db")), "--jobs", str(jobs), "--json", "--regrade"]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "SECUREML_CACHE": cache})
        total_s = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"secureml grade failed ({done.returncode}):\n{done.stderr}")
    report = json.loads(done.stdout)
    rows = report["graded"]
    statuses = sorted({row["status"] for row in rows})
    print(f"\nworkshop: {copies} solutions + {copies} starters of poisoning-01, --jobs {jobs}, "
          f"isolation {report['isolation']}")
    print(f"  {total_s:.1f} s wall for {len(rows)} submissions ({total_s / len(rows):.2f} s each; "
          f"statuses {statuses})")
    for prefix in ("solution", "starter"):
        mine = [row for row in rows if row["trainee"].startswith(prefix)]
        sandbox_s = statistics.fmean(row["timings_s"].get("sandbox", 0.0) for row in mine)
        evaluate_s = statistics.fmean(row["timings_s"].get("evaluate", 0.0) for row in mine)
        scores = sorted({row["score"] for row in mine})
        print(f"  {prefix:9s} each: sandbox {sandbox_s:5.2f} s, evaluate {evaluate_s:5.2f} s, scores {scores}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--copies", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()

    from secureml import isolation

    found = isolation.capabilities()
    if found.mode is None:
        sys.exit(f"bench_grade needs bubblewrap isolation: {found.problem} (see `secureml doctor`)")
    with tempfile.TemporaryDirectory() as work:
        cache = os.environ.get("SECUREML_CACHE") or str(Path(work, "cache"))
        print(f"isolation {found.mode}; {found.cgroup_plan.describe() if found.cgroup_plan else 'no writable cgroup'}; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        figures = overhead(args.repeats, cache)
        print(f"per-submission overhead, median of {args.repeats} (wall times depend on the machine's load):")
        print(f"  {'limits':10s} {'bare run':>9s} {'graded':>9s} {'in sandbox':>11s} {'grader CPU':>11s}")
        old = figures["old"]
        for variant in VARIANTS:
            f = figures[variant]
            if not f["bare"]:
                print(f"  {variant:10s} (not available here)")
                continue
            medians = [statistics.median(f[key]) for key in ("bare", "graded", "sandbox", "cpu")]
            added = ""
            if variant != "old" and old["graded"]:
                ratio = medians[1] / statistics.median(old["graded"]) - 1
                added = f"  {ratio:+.1%} per graded submission vs old"
            print(f"  {variant:10s} {medians[0]:8.3f}s {medians[1]:8.2f}s {medians[2]:10.2f}s "
                  f"{medians[3] * 1000:9.1f}ms{added}")
        if args.copies:
            workshop(args.copies, args.jobs, cache)


if __name__ == "__main__":
    main()
