"""Grading a workshop: each trainee's mitigation in its own sandbox, scored by the parent.

    discover_submissions(SUBMISSIONS, unpack_dir) -> Discovery       (a folder, or a zip unpacked safely)
    grade_submission(GradeJob)                    -> GradeRow        (one submission; never raises)
    grade_workshop(scenario, SUBMISSIONS, ...)    -> GradeReport     (skip, fan out, record each row)

`grade_submission` is the whole per-trainee step, a function of its job alone: it rebuilds
the shared attack stage from the content-hash cache, writes the family's inputs and a copy
of the trainee's files to a fresh folder, runs `secureml.worker` on them in the sandbox,
and validates, evaluates and scores the raw outputs in this (trusted) process. Any family
that implements `secureml.families.base.Family` plugs in; nothing here knows one family
from another. An `Executor` fans the function out: `SerialExecutor`, `LocalPool` (--jobs N),
or later an engine such as Ray or Dask implementing the same one method.

The parent is the only writer of the gradebook, and records each row as soon as it
arrives, so an interrupted run (Ctrl-C, kill -9) loses nothing already graded, and the
next run skips what is stored unless asked to regrade.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from secureml.errors import MitigationError, SecuremlError
from secureml.gradebook import Gradebook, GradeRow, now_utc_iso
from secureml.sandbox import (
    SCRATCH_NAME,
    Limits,
    SandboxResult,
    isolation_mode,
    isolation_problem,
    run_sandboxed,
    scratch_prefix,
)

if TYPE_CHECKING:
    from secureml.scenario import ScenarioBase

MAX_SCORE = 100.0
# The sandbox starts each submission's file as MITIGATION_NAME inside its own folder.
MITIGATION_NAME = "mitigation.py"
# Errors stored in the gradebook are cut to this many characters (the row is shown to
# trainees and stored for every submission; a traceback's tail says what matters).
MAX_ERROR_CHARS = 2000
_STDERR_TAIL_LINES = 15

# Bounds on what a submission may hold. A mitigation is a Python file or a small folder;
# these are two orders of magnitude above a real one and keep copies into every sandbox
# cheap.
MAX_SUBMISSION_FILES = 200
MAX_SUBMISSION_BYTES = 50 * 1024 * 1024
# Bounds on a zip of submissions, checked on the bytes actually extracted (the sizes in
# a zip's directory can lie): room for several hundred trainees, not for a zip bomb.
MAX_ZIP_FILES = 10_000
MAX_ZIP_BYTES = 512 * 1024 * 1024
MAX_TRAINEE_NAME_CHARS = 128
# Folder entries that archivers and Python leave behind; never a trainee.
_IGNORED_NAMES = {"__MACOSX", "__pycache__"}

# How long the preflight (start the worker, import the family, answer) may take. It
# imports no torch: a few hundred milliseconds; a slow CI machine gets slack.
_PREFLIGHT_TIMEOUT_S = 60.0

# CPU threads of each sandboxed child. Parallelism comes from --jobs. Measured on a
# 2-core machine that other work kept busy: the reference poisoning-01 solution took 6 s
# in the sandbox with 1 OpenMP thread and 36 s with 2 (KMeans and PCA spin at barriers).
DEFAULT_CHILD_THREADS = 1

HIDDEN_VARIANT_FEEDBACK = (
    "Graded on a hidden variant of the scenario. Detailed feedback is withheld so that "
    "the variant stays hidden."
)


# --------------------------------------------------------------------------- errors


class SubmissionsError(SecuremlError):
    """The submissions folder or zip cannot be used as it is."""

    exit_code = 2


class IsolationUnavailable(SecuremlError):
    """Trainee code cannot be isolated here, and --unsafe was not given."""

    exit_code = 7


class GraderUnavailable(SecuremlError):
    """The sandboxed worker cannot start here, so grading would blame trainees for it."""

    exit_code = 7


class GradingIncomplete(SecuremlError):
    """Some submissions ended with infra-error: the grader, not the trainee, failed."""

    exit_code = 8


# --------------------------------------------------------------------------- submissions


@dataclass(frozen=True)
class Submission:
    """One trainee's submission: the files to copy into the sandbox and their hash.

    files: (path inside the sandbox folder, source path) pairs; the entry point is always
        MITIGATION_NAME. `ALICE.py` becomes `mitigation.py`, so that two trainees who hand
        in the same file have the same sha256.
    problem: why it cannot run at all (e.g. a folder without mitigation.py). Such a
        submission is recorded as "error" without starting a sandbox.
    """

    trainee: str
    source: Path
    files: tuple[tuple[str, Path], ...]
    sha256: str
    problem: str = ""


@dataclass(frozen=True)
class Discovery:
    submissions: list[Submission]
    notes: list[str]  # entries that were skipped, and why


def discover_submissions(path: Path, unpack_dir: Path) -> Discovery:
    """The submissions in a folder (one `NAME.py` or `NAME/mitigation.py` per trainee) or a zip of one.

    unpack_dir: an empty folder a zip is extracted into; it must outlive the grading.
    Raises SubmissionsError for a path that is neither, or an unsafe zip.
    """
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        root = _unpack_zip(path, Path(unpack_dir))
        # A zip made by zipping the folder itself holds that one folder.
        entries = [entry for entry in root.iterdir() if entry.name not in _IGNORED_NAMES]
        if len(entries) == 1 and entries[0].is_dir() and not (entries[0] / MITIGATION_NAME).exists():
            root = entries[0]
    elif path.is_dir():
        root = path
    elif path.exists():
        raise SubmissionsError(
            "the submissions path is neither a folder nor a zip file",
            file=str(path),
            fix="give a folder holding NAME.py files or NAME/mitigation.py folders, or a zip of one",
        )
    else:
        raise SubmissionsError("the submissions folder does not exist", file=str(path),
                               fix="check the path")

    submissions: list[Submission] = []
    notes: list[str] = []
    seen: dict[str, str] = {}
    for entry in sorted(root.iterdir(), key=lambda item: item.name):
        name = entry.name
        if name.startswith(".") or name in _IGNORED_NAMES:
            continue
        mode = entry.lstat().st_mode
        if stat.S_ISLNK(mode):
            notes.append(f"skipped {name}: a symbolic link (submissions must be real files)")
            continue
        if stat.S_ISDIR(mode):
            trainee = name
        elif stat.S_ISREG(mode) and name.endswith(".py"):
            trainee = name[: -len(".py")]
        else:
            notes.append(f"skipped {name}: not a NAME.py file or a NAME/ folder")
            continue
        bad_name = _trainee_name_problem(trainee)
        if bad_name:
            notes.append(f"skipped {name}: {bad_name}")
            continue
        if trainee in seen:
            raise SubmissionsError(
                f"trainee '{trainee}' has two submissions: {seen[trainee]} and {name}",
                file=str(path),
                fix="keep one of them",
            )
        seen[trainee] = name
        submissions.append(_folder_submission(trainee, entry) if stat.S_ISDIR(mode)
                           else _file_submission(trainee, entry))
    if not submissions:
        raise SubmissionsError(
            "no submissions found",
            file=str(path),
            expected="NAME.py files or NAME/ folders holding mitigation.py",
            found=", ".join(sorted(entry.name for entry in root.iterdir())[:10]) or "an empty folder",
        )
    return Discovery(submissions, notes)


def _trainee_name_problem(name: str) -> str:
    if not name or not name.strip():
        return "an empty trainee name"
    if len(name) > MAX_TRAINEE_NAME_CHARS:
        return f"a trainee name longer than {MAX_TRAINEE_NAME_CHARS} characters"
    if not name.isprintable():
        return "the trainee name holds control characters"
    return ""


def _file_submission(trainee: str, file: Path) -> Submission:
    size = file.stat().st_size
    problem = ""
    if size > MAX_SUBMISSION_BYTES:
        problem = f"{file.name} is {size} bytes, more than the {MAX_SUBMISSION_BYTES} allowed"
    files = ((MITIGATION_NAME, file),)
    return Submission(trainee, file, files, _files_sha256(files), problem)


def _folder_submission(trainee: str, folder: Path) -> Submission:
    files: list[tuple[str, Path]] = []
    problems: list[str] = []
    total = 0
    for directory, subdirs, names in os.walk(folder):  # never follows links
        linked = sorted(d for d in subdirs if os.path.islink(os.path.join(directory, d)))
        subdirs[:] = sorted(d for d in subdirs if d not in _IGNORED_NAMES and d not in linked)
        for name in sorted(names) + linked:
            full = Path(directory, name)
            relative = full.relative_to(folder).as_posix()
            mode = full.lstat().st_mode
            if stat.S_ISLNK(mode):
                problems.append(f"{trainee}/{relative} is a symbolic link; submissions may hold only files")
                continue
            if not stat.S_ISREG(mode):
                problems.append(f"{trainee}/{relative} is not a regular file")
                continue
            if name.endswith(".pyc"):
                continue
            total += full.stat().st_size
            files.append((relative, full))
    if len(files) > MAX_SUBMISSION_FILES:
        problems.append(f"{trainee}/ holds {len(files)} files, more than the {MAX_SUBMISSION_FILES} allowed")
    if total > MAX_SUBMISSION_BYTES:
        problems.append(f"{trainee}/ holds {total} bytes, more than the {MAX_SUBMISSION_BYTES} allowed")
    if not (folder / MITIGATION_NAME).is_file() and not problems:
        python_files = [relative for relative, _ in files if relative.endswith(".py")]
        problems.append(
            f"{trainee}/ holds no {MITIGATION_NAME}"
            + (f" (found {', '.join(python_files[:5])})" if python_files else "")
            + f"; name your main file {MITIGATION_NAME}"
        )
    ordered = tuple(sorted(files))
    return Submission(trainee, folder, ordered, _files_sha256(ordered), "; ".join(problems))


def _files_sha256(files: Sequence[tuple[str, Path]]) -> str:
    """sha256 over (relative path, content sha256) pairs: the same files give the same hash."""
    digest = hashlib.sha256()
    for relative, source in sorted(files):
        content = hashlib.sha256()
        with open(source, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                content.update(chunk)
        digest.update(relative.encode() + b"\0" + content.hexdigest().encode() + b"\n")
    return digest.hexdigest()


def _unpack_zip(archive: Path, destination: Path, *, max_files: int = MAX_ZIP_FILES,
                max_bytes: int = MAX_ZIP_BYTES) -> Path:
    """Extract `archive` into `destination`, refusing anything that could escape or flood it.

    Every entry is checked before anything is written: no absolute paths, no `..`, no
    drive letters or backslashes, no symbolic links or other special files. Sizes are
    counted on the bytes actually decompressed, not on what the zip's directory claims.
    """
    destination.mkdir(parents=True, exist_ok=True)

    def refuse(entry: str, why: str) -> SubmissionsError:
        return SubmissionsError(
            f"the zip entry '{entry}' {why}; the zip was not extracted",
            file=str(archive),
            fix="zip the submissions folder itself, with plain files and folders only",
        )

    try:
        with zipfile.ZipFile(archive) as bundle:
            members = bundle.infolist()
            if len(members) > max_files:
                raise SubmissionsError(
                    f"the zip holds {len(members)} entries, more than the {max_files} allowed",
                    file=str(archive),
                    fix="remove data files from the submissions; only the mitigation code is needed",
                )
            plan: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
            seen: set[str] = set()
            for member in members:
                name = member.filename
                if "\\" in name or "\0" in name:
                    raise refuse(name, "holds a backslash or NUL in its path")
                relative = PurePosixPath(name)
                if relative.is_absolute() or name.startswith("/"):
                    raise refuse(name, "has an absolute path")
                if ".." in relative.parts:
                    raise refuse(name, "climbs out of the folder with '..'")
                if relative.parts and ":" in relative.parts[0]:
                    raise refuse(name, "starts with a drive letter")
                kind = stat.S_IFMT(member.external_attr >> 16)
                if kind == stat.S_IFLNK:
                    raise refuse(name, "is a symbolic link")
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise refuse(name, "is a special file (device, pipe or socket)")
                if member.flag_bits & 0x1:
                    raise refuse(name, "is encrypted")
                key = relative.as_posix()
                if key in seen:
                    raise refuse(name, "appears twice")
                seen.add(key)
                plan.append((member, relative))
            written = 0
            for member, relative in plan:
                target = destination.joinpath(*relative.parts)
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(member) as source, open(target, "xb") as sink:
                    for chunk in iter(lambda: source.read(1 << 20), b""):
                        written += len(chunk)
                        if written > max_bytes:
                            raise SubmissionsError(
                                f"the zip unpacks to more than {max_bytes} bytes "
                                f"(at entry '{member.filename}')",
                                file=str(archive),
                                fix="remove data files from the submissions; only the mitigation code is needed",
                            )
                        sink.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, OSError) as error:
        raise SubmissionsError(f"the zip cannot be read ({error})", file=str(archive),
                               fix="re-create it with `zip -r submissions.zip submissions/`") from error
    return destination


# --------------------------------------------------------------------------- one submission


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
        from secureml.runner import prepare_stage

        key = (scenario.config_sha256(), str(Path(ctx.cache.root).resolve()),
               str(ctx.data_root), ctx.device)
        value = self._entries.pop(key, None)
        if value is None:
            value = prepare_stage(scenario, ctx)
        self._entries[key] = value  # the newest last
        while len(self._entries) > self._size:
            del self._entries[next(iter(self._entries))]
        return value


_STAGES = _StageMemo()


class _Clock:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.stages: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.monotonic() - start

    def timings(self) -> dict[str, float]:
        return {**{k: round(v, 3) for k, v in self.stages.items()},
                "total": round(time.monotonic() - self.started, 3)}


def grade_submission(job: GradeJob) -> GradeRow:
    """Grade one submission and return its gradebook row. Never raises (but for Ctrl-C).

    The trainee's code runs only in the sandbox; validation, evaluation and scoring run
    here, on outputs parsed strictly. Anything unexpected on our side becomes an
    "infra-error" row, which a re-run grades again.
    """
    clock = _Clock()
    try:
        return _grade(job, clock)
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # noqa: BLE001 - a grader bug must not stop the run
        return _row(job, clock, "infra-error",
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


def _grade(job: GradeJob, clock: _Clock) -> GradeRow:
    submission = job.submission
    if submission.problem:
        return _row(job, clock, "error", error=submission.problem,
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
        return _row(job, clock, "ok", score=public_score, parts=public.evaluation.score.parts,
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
                      "a variant of it you have not seen. " + failed.feedback[0]],
        )
    variant_score = _bounded(variant.evaluation.score.total)
    deciding = variant if variant_score < public_score else public
    flags = list(public.flags)
    if variant.flags:
        flags.append(f"the automatic variant raised {len(variant.flags)} flag(s) too")
    return _row(
        job, clock, "ok",
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
    from secureml.gradebook import error_summary

    if row.status == "error":
        return error_summary(row.error)
    return {"timeout": "it ran out of time", "memory": "it ran out of memory",
            "invalid-result": "it returned something the grader cannot use",
            "no-result": "it ended before returning a result"}.get(row.status, row.status)


def _attempt(job: GradeJob, scenario: ScenarioBase, clock: _Clock, *, pictures: bool,
             prefix: str = "") -> _Attempt:
    """Run the submission in the sandbox on `scenario`'s inputs and evaluate what it returned."""
    from secureml.cache import Cache
    from secureml.families.base import RunContext
    from secureml.mitigation import decode_result

    ctx = RunContext(cache=Cache(job.cache_dir), data_root=job.data_root)
    with clock.stage(prefix + "prepare"):
        family, _split, stage = _STAGES.get(scenario, ctx)
    with tempfile.TemporaryDirectory(prefix=scratch_prefix("grade"), dir=job.work_dir) as scratch_name:
        scratch = Path(scratch_name)
        # The sandbox's whole view: the family's inputs and a copy of the trainee's files.
        inputs = scratch / "inputs"
        task_dir, code_dir = inputs / "task", inputs / "submission"
        with clock.stage(prefix + "inputs"):
            family.write_inputs(stage, task_dir)
            _copy_submission(job.submission, code_dir)
            _make_world_readable(inputs)
        argv = [sys.executable, "-m", "secureml.worker", scenario.family,
                str(code_dir / MITIGATION_NAME), str(task_dir)]
        # The sandbox's CPU share and quota are its thread budget: a neighbour under
        # --jobs N cannot take more, however many processes it starts.
        limits = dataclasses.replace(job.limits, cpus=float(max(1, job.threads)))
        with clock.stage(prefix + "sandbox"):
            result = run_sandboxed(argv, inputs_dir=inputs, limits=limits, unsafe=job.unsafe,
                                   env=_thread_env(job.threads))
        flags = _sandbox_flags(result, job)
        verdict = _supervisor_verdict(result, job.limits)
        if verdict is not None:
            status, problem = verdict
            return _Attempt(failed=_row(job, clock, status, error=problem, flags=flags,
                                        feedback=[_status_feedback(status, job, family.function_name)]))
        with clock.stage(prefix + "evaluate"):
            try:
                raw = decode_result(result.result, max_bytes=job.limits.max_result_bytes)
                outputs = family.check_outputs(stage, raw)
            except MitigationError as error:
                status, detail = error.status, error.problem
                if status == "no-result":
                    status, detail = _ended_without_result(result)
                elif status == "error":
                    detail += _memory_error_hint(detail, job.limits)
                return _Attempt(failed=_row(job, clock, status, error=detail, flags=flags,
                                            feedback=[_status_feedback(status, job, family.function_name)]))
            ctx.out_dir = scratch / "pictures" if pictures else None
            evaluation = family.evaluate(stage, outputs, ctx)
            picture = _first_png(evaluation.pictures.values())
        return _Attempt(evaluation=evaluation, flags=[*evaluation.flags, *flags], picture=picture)


