"""`secureml doctor`: what grading needs, what this machine has, and the fix for each gap;
and `make test` on a machine without bubblewrap ends with one line saying what was skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from conftest import REPO
from secureml import isolation
from secureml.cgroups import CgroupPlan
from secureml.cli import cli

CHECK_NAMES = {"platform", "user", "bubblewrap", "user namespaces", "seccomp", "cgroups", "isolation"}


@pytest.fixture
def fresh_probe():
    """Forget the probed capabilities before and after a test that changes what is found."""
    isolation._capabilities.cache_clear()
    yield
    isolation._capabilities.cache_clear()


def test_doctor_prints_each_check_and_the_mode_grade_will_use():
    found = isolation.capabilities()
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == (0 if found.mode else 7), result.output
    for name in CHECK_NAMES:
        assert name in result.output
    if found.mode:
        assert f"grade will isolate trainee code with {found.mode}" in result.output


def test_doctor_json_is_one_document_for_ci():
    result = CliRunner().invoke(cli, ["doctor", "--json"])
    report = json.loads(result.stdout)
    assert {check["name"] for check in report["checks"]} >= CHECK_NAMES
    assert report["can_isolate"] == (report["mode"] is not None)
    assert report["mode"] in (isolation.ROOT, isolation.USER, None)
    if report["mode"]:
        assert set(report["limits"]) == {"memory", "processes", "cpu", "time"}


def test_doctor_without_bubblewrap_exits_7_and_says_how_to_install_it(monkeypatch, fresh_probe):
    monkeypatch.setattr(isolation, "find_tools", lambda: isolation.Tools(None, "/usr/bin/setpriv", "/usr/bin/sh",
                                                                         "/usr/bin/prlimit", None))
    result = CliRunner().invoke(cli, ["doctor", "--json"])
    assert result.exit_code == 7
    report = json.loads(result.stdout)
    assert report["can_isolate"] is False and "bwrap is not installed" in report["problem"]
    bubblewrap = next(check for check in report["checks"] if check["name"] == "bubblewrap")
    assert not bubblewrap["ok"] and "apt-get install bubblewrap" in bubblewrap["fix"]


def _user_capabilities(plan: CgroupPlan | None) -> isolation.Capabilities:
    return isolation.Capabilities(
        is_root=False,
        tools=isolation.Tools("/usr/bin/bwrap", "/usr/bin/setpriv", "/usr/bin/sh", "/usr/bin/prlimit", (0, 8, 0)),
        user_namespaces=True, user_namespaces_detail="unprivileged user namespaces work",
        seccomp=True, seccomp_detail="x86-64 filter", cgroup_plan=plan,
        cgroup_reasons=() if plan else ("cgroup v1 memory: /sys/fs/cgroup/memory is not writable by this user",),
        mode=isolation.USER, problem=None, per_namespace_nproc=True,
    )


def test_a_normal_user_without_cgroups_is_told_the_supervisor_enforces_limits_and_how_to_delegate():
    checks = {check.name: check for check in isolation.doctor_checks(_user_capabilities(None))}
    assert checks["isolation"].ok and checks["isolation"].found == isolation.USER
    assert not checks["cgroups"].ok and "Delegate=yes" in checks["cgroups"].fix
    assert "supervisor" in checks["limit: memory"].found and "supervisor" in checks["limit: cpu"].found
    assert "user namespace" in checks["limit: processes"].found


def test_a_normal_user_in_a_delegated_v2_scope_gets_cgroup_limits(tmp_path):
    plan = CgroupPlan(2, {"unified": tmp_path}, frozenset({"memory", "pids", "cpu"}))
    checks = {check.name: check for check in isolation.doctor_checks(_user_capabilities(plan))}
    assert checks["cgroups"].ok and not checks["cgroups"].fix
    assert checks["limit: memory"].found == "cgroup v2 memory limit"
    assert checks["limit: cpu"].found == "cgroup v2 CPU weight and quota"


def test_doctor_help_imports_no_torch():
    probe = ("import sys\nfrom secureml.cli import main\nsys.argv = ['secureml', 'doctor', '--json']\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "sys.stderr.write('HEAVY=' + ','.join(m for m in ('torch', 'numpy', 'art') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert result.stderr.rsplit("HEAVY=", 1)[1].strip() == "", result.stderr


def test_a_test_run_without_bubblewrap_ends_with_one_line_naming_the_skipped_sandbox_tests(tmp_path):
    # What `make test` prints on a fresh machine where bubblewrap could not be installed.
    plugin = tmp_path / "no_bubblewrap.py"
    plugin.write_text(textwrap.dedent("""
        from secureml import isolation
        isolation.find_tools = lambda: isolation.Tools(None, None, "/usr/bin/sh", None, None)
    """))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no_bubblewrap", "-p", "no:cacheprovider", "-q",
         "tests/test_sandbox.py", "-k", "capabilities or environment_is_clean or network"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    last_line = done.stdout.strip().splitlines()[-1]
    assert "3 sandbox tests were skipped: bwrap is not installed" in last_line, done.stdout
    assert "apt-get install bubblewrap" in last_line
