"""Run untrusted trainee code in isolation, with hard limits and a private result channel.

How a sandboxed run is put together (each piece answers a measured failure):

* bubblewrap, in one of two modes (`secureml.isolation` picks one):
  - as root, *without* a user namespace: launched by root with `--unshare-user`, bwrap maps
    the sandbox uid back to host root, and such a sandbox could read a root-only 0600 file
    (measured). Inside, `setpriv` drops to a fresh unused uid/gid before anything of the
    trainee runs: no supplementary groups, no capabilities (bounding set included),
    no-new-privs. Each run gets its own uid, so parallel sandboxes never share one and
    `RLIMIT_NPROC` (counted per uid) becomes a per-sandbox limit;
  - as a normal user, in an unprivileged user namespace: the sandbox uid is the user's
    own (never root), bwrap drops every capability and sets no-new-privs, and
    `--disable-userns` stops nested namespaces. `RLIMIT_NPROC`, set inside the namespace,
    counts that namespace's tasks alone (Linux 5.14+).
  Either way bwrap creates missing parents of a bind as 0700, so we create them 0755
  ourselves (`--perms 0755 --dir`), and the tmpfs root and /dev are remounted read-only
  (in a user namespace they would otherwise be the trainee's to fill, without a size cap).
* New pid, net, ipc and uts namespaces. When the sandbox's pid 1 dies the kernel kills
  every process in the namespace, so a double-forked daemon cannot outlive the run and
  hold our pipes open. `--die-with-parent` ties pid 1 to bwrap, and bwrap to us.
* Limits from per-run cgroups where some are writable (`secureml.cgroups`: v1 or v2,
  memory, pids and a CPU weight and quota sized to the run's thread budget), else from
  rlimits plus the supervisor (`secureml.proctree`): the sum of the sandbox's resident
  memory, its thread count, and its CPU time against its share. `import torch` needs
  about 3.2 GiB of address space, so `RLIMIT_AS` is only a generous backstop.
* A tiny launcher (stdlib Python, `-S -I`) joins the cgroups and sets the rlimits before
  it execs bwrap, so that nothing of the run ever exists outside the limits. We do not use
  `preexec_fn` because it can deadlock when the caller has threads.
* A seccomp filter refuses new namespaces, mounts, keyrings, bpf, perf, userfaultfd and
  io_uring: without it the sandbox uid could still make itself "root" of a fresh user
  namespace, which cannot undo our binds but opens the kernel surface exploits need.
* A status pipe tells the parent whether the trainee's command was reached: a shell inside
  the sandbox writes one byte and closes the pipe just before it execs the command. No
  byte means the sandbox itself failed to start (`infra-error`), whatever the exit code.
* The outcome comes from what the supervisor knows, never from the child's exit code or
  its output: the clock it keeps (wall time minus the time the trainee's main thread
  waited for a CPU that others held, so a busy neighbour costs nobody a timeout), the CPU
  time it measured, the OOM counter of the cgroup, or the kill it sent itself.

Only the standard library is imported here: the grader imports this module before torch.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from secureml import isolation
from secureml.cgroups import CgroupPlan, RunCgroup, process_start_ticks
from secureml.isolation import fresh_uid, setpriv_args, system_bind_args
from secureml.paths import PACKAGED_CONTENT
from secureml.proctree import ProcessTree, TreeSample
from secureml.seccomp import seccomp_program

__all__ = [
    "RESULT_FD_ENV",
    "Limits",
    "SandboxInputError",
    "SandboxResult",
    "SandboxUnavailable",
    "bubblewrap_available",
    "isolation_mode",
    "isolation_problem",
    "run_sandboxed",
    "scratch_prefix",
]

# The child learns the number of the result channel's write end from this variable.
RESULT_FD_ENV = "SECUREML_RESULT_FD"

_MIB = 1024 * 1024
_GIB = 1024 * _MIB

# Fixed descriptor numbers inside the child. 3 is the first free one after stdio; the
# status fd must be a single digit because dash only parses one-digit redirections.
_CHILD_RESULT_FD = 3
_CHILD_STATUS_FD = 4
_BWRAP_SECCOMP_FD = 5  # read by bwrap itself, before the command runs
_BWRAP_INFO_FD = 6  # bwrap writes the host pid of the sandbox's pid 1 here, then closes it

# `import torch` needs about 3.2 GiB of RLIMIT_AS; just below that it segfaults, throws
# bad_alloc or hangs in an mmap retry loop (ART-FACTS, sandbox fact 4). 6 GiB leaves room.
_ADDRESS_SPACE_BACKSTOP_MIN_BYTES = 6 * _GIB

# The supervisor enforces the CPU-time budget itself, every tick. RLIMIT_CPU is a backstop
# per process this much above it (SIGXCPU), with SIGKILL this much later again.
_CPU_BACKSTOP_S = 1
_CPU_HARD_GRACE_S = 2

# bwrap's monitor (outside the pid namespace) and its pid-1 reaper sit in the pids cgroup
# too; they should not eat into the trainee's `max_processes`.
_BWRAP_OWN_TASKS = 2

# The trainee's command is the first process bwrap's pid 1 starts in the new namespace.
_MAIN_PID_IN_NAMESPACE = 2

# How often the supervisor looks at the sandbox. Reading a few /proc files per process
# costs ~20 us each; at 10 Hz a one-process sandbox costs the grader well under 0.1% of a
# core. A process that allocates faster than the RSS watch can look is stopped by the
# address-space backstop first.
_TICK_S = 0.1
# The wall clock may run this many times the timeout while the run waits for a CPU others
# hold (its own time stays under the limit); beyond it the machine is too busy to grade.
_WALL_CAP_FACTOR = 3.0
# A CPU share throttled by the supervisor may run ahead of its quota by this many seconds
# of CPU before it is stopped (the tick, plus slack for the first imports).
_THROTTLE_BURST_S = 0.3

# How long we keep draining pipes once the main process is gone and leftovers are killed.
# In bwrap mode the pipes close at once; this only matters for unsafe mode without cgroups.
_DRAIN_GRACE_S = 1.0
# Checking every file of inputs_dir for world-readability is cheap for the few files a
# submission needs; stop looking after this many entries so a huge tree costs nothing.
_READABILITY_CHECK_MAX_ENTRIES = 10_000


_SYSTEM_PATH = isolation.SYSTEM_PATH


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run."""

    # The run's own time: wall clock minus the time its main thread waited for a CPU that
    # other processes held. The wall clock itself is capped at _WALL_CAP_FACTOR times this.
    timeout_s: float = 600.0
    cpu_s: float | None = None  # CPU-time budget of all its processes; None: cpus * timeout_s
    memory_mb: int = 4096  # cgroup or supervisor; RLIMIT_AS backstop = max(6 GiB, 2x)
    # pids cgroup, RLIMIT_NPROC, or the supervisor's count. The kernel counts threads here
    # too, so a multi-threaded library (OpenMP, torch) spends several per process.
    max_processes: int = 64
    max_file_mb: int = 256  # RLIMIT_FSIZE
    tmp_mb: int = 256  # private /tmp (and /dev/shm), each a tmpfs of this size
    max_output_bytes: int = 64 * 1024  # stdout and stderr, each: the tail is kept
    max_result_bytes: int = 256 * 1024 * 1024  # result channel cap
    # CPU share and quota, in CPUs: the run's thread budget. Neighbours under --jobs N each
    # get theirs, however many processes one of them starts.
    cpus: float = 1.0

    def __post_init__(self) -> None:
        for name in ("timeout_s", "memory_mb", "max_processes", "max_file_mb", "tmp_mb",
                     "max_output_bytes", "max_result_bytes", "cpus"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"Limits.{name} must be positive, got {value!r}.")
        if self.cpu_s is not None and not self.cpu_s > 0:
            raise ValueError(f"Limits.cpu_s must be positive or None, got {self.cpu_s!r}.")

    @property
    def effective_cpu_s(self) -> float:
        return self.cpu_s if self.cpu_s is not None else self.cpus * self.timeout_s

    @property
    def max_wall_s(self) -> float:
        return _WALL_CAP_FACTOR * self.timeout_s

    @property
    def address_space_bytes(self) -> int:
        return max(_ADDRESS_SPACE_BACKSTOP_MIN_BYTES, 2 * self.memory_mb * _MIB)


