"""Per-run cgroups: the kernel's own limits on a sandbox's memory, processes and CPU.

Which cgroup hierarchy a machine mounts, and where in it we may write, is discovered, never
assumed (ART-FACTS sandbox fact 9). `discover()` reads /proc/self/cgroup, /proc/self/mountinfo
and the cgroup files themselves, and returns a `CgroupPlan`, or None with the reasons:

* **cgroup v1** (this machine, older distributions): one group per controller (memory,
  pids, cpu, cpuacct) under our own group in that controller's hierarchy. The files are
  root's, so in practice only root gets this.
* **cgroup v2** (most current distributions): one group per run with `memory.max`,
  `pids.max`, `cpu.max` and `cpu.weight`. The kernel's "no internal processes" rule says
  a group that hands controllers to its children holds no process itself, and moving a
  process needs write access to the common ancestor's `cgroup.procs` (the kernel's
  cgroup-v2 guide, "Delegation Containment"). So the runs' parent is, in this order:
    1. root only: `<mount>/secureml`, a child of the true root group (which is exempt from
       the rule), as container engines with a cgroupfs driver do;
    2. our own group, when it is delegated to us (we may write it) and holds no process
       but ours, e.g. under `systemd-run --user --scope -p Delegate=yes`: we first move
       ourselves into a leaf `secureml-grader-...` inside it;
    3. the nearest ancestor we may write that holds no process, e.g. the `app-*.slice` of
       a desktop terminal inside `user@UID.service`, which systemd delegates to the user.

Each group is named after the process that made it and that process's start time, so the
next grader can tell the leftovers of a dead one (kill -9) from the groups of a live one
and sweep them (`sweep_leftovers`).

Only the standard library is used: the grader imports this before torch.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CgroupPlan", "RunCgroup", "discover", "process_start_ticks", "sweep_leftovers"]

_MIB = 1024 * 1024

# The controllers that limit a run, and what each one limits (for messages).
LIMIT_CONTROLLERS = ("memory", "pids", "cpu")
# cgroup v1 measures CPU time in its own hierarchy; v2's cpu.stat has it in the group.
_V1_MEASURE = "cpuacct"

# The scheduler period of a CPU quota. 100 ms is the kernel's default (cpu.cfs_period_us,
# and the second field of cpu.max): long enough to cost nothing, short enough that a
# throttled neighbour waits at most that long.
CPU_PERIOD_US = 100_000
# cpu.shares is 1024 per CPU in v1, cpu.weight 100 per CPU in v2 (the kernel's defaults for
# one nice-0 task's worth of CPU), so a run weighs as much as its thread budget.
_V1_SHARES_PER_CPU = 1024
_V2_WEIGHT_PER_CPU = 100
_V2_WEIGHT_MAX = 10_000

# How long we keep sweeping a group with SIGKILL before giving up (a fork bomb inside a
# pids-limited group is gone after a few sweeps), and how long rmdir may wait for reaping.
_KILL_SWEEP_S = 5.0

RUN_PREFIX = "secureml-sandbox"
_GRADER_LEAF_PREFIX = "secureml-grader"
_ROOT_PARENT_NAME = "secureml"
# <prefix>-<pid>-<start ticks>-<random>; the leaf of a moved grader has no random part.
_NAME = re.compile(rf"^(?:{RUN_PREFIX}-(\d+)-(\d+)-[0-9a-f]+|{_GRADER_LEAF_PREFIX}-(\d+)-(\d+))$")


# --------------------------------------------------------------------------------------
# Where the hierarchies are


@dataclass(frozen=True)
class Mount:
    """One mounted cgroup hierarchy, as /proc/self/mountinfo describes it."""

    version: int  # 1 or 2
    controllers: frozenset[str]  # v1: the controllers bound to it; v2: empty (see files)
    root: str  # the group at the mount point, relative to the hierarchy's root
    point: Path


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup and cgroup2 mounts in a /proc/PID/mountinfo text."""
    mounts = []
    for line in text.splitlines():
        before, _, after = line.partition(" - ")
        fields, after_fields = before.split(), after.split()
        if len(fields) < 5 or len(after_fields) < 3:
            continue
        fstype, options = after_fields[0], after_fields[2].split(",")
        point = Path(_unescape_mountinfo(fields[4]))
        if fstype == "cgroup2":
            mounts.append(Mount(2, frozenset(), fields[3], point))
        elif fstype == "cgroup":
            mounts.append(Mount(1, frozenset(o for o in options if o in _V1_CONTROLLERS), fields[3], point))
    return mounts


