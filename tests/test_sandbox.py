"""The grading sandbox, attacked for real: every test runs a small hostile Python payload
in a real sandbox with the venv's interpreter, and checks what got through.

The same tests run as root (`bubblewrap-root`: a fresh uid, cgroups where writable) and,
in CI, again as an unprivileged user (`bubblewrap-user`: a user namespace, the supervisor
where no cgroup is writable); they expect the same verdicts. Tests marked `supervised`
force the supervisor's limits even where cgroups exist, so both paths run everywhere.

Timeouts are short (2-5 s) so the whole file stays around a minute on two cores. The fork
bomb only runs after the bounded process-limit test has shown that the limit holds, and the
CPU hog only after the bounded share test has shown that the CPU limit holds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from secureml import isolation, sandbox
from secureml.proctree import ProcessTree
from secureml.sandbox import (
    Limits,
    SandboxInputError,
    SandboxResult,
    isolation_mode,
    run_sandboxed,
)

pytestmark = pytest.mark.isolation  # CI runs this file again as an unprivileged user

PYTHON = sys.executable
MODE = isolation_mode()
needs_bwrap = pytest.mark.skipif(
    MODE is None, reason=f"bubblewrap isolation unavailable here ({sandbox.isolation_problem()})"
)
needs_root_mode = pytest.mark.skipif(MODE != isolation.ROOT, reason="only root drops to a fresh uid")
_PLAN = isolation.capabilities().cgroup_plan
needs_cgroups = pytest.mark.skipif(
    _PLAN is None or not {"memory", "pids"} <= _PLAN.controllers,
    reason="no writable memory and pids cgroup for this user",
)

# Set by the bounded tests; the fork bomb and the CPU hog refuse to run without them.
_process_limit_proven = False
_cpu_share_proven = False


@pytest.fixture
def supervised(monkeypatch: pytest.MonkeyPatch) -> None:
    """The limits as a user without a writable cgroup gets them: rlimits and the supervisor."""
    monkeypatch.setattr(sandbox, "_cgroup_plan", lambda found: (None, "no cgroup (forced by the test)"))


@pytest.fixture
def inputs_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    folder.chmod(0o755)  # the sandbox runs as an unused uid
    (folder / "submission.txt").write_text("trainee input\n")
    (folder / "submission.txt").chmod(0o644)
    return folder


def run(code: str, inputs_dir: Path, *extra_argv: str, unsafe: bool = False,
        extra_readonly: tuple[Path, ...] = (), env: dict[str, str] | None = None,
        **limit_overrides: object) -> SandboxResult:
    limits = Limits(**{"timeout_s": 10.0, **limit_overrides})  # type: ignore[arg-type]
    return run_sandboxed([PYTHON, "-c", textwrap.dedent(code), *extra_argv],
                         inputs_dir=inputs_dir, limits=limits, unsafe=unsafe,
                         extra_readonly=extra_readonly, env=env)


def report(result: SandboxResult) -> dict:
    """The JSON object the payload printed as its last stdout line."""
    assert result.outcome == "exited" and result.returncode == 0, result
    return json.loads(result.stdout.strip().splitlines()[-1])


def new_marker() -> str:
    return f"secureml-sandbox-test-{uuid.uuid4().hex}"


def survivors(marker: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return found.stdout.split()


# ---------------------------------------------------------------------------------------
# Who the child is, and what it can see


@needs_bwrap
def test_child_runs_as_an_unprivileged_uid_without_capabilities(inputs_dir: Path) -> None:
    marker = new_marker()
    holder: dict[str, SandboxResult] = {}
    runner = threading.Thread(target=lambda: holder.update(result=run(
        """
        import json, os, time
        status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines())
        time.sleep(1.5)  # long enough for the parent to look at us from the host
        print(json.dumps({"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
                          "groups": os.getgroups(), "cap_eff": status["CapEff"].strip(),
                          "cap_bnd": status["CapBnd"].strip(), "nnp": status["NoNewPrivs"].strip(),
                          "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}))
        """, inputs_dir, marker)))
    runner.start()
    host_uids = []
    deadline = time.monotonic() + 5
    while not host_uids and time.monotonic() < deadline:
        for pid in survivors(marker):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            # Only the trainee's interpreter (`python -c CODE`), not bwrap, setpriv, the
            # start shell or our launcher (`python -S -I -c ...`, the grader's uid until it
            # execs bwrap).
            if command[:2] == [PYTHON.encode(), b"-c"]:
                uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
                host_uids.append([int(u) for u in uid_line.split()[1:]])
        time.sleep(0.05)
    runner.join()
    seen = report(holder["result"])
    # Seen from the host, every uid of the trainee's process (real, effective, saved, fs)
    # is an unprivileged one: a fresh unused uid when root grades, the instructor's own
    # uid when a normal user grades. Never root.
    assert host_uids and len(set(host_uids[0])) == 1 and host_uids[0][0] != 0
    if MODE == isolation.ROOT:
        assert host_uids[0][0] == seen["uid"] >= isolation._SANDBOX_UID_MIN
        assert seen["groups"] == [] and seen["gid"] != 0
    else:
        assert host_uids[0][0] == os.getuid()
    assert seen["uid"] != 0 and seen["euid"] == seen["uid"]
    assert int(seen["cap_eff"], 16) == 0 and int(seen["cap_bnd"], 16) == 0
    assert seen["nnp"] == "1"
    # Its own pid namespace: only bwrap's reaper and the child itself (no host process).
    assert seen["pids"] == [1, 2]
    assert holder["result"].isolation == MODE


@needs_bwrap
def test_owner_only_file_is_unreadable_even_when_bound(inputs_dir: Path, tmp_path: Path) -> None:
    # As root the sandbox is another uid, and 0600 keeps it out. As a normal user the
    # sandbox *is* the owner, so only a file the owner cannot read either (0000) shows
    # that it has no capability to override file permissions.
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir(mode=0o755)
    secret_dir.chmod(0o755)
    (secret_dir / "root-only.txt").write_text("the answer key\n")
    (secret_dir / "root-only.txt").chmod(0o600 if MODE == isolation.ROOT else 0o000)
    (secret_dir / "public.txt").write_text("public\n")
    (secret_dir / "public.txt").chmod(0o644)
    result = run(
        f"""
        import json
        outcome = {{}}
        for name in ("root-only.txt", "public.txt"):
            try:
                outcome[name] = open("{secret_dir}/" + name).read()
            except OSError as exc:
                outcome[name] = type(exc).__name__
        try:
            open("{secret_dir}/root-only.txt", "a").write("pwned")
            outcome["append"] = "appended"
        except OSError as exc:
            outcome["append"] = type(exc).__name__
        print(json.dumps(outcome))
        """, inputs_dir, extra_readonly=(secret_dir,))
    seen = report(result)
    assert seen["public.txt"] == "public\n"  # the bind works: only the permission stops it
    assert seen["root-only.txt"] == "PermissionError"
    assert seen["append"] in ("PermissionError", "OSError")
    assert "answer key" not in result.stdout + result.stderr
    (secret_dir / "root-only.txt").chmod(0o600)  # the owner looks: nothing was appended
    assert (secret_dir / "root-only.txt").read_text() == "the answer key\n"


@needs_bwrap
def test_host_files_outside_the_binds_are_invisible(inputs_dir: Path) -> None:
    host_file = Path("/tmp") / f"{new_marker()}.txt"
    host_file.write_text("host /tmp secret\n")
    host_file.chmod(0o644)  # readable by anyone on the host: only the mount hides it
    datasets = Path(__file__).resolve().parents[1] / "datasets"
    try:
        result = run(
            f"""
            import json, os
            seen = {{}}
            for path in ({str(host_file)!r}, "/etc/shadow", "/root/.bashrc", {str(datasets)!r},
                         "/var", "/home", "/sys/fs/cgroup"):
                seen[path] = os.path.exists(path)
            seen["inputs"] = open({str(inputs_dir / "submission.txt")!r}).read()
            for home in ("/root", "/home"):
                seen[home + "_listing"] = sorted(os.listdir(home)) if os.path.isdir(home) else []
            seen["etc"] = sorted(os.listdir("/etc"))
            seen["passwd_readable"] = "root:" in open("/etc/passwd").read()
            print(json.dumps(seen))
            """, inputs_dir)
    finally:
        host_file.unlink()
    seen = report(result)
    assert seen.pop("inputs") == "trainee input\n"
    # /root and /home hold only the way to the interpreter (pyenv, or a user's venv), nothing
    # else of anyone's home.
    for home in ("/root", "/home"):
        needed = sorted({path.relative_to(home).parts[0] for path in sandbox.python_runtime_paths()
                         if path.is_relative_to(home) and path != Path(home)})
        assert seen.pop(home + "_listing") == needed
        if needed:
            seen.pop(home, None)
    # /etc holds only the few files Python and glibc read, and they are readable.
    assert set(seen.pop("etc")) <= {Path(name).name for name in isolation._ETC_FILES}
    assert seen.pop("passwd_readable") is True
    assert not any(seen.values()), seen


@needs_bwrap
def test_nothing_of_the_host_is_writable(inputs_dir: Path) -> None:
    result = run(
        f"""
        import json, os, sys
        seen = {{}}
        for path in ({str(inputs_dir / "new.txt")!r}, {str(inputs_dir / "submission.txt")!r},
                     sys.prefix + "/evil.pth", "/usr/evil", "/evil", "/etc/passwd"):
            try:
                open(path, "a").write("x")
                seen[path] = "written"
            except OSError as exc:
                seen[path] = __import__("errno").errorcode[exc.errno]
        open("/tmp/scratch.txt", "w").write("private tmp works")
        seen["tmp"] = open("/tmp/scratch.txt").read()
        print(json.dumps(seen))
        """, inputs_dir)
    seen = report(result)
    assert seen.pop("tmp") == "private tmp works"
    assert all(value in ("EROFS", "EACCES", "EPERM") for value in seen.values()), seen
    assert not (inputs_dir / "new.txt").exists()
    assert (inputs_dir / "submission.txt").read_text() == "trainee input\n"


@needs_bwrap
def test_environment_is_clean_and_caller_env_is_added(inputs_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECUREML_TEST_HOST_SECRET", "do-not-leak")
    result = run("import json, os; print(json.dumps(dict(os.environ)))", inputs_dir,
                 env={"OMP_NUM_THREADS": "1"})
    seen = report(result)
    assert "SECUREML_TEST_HOST_SECRET" not in seen
    assert seen["OMP_NUM_THREADS"] == "1"
    assert seen["HOME"] == "/tmp" and seen["SECUREML_RESULT_FD"] == "3"
    assert set(seen) <= {"PATH", "HOME", "TMPDIR", "LANG", "USER", "LOGNAME", "PWD",
                         "PYTHONDONTWRITEBYTECODE", "SECUREML_RESULT_FD", "OMP_NUM_THREADS"}


@needs_bwrap
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the seccomp filter is x86-64 only")
def test_child_cannot_make_namespaces_or_mounts(inputs_dir: Path) -> None:
    # A fresh user namespace would make the child "root" in there, with mount rights:
    # no escape from read-only binds, but the kernel surface most exploits need.
    result = run(
        """
        import ctypes, errno, json, os, threading
        libc = ctypes.CDLL(None, use_errno=True)
        def call(*args):
            outcome = libc.syscall(*args)
            return "ok" if outcome >= 0 else errno.errorcode[ctypes.get_errno()]
        CLONE_NEWUSER, CLONE_NEWNS, SIGCHLD = 0x10000000, 0x20000, 17
        seen = {
            "unshare_user": call(272, CLONE_NEWUSER),
            "unshare_mount": call(272, CLONE_NEWNS),
            "clone_user": call(56, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0),
            "mount_tmpfs": "ok" if libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == 0
                           else errno.errorcode[ctypes.get_errno()],
        }
        # What must keep working: threads (glibc falls back from clone3) and fork.
        worker = threading.Thread(target=seen.update, kwargs={"thread": "ok"})
        worker.start()
        worker.join()
        pid = os.fork()
        if pid == 0:
            os._exit(5)
        seen["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        print(json.dumps(seen))
        """, inputs_dir)
    seen = report(result)
    assert seen == {"unshare_user": "EPERM", "unshare_mount": "EPERM", "clone_user": "EPERM",
                    "mount_tmpfs": "EPERM", "thread": "ok", "fork": 5}


# ---------------------------------------------------------------------------------------
# The supervisor's view of the sandbox never includes the host


def test_a_process_tree_refuses_the_hosts_own_proc() -> None:
    handle = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(ValueError, match="our own /proc"):
            ProcessTree(handle, main_pid=1)
    finally:
        os.close(handle)


@needs_bwrap
def test_the_sandbox_tree_appears_only_once_the_sandboxs_own_proc_is_in_place() -> None:
    # bwrap reports its child's pid before the child switches to the sandbox's root; until
    # then /proc/<pid>/root/proc is the host's /proc. A tree built from it would make
    # "signal every process of the sandbox" signal every process of the machine (it did,
    # once, while this was written). No signal is sent here: the tree is only looked at.
    read_end, write_end = os.pipe()
    command = ["bwrap", *(["--unshare-user"] if MODE == isolation.USER else []), "--unshare-pid",
               "--die-with-parent", *isolation.system_bind_args(), "--proc", "/proc", "--dev", "/dev",
               "--info-fd", str(write_end), "--", "/usr/bin/sh", "-c", "sleep 1 & sleep 1"]
    bwrap = subprocess.Popen(command, pass_fds=[write_end])
    os.close(write_end)
    with os.fdopen(read_end, "rb") as info:
        report = json.loads(info.read())
    trees = []
    try:
        while bwrap.poll() is None and not trees:
            tree = ProcessTree.of_namespace(report["child-pid"], bwrap.pid, report["pid-namespace"], 2)
            if tree is not None:
                trees.append(tree)
    finally:
        bwrap.wait()
    assert trees, "the sandbox's /proc was never found"
    seen = trees[0].pids()
    trees[0].close()
    assert 1 in seen and len(seen) <= 4 and os.getpid() not in seen


# ---------------------------------------------------------------------------------------
# Network


@needs_bwrap
def test_no_network_neither_loopback_nor_outside(inputs_dir: Path) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    abstract_name = "\0" + new_marker()
    unix_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix_listener.bind(abstract_name)
    unix_listener.listen()
    try:
        # Sanity: the host's own listeners do accept connections.
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        result = run(
            f"""
            import errno, json, socket
            seen = {{}}
            def attempt(name, family, address):
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.settimeout(3)
                try:
                    sock.connect(address)
                    seen[name] = "connected"
                except OSError as exc:
                    seen[name] = errno.errorcode.get(exc.errno, str(exc))
            attempt("loopback", socket.AF_INET, ("127.0.0.1", {port}))
            attempt("outside", socket.AF_INET, ("1.1.1.1", 53))
            attempt("abstract_unix", socket.AF_UNIX, {abstract_name!r})
            seen["interfaces"] = [name for _, name in socket.if_nameindex()]
            print(json.dumps(seen))
            """, inputs_dir)
    finally:
        listener.close()
        unix_listener.close()
    seen = report(result)
    assert seen["loopback"] == "ECONNREFUSED"  # nobody listens in the sandbox's own netns
    assert seen["outside"] == "ENETUNREACH"  # no route at all, not just a slow timeout
    assert seen["abstract_unix"] == "ECONNREFUSED"
    assert seen["interfaces"] == ["lo"]


# ---------------------------------------------------------------------------------------
# Disk


@needs_bwrap
def test_writing_to_tmp_beyond_tmp_mb_fails(inputs_dir: Path) -> None:
    result = run(
        """
        import errno, json
        written = 0
        try:
            with open("/tmp/fill", "wb") as handle:
                for _ in range(32):
                    handle.write(b"x" * 1024 * 1024)
                    handle.flush()
                    written += 1
            error = None
        except OSError as exc:
            error = errno.errorcode[exc.errno]
        print(json.dumps({"written_mb": written, "error": error}))
        """, inputs_dir, tmp_mb=16)
    seen = report(result)
    assert seen["error"] == "ENOSPC"
    assert seen["written_mb"] <= 16


@needs_bwrap
def test_writing_1_gb_fails_with_default_limits(inputs_dir: Path) -> None:
    result = run(
        """
        import errno, json
        written = 0
        try:
            with open("/tmp/huge", "wb") as handle:
                chunk = b"x" * (16 * 1024 * 1024)
                for _ in range(64):  # 1 GiB
                    handle.write(chunk)
                    handle.flush()
                    written += 16
            error = None
        except OSError as exc:
            error = errno.errorcode[exc.errno]
        print(json.dumps({"written_mb": written, "error": error}))
        """, inputs_dir)
    seen = report(result)
    # The 256 MB tmpfs and the 256 MB RLIMIT_FSIZE stop it at the same size.
    assert seen["error"] in ("ENOSPC", "EFBIG")
    assert seen["written_mb"] <= 256


@needs_bwrap
def test_file_size_limit_applies_below_tmp_size(inputs_dir: Path) -> None:
    result = run(
        """
        import errno, json
        try:
            with open("/tmp/big", "wb") as handle:
                handle.write(b"x" * (16 * 1024 * 1024))
            error = None
        except OSError as exc:
            error = errno.errorcode[exc.errno]
        print(json.dumps({"error": error}))
        """, inputs_dir, tmp_mb=64, max_file_mb=8)
    assert report(result)["error"] == "EFBIG"


# ---------------------------------------------------------------------------------------
# Output and result channel


@needs_bwrap
def test_100_mb_of_stdout_is_capped_to_its_tail_without_hanging(inputs_dir: Path) -> None:
    started = time.monotonic()
    result = run(
        """
        import sys
        chunk = b"x" * (1024 * 1024)
        for _ in range(100):
            sys.stdout.buffer.write(chunk)
            sys.stderr.buffer.write(b"e" * 10_000)
        sys.stdout.buffer.write(b"\\nEND-OF-STDOUT\\n")
        sys.stderr.buffer.write(b"\\nEND-OF-STDERR\\n")
        """, inputs_dir, timeout_s=30)
    assert time.monotonic() - started < 15
    assert result.outcome == "exited" and result.returncode == 0
    assert result.output_truncated
    assert len(result.stdout.encode()) == 64 * 1024
    assert len(result.stderr.encode()) == 64 * 1024
    assert result.stdout.endswith("END-OF-STDOUT\n")
    assert result.stderr.endswith("END-OF-STDERR\n")


@needs_bwrap
def test_result_channel_returns_the_bytes_written(inputs_dir: Path) -> None:
    payload = bytes(range(256)) * 32768  # 8 MiB: far bigger than a pipe buffer
    result = run(
        """
        import os, sys
        fd = int(os.environ["SECUREML_RESULT_FD"])
        data = bytes(range(256)) * 32768
        view = memoryview(data)
        while view:
            written = os.write(fd, view[:1_000_000])
            view = view[written:]
            sys.stdout.write("o" * 10_000)  # stdout fills up at the same time
        os.close(fd)
        """, inputs_dir)
    assert result.outcome == "exited" and result.returncode == 0, result
    assert result.result == payload
    assert not result.result_oversized


@needs_bwrap
def test_oversized_result_is_flagged_and_dropped(inputs_dir: Path) -> None:
    result = run(
        """
        import os
        fd = int(os.environ["SECUREML_RESULT_FD"])
        try:
            for _ in range(64):  # 64 MiB: far more than any pipe buffer holds
                os.write(fd, b"r" * (1024 * 1024))
            print("no error")
        except BrokenPipeError:
            print("broken pipe")
        """, inputs_dir, max_result_bytes=1024, timeout_s=10)
    assert result.result_oversized
    assert result.result is None
    # The parent stops reading at once: the writer sees EPIPE instead of blocking.
    assert result.outcome == "exited" and result.stdout == "broken pipe\n"
    assert result.wall_s < 5


@needs_bwrap
def test_exit_without_writing_a_result_gives_none(inputs_dir: Path) -> None:
    result = run("print('nothing to report')", inputs_dir)
    assert result.outcome == "exited" and result.returncode == 0
    assert result.result is None and not result.result_oversized
    assert result.stdout == "nothing to report\n" and not result.output_truncated


@needs_bwrap
@pytest.mark.parametrize("code", [0, 7])
def test_os_exit_is_reported_with_its_code(inputs_dir: Path, code: int) -> None:
    result = run(
        f"""
        import os
        os.write(int(os.environ["SECUREML_RESULT_FD"]), b"before exit")
        os._exit({code})
        """, inputs_dir)
    assert result.outcome == "exited" and result.returncode == code
    assert result.result == b"before exit"


@needs_bwrap
def test_a_crash_is_signalled(inputs_dir: Path) -> None:
    result = run("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", inputs_dir)
    assert result.outcome == "signalled" and result.returncode == -11


# ---------------------------------------------------------------------------------------
# Time


@needs_bwrap
@pytest.mark.parametrize("code", ["import time; time.sleep(3600)", "while True: pass"],
                         ids=["sleep", "busy-loop"])
def test_endless_child_times_out_after_its_own_time(inputs_dir: Path, code: str) -> None:
    # The clock is the run's own time: wall clock minus what its main thread waited for a
    # CPU that other processes held. On a quiet machine the two are the same. On a machine
    # so busy that the run gets less than a third of a CPU, the wall clock reaches its cap
    # (3x) first, and the supervisor says the machine, not the trainee, was too slow.
    marker = new_marker()
    result = run(code, inputs_dir, marker, timeout_s=2)
    assert result.returncode is None, result
    if result.outcome == "infra-error":
        assert "machine was too busy" in result.detail and result.wall_s >= Limits(timeout_s=2).max_wall_s
    else:
        assert result.outcome == "timeout", result
        assert "of its own time" in result.detail or "CPU-time budget" in result.detail
    assert result.wall_s - result.waited_s < 2 + 1  # never charged more than its limit
    assert result.wall_s < Limits(timeout_s=2).max_wall_s + 1
    assert survivors(marker) == []


@needs_bwrap
def test_a_run_that_starves_its_own_main_thread_times_out_on_its_cpu_budget(inputs_dir: Path) -> None:
    # One CPU share for a run that keeps 4 processes busy: its main thread waits behind its
    # own helpers. The clock forgives waiting, but the CPU-time budget does not, so the run
    # still ends as a timeout once it has used its share for timeout_s.
    result = run(
        """
        import os
        for _ in range(3):
            if os.fork() == 0:
                while True:
                    pass
        while True:
            pass
        """, inputs_dir, timeout_s=2)
    assert result.outcome == "timeout", result
    assert result.wall_s < Limits(timeout_s=2).max_wall_s + 1
    assert result.cpu_s <= 2 * 1.2 + 0.5


@needs_bwrap
def test_cpu_time_limit_counts_as_timeout(inputs_dir: Path) -> None:
    started = time.monotonic()
    result = run("while True: pass", inputs_dir, timeout_s=10, cpu_s=1)
    assert time.monotonic() - started < 5
    assert result.outcome == "timeout"
    assert "CPU" in result.detail


@needs_bwrap
def test_cpu_hog_that_ignores_sigxcpu_is_killed_and_counts_as_timeout(inputs_dir: Path) -> None:
    started = time.monotonic()
    result = run(
        """
        import signal
        signal.signal(signal.SIGXCPU, signal.SIG_IGN)
        while True:
            pass
        """, inputs_dir, timeout_s=20, cpu_s=1)
    assert time.monotonic() - started < 15
    assert result.outcome == "timeout" and result.returncode is None
    assert "CPU" in result.detail


@needs_bwrap
def test_exit_status_152_after_a_result_is_not_a_cpu_timeout(inputs_dir: Path) -> None:
    # bwrap reports death by SIGXCPU (24) as exit status 152, and so does exit(152). Only
    # the supervisor's own measurement of CPU time may say "timeout".
    result = run(
        """
        import os
        os.write(int(os.environ["SECUREML_RESULT_FD"]), b"valid result")
        os._exit(152)
        """, inputs_dir)
    assert result.outcome == "signalled" and result.returncode == -24
    assert result.result == b"valid result"
    assert result.cpu_s < 1


@needs_bwrap
def test_memory_error_printed_by_the_child_is_not_a_memory_limit(inputs_dir: Path) -> None:
    result = run("import sys; print('MemoryError', file=sys.stderr); sys.exit(1)", inputs_dir)
    assert result.outcome == "exited" and result.returncode == 1


@needs_bwrap
def test_double_forked_daemon_does_not_hold_the_run_open(inputs_dir: Path) -> None:
    marker = new_marker()
    started = time.monotonic()
    result = run(
        """
        import os, time
        fd = int(os.environ["SECUREML_RESULT_FD"])
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(120)  # keeps stdout, stderr and the result fd open
            os._exit(0)
        os.write(fd, b"main done")
        print("main exits")
        """, inputs_dir, marker, timeout_s=30)
    assert time.monotonic() - started < 3
    assert result.outcome == "exited" and result.returncode == 0
    assert result.result == b"main done"
    assert survivors(marker) == []


# ---------------------------------------------------------------------------------------
# Processes. The bounded test must pass before the fork bomb may run.

SLEEPERS = """
    import os, time
    started, error = 0, None
    for _ in range(200):
        try:
            pid = os.fork()
        except OSError as exc:
            error = exc.strerror
            break
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        started += 1
    print(started, error, flush=True)
"""


@needs_bwrap
def test_200_sleepers_are_stopped_by_max_processes(inputs_dir: Path) -> None:
    global _process_limit_proven
    marker = new_marker()
    result = run(SLEEPERS, inputs_dir, marker, timeout_s=5, max_processes=32)
    assert result.outcome == "exited", result
    started, error = result.stdout.split(maxsplit=1)
    assert int(started) < 32  # the child itself is one of the 32
    assert "Resource temporarily unavailable" in error
    assert survivors(marker) == []
    _process_limit_proven = True


@needs_bwrap
def test_fork_bomb_is_contained_and_leaves_no_survivors(inputs_dir: Path) -> None:
    if not _process_limit_proven:
        pytest.skip("the bounded process-limit test did not pass first; no fork bomb today")
    marker = new_marker()
    started = time.monotonic()
    result = run(
        """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """, inputs_dir, marker, timeout_s=3, max_processes=32)
    assert time.monotonic() - started < 3 + 5
    assert result.outcome == "timeout"
    assert survivors(marker) == []


@needs_bwrap
@pytest.mark.usefixtures("supervised")
def test_200_sleepers_are_stopped_without_a_pids_cgroup(inputs_dir: Path) -> None:
    # As root: RLIMIT_NPROC of the fresh uid. As a user: RLIMIT_NPROC set inside the user
    # namespace, which counts that sandbox's tasks alone (not the user's other processes).
    marker = new_marker()
    result = run(SLEEPERS, inputs_dir, marker, timeout_s=5, max_processes=32)
    assert result.outcome in ("exited", "killed"), result
    if result.outcome == "exited":
        started, error = result.stdout.split(maxsplit=1)
        assert int(started) < 32 and "Resource temporarily unavailable" in error
    assert survivors(marker) == []


# ---------------------------------------------------------------------------------------
# CPU: each sandbox gets its share and no more. The bounded test must pass before the hog.

BUSY_CHILDREN = """
    import os, sys, time
    for _ in range({count}):
        if os.fork() == 0:
            os.setsid()  # each in its own session: the kernel's autogroups would favour them
            while True:
                pass
    deadline = time.monotonic() + {seconds}
    while time.monotonic() < deadline:
        pass
    print("hog done", flush=True)
"""

HONEST_WORK = """
    import time
    while time.process_time() < {cpu_s}:  # exactly this much CPU time of its own
        pass
    print("honest done", flush=True)
"""


def _cpu_share_holds(inputs_dir: Path) -> SandboxResult:
    result = run(BUSY_CHILDREN.format(count=8, seconds=2), inputs_dir, timeout_s=10)
    assert result.outcome == "exited" and result.stdout.strip() == "hog done", result
    # One CPU's worth of time per second of wall clock, plus the throttle's burst.
    assert result.cpu_s <= 1.0 * result.wall_s * 1.1 + sandbox._THROTTLE_BURST_S + 0.2, result
    return result


@needs_bwrap
def test_nine_busy_processes_get_one_cpu_share(inputs_dir: Path) -> None:
    global _cpu_share_proven
    _cpu_share_holds(inputs_dir)
    _cpu_share_proven = True


@needs_bwrap
@pytest.mark.usefixtures("supervised")
def test_nine_busy_processes_get_one_cpu_share_without_a_cpu_cgroup(inputs_dir: Path) -> None:
    result = _cpu_share_holds(inputs_dir)
    assert result.limits == "the supervisor and rlimits"


@needs_bwrap
@pytest.mark.parametrize("limited_by", ["cgroup-or-supervisor", "supervisor"])
def test_a_hog_of_sixty_sessions_does_not_push_an_honest_neighbour_into_a_timeout(
        inputs_dir: Path, limited_by: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if not _cpu_share_proven:
        pytest.skip("the bounded CPU-share test did not pass first; no hog today")
    if limited_by == "supervisor":
        monkeypatch.setattr(sandbox, "_cgroup_plan", lambda found: (None, "forced by the test"))
    results: dict[str, SandboxResult] = {}
    hog = threading.Thread(target=lambda: results.update(hog=run(
        BUSY_CHILDREN.format(count=60, seconds=8), inputs_dir, timeout_s=20, max_processes=96)))
    hog.start()
    time.sleep(0.5)  # the hog's 60 processes are up before the honest run starts
    results["honest"] = run(HONEST_WORK.format(cpu_s=2), inputs_dir, timeout_s=6)
    hog.join()
    honest = results["honest"]
    assert honest.outcome == "exited" and honest.stdout.strip() == "honest done", honest
    assert results["hog"].cpu_s <= 1.0 * results["hog"].wall_s * 1.1 + 0.5, results["hog"]


# ---------------------------------------------------------------------------------------
# Memory


@needs_bwrap
def test_8_gb_bytearray_is_refused_by_the_address_space_backstop(inputs_dir: Path) -> None:
    # The allocation never happens: the kernel refuses the address space (RLIMIT_AS), and
    # the child sees a MemoryError. The supervisor enforced no limit, so the outcome is the
    # child's own ending; the grader reports the MemoryError as the trainee's error.
    result = run("data = bytearray(8 * 1024**3)", inputs_dir, memory_mb=1024)
    assert result.outcome == "exited" and result.returncode == 1, result
    assert result.stderr.strip().endswith("MemoryError")
    assert os.getpid() > 0  # and we are still here to look


GROW_MEMORY = """
    chunks = []
    for _ in range(128):  # up to 8 GiB, touched page by page
        chunks.append(bytearray(64 * 1024 * 1024))
"""


@needs_bwrap
@needs_cgroups
def test_growing_allocation_is_stopped_by_the_memory_cgroup(inputs_dir: Path) -> None:
    result = run(GROW_MEMORY, inputs_dir, memory_mb=256)
    assert result.outcome == "memory", result
    assert "OOM killer" in result.detail and "cgroup" in result.detail


@needs_bwrap
@pytest.mark.usefixtures("supervised")
def test_growing_allocation_is_stopped_by_the_supervisor_without_cgroups(inputs_dir: Path) -> None:
    result = run(GROW_MEMORY, inputs_dir, memory_mb=256)
    assert result.outcome == "memory", result
    assert "supervisor" in result.detail and "resident" in result.detail
    assert result.limits == "the supervisor and rlimits"


@needs_bwrap
@pytest.mark.usefixtures("supervised")
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the seccomp filter is x86-64 only")
def test_without_a_memory_cgroup_memory_the_supervisor_cannot_see_is_refused(inputs_dir: Path) -> None:
    result = run(
        """
        import ctypes, errno, json, os
        libc = ctypes.CDLL(None, use_errno=True)
        seen = {}
        try:
            os.memfd_create("hidden")
            seen["memfd"] = "ok"
        except OSError as exc:
            seen["memfd"] = errno.errorcode[exc.errno]
        seen["shmget"] = "ok" if libc.shmget(0, 1 << 20, 0o1600) >= 0 else errno.errorcode[ctypes.get_errno()]
        print(json.dumps(seen))
        """, inputs_dir)
    assert report(result) == {"memfd": "EPERM", "shmget": "EPERM"}


@needs_bwrap
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_import_torch_works_inside_4_gb(inputs_dir: Path) -> None:
    result = run(
        """
        import json, torch
        print(json.dumps({"sum": float(torch.ones(3, 3).sum())}))
        """, inputs_dir, memory_mb=4096, timeout_s=60)
    assert report(result) == {"sum": 9.0}


# ---------------------------------------------------------------------------------------
# Parallel runs, inputs, unsafe mode


@needs_bwrap
def test_parallel_runs_are_independent_and_clean_up_their_cgroups(inputs_dir: Path) -> None:
    results: dict[int, SandboxResult] = {}

    def one(index: int) -> None:
        results[index] = run(
            f"""
            import os, time
            time.sleep(0.3)
            os.write(int(os.environ["SECUREML_RESULT_FD"]), b"job {index} uid %d" % os.getuid())
            """, inputs_dir)

    threads = [threading.Thread(target=one, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    uids = set()
    for index, result in results.items():
        assert result.outcome == "exited", result
        text = result.result.decode()
        assert text.startswith(f"job {index} uid ")
        uids.add(text.rsplit(" ", 1)[1])
    if MODE == isolation.ROOT:
        assert len(uids) == 3  # every run gets its own unused uid
    leftovers = []
    for parent in (_PLAN.parents.values() if _PLAN else []):
        if parent.exists():
            leftovers += list(parent.glob(f"secureml-sandbox-{os.getpid()}-*"))
    assert leftovers == []


@needs_root_mode
def test_unreadable_inputs_are_refused_with_a_clear_error(inputs_dir: Path) -> None:
    (inputs_dir / "model.bin").write_bytes(b"weights")
    (inputs_dir / "model.bin").chmod(0o600)
    with pytest.raises(SandboxInputError, match=r"model\.bin.*world-readable"):
        run("pass", inputs_dir)


@needs_bwrap
def test_sandbox_that_cannot_start_is_an_infra_error_not_a_trainee_failure(
        inputs_dir: Path) -> None:
    # bwrap refuses a tmpfs size beyond 64 bits, so the trainee's code never starts.
    result = run("print('never runs')", inputs_dir, tmp_mb=2**50)
    assert result.outcome == "infra-error" and result.returncode is None
    assert "--size" in result.detail
    assert result.stdout == ""


def test_missing_command_is_refused_before_starting(inputs_dir: Path) -> None:
    with pytest.raises(SandboxInputError, match="not an executable file"):
        run_sandboxed(["no-such-interpreter-anywhere"], inputs_dir=inputs_dir,
                      limits=Limits(timeout_s=5), unsafe=True)


def test_unsafe_mode_runs_without_bubblewrap_and_says_so(inputs_dir: Path) -> None:
    result = run(
        """
        import json, os
        os.write(int(os.environ["SECUREML_RESULT_FD"]), b"unsafe result")
        print(json.dumps({"home": os.environ["HOME"], "cwd": os.getcwd()}))
        """, inputs_dir, unsafe=True)
    seen = report(result)
    assert result.isolation == "unsafe-subprocess"
    assert result.result == b"unsafe result"
    assert seen["home"] == seen["cwd"] and not Path(seen["home"]).exists()  # removed after


def test_unsafe_mode_still_times_out(inputs_dir: Path) -> None:
    marker = new_marker()
    started = time.monotonic()
    result = run("import time; time.sleep(3600)", inputs_dir, marker, unsafe=True, timeout_s=2)
    assert time.monotonic() - started < 2 + 3
    assert result.outcome == "timeout" and result.isolation == "unsafe-subprocess"
    assert survivors(marker) == []


@needs_cgroups
def test_unsafe_mode_kills_escaped_daemons_through_the_cgroup(inputs_dir: Path) -> None:
    marker = new_marker()
    started = time.monotonic()
    result = run(
        """
        import os, time
        if os.fork() == 0:
            os.setsid()  # leaves our session and process group
            if os.fork() == 0:
                time.sleep(120)
            os._exit(0)
        print("main exits")
        """, inputs_dir, marker, unsafe=True, timeout_s=30)
    assert time.monotonic() - started < 3
    assert result.outcome == "exited" and result.stdout == "main exits\n"
    assert survivors(marker) == []
