"""What this machine offers to isolate trainee code, and the mode `grade` will use.

Three isolation modes, chosen by who runs the grader:

* `bubblewrap-root` (the grader runs as root): bubblewrap without a user namespace, and the
  command drops to a fresh unused uid with `setpriv`. Launched by root *with* a user
  namespace, bwrap would map the sandbox uid to host root (ART-FACTS sandbox fact 2).
* `bubblewrap-user` (a normal user): bubblewrap in an unprivileged user namespace. The
  sandbox uid maps to the user's own uid (sandbox fact 8), never to root; bwrap drops every
  capability and sets no-new-privs.
* `unsafe-subprocess`: no isolation at all, only with `grade --unsafe`.

The limits come from cgroups where some are writable (`secureml.cgroups`), else from
rlimits plus the supervisor (`secureml.proctree`); `Capabilities.limits` says which
mechanism enforces each one. `secureml doctor` prints all of this with a fix per gap.

Only the standard library is used, and the probe runs once per process.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass

from secureml import cgroups
from secureml.seccomp import seccomp_program

__all__ = ["ROOT", "UNSAFE", "USER", "Capabilities", "Check", "capabilities", "doctor_checks"]

ROOT = "bubblewrap-root"
USER = "bubblewrap-user"
UNSAFE = "unsafe-subprocess"

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
_TOOL_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
# RLIMIT_NPROC is counted per user namespace since Linux 5.14 ("ucounts"): inside a fresh
# namespace it caps that sandbox alone (measured here: 32 inside while the same uid ran 50
# processes outside). Before, it counted every process of the uid on the host.
_PER_NAMESPACE_NPROC_KERNEL = (5, 14)

INSTALL_BUBBLEWRAP = "sudo apt-get install bubblewrap   (Fedora: sudo dnf install bubblewrap)"
DELEGATE_FIX = ("run the grader in a delegated cgroup: systemd-run --user --scope -p Delegate=yes "
                "secureml grade ...")


@dataclass(frozen=True)
class Tools:
    bwrap: str | None
    setpriv: str | None
    shell: str | None
    prlimit: str | None
    bwrap_version: tuple[int, ...] | None


@dataclass(frozen=True)
class Capabilities:
    """What the probe found, and the mode and limit mechanisms it leads to."""

    is_root: bool
    tools: Tools
    user_namespaces: bool | None  # None: not probed (not needed, or no bwrap)
    user_namespaces_detail: str
    seccomp: bool
    seccomp_detail: str
    cgroup_plan: cgroups.CgroupPlan | None
    cgroup_reasons: tuple[str, ...]
    mode: str | None  # ROOT or USER, or None when trainee code cannot be isolated
    problem: str | None  # why not, when mode is None
    per_namespace_nproc: bool

    @property
    def cgroup_controllers(self) -> frozenset[str]:
        return self.cgroup_plan.controllers if self.cgroup_plan else frozenset()

    @property
    def limits(self) -> dict[str, str]:
        """Which mechanism enforces each limit (memory, processes, cpu, time)."""
        return limit_mechanisms(self)


def _kernel_version() -> tuple[int, ...]:
    numbers = re.findall(r"\d+", platform.release())[:2]
    return tuple(int(n) for n in numbers) or (0,)


def find_tools() -> Tools:
    def which(name: str) -> str | None:
        return shutil.which(name, path=_TOOL_PATH)

    def inside_usr(path: str | None) -> str | None:
        # setpriv, sh and prlimit run inside the sandbox, which sees only /usr and its links.
        return path if path and os.path.realpath(path).startswith("/usr/") else None

    bwrap = which("bwrap")
    version = None
    if bwrap:
        try:
            text = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10,
                                  env={"PATH": SYSTEM_PATH}).stdout
            found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
            version = tuple(int(g) for g in found.groups() if g is not None) if found else None
        except (OSError, subprocess.TimeoutExpired):
            version = None
    return Tools(bwrap, inside_usr(which("setpriv")), inside_usr(which("sh")), inside_usr(which("prlimit")),
                 version)


# --------------------------------------------------------------------------------------
# Who the sandboxed child is and what it sees: the probe below and secureml.sandbox build
# their bwrap commands from these.

# Fresh uids are drawn from here. Far above any uid a distribution hands out, below 2**31
# (some tools store uids as signed 32-bit) and clear of systemd's container ranges.
_SANDBOX_UID_MIN = 1_900_000_000
_SANDBOX_UID_SPAN = 100_000_000

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


def fresh_uid() -> int:
    return _SANDBOX_UID_MIN + secrets.randbelow(_SANDBOX_UID_SPAN)


def setpriv_args(setpriv: str, uid: int) -> list[str]:
    return [
        setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
        "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
    ]


def system_bind_args() -> list[str]:
    """Read-only /usr, the merged-/usr links, and the few /etc files Python needs."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in _ROOT_LINKS:
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            args += ["--ro-bind", name, name]
    # bwrap would create /etc as 0700 (see sandbox._readonly_binds), hiding these from the sandbox.
    args += ["--perms", "0755", "--dir", "/etc"]
    for name in _ETC_FILES:
        if os.path.exists(name):
            args += ["--ro-bind", name, name]
    return args