# Controller names a v1 mount's super options may carry (the rest are mount options).
_V1_CONTROLLERS = frozenset({
    "memory", "pids", "cpu", "cpuacct", "cpuset", "blkio", "io", "devices", "freezer",
    "net_cls", "net_prio", "perf_event", "hugetlb", "rdma", "misc",
})


def _unescape_mountinfo(text: str) -> str:
    # mountinfo writes space, tab, newline and backslash in paths as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), text)


def parse_proc_cgroup(text: str) -> tuple[dict[str, str], str | None]:
    """(v1 controller -> our group's path, our v2 group's path or None) from /proc/PID/cgroup."""
    v1: dict[str, str] = {}
    v2 = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy_id, controllers, path = parts
        if hierarchy_id == "0" and controllers == "":
            v2 = path
        else:
            for controller in controllers.split(","):
                if controller:
                    v1[controller] = path
    return v1, v2


def _group_dir(mount: Mount, own_path: str) -> Path | None:
    """Where our group `own_path` appears below `mount`, or None if the mount cannot show it."""
    relative = own_path
    if mount.root != "/":
        if not (own_path == mount.root or own_path.startswith(mount.root.rstrip("/") + "/")):
            return None
        relative = own_path[len(mount.root):]
    return Path(str(mount.point) + relative.rstrip("/")) if relative not in ("", "/") else mount.point


# --------------------------------------------------------------------------------------
# What we may use


@dataclass(frozen=True)
class CgroupPlan:
    """Where this process makes its runs' groups, and with which controllers.

    parents: v1: controller -> the directory runs get a group in; v2: {"unified": directory}.
    controllers: the limiting controllers every run gets (a subset of memory, pids, cpu).
    grader_leaf: v2 only: the leaf this process must move into first (see the module
        docstring, case 2), or None.
    create_parent: v2 only: the parent is ours to create below the root group (case 1).
    """

    version: int
    parents: Mapping[str, Path]
    controllers: frozenset[str]
    grader_leaf: Path | None = None
    create_parent: bool = False
    notes: tuple[str, ...] = ()  # why a limiting controller is missing

    @property
    def summary(self) -> str:
        """e.g. "cgroup v2 (memory, pids, cpu)"."""
        return f"cgroup v{self.version} ({', '.join(c for c in LIMIT_CONTROLLERS if c in self.controllers)})"

    def describe(self) -> str:
        where = sorted({str(path) for path in self.parents.values()})
        return f"{self.summary} under {', '.join(where)}"

    def prepare(self) -> None:
        """Once per process, before the first run: v2's move into the grader leaf and the
        controllers of the parent's subtree. Raises OSError when that is refused."""
        if self.version != 2:
            return
        parent = self.parents["unified"]
        if self.grader_leaf is not None and not _in_group(self.grader_leaf):
            self.grader_leaf.mkdir(exist_ok=True)
            _write(self.grader_leaf / "cgroup.procs", str(os.getpid()))
        if self.create_parent:
            _enable_controllers(parent.parent, self.controllers)
            parent.mkdir(exist_ok=True)
        _enable_controllers(parent, self.controllers)

    def create_run(self, *, memory_bytes: int, max_tasks: int, cpus: float) -> RunCgroup:
        """A fresh group for one run, its limits written; raises OSError if that fails."""
        name = f"{RUN_PREFIX}-{os.getpid()}-{process_start_ticks(os.getpid()) or 0}-{secrets.token_hex(6)}"
        group: RunCgroup
        if self.version == 2:
            group = _V2Run({"unified": self.parents["unified"] / name}, self.controllers)
        else:
            dirs = {controller: parent / name for controller, parent in self.parents.items()}
            group = _V1Run(dirs, self.controllers)
        try:
            for directory in group.dirs.values():
                directory.mkdir()
            group.write_limits(memory_bytes=memory_bytes, max_tasks=max_tasks, cpus=cpus)
        except OSError:
            group.remove()
            raise
        return group