def _row(job: GradeJob, clock: _Clock, status: str, *, error: str = "", score: float | None = None,
         parts=None, metrics=None, flags: Sequence[str] = (), feedback: Sequence[str] = (),
         picture: bytes | None = None) -> GradeRow:
    from secureml.versions import versions

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
        error=_truncate(error),
        timings_s=clock.timings(),
        # A hidden variant's seed is part of what must stay hidden: the row keeps the
        # public seed, and the config hash (which a re-run compares) of what ran.
        seed=job.scenario.seed,
        config_sha256=job.config_sha256,
        hidden_variant=job.hidden is not None,
        versions=versions(),
        picture_png=picture,
        graded_at=now_utc_iso(),
    )


def _truncate(text: str) -> str:
    if len(text) <= MAX_ERROR_CHARS:
        return text
    return text[: MAX_ERROR_CHARS - 3] + "..."


def _copy_submission(submission: Submission, folder: Path) -> None:
    """Copy the trainee's files, never following a link (the folder may change under us)."""
    folder.mkdir(parents=True)
    for relative, source in submission.files:
        target = folder.joinpath(*PurePosixPath(relative).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(descriptor, "rb") as reader, open(target, "xb") as writer:
            if not stat.S_ISREG(os.fstat(reader.fileno()).st_mode):
                raise SubmissionsError(f"{source} is no longer a regular file")
            shutil.copyfileobj(reader, writer)


def _make_world_readable(folder: Path) -> None:
    """The sandbox runs as an unused uid: it needs o+rX on everything it is given."""
    for directory, _subdirs, names in os.walk(folder):
        os.chmod(directory, 0o755)
        for name in names:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, 0o644)