@dataclass(frozen=True)
class SandboxResult:
    """What one sandboxed run did.

    outcome: what the supervisor knows. "timeout", "memory" and "killed" (over the process
        limit) are limits it enforced itself or saw the kernel enforce; "exited" and
        "signalled" are the child ending by itself (returncode says how, as the child or
        bwrap reported it, which the child can fake); "infra-error" is a sandbox that did
        not start, or a machine too busy to give the run its time.
    """

    outcome: str  # "exited" | "signalled" | "timeout" | "memory" | "killed" | "infra-error"
    # Exit code, or minus the signal number. None when we killed it at the time limit or it
    # never started. Under bubblewrap an exit code of 129..192 reads as a signal, because
    # bwrap reports a death by signal N as exit status 128 + N.
    returncode: int | None
    stdout: str
    stderr: str
    output_truncated: bool  # stdout or stderr went over max_output_bytes: the tail is kept
    result: bytes | None  # everything written to the result channel; None if nothing
    result_oversized: bool  # the child wrote more than max_result_bytes (result is None)
    wall_s: float
    isolation: str  # "bubblewrap-root", "bubblewrap-user" or "unsafe-subprocess"
    detail: str = ""
    limits: str = ""  # which mechanism enforced the limits, e.g. "cgroup v1 (memory, pids, cpu)"
    cpu_s: float = 0.0  # CPU time of every process of the run, as measured
    # Time the main thread was ready to run but waited for a CPU that other processes held:
    # not charged against timeout_s.
    waited_s: float = 0.0


class SandboxUnavailable(Exception):
    """bubblewrap isolation cannot run on this machine, and unsafe mode was not allowed."""


class SandboxInputError(ValueError):
    """A path handed to the sandbox is missing, or the sandbox user could not read it."""


def isolation_mode() -> str | None:
    """The mode `run_sandboxed(..., unsafe=False)` uses here, or None when it cannot isolate."""
    return isolation.capabilities().mode


def bubblewrap_available() -> bool:
    """Whether `run_sandboxed(..., unsafe=False)` can isolate on this machine."""
    return isolation_mode() is not None


def isolation_problem() -> str | None:
    """Why `run_sandboxed(..., unsafe=False)` cannot isolate here, or None when it can."""
    return isolation.capabilities().problem


