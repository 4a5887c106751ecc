"""Grading one submission: `grade_submission(GradeJob) -> GradeRow`, a function of its job alone.

It rebuilds the shared attack stage from the content-hash cache (memoised per process),
writes the family's inputs and a copy of the trainee's files to a fresh folder, runs
`secureml.worker` on them in the sandbox, and validates, evaluates and scores the raw
outputs in this (trusted) process. Every submission also meets the automatic variant,
when there is one; the grade is the lower score. Any family that implements
`secureml.families.base.Family` plugs in; nothing here knows one family from another.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secureml.cache import Cache
from secureml.errors import MitigationError
from secureml.families.base import RunContext
from secureml.gradebook import GradeRow, Status, error_kind, error_summary, now_utc_iso
from secureml.grading.submissions import MITIGATION_NAME, Submission, copy_submission, make_world_readable
from secureml.mitigation import decode_result
from secureml.runner import prepare_stage
from secureml.sandbox import Limits, SandboxResult, run_sandboxed, scratch_prefix
from secureml.text import MAX_ERROR_CHARS, truncate
from secureml.timing import Stopwatch
from secureml.versions import versions
from secureml.worker import THREADS_ENV

if TYPE_CHECKING:
    from secureml.scenario import ScenarioBase

MAX_SCORE = 100.0

_STDERR_TAIL_LINES = 15

# CPU threads of each sandboxed child. Parallelism comes from --jobs. Measured on a
# 2-core machine that other work kept busy: the reference poisoning-01 solution took 6 s
# in the sandbox with 1 OpenMP thread and 36 s with 2 (KMeans and PCA spin at barriers).
DEFAULT_CHILD_THREADS = 1

HIDDEN_VARIANT_FEEDBACK = (
    "Graded on a hidden variant of the scenario. Detailed feedback is withheld so that "
    "the variant stays hidden."
)


@dataclass(frozen=True)
class GradeJob:
    """Everything needed to grade one submission. Plain, picklable data.

    scenario: the scenario as the trainees know it (validated, frozen).
    hidden: the same scenario with the instructor's hidden overrides applied, or None.
        When given, it is what runs; the row records only that a variant was used.
    variant: the automatic variant (`secureml.variants`) the submission also meets, or
        None. The grade is the lower of the two scores; nothing the variant's run says
        beyond its score and its failure's kind reaches the row (see `_grade`).
    threads: CPU threads of the sandboxed child (OpenMP, MKL, torch).
    pictures: let the family draw its picture into the row.
    work_dir: where the per-submission scratch folder goes; None means the system's.
    """

    scenario: ScenarioBase
    submission: Submission
    limits: Limits
    cache_dir: Path
    hidden: ScenarioBase | None = None
    variant: ScenarioBase | None = None
    data_root: Path | None = None
    unsafe: bool = False
    threads: int = DEFAULT_CHILD_THREADS
    pictures: bool = True
    work_dir: Path | None = None

    @property
    def graded_scenario(self) -> ScenarioBase:
        return self.hidden if self.hidden is not None else self.scenario

    @property
    def config_sha256(self) -> str:
        return graded_config_sha256(self.graded_scenario, self.variant)


def graded_config_sha256(graded: ScenarioBase, variant: ScenarioBase | None) -> str:
    """What a row's grade depends on: the scenario that ran and, if any, its automatic
    variant. A re-run under another variant seed grades again."""
    if variant is None:
        return graded.config_sha256()
    both = f"{graded.config_sha256()}+variant:{variant.config_sha256()}"
    return hashlib.sha256(both.encode()).hexdigest()


class _StageMemo:
    """The stages this process prepared last, keyed by everything a stage depends on.

    `prepare_stage` on a warm cache still re-measures every cached model (about 4 s for
    poisoning-01 on two cores), and a pool worker grades many submissions of the same
    scenario. A stage is a pure function of its key (content-addressed cache, the same
    code), so reusing it changes no result; it only saves the recomputation. Families
    treat the stage as read-only after `prepare`. Two entries: the graded scenario and
    its automatic variant.
    """

    def __init__(self, size: int = 2) -> None:
        self._size = size
        self._entries: dict[tuple, tuple] = {}

    def get(self, scenario: ScenarioBase, ctx):
        key = (scenario.config_sha256(), str(Path(ctx.cache.root).resolve()),
               str(ctx.data_root), ctx.device)
        value = self._entries.pop(key, None)
        if value is None:
            value = prepare_stage(scenario, ctx)
        self._entries[key] = value  # the newest last
        while len(self._entries) > self._size:
            del self._entries[next(iter(self._entries))]
        return value


STAGES = _StageMemo()


def grade_submission(job: GradeJob) -> GradeRow:
    """Grade one submission and return its gradebook row. Never raises (but for Ctrl-C).

    The trainee's code runs only in the sandbox; validation, evaluation and scoring run
    here, on outputs parsed strictly. Anything unexpected on our side becomes an
    "infra-error" row, which a re-run grades again.
    """
    clock = Stopwatch()
    try:
        return _grade(job, clock)
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # a grader bug must not stop the run
        return _row(job, clock, Status.INFRA_ERROR,
                    error=f"the grader failed: {type(error).__name__}: {error}")


VARIANT_FEEDBACK = (
    "Also graded on an automatic variant of the scenario you have not seen (another seed "
    "and other secrets): it scored {variant:.1f}, the public scenario {public:.1f}. Your grade "
    "is the lower of the two. Check that a defence generalises with "
    "`secureml run {scenario_id} --variant auto`."
)


@dataclass
class _Attempt:
    """What one run of the submission on one scenario gave: an evaluation, or a failed row."""

    evaluation: Any = None
    flags: list[str] = dataclasses.field(default_factory=list)
    picture: bytes | None = None
    failed: GradeRow | None = None


def _grade(job: GradeJob, clock: Stopwatch) -> GradeRow:
    submission = job.submission
    if submission.problem:
        return _row(job, clock, Status.ERROR, error=submission.problem,
                    feedback=[f"Hand in {MITIGATION_NAME} (or NAME.py) with plain files only."])
    public = _attempt(job, job.graded_scenario, clock, pictures=job.pictures and job.hidden is None)
    if public.failed is not None:
        return public.failed
    public_score = _bounded(public.evaluation.score.total)
    feedback = list(public.evaluation.feedback)
    if job.hidden is not None:
        # Family feedback quotes the settings it ran with (e.g. the target class).
        feedback = [HIDDEN_VARIANT_FEEDBACK]
    if job.variant is None:
        return _row(job, clock, Status.OK, score=public_score, parts=public.evaluation.score.parts,
                    metrics=public.evaluation.metrics, flags=public.flags, feedback=feedback,
                    picture=public.picture)
    # The trainee's code sees the variant's data, and could echo what it finds there
    # (a target class, a trigger) in an exception or a flag: of the variant's run, only
    # its score, a failure's status, kind and line, and a count of flags reach the row.
    variant = _attempt(job, job.variant, clock, pictures=False, prefix="variant.")
    if variant.failed is not None:
        failed = variant.failed
        return dataclasses.replace(
            failed, error=f"on the automatic variant: {_variant_error(failed)}",
            flags=[*public.flags, *failed.flags],
            feedback=[f"Your code passed on the public scenario (score {public_score:.1f}) but not on "
                      "a variant of it you have not seen. " + hint for hint in failed.feedback[:1]],
        )
    variant_score = _bounded(variant.evaluation.score.total)
    deciding = variant if variant_score < public_score else public
    flags = list(public.flags)
    if variant.flags:
        flags.append(f"the automatic variant raised {len(variant.flags)} flag(s) too")
    return _row(
        job, clock, Status.OK,
        score=min(public_score, variant_score),
        parts=deciding.evaluation.score.parts,
        metrics={**public.evaluation.metrics, "public.score": public_score, "variant.score": variant_score},
        flags=flags,
        feedback=[*feedback, VARIANT_FEEDBACK.format(variant=variant_score, public=public_score,
                                                     scenario_id=job.scenario.id)],
        picture=public.picture,
    )


def _bounded(score: float) -> float:
    return min(MAX_SCORE, max(0.0, float(score)))


def _variant_error(row: GradeRow) -> str:
    if row.status == Status.ERROR:
        return error_summary(row.error)
    return {Status.TIMEOUT: "it ran out of time", Status.MEMORY: "it ran out of memory",
            Status.INVALID_RESULT: "it returned something the grader cannot use",
            Status.NO_RESULT: "it ended before returning a result"}.get(row.status, row.status.value)


def _attempt(job: GradeJob, scenario: ScenarioBase, clock: Stopwatch, *, pictures: bool,
             prefix: str = "") -> _Attempt:
    """Run the submission in the sandbox on `scenario`'s inputs and evaluate what it returned."""
    ctx = RunContext(cache=Cache(job.cache_dir), data_root=job.data_root)
    with clock.stage(prefix + "prepare"):
        family, _split, stage = STAGES.get(scenario, ctx)
    with tempfile.TemporaryDirectory(prefix=scratch_prefix("grade"), dir=job.work_dir) as scratch_name:
        scratch = Path(scratch_name)
        # The sandbox's whole view: the family's inputs and a copy of the trainee's files.
        inputs = scratch / "inputs"
        task_dir, code_dir = inputs / "task", inputs / "submission"
        with clock.stage(prefix + "inputs"):
            family.write_inputs(stage, task_dir)
            copy_submission(job.submission, code_dir)
            make_world_readable(inputs)
        argv = [sys.executable, "-m", "secureml.worker", scenario.family,
                str(code_dir / MITIGATION_NAME), str(task_dir)]
        # The sandbox's CPU share and quota are its thread budget: a neighbour under
        # --jobs N cannot take more, however many processes it starts.
        limits = dataclasses.replace(job.limits, cpus=float(max(1, job.threads)))
        with clock.stage(prefix + "sandbox"):
            result = run_sandboxed(argv, inputs_dir=inputs, limits=limits, unsafe=job.unsafe,
                                   env=thread_env(job.threads))
        flags = _sandbox_flags(result, job)
        verdict = _supervisor_verdict(result, job.limits)
        if verdict is not None:
            status, problem = verdict
            return _Attempt(failed=_row(job, clock, status, error=problem, flags=flags,
                                        feedback=_status_feedback(status, job, family.function_name)))
        with clock.stage(prefix + "evaluate"):
            try:
                raw = decode_result(result.result, max_bytes=job.limits.max_result_bytes)
                outputs = family.check_outputs(stage, raw)
            except MitigationError as error:
                status, detail = Status(error.status), error.problem
                if status == Status.NO_RESULT:
                    status, detail = _ended_without_result(result)
                elif status == Status.ERROR:
                    detail += _memory_error_hint(detail, job.limits)
                return _Attempt(failed=_row(job, clock, status, error=detail, flags=flags,
                                            feedback=_status_feedback(status, job, family.function_name)))
            ctx.out_dir = scratch / "pictures" if pictures else None
            evaluation = family.evaluate(stage, outputs, ctx)
            picture = _first_png(evaluation.pictures.values())
        return _Attempt(evaluation=evaluation, flags=[*evaluation.flags, *flags], picture=picture)