def _thread_env(threads: int) -> dict[str, str]:
    # The sandbox counts threads against its process limit, and parallel graders share
    # the cores: one pool of `threads` per child, whatever library asks. PASSIVE: OpenMP
    # threads sleep instead of spinning at barriers; spinning on a busy machine made
    # scikit-learn's KMeans 50x slower in our measurements (see DEFAULT_CHILD_THREADS).
    count = str(max(1, threads))
    from secureml.worker import THREADS_ENV

    return {"OMP_NUM_THREADS": count, "MKL_NUM_THREADS": count, "OPENBLAS_NUM_THREADS": count,
            "OMP_WAIT_POLICY": "PASSIVE", THREADS_ENV: count}


def _supervisor_verdict(result: SandboxResult, limits: Limits) -> tuple[str, str] | None:
    """The gradebook status of a limit the supervisor enforced, or None when the child ended
    by itself and its result channel decides. Never read from the child's exit code or output."""
    if result.outcome == "infra-error":
        return "infra-error", f"the sandbox failed: {result.detail}"
    if result.outcome == "timeout":
        return "timeout", result.detail or f"ran past the {limits.timeout_s:g} s limit"
    if result.outcome == "memory":
        return "memory", result.detail or f"ran past the {limits.memory_mb} MB memory limit"
    if result.outcome == "killed":
        return "error", result.detail
    if result.result_oversized:
        return "invalid-result", (f"the result is larger than the {limits.max_result_bytes} bytes "
                                  "allowed; it was not read")
    return None


