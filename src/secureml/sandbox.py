"""Run untrusted trainee code in isolation, with hard limits and a private result channel.

How a sandboxed run is put together (each piece answers a measured failure):

* bubblewrap runs as root *without* a user namespace. Launched by root with
  `--unshare-user`, bwrap maps the sandbox uid back to host root, and such a sandbox could
  read a root-only 0600 file (measured). Running as root, bwrap can bind paths under
  `/root` (mode 700 on the host) into a fresh root. It would create the missing parents
  there as 0700, so we create them 0755 ourselves (`--perms 0755 --dir`).
* Inside the sandbox, `setpriv` drops to a fresh unused uid/gid before anything of the
  trainee runs: no supplementary groups, no capabilities (bounding set included),
  no-new-privs. Each run gets its own random uid, so parallel sandboxes never share a uid
  and `RLIMIT_NPROC` (which counts per uid, host-wide) becomes a per-sandbox limit.
* New pid, net, ipc and uts namespaces. When the sandbox's pid 1 dies the kernel kills
  every process in the namespace, so a double-forked daemon cannot outlive the run and
  hold our pipes open. `--die-with-parent` ties pid 1 to bwrap, and bwrap to us.
* cgroup v1 `memory` and `pids` groups, one fresh pair per run, are the real limits:
  `import torch` needs about 3.2 GiB of address space, so `RLIMIT_AS` can only be a
  generous backstop, and `RLIMIT_NPROC` does not bind root.
* A tiny launcher (stdlib Python, `-S -I`) joins the cgroups and sets the rlimits before
  it execs bwrap, so that nothing of the run ever exists outside the limits. We do not use
  `preexec_fn` because it can deadlock when the caller has threads.
* A seccomp filter refuses new namespaces, mounts, keyrings, bpf, perf, userfaultfd and
  io_uring: without it the sandbox uid could still make itself "root" of a fresh user
  namespace, which cannot undo our binds but opens the kernel surface exploits need.
* A status pipe tells the parent whether the trainee's command was reached: a shell inside
  the sandbox writes one byte and closes the pipe just before it execs the command. No
  byte means the sandbox itself failed to start (`infra-error`), whatever the exit code.

Only the standard library is imported here: the grader imports this module before torch.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import resource
import secrets
import selectors
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "RESULT_FD_ENV",
    "Limits",
    "SandboxInputError",
    "SandboxResult",
    "SandboxUnavailable",
    "bubblewrap_available",
    "isolation_problem",
    "run_sandboxed",
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

# `import torch` needs about 3.2 GiB of RLIMIT_AS; just below that it segfaults, throws
# bad_alloc or hangs in an mmap retry loop (ART-FACTS, sandbox fact 4). 6 GiB leaves room.
_ADDRESS_SPACE_BACKSTOP_MIN_BYTES = 6 * _GIB

# A soft RLIMIT_CPU sends SIGXCPU; the hard limit this much later sends SIGKILL to a child
# that ignores SIGXCPU.
_CPU_HARD_GRACE_S = 2

# bwrap's monitor (outside the pid namespace) and its pid-1 reaper sit in the pids cgroup
# too; they should not eat into the trainee's `max_processes`.
_BWRAP_OWN_TASKS = 2

# Fresh uids are drawn from here. Far above any uid a distribution hands out, below 2**31
# (some tools store uids as signed 32-bit) and clear of systemd's container ranges.
_SANDBOX_UID_MIN = 1_900_000_000
_SANDBOX_UID_SPAN = 100_000_000

# How long we keep draining pipes once the main process is gone and leftovers are killed.
# In bwrap mode the pipes close at once; this only matters for unsafe mode without cgroups.
_DRAIN_GRACE_S = 1.0
# How long we keep sweeping a cgroup with SIGKILL before giving up (a fork bomb inside a
# pids cgroup is gone after a few sweeps).
_KILL_SWEEP_S = 5.0
# Checking every file of inputs_dir for world-readability is cheap for the few files a
# submission needs; stop looking after this many entries so a huge tree costs nothing.
_READABILITY_CHECK_MAX_ENTRIES = 10_000

# Host files under /etc that Python, glibc and common libraries read. Everything else of
# /etc stays outside the sandbox.
_ETC_FILES = (
    "/etc/alternatives",
    "/etc/group",
    "/etc/host.conf",
    "/etc/hosts",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/passwd",
)
# Top-level names that merged-/usr systems make symlinks into /usr.
_ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

_SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run."""

    timeout_s: float = 600.0  # wall clock
    cpu_s: float | None = None  # RLIMIT_CPU per process; None means 2 * timeout_s
    memory_mb: int = 4096  # memory cgroup limit; RLIMIT_AS backstop = max(6 GiB, 2x)
    # pids cgroup, and RLIMIT_NPROC of the sandbox uid. The kernel counts threads here too,
    # so a multi-threaded library (OpenMP, torch) spends several per process.
    max_processes: int = 64
    max_file_mb: int = 256  # RLIMIT_FSIZE
    tmp_mb: int = 256  # private /tmp (and /dev/shm), each a tmpfs of this size
    max_output_bytes: int = 64 * 1024  # stdout and stderr, each: the tail is kept
    max_result_bytes: int = 256 * 1024 * 1024  # result channel cap

    def __post_init__(self) -> None:
        for name in ("timeout_s", "memory_mb", "max_processes", "max_file_mb", "tmp_mb",
                     "max_output_bytes", "max_result_bytes"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"Limits.{name} must be positive, got {value!r}.")
        if self.cpu_s is not None and not self.cpu_s > 0:
            raise ValueError(f"Limits.cpu_s must be positive or None, got {self.cpu_s!r}.")

    @property
    def effective_cpu_s(self) -> float:
        return self.cpu_s if self.cpu_s is not None else 2 * self.timeout_s

    @property
    def address_space_bytes(self) -> int:
        return max(_ADDRESS_SPACE_BACKSTOP_MIN_BYTES, 2 * self.memory_mb * _MIB)