def probe_argv(tools: Tools, mode: str, *, seccomp_fd: int | None) -> list[str]:
    """A bwrap command that starts a trivial sandbox the way a real run does."""
    assert tools.bwrap and tools.shell
    argv = [tools.bwrap, *system_bind_args(), "--proc", "/proc", "--dev", "/dev",
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--die-with-parent", "--new-session"]
    if mode == USER:
        argv.append("--unshare-user")
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    argv.append("--")
    if mode == ROOT:
        assert tools.setpriv
        argv += setpriv_args(tools.setpriv, fresh_uid())
    return [*argv, tools.shell, "-c", "exit 0"]


def _run_probe(tools: Tools, mode: str, *, with_seccomp: bool) -> str | None:
    """None when a sandbox starts in `mode`, else bwrap's own words."""
    program = seccomp_program(supervised_memory=False) if with_seccomp else None
    read_end = None
    pass_fds: tuple[int, ...] = ()
    if program is not None:
        read_end, write_end = os.pipe()
        os.write(write_end, program)
        os.close(write_end)
        pass_fds = (read_end,)
    try:
        # 10 s: the probe takes a few milliseconds; a slow, loaded CI machine gets slack.
        done = subprocess.run(probe_argv(tools, mode, seccomp_fd=read_end), stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=10, env={"PATH": SYSTEM_PATH},
                              pass_fds=pass_fds)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"running bubblewrap failed ({exc})"
    finally:
        if read_end is not None:
            os.close(read_end)
    if done.returncode != 0:
        return done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
    return None


@functools.lru_cache(maxsize=4)
def _capabilities(euid: int, probe_user_namespaces: bool) -> Capabilities:
    is_root = euid == 0
    tools = find_tools()
    plan, reasons = cgroups.discover()
    per_ns_nproc = _kernel_version() >= _PER_NAMESPACE_NPROC_KERNEL
    seccomp_supported = platform.machine() == "x86_64"
    seccomp_detail = ("x86-64 filter" if seccomp_supported
                      else f"no filter for {platform.machine()}: the sandbox runs without one")
    mode = problem = None
    if not sys.platform.startswith("linux"):
        problem = "bubblewrap needs Linux"
    elif tools.bwrap is None:
        problem = "bwrap is not installed (Debian package bubblewrap)"
    elif tools.shell is None:
        problem = "sh is not installed under /usr (Debian package dash)"
    elif is_root and tools.setpriv is None:
        problem = "setpriv is not installed under /usr (Debian package util-linux)"
    wanted = ROOT if is_root else USER
    error = None
    if problem is None:
        error = _run_probe(tools, wanted, with_seccomp=seccomp_supported)
        if error is not None and seccomp_supported and _run_probe(tools, wanted, with_seccomp=False) is None:
            seccomp_supported = False
            seccomp_detail = f"bubblewrap cannot load the filter ({error}): the sandbox runs without one"
            error = None
        if error is None:
            mode = wanted
        elif wanted == USER:
            problem = f"bubblewrap cannot create an unprivileged user namespace here ({error})"
        else:
            problem = f"bubblewrap cannot create a sandbox here ({error})"
    user_ns: bool | None = None
    user_ns_detail = ""
    if wanted == USER and problem is not None and error is not None:
        user_ns, user_ns_detail = False, f"refused: {error}"
    elif wanted == USER and mode is not None:
        user_ns, user_ns_detail = True, "unprivileged user namespaces work"
    elif probe_user_namespaces and tools.bwrap and tools.shell:
        error = _run_probe(tools, USER, with_seccomp=False)
        user_ns = error is None
        user_ns_detail = "user namespaces work" if user_ns else f"refused: {error}"
    return Capabilities(
        is_root=is_root, tools=tools, user_namespaces=user_ns, user_namespaces_detail=user_ns_detail,
        seccomp=seccomp_supported, seccomp_detail=seccomp_detail, cgroup_plan=plan,
        cgroup_reasons=tuple(reasons), mode=mode, problem=problem, per_namespace_nproc=per_ns_nproc,
    )


def capabilities(*, probe_user_namespaces: bool = False) -> Capabilities:
    """This machine's isolation capabilities for the current user (probed once per process).

    probe_user_namespaces: also try an unprivileged user namespace when the mode does not
        need one (root), for `secureml doctor`.
    """
    return _capabilities(os.geteuid(), probe_user_namespaces)


def limit_mechanisms(found: Capabilities) -> dict[str, str]:
    """Which mechanism enforces each limit: memory, processes, cpu, time."""
    mode = found.mode
    controllers = found.cgroup_controllers
    version = f"cgroup v{found.cgroup_plan.version}" if found.cgroup_plan else ""
    if "pids" in controllers:
        processes = f"{version} pids.max"
    elif mode == ROOT:
        processes = "RLIMIT_NPROC of the sandbox's fresh uid"
    elif mode == USER and found.per_namespace_nproc and found.tools.prlimit:
        processes = "RLIMIT_NPROC inside the sandbox's user namespace"
    else:
        processes = "the supervisor's count of the sandbox's threads"
    return {
        "memory": (f"{version} memory limit" if "memory" in controllers
                   else "the supervisor (sum of resident memory), RLIMIT_AS as a backstop"),
        "processes": processes,
        "cpu": (f"{version} CPU weight and quota" if "cpu" in controllers
                else "the supervisor (stops the sandbox beyond its CPU share)"),
        "time": "the supervisor (wall clock minus waiting for a CPU, and a CPU-time budget)",
    }


# --------------------------------------------------------------------------------------
# secureml doctor


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    found: str
    fix: str = ""


def doctor_checks(found: Capabilities | None = None) -> list[Check]:
    """One check per capability grading needs: what was found, and the fix for each gap."""
    found = found or capabilities(probe_user_namespaces=True)
    tools = found.tools
    checks = [Check("platform", sys.platform.startswith("linux"), f"{sys.platform} {platform.release()}",
                    "" if sys.platform.startswith("linux") else "grade on Linux (a VM or WSL2 works)")]
    checks.append(Check("user", True, "root" if found.is_root else f"uid {os.geteuid()} (not root)"))
    if tools.bwrap:
        version = ".".join(map(str, tools.bwrap_version)) if tools.bwrap_version else "unknown version"
        checks.append(Check("bubblewrap", True, f"{tools.bwrap} {version}"))
    else:
        checks.append(Check("bubblewrap", False, "not installed", INSTALL_BUBBLEWRAP))
    if found.is_root:
        checks.append(Check("setpriv", tools.setpriv is not None, tools.setpriv or "not installed",
                            "" if tools.setpriv else "sudo apt-get install util-linux"))
    if found.user_namespaces is None:
        checks.append(Check("user namespaces", found.is_root, "not probed (needs bubblewrap)",
                            "" if found.is_root else INSTALL_BUBBLEWRAP))
    else:
        fix = "" if found.user_namespaces or found.is_root else (
            "allow unprivileged user namespaces: sudo sysctl kernel.unprivileged_userns_clone=1, "
            "or on Ubuntu 24.04+ kernel.apparmor_restrict_unprivileged_userns=0, or grade as root")
        detail = found.user_namespaces_detail + (" (not needed as root)" if found.is_root else "")
        checks.append(Check("user namespaces", bool(found.user_namespaces) or found.is_root, detail, fix))
    checks.append(Check("seccomp", found.seccomp, found.seccomp_detail,
                        "" if found.seccomp else "grade on x86-64 for the syscall filter"))
    if found.cgroup_plan is not None:
        cgroup_fix = "" if found.cgroup_plan.controllers >= {"memory", "pids", "cpu"} else DELEGATE_FIX
        detail = found.cgroup_plan.describe()
        if found.cgroup_plan.notes:
            detail += "; " + "; ".join(found.cgroup_plan.notes)
        checks.append(Check("cgroups", True, detail, cgroup_fix))
    else:
        reasons = "; ".join(found.cgroup_reasons) or "none writable"
        fix = "" if found.mode is None else (DELEGATE_FIX if not found.is_root else
                                             "mount the cgroup controllers (memory, pids, cpu)")
        checks.append(Check("cgroups", False, f"none writable: {reasons} (the supervisor enforces limits)", fix))
    if found.mode is None:
        checks.append(Check("isolation", False, f"trainee code cannot be isolated: {found.problem}",
                            INSTALL_BUBBLEWRAP if found.tools.bwrap is None else
                            "see the checks above, or grade as root"))
    else:
        checks.append(Check("isolation", True, found.mode))
        for resource, mechanism in found.limits.items():
            checks.append(Check(f"limit: {resource}", True, mechanism))
    return checks