def _in_group(directory: Path) -> bool:
    try:
        return str(os.getpid()) in (directory / "cgroup.procs").read_text().split()
    except OSError:
        return False


def _enable_controllers(directory: Path, controllers: frozenset[str]) -> None:
    enabled = set(_read(directory / "cgroup.subtree_control").split())
    missing = [c for c in LIMIT_CONTROLLERS if c in controllers and c not in enabled]
    if missing:
        _write(directory / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))


Writable = Callable[[Path], bool]


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


def discover(
    *,
    proc_cgroup: str | None = None,
    mountinfo: str | None = None,
    pid: int | None = None,
    is_root: bool | None = None,
    writable: Writable = _writable,
) -> tuple[CgroupPlan | None, list[str]]:
    """The cgroup plan of this process (or of the given texts, for tests), and the reasons
    for anything missing. None when no limiting controller can be used."""
    proc_cgroup = _read(Path("/proc/self/cgroup")) if proc_cgroup is None else proc_cgroup
    mountinfo = _read(Path("/proc/self/mountinfo")) if mountinfo is None else mountinfo
    pid = os.getpid() if pid is None else pid
    is_root = os.geteuid() == 0 if is_root is None else is_root
    mounts = parse_mountinfo(mountinfo)
    own_v1, own_v2 = parse_proc_cgroup(proc_cgroup)
    reasons: list[str] = []

    unified = next((m for m in mounts if m.version == 2), None)
    if unified is not None and own_v2 is not None:
        root_controllers = set(_read(unified.point / "cgroup.controllers").split())
        if "memory" in root_controllers:
            # memory is not bound to a v1 hierarchy: this is a v2 (or v2-first) machine.
            plan = _discover_v2(unified, own_v2, pid, is_root, writable, reasons)
            return plan, reasons
    plan = _discover_v1(mounts, own_v1, writable, reasons)
    if plan is None and unified is None:
        reasons.append("no cgroup hierarchy is mounted")
    return plan, reasons


def _discover_v1(mounts: list[Mount], own: dict[str, str], writable: Writable,
                 reasons: list[str]) -> CgroupPlan | None:
    parents: dict[str, Path] = {}
    for controller in (*LIMIT_CONTROLLERS, _V1_MEASURE):
        mount = next((m for m in mounts if m.version == 1 and controller in m.controllers), None)
        if mount is None or controller not in own:
            reasons.append(f"no cgroup v1 {controller} hierarchy is mounted")
            continue
        directory = _group_dir(mount, own[controller])
        if directory is None or not directory.is_dir():
            reasons.append(f"our cgroup v1 {controller} group is not visible under {mount.point}")
        elif not writable(directory):
            reasons.append(f"cgroup v1 {controller}: {directory} is not writable by this user")
        else:
            parents[controller] = directory
    controllers = frozenset(c for c in LIMIT_CONTROLLERS if c in parents)
    if not controllers:
        return None
    return CgroupPlan(1, parents, controllers,
                      notes=tuple(r for r in reasons if _V1_MEASURE not in r))