def _row(job: GradeJob, clock: Stopwatch, status: Status, *, error: str = "", score: float | None = None,
         parts=None, metrics=None, flags: Sequence[str] = (), feedback: Sequence[str] = (),
         picture: bytes | None = None) -> GradeRow:
    return GradeRow(
        scenario_id=job.scenario.id,
        trainee=job.submission.trainee,
        submission_sha256=job.submission.sha256,
        status=status,
        score=score,
        max_score=MAX_SCORE,
        parts=dict(parts or {}),
        metrics=dict(metrics or {}),
        flags=list(flags),
        feedback=list(feedback),
        error=truncate(error, MAX_ERROR_CHARS),
        timings_s={name: round(seconds, 3) for name, seconds in clock.total().items()},
        # A hidden variant's seed is part of what must stay hidden: the row keeps the
        # public seed, and the config hash (which a re-run compares) of what ran.
        seed=job.scenario.seed,
        config_sha256=job.config_sha256,
        hidden_variant=job.hidden is not None,
        versions=versions(),
        picture_png=picture,
        graded_at=now_utc_iso(),
        taxonomy=job.scenario.taxonomy(),
    )


def thread_env(threads: int) -> dict[str, str]:
    # The sandbox counts threads against its process limit, and parallel graders share
    # the cores: one pool of `threads` per child, whatever library asks. PASSIVE: OpenMP
    # threads sleep instead of spinning at barriers; spinning on a busy machine made
    # scikit-learn's KMeans 50x slower in our measurements (see DEFAULT_CHILD_THREADS).
    count = str(max(1, threads))
    return {"OMP_NUM_THREADS": count, "MKL_NUM_THREADS": count, "OPENBLAS_NUM_THREADS": count,
            "OMP_WAIT_POLICY": "PASSIVE", THREADS_ENV: count}