def run_sandboxed(
    argv: list[str],
    *,
    inputs_dir: Path,
    limits: Limits,
    unsafe: bool = False,
    extra_readonly: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
) -> SandboxResult:
    """Run `argv` as untrusted code and return what happened.

    argv: the command; argv[0] is normally `sys.executable`. The paths of this Python
        installation (every directory on a fresh interpreter's sys.path) and of the
        secureml package are visible read-only inside.
    inputs_dir: bound read-only at the same path. As root the child runs as an unused uid,
        so the directory and its files must then be world-readable (o+rX).
    unsafe: run as a plain subprocess of the current user (rlimits, the supervisor and,
        when possible, cgroups, but no namespaces). Never isolation for untrusted code.
    extra_readonly: more host paths bound read-only at the same place.
    env: added to the child's clean environment (PATH, HOME=/tmp, LANG, ...).

    The child finds the write end of the result channel in the fd named by the
    SECUREML_RESULT_FD variable; it writes its payload there and closes it. Output is
    drained while the child runs, so no pipe ever fills up and blocks it.
    Raises SandboxUnavailable when bubblewrap cannot be used and `unsafe` is False, and
    SandboxInputError when a path or the command cannot be used.
    """
    argv = [os.fspath(arg) for arg in argv]
    if not argv:
        raise ValueError("run_sandboxed needs a command; argv is empty.")
    inputs_dir = Path(os.path.abspath(inputs_dir))
    extra_paths = [Path(os.path.abspath(path)) for path in extra_readonly]
    for path in (inputs_dir, *extra_paths):
        if path == Path("/"):
            raise SandboxInputError("Binding / into the sandbox would expose the whole host; "
                                    "pass the directory the child needs instead.")
        if not path.exists():
            raise SandboxInputError(
                f"{path} does not exist. Create it before starting the sandbox, or leave it out."
            )
    found = isolation.capabilities()
    mode = isolation.UNSAFE if unsafe else found.mode
    if mode is None:
        raise SandboxUnavailable(
            f"Cannot isolate trainee code: {found.problem}. Install bubblewrap "
            f"({isolation.INSTALL_BUBBLEWRAP}) or see `secureml doctor`; "
            "--unsafe runs it unisolated."
        )
    if mode == isolation.ROOT:
        _check_world_readable(inputs_dir, recursive=True)
        for path in extra_paths:
            _check_world_readable(path, recursive=False)
    # A missing command is the caller's mistake; catching it here keeps exec failures
    # inside the sandbox meaningful (infra-error) and the modes consistent.
    program = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=_SYSTEM_PATH)
    if program is None or not os.path.isfile(program) or not os.access(program, os.X_OK):
        raise SandboxInputError(
            f"{argv[0]} is not an executable file. Pass an absolute path such as sys.executable."
        )
    if mode != isolation.UNSAFE:
        visible = [Path("/usr"), *python_runtime_paths(), inputs_dir, *extra_paths]
        real_program = Path(os.path.realpath(program))
        if not any(real_program.is_relative_to(root) for root in visible):
            raise SandboxInputError(
                f"{argv[0]} lies outside everything the sandbox can see. Use sys.executable, "
                "or add its directory to extra_readonly."
            )
    return _Run(argv, inputs_dir, extra_paths, limits, mode, found, env or {}).execute()


# --------------------------------------------------------------------------------------
# Scratch folders

# Scratch folders are named secureml-<kind>-<pid>-<start ticks>-<random>: the process that
# made them and when it started, so that a later grader can tell whether its maker is alive
# (`secureml.grading.workshop.sweep_leftovers`). They hold training sets and copies of submissions.
_SCRATCH_KINDS = ("grade", "preflight", "submissions", "unsafe")
SCRATCH_NAME = re.compile(rf"^secureml-(?:{'|'.join(_SCRATCH_KINDS)})-(\d+)-(\d+)-")


def scratch_prefix(kind: str) -> str:
    """The name prefix of a scratch folder this process makes."""
    if kind not in _SCRATCH_KINDS:
        raise ValueError(f"unknown scratch folder kind {kind!r}; use one of {_SCRATCH_KINDS}")
    return f"secureml-{kind}-{os.getpid()}-{process_start_ticks(os.getpid()) or 0}-"


_RUNTIME_PATHS: list[Path] | None = None


def python_runtime_paths() -> list[Path]:
    """Host directories the interpreter and the secureml package are loaded from.

    Discovered, not hard-coded: CI runs a clean clone at an unknown path, the venv's
    interpreter is a symlink into another installation (pyenv, or /usr), and a venv may
    read another one's packages through a `.pth` file. So every directory on the sys.path
    of a *fresh* interpreter (what the child will have) is included; the caller's own
    additions (pytest's test folders, the current directory) are not.
    """
    global _RUNTIME_PATHS
    if _RUNTIME_PATHS is None:
        package_root = Path(__file__).resolve().parent.parent  # holds secureml/
        candidates = {
            sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
            os.path.dirname(sys.executable), str(package_root),
            os.path.dirname(os.path.realpath(sys.executable)),
            *_fresh_sys_path(),
        }
        paths = set()
        for candidate in candidates:
            if candidate and os.path.isdir(candidate):
                paths.add(os.path.abspath(candidate))
                paths.add(os.path.realpath(candidate))
        _RUNTIME_PATHS = sorted(Path(path) for path in paths if path != "/")
    return list(_RUNTIME_PATHS)


def _fresh_sys_path() -> list[str]:
    """sys.path of this interpreter started afresh, in the child's clean environment."""
    probe = "import json, sys; print(json.dumps([p for p in sys.path if p]))"
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              timeout=30, env={"PATH": _SYSTEM_PATH}, cwd="/")
        return [path for path in json.loads(done.stdout) if isinstance(path, str)]
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return []


def _hide_packaged_content() -> list[str]:
    """bwrap arguments laying an empty tmpfs over the content of an installed wheel.

    The package is visible inside (the child imports it), and a wheel carries the bundled
    datasets under secureml/_content: with the pristine mnist-5k a submission could spot
    every poisoned sample, or train on the test images. A checkout keeps them outside
    the package, where the sandbox never sees them.
    """
    content = Path(__file__).parent / PACKAGED_CONTENT
    if not content.is_dir():
        return []
    return [arg for path in sorted({os.path.abspath(content), os.path.realpath(content)})
            for arg in ("--tmpfs", path)]


def _readonly_binds(paths: Sequence[Path]) -> list[str]:
    """bwrap arguments binding `paths` read-only at the same place.

    Parents come before children so that no bind hides a later one, and a path already
    inside another bound path (or inside /usr) is not bound twice.
    """
    bound: list[str] = ["/usr"]
    # Mount points made before these binds; their modes must stay as they are (/tmp 1777).
    made: set[str] = {"/", "/tmp", "/dev", "/dev/shm", "/proc", "/usr", "/etc"}
    args: list[str] = []
    for path in sorted({str(path) for path in paths}, key=lambda p: (p.count("/"), p)):
        if any(path == done or path.startswith(done.rstrip("/") + "/") for done in bound):
            continue
        bound.append(path)
        # bwrap 0.8 creates missing parents as 0700 dirs (whatever the umask), which the
        # sandbox uid could not traverse: create them 0755 first.
        for parent in reversed(Path(path).parents):
            if str(parent) not in made:
                made.add(str(parent))
                args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", path, path]
    return args