@dataclass(frozen=True)
class SandboxResult:
    """What one sandboxed run did."""

    outcome: str  # "exited" | "timeout" | "memory" | "signalled" | "infra-error"
    # Exit code, or minus the signal number. None when we killed it at the wall-clock
    # limit or it never started. Under bubblewrap an exit code of 129..192 reads as a
    # signal, because bwrap reports a death by signal N as exit status 128 + N.
    returncode: int | None
    stdout: str
    stderr: str
    output_truncated: bool  # stdout or stderr went over max_output_bytes: the tail is kept
    result: bytes | None  # everything written to the result channel; None if nothing
    result_oversized: bool  # the child wrote more than max_result_bytes (result is None)
    wall_s: float
    isolation: str  # "bubblewrap" or "unsafe-subprocess"
    detail: str = ""


class SandboxUnavailable(Exception):
    """bubblewrap isolation cannot run on this machine, and unsafe mode was not allowed."""


class SandboxInputError(ValueError):
    """A path handed to the sandbox is missing, or the sandbox user could not read it."""


def bubblewrap_available() -> bool:
    """Whether `run_sandboxed(..., unsafe=False)` can isolate on this machine."""
    return _bubblewrap_problem() is None


def isolation_problem() -> str | None:
    """Why `run_sandboxed(..., unsafe=False)` cannot isolate here, or None when it can."""
    return _bubblewrap_problem()


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
        installation and of the secureml package are visible read-only inside.
    inputs_dir: bound read-only at the same path. In bubblewrap mode the child runs as an
        unused uid, so the directory and its files must be world-readable (o+rX).
    unsafe: run as a plain subprocess of the current user (rlimits and, when possible,
        cgroups, but no namespaces). Never isolation for untrusted code.
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
    if not unsafe:
        problem = _bubblewrap_problem()
        if problem is not None:
            raise SandboxUnavailable(
                f"Cannot isolate trainee code: {problem}. Install bubblewrap and run as root "
                "(CI: apt-get install bubblewrap), or pass --unsafe to run it unisolated."
            )
        _check_world_readable(inputs_dir, recursive=True)
        for path in extra_paths:
            _check_world_readable(path, recursive=False)
    # A missing command is the caller's mistake; catching it here keeps exec failures
    # inside the sandbox meaningful (infra-error) and the two modes consistent.
    program = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=_SYSTEM_PATH)
    if program is None or not os.path.isfile(program) or not os.access(program, os.X_OK):
        raise SandboxInputError(
            f"{argv[0]} is not an executable file. Pass an absolute path such as sys.executable."
        )
    if not unsafe:
        visible = [Path("/usr"), *_python_runtime_paths(), inputs_dir, *extra_paths]
        real_program = Path(os.path.realpath(program))
        if not any(real_program.is_relative_to(root) for root in visible):
            raise SandboxInputError(
                f"{argv[0]} lies outside everything the sandbox can see. Use sys.executable, "
                "or add its directory to extra_readonly."
            )
    return _Run(argv, inputs_dir, extra_paths, limits, unsafe, env or {}).execute()