def _supervisor_verdict(result: SandboxResult, limits: Limits) -> tuple[Status, str] | None:
    """The gradebook status of a limit the supervisor enforced, or None when the child ended
    by itself and its result channel decides. Never read from the child's exit code or output."""
    if result.outcome == "infra-error":
        return Status.INFRA_ERROR, f"the sandbox failed: {result.detail}"
    if result.outcome == "timeout":
        return Status.TIMEOUT, result.detail or f"ran past the {limits.timeout_s:g} s limit"
    if result.outcome == "memory":
        return Status.MEMORY, result.detail or f"ran past the {limits.memory_mb} MB memory limit"
    if result.outcome == "killed":
        return Status.ERROR, result.detail
    if result.result_oversized:
        return Status.INVALID_RESULT, (f"the result is larger than the {limits.max_result_bytes} bytes "
                                  "allowed; it was not read")
    return None


def _ended_without_result(result: SandboxResult) -> tuple[Status, str]:
    """A child that ended by itself without a result: a crash (error) or an exit (no-result)."""
    if result.outcome == "signalled":
        return Status.ERROR, with_stderr(f"the process {result.detail.split(';')[0]} before returning a result",
                                     result)
    return Status.NO_RESULT, with_stderr(
        f"the process ended (exit code {result.returncode}) without returning a result: "
        "sys.exit, os._exit or a crash before the function returned", result)


