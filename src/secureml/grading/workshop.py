"""Grading a workshop: every new or changed submission, each in its own sandbox, one row each.

    grade_workshop(scenario, SUBMISSIONS, gradebook, settings) -> GradeReport

It checks isolation, sweeps what a killed grader left behind, builds the shared stage
once, starts the worker once to check the sandbox answers (preflight), skips what the
gradebook already holds, and fans the rest out through an executor. The parent is the
only writer of the gradebook, and records each row as soon as it arrives, so an
interrupted run (Ctrl-C, kill -9) loses nothing already graded, and the next run skips
what is stored unless asked to regrade.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from secureml import isolation
from secureml.cache import Cache
from secureml.cgroups import process_start_ticks
from secureml.cgroups import sweep_leftovers as sweep_cgroups
from secureml.errors import ConfigError, SecuremlError
from secureml.families.base import RunContext
from secureml.gradebook import Gradebook, GradeRow, Status
from secureml.grading.executors import Executor, executor_for
from secureml.grading.job import (
    DEFAULT_CHILD_THREADS,
    STAGES,
    GradeJob,
    executor_failure_row,
    grade_submission,
    graded_config_sha256,
    thread_env,
    with_stderr,
)
from secureml.grading.submissions import Submission, discover_submissions
from secureml.progress import NO_PROGRESS
from secureml.sandbox import (
    SCRATCH_NAME,
    Limits,
    isolation_mode,
    isolation_problem,
    run_sandboxed,
    scratch_prefix,
)
from secureml.variants import draw_variant, first_valid_variant
from secureml.worker import CHECK_REPLY

if TYPE_CHECKING:
    from secureml.scenario import ScenarioBase

# How long the preflight (start the worker, import the family, answer) may take. It
# imports no torch: a few hundred milliseconds; a slow CI machine gets slack.
_PREFLIGHT_TIMEOUT_S = 60.0


class IsolationUnavailable(SecuremlError):
    """Trainee code cannot be isolated here, and --unsafe was not given."""

    exit_code = 7


class GraderUnavailable(SecuremlError):
    """The sandboxed worker cannot start here, so grading would blame trainees for it."""

    exit_code = 7


class GradingIncomplete(SecuremlError):
    """Some submissions ended with infra-error: the grader, not the trainee, failed."""

    exit_code = 8


def sweep_leftovers(work_dir: Path | None = None) -> list[Path]:
    """Remove what graders killed with -9 left behind: their run cgroups and their 0700
    scratch folders (training sets, copies of submissions, unpacked zips).

    Only folders of this user whose maker (pid and start time) is gone are removed; a
    grader running now keeps its own. Returns what was removed.
    """
    removed: list[Path] = []
    plan = isolation.capabilities().cgroup_plan
    if plan is not None:
        removed += sweep_cgroups(plan)
    entries: list[Path] = []
    for folder in dict.fromkeys([Path(work_dir or tempfile.gettempdir()), Path(tempfile.gettempdir())]):
        with contextlib.suppress(OSError):
            entries += list(folder.iterdir())
    for entry in entries:
        match = SCRATCH_NAME.match(entry.name)
        if match is None:
            continue
        try:
            info = entry.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            continue
        if process_start_ticks(int(match.group(1))) == int(match.group(2)):
            continue  # its grader still runs
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            removed.append(entry)
    return removed


def _isolation_summary(unsafe: bool) -> str:
    """The isolation mode, and what enforces the limits, in a few words."""
    if unsafe:
        return "unsafe-subprocess"
    plan = isolation.capabilities().cgroup_plan
    return f"{isolation_mode()} (limits: {plan.summary if plan else 'the supervisor'})"


@dataclass(frozen=True)
class GradeSettings:
    limits: Limits = Limits()
    cache_dir: Path | None = None  # None: the user's cache (SECUREML_CACHE)
    data_root: Path | None = None
    jobs: int = 1
    regrade: bool = False
    unsafe: bool = False  # allow grading without bubblewrap (a plain subprocess)
    pictures: bool = True
    work_dir: Path | None = None
    child_threads: int = DEFAULT_CHILD_THREADS
    # An automatic variant every submission also meets (secureml.variants). Its seed is
    # the gradebook's own (drawn once at random, kept there) unless one is given here, as
    # an autograder bundle does. On by default (README, automatic variants); `grade
    # --variant none` turns it off.
    automatic_variant: bool = True
    variant_seed: int | None = None


@dataclass
class GradeReport:
    scenario_id: str
    hidden_variant: bool
    automatic_variant: bool
    isolation: str
    graded: list[GradeRow]
    skipped: list[Submission]  # already in the gradebook under the same config
    notes: list[str]
    wall_s: float = 0.0

    def counts(self) -> dict[str, int]:
        return dict(Counter(row.status.value for row in self.graded))

    @property
    def infra_errors(self) -> list[GradeRow]:
        return [row for row in self.graded if row.status == Status.INFRA_ERROR]


class GradeProgress(Protocol):
    """Told when grading starts, as each row arrives, and when grading stops."""

    def start(self, total: int, workers: int) -> None: ...

    def finished(self, row: GradeRow, running: int) -> None: ...

    def stop(self) -> None: ...


class _NoGradeProgress:
    def start(self, total: int, workers: int) -> None:
        pass

    def finished(self, row: GradeRow, running: int) -> None:
        pass

    def stop(self) -> None:
        pass


NO_GRADE_PROGRESS = _NoGradeProgress()


def resolve_isolation(unsafe: bool) -> bool:
    """Whether to run unisolated: False when bubblewrap works; True only if `unsafe` allows it."""
    problem = isolation_problem()
    if problem is None:
        return False
    if unsafe:
        return True
    raise IsolationUnavailable(
        f"cannot isolate trainee code here: {problem}",
        fix="install bubblewrap (sudo apt-get install bubblewrap) and see `secureml doctor`, "
            "or pass --unsafe to run submissions WITHOUT isolation (only for code you trust)",
    )


def preflight(family_name: str, *, limits: Limits, unsafe: bool, work_dir: Path | None = None) -> float:
    """Start the worker once in the sandbox and check it answers; return its wall time.

    After this passes, a run that ends without a result is the trainee's doing, not ours.
    """
    with tempfile.TemporaryDirectory(prefix=scratch_prefix("preflight"), dir=work_dir) as folder:
        os.chmod(folder, 0o755)
        check_limits = Limits(timeout_s=_PREFLIGHT_TIMEOUT_S, memory_mb=limits.memory_mb,
                              max_processes=limits.max_processes)
        result = run_sandboxed([sys.executable, "-m", "secureml.worker", "--check", family_name],
                               inputs_dir=Path(folder), limits=check_limits, unsafe=unsafe,
                               env=thread_env(1))
    if result.outcome != "exited" or result.returncode != 0 or result.result != CHECK_REPLY:
        readable = ("check that the venv is readable by other users (chmod -R o+rX), "
                    if result.isolation == "bubblewrap-root" else "")
        raise GraderUnavailable(
            f"the grading worker does not start in the sandbox ({result.outcome}, "
            f"exit {result.returncode}): {result.detail or with_stderr('', result).strip()}",
            fix=f"{readable}run `secureml doctor`, or rerun with --debug",
        )
    return result.wall_s


def grade_workshop(
    scenario: ScenarioBase,
    submissions: Path,
    gradebook: Gradebook,
    settings: GradeSettings = GradeSettings(),
    *,
    hidden: ScenarioBase | None = None,
    executor: Executor | None = None,
    progress: GradeProgress = NO_GRADE_PROGRESS,
    stage_progress=None,
) -> GradeReport:
    """Grade every new or changed submission of `submissions` and record each row as it finishes.

    hidden: the scenario with hidden overrides applied (see `loader.apply_overrides`).
    executor: how jobs run; by default one chosen from `settings.jobs`.
    stage_progress: a `secureml.progress.Progress` for building the shared stage.
    """
    started = time.monotonic()
    unsafe = resolve_isolation(settings.unsafe)
    swept = sweep_leftovers(settings.work_dir)
    cache_dir = Path(settings.cache_dir) if settings.cache_dir else Cache().root
    graded_scenario = hidden if hidden is not None else scenario
    stage_progress = stage_progress or NO_PROGRESS
    ctx = RunContext(cache=Cache(cache_dir), data_root=settings.data_root, progress=stage_progress)
    executor = executor or executor_for(settings.jobs)
    with tempfile.TemporaryDirectory(prefix=scratch_prefix("submissions"), dir=settings.work_dir) as unpack:
        found = discover_submissions(Path(submissions), Path(unpack))
        variant_notes: list[str] = []
        with stage_progress:  # a bad submissions folder fails before this
            try:
                variant = automatic_variant(graded_scenario, gradebook, settings, ctx)
            except ConfigError as none_valid:
                # Grading goes on without one: the run is never lost for want of a variant.
                variant = None
                variant_notes.append(
                    f"graded on the {'hidden' if hidden is not None else 'public'} scenario only: "
                    f"{none_valid.problem} ({none_valid.found}). Try another --variant-seed, or "
                    f"--variant none to skip this search."
                )
        config_sha256 = graded_config_sha256(graded_scenario, variant)
        jobs = [
            GradeJob(scenario=scenario, hidden=hidden, variant=variant, submission=submission,
                     limits=settings.limits, cache_dir=cache_dir, data_root=settings.data_root,
                     unsafe=unsafe, threads=settings.child_threads,
                     pictures=settings.pictures, work_dir=settings.work_dir)
            for submission in found.submissions
        ]
        pending: list[GradeJob] = []
        skipped: list[GradeJob] = []
        for job in jobs:
            already = gradebook.has(scenario.id, job.submission.trainee, job.submission.sha256,
                                    config_sha256=config_sha256)
            (skipped if already and not settings.regrade else pending).append(job)
        report = GradeReport(scenario.id, hidden is not None, variant is not None, _isolation_summary(unsafe),
                             [], [job.submission for job in skipped], list(found.notes))
        report.notes += [f"removed what a grader that died left behind: {path}" for path in swept]
        report.notes += variant_notes
        if pending:
            # Build (or load) the shared stage once here, so that workers only read the cache
            # (the variant's was built above, to know it is valid).
            with stage_progress:
                STAGES.get(graded_scenario, ctx)
            preflight(graded_scenario.family, limits=settings.limits, unsafe=unsafe,
                      work_dir=settings.work_dir)
            progress.start(len(pending), executor.workers)
            results = executor.map_unordered(grade_submission, pending)
            try:
                outstanding = len(pending)
                for job, outcome in results:
                    row = outcome if isinstance(outcome, GradeRow) else executor_failure_row(job, outcome)
                    gradebook.record(row)  # at once: a crash from here on loses nothing graded
                    report.graded.append(row)
                    outstanding -= 1
                    progress.finished(row, min(executor.workers, outstanding))
            finally:
                results.close()  # interrupted: the workers are killed now, not when collected
                progress.stop()
    report.wall_s = time.monotonic() - started
    return report


def automatic_variant(graded: ScenarioBase, gradebook: Gradebook, settings: GradeSettings,
                      ctx=None) -> ScenarioBase | None:
    """The variant every submission meets besides `graded`, or None when switched off.
    With `ctx`, its stage is built, and a variant refused there (a backdoor that did not
    take hold) gives way to the next one drawn from the same seed."""
    if not settings.automatic_variant and settings.variant_seed is None:
        return None
    seed = settings.variant_seed if settings.variant_seed is not None else gradebook.variant_seed(graded.id)
    if ctx is None:
        return draw_variant(graded, seed)
    return first_valid_variant(graded, seed, lambda variant: STAGES.get(variant, ctx))