def _discover_v2(mount: Mount, own_path: str, pid: int, is_root: bool, writable: Writable,
                 reasons: list[str]) -> CgroupPlan | None:
    own = _group_dir(mount, own_path)
    if own is None or not own.is_dir():
        reasons.append(f"our cgroup v2 group {own_path} is not visible under {mount.point}")
        return None
    start = process_start_ticks(pid) or 0

    def owned(directory: Path) -> bool:
        return all(writable(p) for p in (directory, directory / "cgroup.procs",
                                         directory / "cgroup.subtree_control"))

    def controllers_of(directory: Path) -> frozenset[str]:
        return frozenset(c for c in _read(directory / "cgroup.controllers").split() if c in LIMIT_CONTROLLERS)

    def plan(parent: Path, available: frozenset[str], leaf: Path | None = None,
             create_parent: bool = False) -> CgroupPlan:
        notes = tuple(f"cgroup v2: the {c} controller is not available in {parent}"
                      for c in LIMIT_CONTROLLERS if c not in available)
        return CgroupPlan(2, {"unified": parent}, available, leaf, create_parent, notes)

    # 1. root: a `secureml` group below the true root group.
    is_true_root = not (mount.point / "cgroup.type").exists()
    if is_root and is_true_root and owned(mount.point):
        available = controllers_of(mount.point)
        if {"memory", "pids"} <= available:
            return plan(mount.point / _ROOT_PARENT_NAME, available, create_parent=True)
    # 2. our own group, delegated to us and holding no process but ours.
    if own != mount.point and owned(own):
        members = _read(own / "cgroup.procs").split()
        available = controllers_of(own)
        if members == [str(pid)] and {"memory", "pids"} <= available:
            return plan(own, available, own / f"{_GRADER_LEAF_PREFIX}-{pid}-{start}")
        if members != [str(pid)]:
            reasons.append(f"cgroup v2: our group {own} also holds other processes")
    # 3. the nearest ancestor we may write that holds no process.
    for ancestor in own.parents:
        if not ancestor.is_relative_to(mount.point):
            break
        if owned(ancestor) and not _read(ancestor / "cgroup.procs").split():
            available = controllers_of(ancestor)
            if {"memory", "pids"} <= available:
                return plan(ancestor, available)
            reasons.append(f"cgroup v2: {ancestor} is writable but lacks the memory or pids controller")
            break
        if ancestor == mount.point:
            break
    reasons.append(f"cgroup v2: no delegated group is writable by this user around {own}")
    return None


# --------------------------------------------------------------------------------------
# One run's groups


