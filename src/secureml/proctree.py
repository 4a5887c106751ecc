"""The supervisor's view of one sandbox's processes: how many, how much memory and CPU.

Where no cgroup is writable (a normal user on a cgroup-v1 machine, or outside a delegated
v2 subtree), the sandbox's limits are rlimits plus this watcher. It reads the `/proc`
that bubblewrap mounted for the sandbox's own pid namespace, through
`/proc/<sandbox pid 1>/root/proc`: that view lists exactly the sandbox's processes,
whatever they do (fork, setsid, double-fork), and costs one small file per process. In
unsafe mode, without a pid namespace, it scans the host's `/proc` for the run's session.

What it measures, per tick:
* tasks: threads of every process, as the kernel counts them against RLIMIT_NPROC;
* memory: the sum of every process's resident set (`/proc/PID/stat` rss), shared pages
  counted once per process, so it errs on the side of the limit;
* CPU: user + system time of every live process, plus what the dead ones left in their
  reaper's `cutime`/`cstime`;
* runnable: how many of its processes are running or ready to run right now;
* waiting: the run-queue delay of the trainee's main thread (`/proc/PID/schedstat`), time
  it was ready to run but the CPU was busy with something else.

Memory that no process maps (an unmapped memfd or SysV segment, pipe buffers) is invisible
to it; the sandbox's seccomp filter refuses memfd_create and shmget in this mode, and
RLIMIT_FSIZE and the capped tmpfs bound files. A cgroup remains the hard limit.

Only the standard library is used: the grader imports this before torch.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcessTree", "TreeSample"]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class TreeSample:
    processes: int
    tasks: int  # threads, summed over processes
    runnable: int  # processes running or waiting for a CPU right now (state R)
    rss_bytes: int
    cpu_s: float


class ProcessTree:
    """The processes of one sandbox.

    proc_dir: a /proc that shows the sandbox's processes (its own pid namespace's), or the
        host's /proc together with `session`.
    main_pid: the trainee's main process, as numbered in `proc_dir`.
    session: only processes of this session id count (unsafe mode, host /proc).
    reaper: bwrap's pid 1 in the sandbox's namespace, which `pause` leaves running: it
        reaps the trainee's processes, and the run ends when it sees the main one exit.
    """

    def __init__(self, proc_dir: Path, main_pid: int, session: int | None = None,
                 reaper: int | None = None) -> None:
        self.proc_dir = Path(proc_dir)
        self.main_pid = main_pid
        self.session = session
        self.reaper = reaper

    def pids(self) -> list[int]:
        try:
            entries = os.listdir(self.proc_dir)
        except OSError:
            return []
        return [int(entry) for entry in entries if entry.isdigit()]

    def sample(self) -> TreeSample:
        processes = tasks = runnable = rss_pages = ticks = 0
        for pid in self.pids():
            fields = self._stat(pid)
            if fields is None:
                continue
            if self.session is not None and int(fields[3]) != self.session:
                continue
            processes += 1
            runnable += fields[0] == "R"
            tasks += int(fields[17])
            rss_pages += max(0, int(fields[21]))
            # utime stime cutime cstime
            ticks += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        return TreeSample(processes, tasks, runnable, rss_pages * _PAGE_BYTES, ticks / _CLOCK_TICKS)

    def waited_s(self) -> float:
        """Run-queue delay of the main thread so far; 0.0 once it is gone."""
        try:
            fields = (self.proc_dir / str(self.main_pid) / "schedstat").read_text().split()
            return int(fields[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return 0.0

    def pause(self) -> int:
        """Stop every process but the reaper (SIGSTOP cannot be caught or ignored)."""
        return self.signal_all(signal.SIGSTOP, skip=frozenset({self.reaper} if self.reaper else ()))

    def resume(self) -> int:
        return self.signal_all(signal.SIGCONT)

    def signal_all(self, signum: int, *, skip: frozenset[int] = frozenset()) -> int:
        """Send `signum` to every process of the tree; return how many were signalled.

        Through a /proc directory descriptor (pidfd_send_signal): it names the process by
        its own /proc instance, so a pid numbered in the sandbox's namespace works from the
        host, and a pid reused meanwhile is never hit.
        """
        sent = 0
        for pid in self.pids():
            if pid in skip:
                continue
            if self.session is not None:
                fields = self._stat(pid)
                if fields is None or int(fields[3]) != self.session:
                    continue
            try:
                handle = os.open(self.proc_dir / str(pid), os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue
            try:
                signal.pidfd_send_signal(handle, signum)
                sent += 1
            except (OSError, AttributeError):
                pass
            finally:
                os.close(handle)
        return sent

    def _stat(self, pid: int) -> list[str] | None:
        try:
            with open(self.proc_dir / str(pid) / "stat", "rb") as handle:
                data = handle.read()
        except OSError:
            return None
        # The command name sits in parentheses and may hold spaces or ')': split after the last.
        closing = data.rfind(b")")
        fields = data[closing + 2:].split()
        return [field.decode() for field in fields] if len(fields) > 21 else None