def _ended_without_result(result: SandboxResult) -> tuple[str, str]:
    """A child that ended by itself without a result: a crash (error) or an exit (no-result)."""
    if result.outcome == "signalled":
        return "error", _with_stderr(f"the process {result.detail.split(';')[0]} before returning a result",
                                     result)
    return "no-result", _with_stderr(
        f"the process ended (exit code {result.returncode}) without returning a result: "
        "sys.exit, os._exit or a crash before the function returned", result)


def _memory_error_hint(error_text: str, limits: Limits) -> str:
    """Why a MemoryError may have happened, said by the grader (the status stays "error":
    the trainee's code raised it, and only the supervisor's own kills are "memory")."""
    from secureml.gradebook import error_kind

    if error_kind(error_text) != "MemoryError":
        return ""
    return (f"\n(the sandbox refuses any allocation beyond its {limits.address_space_bytes // 2**20} MB "
            f"address space; its memory limit is {limits.memory_mb} MB)")


def _with_stderr(text: str, result: SandboxResult) -> str:
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


def _status_feedback(status: str, job: GradeJob, function_name: str) -> str:
    limits = job.limits
    scenario_id = job.scenario.id
    return {
        "error": f"Your code raised an error (see above). Reproduce it with "
                 f"`secureml run {scenario_id} --mitigation {MITIGATION_NAME}`.",
        "timeout": f"Your mitigation ran longer than the {limits.timeout_s:g} s limit. "
                   "Look for an endless loop, or make it faster.",
        "memory": f"Your mitigation used more than the {limits.memory_mb} MB memory limit.",
        "invalid-result": f"{function_name} returned something the grader cannot use (see above); "
                          "the lab's README shows what it must return.",
        "no-result": f"Your code ended the process before {function_name} returned. "
                     "Return a result instead of exiting.",
        "infra-error": "The grader failed, not your code. Your instructor will grade it again.",
    }[status]


