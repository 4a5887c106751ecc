"""How grading jobs run: one after the other, or in a pool of worker processes.

An `Executor` fans `grade_submission` out over jobs: `SerialExecutor`, `LocalPool`
(--jobs N), or later an engine such as Ray or Dask implementing the same one method.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Generator, Sequence
from typing import Protocol

from secureml.gradebook import GradeRow
from secureml.grading.job import GradeJob

Outcome = GradeRow | BaseException


class Executor(Protocol):
    """Runs `grade_submission` over jobs. A Ray or Dask executor implements this same method.

    workers: how many jobs run at once (for the progress display).
    map_unordered yields (job, row) as each job finishes, or (job, exception) when the
    executor itself failed to run it (a worker process died); the caller records both.
    """

    workers: int

    def map_unordered(self, fn: Callable[[GradeJob], GradeRow],
                      jobs: Sequence[GradeJob]) -> Generator[tuple[GradeJob, Outcome], None, None]: ...


class SerialExecutor:
    """One job after the other, in this process."""

    workers = 1

    def map_unordered(self, fn, jobs):
        for job in jobs:
            try:
                yield job, fn(job)
            except Exception as error:  # reported as an infra-error row
                yield job, error


def _pool_worker_start(threads: int) -> None:
    """Runs first in each pool process: its thread budget, and death with the grader.

    Ctrl-C reaches the whole process group; the workers ignore it and the grader kills them.
    A worker interrupted mid-job would send its KeyboardInterrupt back as a result to the
    pool's manager thread while the grader shuts the pool down.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see job.thread_env
    if sys.platform.startswith("linux"):
        # PR_SET_PDEATHSIG: a grader killed with -9 takes its workers with it, and they
        # take their sandboxes (bwrap --die-with-parent).
        try:
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
                except Exception as error:  # e.g. BrokenProcessPool
                    yield job, error
            finished = True
        finally:
            if finished:
                pool.shutdown(wait=True)
            else:
                # Interrupted (Ctrl-C, or the caller stopped): do not wait for running
                # jobs; their rows were never recorded, so a re-run grades them.
                # The workers die first: the pool's manager thread then sees a broken pool
                # and ends, so nothing at interpreter exit waits for a running job.
                for process in list(getattr(pool, "_processes", {}).values()):
                    with contextlib.suppress(Exception):
                        process.kill()
                pool.shutdown(wait=False, cancel_futures=True)


def executor_for(jobs: int) -> Executor:
    """SerialExecutor for one job at a time, else a LocalPool sharing the cores evenly."""
    if jobs <= 1:
        return SerialExecutor()
    return LocalPool(jobs, threads_per_worker=max(1, (os.cpu_count() or 1) // jobs))