def _check_world_readable(path: Path, *, recursive: bool) -> None:
    """Raise SandboxInputError unless the sandbox's unused uid can read `path`."""
    entries = 0
    walk = os.walk(path) if recursive and path.is_dir() else [(str(path), [], [])]
    for directory, subdirs, files in walk:
        for name in [None, *subdirs, *files]:
            entries += 1
            if entries > _READABILITY_CHECK_MAX_ENTRIES:
                return
            full = directory if name is None else os.path.join(directory, name)
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode):
                continue
            needed = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
            if mode & needed != needed:
                raise SandboxInputError(
                    f"{full} (mode {stat.S_IMODE(mode):04o}) is not readable by the sandbox, "
                    f"which runs as an unused uid. Make it world-readable (chmod -R o+rX)."
                )


def _count_tasks_of_uid(uid: int) -> int:
    """Threads the kernel counts against RLIMIT_NPROC for `uid` right now."""
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path("/proc", entry, "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("Uid", "-1 0").split()[0]) == uid:
            count += int(fields.get("Threads", "1"))
    return count


# --------------------------------------------------------------------------------------
# cgroups: one plan per process, prepared once


_PREPARED_PLANS: dict[int, CgroupPlan] = {}


def _cgroup_plan(found: isolation.Capabilities) -> tuple[CgroupPlan | None, str]:
    """This process's cgroup plan, prepared (v2: leaf, subtree controllers), or a reason."""
    plan = found.cgroup_plan
    if plan is None:
        return None, "; ".join(found.cgroup_reasons)
    key = os.getpid()  # a forked or spawned worker prepares its own
    if _PREPARED_PLANS.get(key) is not plan:
        try:
            plan.prepare()
        except OSError as exc:
            return None, f"cannot prepare {plan.describe()} ({exc.strerror or exc})"
        _PREPARED_PLANS[key] = plan
    return plan, ""


# --------------------------------------------------------------------------------------
# The launcher: joins the cgroups, sets rlimits, places the fds, then execs.

_LAUNCHER = r"""
import fcntl, json, os, resource, sys
spec = json.loads(sys.argv[1])
moved = [(fcntl.fcntl(src, fcntl.F_DUPFD_CLOEXEC, 10), dst, keep) for src, dst, keep in spec["fds"]]
for src, _, _ in spec["fds"]:
    os.close(src)
for high, dst, keep in moved:
    os.dup2(high, dst, inheritable=keep)
    os.close(high)
status_fd = spec["status_fd"]
try:
    for procs in spec["cgroup_procs"]:
        with open(procs, "w") as handle:
            handle.write(str(os.getpid()))
    for name, soft, hard in spec["rlimits"]:
        resource.setrlimit(getattr(resource, name), (soft, hard))
    if spec["report_start"]:
        os.write(status_fd, b".")
    os.execvpe(spec["argv"][0], spec["argv"], spec["env"])
except OSError as exc:
    os.write(status_fd, ("!" + f"{exc.filename or spec['argv'][0]}: {exc.strerror}").encode())
    os._exit(127)
"""

# Inside the sandbox, after setpriv: report that the trainee's command is being reached,
# close the status pipe so the trainee cannot write to it, then become the command.
_START_SCRIPT = f'printf . >&{_CHILD_STATUS_FD} && exec {_CHILD_STATUS_FD}>&- && exec "$@"'


class _TailBuffer:
    """Keeps the last `cap` bytes of a stream."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.truncated = False

    def feed(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self.cap:
            del self.data[: len(self.data) - self.cap]
            self.truncated = True

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------------------
# The supervisor: the clock, the CPU budget and share, memory and processes


class _Supervisor:
    """Watches one run every tick, kills it at a limit, and remembers why.

    group: the run's cgroup, if any; `supervised` names the limits it does not cover,
        which the supervisor enforces from the process tree instead.
    """

    def __init__(self, limits: Limits, group: RunCgroup | None, supervised: frozenset[str],
                 extra_tasks: int, start: float) -> None:
        self.limits = limits
        self.group = group
        self.supervised = supervised
        self.extra_tasks = extra_tasks
        self.start = start
        self.tree: ProcessTree | None = None
        self.verdict: str | None = None  # "timeout" | "memory" | "killed" | "infra-error"
        self.reason = ""
        self.cpu_s = 0.0
        self.main_waited_s = 0.0  # the main thread's run-queue delay, as last read
        self.forgiven_s = 0.0  # the part of it that others caused: not charged to the run
        self.stopped_until: float | None = None  # the CPU throttle holds the run until then

    def watch(self, tree: ProcessTree | None) -> None:
        self.tree = tree

    def _decide(self, verdict: str, reason: str) -> None:
        if self.verdict is None:
            self.verdict, self.reason = verdict, reason

    @property
    def cpu_source(self) -> str:
        if self.group is not None and self.group.cpu_usage_s() is not None:
            return f"measured by its cgroup v{self.group.version}"
        return "measured by the supervisor"

    def measure(self) -> TreeSample | None:
        """CPU time and forgiven waiting so far, and the tree's sample.

        Waiting is forgiven only while the run had no more runnable processes than its CPU
        share: then the CPU was busy with someone else's work. A run that keeps more
        processes busy than its share waits behind itself, and that is its own time.
        """
        measured = self.group.cpu_usage_s() if self.group is not None else None
        sample = None
        if self.tree is not None:
            sample = self.tree.sample()
            if measured is None:
                measured = sample.cpu_s
            waited = self.tree.waited_s()
            if waited > self.main_waited_s:
                if sample.runnable <= self.limits.cpus:
                    self.forgiven_s += waited - self.main_waited_s
                self.main_waited_s = waited
        if measured is not None:
            self.cpu_s = max(self.cpu_s, measured)
        return sample

    def tick(self, now: float) -> bool:
        """Measure, enforce; True when the run must be killed now."""
        limits = self.limits
        sample = self.measure()
        wall = now - self.start
        if wall - self.forgiven_s >= limits.timeout_s:
            self._decide("timeout", f"killed by the supervisor after {limits.timeout_s:g} s of its "
                                    f"own time (wall clock {wall:.1f} s, of which "
                                    f"{self.forgiven_s:.1f} s waiting for a CPU others held)")
            return True
        if self.cpu_s >= limits.effective_cpu_s:
            self._decide("timeout", f"killed by the supervisor at its CPU-time budget of "
                                    f"{limits.effective_cpu_s:g} s ({self.cpu_source})")
            return True
        if wall >= limits.max_wall_s:
            # Its own time is still under the limit: the machine could not give it its time.
            self._decide("infra-error", f"the machine was too busy: {wall:.0f} s of wall clock, "
                                        f"{self.forgiven_s:.0f} s of them waiting for a CPU "
                                        "others held; grade again with fewer --jobs")
            return True
        if sample is None:
            return False
        if "memory" in self.supervised and sample.rss_bytes > limits.memory_mb * _MIB:
            self._decide("memory", f"killed by the supervisor: its processes held "
                                   f"{sample.rss_bytes // _MIB} MB resident, over the "
                                   f"{limits.memory_mb} MB limit")
            return True
        if "processes" in self.supervised and sample.tasks > limits.max_processes + self.extra_tasks:
            self._decide("killed", f"killed by the supervisor: {sample.tasks - self.extra_tasks} "
                                   f"threads, over the limit of {limits.max_processes}")
            return True
        if "cpu" in self.supervised:
            self._throttle(now, wall)
        return False

    def _throttle(self, now: float, wall: float) -> None:
        """Keep the run within its CPU share: stop every process for as long as it ran ahead.

        The cgroup CPU quota's equivalent without a cgroup (CFS bandwidth control in user
        space): a run whose processes used more than `cpus` CPUs on average, plus a small
        burst, is stopped (SIGSTOP, which no process can catch) until the wall clock has
        caught up with its CPU time. Time stopped is its own time, not waiting.
        """
        assert self.tree is not None
        allowed = self.limits.cpus * wall + _THROTTLE_BURST_S
        if self.stopped_until is not None:
            if now >= self.stopped_until:
                self.tree.resume()
                self.stopped_until = None
            else:
                self.tree.pause()  # anything forked or continued meanwhile
            return
        if self.cpu_s > allowed:
            self.tree.pause()
            self.stopped_until = now + (self.cpu_s - allowed + _THROTTLE_BURST_S) / self.limits.cpus


class _Run:
    """One sandboxed run: set up, wait and drain, classify, clean up."""

    def __init__(self, argv: list[str], inputs_dir: Path, extra_paths: list[Path], limits: Limits,
                 mode: str, found: isolation.Capabilities, env: Mapping[str, str]) -> None:
        self.argv = argv
        self.inputs_dir = inputs_dir
        self.extra_paths = extra_paths
        self.limits = limits
        self.mode = mode
        self.found = found
        self.unsafe = mode == isolation.UNSAFE
        self.user_env = dict(env)
        self.notes: list[str] = []
        self.mechanisms = ""

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    # ---- setup

    def _child_env(self, home: str) -> dict[str, str]:
        env = {
            "PATH": _SYSTEM_PATH,
            "HOME": home,
            "TMPDIR": home,
            "LANG": "C.UTF-8",
            # getpass.getuser() reads these first; the sandbox uid has no passwd entry.
            "USER": "sandbox",
            "LOGNAME": "sandbox",
            # The code is on read-only mounts; do not even try to write .pyc files.
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        for key, value in self.user_env.items():
            if not key or "=" in key or "\0" in key or "\0" in value:
                raise ValueError(f"Invalid environment variable for the sandbox: {key!r}.")
            env[key] = value
        env[RESULT_FD_ENV] = str(_CHILD_RESULT_FD)
        return env

    def _rlimits(self) -> list[tuple[str, int, int]]:
        limits = self.limits
        cpu_soft_s = max(1, math.ceil(limits.effective_cpu_s)) + _CPU_BACKSTOP_S
        rlimits = [
            ("RLIMIT_AS", limits.address_space_bytes, limits.address_space_bytes),
            ("RLIMIT_CPU", cpu_soft_s, cpu_soft_s + _CPU_HARD_GRACE_S),
            ("RLIMIT_FSIZE", limits.max_file_mb * _MIB, limits.max_file_mb * _MIB),
            ("RLIMIT_CORE", 0, 0),
        ]
        if self.mode == isolation.ROOT:
            # The uid is fresh, so the count is this sandbox's alone.
            rlimits.append(("RLIMIT_NPROC", limits.max_processes, limits.max_processes))
        elif os.geteuid() != 0 and not self._nproc_inside_namespace():
            # RLIMIT_NPROC counts every task of the user here, so leave room for the ones
            # they already run; the supervisor's count is the limit. Root ignores it.
            nproc = _count_tasks_of_uid(os.getuid()) + limits.max_processes
            rlimits.append(("RLIMIT_NPROC", nproc, nproc))
        return rlimits

    def _nproc_inside_namespace(self) -> bool:
        return (self.mode == isolation.USER and self.found.per_namespace_nproc
                and self.found.tools.prlimit is not None)

    def _start_script(self) -> str:
        if not self._nproc_inside_namespace():
            return _START_SCRIPT
        # Set inside the user namespace, RLIMIT_NPROC counts this sandbox's tasks alone;
        # set outside, it would count every process of the user (measured).
        nproc = self.limits.max_processes
        prlimit = self.found.tools.prlimit
        return _START_SCRIPT.replace('exec "$@"', f'exec {prlimit} --nproc={nproc}:{nproc} -- "$@"')

    def _bwrap_argv(self, child_env: Mapping[str, str], *, with_seccomp: bool) -> list[str]:
        tools = self.found.tools
        assert tools.bwrap and tools.shell
        tmp_bytes = str(self.limits.tmp_mb * _MIB)
        # bwrap gets a bare environment (an LD_PRELOAD meant for the child must not reach
        # it, and as root it runs as root); the command gets child_env.
        env_args = ["--clearenv"]
        for key, value in child_env.items():
            env_args += ["--setenv", key, value]
        if self.mode == isolation.USER:
            namespace = ["--unshare-user"]
            if tools.bwrap_version and tools.bwrap_version >= (0, 8):
                namespace.append("--disable-userns")
            drop = []  # bwrap itself drops every capability in the user namespace
        else:
            assert tools.setpriv
            namespace = []
            drop = setpriv_args(tools.setpriv, fresh_uid())
        return [
            tools.bwrap, *env_args, *namespace,
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--hostname", "sandbox",
            "--die-with-parent", "--new-session", "--info-fd", str(_BWRAP_INFO_FD),
            "--proc", "/proc", "--dev", "/dev",
            # 1777 because the sandbox uid must write there.
            "--perms", "1777", "--size", tmp_bytes, "--tmpfs", "/tmp",
            "--perms", "1777", "--size", tmp_bytes, "--tmpfs", "/dev/shm",
            *system_bind_args(),
            # After the /tmp tmpfs, so that inputs or a clone under the host's /tmp show up.
            *_readonly_binds([*python_runtime_paths(), self.inputs_dir, *self.extra_paths]),
            *_hide_packaged_content(),
            # The root and /dev are tmpfs without a size cap; only /tmp and /dev/shm are writable.
            "--remount-ro", "/dev", "--remount-ro", "/",
            "--chdir", "/tmp",
            *(["--seccomp", str(_BWRAP_SECCOMP_FD)] if with_seccomp else []),
            "--",
            *drop,
            tools.shell, "-c", self._start_script(), "sh", *self.argv,
        ]

    def _create_group(self, extra_tasks: int) -> tuple[RunCgroup | None, frozenset[str]]:
        """The run's cgroup (if any) and the limits the supervisor must enforce itself."""
        wanted = {"memory", "processes", "cpu"}
        plan, why = _cgroup_plan(self.found)
        group = None
        if plan is not None:
            try:
                group = plan.create_run(memory_bytes=self.limits.memory_mb * _MIB,
                                        max_tasks=self.limits.max_processes + extra_tasks,
                                        cpus=self.limits.cpus)
            except OSError as exc:
                why = f"cannot create a run group in {plan.describe()} ({exc.strerror or exc})"
        covered = {"memory": "memory", "pids": "processes", "cpu": "cpu"}
        supervised = set(wanted) - {covered[c] for c in (group.controllers if group else ())}
        if "processes" in supervised and (self.mode == isolation.ROOT or self._nproc_inside_namespace()):
            supervised.discard("processes")  # RLIMIT_NPROC binds this sandbox alone
        if group is None:
            self.mechanisms = "the supervisor and rlimits"
            if plan is not None or self.found.cgroup_plan is not None:
                self._note(f"limits without a cgroup: {why}")  # a plan that failed here
        else:
            names = ", ".join(c for c in ("memory", "pids", "cpu") if c in group.controllers)
            self.mechanisms = f"cgroup v{group.version} ({names})"  # what this run's group got
            if supervised:
                self.mechanisms += f", the supervisor ({', '.join(sorted(supervised))})"
        return group, frozenset(supervised)

    # ---- the run

    def execute(self) -> SandboxResult:
        start = time.monotonic()
        group: RunCgroup | None = None
        private_home: str | None = None
        fds: dict[str, int] = {}  # every descriptor we own, closed whatever happens
        proc: subprocess.Popen[bytes] | None = None
        supervisor: _Supervisor | None = None
        try:
            try:
                extra_tasks = 0 if self.unsafe else _BWRAP_OWN_TASKS
                group, supervised = self._create_group(extra_tasks)
                if self.unsafe:
                    private_home = tempfile.mkdtemp(prefix=scratch_prefix("unsafe"))
                    home, launch_cwd = private_home, private_home
                    command = self.argv
                else:
                    home, launch_cwd = "/tmp", "/"
                    seccomp = seccomp_program(supervised_memory="memory" in supervised)
                    if seccomp is None or not self.found.seccomp:
                        seccomp = None
                        self._note("no seccomp filter on this machine")
                    else:
                        # A few hundred bytes: fits in the pipe buffer, no writer needed.
                        fds["seccomp_r"], fds["seccomp_w"] = os.pipe()
                        os.write(fds["seccomp_w"], seccomp)
                        os.close(fds.pop("seccomp_w"))
                    fds["info_r"], fds["info_w"] = os.pipe()
                    command = self._bwrap_argv(self._child_env(home), with_seccomp=seccomp is not None)

                fds["result_r"], fds["result_w"] = os.pipe()
                fds["status_r"], fds["status_w"] = os.pipe()
                _grow_pipe(fds["result_r"])
                fd_moves = [[fds["result_w"], _CHILD_RESULT_FD, True],
                            # In unsafe mode the launcher reports the start itself and the
                            # status fd closes on exec; in bwrap mode the shell reports it.
                            [fds["status_w"], _CHILD_STATUS_FD, not self.unsafe]]
                if "seccomp_r" in fds:
                    fd_moves.append([fds["seccomp_r"], _BWRAP_SECCOMP_FD, True])
                if "info_w" in fds:
                    fd_moves.append([fds["info_w"], _BWRAP_INFO_FD, True])
                spec = {
                    "fds": fd_moves,
                    "status_fd": _CHILD_STATUS_FD,
                    "cgroup_procs": group.procs_files if group else [],
                    "rlimits": self._rlimits(),
                    "report_start": self.unsafe,
                    "argv": command,
                    "env": self._child_env(home) if self.unsafe else {"PATH": _SYSTEM_PATH},
                }
                supervisor = _Supervisor(self.limits, group, supervised, extra_tasks, start)
                proc = subprocess.Popen(
                    [sys.executable, "-S", "-I", "-c", _LAUNCHER, json.dumps(spec)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    pass_fds=[fd for fd, _, _ in fd_moves], env={"PATH": _SYSTEM_PATH},
                    cwd=launch_cwd, start_new_session=True,
                )
                # Only the child may hold the write ends, or we would never see EOF.
                for name in ("result_w", "status_w", "seccomp_r", "info_w"):
                    if name in fds:
                        os.close(fds.pop(name))
                if self.unsafe:
                    supervisor.watch(ProcessTree.of_session(proc.pid))
            except OSError as exc:
                # Our side failed (cgroup files, pipes, fork): the trainee's code never ran.
                self.notes.insert(0, f"could not set up the sandbox: {exc}")
                return SandboxResult(
                    outcome="infra-error", returncode=None, stdout="", stderr="",
                    output_truncated=False, result=None, result_oversized=False,
                    wall_s=time.monotonic() - start, isolation=self.mode,
                    detail="; ".join(self.notes), limits=self.mechanisms,
                )
            return self._supervise(proc, supervisor, fds)
        finally:
            if proc is not None and proc.returncode is None:
                _kill_group(proc.pid)
                proc.wait()
            if supervisor is not None and supervisor.tree is not None:
                if not self.unsafe:  # a pinned namespace: nothing else can be in it
                    supervisor.tree.signal_all(signal.SIGKILL)
                supervisor.tree.close()
            if group is not None:
                group.kill_all()
                group.remove()
            for fd in fds.values():
                _close_quietly(fd)
            if private_home is not None:
                shutil.rmtree(private_home, ignore_errors=True)

    def _sandbox_namespace(self, info: bytes) -> tuple[int, int] | None:
        """(host pid of the sandbox's pid 1, its pid namespace's inode) from bwrap's --info-fd
        report. Only bwrap writes there (the fd is closed in the sandbox)."""
        if not info:
            return None  # bwrap failed before it started the sandbox (see its stderr)
        try:
            report = json.loads(info.decode())
            child, namespace = int(report["child-pid"]), int(report["pid-namespace"])
        except (ValueError, KeyError, TypeError):
            self._note("bubblewrap did not report the sandbox's pid; the supervisor saw only its clock")
            return None
        return (child, namespace) if child > 0 and namespace > 0 else None

    def _supervise(self, proc: subprocess.Popen[bytes], supervisor: _Supervisor,
                   fds: dict[str, int]) -> SandboxResult:
        limits = self.limits
        assert proc.stdout is not None and proc.stderr is not None
        stdout = _TailBuffer(limits.max_output_bytes)
        stderr = _TailBuffer(limits.max_output_bytes)
        result = bytearray()
        result_oversized = False
        status = bytearray()
        info = bytearray()

        selector = selectors.DefaultSelector()
        streams = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr",
                   fds["result_r"]: "result", fds["status_r"]: "status"}
        if "info_r" in fds:
            streams[fds["info_r"]] = "info"
        for fd in streams:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        pidfd: int | None
        try:
            pidfd = os.pidfd_open(proc.pid)
            selector.register(pidfd, selectors.EVENT_READ)
        except (AttributeError, OSError):
            pidfd = None  # no pidfd (old kernel): poll the process instead

        killed = False
        wait_status: int | None = None
        drain_deadline: float | None = None
        next_tick = supervisor.start
        namespace: tuple[int, int] | None = None  # the sandbox's, until its /proc is found
        try:
            while True:
                now = time.monotonic()
                if wait_status is None and not killed and now >= next_tick:
                    next_tick = now + _TICK_S
                    if namespace is not None and supervisor.tree is None:
                        # bwrap reports the pid before the sandbox's /proc is in place.
                        supervisor.watch(ProcessTree.of_namespace(
                            namespace[0], proc.pid, namespace[1], _MAIN_PID_IN_NAMESPACE))
                    if supervisor.tick(now):
                        killed = True
                        self._kill_everything(proc, supervisor)
                if wait_status is None:
                    reaped = os.wait4(proc.pid, os.WNOHANG)
                    if reaped[0] == proc.pid:
                        wait_status = reaped[1]
                        proc.returncode = os.waitstatus_to_exitcode(wait_status)
                        supervisor.measure()  # the last measurement, enforcing nothing
                if wait_status is not None and drain_deadline is None:
                    # The command is gone: nothing of it may outlive the run.
                    self._kill_everything(proc, supervisor)
                    drain_deadline = time.monotonic() + _DRAIN_GRACE_S
                open_streams = [fd for fd in streams if fd in selector.get_map()]
                if wait_status is not None and not open_streams:
                    break
                if drain_deadline is not None and now >= drain_deadline:
                    self._note("a background process outside our reach kept the output open")
                    break
                wake_at = drain_deadline if drain_deadline is not None else next_tick
                wait_s = max(0.0, wake_at - now)
                if pidfd is None or killed:
                    wait_s = min(wait_s, 0.05)
                for key, _ in selector.select(wait_s):
                    fd = key.fd
                    if fd == pidfd:
                        selector.unregister(fd)
                        continue
                    try:
                        chunk = os.read(fd, 1024 * 1024)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        selector.unregister(fd)
                        if streams[fd] == "info":
                            namespace = self._sandbox_namespace(bytes(info))
                            next_tick = time.monotonic()  # look for its /proc at once
                        continue
                    kind = streams[fd]
                    if kind == "stdout":
                        stdout.feed(chunk)
                    elif kind == "stderr":
                        stderr.feed(chunk)
                    elif kind == "status":
                        status += chunk[:4096]
                    elif kind == "info":
                        info += chunk[:4096]
                    elif not result_oversized:
                        result += chunk
                        if len(result) > limits.max_result_bytes:
                            # Stop reading: the writer gets EPIPE instead of filling our
                            # memory until the timeout.
                            result_oversized = True
                            result = bytearray()
                            selector.unregister(fd)
                            os.close(fds.pop("result_r"))
                            self._note(f"result channel closed after more than "
                                       f"{limits.max_result_bytes} bytes")
        finally:
            selector.close()
            if pidfd is not None:
                os.close(pidfd)
            proc.stdout.close()
            proc.stderr.close()
        if wait_status is None:  # gave up draining before reaping: cannot happen normally
            self._kill_everything(proc, supervisor)
            _, wait_status, _ = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(wait_status)
        wall_s = time.monotonic() - supervisor.start

        outcome, returncode = self._classify(wait_status, bytes(status), supervisor, stderr.text())
        return SandboxResult(
            outcome=outcome,
            returncode=returncode,
            stdout=stdout.text(),
            stderr=stderr.text(),
            output_truncated=stdout.truncated or stderr.truncated,
            result=bytes(result) if result and not result_oversized else None,
            result_oversized=result_oversized,
            wall_s=wall_s,
            isolation=self.mode,
            detail="; ".join(self.notes),
            limits=self.mechanisms,
            cpu_s=round(supervisor.cpu_s, 3),
            waited_s=round(supervisor.forgiven_s, 3),
        )

    def _kill_everything(self, proc: subprocess.Popen[bytes], supervisor: _Supervisor) -> None:
        # Killing bwrap's monitor makes its pid 1 die (--die-with-parent), and the kernel
        # then kills the whole pid namespace. Killing the sandbox's pid 1 directly does the
        # same without waiting for that, and the cgroup sweep catches anything else,
        # including unsafe-mode daemons that left our session.
        # Once bwrap's monitor is reaped its process group is empty, and its id could be
        # handed to someone else's new group; in unsafe mode the trainee's processes keep the
        # id (and the session's) in use, so it cannot.
        if proc.returncode is None or self.unsafe:
            _kill_group(proc.pid)
        # The tree is the sandbox's own pid namespace (proven when it was found), or in
        # unsafe mode a session of the host, which we stop signalling once its leader is gone.
        if supervisor.tree is not None and (not self.unsafe or proc.returncode is None):
            supervisor.tree.signal_all(signal.SIGKILL)
        group = supervisor.group
        if group is not None and group.procs_files and not group.kill_all():
            self._note("some sandbox processes survived repeated SIGKILL sweeps")

    def _classify(self, wait_status: int, status: bytes, supervisor: _Supervisor,
                  stderr_text: str) -> tuple[str, int | None]:
        """The outcome from what the supervisor knows; the exit code only describes the rest."""
        limits = self.limits
        launcher_error = status.partition(b"!")[2]
        started = status.startswith(b".")
        if launcher_error or (not started and supervisor.verdict is None):
            # Nothing of the trainee ran yet: stderr is bwrap's or the launcher's own.
            last_lines = "\n".join(stderr_text.strip().splitlines()[-3:])
            why = (launcher_error.decode(errors="replace") if launcher_error
                   else last_lines or f"wait status {wait_status}")
            self.notes.insert(0, f"the sandbox did not start the command: {why}")
            return "infra-error", None
        if supervisor.verdict is not None:
            if not started:
                self.notes.insert(0, "the sandbox was still starting when the supervisor stopped it")
                return "infra-error", None
            self.notes.insert(0, supervisor.reason)
            return supervisor.verdict, None

        signum: int | None = None
        code: int | None = None
        if os.WIFSIGNALED(wait_status):
            signum = os.WTERMSIG(wait_status)
        else:
            code = os.WEXITSTATUS(wait_status)
            # bwrap reports a command killed by signal N as exit status 128 + N. A command
            # that itself exits with 129..192 looks the same; we read it as a signal.
            if not self.unsafe and 128 < code <= 128 + 64:
                signum, code = code - 128, None
        returncode = -signum if signum is not None else code

        group = supervisor.group
        if group is not None and group.oom_kills():
            if code == 0:
                # Only a helper process was killed; the command itself finished cleanly,
                # so its result stands.
                self._note(f"the OOM killer stopped a child process (limit {limits.memory_mb} MB)")
                return "exited", returncode
            self.notes.insert(0, f"the kernel's OOM killer fired at the {limits.memory_mb} MB limit "
                                 f"of its cgroup v{group.version} memory group")
            return "memory", None
        if code != 0 and supervisor.cpu_s >= limits.effective_cpu_s:
            # The RLIMIT_CPU backstop (SIGXCPU) beat the supervisor's tick; the measured
            # CPU time, not the signal, says so.
            self.notes.insert(0, f"killed by RLIMIT_CPU at its CPU-time budget of "
                                 f"{limits.effective_cpu_s:g} s ({supervisor.cpu_source})")
            return "timeout", None
        if signum is not None:
            name = signal.Signals(signum).name if signum in signal.valid_signals() else str(signum)
            self.notes.insert(0, f"ended by {name}" + ("" if self.unsafe else
                                                       f" (or exit status {128 + signum})"))
            return "signalled", returncode
        return "exited", returncode


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _grow_pipe(fd: int) -> None:
    """Ask for a 1 MiB pipe buffer: fewer wake-ups for a large result. Optional."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _MIB)
    except (AttributeError, OSError):
        pass