# --------------------------------------------------------------------------------------
# Availability


def _bubblewrap_problem() -> str | None:
    """Why bubblewrap isolation cannot run here, or None when it can (checked by a probe)."""
    if not sys.platform.startswith("linux"):
        return "bubblewrap needs Linux"
    if os.geteuid() != 0:
        # Dropping to a fresh uid inside the sandbox needs root; a user-namespace sandbox
        # started by root would map the sandbox to host root instead.
        return "the sandbox must be started as root (to drop to an unused uid)"
    tools = _sandbox_tools()
    if isinstance(tools, str):
        return tools
    bwrap, setpriv, shell = tools
    probe = [
        bwrap, *_system_bind_args(), "--proc", "/proc", "--dev", "/dev",
        "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
        "--die-with-parent", "--new-session", "--",
        *_setpriv_args(setpriv, _fresh_uid()), shell, "-c", "exit 0",
    ]
    try:
        # 10 s: the probe takes a few milliseconds; a slow, loaded CI machine gets slack.
        done = subprocess.run(probe, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=10, env={"PATH": _SYSTEM_PATH})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"running bubblewrap failed ({exc})"
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
        return f"bubblewrap cannot create a sandbox here ({message})"
    return None


def _sandbox_tools() -> tuple[str, str, str] | str:
    """Absolute paths of bwrap, setpriv and sh, or a sentence saying which one is missing."""
    found = []
    for name, package in (("bwrap", "bubblewrap"), ("setpriv", "util-linux"), ("sh", "dash")):
        path = shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin")
        if path is None:
            return f"{name} is not installed (Debian package {package})"
        found.append(path)
    bwrap, setpriv, shell = found
    # setpriv and sh run inside the sandbox, which only sees /usr and the /bin-style links.
    for path in (setpriv, shell):
        if not os.path.realpath(path).startswith("/usr/") and not path.startswith("/usr/"):
            return f"{path} is outside /usr, so the sandbox cannot see it"
    return bwrap, setpriv, shell


def _fresh_uid() -> int:
    return _SANDBOX_UID_MIN + secrets.randbelow(_SANDBOX_UID_SPAN)


def _setpriv_args(setpriv: str, uid: int) -> list[str]:
    return [
        setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
        "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
    ]


# --------------------------------------------------------------------------------------
# What the sandbox sees