def _first_png(paths: Iterable[Path]) -> bytes | None:
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return data
    return None


# --------------------------------------------------------------------------- executors


Outcome = GradeRow | BaseException


class Executor(Protocol):
    """Runs `grade_submission` over jobs. A Ray or Dask executor implements this same method.

    workers: how many jobs run at once (for the progress display).
    map_unordered yields (job, row) as each job finishes, or (job, exception) when the
    executor itself failed to run it (a worker process died); the caller records both.
    """

    workers: int

    def map_unordered(self, fn: Callable[[GradeJob], GradeRow],
                      jobs: Sequence[GradeJob]) -> Iterator[tuple[GradeJob, Outcome]]: ...


class SerialExecutor:
    """One job after the other, in this process."""

    workers = 1

    def map_unordered(self, fn, jobs):
        for job in jobs:
            try:
                yield job, fn(job)
            except Exception as error:  # noqa: BLE001 - reported as an infra-error row
                yield job, error


def _pool_worker_start(threads: int) -> None:
    """Runs first in each pool process: its thread budget, and death with the grader."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see _thread_env
    if sys.platform.startswith("linux"):
        # PR_SET_PDEATHSIG: a grader killed with -9 takes its workers with it, and they
        # take their sandboxes (bwrap --die-with-parent).
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        if os.getppid() == 1:  # the grader died before we got here
            os._exit(1)


class LocalPool:
    """`jobs` worker processes on this machine (concurrent.futures.ProcessPoolExecutor).

    Workers are spawned, not forked: the grader has torch loaded, and forking a process
    whose OpenMP pool is running can deadlock the child. Each worker prepares the stage
    once (from the cache) and keeps it for the jobs that follow.
    """

    def __init__(self, jobs: int, threads_per_worker: int = 1) -> None:
        if jobs < 1:
            raise ValueError(f"LocalPool needs at least one worker, got {jobs}.")
        self.workers = jobs
        self.threads_per_worker = max(1, threads_per_worker)

    def map_unordered(self, fn, jobs):
        import concurrent.futures
        import multiprocessing

        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_pool_worker_start,
            initargs=(self.threads_per_worker,),
        )
        finished = False
        try:
            futures = {pool.submit(fn, job): job for job in jobs}
            for future in concurrent.futures.as_completed(futures):
                job = futures[future]
                try:
                    yield job, future.result()
                except Exception as error:  # noqa: BLE001 - e.g. BrokenProcessPool
                    yield job, error
            finished = True
        finally:
            if finished:
                pool.shutdown(wait=True)
            else:
                # Interrupted (Ctrl-C, or the caller stopped): do not wait for running
                # jobs; their rows were never recorded, so a re-run grades them.
                processes = list(getattr(pool, "_processes", {}).values())
                pool.shutdown(wait=False, cancel_futures=True)
                for process in processes:
                    with contextlib.suppress(Exception):
                        process.kill()


def executor_for(jobs: int) -> Executor:
    """SerialExecutor for one job at a time, else a LocalPool sharing the cores evenly."""
    if jobs <= 1:
        return SerialExecutor()
    return LocalPool(jobs, threads_per_worker=max(1, (os.cpu_count() or 1) // jobs))


# --------------------------------------------------------------------------- leftovers

def sweep_leftovers(work_dir: Path | None = None) -> list[Path]:
    """Remove what graders killed with -9 left behind: their run cgroups and their 0700
    scratch folders (training sets, copies of submissions, unpacked zips).

    Only folders of this user whose maker (pid and start time) is gone are removed; a
    grader running now keeps its own. Returns what was removed.
    """
    from secureml import isolation
    from secureml.cgroups import process_start_ticks, sweep_leftovers as sweep_cgroups

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
    from secureml import isolation

    plan = isolation.capabilities().cgroup_plan
    return f"{isolation_mode()} (limits: {plan.summary if plan else 'the supervisor'})"


# --------------------------------------------------------------------------- a workshop


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
    # an autograder bundle does. Off by default: the poisoning reference does not hold on
    # every variant yet (README, known gaps).
    automatic_variant: bool = False
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
        return dict(Counter(row.status for row in self.graded))

    @property
    def infra_errors(self) -> list[GradeRow]:
        return [row for row in self.graded if row.status == "infra-error"]


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


class RichGradeProgress:
    """One bar on stderr: done / total, with running and failed counts."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bars = Progress(
            TextColumn("grading"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[state]}"), TimeElapsedColumn(),
            console=Console(stderr=True), transient=False,
        )
        self._task = None
        self._failed = 0
        self._done = 0

    def _state(self, running: int) -> str:
        failed = f"[red]{self._failed} failed[/red]" if self._failed else "0 failed"
        return f"done {self._done} · running {running} · {failed}"

    def start(self, total: int, workers: int) -> None:
        # Started here, not around the whole run: rich shows one live display at a time,
        # and the stage's own progress bars come first.
        self._bars.start()
        self._task = self._bars.add_task("grading", total=total, state=self._state(min(workers, total)))

    def stop(self) -> None:
        self._bars.stop()

    def finished(self, row: GradeRow, running: int) -> None:
        self._done += 1
        if row.status != "ok":
            self._failed += 1
        self._bars.update(self._task, advance=1, state=self._state(running))


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
                               env=_thread_env(1))
    from secureml.worker import CHECK_REPLY

    if result.outcome != "exited" or result.returncode != 0 or result.result != CHECK_REPLY:
        readable = ("check that the venv is readable by other users (chmod -R o+rX), "
                    if result.isolation == "bubblewrap-root" else "")
        raise GraderUnavailable(
            f"the grading worker does not start in the sandbox ({result.outcome}, "
            f"exit {result.returncode}): {result.detail or _with_stderr('', result).strip()}",
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

    hidden: the scenario with hidden overrides applied (see `scenario.apply_overrides`).
    executor: how jobs run; by default one chosen from `settings.jobs`.
    stage_progress: a `secureml.progress.Progress` for building the shared stage.
    """
    from secureml.cache import Cache
    from secureml.families.base import RunContext
    from secureml.progress import NO_PROGRESS

    started = time.monotonic()
    unsafe = resolve_isolation(settings.unsafe)
    swept = sweep_leftovers(settings.work_dir)
    cache_dir = Path(settings.cache_dir) if settings.cache_dir else Cache().root
    graded_scenario = hidden if hidden is not None else scenario
    variant = automatic_variant(graded_scenario, gradebook, settings)
    config_sha256 = graded_config_sha256(graded_scenario, variant)
    executor = executor or executor_for(settings.jobs)
    with tempfile.TemporaryDirectory(prefix=scratch_prefix("submissions"), dir=settings.work_dir) as unpack:
        found = discover_submissions(Path(submissions), Path(unpack))
        jobs = [
            GradeJob(scenario=scenario, hidden=hidden, variant=variant, submission=submission,
                     limits=settings.limits, cache_dir=cache_dir, data_root=settings.data_root,
                     unsafe=unsafe, threads=settings.child_threads,
                     pictures=settings.pictures, work_dir=settings.work_dir)
            for submission in found.submissions
        ]
        pending, skipped = [], []
        for job in jobs:
            already = gradebook.has(scenario.id, job.submission.trainee, job.submission.sha256,
                                    config_sha256=config_sha256)
            (skipped if already and not settings.regrade else pending).append(job)
        report = GradeReport(scenario.id, hidden is not None, variant is not None, _isolation_summary(unsafe),
                             [], [job.submission for job in skipped], list(found.notes))
        report.notes += [f"removed what a grader that died left behind: {path}" for path in swept]
        if pending:
            # Build (or load) the shared stage once here, so that workers only read the cache.
            stage_progress = stage_progress or NO_PROGRESS
            ctx = RunContext(cache=Cache(cache_dir), data_root=settings.data_root,
                             progress=stage_progress)
            with stage_progress:
                _STAGES.get(graded_scenario, ctx)
                if variant is not None:
                    _STAGES.get(variant, ctx)
            preflight(graded_scenario.family, limits=settings.limits, unsafe=unsafe,
                      work_dir=settings.work_dir)
            progress.start(len(pending), executor.workers)
            try:
                outstanding = len(pending)
                for job, outcome in executor.map_unordered(grade_submission, pending):
                    row = outcome if isinstance(outcome, GradeRow) else _executor_failure_row(job, outcome)
                    gradebook.record(row)  # at once: a crash from here on loses nothing graded
                    report.graded.append(row)
                    outstanding -= 1
                    progress.finished(row, min(executor.workers, outstanding))
            finally:
                progress.stop()
    report.wall_s = time.monotonic() - started
    return report


def automatic_variant(graded: ScenarioBase, gradebook: Gradebook, settings: GradeSettings) -> ScenarioBase | None:
    """The variant every submission meets besides `graded`, or None when switched off."""
    if not settings.automatic_variant and settings.variant_seed is None:
        return None
    from secureml.variants import draw_variant

    seed = settings.variant_seed if settings.variant_seed is not None else gradebook.variant_seed(graded.id)
    return draw_variant(graded, seed)


def _executor_failure_row(job: GradeJob, error: BaseException) -> GradeRow:
    return _row(job, _Clock(), "infra-error",
                error=f"the grading worker failed: {type(error).__name__}: {error}",
                feedback=["The grader failed, not your code. Your instructor will grade it again."])


# --------------------------------------------------------------------------- reports


_NOTE_CHARS = 48  # fits the table in an 80-column terminal


def rows_table(rows: Iterable[GradeRow], title: str, *, show_graded_at: bool = False):
    """A rich table, one line per row: trainee, status, score, time and the first note.

    Names, errors and notes come from trainees: every cell is a rich Text (never parsed as
    markup) with control characters made visible (`report.safe_text`).
    """
    from rich.table import Table
    from rich.text import Text

    from secureml.report import safe_cell, safe_text

    rows = sorted(rows, key=lambda r: (r.scenario_id, r.trainee))
    table = Table(title=safe_text(title), title_justify="left")
    # Every column but the note keeps its full width; the note is cut to what is left.
    table.add_column("trainee", no_wrap=True,
                     min_width=max([7, *(len(safe_text(r.trainee)) for r in rows)]))
    table.add_column("status", no_wrap=True,
                     min_width=max([6, *(len(r.status) + 9 * r.hidden_variant for r in rows)]))
    table.add_column("score", justify="right", no_wrap=True, min_width=5)
    table.add_column("time (s)", justify="right", no_wrap=True, min_width=8)
    if show_graded_at:
        table.add_column("graded at (UTC)", no_wrap=True, min_width=19)
    table.add_column("note", no_wrap=True, overflow="ellipsis", max_width=_NOTE_CHARS)
    for row in rows:
        status = row.status + (" (hidden)" if row.hidden_variant else "")
        score = "" if row.score is None else f"{row.score:.1f}"
        note = (row.error or (row.feedback[0] if row.feedback else "")).strip().splitlines()
        if row.flags:
            # A flagged score (e.g. suspected gradient masking) is not final until a person looks.
            note = [f"needs review: {row.flags[0]}"]
        cells = [safe_cell(row.trainee), Text(status, style="" if row.status == "ok" else "red"),
                 score, f"{row.timings_s.get('total', 0.0):.1f}"]
        if show_graded_at:
            cells.append(row.graded_at[:19].replace("T", " "))
        text = safe_text(note[0]) if note else ""  # cut after escaping: what the eye sees
        cells.append(Text(text if len(text) <= _NOTE_CHARS else text[: _NOTE_CHARS - 1] + "…"))
        table.add_row(*cells)
    return table


def report_json(report: GradeReport, *, gradebook_path: Path | None = None,
                exported: Sequence[Path] = ()) -> dict[str, Any]:
    import json

    from secureml.gradebook import render_json

    return {
        "scenario": report.scenario_id,
        "hidden_variant": report.hidden_variant,
        "automatic_variant": report.automatic_variant,
        "isolation": report.isolation,
        "gradebook": str(gradebook_path) if gradebook_path else None,
        "counts": report.counts(),
        "graded": json.loads(render_json(report.graded)),
        "skipped": [submission.trainee for submission in report.skipped],
        "notes": list(report.notes),
        "exported": [str(path) for path in exported],
        "wall_s": round(report.wall_s, 3),
    }


__all__ = [
    "Discovery", "Executor", "GradeJob", "GradeProgress", "GradeReport", "GradeSettings",
    "GraderUnavailable", "GradingIncomplete", "IsolationUnavailable", "LocalPool",
    "RichGradeProgress", "SerialExecutor", "Submission", "SubmissionsError",
    "automatic_variant", "discover_submissions", "executor_for", "grade_submission", "grade_workshop",
    "graded_config_sha256", "preflight",
    "report_json", "resolve_isolation", "rows_table",
]