def _memory_error_hint(error_text: str, limits: Limits) -> str:
    """Why a MemoryError may have happened, said by the grader (the status stays "error":
    the trainee's code raised it, and only the supervisor's own kills are "memory")."""
    if error_kind(error_text) != "MemoryError":
        return ""
    return (f"\n(the sandbox refuses any allocation beyond its {limits.address_space_bytes // 2**20} MB "
            f"address space; its memory limit is {limits.memory_mb} MB)")


def with_stderr(text: str, result: SandboxResult) -> str:
    tail = "\n".join(result.stderr.strip().splitlines()[-_STDERR_TAIL_LINES:])
    return f"{text}\n--- last lines of stderr ---\n{tail}" if tail else text


def _sandbox_flags(result: SandboxResult, job: GradeJob) -> list[str]:
    flags = []
    if result.isolation == "unsafe-subprocess":
        flags.append("unisolated: graded with --unsafe, without the sandbox")
    if result.output_truncated:
        flags.append(f"output-truncated: printed more than {job.limits.max_output_bytes} bytes "
                     "on stdout or stderr; only the tail was kept")
    if result.outcome == "signalled" and result.result:
        flags.append(f"sandbox: the process {result.detail.split(';')[0]} after it sent its result")
    elif result.detail and result.outcome == "exited":
        flags.append(f"sandbox: {result.detail}")
    return flags


def _status_feedback(status: Status, job: GradeJob, function_name: str) -> list[str]:
    """The hint a failed row gives the trainee. None for an infra-error: every view of such
    a row says the one thing there is to say (gradebook.INFRA_ERROR_MESSAGE)."""
    limits = job.limits
    scenario_id = job.scenario.id
    hints = {
        Status.ERROR: f"Your code raised an error (see above). Reproduce it with "
                      f"`secureml run {scenario_id} --mitigation {MITIGATION_NAME}`.",
        Status.TIMEOUT: f"Your mitigation ran longer than the {limits.timeout_s:g} s limit. "
                        "Look for an endless loop, or make it faster.",
        Status.MEMORY: f"Your mitigation used more than the {limits.memory_mb} MB memory limit.",
        Status.INVALID_RESULT: f"{function_name} returned something the grader cannot use (see above); "
                               "the lab's README shows what it must return.",
        Status.NO_RESULT: f"Your code ended the process before {function_name} returned. "
                          "Return a result instead of exiting.",
    }
    return [hints[status]] if status in hints else []


def _first_png(paths: Iterable[Path]) -> bytes | None:
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return data
    return None


def executor_failure_row(job: GradeJob, error: BaseException) -> GradeRow:
    """The row of a job the executor itself failed to run (a worker process died)."""
    return _row(job, Stopwatch(), Status.INFRA_ERROR,
                error=f"the grading worker failed: {type(error).__name__}: {error}")