def _system_bind_args() -> list[str]:
    """Read-only /usr, the merged-/usr links, and the few /etc files Python needs."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in _ROOT_LINKS:
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            args += ["--ro-bind", name, name]
    # bwrap would create /etc as 0700 (see _readonly_binds), hiding these from the sandbox.
    args += ["--perms", "0755", "--dir", "/etc"]
    for name in _ETC_FILES:
        if os.path.exists(name):
            args += ["--ro-bind", name, name]
    return args


def _python_runtime_paths() -> list[Path]:
    """Host directories the interpreter and the secureml package are loaded from.

    Discovered, not hard-coded: CI runs a clean clone at an unknown path, and the venv's
    interpreter is a symlink into another installation (pyenv, or /usr).
    """
    package_root = Path(__file__).resolve().parent.parent  # holds secureml/
    candidates = {
        sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
        os.path.dirname(sys.executable), str(package_root),
    }
    paths = set()
    for candidate in candidates:
        if candidate and os.path.isdir(candidate):
            paths.add(os.path.abspath(candidate))
            paths.add(os.path.realpath(candidate))
    real_executable = os.path.realpath(sys.executable)
    paths.add(os.path.dirname(real_executable))
    return [Path(path) for path in paths]


def _hide_packaged_content() -> list[str]:
    """bwrap arguments laying an empty tmpfs over the content of an installed wheel.

    The package is visible inside (the child imports it), and a wheel carries the bundled
    datasets under secureml/_content: with the pristine mnist-5k a submission could spot
    every poisoned sample, or train on the test images. A checkout keeps them outside
    the package, where the sandbox never sees them.
    """
    from secureml.paths import PACKAGED_CONTENT

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
        # bwrap 0.8 creates missing parents as 0700 root-owned dirs (whatever the umask),
        # which the sandbox uid could not traverse: create them 0755 first.
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


# --------------------------------------------------------------------------------------
# cgroups (v1: this machine and CI mount the memory and pids controllers read-write)


class _Cgroups:
    """Fresh memory, pids and cpuacct cgroups for one run, nested under our own cgroups.

    memory and pids are the limits. cpuacct only measures: bwrap's monitor learns the
    exit status through an eventfd and never reaps the sandbox's processes, so wait4()
    cannot tell us how much CPU they used.
    """

    # Controllers whose absence weakens the limits (reported in SandboxResult.detail).
    LIMITING = ("memory", "pids")

    def __init__(self, dirs: dict[str, Path], note: str) -> None:
        self.dirs = dirs
        self.note = note  # why a limiting controller is missing

    @classmethod
    def create(cls, limits: Limits, extra_tasks: int) -> _Cgroups:
        name = f"secureml-sandbox-{os.getpid()}-{secrets.token_hex(6)}"
        dirs: dict[str, Path] = {}
        problems = []
        for controller in (*cls.LIMITING, "cpuacct"):
            try:
                parent = _own_cgroup_v1_dir(controller)
                if parent is None:
                    problems.append(f"no cgroup v1 {controller} controller")
                    continue
                (parent / name).mkdir()
                dirs[controller] = parent / name
            except OSError as exc:
                problems.append(f"cannot create a {controller} cgroup ({exc.strerror})")
        problems = [problem for problem in problems if "cpuacct" not in problem]
        groups = cls(dirs, "; ".join(problems))
        try:
            if "memory" in dirs:
                limit = str(limits.memory_mb * _MIB)
                _write(dirs["memory"] / "memory.limit_in_bytes", limit)
                # Without swap accounting the group could swap out past its limit.
                memsw = dirs["memory"] / "memory.memsw.limit_in_bytes"
                if memsw.exists():
                    try:
                        _write(memsw, limit)
                    except OSError:
                        pass  # swap accounting off: there is no swap to account for
            if "pids" in dirs:
                _write(dirs["pids"] / "pids.max", str(limits.max_processes + extra_tasks))
        except OSError:
            groups.remove()
            raise
        return groups

    @property
    def procs_files(self) -> list[str]:
        return [str(directory / "cgroup.procs") for directory in self.dirs.values()]

    def members(self) -> list[int]:
        pids: set[int] = set()
        for procs in self.procs_files:
            try:
                pids.update(int(line) for line in Path(procs).read_text().split())
            except OSError:
                pass
        return sorted(pids)

    def oom_killed(self) -> bool:
        if "memory" not in self.dirs:
            return False
        try:
            text = (self.dirs["memory"] / "memory.oom_control").read_text()
            fields = dict(line.split() for line in text.splitlines() if len(line.split()) == 2)
            if "oom_kill" in fields:
                return int(fields["oom_kill"]) > 0
            # Kernels before 4.13 have no oom_kill counter; a hit limit is the next best sign.
            return int((self.dirs["memory"] / "memory.failcnt").read_text()) > 0
        except OSError:
            return False

    def cpu_used_s(self) -> float:
        """CPU time used by every process of the run, 0.0 when not measured."""
        try:
            return int((self.dirs["cpuacct"] / "cpuacct.usage").read_text()) / 1e9
        except (KeyError, OSError, ValueError):
            return 0.0

    def kill_all(self) -> bool:
        """SIGKILL every member until none is left; False if some survived the sweep."""
        deadline = time.monotonic() + _KILL_SWEEP_S
        while True:
            members = self.members()
            if not members:
                return True
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)

    def remove(self) -> None:
        for directory in self.dirs.values():
            # rmdir fails with EBUSY until the last killed member has been reaped.
            deadline = time.monotonic() + _KILL_SWEEP_S
            while True:
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        break
                    time.sleep(0.02)


def _own_cgroup_v1_dir(controller: str) -> Path | None:
    """Directory of our own cgroup in the v1 hierarchy of `controller`, if mounted."""
    own_path = None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            own_path = path
    if own_path is None:
        return None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        fields, after_fields = before.split(), after.split()
        if len(after_fields) < 3 or after_fields[0] != "cgroup":
            continue
        if controller not in after_fields[2].split(","):
            continue
        mount_root, mount_point = fields[3], fields[4]
        relative = own_path
        if mount_root != "/":
            if not (own_path == mount_root or own_path.startswith(mount_root + "/")):
                continue
            relative = own_path[len(mount_root):]
        return Path(mount_point + relative.rstrip("/"))
    return None


def _write(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


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
# seccomp: a small deny-list that bwrap loads just before it execs the command.
#
# Without it, the sandbox uid can still create a user namespace (measured: `unshare -Urm`
# inside the sandbox gave it "root" and a tmpfs mount). That cannot undo our read-only
# binds, but it opens the kernel surface most privilege-escalation bugs need. So: no new
# namespaces, no mounts, no keyrings, bpf, perf, userfaultfd or io_uring; nothing that
# Python, numpy or torch use on CPU. x86-64 only: the numbers below are its syscall table
# (arch/x86/entry/syscalls/syscall_64.tbl); other machines run without the filter.

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000
_SYSCALL_CLONE = 56
_SYSCALL_CLONE3 = 435  # its flags sit in memory a filter cannot read: report ENOSYS,
# and glibc falls back to clone(), whose flags we can check
_CLONE_NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
_DENIED_SYSCALLS_X86_64 = {
    "unshare": 272, "setns": 308,
    "mount": 165, "umount2": 166, "pivot_root": 155, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
    "add_key": 248, "request_key": 249, "keyctl": 250,
    "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
    "delete_module": 176, "acct": 163, "swapon": 167, "swapoff": 168, "reboot": 169,
}
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_ERRNO = 0x00050000


def _seccomp_program() -> bytes | None:
    """The compiled classic-BPF filter for bwrap's --seccomp, or None off x86-64."""
    import platform  # stdlib; only needed here

    if platform.machine() != "x86_64":
        return None
    load_word, jump_eq, jump_ge, jump_set, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    eperm = _SECCOMP_RET_ERRNO | errno.EPERM
    enosys = _SECCOMP_RET_ERRNO | errno.ENOSYS
    # (code, jump-if-true label, jump-if-false label, k); None means the next instruction.
    program: list[tuple[int, str | None, str | None, int]] = [
        (load_word, None, None, 4),  # seccomp_data.arch
        (jump_eq, None, "enosys", _AUDIT_ARCH_X86_64),  # i386 or other ABIs: refuse all
        (load_word, None, None, 0),  # seccomp_data.nr
        (jump_ge, "enosys", None, _X32_SYSCALL_BIT),  # the x32 ABI: refuse all
        (jump_eq, "enosys", None, _SYSCALL_CLONE3),
        (jump_eq, "clone", None, _SYSCALL_CLONE),
        *[(jump_eq, "eperm", None, number) for number in sorted(_DENIED_SYSCALLS_X86_64.values())],
        (ret, None, None, _SECCOMP_RET_ALLOW),
        ("clone", None, None, 0),  # type: ignore[list-item]  # a label
        (load_word, None, None, 16),  # low 32 bits of args[0], the clone flags
        (jump_set, "eperm", None, _CLONE_NAMESPACE_FLAGS),
        (ret, None, None, _SECCOMP_RET_ALLOW),
        ("eperm", None, None, 0),  # type: ignore[list-item]
        (ret, None, None, eperm),
        ("enosys", None, None, 0),  # type: ignore[list-item]
        (ret, None, None, enosys),
    ]
    labels: dict[str, int] = {}
    instructions = []
    for code, if_true, if_false, k in program:
        if isinstance(code, str):
            labels[code] = len(instructions)
        else:
            instructions.append((code, if_true, if_false, k))

    def offset(label: str | None, index: int) -> int:
        return 0 if label is None else labels[label] - index - 1

    return b"".join(
        struct.pack("=HBBI", code, offset(if_true, index), offset(if_false, index), k)
        for index, (code, if_true, if_false, k) in enumerate(instructions)
    )


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