class RunCgroup:
    """The group(s) of one run: limits written at creation, then measured, killed, removed."""

    version: int

    def __init__(self, dirs: dict[str, Path], controllers: frozenset[str]) -> None:
        self.dirs = dirs
        self.controllers = controllers

    @property
    def procs_files(self) -> list[str]:
        return [str(directory / "cgroup.procs") for directory in self.dirs.values()]

    def write_limits(self, *, memory_bytes: int, max_tasks: int, cpus: float) -> None:
        raise NotImplementedError

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer took from this group."""
        raise NotImplementedError

    def cpu_usage_s(self) -> float | None:
        """CPU time used by every process of the run, or None when not measured."""
        raise NotImplementedError

    def members(self) -> list[int]:
        pids: set[int] = set()
        for procs in self.procs_files:
            pids.update(int(line) for line in _read(Path(procs)).split())
        return sorted(pids)

    def kill_all(self) -> bool:
        """SIGKILL every member until none is left; False if some survived the sweep."""
        return _kill_members(self.members, self._kill_switch)

    def _kill_switch(self) -> bool:
        return False

    def remove(self) -> None:
        for directory in self.dirs.values():
            _remove_group(directory)


class _V1Run(RunCgroup):
    version = 1

    def write_limits(self, *, memory_bytes: int, max_tasks: int, cpus: float) -> None:
        if "memory" in self.dirs:
            memory = self.dirs["memory"]
            _write(memory / "memory.limit_in_bytes", str(memory_bytes))
            # Without swap accounting the group could swap out past its limit.
            if (memory / "memory.memsw.limit_in_bytes").exists():
                try:
                    _write(memory / "memory.memsw.limit_in_bytes", str(memory_bytes))
                except OSError:
                    pass  # swap accounting off: there is no swap to account for
        if "pids" in self.dirs:
            _write(self.dirs["pids"] / "pids.max", str(max_tasks))
        if "cpu" in self.dirs:
            cpu = self.dirs["cpu"]
            _write(cpu / "cpu.shares", str(max(2, round(_V1_SHARES_PER_CPU * cpus))))
            _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(max(1000, round(CPU_PERIOD_US * cpus))))

    def oom_kills(self) -> int:
        if "memory" not in self.dirs:
            return 0
        fields = _key_values(_read(self.dirs["memory"] / "memory.oom_control"))
        if "oom_kill" in fields:
            return fields["oom_kill"]
        # Kernels before 4.13 have no oom_kill counter; a hit limit is the next best sign.
        return _int(_read(self.dirs["memory"] / "memory.failcnt"))

    def cpu_usage_s(self) -> float | None:
        if _V1_MEASURE not in self.dirs:
            return None
        text = _read(self.dirs[_V1_MEASURE] / "cpuacct.usage").strip()
        return int(text) / 1e9 if text.isdigit() else None


class _V2Run(RunCgroup):
    version = 2

    @property
    def dir(self) -> Path:
        return self.dirs["unified"]

    def write_limits(self, *, memory_bytes: int, max_tasks: int, cpus: float) -> None:
        if "memory" in self.controllers:
            _write(self.dir / "memory.max", str(memory_bytes))
            _write_if_present(self.dir / "memory.swap.max", "0")
            # One OOM kill takes the whole run: no half-dead sandbox keeps a result pipe open.
            _write_if_present(self.dir / "memory.oom.group", "1")
        if "pids" in self.controllers:
            _write(self.dir / "pids.max", str(max_tasks))
        if "cpu" in self.controllers:
            weight = min(_V2_WEIGHT_MAX, max(1, round(_V2_WEIGHT_PER_CPU * cpus)))
            _write(self.dir / "cpu.weight", str(weight))
            _write(self.dir / "cpu.max", f"{max(1000, round(CPU_PERIOD_US * cpus))} {CPU_PERIOD_US}")

    def oom_kills(self) -> int:
        return _key_values(_read(self.dir / "memory.events")).get("oom_kill", 0)

    def cpu_usage_s(self) -> float | None:
        usage = _key_values(_read(self.dir / "cpu.stat")).get("usage_usec")
        return None if usage is None else usage / 1e6

    def _kill_switch(self) -> bool:
        return _kill_switch(self.dir)


def _kill_switch(directory: Path) -> bool:
    """cgroup.kill (v2, Linux 5.14) kills every member at once, new forks included."""
    switch = directory / "cgroup.kill"
    return switch.exists() and _write_quietly(switch, "1")


def _kill_members(members: Callable[[], list[int]], kill_switch: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + _KILL_SWEEP_S
    kill_switch()
    while True:
        pids = members()
        if not pids:
            return True
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def _remove_group(directory: Path) -> None:
    # rmdir fails with EBUSY until the last killed member has been reaped.
    deadline = time.monotonic() + _KILL_SWEEP_S
    while True:
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                return
            time.sleep(0.02)


# --------------------------------------------------------------------------------------
# Leftovers of dead graders


def process_start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot), or None if there is no such process.

    A pid alone can be reused; a pid and its start time name one process forever.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[19])


def sweep_leftovers(plan: CgroupPlan) -> list[Path]:
    """Kill and remove the run groups (and v2 grader leaves) of processes that are gone.

    A grader killed with -9 cannot remove its groups; the next one does. Groups of live
    processes (another grader running now) are left alone. Returns what was removed.
    """
    removed = []
    parents = set(plan.parents.values())
    if plan.grader_leaf is not None:
        parents.add(plan.grader_leaf.parent)
    for parent in parents:
        try:
            children = list(parent.iterdir())
        except OSError:
            continue
        for child in children:
            match = _NAME.match(child.name)
            if match is None or not child.is_dir() or child.is_symlink():
                continue
            pid, start = (int(g) for g in (match.group(1, 2) if match.group(1) else match.group(3, 4)))
            if process_start_ticks(pid) == start:
                continue  # its grader still runs
            members = lambda child=child: sorted(int(p) for p in _read(child / "cgroup.procs").split())  # noqa: E731
            kill_switch = lambda child=child: _kill_switch(child)  # noqa: E731
            if _kill_members(members, kill_switch):
                _remove_group(child)
                if not child.exists():
                    removed.append(child)
    return removed


# --------------------------------------------------------------------------------------
# Small file helpers


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _write_if_present(path: Path, text: str) -> None:
    if path.exists():
        _write(path, text)


def _write_quietly(path: Path, text: str) -> bool:
    try:
        _write(path, text)
        return True
    except OSError:
        return False


def _int(text: str) -> int:
    text = text.strip()
    return int(text) if text.isdigit() else 0


def _key_values(text: str) -> dict[str, int]:
    """`name value` lines (memory.events, cpu.stat, memory.oom_control) as a dict."""
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            values[parts[0]] = int(parts[1])
    return values
