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
    """The processes of one sandbox, read through a descriptor of the /proc that shows them.

    The descriptor pins that /proc instance: once the sandbox's pid namespace is gone it
    lists nothing, so a pid the host hands out again can never be read or signalled by us.
    Open one with `of_namespace` or `of_session`, and `close` it.

    main_pid: the trainee's main process, as numbered in that /proc.
    session: only processes of this session id count (unsafe mode, host /proc).
    reaper: bwrap's pid 1 in the sandbox's namespace, which `pause` leaves running: it
        reaps the trainee's processes, and the run ends when it sees the main one exit.
    """

    def __init__(self, proc_fd: int, main_pid: int, session: int | None = None,
                 reaper: int | None = None) -> None:
        if session is None and _shows_us(proc_fd):
            raise ValueError("refusing to treat our own /proc as a sandbox's: every process of "
                             "this machine would be its process")
        self.proc_fd = proc_fd
        self.main_pid = main_pid
        self.session = session
        self.reaper = reaper

    @classmethod
    def of_namespace(cls, init_pid: int, parent_pid: int, namespace_inode: int,
                     main_pid: int) -> ProcessTree | None:
        """The processes of the pid namespace `namespace_inode`, whose pid 1 is host process
        `init_pid`, a child of `parent_pid` (bwrap's monitor). None until that is proven.

        bwrap reports its child's pid *before* the child switches to the sandbox's root;
        until it has, /proc/<pid>/root/proc is the host's own /proc, and signalling "every
        process" there would hit the whole machine. So the /proc opened here must show a
        pid 1 that lives in the sandbox's pid namespace, which is not ours; else None, and
        the caller tries again later.
        """
        if namespace_inode == _own_pid_namespace():
            return None
        try:
            pidfd = os.pidfd_open(init_pid)
        except (AttributeError, OSError):
            return None
        proc_fd = None
        try:
            # The pidfd names one process for good: if it is bwrap's child in that namespace,
            # and still alive once its /proc is open, that /proc is the sandbox's.
            if _parent_of(init_pid) != parent_pid or os.stat(f"/proc/{init_pid}/ns/pid").st_ino != namespace_inode:
                return None
            proc_fd = os.open(f"/proc/{init_pid}/root/proc", os.O_RDONLY | os.O_DIRECTORY)
            if os.stat("1/ns/pid", dir_fd=proc_fd).st_ino != namespace_inode:
                return None  # not switched yet: this is still the host's /proc
            signal.pidfd_send_signal(pidfd, 0)
            tree, proc_fd = cls(proc_fd, main_pid, reaper=1), None
            return tree
        except (OSError, ValueError):
            return None
        finally:
            os.close(pidfd)
            if proc_fd is not None:
                os.close(proc_fd)

    @classmethod
    def of_session(cls, session: int) -> ProcessTree:
        """The host's processes of one session (unsafe mode: no pid namespace). Only
        processes whose session id is `session` are ever read or signalled."""
        return cls(os.open("/proc", os.O_RDONLY | os.O_DIRECTORY), session, session=session)

    def close(self) -> None:
        try:
            os.close(self.proc_fd)
        except OSError:
            pass

    def pids(self) -> list[int]:
        try:
            entries = os.listdir(self.proc_fd)
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
            fields = self._read(f"{self.main_pid}/schedstat").split()
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

        Through a /proc directory descriptor (pidfd_send_signal): it names the process in
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
                handle = os.open(str(pid), os.O_RDONLY | os.O_DIRECTORY, dir_fd=self.proc_fd)
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

    def _read(self, relative: str) -> str:
        handle = os.open(relative, os.O_RDONLY, dir_fd=self.proc_fd)
        with os.fdopen(handle, "rb") as stream:
            return stream.read().decode(errors="replace")

    def _stat(self, pid: int) -> list[str] | None:
        try:
            data = self._read(f"{pid}/stat")
        except OSError:
            return None
        # The command name sits in parentheses and may hold spaces or ')': split after the last.
        fields = data[data.rfind(")") + 2:].split()
        return fields if len(fields) > 21 else None


def _shows_us(proc_fd: int) -> bool:
    """Whether this /proc lists our own process (i.e. it is our pid namespace's, or an
    ancestor's): a sandbox's /proc never does."""
    try:
        os.stat(str(os.getpid()), dir_fd=proc_fd)
    except OSError:
        return False
    return os.stat(f"{os.getpid()}/ns/pid", dir_fd=proc_fd).st_ino == _own_pid_namespace()


def _own_pid_namespace() -> int:
    return os.stat("/proc/self/ns/pid").st_ino


def _parent_of(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), None)