class _Run:
    """One sandboxed run: set up, wait and drain, classify, clean up."""

    def __init__(self, argv: list[str], inputs_dir: Path, extra_paths: list[Path],
                 limits: Limits, unsafe: bool, env: Mapping[str, str]) -> None:
        self.argv = argv
        self.inputs_dir = inputs_dir
        self.extra_paths = extra_paths
        self.limits = limits
        self.unsafe = unsafe
        self.user_env = dict(env)
        self.isolation = "unsafe-subprocess" if unsafe else "bubblewrap"
        self.notes: list[str] = []

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

    def _rlimits(self, sandbox_uid: int | None) -> list[tuple[str, int, int]]:
        limits = self.limits
        cpu_soft_s = max(1, math.ceil(limits.effective_cpu_s))
        rlimits = [
            ("RLIMIT_AS", limits.address_space_bytes, limits.address_space_bytes),
            ("RLIMIT_CPU", cpu_soft_s, cpu_soft_s + _CPU_HARD_GRACE_S),
            ("RLIMIT_FSIZE", limits.max_file_mb * _MIB, limits.max_file_mb * _MIB),
            ("RLIMIT_CORE", 0, 0),
        ]
        if sandbox_uid is not None:
            # The uid is fresh, so the count is this sandbox's alone.
            rlimits.append(("RLIMIT_NPROC", limits.max_processes, limits.max_processes))
        elif os.geteuid() != 0:
            # RLIMIT_NPROC counts every task of the user, so leave room for the ones they
            # already run. Root ignores RLIMIT_NPROC; only the pids cgroup binds it.
            nproc = _count_tasks_of_uid(os.getuid()) + limits.max_processes
            rlimits.append(("RLIMIT_NPROC", nproc, nproc))
        return rlimits

    def _bwrap_argv(self, bwrap: str, setpriv: str, shell: str, sandbox_uid: int,
                    child_env: Mapping[str, str], with_seccomp: bool) -> list[str]:
        tmp_bytes = str(self.limits.tmp_mb * _MIB)
        # bwrap itself runs as root on the host, so it gets a bare environment (an
        # LD_PRELOAD meant for the child must not reach it); the command gets child_env.
        env_args = ["--clearenv"]
        for key, value in child_env.items():
            env_args += ["--setenv", key, value]
        return [
            bwrap, *env_args,
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--hostname", "sandbox",
            "--die-with-parent", "--new-session",
            "--proc", "/proc", "--dev", "/dev",
            # 1777 because the sandbox uid, not root, must write there.
            "--perms", "1777", "--size", tmp_bytes, "--tmpfs", "/tmp",
            "--perms", "1777", "--size", tmp_bytes, "--tmpfs", "/dev/shm",
            *_system_bind_args(),
            # After the /tmp tmpfs, so that inputs or a clone under the host's /tmp show up.
            *_readonly_binds([*_python_runtime_paths(), self.inputs_dir, *self.extra_paths]),
            *_hide_packaged_content(),
            "--chdir", "/tmp",
            *(["--seccomp", str(_BWRAP_SECCOMP_FD)] if with_seccomp else []),
            "--",
            *_setpriv_args(setpriv, sandbox_uid),
            shell, "-c", _START_SCRIPT, "sh", *self.argv,
        ]

    # ---- the run

    def execute(self) -> SandboxResult:
        start = time.monotonic()
        cgroups: _Cgroups | None = None
        private_home: str | None = None
        fds: dict[str, int] = {}  # every descriptor we own, closed whatever happens
        proc: subprocess.Popen[bytes] | None = None
        try:
            try:
                if self.unsafe:
                    sandbox_uid = None
                    extra_tasks = 0
                    private_home = tempfile.mkdtemp(prefix="secureml-unsafe-")
                    home, launch_cwd = private_home, private_home
                    command = self.argv
                else:
                    tools = _sandbox_tools()
                    assert not isinstance(tools, str)  # checked by run_sandboxed
                    sandbox_uid = _fresh_uid()
                    extra_tasks = _BWRAP_OWN_TASKS
                    home, launch_cwd = "/tmp", "/"
                    seccomp_program = _seccomp_program()
                    if seccomp_program is None:
                        self._note("no seccomp filter on this CPU architecture")
                    else:
                        # A few hundred bytes: fits in the pipe buffer, no writer needed.
                        fds["seccomp_r"], fds["seccomp_w"] = os.pipe()
                        os.write(fds["seccomp_w"], seccomp_program)
                        os.close(fds.pop("seccomp_w"))
                    command = self._bwrap_argv(*tools, sandbox_uid, self._child_env(home),
                                               with_seccomp=seccomp_program is not None)
                if os.geteuid() == 0:
                    cgroups = _Cgroups.create(self.limits, extra_tasks)
                    if cgroups.note:
                        self._note(f"limits without cgroup: {cgroups.note}")
                else:
                    self._note("not root: no memory or pids cgroup, rlimits only")

                fds["result_r"], fds["result_w"] = os.pipe()
                fds["status_r"], fds["status_w"] = os.pipe()
                _grow_pipe(fds["result_r"])
                fd_moves = [[fds["result_w"], _CHILD_RESULT_FD, True],
                            # In unsafe mode the launcher reports the start itself and the
                            # status fd closes on exec; in bwrap mode the shell reports it.
                            [fds["status_w"], _CHILD_STATUS_FD, not self.unsafe]]
                if "seccomp_r" in fds:
                    fd_moves.append([fds["seccomp_r"], _BWRAP_SECCOMP_FD, True])
                spec = {
                    "fds": fd_moves,
                    "status_fd": _CHILD_STATUS_FD,
                    "cgroup_procs": cgroups.procs_files if cgroups else [],
                    "rlimits": self._rlimits(sandbox_uid),
                    "report_start": self.unsafe,
                    "argv": command,
                    "env": self._child_env(home) if self.unsafe else {"PATH": _SYSTEM_PATH},
                }
                proc = subprocess.Popen(
                    [sys.executable, "-S", "-I", "-c", _LAUNCHER, json.dumps(spec)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    pass_fds=[fd for fd, _, _ in fd_moves], env={"PATH": _SYSTEM_PATH},
                    cwd=launch_cwd, start_new_session=True,
                )
                # Only the child may hold the write ends, or we would never see EOF.
                for name in ("result_w", "status_w", "seccomp_r"):
                    if name in fds:
                        os.close(fds.pop(name))
            except OSError as exc:
                # Our side failed (cgroup files, pipes, fork): the trainee's code never ran.
                self.notes.insert(0, f"could not set up the sandbox: {exc}")
                return SandboxResult(
                    outcome="infra-error", returncode=None, stdout="", stderr="",
                    output_truncated=False, result=None, result_oversized=False,
                    wall_s=time.monotonic() - start, isolation=self.isolation,
                    detail="; ".join(self.notes),
                )
            return self._supervise(proc, cgroups, fds, start)
        finally:
            if proc is not None and proc.returncode is None:
                _kill_group(proc.pid)
                proc.wait()
            if cgroups is not None:
                cgroups.kill_all()
                cgroups.remove()
            for fd in fds.values():
                _close_quietly(fd)
            if private_home is not None:
                shutil.rmtree(private_home, ignore_errors=True)

    def _supervise(self, proc: subprocess.Popen[bytes], cgroups: _Cgroups | None,
                   fds: dict[str, int], start: float) -> SandboxResult:
        limits = self.limits
        assert proc.stdout is not None and proc.stderr is not None
        stdout = _TailBuffer(limits.max_output_bytes)
        stderr = _TailBuffer(limits.max_output_bytes)
        result = bytearray()
        result_oversized = False
        status = bytearray()

        selector = selectors.DefaultSelector()
        streams = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr",
                   fds["result_r"]: "result", fds["status_r"]: "status"}
        for fd in streams:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        try:
            pidfd: int | None = os.pidfd_open(proc.pid)
            selector.register(pidfd, selectors.EVENT_READ)
        except (AttributeError, OSError):
            pidfd = None  # no pidfd (old kernel): poll the process instead

        deadline = start + limits.timeout_s
        timed_out = False
        wait_status: int | None = None
        cpu_used_s = 0.0
        drain_deadline: float | None = None
        try:
            while True:
                now = time.monotonic()
                if wait_status is None and not timed_out and now >= deadline:
                    timed_out = True
                    self._kill_everything(proc, cgroups)
                if wait_status is None:
                    reaped = os.wait4(proc.pid, os.WNOHANG)
                    if reaped[0] == proc.pid:
                        wait_status, cpu_used_s = reaped[1], _cpu_s(reaped[2])
                        proc.returncode = os.waitstatus_to_exitcode(wait_status)
                if wait_status is not None and drain_deadline is None:
                    # The command is gone: nothing of it may outlive the run.
                    self._kill_everything(proc, cgroups)
                    drain_deadline = time.monotonic() + _DRAIN_GRACE_S
                open_streams = [fd for fd in streams if fd in selector.get_map()]
                if wait_status is not None and not open_streams:
                    break
                if drain_deadline is not None and now >= drain_deadline:
                    self._note("a background process outside our reach kept the output open")
                    break
                wake_at = drain_deadline if drain_deadline is not None else deadline
                wait_s = max(0.0, wake_at - now)
                if pidfd is None or timed_out:
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
                        continue
                    kind = streams[fd]
                    if kind == "stdout":
                        stdout.feed(chunk)
                    elif kind == "stderr":
                        stderr.feed(chunk)
                    elif kind == "status":
                        status += chunk[:4096]
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
            self._kill_everything(proc, cgroups)
            _, wait_status, usage = os.wait4(proc.pid, 0)
            cpu_used_s = _cpu_s(usage)
            proc.returncode = os.waitstatus_to_exitcode(wait_status)
        wall_s = time.monotonic() - start

        oom = cgroups.oom_killed() if cgroups else False
        if cgroups is not None:
            cpu_used_s = max(cpu_used_s, cgroups.cpu_used_s())
        outcome, returncode = self._classify(
            wait_status, bytes(status), timed_out, oom, cpu_used_s, stderr.text()
        )
        return SandboxResult(
            outcome=outcome,
            returncode=returncode,
            stdout=stdout.text(),
            stderr=stderr.text(),
            output_truncated=stdout.truncated or stderr.truncated,
            result=bytes(result) if result and not result_oversized else None,
            result_oversized=result_oversized,
            wall_s=wall_s,
            isolation=self.isolation,
            detail="; ".join(self.notes),
        )

    def _kill_everything(self, proc: subprocess.Popen[bytes], cgroups: _Cgroups | None) -> None:
        # Killing bwrap's monitor makes its pid 1 die (--die-with-parent), and the kernel
        # then kills the whole pid namespace. The cgroup sweep catches anything else,
        # including unsafe-mode daemons that left our session.
        _kill_group(proc.pid)
        if cgroups is not None and cgroups.procs_files and not cgroups.kill_all():
            self._note("some sandbox processes survived repeated SIGKILL sweeps")

    def _classify(self, wait_status: int, status: bytes, timed_out: bool, oom: bool,
                  cpu_used_s: float, stderr_text: str) -> tuple[str, int | None]:
        limits = self.limits
        launcher_error = status.partition(b"!")[2]
        if launcher_error or (not status.startswith(b".") and not timed_out):
            why = launcher_error.decode(errors="replace") if launcher_error else (
                _last_lines(stderr_text, 3) or f"wait status {wait_status}")
            self.notes.insert(0, f"the sandbox did not start the command: {why}")
            return "infra-error", None
        if timed_out:
            if not status.startswith(b"."):
                self.notes.insert(0, "the sandbox was still starting at the timeout")
                return "infra-error", None
            self.notes.insert(0, f"killed after the wall-clock limit of {limits.timeout_s:g} s")
            return "timeout", None

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

        if oom:
            if code == 0:
                # Only a helper process was killed; the command itself finished cleanly,
                # so its result stands.
                self._note(f"the OOM killer stopped a child process (limit {limits.memory_mb} MB)")
                return "exited", returncode
            self.notes.insert(0, f"the memory cgroup's OOM killer fired (limit {limits.memory_mb} MB)")
            return "memory", returncode
        if signum == signal.SIGXCPU or (
            signum == signal.SIGKILL and cpu_used_s >= 0.95 * limits.effective_cpu_s
        ):
            self.notes.insert(0, f"killed at the CPU-time limit of {limits.effective_cpu_s:g} s")
            return "timeout", returncode
        if _looks_out_of_memory(stderr_text, signum, code):
            self.notes.insert(0, "ran out of memory (MemoryError or std::bad_alloc; "
                                 f"address-space backstop {limits.address_space_bytes // _MIB} MB)")
            return "memory", returncode
        if signum is not None:
            name = signal.Signals(signum).name if signum in signal.valid_signals() else str(signum)
            self.notes.insert(0, f"killed by {name}")
            return "signalled", returncode
        return "exited", returncode


def _looks_out_of_memory(stderr_text: str, signum: int | None, code: int | None) -> bool:
    """A Python MemoryError traceback or a C++ bad_alloc abort ends the captured stderr."""
    if code == 0:
        return False
    tail = _last_lines(stderr_text, 4)
    lines = tail.splitlines()
    last = lines[-1] if lines else ""
    if code is not None and (last == "MemoryError" or last.startswith("MemoryError:")):
        return True
    return signum == signal.SIGABRT and "std::bad_alloc" in tail


def _last_lines(text: str, count: int) -> str:
    return "\n".join(line for line in text.strip().splitlines()[-count:])


def _cpu_s(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


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
