"""Which cgroups a grader may use, decided from /proc/self/cgroup, /proc/self/mountinfo and the
cgroup files themselves. These are unit tests on fake trees in a temp folder: this machine
mounts cgroup v1 only, so cgroup v2 (root and delegated) cannot run for real here. The
layouts follow the kernel's cgroup-v2 guide (no internal processes, delegation through
write access to a group's directory, cgroup.procs and cgroup.subtree_control) and systemd's
(user@UID.service delegates its subtree to the user).
"""

from __future__ import annotations

import os
from pathlib import Path

from secureml import cgroups
from secureml.cgroups import CgroupPlan, discover, sweep_leftovers

PID = os.getpid()


def _group(path: Path, *, controllers: str = "", procs: str = "", subtree: str = "",
           root: bool = False) -> Path:
    """A fake cgroup v2 directory with the files discovery reads."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "cgroup.controllers").write_text(controllers + "\n")
    (path / "cgroup.procs").write_text(procs)
    (path / "cgroup.subtree_control").write_text(subtree + "\n")
    if not root:
        (path / "cgroup.type").write_text("domain\n")
    return path


def _v2_mountinfo(point: Path, root: str = "/") -> str:
    return f"35 24 0:30 {root} {point} rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"


def _v1_mountinfo(base: Path) -> str:
    lines = []
    for index, controller in enumerate(("cpu", "cpuacct", "memory", "pids", "freezer")):
        mount = f"{base / controller} rw,relatime - cgroup cgroup rw,{controller}"
        lines.append(f"{32 + index} 31 0:{29 + index} / {mount}")
    lines.append(f"41 31 0:38 / {base / 'unified'} rw,relatime - cgroup2 cgroup2 rw")
    return "\n".join(lines) + "\n"


def _writable_only(*paths: Path):
    allowed = {str(path) for path in paths}
    return lambda path: str(path) in allowed or str(path.parent) in allowed


# --------------------------------------------------------------------------- parsing


def test_mountinfo_lists_v1_controllers_and_the_v2_mount_and_unescapes_paths():
    text = ("32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
            "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
            "41 31 0:38 / /sys/fs/my\\040cgroup rw - cgroup2 cgroup2 rw\n"
            "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
    mounts = cgroups.parse_mountinfo(text)
    assert [(m.version, sorted(m.controllers), str(m.point)) for m in mounts] == [
        (1, ["cpu", "cpuacct"], "/sys/fs/cgroup/cpu,cpuacct"),
        (1, [], "/sys/fs/cgroup/systemd"),
        (2, [], "/sys/fs/my cgroup"),
    ]


def test_proc_cgroup_gives_v1_paths_per_controller_and_the_v2_path():
    v1, v2 = cgroups.parse_proc_cgroup("4:memory:/process_api/abc\n2:cpu,cpuacct:/\n1:name=systemd:/\n0::/user.slice\n")
    assert v1["memory"] == "/process_api/abc" and v1["cpu"] == v1["cpuacct"] == "/"
    assert v2 == "/user.slice"


# --------------------------------------------------------------------------- cgroup v1


def _v1_tree(tmp_path: Path) -> tuple[str, str]:
    base = tmp_path / "sys"
    for controller in ("cpu", "cpuacct", "pids", "freezer"):
        (base / controller).mkdir(parents=True)
    (base / "memory" / "process_api" / "abc").mkdir(parents=True)
    _group(base / "unified", controllers="hugetlb", root=True)  # hybrid: v2 mounted, no controllers
    proc = "8:pids:/\n4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n"
    return proc, _v1_mountinfo(base)


def test_v1_as_root_gets_memory_pids_and_cpu_under_its_own_groups(tmp_path):
    proc, mountinfo = _v1_tree(tmp_path)
    plan, reasons = discover(proc_cgroup=proc, mountinfo=mountinfo, pid=PID, is_root=True,
                             writable=lambda path: True)
    assert plan is not None and plan.version == 1
    assert plan.controllers == {"memory", "pids", "cpu"}
    assert plan.parents["memory"] == tmp_path / "sys" / "memory" / "process_api" / "abc"
    assert plan.parents["cpuacct"] == tmp_path / "sys" / "cpuacct"
    assert reasons == []


def test_v1_as_a_normal_user_gets_nothing_and_says_why(tmp_path):
    proc, mountinfo = _v1_tree(tmp_path)
    plan, reasons = discover(proc_cgroup=proc, mountinfo=mountinfo, pid=PID, is_root=False,
                             writable=lambda path: False)
    assert plan is None
    assert any("memory" in reason and "not writable" in reason for reason in reasons)


def test_v1_run_groups_get_memory_pids_and_a_cpu_share_and_quota(tmp_path):
    proc, mountinfo = _v1_tree(tmp_path)
    plan, _ = discover(proc_cgroup=proc, mountinfo=mountinfo, pid=PID, is_root=True,
                       writable=lambda path: True)
    group = plan.create_run(memory_bytes=1 << 30, max_tasks=66, cpus=2.0)
    assert (group.dirs["memory"] / "memory.limit_in_bytes").read_text() == str(1 << 30)
    assert (group.dirs["pids"] / "pids.max").read_text() == "66"
    assert (group.dirs["cpu"] / "cpu.shares").read_text() == "2048"
    assert (group.dirs["cpu"] / "cpu.cfs_quota_us").read_text() == "200000"
    assert (group.dirs["cpu"] / "cpu.cfs_period_us").read_text() == "100000"
    (group.dirs["memory"] / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    (group.dirs["cpuacct"] / "cpuacct.usage").write_text("1500000000\n")
    assert group.oom_kills() == 2 and group.cpu_usage_s() == 1.5
    assert group.dirs["memory"].name.startswith(f"secureml-sandbox-{PID}-")


# --------------------------------------------------------------------------- cgroup v2


def _v2_host(tmp_path: Path) -> Path:
    mount = _group(tmp_path / "cgroup", controllers="cpuset cpu io memory hugetlb pids rdma misc",
                   subtree="cpuset cpu io memory pids", root=True)
    _group(mount / "user.slice", controllers="cpu memory pids", subtree="memory pids")
    _group(mount / "user.slice" / "user-1000.slice", controllers="cpu memory pids", subtree="memory pids")
    return mount


def test_v2_as_root_uses_a_secureml_group_below_the_true_root(tmp_path):
    mount = _v2_host(tmp_path)
    session = _group(mount / "user.slice" / "user-1000.slice" / "session-3.scope",
                     controllers="memory pids", procs=f"{PID}\n123\n")
    plan, _ = discover(proc_cgroup=f"0::/user.slice/user-1000.slice/{session.name}\n",
                       mountinfo=_v2_mountinfo(mount), pid=PID, is_root=True, writable=lambda path: True)
    assert plan == CgroupPlan(2, {"unified": mount / "secureml"}, frozenset({"memory", "pids", "cpu"}),
                              create_parent=True)
    plan.prepare()
    assert (mount / "secureml").is_dir()
    group = plan.create_run(memory_bytes=512 << 20, max_tasks=40, cpus=1.0)
    assert group.dir.parent == mount / "secureml"
    assert (group.dir / "memory.max").read_text() == str(512 << 20)
    assert (group.dir / "pids.max").read_text() == "40"
    assert (group.dir / "cpu.max").read_text() == "100000 100000"
    assert (group.dir / "cpu.weight").read_text() == "100"


def test_v2_user_in_a_delegated_scope_moves_itself_into_a_leaf_and_enables_controllers(tmp_path):
    # systemd-run --user --scope -p Delegate=yes secureml grade ...: the scope is the user's
    # and holds only the grader.
    mount = _v2_host(tmp_path)
    service = _group(mount / "user.slice" / "user-1000.slice" / "user@1000.service",
                     controllers="cpu memory pids", subtree="cpu memory pids")
    scope = _group(service / "app.slice" / "run-r1.scope", controllers="cpu memory pids", procs=f"{PID}\n")
    plan, _ = discover(proc_cgroup="0::" + str(scope.relative_to(mount).as_posix()).join(["/", "\n"]),
                       mountinfo=_v2_mountinfo(mount), pid=PID, is_root=False,
                       writable=_writable_only(scope))
    assert plan is not None and plan.parents["unified"] == scope
    assert plan.grader_leaf == scope / f"secureml-grader-{PID}-{cgroups.process_start_ticks(PID)}"
    plan.prepare()
    assert (plan.grader_leaf / "cgroup.procs").read_text() == str(PID)
    assert (scope / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"


def test_v2_user_in_a_desktop_terminal_scope_uses_its_delegated_slice(tmp_path):
    # GNOME starts a terminal in app-....scope inside user@1000.service: the scope holds the
    # shell too, so runs go into the (empty) app slice above it, which is the user's.
    mount = _v2_host(tmp_path)
    service = _group(mount / "user.slice" / "user-1000.slice" / "user@1000.service",
                     controllers="cpu memory pids", subtree="cpu memory pids")
    app_slice = _group(service / "app.slice", controllers="cpu memory pids", subtree="cpu memory pids")
    terminal = _group(app_slice / "app-gnome-terminal-1.scope", controllers="cpu memory pids",
                      procs=f"4242\n{PID}\n")
    plan, reasons = discover(proc_cgroup=f"0::/{terminal.relative_to(mount).as_posix()}\n",
                             mountinfo=_v2_mountinfo(mount), pid=PID, is_root=False,
                             writable=_writable_only(service, app_slice, terminal))
    assert plan is not None and plan.parents["unified"] == app_slice and plan.grader_leaf is None
    assert plan.controllers == {"memory", "pids", "cpu"}
    assert any("other processes" in reason for reason in reasons)


def test_v2_user_without_the_cpu_controller_gets_memory_and_pids_and_a_note(tmp_path):
    # Older systemd delegates only memory and pids to user@.service.
    mount = _v2_host(tmp_path)
    service = _group(mount / "user.slice" / "user-1000.slice" / "user@1000.service",
                     controllers="memory pids", subtree="memory pids")
    scope = _group(service / "app.slice" / "run-r2.scope", controllers="memory pids", procs=f"{PID}\n")
    plan, _ = discover(proc_cgroup=f"0::/{scope.relative_to(mount).as_posix()}\n",
                       mountinfo=_v2_mountinfo(mount), pid=PID, is_root=False, writable=_writable_only(scope))
    assert plan is not None and plan.controllers == {"memory", "pids"}
    assert any("cpu controller is not available" in note for note in plan.notes)


def test_v2_user_in_an_ssh_session_gets_nothing(tmp_path):
    # session-N.scope and everything above it belong to root.
    mount = _v2_host(tmp_path)
    session = _group(mount / "user.slice" / "user-1000.slice" / "session-7.scope",
                     controllers="memory pids", procs=f"{PID}\n")
    plan, reasons = discover(proc_cgroup=f"0::/{session.relative_to(mount).as_posix()}\n",
                             mountinfo=_v2_mountinfo(mount), pid=PID, is_root=False,
                             writable=lambda path: False)
    assert plan is None
    assert any("no delegated group is writable" in reason for reason in reasons)


def test_v2_root_inside_a_container_with_busy_namespace_root_gets_nothing(tmp_path):
    # A cgroup namespace: the mount shows our namespace's root, which is not the true root
    # (it has cgroup.type) and holds the container's init as well as us.
    mount = _group(tmp_path / "cgroup", controllers="cpu memory pids", procs=f"1\n{PID}\n")
    plan, reasons = discover(proc_cgroup="0::/\n", mountinfo=_v2_mountinfo(mount), pid=PID,
                             is_root=True, writable=lambda path: True)
    assert plan is None and reasons


def test_v2_run_group_reads_the_oom_counter_and_cpu_usage(tmp_path):
    mount = _v2_host(tmp_path)
    plan = CgroupPlan(2, {"unified": mount / "user.slice"}, frozenset({"memory", "pids", "cpu"}))
    group = plan.create_run(memory_bytes=1 << 30, max_tasks=10, cpus=0.5)
    assert (group.dir / "cpu.max").read_text() == "50000 100000"
    assert (group.dir / "cpu.weight").read_text() == "50"
    (group.dir / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 1\n")
    (group.dir / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    assert group.oom_kills() == 1 and group.cpu_usage_s() == 2.5


# --------------------------------------------------------------------------- leftovers


def test_sweep_removes_groups_of_dead_graders_and_keeps_live_ones(tmp_path):
    parent = tmp_path / "parent"
    live = parent / f"secureml-sandbox-{PID}-{cgroups.process_start_ticks(PID)}-abc123"
    reused_pid = parent / f"secureml-sandbox-{PID}-1-abc123"  # our pid, another start time
    dead = parent / "secureml-sandbox-4194303-77-0f0f0f"
    stranger = parent / "someone-elses-group"
    for folder in (live, reused_pid, dead, stranger):
        folder.mkdir(parents=True)
    plan = CgroupPlan(2, {"unified": parent}, frozenset({"memory", "pids"}))
    removed = sweep_leftovers(plan)
    assert sorted(removed) == sorted([reused_pid, dead])
    assert live.exists() and stranger.exists()


def test_this_machine_is_discovered_with_its_reasons():
    plan, reasons = discover()
    if plan is not None:
        assert plan.version in (1, 2) and {"memory", "pids"} <= plan.controllers
    else:
        assert reasons  # every missing controller says why
